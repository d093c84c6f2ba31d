/**
 * What the agent knows from the server's Sync stream, applied message by
 * message. The wire messages stop here: every Sync message is decoded once
 * into values (SPIFFE IDs parsed, policies checked against the shared schema),
 * and the indexes that several parts read are derived once per applied
 * message, on first use.
 */
import type { EndpointMsg, EntryMsg, IdentityMsg, NodeMsg, PolicyMsg, SyncUpdateMsg } from '../../api/agentproto.js';
import { decodePolicySpec, type NormalisedPolicySpec } from '../../api/policy.js';
import { Bundle, BundleSet, SelectorSet, SpiffeId, TrustDomain } from '../../spiffe/index.js';

/** A security identity: the labels policies select on, and the ServiceAccount's SPIFFE ID. */
export interface Identity {
  readonly id: number;
  readonly spiffeId: SpiffeId;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** A pod (or any workload address) of the mesh, on the node that hosts it. */
export interface Endpoint {
  readonly ip: string;
  readonly identity: number;
  readonly nodeId: number;
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** A node of the registry: where its agent listens, its WireGuard key, its pods' range. */
export interface MeshNode {
  readonly id: number;
  readonly name: string;
  /** The agent that speaks for the node; undefined while none has published it. */
  readonly agentId: SpiffeId | undefined;
  readonly address: string;
  readonly wgKey: string;
  readonly podCidr: string;
}

/** A policy, decoded with the shared schema: `spec` when it decoded, `error` (naming the field) when not. */
export interface MeshPolicy {
  /** "namespace/name" ("/name" for cluster-wide ones). */
  readonly id: string;
  readonly namespace: string;
  readonly name: string;
  readonly kind: string;
  readonly spec?: NormalisedPolicySpec;
  readonly error?: string;
}

export function decodeIdentity(m: IdentityMsg): Identity {
  return { id: m.id, spiffeId: SpiffeId.parse(m.spiffe_id, 'identity.spiffe_id'), namespace: m.namespace, serviceAccount: m.service_account, labels: m.labels };
}

export function decodeEndpoint(m: EndpointMsg): Endpoint {
  return { ip: m.ip, identity: m.identity, nodeId: m.node_id, namespace: m.namespace, name: m.name, labels: m.labels };
}

export function decodeNode(m: NodeMsg): MeshNode {
  return {
    id: m.id, name: m.name, agentId: m.agent_id ? SpiffeId.parse(m.agent_id, 'node.agent_id') : undefined,
    address: m.address, wgKey: m.wireguard_public_key, podCidr: m.pod_cidr,
  };
}

/** Never throws: a policy that does not decode is kept with its error, so it can be reported. */
export function decodePolicyMsg(m: PolicyMsg): MeshPolicy {
  const base = { id: `${m.namespace}/${m.name}`, namespace: m.namespace, name: m.name, kind: m.kind };
  try {
    return { ...base, spec: decodePolicySpec(m.spec_json, `policy ${base.id}`) };
  } catch (err) {
    return { ...base, error: (err as Error).message };
  }
}

/** What several parts read of the state, derived once per applied message. */
export interface StateIndex {
  /** Identity → the nodes where it has endpoints, 0 standing for this node (as the auth map names them). */
  readonly nodesHosting: ReadonlyMap<number, ReadonlySet<number>>;
  /** Node id → the identities of its endpoints (this node under its own id). */
  readonly identitiesOnNode: ReadonlyMap<number, ReadonlySet<number>>;
  /** Node id → its endpoints. */
  readonly endpointsOnNode: ReadonlyMap<number, readonly Endpoint[]>;
  /** The identities with an endpoint on this node, with their labels (the endpoint's own when the identity is unknown). */
  readonly localIdentities: ReadonlyMap<number, Readonly<Record<string, string>>>;
  /** Agent SPIFFE ID (string) → the node it speaks for. */
  readonly nodeByAgent: ReadonlyMap<string, MeshNode>;
  /** The policies in id order. */
  readonly policies: readonly MeshPolicy[];
}

export interface AgentEntry {
  id: string;
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: SelectorSet;
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: string[];
  hint: string;
  federatesWith: string[];
  revision: number;
}

export function entryFromMsg(m: EntryMsg): AgentEntry {
  return {
    id: m.id, spiffeId: SpiffeId.parse(m.spiffe_id), parentId: SpiffeId.parse(m.parent_id), selectors: SelectorSet.parse(m.selectors),
    x509SvidTtl: m.x509_svid_ttl, jwtSvidTtl: m.jwt_svid_ttl, dnsNames: m.dns_names, hint: m.hint, federatesWith: m.federates_with,
    revision: Number(m.revision),
  };
}

/** What one applied message changed, for the parts that react (SVID cache, datapath, mutual auth). */
export interface StateChange {
  snapshot: boolean;
  entries: { upserted: AgentEntry[]; removed: string[] };
  bundles: boolean;
  identities: { upserted: number[]; removed: number[] };
  endpoints: { upserted: string[]; removed: string[] };
  nodes: { upserted: number[]; removed: number[] };
  policies: { upserted: string[]; removed: string[] };
}

export class AgentState {
  readonly entries = new Map<string, AgentEntry>();
  bundles = new BundleSet();
  readonly identities = new Map<number, Identity>();
  readonly endpoints = new Map<string, Endpoint>();
  readonly nodes = new Map<number, MeshNode>();
  readonly policies = new Map<string, MeshPolicy>();
  localNodeId = 0;
  revision = 0;
  /** Messages applied so far: a cache key for what is derived from the state. */
  applied = 0;
  private listeners: ((c: StateChange) => void)[] = [];

  constructor(readonly trustDomain: TrustDomain) {}

  onChange(fn: (c: StateChange) => void): () => void {
    this.listeners.push(fn);
    return () => { this.listeners = this.listeners.filter((l) => l !== fn); };
  }

  /** The derived indexes of the state as it is now; built once per applied message, on first use. */
  index(): StateIndex {
    if (this.indexed?.applied === this.applied) return this.indexed.index;
    const local = this.localNodeId;
    const nodesHosting = new Map<number, Set<number>>();
    const identitiesOnNode = new Map<number, Set<number>>();
    const localIdentities = new Map<number, Readonly<Record<string, string>>>();
    const endpointsOnNode = new Map<number, Endpoint[]>();
    for (const ep of this.endpoints.values()) {
      (endpointsOnNode.get(ep.nodeId) ?? endpointsOnNode.set(ep.nodeId, []).get(ep.nodeId)!).push(ep);
      const asAuthMapNames = ep.nodeId === local ? 0 : ep.nodeId;
      (nodesHosting.get(ep.identity) ?? nodesHosting.set(ep.identity, new Set()).get(ep.identity)!).add(asAuthMapNames);
      (identitiesOnNode.get(ep.nodeId) ?? identitiesOnNode.set(ep.nodeId, new Set()).get(ep.nodeId)!).add(ep.identity);
      if (local !== 0 && ep.nodeId === local && !localIdentities.has(ep.identity)) {
        localIdentities.set(ep.identity, this.identities.get(ep.identity)?.labels ?? ep.labels);
      }
    }
    const nodeByAgent = new Map<string, MeshNode>();
    for (const n of this.nodes.values()) if (n.agentId && !nodeByAgent.has(n.agentId.toString())) nodeByAgent.set(n.agentId.toString(), n);
    const policies = [...this.policies.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const index: StateIndex = { nodesHosting, identitiesOnNode, endpointsOnNode, localIdentities, nodeByAgent, policies };
    this.indexed = { applied: this.applied, index };
    return index;
  }
  private indexed: { applied: number; index: StateIndex } | undefined;

  /** A policy whose JSON did not change keeps its decoded value (a snapshot resends every policy). */
  private decodePolicy(m: PolicyMsg): MeshPolicy {
    const id = `${m.namespace}/${m.name}`;
    const known = this.policyJson.get(id);
    const old = this.policies.get(id);
    if (old && known === m.spec_json && old.kind === m.kind) return old;
    this.policyJson.set(id, m.spec_json);
    return decodePolicyMsg(m);
  }
  private readonly policyJson = new Map<string, string>();

  apply(msg: SyncUpdateMsg): StateChange {
    const change: StateChange = {
      snapshot: msg.snapshot, entries: { upserted: [], removed: [] }, bundles: false, identities: { upserted: [], removed: [] },
      endpoints: { upserted: [], removed: [] }, nodes: { upserted: [], removed: [] }, policies: { upserted: [], removed: [] },
    };
    if (msg.snapshot) {
      const keep = new Set(msg.entries.map((e) => e.id));
      for (const id of this.entries.keys()) if (!keep.has(id)) { this.entries.delete(id); change.entries.removed.push(id); }
      replaceAll(this.identities, msg.identities.map((i) => [i.id, decodeIdentity(i)] as const), change.identities);
      replaceAll(this.endpoints, msg.endpoints.map((e) => [e.ip, decodeEndpoint(e)] as const), change.endpoints);
      replaceAll(this.nodes, msg.nodes.map((n) => [n.id, decodeNode(n)] as const), change.nodes);
      replaceAll(this.policies, msg.policies.map((p) => { const d = this.decodePolicy(p); return [d.id, d] as const; }), change.policies);
    } else {
      for (const id of msg.removed_identities) if (this.identities.delete(id)) change.identities.removed.push(id);
      for (const i of msg.identities) { this.identities.set(i.id, decodeIdentity(i)); change.identities.upserted.push(i.id); }
      for (const ip of msg.removed_endpoints) if (this.endpoints.delete(ip)) change.endpoints.removed.push(ip);
      for (const e of msg.endpoints) { this.endpoints.set(e.ip, decodeEndpoint(e)); change.endpoints.upserted.push(e.ip); }
      for (const id of msg.removed_nodes) if (this.nodes.delete(id)) change.nodes.removed.push(id);
      for (const n of msg.nodes) { this.nodes.set(n.id, decodeNode(n)); change.nodes.upserted.push(n.id); }
      for (const k of msg.removed_policies) if (this.policies.delete(k)) change.policies.removed.push(k);
      for (const p of msg.policies) { const d = this.decodePolicy(p); this.policies.set(d.id, d); change.policies.upserted.push(d.id); }
    }
    for (const id of msg.removed_entries) if (this.entries.delete(id)) change.entries.removed.push(id);
    for (const m of msg.entries) {
      const e = entryFromMsg(m);
      const old = this.entries.get(e.id);
      if (old && old.revision === e.revision) continue;
      this.entries.set(e.id, e);
      change.entries.upserted.push(e);
    }
    if (msg.bundles.length > 0) {
      this.bundles = new BundleSet(msg.bundles.map((b) => Bundle.fromJwks(TrustDomain.parse(b.trust_domain), b.document.toString('utf8'))));
      change.bundles = true;
    }
    if (msg.snapshot || msg.local_node_id) this.localNodeId = msg.local_node_id;
    this.revision = Number(msg.revision);
    this.applied++;
    for (const l of this.listeners) l(change);
    return change;
  }
}

function replaceAll<K, V>(map: Map<K, V>, items: (readonly [K, V])[], out: { upserted: K[]; removed: K[] }): void {
  const keep = new Set(items.map(([k]) => k));
  for (const k of map.keys()) if (!keep.has(k)) { map.delete(k); out.removed.push(k); }
  for (const [k, v] of items) { map.set(k, v); out.upserted.push(k); }
}
