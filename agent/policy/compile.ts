/**
 * The policy compiler: a pure function from (policies, identities, local
 * identities) to the entries of `meshid_policy` and the identity pairs that
 * need mutual authentication.
 *
 * Semantics are Cilium's: a direction that any rule selects is default deny;
 * allows of all rules add up; deny rules beat allows; a flow needs
 * authentication when any allow rule that matches it asks for it.
 *
 * The datapath picks the most specific entry ({remote, port, proto} >
 * {remote, 0, proto} > {remote, 0, 0} > {any, port, proto} > {any, 0, proto} >
 * {any, 0, 0}), so rules are not written one by one. Every key that a rule
 * names is written, plus, for each remote identity, the intersections of its
 * keys with the wildcard-remote keys; each key's value is the decision of all
 * rules that cover the key. With that closure the entry the datapath finds for
 * a flow is the intersection of every key covering it, whose value is exactly
 * the rules' decision for that flow (so an auth requirement of a broad rule
 * reaches the narrower entries it covers, and a deny reaches narrower allows).
 */
import { AuthType, Protocol, type Direction, type PolicyEntry, type PolicyKey } from '../../bpf/index.js';
import type { MeshPolicy } from '../sync/index.js';
import { selectorMatches, type DecodedPolicy, type PolicyPeerRule, type PolicySelector } from './spec.js';

/** What the compiler reads; AgentState provides it as it is (policies already decoded). */
export interface PolicyInputs {
  readonly policies: ReadonlyMap<string, MeshPolicy>;
  readonly identities: ReadonlyMap<number, { readonly labels: Readonly<Record<string, string>> }>;
  readonly endpoints: ReadonlyMap<string, { readonly identity: number; readonly nodeId: number; readonly labels?: Readonly<Record<string, string>> }>;
  readonly localNodeId: number;
}

export type RuleSection = 'ingress' | 'ingressDeny' | 'egress' | 'egressDeny';

/** One rule of a policy (its index among spec and specs). */
export interface RuleRef {
  /** "namespace/name", or "name" for a cluster-wide policy. */
  policy: string;
  kind: string;
  rule: number;
  description?: string;
}

/** Where a decision comes from: item `item` of section `section` of a rule. */
export interface RuleOrigin extends RuleRef {
  section: RuleSection;
  item: number;
}

export interface PolicyMapEntry {
  key: PolicyKey;
  entry: PolicyEntry;
}

/** A pair of identities whose flows need mutual authentication (the auth map key without the node). */
export interface AuthRequirement {
  localIdentity: number;
  remoteIdentity: number;
  authType: number;
}

export interface PolicyError {
  policy: string;
  message: string;
}

export interface CompiledPolicies {
  /** Sorted by key. */
  entries: PolicyMapEntry[];
  /** Sorted, without duplicates. */
  authPairs: AuthRequirement[];
  localIdentities: number[];
  /** Policies that could not be decoded and were left out. */
  errors: PolicyError[];
}

export interface CompileInput {
  policies: readonly DecodedPolicy[];
  /** Every identity a selector may match (local and remote). */
  identities: ReadonlyMap<number, { readonly labels: Readonly<Record<string, string>> }>;
  /** The identities of this node's endpoints, whose entries are written. */
  localIdentities: Iterable<number>;
}

/** A port key: port 0 is every port of `proto`; proto 0 (with port 0) is everything. */
interface PortKey { port: number; proto: number }

/** One allow or deny item of a rule, with its peers resolved to identities. */
export interface ResolvedItem {
  verdict: 'allow' | 'deny';
  /** 'any': every peer, also addresses that map to no identity. */
  remotes: 'any' | ReadonlySet<number>;
  /** A peer selector without requirements: every identity, whichever exist. */
  everyIdentity: boolean;
  ports: 'all' | readonly PortKey[];
  auth: boolean;
  origin: RuleOrigin;
}

/** What decides one local identity's traffic in one direction. */
export interface DirectionPolicy {
  /** The rules that select the identity in this direction; empty: not selected, traffic passes. */
  selectedBy: RuleRef[];
  /** What applies when no allow or deny item matches. */
  fallback: 'allow' | 'deny';
  items: ResolvedItem[];
}

const PROTOCOL_NUMBERS = { TCP: Protocol.tcp, UDP: Protocol.udp, SCTP: Protocol.sctp } as const;
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

const policyLabel = (p: DecodedPolicy): string => (p.namespace ? `${p.namespace}/${p.name}` : p.name);

/** Resolves selectors against the identity set once per compile. */
class IdentityIndex {
  private readonly cache = new Map<string, ReadonlySet<number>>();
  constructor(private readonly identities: CompileInput['identities']) {}

  matching(selectors: readonly PolicySelector[]): ReadonlySet<number> {
    const cacheKey = JSON.stringify(selectors);
    const hit = this.cache.get(cacheKey);
    if (hit) return hit;
    const out = new Set<number>();
    for (const [id, identity] of this.identities) {
      if (selectors.some((s) => selectorMatches(s, identity.labels))) out.add(id);
    }
    this.cache.set(cacheKey, out);
    return out;
  }
}

function resolveItem(item: PolicyPeerRule, verdict: 'allow' | 'deny', origin: RuleOrigin, index: IdentityIndex): ResolvedItem {
  return {
    verdict,
    remotes: item.peers === 'all' ? 'any' : index.matching(item.peers),
    everyIdentity: item.peers !== 'all' && item.peers.some((sel) => sel.requirements.length === 0),
    ports: item.ports === 'all' ? 'all' : item.ports.map((p) => ({ port: p.port, proto: PROTOCOL_NUMBERS[p.protocol] })),
    auth: verdict === 'allow' && item.auth,
    origin,
  };
}

/** The rules of `policies` that apply to an identity with `labels`, in `direction`. */
function directionPolicy(policies: readonly DecodedPolicy[], labels: Readonly<Record<string, string>>, direction: Direction, index: IdentityIndex): DirectionPolicy {
  const allowSection: RuleSection = direction;
  const denySection: RuleSection = direction === 'ingress' ? 'ingressDeny' : 'egressDeny';
  const out: DirectionPolicy = { selectedBy: [], fallback: 'allow', items: [] };
  for (const p of policies) {
    p.spec.rules.forEach((rule, r) => {
      const allows = rule[allowSection];
      const denies = rule[denySection];
      if (!allows && !denies) return;
      if (!selectorMatches(rule.subject, labels)) return;
      const ref: RuleRef = { policy: policyLabel(p), kind: p.kind, rule: r, ...(rule.description !== undefined ? { description: rule.description } : {}) };
      const origin = (section: RuleSection, item: number): RuleOrigin => ({ ...ref, section, item });
      out.selectedBy.push(ref);
      if (rule.defaultDeny[direction]) out.fallback = 'deny';
      allows?.forEach((item, i) => out.items.push(resolveItem(item, 'allow', origin(allowSection, i), index)));
      denies?.forEach((item, i) => out.items.push(resolveItem(item, 'deny', origin(denySection, i), index)));
    });
  }
  return out;
}

const portKeyText = (k: PortKey): string => `${k.port}/${k.proto}`;
const ANY_PORT: PortKey = { port: 0, proto: 0 };

/** Does port key `outer` cover every flow of `inner`? */
function portCovers(outer: PortKey, inner: PortKey): boolean {
  if (outer.proto === 0) return true;
  return outer.proto === inner.proto && (outer.port === 0 || outer.port === inner.port);
}

function itemCoversRemote(item: ResolvedItem, remote: number): boolean {
  return item.remotes === 'any' || (remote !== 0 && item.remotes.has(remote));
}

function itemCoversPort(item: ResolvedItem, key: PortKey): boolean {
  return item.ports === 'all' || item.ports.some((p) => portCovers(p, key));
}

/** The rules' decision for every flow of the key (remote 0: flows from any peer no item names). */
function decide(dp: DirectionPolicy, remote: number, port: PortKey): PolicyEntry {
  let allowed = false;
  let auth = false;
  for (const item of dp.items) {
    if (!itemCoversRemote(item, remote) || !itemCoversPort(item, port)) continue;
    if (item.verdict === 'deny') return { verdict: 'deny', authType: AuthType.none };
    allowed = true;
    auth ||= item.auth;
  }
  if (!allowed) return { verdict: dp.fallback, authType: AuthType.none };
  return { verdict: 'allow', authType: auth ? AuthType.mutual : AuthType.none };
}

/** The decision for one flow, with the items that made it: what `explain` reports. */
export function decideFlow(dp: DirectionPolicy, remote: number, port: number, proto: number): {
  entry: PolicyEntry; matched: ResolvedItem[];
} {
  const matched = dp.items.filter((item) => itemCoversRemote(item, remote) && (item.ports === 'all'
    || item.ports.some((p) => p.proto === proto && (p.port === 0 || p.port === port))));
  const denies = matched.filter((i) => i.verdict === 'deny');
  if (denies.length > 0) return { entry: { verdict: 'deny', authType: AuthType.none }, matched: denies };
  if (matched.length === 0) return { entry: { verdict: dp.fallback, authType: AuthType.none }, matched };
  return { entry: { verdict: 'allow', authType: matched.some((i) => i.auth) ? AuthType.mutual : AuthType.none }, matched };
}

/** What a flow from an address with no identity meets: allow with auth drops it, as no pair with identity 0 is ever authenticated. */
function effectiveForUnknown(e: PolicyEntry): 'allow' | 'deny' {
  return e.verdict === 'allow' && e.authType === AuthType.none ? 'allow' : 'deny';
}

/**
 * Items that select every identity (`{}` in a cluster-wide policy) would put
 * one entry per identity for each local identity: with cluster-wide mutual
 * auth that is locals x identities entries. They may be written once, with
 * remote 0, when that changes nothing for addresses without an identity (the
 * only peers remote 0 adds): typically an allow with auth, which drops those
 * like the default deny does. Returns the items to write keys for.
 */
function foldEveryIdentityItems(dp: DirectionPolicy): DirectionPolicy {
  if (!dp.items.some((i) => i.everyIdentity)) return dp;
  const folded: DirectionPolicy = { ...dp, items: dp.items.map((i) => (i.everyIdentity ? { ...i, remotes: 'any' as const } : i)) };
  const ports = new Set<number>();
  const protos = new Set<number>();
  const flows: PortKey[] = [];
  for (const item of dp.items) {
    if (item.ports === 'all') continue;
    for (const p of item.ports) { flows.push(p); ports.add(p.port); protos.add(p.proto); }
  }
  let unnamedPort = 1;
  while (ports.has(unnamedPort)) unnamedPort++;
  for (const proto of protos) flows.push({ port: unnamedPort, proto });
  flows.push({ port: 0, proto: Protocol.icmp }); // no item names ICMP: every other protocol's class
  const same = flows.every((f) => effectiveForUnknown(decideFlow(dp, 0, f.port, f.proto).entry)
    === effectiveForUnknown(decideFlow(folded, 0, f.port, f.proto).entry));
  return same ? folded : dp;
}

/** The key closure of one (local identity, direction), each key's value, and the remotes that need auth. */
function compileDirection(local: number, direction: Direction, policy: DirectionPolicy, identities: Iterable<number>): {
  entries: PolicyMapEntry[]; authRemotes: Set<number>;
} {
  const dp = foldEveryIdentityItems(policy);
  const wildcard = new Map<string, PortKey>([[portKeyText(ANY_PORT), ANY_PORT]]);
  const byRemote = new Map<number, Map<string, PortKey>>();
  for (const item of dp.items) {
    const ports = item.ports === 'all' ? [ANY_PORT] : item.ports;
    const targets = item.remotes === 'any' ? [wildcard] : [...item.remotes].map((r) => {
      let m = byRemote.get(r);
      if (!m) byRemote.set(r, (m = new Map()));
      return m;
    });
    for (const m of targets) for (const p of ports) m.set(portKeyText(p), p);
  }

  const entries: PolicyMapEntry[] = [];
  const authRemotes = new Set<number>();
  const put = (remote: number, p: PortKey): PolicyEntry => {
    const entry = decide(dp, remote, p);
    entries.push({ key: { localIdentity: local, remoteIdentity: remote, port: p.port, proto: p.proto, direction }, entry });
    return entry;
  };
  const isAuth = (e: PolicyEntry): boolean => e.verdict === 'allow' && e.authType !== AuthType.none;

  const wildcardAuth: PortKey[] = [];
  for (const p of wildcard.values()) if (isAuth(put(0, p))) wildcardAuth.push(p);

  for (const [remote, own] of byRemote) {
    const keys = new Map(own);
    // Intersections with the wildcard-remote keys: the narrower wildcard keys inside one of this remote's keys.
    for (const [text, p] of wildcard) {
      if (!keys.has(text) && [...own.values()].some((o) => portCovers(o, p))) keys.set(text, p);
    }
    let needsAuth = false;
    for (const p of keys.values()) needsAuth = isAuth(put(remote, p)) || needsAuth;
    // Flows of this remote that none of its own keys cover fall through to the wildcard keys.
    if (!needsAuth) needsAuth = wildcardAuth.some((w) => ![...own.values()].some((o) => portCovers(o, w)));
    if (needsAuth) authRemotes.add(remote);
  }
  if (wildcardAuth.length > 0) {
    for (const remote of identities) if (!byRemote.has(remote)) authRemotes.add(remote);
  }
  return { entries: withoutRedundantPortEntries(entries), authRemotes };
}

/**
 * Drops port entries whose value the lookup would find anyway one step less
 * specific (e.g. port 80 of a remote that is allowed on every port with the
 * same auth). A port entry covers exactly one flow class, and removing an entry
 * equal to its successor leaves every lookup's result unchanged.
 */
function withoutRedundantPortEntries(entries: PolicyMapEntry[]): PolicyMapEntry[] {
  const byKey = new Map(entries.map((e) => [policyKeyText(e.key), e.entry]));
  return entries.filter(({ key, entry }) => {
    if (key.port === 0) return true;
    const self = policyKeyText(key);
    const next = lookupPolicy((k) => { const t = policyKeyText(k); return t === self ? undefined : byKey.get(t); },
      key.localIdentity, key.remoteIdentity, key.port, key.proto, key.direction);
    return !next || next.entry.verdict !== entry.verdict || next.entry.authType !== entry.authType;
  });
}

/** A policy key as a string, for maps keyed by it. */
export const policyKeyText = (k: PolicyKey): string => `${k.localIdentity}/${k.remoteIdentity}/${k.port}/${k.proto}/${k.direction}`;

const keyOrder = (a: PolicyKey, b: PolicyKey): number =>
  a.localIdentity - b.localIdentity || (a.direction === b.direction ? 0 : a.direction === 'ingress' ? -1 : 1)
  || a.remoteIdentity - b.remoteIdentity || a.proto - b.proto || a.port - b.port;

/** The rules that decide `labels`' traffic in `direction`: what explain evaluates. */
export function policyForLabels(input: Pick<CompileInput, 'policies' | 'identities'>, labels: Readonly<Record<string, string>>, direction: Direction): DirectionPolicy {
  return directionPolicy(input.policies, labels, direction, new IdentityIndex(input.identities));
}

export function compilePolicies(input: CompileInput): Omit<CompiledPolicies, 'errors'> {
  const index = new IdentityIndex(input.identities);
  const locals = [...new Set(input.localIdentities)].sort((a, b) => a - b);
  const entries: PolicyMapEntry[] = [];
  const pairs = new Map<number, Set<number>>();
  for (const local of locals) {
    const labels = input.identities.get(local)?.labels;
    if (!labels) continue;
    for (const direction of DIRECTIONS) {
      const dp = directionPolicy(input.policies, labels, direction, index);
      if (dp.selectedBy.length === 0) continue;
      const compiled = compileDirection(local, direction, dp, input.identities.keys());
      entries.push(...compiled.entries);
      if (compiled.authRemotes.size === 0) continue;
      const remotes = pairs.get(local);
      if (!remotes) pairs.set(local, compiled.authRemotes);
      else for (const r of compiled.authRemotes) remotes.add(r);
    }
  }
  entries.sort((a, b) => keyOrder(a.key, b.key));
  const authPairs: AuthRequirement[] = [];
  for (const local of locals) {
    const remotes = pairs.get(local);
    if (!remotes) continue;
    for (const remoteIdentity of [...remotes].sort((a, b) => a - b)) authPairs.push({ localIdentity: local, remoteIdentity, authType: AuthType.mutual });
  }
  return { entries, authPairs, localIdentities: locals };
}

/** The policies that decoded, in id order, and those that did not, with why. */
export function usablePolicies(policies: ReadonlyMap<string, MeshPolicy>): { policies: DecodedPolicy[]; errors: PolicyError[] } {
  const out: DecodedPolicy[] = [];
  const errors: PolicyError[] = [];
  for (const [id, p] of [...policies].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (p.spec) out.push(p as DecodedPolicy);
    else errors.push({ policy: id, message: p.error ?? 'policy did not decode' });
  }
  return { policies: out, errors };
}

/** The identities of the endpoints on this node, with their labels (the endpoint's own when the identity is unknown). */
export function localIdentitiesOf(inputs: PolicyInputs): Map<number, Readonly<Record<string, string>>> {
  const out = new Map<number, Readonly<Record<string, string>>>();
  for (const ep of inputs.endpoints.values()) {
    if (ep.nodeId !== inputs.localNodeId || inputs.localNodeId === 0) continue;
    const labels = inputs.identities.get(ep.identity)?.labels ?? ep.labels;
    if (labels && !out.has(ep.identity)) out.set(ep.identity, labels);
  }
  return out;
}

/** Compiles what the agent knows, for the endpoints on this node. */
export function compileState(inputs: PolicyInputs): CompiledPolicies {
  const { policies, errors } = usablePolicies(inputs.policies);
  const locals = localIdentitiesOf(inputs);
  let identities = inputs.identities;
  const missing = [...locals].filter(([id]) => !identities.has(id));
  if (missing.length > 0) {
    const merged = new Map(identities);
    for (const [id, labels] of missing) merged.set(id, { labels });
    identities = merged;
  }
  return { ...compilePolicies({ policies, identities, localIdentities: locals.keys() }), errors };
}

/**
 * The datapath's lookup (bpf/lib/policy.h policy_lookup) over `get`: the most
 * specific entry, or undefined when the identity is not selected in `direction`.
 */
export function lookupPolicy(get: (key: PolicyKey) => PolicyEntry | undefined, local: number, remote: number, port: number, proto: number, direction: Direction): PolicyMapEntry | undefined {
  const tryKey = (remoteIdentity: number, p: number, pr: number): PolicyMapEntry | undefined => {
    const key: PolicyKey = { localIdentity: local, remoteIdentity, port: p, proto: pr, direction };
    const entry = get(key);
    return entry && { key, entry };
  };
  const remotes = remote !== 0 ? [remote, 0] : [0];
  for (const r of remotes) {
    const hit = (port !== 0 ? tryKey(r, port, proto) : undefined) ?? tryKey(r, 0, proto) ?? tryKey(r, 0, 0);
    if (hit) return hit;
  }
  return undefined;
}
