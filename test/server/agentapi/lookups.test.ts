// server/agentapi/lookups.ts: the agent API's per-agent lookups over a real SQLite
// datastore, invalidated by the datastore's own change notifications (as one
// server runs) or by a change source the test drives.
import t, { type Test } from 'tap';
import { AgentLookups } from '../../../server/agentapi/lookups.js';
import type { Change, Datastore } from '../../../server/datastore/index.js';
import { agentId, SelectorSet, serverId } from '../../../spiffe/index.js';
import { openTemp, td } from '../datastore/fixtures/tempdb.js';

const me = agentId(td, 'join_token', 'node-1');
const other = agentId(td, 'join_token', 'node-2');
const nodeSelectors = SelectorSet.parse(['k8s_psat:cluster:c1', 'k8s_psat:agent_node_label:zone:a']);
const sel = (s: string): SelectorSet => SelectorSet.parse([s]);

function counting(ds: Datastore): { reads: number } {
  const counts = { reads: 0 };
  const forAgent = ds.entriesForAgent.bind(ds);
  const find = ds.findAttestedNode.bind(ds);
  ds.entriesForAgent = (...a) => { counts.reads++; return forAgent(...a); };
  ds.findAttestedNode = (id) => { counts.reads++; return find(id); };
  return counts;
}

async function setUp(t: Test, name: string) {
  const { ds } = await openTemp(t, name);
  await ds.createAttestedNode({ spiffeId: me, attestationType: 'join_token', certSerial: 'aa', certNotAfter: ds.nowSeconds() + 3600, selectors: nodeSelectors });
  const lookups = new AgentLookups(ds, ds);
  lookups.start();
  t.teardown(() => lookups.stop());
  const ids = async (): Promise<string[]> => [...(await lookups.entriesFor(me, nodeSelectors, ds.nowSeconds())).keys()].sort();
  return { ds, lookups, ids };
}

t.test('a second lookup is served without a read; a write that concerns the agent is seen by the next one', async (t) => {
  const { ds, lookups, ids } = await setUp(t, 'lookups-basic');
  const a = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'a'), parentId: me, selectors: sel('unix:uid:1') });
  const counts = counting(ds);
  t.same(await ids(), [a.id]);
  t.same(await ids(), [a.id]);
  t.equal(counts.reads, 1, 'one read for two lookups');
  await ds.createEntry({ spiffeId: td.child('ns', 'b', 'sa', 'x'), parentId: other, selectors: sel('unix:uid:2') });
  t.same(await ids(), [a.id]);
  t.equal(counts.reads, 1, 'another agent\'s entry does not cost this one a read');
  const b = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'b'), parentId: me, selectors: sel('unix:uid:3') });
  t.same(await ids(), [a.id, b.id].sort(), 'its own new entry is there at once');
  await ds.deleteEntry(a.id);
  t.same(await ids(), [b.id], 'a deleted one is gone at once');
  await ds.updateEntry(b.id, { parentId: other });
  t.same(await ids(), [], 'and one moved to another agent');
  t.ok(lookups.hits >= 2 && lookups.misses >= 4, `hits ${lookups.hits}, misses ${lookups.misses}`);
});

t.test('the attested-node record is kept until the agent changes: a ban is seen by the next call', async (t) => {
  const { ds, lookups } = await setUp(t, 'lookups-ban');
  const counts = counting(ds);
  t.equal((await lookups.attestedNode(me))!.banned, false);
  t.equal((await lookups.attestedNode(me))!.banned, false);
  t.equal(counts.reads, 1);
  await ds.banAttestedNode(me);
  t.equal((await lookups.attestedNode(me))!.banned, true, 'banned, read afresh');
  t.equal(await lookups.attestedNode(other), undefined, 'no record: nothing kept');
  t.equal(await lookups.attestedNode(other), undefined);
  t.equal(counts.reads, 4, 'an agent without a record is read each time (it may attest any moment)');
});

t.test('entries under a node alias come with it, and a change to the alias is seen; an entry that expires while kept is not served', async (t) => {
  const { ds, ids } = await setUp(t, 'lookups-alias');
  const alias = await ds.createEntry({ spiffeId: td.child('meshid', 'zone-a'), parentId: serverId(td), selectors: sel('k8s_psat:agent_node_label:zone:a') });
  const viaAlias = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'web'), parentId: alias.spiffeId, selectors: sel('k8s:sa:web') });
  t.ok((await ids()).includes(viaAlias.id), 'the alias\'s entry');
  const api = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'api'), parentId: alias.spiffeId, selectors: sel('k8s:sa:api') });
  t.ok((await ids()).includes(api.id), 'a new entry under the alias');
  await ds.updateEntry(alias.id, { selectors: sel('k8s_psat:agent_node_label:zone:b') });
  t.notOk((await ids()).some((id) => id === viaAlias.id || id === api.id), 'the node no longer matches the alias: its entries are not served');
  const soon = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'soon'), parentId: me, selectors: sel('unix:uid:9'), expiresAt: ds.nowSeconds() + 1 });
  const lookups = new AgentLookups(ds, ds);
  lookups.start();
  t.teardown(() => lookups.stop());
  t.ok((await lookups.entriesFor(me, nodeSelectors, ds.nowSeconds())).has(soon.id), 'unexpired: served');
  t.notOk((await lookups.entriesFor(me, nodeSelectors, ds.nowSeconds() + 2)).has(soon.id), 'expired while kept: not served');
});

t.test('a change that arrives while a lookup reads keeps its result out of the cache; a reset of the feed empties it', async (t) => {
  const { ds } = await openTemp(t, 'lookups-race');
  let deliver!: (changes: readonly Change[]) => void;
  let reset!: () => void;
  const source = { onChange: (l: (c: readonly Change[]) => void) => { deliver = l; return () => {}; }, onReset: (l: () => void) => { reset = l; return () => {}; } };
  const lookups = new AgentLookups(ds, source);
  lookups.start();
  t.teardown(() => lookups.stop());
  const counts = counting(ds);
  const now = ds.nowSeconds();
  const first = lookups.entriesFor(me, nodeSelectors, now);
  deliver([{ revision: 99, kind: 'entry', id: 'x', op: 'upsert', at: now, parents: [me.toString()] }]); // committed meanwhile
  await first;
  await lookups.entriesFor(me, nodeSelectors, now);
  t.equal(counts.reads, 2, 'the first result was not kept');
  await lookups.entriesFor(me, nodeSelectors, now);
  t.equal(counts.reads, 2, 'the second was');
  const n1 = lookups.attestedNode(other);
  deliver([{ revision: 100, kind: 'agent', id: other.toString(), op: 'upsert', at: now }]);
  await n1;
  reset();
  await lookups.entriesFor(me, nodeSelectors, now);
  t.equal(counts.reads, 4, 'after a reset everything is read again');
});
