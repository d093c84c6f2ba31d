/** What the agent knows from the server's Sync stream, applied message by message. */
import type { EndpointMsg, EntryMsg, IdentityMsg, NodeMsg, PolicyMsg, SyncUpdateMsg } from '../../api/agentproto.js';
import { Bundle, BundleSet } from '../../spiffe/bundle.js';
import { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import { SelectorSet } from '../../spiffe/selector.js';

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
  readonly identities = new Map<number, IdentityMsg>();
  readonly endpoints = new Map<string, EndpointMsg>();
  readonly nodes = new Map<number, NodeMsg>();
  readonly policies = new Map<string, PolicyMsg>();
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

  apply(msg: SyncUpdateMsg): StateChange {
    const change: StateChange = {
      snapshot: msg.snapshot, entries: { upserted: [], removed: [] }, bundles: false, identities: { upserted: [], removed: [] },
      endpoints: { upserted: [], removed: [] }, nodes: { upserted: [], removed: [] }, policies: { upserted: [], removed: [] },
    };
    if (msg.snapshot) {
      const keep = new Set(msg.entries.map((e) => e.id));
      for (const id of this.entries.keys()) if (!keep.has(id)) { this.entries.delete(id); change.entries.removed.push(id); }
      replaceAll(this.identities, msg.identities.map((i) => [i.id, i] as const), change.identities);
      replaceAll(this.endpoints, msg.endpoints.map((e) => [e.ip, e] as const), change.endpoints);
      replaceAll(this.nodes, msg.nodes.map((n) => [n.id, n] as const), change.nodes);
      replaceAll(this.policies, msg.policies.map((p) => [`${p.namespace}/${p.name}`, p] as const), change.policies);
    } else {
      for (const id of msg.removed_identities) if (this.identities.delete(id)) change.identities.removed.push(id);
      for (const i of msg.identities) { this.identities.set(i.id, i); change.identities.upserted.push(i.id); }
      for (const ip of msg.removed_endpoints) if (this.endpoints.delete(ip)) change.endpoints.removed.push(ip);
      for (const e of msg.endpoints) { this.endpoints.set(e.ip, e); change.endpoints.upserted.push(e.ip); }
      for (const id of msg.removed_nodes) if (this.nodes.delete(id)) change.nodes.removed.push(id);
      for (const n of msg.nodes) { this.nodes.set(n.id, n); change.nodes.upserted.push(n.id); }
      for (const k of msg.removed_policies) if (this.policies.delete(k)) change.policies.removed.push(k);
      for (const p of msg.policies) { const k = `${p.namespace}/${p.name}`; this.policies.set(k, p); change.policies.upserted.push(k); }
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
