import t, { type Test } from 'tap';
import type { PolicyEntry, PolicyKey } from '../../../bpf/index.js';
import { AgentState } from '../../../agent/sync/state.js';
import { MemoryPolicyMap, PolicyMapSync, type AuthPairsChange, type PolicyMapWriter } from '../../../agent/policy/index.js';
import { TrustDomain } from '../../../spiffe/index.js';
import { MemoryLogSink, JsonLogger } from '../../../common/log.js';
import { cnp, endpoint, ids, identity, LOCAL_NODE, policyMsgs, TCP, update, verdictOf } from './fixtures.js';

const { pay, order, web } = ids;

/** A MemoryPolicyMap that records every write, so tests see exactly the diff. */
class RecordingMap implements PolicyMapWriter {
  readonly inner = new MemoryPolicyMap();
  ops: string[] = [];
  failNextUpsert = false;
  upsert(key: PolicyKey, entry: PolicyEntry): void {
    if (this.failNextUpsert) { this.failNextUpsert = false; throw new Error('map full'); }
    this.ops.push(`+${text(key)}=${entry.verdict}${entry.authType ? '+auth' : ''}`);
    this.inner.upsert(key, entry);
  }
  delete(key: PolicyKey): boolean { this.ops.push(`-${text(key)}`); return this.inner.delete(key); }
  entries(): Array<{ key: PolicyKey; entry: PolicyEntry }> { return this.inner.entries(); }
  take(): string[] { const o = this.ops; this.ops = []; return o; }
}
const text = (k: PolicyKey): string => `${k.localIdentity}<${k.remoteIdentity}:${k.port}/${k.proto}/${k.direction}`;

const PAY_POLICY = cnp('pay', 'prod', `
  endpointSelector: {matchLabels: {app: pay}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: order}}]
    authentication: {mode: required}
`);

/** A state with pay on this node and order/web on node 2, as a snapshot. */
function snapshotState(yaml: string): AgentState {
  const state = new AgentState(TrustDomain.parse('example.org'));
  state.apply(update({
    snapshot: true, local_node_id: LOCAL_NODE, revision: 1,
    identities: [pay, order, web],
    endpoints: [endpoint('10.1.0.10', pay, LOCAL_NODE), endpoint('10.2.0.10', order, 2), endpoint('10.2.0.11', web, 2)],
    policies: policyMsgs(yaml),
  }));
  return state;
}

function started(t: Test, state: AgentState, map: PolicyMapWriter): { sync: PolicyMapSync; changes: AuthPairsChange[] } {
  const sync = new PolicyMapSync({ state, map });
  const changes: AuthPairsChange[] = [];
  sync.onAuthPairsChange((c) => changes.push(c));
  sync.start();
  t.teardown(() => sync.stop());
  return { sync, changes };
}

t.test('start adopts what the map holds: stale entries go, current ones are not rewritten', async (t) => {
  const state = snapshotState(PAY_POLICY);
  const map = new RecordingMap();
  map.inner.upsert({ localIdentity: 999, remoteIdentity: 0, port: 0, proto: 0, direction: 'egress' }, { verdict: 'deny', authType: 0 });
  map.inner.upsert({ localIdentity: pay.id, remoteIdentity: order.id, port: 0, proto: 0, direction: 'ingress' }, { verdict: 'allow', authType: 1 });
  const { sync, changes } = started(t, state, map);
  t.same(map.take(), [`+${pay.id}<0:0/0/ingress=deny`, '-999<0:0/0/egress']);
  t.equal(verdictOf(map.inner, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth');
  t.same(sync.authPairs(), [{ localIdentity: pay.id, remoteIdentity: order.id, authType: 1 }]);
  t.same(changes.map((c) => c.added.length), [1]);
});

t.test('an identity appearing and disappearing changes only its own entries and pairs', async (t) => {
  const state = snapshotState(PAY_POLICY);
  const map = new RecordingMap();
  const { sync, changes } = started(t, state, map);
  map.take();
  changes.length = 0;

  const order2 = identity(310, 'prod', { app: 'order', version: 'v2' });
  state.apply(update({ identities: [order2], endpoints: [endpoint('10.2.0.12', order2, 2)] }));
  t.same(map.take(), [`+${pay.id}<${order2.id}:0/0/ingress=allow+auth`], 'one upsert, nothing rewritten');
  t.same(changes.splice(0), [{ added: [{ localIdentity: pay.id, remoteIdentity: order2.id, authType: 1 }], removed: [],
    current: [{ localIdentity: pay.id, remoteIdentity: order.id, authType: 1 }, { localIdentity: pay.id, remoteIdentity: order2.id, authType: 1 }] }]);

  state.apply(update({ removed_identities: [order2.id], removed_endpoints: ['10.2.0.12'] }));
  t.same(map.take(), [`-${pay.id}<${order2.id}:0/0/ingress`]);
  t.same(changes.splice(0).map((c) => [c.added, c.removed]), [[[], [{ localIdentity: pay.id, remoteIdentity: order2.id, authType: 1 }]]]);
  t.equal(sync.authPairs().length, 1);

  state.apply(update({ nodes: [{ id: 3, name: 'n3', address: '192.0.2.3', wireguard_public_key: '', pod_cidr: '10.3.0.0/24', agent_id: '' }] }));
  t.same(map.take(), [], 'a change that cannot matter writes nothing');
  t.same(changes, []);
});

t.test('a local endpoint arriving gets its entries; leaving removes them, the marker last', async (t) => {
  const yaml = PAY_POLICY + cnp('web', 'prod', `
    endpointSelector: {matchLabels: {app: web}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      toPorts: [{ports: [{port: 80, protocol: TCP}]}]
  `);
  const state = snapshotState(yaml);
  const map = new RecordingMap();
  started(t, state, map);
  map.take();
  state.apply(update({ endpoints: [endpoint('10.1.0.11', web, LOCAL_NODE)] }));
  t.same(map.take(), [`+${web.id}<0:0/0/ingress=deny`, `+${web.id}<${order.id}:80/6/ingress=allow`], 'marker first, then the allow');
  state.apply(update({ removed_endpoints: ['10.1.0.11'] }));
  t.same(map.take(), [`-${web.id}<${order.id}:80/6/ingress`, `-${web.id}<0:0/0/ingress`], 'the allow goes before the marker');
});

t.test('policy changes write deny and auth tightenings before loosenings', async (t) => {
  const state = snapshotState(cnp('pay', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
    - fromEndpoints: [{matchLabels: {app: web}}]
      authentication: {mode: required}
  `));
  const map = new RecordingMap();
  started(t, state, map);
  map.take();
  state.apply(update({ policies: policyMsgs(cnp('pay', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      authentication: {mode: required}
    - fromEndpoints: [{matchLabels: {app: web}}]
  `)) }));
  t.same(map.take(), [`+${pay.id}<${order.id}:0/0/ingress=allow+auth`, `+${pay.id}<${web.id}:0/0/ingress=allow`]);
  state.apply(update({ removed_policies: ['prod/pay'] }));
  t.same(map.take().map((o) => o[0]), ['-', '-', '-']);
  t.same(map.inner.entries(), [], 'no policy, no entries: the endpoint is not selected');
  t.equal(verdictOf(map.inner, pay.id, web.id, 1, TCP, 'ingress'), 'pass');
});

t.test('a failed write is reported and retried on the next change; the map converges', async (t) => {
  const state = snapshotState(PAY_POLICY);
  const map = new RecordingMap();
  const sink = new MemoryLogSink();
  const sync = new PolicyMapSync({ state, map, logger: new JsonLogger(sink, 'debug') });
  map.failNextUpsert = true;
  sync.start();
  t.teardown(() => sync.stop());
  t.match(sync.lastError?.message, /map full/);
  t.ok(sink.lines.some((l) => l.msg === 'policy map sync failed'));
  const order2 = identity(311, 'prod', { app: 'order', version: 'v3' });
  state.apply(update({ identities: [order2] }));
  t.equal(sync.lastError, undefined);
  t.equal(verdictOf(map.inner, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth');
  t.equal(verdictOf(map.inner, pay.id, order2.id, 80, TCP, 'ingress'), 'allow+auth');
  t.equal(verdictOf(map.inner, pay.id, web.id, 80, TCP, 'ingress'), 'deny');
});

t.test('a policy that does not decode is logged once and left out', async (t) => {
  const state = snapshotState(PAY_POLICY);
  const sink = new MemoryLogSink();
  const sync = new PolicyMapSync({ state, map: new MemoryPolicyMap(), logger: new JsonLogger(sink, 'debug') });
  sync.start();
  t.teardown(() => sync.stop());
  const broken = { namespace: 'prod', name: 'broken', kind: 'CiliumNetworkPolicy', spec_json: '{"format":"other"}' };
  state.apply(update({ policies: [broken] }));
  state.apply(update({ identities: [identity(312, 'prod', { app: 'x' })] }));
  t.equal(sink.lines.filter((l) => l.msg === 'policy left out: it does not decode').length, 1);
  t.same(sync.compiled?.errors.map((e) => e.policy), ['prod/broken']);
});

t.test('stop() ends following the state; the entries stay for the datapath', async (t) => {
  const state = snapshotState(PAY_POLICY);
  const map = new RecordingMap();
  const sync = new PolicyMapSync({ state, map });
  sync.start();
  const before = map.inner.entries();
  sync.stop();
  map.take();
  state.apply(update({ removed_policies: ['prod/pay'] }));
  t.same(map.take(), [], 'no writes after stop');
  t.same(map.inner.entries(), before);
  t.doesNotThrow(() => sync.stop(), 'stop twice is harmless');
  t.same(map.take(), [], 'and writes nothing');
});

/** pay allows order without authentication; then the same rule requires it. */
const PAY_OPEN = cnp('pay', 'prod', `
  endpointSelector: {matchLabels: {app: pay}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: order}}]
`);

function upgradeSync(t: Test, ready: { value: boolean }, holdMs: number, now: () => number) {
  const state = snapshotState(PAY_OPEN);
  const map = new RecordingMap();
  const checked: string[] = [];
  const sync = new PolicyMapSync({
    state, map,
    authUpgrade: { holdMs, now, ready: (p) => { checked.push(`${p.localIdentity}/${p.remoteIdentity}`); return ready.value; } },
  });
  const changes: AuthPairsChange[] = [];
  sync.onAuthPairsChange((c) => changes.push(c));
  sync.start();
  t.teardown(() => sync.stop());
  map.take();
  return { state, map, sync, changes, checked };
}

t.test('make-before-break: a flow allowed without authentication keeps its verdict until its new auth requirement\'s pair is authenticated', async (t) => {
  const ready = { value: false };
  let now = 1000;
  const { state, map, sync, changes, checked } = upgradeSync(t, ready, 2000, () => now);
  t.equal(verdictOf(map.inner, pay.id, order.id, 1, TCP, 'ingress'), 'allow', 'open to begin with');
  state.apply(update({ policies: policyMsgs(PAY_POLICY) }));
  t.same(map.take(), [], 'nothing written while the pair is not authenticated');
  t.equal(verdictOf(map.inner, pay.id, order.id, 1, TCP, 'ingress'), 'allow', 'the flow still passes');
  t.same(checked, [`${pay.id}/${order.id}`], 'readiness asked for the pair');
  t.same(changes.at(-1)?.added, [{ localIdentity: pay.id, remoteIdentity: order.id, authType: 1 }], 'the pair is announced at once, so mutual auth starts on it');
  t.equal(sync.heldEntries(), 1);
  now += 500;
  sync.recheckHeld();
  t.same(map.take(), [], 'still held: not authenticated, not timed out');
  ready.value = true;
  sync.recheckHeld();
  t.same(map.take(), [`+${pay.id}<${order.id}:0/0/ingress=allow+auth`], 'written once the pair is authenticated');
  t.equal(verdictOf(map.inner, pay.id, order.id, 1, TCP, 'ingress'), 'allow+auth');
  t.equal(sync.heldEntries(), 0);
});

t.test('make-before-break ends after holdMs: a pair that never authenticates is enforced all the same, by the sync\'s own timer', async (t) => {
  const { state, map, sync } = upgradeSync(t, { value: false }, 100, Date.now);
  state.apply(update({ policies: policyMsgs(PAY_POLICY) }));
  t.same(map.take(), [], 'held');
  await new Promise((r) => setTimeout(r, 250));
  t.same(map.take(), [`+${pay.id}<${order.id}:0/0/ingress=allow+auth`], 'enforced when the hold ran out, without another change');
  t.equal(sync.heldEntries(), 0);
});

t.test('make-before-break never allows more than before: new allows with authentication, denials and removals are written at once', async (t) => {
  const { state, map, sync } = upgradeSync(t, { value: false }, 60_000, Date.now);
  // web was denied (not selected by any rule of pay's policy): allowing it with auth holds nothing back
  state.apply(update({ policies: policyMsgs(cnp('pay', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
    - fromEndpoints: [{matchLabels: {app: web}}]
      authentication: {mode: required}
  `)) }));
  t.same(map.take(), [`+${pay.id}<${web.id}:0/0/ingress=allow+auth`], 'a flow that was denied gets its auth requirement at once');
  t.equal(sync.heldEntries(), 0);
  state.apply(update({ policies: policyMsgs(cnp('pay', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      authentication: {mode: required}
  `)) }));
  t.same(map.take(), [`-${pay.id}<${order.id}:0/0/ingress`], 'taking the allow away is not held');
  t.equal(verdictOf(map.inner, pay.id, order.id, 1, TCP, 'ingress'), 'deny');
});

t.test('make-before-break: a hold is dropped when the policy changes back before the pair was authenticated', async (t) => {
  const { state, map, sync } = upgradeSync(t, { value: false }, 60_000, Date.now);
  state.apply(update({ policies: policyMsgs(PAY_POLICY) }));
  t.equal(sync.heldEntries(), 1);
  state.apply(update({ policies: policyMsgs(PAY_OPEN) }));
  t.same(map.take(), [], 'the map already holds the open verdict');
  t.equal(sync.heldEntries(), 0, 'nothing waits any more');
});
