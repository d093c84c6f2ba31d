// server/agentapi/sync.ts: one agent's Sync stream over a real SQLite datastore,
// with a sink that records the messages.
import t from 'tap';
import type { SyncUpdateMsg } from '../../../api/agentproto.js';
import { AgentSyncStream } from '../../../server/agentapi/sync.js';
import type { Datastore } from '../../../server/datastore/index.js';
import { agentId, SelectorSet, serverId } from '../../../spiffe/index.js';
import { openTemp, td } from '../datastore/fixtures/tempdb.js';

const me = agentId(td, 'join_token', 'node-1');
const other = agentId(td, 'join_token', 'node-2');
const nodeSelectors = SelectorSet.parse(['k8s_psat:cluster:c1', 'k8s_psat:agent_node_label:zone:a']);
const sel = (s: string): SelectorSet => SelectorSet.parse([s]);

/** The stream's messages; `next()` waits for the following one (the stream coalesces over 5 ms here). */
function started(t: { teardown(fn: () => unknown): void }, ds: Datastore, coalesceMs = 5) {
  const messages: SyncUpdateMsg[] = [];
  let wake: (() => void) | undefined;
  const stream = new AgentSyncStream(ds, me, nodeSelectors, { write: (m) => { messages.push(m); wake?.(); }, fail: (err) => { throw err; } }, coalesceMs);
  stream.start();
  t.teardown(() => stream.stop());
  let read = 0;
  const next = async (): Promise<SyncUpdateMsg> => {
    while (messages.length <= read) await new Promise<void>((r) => { wake = r; setTimeout(r, 2000); });
    if (messages.length <= read) throw new Error('no message');
    return messages[read++]!;
  };
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 40));
  return { messages, next, settle, skipTo: () => { read = messages.length; } };
}

/** Counts the datastore reads a stream makes for entries. */
function countReads(ds: Datastore): { full: number; one: number } {
  const counts = { full: 0, one: 0 };
  const forAgent = ds.entriesForAgent.bind(ds);
  const find = ds.findEntry.bind(ds);
  ds.entriesForAgent = (...a) => { counts.full++; return forAgent(...a); };
  ds.findEntry = (id) => { counts.one++; return find(id); };
  return counts;
}

t.test('changes to other agents\' entries cost the stream no datastore read and no message', async (t) => {
  const { ds } = await openTemp(t, 'sync-others');
  const mine = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'mine'), parentId: me, selectors: sel('unix:uid:1') });
  const s = started(t, ds);
  t.same((await s.next()).entries.map((e) => e.id), [mine.id], 'snapshot');
  const reads = countReads(ds);
  for (let i = 0; i < 50; i++) await ds.createEntry({ spiffeId: td.child('ns', 'b', 'sa', `x${i}`), parentId: other, selectors: sel('unix:uid:2') });
  await s.settle();
  t.same(reads, { full: 0, one: 0 }, '50 entries of another agent: nothing read');
  t.equal(s.messages.length, 1, 'and nothing sent');
  await ds.updateEntry(mine.id, { x509SvidTtl: 120 });
  const update = await s.next();
  t.same(update.entries.map((e) => [e.id, e.x509_svid_ttl]), [[mine.id, 120]], 'its own entry changed: sent');
  t.equal(update.revision, await ds.currentRevision(), 'at the datastore\'s revision');
  t.same(reads, { full: 0, one: 1 }, 'one lookup for it, no full re-read');
});

t.test('an entry moving to another agent is removed from this one, and added back when it returns', async (t) => {
  const { ds } = await openTemp(t, 'sync-move');
  const e = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'mover'), parentId: me, selectors: sel('unix:uid:1') });
  const s = started(t, ds);
  await s.next();
  await ds.updateEntry(e.id, { parentId: other });
  t.same((await s.next()).removed_entries, [e.id], 'moved away: removed');
  await ds.updateEntry(e.id, { parentId: me });
  t.same((await s.next()).entries.map((x) => x.id), [e.id], 'moved back: sent again');
  await ds.deleteEntry(e.id);
  t.same((await s.next()).removed_entries, [e.id], 'deleted: removed');
  const ghost = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'ghost'), parentId: me, selectors: sel('unix:uid:3') });
  await ds.deleteEntry(ghost.id);
  await s.settle();
  const last = s.messages.at(-1)!;
  t.notOk(last.entries.some((x) => x.id === ghost.id) && !last.removed_entries.includes(ghost.id), 'created and deleted within one window: never left behind as present');
});

t.test('entries under a node alias arrive with the alias; an alias the node stops matching takes its entries away (full recompute)', async (t) => {
  const { ds } = await openTemp(t, 'sync-alias');
  const alias = await ds.createEntry({ spiffeId: td.child('meshid', 'zone-a'), parentId: serverId(td), selectors: sel('k8s_psat:agent_node_label:zone:a') });
  const s = started(t, ds);
  t.same((await s.next()).entries, [], 'snapshot: nothing yet');
  const viaAlias = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'web'), parentId: alias.spiffeId, selectors: sel('k8s:sa:web') });
  t.same((await s.next()).entries.map((x) => x.id), [viaAlias.id], 'an entry under the alias reaches this agent incrementally');
  await ds.updateEntry(alias.id, { selectors: sel('k8s_psat:agent_node_label:zone:b') });
  t.same((await s.next()).removed_entries, [viaAlias.id], 'the node no longer matches the alias: its entries go');
  await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'api'), parentId: alias.spiffeId, selectors: sel('k8s:sa:api') });
  await s.settle();
  t.equal(s.messages.length, 3, 'and new entries under it do not come');
});

t.test('a lone change goes out at once; changes in the window after a message wait for its end and go out as one', async (t) => {
  const { ds } = await openTemp(t, 'sync-window');
  const a = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'a'), parentId: me, selectors: sel('unix:uid:1') });
  const b = await ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', 'b'), parentId: me, selectors: sel('unix:uid:2') });
  const s = started(t, ds, 3_000);
  await s.next();
  await ds.updateEntry(a.id, { x509SvidTtl: 100 });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(s.messages.length, 2, 'sent without waiting for the 3 s window');
  t.same(s.messages[1]!.entries.map((e) => [e.id, e.x509_svid_ttl]), [[a.id, 100]]);
  s.skipTo();
  for (const [id, ttl] of [[a.id, 200], [b.id, 300], [a.id, 400]] as const) {
    await ds.updateEntry(id, { x509SvidTtl: ttl });
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 200));
  t.equal(s.messages.length, 2, 'the burst waits for the window');
  const burst = await s.next();
  t.same(burst.entries.map((e) => [e.id, e.x509_svid_ttl]).sort(), [[a.id, 400], [b.id, 300]].sort(), 'one message with the latest of each');
  t.equal(s.messages.length, 3);
});

t.test('a stream that resumes from a revision the log still holds gets only what changed since; one too far behind gets a snapshot', async (t) => {
  const { ds } = await openTemp(t, 'sync-resume');
  const mk = (parent: typeof me, name: string) => ds.createEntry({ spiffeId: td.child('ns', 'a', 'sa', name), parentId: parent, selectors: sel(`unix:uid:${name.length}`) });
  const keep = await mk(me, 'keep');
  const gone = await mk(me, 'gone');
  const moved = await mk(me, 'moved');
  const from = await ds.currentRevision();
  await ds.deleteEntry(gone.id);
  await ds.updateEntry(moved.id, { parentId: other });
  const added = await mk(me, 'added');
  await mk(other, 'not-mine');
  const current = await ds.currentRevision();
  const open = (revision: number) => {
    const messages: SyncUpdateMsg[] = [];
    const stream = new AgentSyncStream(ds, me, nodeSelectors, { write: (m) => messages.push(m), fail: (err) => { throw err; } }, 5);
    stream.start(revision);
    t.teardown(() => stream.stop());
    return messages;
  };
  const until = async (m: SyncUpdateMsg[]) => { for (let i = 0; i < 200 && m.length === 0; i++) await new Promise((r) => setTimeout(r, 10)); return m[0]!; };

  const resumed = await until(open(from));
  t.equal(resumed.snapshot, false, 'no snapshot');
  t.same(resumed.entries.map((e) => e.id), [added.id], 'only the entry added since; the one it already has is not sent again');
  t.same([...resumed.removed_entries].sort(), [gone.id, moved.id].sort(), 'the deleted one and the one that moved to another agent are removed');
  t.notOk(resumed.entries.some((e) => e.id === keep.id));
  t.equal(Number(resumed.revision), current, 'stamped with the last change it covers');

  const upToDate = await until(open(current));
  t.equal(upToDate.snapshot, false);
  t.equal(upToDate.entries.length + upToDate.removed_entries.length, 0, 'an agent that has everything gets an empty message at the revision');
  t.equal(Number(upToDate.revision), current);

  await ds.compactChanges(current);
  const behind = await until(open(from));
  t.equal(behind.snapshot, true, 'the log no longer holds what came after its revision: a snapshot');
  t.same(behind.entries.map((e) => e.id).sort(), [keep.id, added.id].sort());

  const ahead = await until(open(current + 100));
  t.equal(ahead.snapshot, true, 'a revision this datastore never reached (another installation, a restore): a snapshot');
});
