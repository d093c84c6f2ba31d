/**
 * The `kubernetes:` section of meshid-server's config: one schema, defaults in
 * one place. server/config.ts embeds it as `kubernetes: kubernetesConfigSchema`.
 */
import { z } from 'zod';
import { durationField } from '../../common/config.js';
import { isDnsLabel, isK8sName, k8sNameRule, type K8sKind } from '../../spiffe/index.js';

const duration = (field: string, dflt: string) => durationField(field, dflt, { positive: true });

const k8sName = (kind: K8sKind) => z.string().refine((s) => isK8sName(kind, s), `must be ${k8sNameRule(kind)}`);
/** A ServiceAccount named "namespace:name". */
const saRef = z.string().refine((s) => {
  const colon = s.indexOf(':');
  return colon > 0 && isK8sName('namespace', s.slice(0, colon)) && isK8sName('serviceaccount', s.slice(colon + 1));
}, 'must be "namespace:name" of a ServiceAccount');

const leaderElectionSchema = z.object({
  enabled: z.boolean().default(true),
  /** Where the Lease lives: the server's own namespace. */
  namespace: k8sName('namespace').default('meshid'),
  lease_name: k8sName('lease').default('meshid-server-controller'),
  /** This server's name in the Lease; default: the host name (the pod name in a StatefulSet). */
  identity: z.string().min(1).optional(),
  /** How long a leader that stopped renewing keeps the lease. */
  lease_duration: duration('leader_election.lease_duration', '15s'),
  /** How long the leader retries a failed renewal before it stops writing. */
  renew_deadline: duration('leader_election.renew_deadline', '10s'),
  /** How often candidates try to acquire and the leader renews. */
  retry_period: duration('leader_election.retry_period', '2s'),
}).strict();

export const kubernetesConfigSchema = z.object({
  enabled: z.boolean().default(false),
  /** A kubeconfig file; default: the in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config. */
  kubeconfig: z.string().min(1).optional(),
  /** The cluster's name in agent IDs and node selectors (spiffe://<td>/meshid/agent/k8s_psat/<cluster>/<node-uid>). */
  cluster: z.string().refine(isDnsLabel, 'must be a DNS label (lowercase letters, digits, "-")').default('kubernetes'),
  /** The audience that agents' projected ServiceAccount tokens must carry. */
  psat_audience: z.string().min(1).default('meshid-server'),
  /** ServiceAccounts ("namespace:name") whose tokens may attest agents. */
  allowed_agent_service_accounts: z.array(saRef).min(1).default(['meshid:meshid-agent']),
  /** One registration entry per ServiceAccount (opt out with meshid.io/auto-register: "false"). */
  auto_register: z.boolean().default(true),
  /** Pods → endpoints and identities, Nodes → the node registry. */
  endpoints: z.boolean().default(true),
  /** AuthPolicy and Cilium(Clusterwide)NetworkPolicy objects → policies. */
  policies: z.boolean().default(true),
  /** How often the API is asked which policy CRDs exist. */
  crd_discovery_interval: duration('crd_discovery_interval', '60s'),
  /** Where the trust bundle is published for agents to mount (bundle.spiffe, bundle.crt). */
  bundle_configmap: z.object({
    enabled: z.boolean().default(true),
    namespace: k8sName('namespace').default('meshid'),
    name: k8sName('configmap').default('meshid-bundle'),
  }).strict().default({ enabled: true, namespace: 'meshid', name: 'meshid-bundle' }),
  leader_election: leaderElectionSchema.default({
    enabled: true, namespace: 'meshid', lease_name: 'meshid-server-controller', lease_duration: 15, renew_deadline: 10, retry_period: 2,
  }),
}).strict().superRefine((c, ctx) => {
  const le = c.leader_election;
  if (le.renew_deadline >= le.lease_duration) {
    ctx.addIssue({ code: 'custom', path: ['leader_election', 'renew_deadline'], message: 'must be shorter than lease_duration' });
  }
  if (le.retry_period >= le.renew_deadline) {
    ctx.addIssue({ code: 'custom', path: ['leader_election', 'retry_period'], message: 'must be shorter than renew_deadline' });
  }
});

export type KubernetesConfig = z.infer<typeof kubernetesConfigSchema>;
