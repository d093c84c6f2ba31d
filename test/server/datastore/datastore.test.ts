import t from 'tap';
import Database from 'better-sqlite3';
import { Datastore } from '../../../server/datastore/index.js';
import { openTemp, td, testEngine } from './fixtures/tempdb.js';
import { startWorker } from './fixtures/workers.js';

t.test('no write is lost under concurrent writers: k processes × N entries are all there, revisions 1..k×N without gaps', async (t) => {
  const { ds, url } = await openTemp(t, 'writers', { now: Date.now });
  const k = 4;
  const n = 40;
  const workers = Array.from({ length: k }, (_, i) => startWorker(t, ['create-entries', url, `w${i}`, String(n)]));
  await Promise.all(workers.map((w) => w.succeeded()));
  const reported = workers.flatMap((w) => w.lines.filter((l) => l.startsWith('created ')).map((l) => l.slice(8)));
  t.equal(reported.length, k * n, 'every worker reported every commit');

  const stored = (await ds.listEntries()).items;
  t.equal(stored.length, k * n);
  t.same(stored.map((e) => e.id).sort(), [...reported].sort(), 'exactly the reported entries are stored');

  t.equal(await ds.currentRevision(), k * n);
  const changes = await ds.changesSince(0, 10 * k * n);
  t.same(changes.map((c) => c.revision), Array.from({ length: k * n }, (_, i) => i + 1), 'revisions strictly increase without gaps or duplicates');
  t.same(changes.map((c) => c.id).sort(), [...reported].sort(), 'one change per entry');
  t.same(stored.map((e) => e.revision).sort((a, b) => a - b), changes.map((c) => c.revision), 'each entry carries its own revision');
  for (let i = 0; i < k; i++) {
    t.equal((await ds.listEntries({ byParentId: td.child('meshid', 'agent', 'test', `w${i}`) })).items.length, n, `worker w${i}'s entries`);
  }
});

t.test('SIGKILL mid-run loses no committed entry: every id printed after commit is there after reopening', async (t) => {
  const { ds, path, url } = await openTemp(t, 'kill', { now: Date.now });
  await ds.close(); // the worker is the only writer; reopen after the kill
  const worker = startWorker(t, ['create-entries', url, 'victim', '1000000']);
  await worker.waitForLine((l) => l.startsWith('created ') && worker.lines.length >= 150);
  worker.kill('SIGKILL');
  const { signal } = await worker.exited();
  t.equal(signal, 'SIGKILL', 'the worker died by SIGKILL, not by finishing');
  const printed = worker.lines.filter((l) => l.startsWith('created ')).map((l) => l.slice(8));
  t.ok(printed.length >= 150);

  if (testEngine === 'sqlite') {
    const check = new Database(path, { readonly: true });
    t.equal(check.pragma('integrity_check', { simple: true }), 'ok');
    check.close();
  }

  const reopened = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => reopened.close());
  const stored = new Set((await reopened.listEntries()).items.map((e) => e.id));
  const missing = printed.filter((id) => !stored.has(id));
  t.same(missing, [], 'no printed id is missing');
  t.ok(stored.size >= printed.length && stored.size <= printed.length + 1, 'at most the one commit in flight went unprinted');
  t.equal(await reopened.currentRevision(), stored.size, 'the revision counter matches the committed entries');
});
