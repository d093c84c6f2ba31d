/**
 * k8s_psat node attestation: the agent presents its projected ServiceAccount
 * token (a bound token with the server's audience). The API server vouches
 * for it through a TokenReview with that audience; the review's user names
 * the ServiceAccount, and its `extra` names the pod (and, since Kubernetes
 * 1.30, the node) the token is bound to. The attestor then checks that the
 * pod exists with that UID and runs on that node, and names the agent by the
 * node's UID: spiffe://<td>/meshid/agent/k8s_psat/<cluster>/<node-uid>.
 */
import type { AuthenticationV1Api, CoreV1Api, V1Node, V1Pod, V1TokenReviewStatus } from '@kubernetes/client-node';
import { agentId, InvalidArgument, isK8sName, MeshidError, PermissionDenied, Selector, SelectorSet, type TrustDomain, Unavailable } from '../../spiffe/index.js';
import { apiMessage, apiStatus } from './client.js';
import type { AttestationResult, NodeAttestor } from '../attestation/index.js';

export const K8S_PSAT = 'k8s_psat';

/** What the agent sends: JSON {"cluster": "...", "token": "<projected SA token>"}. */
export interface K8sPsatPayload {
  cluster: string;
  token: string;
}

export interface K8sPsatAttestorOptions {
  trustDomain: TrustDomain;
  cluster: string;
  /** The audience the token must carry (and that TokenReview is asked for). */
  audience: string;
  /** "namespace:name" of the ServiceAccounts agents run as. */
  allowedServiceAccounts: readonly string[];
  authentication: Pick<AuthenticationV1Api, 'createTokenReview'>;
  core: Pick<CoreV1Api, 'readNamespacedPod' | 'readNode'>;
}

const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';
const EXTRA_NODE_UID = 'authentication.kubernetes.io/node-uid';
const SA_USER_PREFIX = 'system:serviceaccount:';

/** The ServiceAccount of a token review's user name, "system:serviceaccount:NAMESPACE:NAME", or undefined for any other user. */
export function serviceAccountOfUser(username: string): { namespace: string; serviceAccount: string } | undefined {
  if (!username.startsWith(SA_USER_PREFIX)) return undefined;
  const rest = username.slice(SA_USER_PREFIX.length);
  const colon = rest.indexOf(':');
  const namespace = rest.slice(0, colon), serviceAccount = rest.slice(colon + 1);
  return colon > 0 && isK8sName('namespace', namespace) && isK8sName('serviceaccount', serviceAccount) ? { namespace, serviceAccount } : undefined;
}
const MAX_PAYLOAD_BYTES = 64 * 1024;

export class K8sPsatAttestor implements NodeAttestor {
  readonly type = K8S_PSAT;
  private readonly allowed: ReadonlySet<string>;

  constructor(private readonly opts: K8sPsatAttestorOptions) {
    this.allowed = new Set(opts.allowedServiceAccounts);
  }

  async attest(payload: Buffer): Promise<AttestationResult> {
    const { cluster, token } = parsePayload(payload);
    if (cluster !== this.opts.cluster) {
      throw new PermissionDenied(`k8s_psat: cluster "${cluster}" is not the cluster this server serves ("${this.opts.cluster}")`);
    }
    const status = await this.review(token);
    if (!status.authenticated) throw new PermissionDenied(`k8s_psat: token review denied the token: ${status.error ?? 'not authenticated'}`);
    if (!(status.audiences ?? []).includes(this.opts.audience)) {
      throw new PermissionDenied(`k8s_psat: the token is not valid for audience "${this.opts.audience}" (token review gave ${JSON.stringify(status.audiences ?? [])})`);
    }
    const username = status.user?.username ?? '';
    const sa = serviceAccountOfUser(username);
    if (!sa) throw new PermissionDenied(`k8s_psat: token user "${username}" is not a ServiceAccount`);
    const { namespace, serviceAccount } = sa;
    if (!this.allowed.has(`${namespace}:${serviceAccount}`)) {
      throw new PermissionDenied(`k8s_psat: ServiceAccount ${namespace}:${serviceAccount} is not allowed to attest agents`);
    }
    const extra = status.user?.extra ?? {};
    const podName = single(extra, EXTRA_POD_NAME);
    const podUid = single(extra, EXTRA_POD_UID);
    if (!podName || !podUid) throw new PermissionDenied('k8s_psat: the token is not bound to a pod (use a projected ServiceAccount token)');

    const pod = await this.read(`pod ${namespace}/${podName}`, () => this.opts.core.readNamespacedPod({ name: podName, namespace })) as V1Pod | undefined;
    if (!pod) throw new PermissionDenied(`k8s_psat: pod ${namespace}/${podName} named by the token does not exist`);
    if (pod.metadata?.uid !== podUid) {
      throw new PermissionDenied(`k8s_psat: pod ${namespace}/${podName} has UID ${pod.metadata?.uid ?? '(none)'}, not the token's ${podUid}: the token's pod is gone`);
    }
    if ((pod.spec?.serviceAccountName ?? 'default') !== serviceAccount) {
      throw new PermissionDenied(`k8s_psat: pod ${namespace}/${podName} runs as ServiceAccount ${pod.spec?.serviceAccountName ?? 'default'}, not ${serviceAccount}`);
    }
    // Before Kubernetes 1.30 the token names no node; the pod's node is then the one to check.
    const nodeName = single(extra, EXTRA_NODE_NAME) ?? pod.spec?.nodeName;
    if (!nodeName) throw new PermissionDenied(`k8s_psat: pod ${namespace}/${podName} is not scheduled on a node`);
    if (pod.spec?.nodeName !== nodeName) {
      throw new PermissionDenied(`k8s_psat: pod ${namespace}/${podName} runs on node ${pod.spec?.nodeName ?? '(none)'}, not on the token's node ${nodeName}`);
    }
    const node = await this.read(`node ${nodeName}`, () => this.opts.core.readNode({ name: nodeName })) as V1Node | undefined;
    if (!node) throw new PermissionDenied(`k8s_psat: node ${nodeName} does not exist`);
    const nodeUid = node.metadata?.uid ?? '';
    const tokenNodeUid = single(extra, EXTRA_NODE_UID);
    if (!nodeUid || (tokenNodeUid !== undefined && tokenNodeUid !== nodeUid)) {
      throw new PermissionDenied(`k8s_psat: node ${nodeName} has UID ${nodeUid || '(none)'}, not the token's ${tokenNodeUid ?? ''}`);
    }

    const sel = (value: string): Selector => Selector.of(K8S_PSAT, value);
    const selectors = [
      sel(`cluster:${cluster}`),
      sel(`agent_ns:${namespace}`),
      sel(`agent_sa:${serviceAccount}`),
      sel(`agent_pod_name:${podName}`),
      sel(`agent_pod_uid:${podUid}`),
      sel(`agent_node_name:${nodeName}`),
      sel(`agent_node_uid:${nodeUid}`),
      ...Object.entries(node.metadata?.labels ?? {}).map(([k, v]) => sel(`agent_node_label:${k}:${v}`)),
    ];
    return { agentId: agentId(this.opts.trustDomain, K8S_PSAT, cluster, nodeUid), selectors: SelectorSet.of(selectors), canReattest: true };
  }

  private async review(token: string): Promise<V1TokenReviewStatus> {
    let res;
    try {
      res = await this.opts.authentication.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [this.opts.audience] } },
      });
    } catch (err) {
      throw new Unavailable(`k8s_psat: token review failed: ${apiMessage(err)}`);
    }
    return res.status ?? {};
  }

  /** The object, undefined when the API says 404, Unavailable when the API cannot be asked. */
  private async read<T>(what: string, get: () => Promise<T>): Promise<T | undefined> {
    try {
      return await get();
    } catch (err) {
      if (apiStatus(err) === 404) return undefined;
      if (err instanceof MeshidError) throw err;
      throw new Unavailable(`k8s_psat: reading ${what} failed: ${apiMessage(err)}`);
    }
  }
}

function parsePayload(payload: Buffer): K8sPsatPayload {
  if (payload.length > MAX_PAYLOAD_BYTES) throw new InvalidArgument(`k8s_psat payload is larger than ${MAX_PAYLOAD_BYTES} bytes`, 'attestation.payload');
  let v: unknown;
  try { v = JSON.parse(payload.toString('utf8')); } catch {
    throw new InvalidArgument('k8s_psat payload must be JSON {"cluster": ..., "token": ...}', 'attestation.payload');
  }
  const o = v as Partial<K8sPsatPayload> | null;
  if (!o || typeof o !== 'object') throw new InvalidArgument('k8s_psat payload must be a JSON object', 'attestation.payload');
  if (typeof o.cluster !== 'string' || o.cluster === '') throw new InvalidArgument('k8s_psat payload needs "cluster"', 'attestation.payload.cluster');
  if (typeof o.token !== 'string' || o.token === '') throw new InvalidArgument('k8s_psat payload needs "token"', 'attestation.payload.token');
  return { cluster: o.cluster, token: o.token };
}

function single(extra: Record<string, string[]>, key: string): string | undefined {
  const v = extra[key];
  return Array.isArray(v) && v.length === 1 && typeof v[0] === 'string' && v[0] !== '' ? v[0] : undefined;
}
