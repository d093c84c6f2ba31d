/**
 * Datapath events as flows (agent/observe/decode.ts): each side named, the
 * deciding policy attributed, and every field at the path and of the type where
 * real `hubble observe -o json` output has it (test/cli/fixtures/hubble-flow-paths.json),
 * so a Hubble jq recipe reads meshid's flows unchanged.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { FlowDecoder, FlowHistory } from '../../../agent/observe/index.js';
import { AgentState } from '../../../agent/sync/state.js';
import { compactFlow, type Flow } from '../../../api/flow.js';
import { AuthType, wallClockToBootNs, type FlowEvent } from '../../../bpf/index.js';
import { TrustDomain } from '../../../spiffe/index.js';
import { ids, payClusterSnapshot } from '../policy/fixtures.js';

const { pay, order, web } = ids;
const fixture = JSON.parse(readFileSync(new URL('../../../../test/cli/fixtures/hubble-flow-paths.json', import.meta.url), 'utf8')) as
  { paths: Record<string, string>; meshid_omits: Record<string, string> };

function state(): AgentState {
  const s = new AgentState(TrustDomain.parse('example.org'));
  s.apply(payClusterSnapshot());
  return s;
}

const when = new Date('2026-12-05T12:00:00.123Z');
function event(over: Partial<FlowEvent>): FlowEvent {
  return {
    timestampBootNs: wallClockToBootNs(when), localIdentity: pay.id, remoteIdentity: web.id, remoteNodeId: 2, direction: 'egress',
    reasonCode: 1, reason: 'policy denied', dropped: true, family: 4, proto: 6, authType: 0,
    srcIp: '10.1.0.10', dstIp: '10.2.0.11', srcPort: 41000, dstPort: 80, ifindex: 7, length: 60, ...over,
  };
}

/** Every path of a JSON value, with its type (arrays: the array itself, and the paths of its first element). */
function paths(v: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (Array.isArray(v)) {
    out.set(prefix, 'array');
    if (v.length) paths(v[0], `${prefix}.0`, out);
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) paths(x, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, typeof v);
  }
  return out;
}

const decoder = new FlowDecoder({ nodeName: 'node-1', state: state() });

t.test('an egress policy deny: Hubble\'s fields at Hubble\'s paths, with the policy that denied it', async (t) => {
  const f = decoder.decode(event({}));
  // as `hubble observe -o json` prints it: the GetFlowsResponse around the flow
  const ours = paths({ flow: f, node_name: f.node_name, time: f.time });
  for (const [path, type] of Object.entries(fixture.paths)) {
    if (fixture.meshid_omits[path]) {
      t.notOk(ours.has(path), `${path}: not reported (${fixture.meshid_omits[path]})`);
      continue;
    }
    t.equal(ours.get(path), type, `${path} is a ${type}`);
  }
  t.same(f.egress_denied_by, [{ name: 'pay', namespace: 'prod', kind: 'CiliumNetworkPolicy' }], 'the deny rule\'s policy');
  t.same([f.verdict, f.drop_reason, f.drop_reason_desc, f.traffic_direction, f.auth_type], ['DROPPED', 133, 'POLICY_DENIED', 'EGRESS', 'DISABLED']);
  t.same([f.source.pod_name, f.source.namespace, f.source.identity, f.destination.pod_name], ['pod-10.1.0.10', 'prod', pay.id, 'pod-10.2.0.11']);
  t.ok(f.source.labels.includes('k8s:app=pay'), 'labels as Hubble writes them');
  t.equal(f.source.spiffe_id, 'spiffe://example.org/ns/prod/sa/default');
  t.ok(Math.abs(Date.parse(f.time) - when.getTime()) <= 2, `the event's time on the wall clock (${f.time})`);
  t.match(compactFlow(f), /^Dec  5 12:00:00\.\d{3} \[node-1\]: prod\/pod-10\.1\.0\.10:41000 \(ID:300\) -> prod\/pod-10\.2\.0\.11:80 \(ID:302\) egress Policy denied by prod\/pay DROPPED \(TCP\)$/,
    'the compact line says which policy denied it');
});

t.test('an ingress drop for want of authentication names the policy that asked for it; a forwarded flow the one that allowed it', async (t) => {
  const drop = decoder.decode(event({
    localIdentity: pay.id, remoteIdentity: order.id, direction: 'ingress', reason: 'auth required', reasonCode: 2, authType: AuthType.mutual,
    srcIp: '10.2.0.10', dstIp: '10.1.0.10', srcPort: 52000, dstPort: 8080,
  }));
  t.same([drop.drop_reason, drop.drop_reason_desc, drop.auth_type, drop.traffic_direction], [189, 'AUTH_REQUIRED', 'SPIRE', 'INGRESS']);
  t.same(drop.auth_required_by, [{ name: 'pay', namespace: 'prod', kind: 'CiliumNetworkPolicy' }]);
  t.match(compactFlow(drop), /Authentication required by prod\/pay DROPPED \(TCP\) auth=SPIRE$/);
  const fwd = decoder.decode(event({
    localIdentity: pay.id, remoteIdentity: order.id, direction: 'ingress', reason: 'forwarded', reasonCode: 0, dropped: false, authType: AuthType.mutual,
    srcIp: '10.2.0.10', dstIp: '10.1.0.10', srcPort: 52001, dstPort: 8080,
  }));
  t.same([fwd.verdict, fwd.drop_reason_desc, fwd.event_type.type], ['FORWARDED', undefined, 4]);
  t.same(fwd.ingress_allowed_by, [{ name: 'pay', namespace: 'prod', kind: 'CiliumNetworkPolicy' }]);
  t.notOk('drop_reason' in fwd, 'no drop fields on a forwarded flow');
  t.not(fwd.uuid, drop.uuid, 'every flow has a uuid of its own');
});

t.test('an address the agent does not know is shown by IP with identity 0, and the flow is not attributed', async (t) => {
  const f: Flow = decoder.decode(event({ remoteIdentity: 0, dstIp: '198.51.100.7', reason: 'policy denied' }));
  t.same(f.destination, { identity: 0, labels: [] });
  t.equal(f.IP.destination, '198.51.100.7');
  t.match(compactFlow(f), /-> 198\.51\.100\.7:80 \(ID:0\)/);
});

t.test('the history keeps the newest N, oldest first, and its memory is bounded by N', async (t) => {
  const h = new FlowHistory(4);
  for (let i = 0; i < 10; i++) h.add(`line-${i}`);
  t.same(h.lines(), ['line-6', 'line-7', 'line-8', 'line-9']);
  t.same(h.lines(2), ['line-8', 'line-9']);
  t.same([h.size, h.added], [4, 10]);
  const big = new FlowHistory(4096);
  const line = JSON.stringify(decoder.decode(event({})));
  for (let i = 0; i < 10_000; i++) big.add(line.replace('41000', String(i)));
  t.equal(big.size, 4096);
  t.ok(big.chars() <= 4096 * (line.length + 5), `held ${big.chars()} characters for 4,096 flows of ~${line.length}`);
  t.throws(() => new FlowHistory(0), /positive integer/);
});

t.test('line() writes what decode() makes, from fragments cached per flow shape and state revision', async (t) => {
  const strip = (f: Flow): Omit<Flow, 'time' | 'uuid'> => { const { time: _t, uuid: _u, ...rest } = f; return rest; };
  for (const e of [
    event({}),
    event({ localIdentity: pay.id, remoteIdentity: order.id, direction: 'ingress', reason: 'auth required', reasonCode: 2, authType: AuthType.mutual, srcIp: '10.2.0.10', dstIp: '10.1.0.10', srcPort: 52000, dstPort: 8080 }),
    event({ proto: 1, srcPort: 0, dstPort: 0 }),
  ]) {
    const fromLine = JSON.parse(decoder.line(e)) as Flow;
    t.same(strip(fromLine), strip(decoder.decode(e)), `${e.reason} ${e.direction} proto ${e.proto}`);
    t.ok(decoder.line(e).startsWith('{"time":"'), 'time comes first (the server reads it without a parse)');
    t.ok(Math.abs(Date.parse(fromLine.time) - when.getTime()) <= 2);
  }
  const a = JSON.parse(decoder.line(event({ srcPort: 1111 }))) as Flow;
  const b = JSON.parse(decoder.line(event({ srcPort: 2222 }))) as Flow;
  t.same([a.l4.TCP?.source_port, b.l4.TCP?.source_port], [1111, 2222], 'the ports of each packet, not of the cached shape');
  t.not(a.uuid, b.uuid);
});
