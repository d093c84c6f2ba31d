/** Policies written as YAML and a small cluster of identities, for the policy compiler's tests. */
import type { EndpointMsg, IdentityMsg, PolicyMsg, SyncUpdateMsg } from '../../../api/agentproto.js';
import type { PolicyEntry, PolicyKey } from '../../../bpf/index.js';
import { MemoryPolicyMap, type PolicyInputs } from '../../../agent/policy/index.js';
import { decodeEndpoint, decodeIdentity, decodePolicyMsg, type Endpoint, type Identity, type MeshPolicy } from '../../../agent/sync/index.js';
import { parsePolicyDocuments } from '../../../server/policy/index.js';

export const NS = 'io.kubernetes.pod.namespace';
export const SA = 'io.cilium.k8s.policy.serviceaccount';
export const TCP = 6;
export const UDP = 17;
export const SCTP = 132;
export const ICMP = 1;

/** The PolicyMsgs the server would send for these YAML documents. */
export function policyMsgs(yaml: string): PolicyMsg[] {
  return parsePolicyDocuments(yaml).map((p) => ({ namespace: p.namespace, name: p.name, kind: p.kind, spec_json: JSON.stringify(p.spec) }));
}

export function identity(id: number, namespace: string, labels: Record<string, string>, sa = 'default'): IdentityMsg {
  return { id, labels: { ...labels, [NS]: namespace, [SA]: sa }, namespace, service_account: sa, spiffe_id: `spiffe://example.org/ns/${namespace}/sa/${sa}` };
}

export function endpoint(ip: string, id: IdentityMsg, nodeId: number): EndpointMsg {
  return { ip, identity: id.id, node_id: nodeId, namespace: id.namespace, name: `pod-${ip}`, labels: id.labels };
}

/** The cluster most tests use: this node is node 1. */
export const ids = {
  pay: identity(300, 'prod', { app: 'pay' }),
  order: identity(301, 'prod', { app: 'order' }),
  web: identity(302, 'prod', { app: 'web', tier: 'front' }),
  orderDev: identity(303, 'dev', { app: 'order' }),
  kube: identity(304, 'kube-system', { app: 'dns' }),
  bad: identity(305, 'prod', { app: 'bad' }),
};

export const LOCAL_NODE = 1;

/** Inputs for the compiler: `local` identities have an endpoint on node 1, the others on node 2. */
export function inputs(yaml: string | null, local: IdentityMsg[], others: IdentityMsg[] = Object.values(ids).filter((i) => !local.includes(i))): PolicyInputs {
  const policies = new Map<string, MeshPolicy>();
  if (yaml) for (const p of policyMsgs(yaml)) policies.set(`${p.namespace}/${p.name}`, decodePolicyMsg(p));
  const identities = new Map<number, Identity>();
  const endpoints = new Map<string, Endpoint>();
  local.forEach((i, n) => { identities.set(i.id, decodeIdentity(i)); endpoints.set(`10.1.0.${n + 10}`, decodeEndpoint(endpoint(`10.1.0.${n + 10}`, i, LOCAL_NODE))); });
  others.forEach((i, n) => { identities.set(i.id, decodeIdentity(i)); endpoints.set(`10.2.0.${n + 10}`, decodeEndpoint(endpoint(`10.2.0.${n + 10}`, i, 2))); });
  return { policies, identities, endpoints, localNodeId: LOCAL_NODE };
}

/** The IP the `inputs` helper gave an identity's endpoint. */
export function ipOf(inp: PolicyInputs, id: IdentityMsg): string {
  for (const [ip, ep] of inp.endpoints) if (ep.identity === id.id) return ip;
  throw new Error(`no endpoint for identity ${id.id}`);
}

/** A map holding exactly `entries`, to ask what the datapath would do. */
export function mapOf(entries: Iterable<{ key: PolicyKey; entry: PolicyEntry }>): MemoryPolicyMap {
  const m = new MemoryPolicyMap();
  for (const { key, entry } of entries) m.upsert(key, entry);
  return m;
}

/** "allow", "allow+auth", "deny", or "pass" (not selected) for one flow. */
export function verdictOf(m: MemoryPolicyMap, local: number, remote: number, port: number, proto: number, direction: 'ingress' | 'egress'): string {
  const hit = m.lookup(local, remote, port, proto, direction);
  if (!hit) return 'pass';
  if (hit.entry.verdict === 'deny') return 'deny';
  return hit.entry.authType ? 'allow+auth' : 'allow';
}

/** A Sync update with nothing in it but `parts`. */
export function update(parts: Partial<SyncUpdateMsg>): SyncUpdateMsg {
  return {
    revision: 1, snapshot: false, entries: [], removed_entries: [], bundles: [], identities: [], removed_identities: [],
    endpoints: [], removed_endpoints: [], nodes: [], removed_nodes: [], policies: [], removed_policies: [], local_node_id: 0,
    ...parts,
  };
}

export function cnp(name: string, namespace: string, spec: string): string {
  return `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n${indent(spec, 2)}\n---\n`;
}

export function ccnp(name: string, spec: string): string {
  return `apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ${name}\nspec:\n${indent(spec, 2)}\n---\n`;
}

function indent(text: string, n: number): string {
  const lines = text.replace(/^\n+|\s+$/g, '').split('\n');
  const min = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^ */)![0].length));
  return lines.map((l) => ' '.repeat(n) + l.slice(min)).join('\n');
}

/** This node (1) hosts pay; order and web are on node 2. pay admits order on 8080 only when authenticated, and may never reach web. */
export const PAY_POLICY = cnp('pay', 'prod', `
  endpointSelector: {matchLabels: {app: pay}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: order}}]
    toPorts: [{ports: [{port: 8080, protocol: TCP}]}]
    authentication: {mode: required}
  egressDeny:
  - toEndpoints: [{matchLabels: {app: web}}]
`);

/** The Sync snapshot of that cluster. */
export function payClusterSnapshot(): SyncUpdateMsg {
  return update({
    snapshot: true, local_node_id: LOCAL_NODE, identities: [ids.pay, ids.order, ids.web],
    endpoints: [endpoint('10.1.0.10', ids.pay, LOCAL_NODE), endpoint('10.2.0.10', ids.order, 2), endpoint('10.2.0.11', ids.web, 2)],
    policies: policyMsgs(PAY_POLICY),
  });
}
