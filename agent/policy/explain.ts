/**
 * `meshid explain`: which policy rule decides a flow between two endpoints and
 * whether it needs authentication, next to the entry the datapath would find.
 */
import { isIP } from 'node:net';
import { AuthType, Protocol, type AuthPair, type Direction } from '../../bpf/index.js';
import { InvalidArgument, NotFound } from '../../spiffe/index.js';
import type { Endpoint } from '../sync/index.js';
import {
  compilePolicies, decideFlow, lookupPolicy, policyForLabels, policyKeyText, usablePolicies,
  type PolicyInputs, type PolicyMapEntry, type RuleOrigin, type RuleRef,
} from './compile.js';

export interface FlowQuery {
  /** The endpoint whose policy applies (the destination for ingress, the source for egress). */
  localIp: string;
  /** The other end; an address that is no endpoint has no identity (0), as in the datapath. */
  remoteIp: string;
  /** Destination port; 0 for protocols without ports. */
  port: number;
  /** An IP protocol number, or TCP, UDP, SCTP, ICMP, ICMPv6. */
  protocol: number | string;
  direction: Direction;
}

export type ExplainReason =
  /** No rule selects the local endpoint in this direction: the datapath lets the flow pass. */
  | 'not-selected'
  | 'denied-by-rule'
  | 'allowed-by-rule'
  /** Selected, and no rule allows the flow. */
  | 'default-deny'
  /** Selected only by rules with enableDefaultDeny false, and no rule matches. */
  | 'default-allow';

export interface Explanation {
  direction: Direction;
  localIdentity: number;
  /** False when the local endpoint is on another node (its entries are that node's). */
  localEndpointOnThisNode: boolean;
  /** 0 when the remote address is no known endpoint. */
  remoteIdentity: number;
  port: number;
  protocol: number;
  verdict: 'allow' | 'deny';
  authRequired: boolean;
  reason: ExplainReason;
  /** The rules that select the local endpoint in this direction. */
  selectedBy: RuleRef[];
  /** The deny items that match, or else the allow items that match. */
  decidedBy: RuleOrigin[];
  /** The matching allow items that ask for authentication. */
  authRequiredBy: RuleOrigin[];
  /**
   * The entry the datapath's most-specific lookup finds in the compiled map; null when not selected.
   * For an address with no identity, an allow entry with auth drops like a deny (identity 0 is never authenticated).
   */
  datapathEntry: PolicyMapEntry | null;
}

const PROTOCOL_NAMES: Record<string, number> = {
  TCP: Protocol.tcp, UDP: Protocol.udp, SCTP: Protocol.sctp, ICMP: Protocol.icmp, ICMPV6: Protocol.icmpv6,
};

function protocolNumber(p: number | string): number {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0 || p > 255) throw new InvalidArgument('protocol must be an IP protocol number in [0, 255]', 'protocol');
    return p;
  }
  const n = PROTOCOL_NAMES[p.toUpperCase()];
  if (n === undefined) throw new InvalidArgument(`protocol must be TCP, UDP, SCTP, ICMP, ICMPv6 or a number (got "${p}")`, 'protocol');
  return n;
}

/**
 * Explains a flow with the agent's current view. The rules are evaluated
 * directly, and the flow is also looked up in the compiled entries as the
 * datapath does; the two agree by construction of the compiler.
 */
export function explainFlow(inputs: PolicyInputs, query: FlowQuery): Explanation {
  if (!isIP(query.localIp)) throw new InvalidArgument(`"${query.localIp}" is not an IP address`, 'local_ip');
  if (!isIP(query.remoteIp)) throw new InvalidArgument(`"${query.remoteIp}" is not an IP address`, 'remote_ip');
  if (!Number.isInteger(query.port) || query.port < 0 || query.port > 65535) throw new InvalidArgument('port must be an integer in [0, 65535]', 'port');
  if (query.direction !== 'ingress' && query.direction !== 'egress') throw new InvalidArgument('direction must be ingress or egress', 'direction');
  const proto = protocolNumber(query.protocol);
  const localEp = inputs.endpoints.get(query.localIp);
  if (!localEp) throw new NotFound(`no endpoint has the address ${query.localIp}`, 'local_ip');
  const remoteIdentity = inputs.endpoints.get(query.remoteIp)?.identity ?? 0;

  const { policies } = usablePolicies(inputs.policies);
  const labels = inputs.identities.get(localEp.identity)?.labels ?? localEp.labels ?? {};
  const identities = inputs.identities.has(localEp.identity)
    ? inputs.identities
    : new Map([...inputs.identities, [localEp.identity, { labels }]]);
  const dp = policyForLabels({ policies, identities }, labels, query.direction);

  const compiled = compilePolicies({ policies, identities, localIdentities: [localEp.identity] });
  const byKey = new Map(compiled.entries.map((e) => [policyKeyText(e.key), e.entry]));
  const datapathEntry = lookupPolicy((k) => byKey.get(policyKeyText(k)), localEp.identity, remoteIdentity, query.port, proto, query.direction) ?? null;

  const base = {
    direction: query.direction, localIdentity: localEp.identity,
    localEndpointOnThisNode: inputs.localNodeId !== 0 && localEp.nodeId === inputs.localNodeId,
    remoteIdentity, port: query.port, protocol: proto, selectedBy: dp.selectedBy, datapathEntry,
  };
  if (dp.selectedBy.length === 0) {
    return { ...base, verdict: 'allow', authRequired: false, reason: 'not-selected', decidedBy: [], authRequiredBy: [] };
  }
  const { entry, matched } = decideFlow(dp, remoteIdentity, query.port, proto);
  const origins = matched.map((i) => i.origin);
  if (entry.verdict === 'deny') {
    return { ...base, verdict: 'deny', authRequired: false, reason: matched.length > 0 ? 'denied-by-rule' : 'default-deny', decidedBy: origins, authRequiredBy: [] };
  }
  if (matched.length === 0) {
    return { ...base, verdict: 'allow', authRequired: false, reason: 'default-allow', decidedBy: [], authRequiredBy: [] };
  }
  const authRequiredBy = matched.filter((i) => i.auth).map((i) => i.origin);
  return { ...base, verdict: 'allow', authRequired: authRequiredBy.length > 0, reason: 'allowed-by-rule', decidedBy: origins, authRequiredBy };
}

/**
 * The admin socket's explain: `from` and `to` are pod names, namespace/pod or
 * IPs; each direction whose local end is on this node is explained, with
 * whether the auth entry a required pair needs is in the map.
 */
export function explainQuery(
  state: PolicyInputs & { readonly endpoints: ReadonlyMap<string, Endpoint> },
  q: URLSearchParams,
  opts: { nodeName: string; hasAuthEntry?: (pair: AuthPair) => boolean },
): Record<string, unknown> {
  const resolve = (v: string | null, field: string): string => {
    if (!v) throw new InvalidArgument(`${field} is required`, field);
    for (const [ip, ep] of state.endpoints) if (ip === v || ep.name === v || `${ep.namespace}/${ep.name}` === v) return ip;
    throw new NotFound(`no endpoint "${v}"`, field);
  };
  const from = resolve(q.get('from'), 'from');
  const to = resolve(q.get('to'), 'to');
  const port = Number(q.get('port') ?? 0);
  const protocol = q.get('protocol') ?? 'TCP';
  const local = state.localNodeId;
  const answers: Record<string, unknown>[] = [];
  for (const [direction, localIp, remoteIp] of [['egress', from, to], ['ingress', to, from]] as const) {
    if (state.endpoints.get(localIp)?.nodeId !== local) continue;
    const e = explainFlow(state, { localIp, remoteIp, port, protocol, direction });
    const remoteNode = state.endpoints.get(remoteIp)!.nodeId;
    const authed = e.authRequired && opts.hasAuthEntry
      ? opts.hasAuthEntry({ localIdentity: e.localIdentity, remoteIdentity: e.remoteIdentity, remoteNodeId: remoteNode === local ? 0 : remoteNode, authType: AuthType.mutual })
      : false;
    const lines = [
      `${direction} of ${localIp} (identity ${e.localIdentity}) ${direction === 'egress' ? 'to' : 'from'} ${remoteIp} (identity ${e.remoteIdentity}) port ${port}/${protocol}: ${e.verdict.toUpperCase()} (${e.reason})`,
      `  selected by: ${e.selectedBy.map((r) => r.policy).join(', ') || 'no policy (not selected: traffic passes)'}`,
      ...(e.decidedBy.length ? [`  decided by: ${e.decidedBy.map((r) => JSON.stringify(r)).join('; ')}`] : []),
      ...(e.authRequired ? [`  authentication required by: ${e.authRequiredBy.map((r) => JSON.stringify(r)).join('; ')}`, `  auth entry: ${authed ? 'present' : 'missing (the first packet will be dropped: auth required)'}`] : []),
    ];
    answers.push({ ...e, authEntryPresent: authed, text: lines.join('\n') });
  }
  if (answers.length === 0) return { applies: false };
  return { applies: true, node: opts.nodeName, explanations: answers, text: answers.map((a) => a['text']).join('\n') };
}
