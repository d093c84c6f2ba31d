import t from 'tap';
import { connect } from 'node:net';
import { FakeClock } from '../../../common/clock.js';
import { type AuthMap, AuthType, wallClockToBootNs } from '../../../bpf/index.js';
import type { AuthMapWriter, TunnelReadiness } from '../../../agent/mutualauth/index.js';
import { MetricsRegistry } from '../../../common/metrics.js';
import { parseCertificate } from '../../../spiffe/index.js';
import { cluster, delta, entryKeys, HOUR, MIN, mintSvid, nodes, saId, until, type Svid } from './fixtures.js';

// Compile-time check: the kernel's AuthMap fits where the service writes (tsc fails here if bpf/maps.ts drifts).
const kernelMapFits: AuthMap extends AuthMapWriter ? true : false = true;
void kernelMapFits;

const notAfter = (s: Svid): Date => parseCertificate(s.chain[0]!).notAfter;
const earliest = (...s: Svid[]): Date => new Date(Math.min(...s.map((x) => notAfter(x).getTime())));
/** Boot-time values are computed from two clock reads; allow a millisecond between conversions. */
const closeTo = (a: bigint, b: bigint): boolean => (a > b ? a - b : b - a) < 1_000_000n;
const pair = (localIdentity: number, remoteIdentity: number, remoteNodeId: number) => ({ localIdentity, remoteIdentity, remoteNodeId });


t.test('a batch writes matching entries on both agents (mirrored pair, peer node id), expiring with the shortest-lived certificate on the boot-time clock', async (t) => {
  const { a, b } = await cluster(t);
  const results = await a.auth.authenticate([pair(101, 201, 2), pair(101, 202, 2), pair(102, 201, 2), pair(102, 202, 2)]);
  t.same(results.map((r) => r.ok), [true, true, true, true], JSON.stringify(results.filter((r) => !r.ok)));
  t.same(entryKeys(a.map), ['101/201/2', '101/202/2', '102/201/2', '102/202/2']);
  t.same(entryKeys(b.map), ['201/101/1', '201/102/1', '202/101/1', '202/102/1']);
  for (const e of a.map.entries()) t.equal(e.pair.authType, AuthType.mutual);
  for (const [l, r] of [[101, 201], [101, 202], [102, 201], [102, 202]] as const) {
    const lw = a.workloads.get(saId('a', l === 101 ? 'web' : 'api'))!;
    const rw = b.workloads.get(saId('b', r === 201 ? 'db' : 'cache'))!;
    const expected = earliest(lw, rw, a.agent, b.agent);
    const onA = a.map.get({ localIdentity: l, remoteIdentity: r, remoteNodeId: 2, authType: 1 })!;
    const onB = b.map.get({ localIdentity: r, remoteIdentity: l, remoteNodeId: 1, authType: 1 })!;
    t.ok(closeTo(onA, wallClockToBootNs(expected)), `A's ${l}/${r} expires at the earliest notAfter (${expected.toISOString()}) in boot time`);
    t.ok(closeTo(onB, wallClockToBootNs(expected)), `B's ${r}/${l} expires at the same instant`);
    t.equal(results.find((x) => x.pair.localIdentity === l && x.pair.remoteIdentity === r)!.expiresAt!.getTime(), expected.getTime());
  }
  const sa = a.auth.stats();
  const sb = b.auth.stats();
  t.equal(sa.handshakes.client, 1);
  t.equal(sb.handshakes.server, 1);
  t.equal(sa.batches.sent, 1);
  t.equal(sb.batches.served, 1);
  t.equal(sa.pairsAuthenticated.client, 4);
  t.equal(sb.pairsAuthenticated.server, 4);
  t.same(sa.failures, {});
  t.same(sb.failures, {});
});

t.test('an agent SVID that expires before the workload SVIDs bounds the entries', async (t) => {
  const { a, b } = await cluster(t, { prepare: (agent, ca) => { if (agent.nodeId === 2) agent.agent = mintSvid(ca, agent.agent.id.toString(), { notAfter: new Date(Date.now() + 20 * MIN) }); } });
  const [r] = await a.auth.authenticate([pair(101, 201, 2)]);
  t.ok(r!.ok);
  const expected = notAfter(b.agent);
  t.ok(expected < notAfter(a.workloads.get(saId('a', 'web'))!));
  t.ok(closeTo(a.map.get({ localIdentity: 101, remoteIdentity: 201, remoteNodeId: 2, authType: 1 })!, wallClockToBootNs(expected)));
  t.ok(closeTo(b.map.get({ localIdentity: 201, remoteIdentity: 101, remoteNodeId: 1, authType: 1 })!, wallClockToBootNs(expected)));
});

t.test('one TLS session per peer node carries many batches', async (t) => {
  const { a, b } = await cluster(t, { options: { maxBatchPairs: 1 } });
  const first = await a.auth.authenticate([pair(101, 201, 2), pair(101, 202, 2), pair(102, 201, 2)]);
  const second = await a.auth.authenticate([pair(102, 202, 2)]);
  t.ok([...first, ...second].every((r) => r.ok));
  t.equal(a.auth.stats().batches.sent, 4);
  t.equal(b.auth.stats().batches.served, 4);
  t.equal(a.auth.stats().handshakes.client, 1, 'one handshake for all batches');
  t.equal(b.auth.stats().handshakes.server, 1);
  t.equal(a.auth.stats().sessions.client, 1);
  t.equal(b.auth.stats().sessions.server, 1);
});

t.test('two concurrent authenticate() calls for the same pair make one exchange', async (t) => {
  const { a, b } = await cluster(t);
  const [x, y] = await Promise.all([a.auth.authenticate([pair(101, 201, 2)]), a.auth.authenticate([pair(101, 201, 2)])]);
  t.ok(x![0]!.ok && y![0]!.ok);
  t.equal(b.auth.stats().batches.served, 1);
  t.equal(b.auth.stats().pairsAuthenticated.server, 1, 'the server saw the pair once');
  t.equal(a.auth.stats().pairsAuthenticated.client, 1);
  // Once settled, the same pair is authenticated again on request.
  await a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(b.auth.stats().pairsAuthenticated.server, 2);
});

t.test('pairs between two endpoints of this node are checked against both held SVIDs and written with remote node 0', async (t) => {
  const { a, b } = await cluster(t);
  const [r, viaOwnId] = await a.auth.authenticate([pair(101, 102, 0), pair(102, 101, 1)]);
  t.ok(r!.ok && viaOwnId!.ok);
  t.same(entryKeys(a.map), ['101/102/0', '102/101/0']);
  const expected = earliest(a.workloads.get(saId('a', 'web'))!, a.workloads.get(saId('a', 'api'))!, a.agent);
  t.ok(closeTo(a.map.get({ localIdentity: 101, remoteIdentity: 102, remoteNodeId: 0, authType: 1 })!, wallClockToBootNs(expected)));
  t.equal(b.auth.stats().batches.served, 0, 'no peer involved');
  const [bad] = await a.auth.authenticate([pair(101, 201, 0)]);
  t.equal(bad!.reason, 'local-not-hosted', 'a remote identity is not a local pair');
});

t.test('entries are re-authenticated before they expire (a third of their lifetime left), by the timer, with renewed certificates', async (t) => {
  const clock = new FakeClock(Date.now());
  const { a, b, ca } = await cluster(t, { clock, options: { reauthTickMs: 20 } });
  const [r] = await a.auth.authenticate([pair(101, 201, 2)]);
  t.ok(r!.ok);
  const key = { localIdentity: 101, remoteIdentity: 201, remoteNodeId: 2, authType: 1 };
  const first = a.map.get(key)!;
  t.equal(await a.auth.reauthenticateDue().then((x) => x.length), 0, 'nothing is due at once');
  clock.advance(30 * MIN);
  t.equal(await a.auth.reauthenticateDue().then((x) => x.length), 0, 'half the lifetime left: not yet due');

  // The SVID cache renewed the workload SVIDs meanwhile.
  const now = clock.now();
  a.workloads.set(saId('a', 'web'), mintSvid(ca, saId('a', 'web'), { now, notAfter: new Date(now.getTime() + 4 * HOUR) }));
  b.workloads.set(saId('b', 'db'), mintSvid(ca, saId('b', 'db'), { now, notAfter: new Date(now.getTime() + 4 * HOUR) }));
  const servedBefore = b.auth.stats().batches.served;
  clock.advance(15 * MIN); // 15 of 60 minutes left
  await until(() => a.map.get(key) !== first);
  const expected = earliest(a.agent, b.agent, a.workloads.get(saId('a', 'web'))!, b.workloads.get(saId('b', 'db'))!);
  t.ok(closeTo(a.map.get(key)!, wallClockToBootNs(expected)), 'the new expiry comes from the renewed certificates');
  await until(() => b.auth.stats().batches.served > servedBefore);
  t.ok(closeTo(b.map.get({ localIdentity: 201, remoteIdentity: 101, remoteNodeId: 1, authType: 1 })!, wallClockToBootNs(expected)), 'the peer refreshed its entry too');
});

t.test('an expired entry is removed by the re-authentication pass when it cannot be renewed', async (t) => {
  const clock = new FakeClock(Date.now());
  const { a } = await cluster(t, { clock });
  await a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(a.map.size, 1);
  clock.advance(2 * HOUR);
  await a.auth.reauthenticateDue();
  t.equal(a.map.size, 0);
  t.equal(a.auth.heldEntries, 0);
});

t.test('stop() closes the listener and every session and leaves no sockets', async (t) => {
  const count = (): number => process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP')).length;
  // libuv releases a closed handle a loop turn or more after 'close'; on a loaded machine the previous
  // test's sockets can still be listed here, and a baseline counted with them would be too high.
  const settled = async (): Promise<void> => {
    const end = Date.now() + 2000;
    let last = -1;
    while (count() !== last && Date.now() < end) { last = count(); await new Promise((r) => setTimeout(r, 20)); }
  };
  await settled();
  const baseline = count();
  const { a, b } = await cluster(t);
  await a.auth.authenticate([pair(101, 201, 2)]);
  t.ok(count() >= baseline + 4, 'two listeners and both ends of a session are open');
  const portB = b.auth.port;
  await a.auth.stop();
  await b.auth.stop();
  // stop() resolved after every socket's 'close'; what is left must be gone once libuv has run its close callbacks
  // (a leaked socket stays open and fails this).
  if (count() !== baseline) await until(() => count() <= baseline, 2000).catch(() => {});
  t.equal(count(), baseline, 'no TCP handles left: ' + JSON.stringify(process.getActiveResourcesInfo()));
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const s = connect(portB, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(undefined); });
    s.once('error', (e) => resolve(e));
  });
  t.equal(err?.code, 'ECONNREFUSED', 'the port no longer accepts');
  const [late] = await a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(late!.reason, 'stopped');
  await a.auth.stop();
});

/** Identity 103 (a/new) with an endpoint on node 1: what a pod that just started on A looks like in the registry. */
const NEW_POD = delta({
  identities: [{ id: 103, labels: {}, namespace: 'a', service_account: 'new', spiffe_id: saId('a', 'new') }],
  endpoints: [{ ip: '10.0.1.3', identity: 103, node_id: 1, namespace: 'a', name: 'new', labels: {} }],
});

t.test('a new pair the peer refuses because its registry is behind (a pod it has not heard of) is asked again until the peer catches up', async (t) => {
  const { ca, a, b } = await cluster(t, { options: { peerLagAttempts: 8 } });
  a.state.apply(NEW_POD);
  a.workloads.set(saId('a', 'new'), mintSvid(ca, saId('a', 'new')));
  const result = a.auth.authenticate([pair(103, 201, 2)]);
  await until(() => b.logs.lines.some((l) => l['msg'] === 'mutual-auth pairs refused' && l['reason'] === 'unknown-identity'));
  t.equal(a.map.size, 0, 'nothing written while B refuses');
  b.state.apply(NEW_POD); // B's Sync stream delivers the pod, later than A's did
  const [r] = await result;
  t.equal(r!.ok, true, JSON.stringify(r));
  t.same(entryKeys(a.map), ['103/201/2']);
  t.same(entryKeys(b.map), ['201/103/1'], 'B wrote its half');
  t.ok(b.auth.stats().batches.served >= 2, 'B was asked more than once');
  t.notOk(a.auth.stats().failures['refused-by-peer'], 'no failure counted on A');
  t.ok(a.logs.lines.some((l) => l['msg'] === 'mutual-auth peer has not caught up with new pairs yet; asking again' && l['count'] === 1), 'A said why it waits');
});

t.test('a peer that never catches up fails the new pair after peerLagAttempts tries, with its reason; a pair already held is refused at the first answer', async (t) => {
  const { ca, a, b } = await cluster(t, { options: { peerLagAttempts: 3, backoffMs: 10 } });
  a.state.apply(NEW_POD);
  a.workloads.set(saId('a', 'new'), mintSvid(ca, saId('a', 'new')));
  const [r] = await a.auth.authenticate([pair(103, 201, 2)]);
  t.equal(r!.ok, false);
  t.equal(r!.reason, 'refused-by-peer');
  t.equal(r!.detail, 'unknown-identity');
  t.equal(r!.retryable, false);
  t.equal(b.auth.stats().batches.served, 3, 'asked peerLagAttempts times');
  // a held entry that B now refuses (its workload's SVID is gone) goes at the first refusal, without waiting for B
  await a.auth.authenticate([pair(101, 202, 2)]);
  t.same(entryKeys(a.map), ['101/202/2']);
  b.workloads.delete(saId('b', 'cache'));
  const served = b.auth.stats().batches.served;
  const [again] = await a.auth.authenticate([pair(101, 202, 2)]);
  t.equal(again!.detail, 'no-local-svid');
  t.equal(b.auth.stats().batches.served, served + 1, 'one try: a refusal of a pair we hold is an answer, not lag');
});

t.test('an unreachable peer fails the pair as retryable after the configured attempts and writes nothing', async (t) => {
  const { a } = await cluster(t); // node 3 is registered, hosts identity 301, and runs no service
  const [r] = await a.auth.authenticate([pair(101, 301, 3)]);
  t.equal(r!.ok, false);
  t.equal(r!.reason, 'unreachable');
  t.equal(r!.retryable, true);
  t.equal(a.map.size, 0);
  t.equal(a.auth.stats().handshakes.failed, 2, 'maxAttempts (2 here) connection attempts');
  t.equal(a.auth.stats().failures['unreachable'], 1);
  t.ok(a.logs.lines.some((l) => l['msg'] === 'mutual-auth pairs not authenticated' && l['reason'] === 'unreachable' && l['node_id'] === 3), 'logged with its reason');
});

t.test('removing an identity or a node from the registry removes the entries that depend on it and ends the node\'s sessions', async (t) => {
  const { a, b } = await cluster(t);
  await a.auth.authenticate([pair(101, 201, 2), pair(102, 202, 2), pair(101, 102, 0)]);
  t.same(entryKeys(a.map), ['101/102/0', '101/201/2', '102/202/2']);
  a.state.apply(delta({ removed_identities: [201] }));
  t.same(entryKeys(a.map), ['101/102/0', '102/202/2'], 'identity 201 went away');
  t.equal(b.auth.stats().sessions.server, 1);
  b.state.apply(delta({ removed_nodes: [1] }));
  t.same(entryKeys(b.map), [], 'node 1 went away: B drops its entries');
  await until(() => b.auth.stats().sessions.server === 0 && a.auth.stats().sessions.client === 0);
  t.equal(b.auth.stats().sessions.server + a.auth.stats().sessions.client, 0, 'the session with node 1\'s agent is closed');
  t.equal(a.auth.removeWhere((p) => (p.remoteNodeId === 0 ? 'no_policy' : undefined)), 1, 'removeWhere deletes what the predicate selects');
  t.equal(a.auth.gc.removed.no_policy, 1, 'counted by its reason');
  t.same(entryKeys(a.map), ['102/202/2']);
});

t.test('reconcile() at start keeps pinned entries that still hold, re-checks them with the peer, and drops expired, orphaned and refused ones', async (t) => {
  const far = wallClockToBootNs(new Date(Date.now() + 10 * MIN));
  const { a, b } = await cluster(t, {
    prepare: (agent) => {
      if (agent.nodeId === 2) { agent.workloads.delete(saId('b', 'cache')); return; } // B can no longer prove 202
      const put = (l: number, r: number, n: number, exp: bigint) => agent.map.upsert({ localIdentity: l, remoteIdentity: r, remoteNodeId: n, authType: 1 }, exp);
      put(101, 201, 2, far);                                           // still holds
      put(102, 202, 2, far);                                           // the peer will refuse it
      put(102, 201, 2, wallClockToBootNs(new Date(Date.now() - MIN))); // expired
      put(101, 999, 2, far);                                           // identity gone
      put(101, 201, 7, far);                                           // node gone
      agent.map.upsert({ localIdentity: 5, remoteIdentity: 6, remoteNodeId: 7, authType: 0 }, far); // not ours
    },
  });
  await until(() => b.map.size === 1 && a.map.size === 2 && a.auth.stats().failures['refused-by-peer'] === 1);
  t.same(entryKeys(a.map), ['101/201/2', '5/6/7']);
  t.same(entryKeys(b.map), ['201/101/1'], 'the kept entry was authenticated again with the peer');
  const expected = earliest(a.agent, b.agent, a.workloads.get(saId('a', 'web'))!, b.workloads.get(saId('b', 'db'))!);
  t.ok(closeTo(a.map.get({ localIdentity: 101, remoteIdentity: 201, remoteNodeId: 2, authType: 1 })!, wallClockToBootNs(expected)), 'with a fresh expiry');
});

t.test('a node whose agent changed in the registry gets a new session (the old agent is no longer talked to)', async (t) => {
  const { a, b, ca } = await cluster(t);
  await a.auth.authenticate([pair(101, 201, 2)]);
  // node 2 re-attested: a new agent ID, and B runs with it
  const newId = `spiffe://example.org/meshid/agent/join_token/node-b2-${process.pid}`;
  const reg = nodes().find((n) => n.id === 2)!;
  for (const ag of [a, b]) ag.state.apply(delta({ nodes: [{ ...reg, agent_id: newId }] }));
  b.agent = mintSvid(ca, newId);
  const [r] = await a.auth.authenticate([pair(102, 202, 2)]);
  t.ok(r!.ok, JSON.stringify(r));
  t.equal(a.auth.stats().handshakes.client, 2);
});

t.test('the counters are exposed as metrics: pairs by role, failures by reason, handshakes, batches, sessions, entries', async (t) => {
  const { a, b } = await cluster(t);
  const reg = new MetricsRegistry();
  a.auth.registerMetrics(reg);
  await a.auth.authenticate([pair(101, 201, 2), pair(101, 301, 2)]);
  const text = reg.render();
  t.match(text, /meshid_agent_mutual_auth_pairs_authenticated\{role="client"\} 1/);
  t.match(text, /meshid_agent_mutual_auth_failures\{reason="remote-not-hosted"\} 1/);
  t.match(text, /meshid_agent_mutual_auth_handshakes\{side="client"\} 1/);
  t.match(text, /meshid_agent_mutual_auth_batches\{direction="sent"\} 1/);
  t.match(text, /meshid_agent_mutual_auth_sessions\{side="client"\} 1/);
  t.match(text, /meshid_agent_mutual_auth_entries 1/);
  void b;
});

/** A tunnel the test opens by hand, node by node. */
class ManualTunnel implements TunnelReadiness {
  private readonly open = new Set<number>();
  private readonly waiting: { nodeId: number; done: (ok: boolean) => void }[] = [];
  readonly waitedFor: number[] = [];
  readonly configuredPeers: number[] = [];
  ready(nodeId: number): boolean { return this.open.has(nodeId); }
  peerConfigured(nodeId: number): void { this.configuredPeers.push(nodeId); }
  wait(nodeId: number, timeoutMs: number): Promise<boolean> {
    this.waitedFor.push(nodeId);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.waiting.push({ nodeId, done: (ok) => { clearTimeout(timer); resolve(ok); } });
    });
  }
  openTo(nodeId: number): void {
    this.open.add(nodeId);
    for (const w of this.waiting.splice(0)) if (w.nodeId === nodeId) w.done(true); else this.waiting.push(w);
  }
}

t.test('pairs wait for the tunnel to the peer node on both sides: nothing is written, on either agent, until both have it configured', async (t) => {
  for (const [closedOn, side] of [[1, 'client (A)'], [2, 'server (B)']] as const) {
    const tunnels = new Map([[1, new ManualTunnel()], [2, new ManualTunnel()]]);
    tunnels.get(1)!.openTo(2);
    tunnels.get(2)!.openTo(1);
    const late = new ManualTunnel();
    tunnels.set(closedOn, late);
    const { a, b } = await cluster(t, { optionsFor: (n) => ({ tunnel: tunnels.get(n)!, tunnelWaitMs: 30_000 }) });
    let settled = false;
    const results = a.auth.authenticate([pair(101, 201, 2)]).finally(() => { settled = true; });
    await until(() => late.waitedFor.length > 0);
    await new Promise((r) => setTimeout(r, 200));
    t.notOk(settled, `the pair waits while the ${side} lacks the tunnel`);
    t.same([entryKeys(a.map), entryKeys(b.map)], [[], []], 'neither agent wrote an entry');
    late.openTo(closedOn === 1 ? 2 : 1);
    t.same((await results).map((r) => r.ok), [true], `authenticated once the ${side} has the tunnel`);
    t.same([entryKeys(a.map), entryKeys(b.map)], [['101/201/2'], ['201/101/1']]);
    t.ok(tunnels.get(1)!.configuredPeers.includes(2), 'A learnt that B has its side configured (B answered)');
    t.ok(tunnels.get(2)!.configuredPeers.includes(1), 'B learnt that A has its side configured (A sent a batch)');
  }
});

t.test('a tunnel that is not configured within tunnelWaitMs does not block authentication for good: the pairs go ahead, with a warning on each side', async (t) => {
  const { a, b } = await cluster(t, { options: { tunnel: new ManualTunnel(), tunnelWaitMs: 50 } });
  const results = await a.auth.authenticate([pair(101, 201, 2)]);
  t.same(results.map((r) => r.ok), [true]);
  t.same([entryKeys(a.map), entryKeys(b.map)], [['101/201/2'], ['201/101/1']]);
  t.ok(a.logs.lines.some((l) => l.msg === 'the tunnel to the node is not configured yet; authenticating its pairs all the same' && l.node_id === 2), 'A warned');
  t.ok(b.logs.lines.some((l) => l.msg === 'the tunnel to the node is not configured yet; answering its batches all the same' && l.node_id === 1), 'B warned');
});
