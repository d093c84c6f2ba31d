import t from 'tap';
import { AuthGc, AuthPlanner, MemoryAuthMap } from '../../../agent/mutualauth/index.js';
import { AgentState } from '../../../agent/sync/index.js';
import { AuthType, type AuthPair } from '../../../bpf/index.js';
import { silentLogger } from '../../../common/log.js';
import { MetricsRegistry } from '../../../common/metrics.js';
import { makeCa, snapshot } from './fixtures.js';

const pair = (l: number, r: number, node: number, authType: number = AuthType.mutual): AuthPair => ({ localIdentity: l, remoteIdentity: r, remoteNodeId: node, authType });

t.test('the collector removes with one reason each, counts by reason in /metrics, and forgets what it removed', async (t) => {
  const map = new MemoryAuthMap();
  const held = new Map<string, unknown>();
  for (const p of [pair(1, 2, 0), pair(1, 3, 2), pair(1, 4, 3), pair(1, 5, 3, 0)]) { map.upsert(p, 10n); held.set(`${p.localIdentity}/${p.remoteIdentity}/${p.remoteNodeId}/${p.authType}`, {}); }
  const gc = new AuthGc({ authMap: map, held, logger: silentLogger });
  const registry = new MetricsRegistry();
  gc.registerMetrics(registry);
  t.ok(gc.remove(pair(1, 2, 0), 'expired'));
  t.notOk(gc.remove(pair(1, 2, 0), 'expired'), 'an entry already gone is not counted twice');
  t.equal(gc.sweep((p) => (p.remoteNodeId === 3 ? 'node_gone' : undefined)), 1, 'the sweep leaves entries of other auth types alone');
  t.same(map.entries().map((e) => e.pair), [pair(1, 3, 2), pair(1, 5, 3, 0)]);
  t.notOk(held.has('1/2/0/1') || held.has('1/4/3/1'), 'removed entries are no longer kept fresh');
  const text = registry.render();
  t.match(text, /meshid_agent_auth_entries_removed_total\{reason="expired"\} 1/);
  t.match(text, /meshid_agent_auth_entries_removed_total\{reason="node_gone"\} 1/);
  t.match(text, /meshid_agent_auth_entries_removed_total\{reason="no_policy"\} 0/, 'every reason is shown, from 0');
});

t.test('the planner asks for required pairs with each node hosting the remote identity, only for identities hosted here', async (t) => {
  const ca = makeCa();
  const state = new AgentState(ca.td);
  state.apply(snapshot(1, ca)); // 101, 102 on node 1 (here); 201, 202 on node 2; 301 on node 3
  const planner = new AuthPlanner({ state, ownPairs: () => [] });
  const req = (l: number, r: number) => ({ localIdentity: l, remoteIdentity: r, authType: AuthType.mutual });
  const held = new Set(['101/202/2']);
  const out = planner.requests([req(101, 201), req(101, 202), req(201, 101), req(102, 999)], (p) => held.has(`${p.localIdentity}/${p.remoteIdentity}/${p.remoteNodeId}`));
  t.same(out, [{ localIdentity: 101, remoteIdentity: 201, remoteNodeId: 2 }], '202 is held already; 201 is not hosted here; 999 is hosted nowhere');
  t.same(planner.requests([req(101, 102)], () => false), [{ localIdentity: 101, remoteIdentity: 102, remoteNodeId: 0 }], 'a pair inside this node is named with node 0');
  t.ok(planner.heldEverywhere(req(101, 201), (p) => p.remoteNodeId === 2));
  t.notOk(planner.heldEverywhere(req(101, 201), () => false));
});

t.test('an entry is needed while this node requires the pair, or the peer node requires its mirror', async (t) => {
  const ca = makeCa();
  const state = new AgentState(ca.td);
  state.apply(snapshot(1, ca));
  const planner = new AuthPlanner({ state, ownPairs: () => [{ localIdentity: 101, remoteIdentity: 201, authType: AuthType.mutual }] });
  planner.pairsOf = (n) => (n === 1 ? [{ localIdentity: 101, remoteIdentity: 201, authType: AuthType.mutual }] : n === 2 ? [{ localIdentity: 202, remoteIdentity: 102, authType: AuthType.mutual }] : []);
  const needed = planner.neededByPolicy();
  t.ok(needed(pair(101, 201, 2)), 'this node requires it');
  t.ok(needed(pair(102, 202, 2)), 'node 2 requires (202 → 102): the mirror written here');
  t.notOk(needed(pair(102, 202, 3)), 'not with node 3');
  t.notOk(needed(pair(101, 202, 2)), 'nobody requires it');
  t.ok(needed(pair(201, 101, 0)), 'inside this node, the mirror of a pair this node requires');
});
