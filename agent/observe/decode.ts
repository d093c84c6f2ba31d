/**
 * Datapath events as flows (api/flow.ts): each side named from the endpoints
 * and identities the agent has synced, and the policies that decided it, as
 * `meshid explain` finds them.
 */
import { randomUUID } from 'node:crypto';
import { AuthType, bootNsToWallClock, bootToWallOffsetNs, type FlowEvent } from '../../bpf/index.js';
import { DROP_REASONS, type Flow, type FlowEndpoint, type FlowPolicyRef } from '../../api/flow.js';
import { explainFlow, type Explanation } from '../policy/index.js';
import type { AgentState } from '../sync/index.js';

const PROTOCOLS: Record<number, string> = { 1: 'ICMPv4', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };
/** Explanations kept per state revision: one per (local endpoint, remote identity, port, protocol, direction). */
const ATTRIBUTION_CACHE = 4096;
/** Flow shapes kept per state revision (see line()). */
const SHAPE_CACHE = 8192;
const PORTED = new Set(['TCP', 'UDP', 'SCTP']);

interface Attribution { allowedBy: FlowPolicyRef[]; deniedBy: FlowPolicyRef[]; authRequiredBy: FlowPolicyRef[] }
const NONE: Attribution = { allowedBy: [], deniedBy: [], authRequiredBy: [] };

function policyRef(ref: { policy: string; kind: string }): FlowPolicyRef {
  const slash = ref.policy.indexOf('/');
  return slash < 0 ? { name: ref.policy, namespace: '', kind: ref.kind } : { name: ref.policy.slice(slash + 1), namespace: ref.policy.slice(0, slash), kind: ref.kind };
}

function unique(refs: FlowPolicyRef[]): FlowPolicyRef[] {
  const seen = new Map(refs.map((r) => [`${r.kind}/${r.namespace}/${r.name}`, r]));
  return [...seen.values()];
}

export class FlowDecoder {
  readonly #cache = new Map<string, Attribution>();
  /** Per flow shape (all but time, uuid and the source port): the JSON after the l4 member. */
  readonly #shapes = new Map<string, string>();
  #cacheRevision = -1;
  /** Wall minus boot clock, read at most once a second (it moves only when the wall clock is set). */
  #wallOffsetNs = 0n;
  #wallOffsetReadAt = 0;

  constructor(private readonly opts: { nodeName: string; state: Pick<AgentState, 'endpoints' | 'identities' | 'policies' | 'localNodeId' | 'revision'> }) {}

  decode(e: FlowEvent): Flow {
    const { state } = this.opts;
    const leaving = e.direction === 'egress';
    const side = (ip: string, identity: number): FlowEndpoint => {
      const ep = state.endpoints.get(ip);
      const id = state.identities.get(identity);
      const labels = Object.entries(id?.labels ?? {}).map(([k, v]) => `k8s:${k}=${v}`);
      return {
        identity, labels,
        ...(ep ? { namespace: ep.namespace, pod_name: ep.name } : id?.namespace ? { namespace: id.namespace } : {}),
        ...(id ? { spiffe_id: id.spiffeId.toString() } : {}),
      };
    };
    const proto = PROTOCOLS[e.proto] ?? String(e.proto);
    const ports = { source_port: e.srcPort, destination_port: e.dstPort };
    const l4: Flow['l4'] = proto === 'TCP' ? { TCP: ports } : proto === 'UDP' ? { UDP: ports } : proto === 'SCTP' ? { SCTP: ports } : {};
    const time = bootNsToWallClock(e.timestampBootNs);
    const reason = DROP_REASONS[e.reason];
    const flow: Flow = {
      time: time.toISOString(),
      uuid: randomUUID(),
      verdict: e.dropped ? 'DROPPED' : 'FORWARDED',
      ...(e.dropped ? { drop_reason: reason?.hubble ?? 0, drop_reason_desc: reason?.desc ?? e.reason.toUpperCase().replace(/ /g, '_') } : {}),
      auth_type: e.authType === AuthType.mutual ? 'SPIRE' : 'DISABLED',
      IP: { source: e.srcIp, destination: e.dstIp, ipVersion: e.family === 4 ? 'IPv4' : 'IPv6' },
      l4,
      source: side(e.srcIp, leaving ? e.localIdentity : e.remoteIdentity),
      destination: side(e.dstIp, leaving ? e.remoteIdentity : e.localIdentity),
      Type: 'L3_L4',
      node_name: this.opts.nodeName,
      // Hubble's monitor types: 1 a drop, 4 a trace (here: a new forwarded flow)
      event_type: e.dropped ? { type: 1, sub_type: reason?.hubble ?? 0 } : { type: 4 },
      traffic_direction: leaving ? 'EGRESS' : 'INGRESS',
      is_reply: false,
      Summary: proto,
    };
    const a = e.reason === 'invalid packet' ? NONE : this.#attribute(e);
    const dir = leaving ? 'egress' : 'ingress';
    if (a.deniedBy.length) flow[`${dir}_denied_by`] = a.deniedBy;
    if (a.allowedBy.length && !e.dropped) flow[`${dir}_allowed_by`] = a.allowedBy;
    if (a.authRequiredBy.length) flow.auth_required_by = a.authRequiredBy;
    return flow;
  }

  /**
   * The flow as its JSON line: what JSON.stringify(decode(e)) holds (with `l4`
   * moved up, after `time` and `uuid`), at a fraction of the cost. All that
   * varies within one flow (time, uuid, ports) is written here; the rest is
   * decoded and serialised once per flow shape and state revision.
   */
  line(e: FlowEvent): string {
    this.#freshFor(Number(this.opts.state.revision));
    const key = `${e.reasonCode}|${e.direction}|${e.proto}|${e.authType}|${e.family}|${e.srcIp}|${e.dstIp}|${e.localIdentity}|${e.remoteIdentity}|${e.dstPort}`;
    let rest = this.#shapes.get(key);
    if (rest === undefined) {
      const { time: _time, uuid: _uuid, l4: _l4, ...shape } = this.decode(e);
      rest = JSON.stringify(shape).slice(1);
      if (this.#shapes.size >= SHAPE_CACHE) this.#shapes.clear();
      this.#shapes.set(key, rest);
    }
    const proto = PROTOCOLS[e.proto] ?? '';
    const l4 = PORTED.has(proto) ? `{"${proto}":{"source_port":${e.srcPort},"destination_port":${e.dstPort}}}` : '{}';
    return `{"time":"${this.#wallTime(e.timestampBootNs)}","uuid":"${randomUUID()}","l4":${l4},${rest}`;
  }

  #wallTime(bootNs: bigint): string {
    const now = Date.now();
    if (now - this.#wallOffsetReadAt > 1000) {
      this.#wallOffsetNs = bootToWallOffsetNs();
      this.#wallOffsetReadAt = now;
    }
    return new Date(Number((bootNs + this.#wallOffsetNs) / 1_000_000n)).toISOString();
  }

  /** Cached decodings hold for one state revision. */
  #freshFor(revision: number): void {
    if (this.#cacheRevision === revision) return;
    this.#cache.clear();
    this.#shapes.clear();
    this.#cacheRevision = revision;
  }

  /** The policies that decide the event's flow, explained once per state revision. */
  #attribute(e: FlowEvent): Attribution {
    const { state } = this.opts;
    this.#freshFor(Number(state.revision));
    const leaving = e.direction === 'egress';
    const localIp = leaving ? e.srcIp : e.dstIp;
    const key = `${localIp}|${e.remoteIdentity}|${e.dstPort}|${e.proto}|${e.direction}`;
    let a = this.#cache.get(key);
    if (a) return a;
    let x: Explanation | undefined;
    try {
      x = explainFlow(state, { localIp, remoteIp: leaving ? e.dstIp : e.srcIp, port: e.dstPort, protocol: e.proto, direction: e.direction });
    } catch {
      x = undefined; // an endpoint the agent no longer knows: the flow stays unattributed
    }
    a = !x ? NONE : {
      allowedBy: x.verdict === 'allow' ? unique(x.decidedBy.map(policyRef)) : [],
      deniedBy: x.verdict === 'deny' ? unique(x.decidedBy.map(policyRef)) : [],
      authRequiredBy: unique(x.authRequiredBy.map(policyRef)),
    };
    if (this.#cache.size >= ATTRIBUTION_CACHE) this.#cache.clear();
    this.#cache.set(key, a);
    return a;
  }
}
