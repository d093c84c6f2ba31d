import t from 'tap';
import { Datastore, type Change } from '../../../server/datastore/index.js';
import { agentId, MeshidError, SelectorSet } from '../../../spiffe/index.js';
import { openTemp, td } from './fixtures/tempdb.js';

const parent = agentId(td, 'join_token', 'n1');
const entry = (name: string) => ({ spiffeId: td.child('app', name), parentId: parent, selectors: SelectorSet.parse([`app:name:${name}`]) });

t.test('each visible change gets the next revision and a change-log row with kind, id and op', async (t) => {
  const { ds, clock } = await openTemp(t, 'rev');
  t.equal(await ds.currentRevision(), 0);
  const e = await ds.createEntry(entry('a'));
  await ds.setBundle(td, { keys: [] });
  await ds.updateEntry(e.id, { hint: 'h' });
  const id = (await ds.allocateIdentity('k', { app: 'a' }, { namespace: 'default', name: 'a' })).id;
  const node = await ds.upsertNode({ name: 'n1', address: '10.0.0.1' });
  await ds.upsertEndpoint({ ip: '10.1.0.5', identity: id, nodeId: node.id, namespace: 'default', name: 'pod-a', labels: {} });
  await ds.upsertPolicy({ namespace: 'default', name: 'p', kind: 'MeshPolicy', spec: { allow: [] } });
  await ds.deleteEntry(e.id);
  t.equal(await ds.currentRevision(), 9);
  t.same((await ds.changesSince(0)).map((c) => [c.revision, c.kind, c.id, c.op]), [
    [1, 'entry', e.id, 'upsert'],
    [2, 'bundle', 'example.org', 'upsert'],
    [3, 'entry', e.id, 'upsert'],
    [4, 'identity', String(id), 'upsert'],
    [5, 'node', String(node.id), 'upsert'], // allocating the node id
    [6, 'node', String(node.id), 'upsert'], // setting its address
    [7, 'endpoint', '10.1.0.5', 'upsert'],
    [8, 'policy', 'default/p', 'upsert'],
    [9, 'entry', e.id, 'delete'],
  ]);
  t.ok((await ds.changesSince(0)).every((c) => c.at === clock.seconds()));
  t.same((await ds.changesSince(7)).map((c) => c.revision), [8, 9]);
  t.same((await ds.changesSince(3, 2)).map((c) => c.revision), [4, 5], 'limit');
  t.same(await ds.changesSince(9), []);
});

t.test('writes that change nothing agents see do not bump the revision', async (t) => {
  const { ds } = await openTemp(t, 'noop');
  await ds.setBundle(td, { keys: [{ kty: 'EC' }] });
  await ds.upsertNode({ name: 'n1', address: '10.0.0.1' });
  await ds.upsertPolicy({ namespace: '', name: 'p', kind: 'K', spec: { a: 1 } });
  const rev = await ds.currentRevision();
  await ds.setBundle(td, { keys: [{ kty: 'EC' }] });
  await ds.upsertNode({ name: 'n1', address: '10.0.0.1' });
  await ds.upsertPolicy({ namespace: '', name: 'p', kind: 'K', spec: { a: 1 } });
  await ds.createJoinToken({ token: 't', expiresAt: 4102444800 });
  await ds.saveCaJournal([{ kind: 'x509', id: 'k1', state: 'active', data: {} }]);
  t.equal(await ds.currentRevision(), rev);
});

t.test('onChange listeners hear each committed transaction once, after commit, and not failed ones', async (t) => {
  const { ds } = await openTemp(t, 'listen');
  const heard: Change[][] = [];
  const seenFromListener: Promise<[number, number]>[] = [];
  const unsubscribe = ds.onChange((changes) => {
    heard.push([...changes]);
    // the change is committed: a read started from inside the listener sees it
    seenFromListener.push(ds.currentRevision().then((r) => [r, changes[changes.length - 1]!.revision]));
  });
  await ds.createEntry(entry('a'));
  await ds.batchCreateEntries([entry('b'), entry('a'), entry('c')]);
  await t.rejects(() => ds.createEntry(entry('a')));
  t.same(heard.map((batch) => batch.map((c) => c.revision)), [[1], [2, 3]], 'the batch is one notification; the failed item and create are absent');
  for (const [read, last] of await Promise.all(seenFromListener)) t.ok(read >= last, `a read from the listener sees revision ${last} (read ${read})`);
  unsubscribe();
  await ds.createEntry(entry('d'));
  t.equal(heard.length, 2, 'no notification after unsubscribing');
});

t.test('a listener that throws does not undo the write or stop other listeners', async (t) => {
  const errors: unknown[] = [];
  const { ds } = await openTemp(t, 'badlistener', { onListenerError: (err) => errors.push(err) });
  let second = 0;
  ds.onChange(() => { throw new Error('listener bug'); });
  ds.onChange(() => { second++; });
  const e = await ds.createEntry(entry('a'));
  t.equal((await ds.getEntry(e.id)).id, e.id);
  t.equal(second, 1);
  t.match(String(errors[0]), /listener bug/);
});

t.test('compacted history is refused with FailedPrecondition on field revision; newer history stays', async (t) => {
  const { ds } = await openTemp(t, 'compact');
  for (const n of ['a', 'b', 'c', 'd']) await ds.createEntry(entry(n));
  t.equal(await ds.compactChanges(2), 2);
  t.equal(await ds.compactChanges(1), 0, 'compacting is monotonic');
  t.same((await ds.changesSince(2)).map((c) => c.revision), [3, 4]);
  t.same((await ds.changesSince(3)).map((c) => c.revision), [4]);
  const err = await t.rejects(() => ds.changesSince(1)) as MeshidError;
  t.equal(err.code, 'failed_precondition');
  t.equal(err.field, 'revision');
  t.equal(await ds.currentRevision(), 4, 'compaction does not move the revision');
});

t.test('readSnapshot reads one consistent state while another connection writes', async (t) => {
  const { ds, url } = await openTemp(t, 'snapshot');
  const writer = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => writer.close());
  await ds.createEntry(entry('a'));
  const seen = await ds.readSnapshot(async (snap) => {
    const before = { rev: (await snap.currentRevision()), count: (await snap.listEntries()).items.length };
    await writer.createEntry(entry('b')); // commits on the other connection mid-snapshot
    const after = { rev: (await snap.currentRevision()), count: (await snap.listEntries()).items.length };
    return { before, after };
  });
  t.same(seen.before, { rev: 1, count: 1 });
  t.same(seen.after, { rev: 1, count: 1 }, 'the snapshot does not see the concurrent commit');
  t.equal(await ds.currentRevision(), 2, 'outside the snapshot it is visible');
});

t.test('changesSince refuses a negative revision or limit', async (t) => {
  const { ds } = await openTemp(t, 'args');
  t.equal((await t.rejects(() => ds.changesSince(-1)) as MeshidError).field, 'revision');
  t.equal((await t.rejects(() => ds.changesSince(0, 0)) as MeshidError).field, 'limit');
});

t.test('a closed datastore refuses further use', async (t) => {
  const { ds } = await openTemp(t, 'closed');
  await ds.close();
  await t.rejects(() => ds.currentRevision());
  await t.resolves(() => ds.close(), 'closing twice is harmless');
});
