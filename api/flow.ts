/**
 * A flow as meshid reports it: Hubble's JSON (`hubble observe -o json`, the
 * field names of cilium's api/v1/flow/flow.proto as protojson writes them)
 * wherever a field exists in both, so a Hubble `jq` recipe works unchanged.
 * The agent makes them, the server relays and keeps them, the CLI and the web
 * UI read them; the filter and the one-line form are here so all agree.
 */

export interface FlowPolicyRef {
  name: string;
  /** Empty for a cluster-wide policy. */
  namespace: string;
  kind: string;
}

export interface FlowEndpoint {
  /** The security identity (Hubble's `identity`). */
  identity: number;
  namespace?: string;
  /** `k8s:key=value`, as Hubble writes them. */
  labels: string[];
  pod_name?: string;
  /** meshid: the SPIFFE ID of the identity's ServiceAccount. */
  spiffe_id?: string;
}

export interface Flow {
  /** RFC 3339 with nanoseconds. */
  time: string;
  uuid: string;
  verdict: 'FORWARDED' | 'DROPPED';
  /** Hubble's number for the reason (133 policy denied, 189 auth required, 134 invalid packet); 0 when forwarded or meshid's own. */
  drop_reason?: number;
  /** POLICY_DENIED, AUTH_REQUIRED, INVALID_PACKET_DROPPED, or meshid's WIREGUARD_REQUIRED. */
  drop_reason_desc?: string;
  /** SPIRE (mutual authentication required by the policy) or DISABLED. */
  auth_type: 'SPIRE' | 'DISABLED';
  IP: { source: string; destination: string; ipVersion: 'IPv4' | 'IPv6' };
  l4: { TCP?: Ports; UDP?: Ports; SCTP?: Ports; ICMPv4?: { type: number; code: number }; ICMPv6?: { type: number; code: number } };
  source: FlowEndpoint;
  destination: FlowEndpoint;
  Type: 'L3_L4';
  node_name: string;
  /** Hubble's event type: 1 drop, 4 trace (a new forwarded flow). */
  event_type: { type: number; sub_type?: number };
  traffic_direction: 'INGRESS' | 'EGRESS';
  is_reply: boolean;
  /** The policies whose rules decided the flow, by direction and outcome (as Hubble's policy verdicts). */
  ingress_allowed_by?: FlowPolicyRef[];
  egress_allowed_by?: FlowPolicyRef[];
  ingress_denied_by?: FlowPolicyRef[];
  egress_denied_by?: FlowPolicyRef[];
  /** meshid: the policies whose allow asked for mutual authentication. */
  auth_required_by?: FlowPolicyRef[];
  Summary: string;
}
interface Ports { source_port: number; destination_port: number }

/** What `hubble observe -o json` prints per flow (observer.GetFlowsResponse). */
export interface FlowResponse { flow: Flow; node_name: string; time: string }

/** Hubble Relay's word that nodes are missing from an answer (relay.NodeStatusEvent). */
export interface NodeStatusResponse {
  node_status: { state_change: 'NODE_CONNECTED' | 'NODE_UNAVAILABLE'; node_names: string[]; message: string };
  time: string;
}

export const DROP_REASONS: Record<string, { desc: string; hubble: number }> = {
  'policy denied': { desc: 'POLICY_DENIED', hubble: 133 },
  'auth required': { desc: 'AUTH_REQUIRED', hubble: 189 },
  'invalid packet': { desc: 'INVALID_PACKET_DROPPED', hubble: 134 },
  'wireguard required': { desc: 'WIREGUARD_REQUIRED', hubble: 0 },
};

/** `hubble observe`'s filters; every one set must match. */
export interface FlowFilter {
  verdict?: 'FORWARDED' | 'DROPPED';
  /** Either end in this namespace. */
  namespace?: string;
  /** Either end is this pod: `ns/name`, or a name prefix (Hubble's --pod). */
  pod?: string;
  fromPod?: string;
  toPod?: string;
  /** Either end has this security identity. */
  identity?: number;
  node?: string;
  /** Either port. */
  port?: number;
  /** `drop` (verdict DROPPED) or `trace` (forwarded flows). */
  type?: 'drop' | 'trace';
  /** Flows at or after this time (ms since the epoch). */
  sinceMs?: number;
}

function podMatches(ep: FlowEndpoint, pattern: string): boolean {
  const slash = pattern.indexOf('/');
  if (slash >= 0) {
    const ns = pattern.slice(0, slash);
    const name = pattern.slice(slash + 1);
    return ep.namespace === ns && (name === '' || (ep.pod_name ?? '').startsWith(name));
  }
  return (ep.pod_name ?? '').startsWith(pattern);
}

function ports(f: Flow): Ports | undefined { return f.l4.TCP ?? f.l4.UDP ?? f.l4.SCTP; }

export function flowMatches(f: Flow, filter: FlowFilter): boolean {
  if (filter.verdict && f.verdict !== filter.verdict) return false;
  if (filter.type === 'drop' && f.verdict !== 'DROPPED') return false;
  if (filter.type === 'trace' && f.verdict !== 'FORWARDED') return false;
  if (filter.namespace && f.source.namespace !== filter.namespace && f.destination.namespace !== filter.namespace) return false;
  if (filter.pod && !podMatches(f.source, filter.pod) && !podMatches(f.destination, filter.pod)) return false;
  if (filter.fromPod && !podMatches(f.source, filter.fromPod)) return false;
  if (filter.toPod && !podMatches(f.destination, filter.toPod)) return false;
  if (filter.identity !== undefined && f.source.identity !== filter.identity && f.destination.identity !== filter.identity) return false;
  if (filter.node && f.node_name !== filter.node) return false;
  if (filter.port !== undefined) {
    const p = ports(f);
    if (!p || (p.source_port !== filter.port && p.destination_port !== filter.port)) return false;
  }
  if (filter.sinceMs !== undefined && Date.parse(f.time) < filter.sinceMs) return false;
  return true;
}

/** The query string of /v1/flows for a filter (the server's and the CLI's one spelling). */
export function filterToQuery(filter: FlowFilter, q = new URLSearchParams()): URLSearchParams {
  if (filter.verdict) q.set('verdict', filter.verdict);
  if (filter.namespace) q.set('namespace', filter.namespace);
  if (filter.pod) q.set('pod', filter.pod);
  if (filter.fromPod) q.set('from_pod', filter.fromPod);
  if (filter.toPod) q.set('to_pod', filter.toPod);
  if (filter.identity !== undefined) q.set('identity', String(filter.identity));
  if (filter.node) q.set('node', filter.node);
  if (filter.port !== undefined) q.set('port', String(filter.port));
  if (filter.type) q.set('type', filter.type);
  if (filter.sinceMs !== undefined) q.set('since', new Date(filter.sinceMs).toISOString());
  return q;
}

/** Thrown for a filter value that is not of its form: `field` names the parameter. */
export class FlowFilterError extends Error {
  constructor(message: string, readonly field: string) { super(message); }
}

const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since 5m` (a duration before now) or an RFC 3339 time, as ms since the epoch. */
export function parseSince(v: string, nowMs: number): number {
  const d = DURATION.exec(v);
  if (d) return nowMs - Number(d[1]) * UNIT_MS[d[2]!]!;
  const t = Date.parse(v);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}T/.test(v)) throw new FlowFilterError(`since must be a duration such as 5m or an RFC 3339 time, not "${v}"`, 'since');
  return t;
}

/** The filter of /v1/flows from its query string; a bad value throws FlowFilterError naming it. */
export function filterFromQuery(q: URLSearchParams, nowMs: number): FlowFilter {
  const filter: FlowFilter = {};
  const verdict = q.get('verdict');
  if (verdict !== null) {
    const v = verdict.toUpperCase();
    if (v !== 'FORWARDED' && v !== 'DROPPED') throw new FlowFilterError(`verdict must be FORWARDED or DROPPED, not "${verdict}"`, 'verdict');
    filter.verdict = v;
  }
  const type = q.get('type');
  if (type !== null) {
    if (type !== 'drop' && type !== 'trace') throw new FlowFilterError(`type must be drop or trace, not "${type}"`, 'type');
    filter.type = type;
  }
  const int = (name: string, max: number): number | undefined => {
    const v = q.get(name);
    if (v === null) return undefined;
    if (!/^\d+$/.test(v) || Number(v) > max) throw new FlowFilterError(`${name} must be a whole number up to ${max}, not "${v}"`, name);
    return Number(v);
  };
  const identity = int('identity', 0xffffffff);
  if (identity !== undefined) filter.identity = identity;
  const port = int('port', 65535);
  if (port !== undefined) filter.port = port;
  for (const [param, key] of [['namespace', 'namespace'], ['pod', 'pod'], ['from_pod', 'fromPod'], ['to_pod', 'toPod'], ['node', 'node']] as const) {
    const v = q.get(param);
    if (v === null) continue;
    if (v.length === 0 || v.length > 253 || /\s/.test(v)) throw new FlowFilterError(`${param} must be a name without spaces, not "${v}"`, param);
    filter[key] = v;
  }
  const since = q.get('since');
  if (since !== null) filter.sinceMs = parseSince(since, nowMs);
  return filter;
}

function endpointText(ep: FlowEndpoint, ip: string, port: number | undefined): string {
  const where = ep.namespace && ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip;
  return `${where}${port !== undefined ? `:${port}` : ''} (ID:${ep.identity})`;
}

function policyNames(refs: FlowPolicyRef[] | undefined): string {
  return (refs ?? []).map((p) => (p.namespace ? `${p.namespace}/${p.name}` : p.name)).join(', ');
}

/** Why a flow was decided, as Hubble's compact line states it, with the deciding policy. */
export function flowDecision(f: Flow): string {
  if (f.verdict === 'FORWARDED') return 'FORWARDED';
  const denied = policyNames(f.traffic_direction === 'INGRESS' ? f.ingress_denied_by : f.egress_denied_by);
  switch (f.drop_reason_desc) {
    case 'POLICY_DENIED': return `Policy denied${denied ? ` by ${denied}` : ' (default deny)'} DROPPED`;
    case 'AUTH_REQUIRED': return `Authentication required${f.auth_required_by?.length ? ` by ${policyNames(f.auth_required_by)}` : ''} DROPPED`;
    case 'WIREGUARD_REQUIRED': return 'WireGuard required DROPPED';
    default: return `${f.drop_reason_desc ?? 'Dropped'} DROPPED`;
  }
}

/** One line per flow, as `hubble observe` prints it by default (-o compact). */
export function compactFlow(f: Flow): string {
  const p = ports(f);
  const time = new Date(f.time);
  const stamp = `${time.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' })} ${String(time.getUTCDate()).padStart(2, ' ')} ` +
    `${time.toISOString().slice(11, 23)}`;
  return `${stamp} [${f.node_name}]: ${endpointText(f.source, f.IP.source, p?.source_port)} ` +
    `-> ${endpointText(f.destination, f.IP.destination, p?.destination_port)} ` +
    `${f.traffic_direction.toLowerCase()} ${flowDecision(f)} (${f.Summary})${f.auth_type === 'SPIRE' ? ' auth=SPIRE' : ''}`;
}
