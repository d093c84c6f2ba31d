/**
 * Security identities: one number per distinct set of security-relevant labels
 * of an endpoint (namespace, ServiceAccount, pod labels without the volatile
 * ones), allocated once and kept while an endpoint uses it.
 */
import type { Datastore, Endpoint } from '../datastore/index.js';
import { InvalidArgument, k8sNameProblem } from '../../spiffe/index.js';
import type { EndpointRegistrar } from '../agentapi/index.js';
import type { EndpointRegistrationMsg } from '../../api/agentproto.js';
import { isIP } from 'node:net';

/** Labels that change per pod or per rollout and so say nothing about security (as Cilium excludes them). */
const VOLATILE = [/^pod-template-hash$/, /^controller-revision-hash$/, /^pod-template-generation$/, /^statefulset\.kubernetes\.io\/pod-name$/, /^job-name$/, /^controller-uid$/, /^batch\.kubernetes\.io\//];

/** Cilium's label names for the namespace and ServiceAccount, so CNP selectors work unchanged. */
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
export const SERVICEACCOUNT_LABEL = 'io.cilium.k8s.policy.serviceaccount';


export function securityLabels(namespace: string, serviceAccount: string, podLabels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(podLabels)) if (!VOLATILE.some((re) => re.test(k))) out[k] = v;
  out[NAMESPACE_LABEL] = namespace;
  out[SERVICEACCOUNT_LABEL] = serviceAccount;
  return out;
}

export const labelsKey = (labels: Record<string, string>): string =>
  Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(';');

export class IdentityAllocator implements EndpointRegistrar {
  constructor(private readonly store: Datastore) {}

  /**
   * Replaces the endpoints of one node with `regs`, allocating identities and
   * freeing unused ones; through `store` when the caller holds a transaction.
   */
  async replaceNodeEndpoints(nodeId: number, regs: readonly EndpointRegistrationMsg[], store: Datastore = this.store): Promise<Endpoint[]> {
    regs.forEach((r, i) => {
      if (!isIP(r.ip)) throw new InvalidArgument(`"${r.ip}" is not an IP address`, `endpoints[${i}].ip`);
      const badNamespace = k8sNameProblem('namespace', r.namespace);
      if (badNamespace) throw new InvalidArgument(`namespace ${badNamespace}`, `endpoints[${i}].namespace`);
      const badSa = k8sNameProblem('serviceaccount', r.service_account);
      if (badSa) throw new InvalidArgument(`service account ${badSa}`, `endpoints[${i}].service_account`);
      if (!r.name) throw new InvalidArgument('name is required', `endpoints[${i}].name`);
    });
    const out: Endpoint[] = [];
    const keep = new Set<string>();
    for (const r of regs) {
      const labels = securityLabels(r.namespace, r.service_account, r.labels ?? {});
      const identity = await store.allocateIdentity(labelsKey(labels), labels, { namespace: r.namespace, name: r.service_account });
      keep.add(r.ip);
      out.push(await store.upsertEndpoint({ ip: r.ip, identity: identity.id, nodeId, namespace: r.namespace, name: r.name, labels }));
    }
    for (const ep of await store.listEndpoints({ nodeId })) if (!keep.has(ep.ip)) await store.deleteEndpoint(ep.ip);
    await this.collectUnusedIdentities(store);
    return out;
  }

  /** Deletes identities that no endpoint uses any more. */
  async collectUnusedIdentities(store: Datastore = this.store): Promise<void> {
    const used = new Set((await store.listEndpoints()).map((e) => e.identity));
    for (const id of await store.listIdentities()) if (!used.has(id.id)) await store.deleteIdentity(id.id);
  }
}
