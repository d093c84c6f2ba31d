import t from 'tap';
import { type Change, Datastore } from '../../../server/datastore/index.js';
import { ChangeFeed } from '../../../server/datastore/feed.js';
import { agentId, SelectorSet } from '../../../spiffe/index.js';
import { openTemp, rawQuery, td, testEngine } from './fixtures/tempdb.js';
import { startWorker } from './fixtures/workers.js';

const parent = agentId(td, 'test', 'feed');
const entry = (name: string) => ({ id: name, spiffeId: td.child('w', name), parentId: parent, selectors: SelectorSet.parse([`unix:uid:${name.length}`, `k8s:sa:${name}`]) });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Collects what a feed publishes. */
function record(feed: ChangeFeed): Change[] {
  const seen: Change[] = [];
  feed.onChange((changes) => seen.push(...changes));
  return seen;
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

t.test(`[${testEngine}] a write through another connection (another server) reaches this one's feed, with its parents, once and in order`, async (t) => {
  const { ds, url } = await openTemp(t, 'feedcross', { now: Date.now });
  const other = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => other.close());
  const feed = new ChangeFeed(ds, { pollMs: 200 });
  await feed.start();
  t.teardown(() => feed.stop());
  const seen = record(feed);
  const heardOwn: Change[] = [];
  ds.onChange((c) => heardOwn.push(...c));
  await other.createEntry(entry('a'));
  await other.createEntry(entry('b'));
  await ds.createEntry(entry('c'));
  await until(() => seen.length === 3, 'three changes');
  t.same(seen.map((c) => [c.revision, c.id, c.op]), [[1, 'a', 'upsert'], [2, 'b', 'upsert'], [3, 'c', 'upsert']]);
  t.same(seen[0]!.parents, [parent.toString()], 'the parents travel in the log');
  t.equal(heardOwn.length, 1, 'the datastore alone hears only its own commit: the feed is what crosses servers');
  await sleep(450); // two more polls publish nothing again
  t.equal(seen.length, 3);
  t.equal(feed.position, 3);
});

t.test(`[${testEngine}] a change that nobody announces (no notification) is read by the poll`, async (t) => {
  const { ds, url } = await openTemp(t, 'feedpoll', { now: Date.now });
  const feed = new ChangeFeed(ds, { pollMs: 100 });
  await feed.start();
  t.teardown(() => feed.stop());
  const seen = record(feed);
  // written past the datastore: no NOTIFY, no in-process listener
  await rawQuery(url, "UPDATE meta SET value = value + 1 WHERE key = 'revision'");
  await rawQuery(url, "INSERT INTO changes (revision, kind, object_id, op, at) VALUES (1, 'policy', 'ns/quiet', 'upsert', 0)");
  await until(() => seen.length === 1, 'the unannounced change');
  t.same(seen.map((c) => [c.revision, c.kind, c.id]), [[1, 'policy', 'ns/quiet']]);
});

t.test(`[${testEngine}] a transaction that holds its revision while another server commits is not skipped: revisions commit in order`, async (t) => {
  const { ds, url } = await openTemp(t, 'feedorder', { now: Date.now, busyTimeoutMs: 10_000 });
  const observer = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => observer.close());
  // a follower reading the log as fast as it can the whole time
  const followed: number[] = [];
  let following = true;
  const follower = (async () => {
    let at = 0;
    while (following) {
      for (const c of await observer.changesSince(at)) { followed.push(c.revision); at = c.revision; }
      await sleep(1);
    }
    for (const c of await observer.changesSince(at)) followed.push(c.revision);
  })();
  try {
    let slowRevision = 0;
    // the other server is another process (SQLite's lock waits block the thread that waits)
    const other = startWorker(t, ['create-entries-on-go', url, 'fast', '1']);
    await other.waitForLine((l) => l === 'ready');
    const slow = ds.transaction(async (tx) => {
      slowRevision = (await tx.createEntry(entry('slow'))).revision;
      other.send('go');
      await sleep(600); // holds its revision, uncommitted, while the other server tries to write
    });
    await slow;
    await other.waitForLine((l) => l.startsWith('created '));
    await other.exited();
    const created = other.lines.find((l) => l.startsWith('created '))!;
    const fast = await ds.getEntry(created.slice('created '.length));
    t.ok(fast.revision > slowRevision, `the writer that came second got the later revision (${slowRevision} then ${fast.revision})`);
  } finally {
    following = false;
    await follower;
  }
  t.same(followed, [1, 2], 'the follower saw every revision, in order, none skipped');
});

t.test(`[${testEngine}] a feed behind a compacted log starts its listeners over`, async (t) => {
  const { ds } = await openTemp(t, 'feedcompact', { now: Date.now });
  const feed = new ChangeFeed(ds, { pollMs: 60_000 });
  await feed.start();
  t.teardown(() => feed.stop());
  let resets = 0;
  feed.onReset(() => { resets += 1; });
  // the feed is stopped from reading (no wake-ups reach it) while the log is written and compacted
  const seen = record(feed);
  (feed as unknown as { stopped: boolean }).stopped = true;
  await ds.createEntry(entry('x'));
  await ds.createEntry(entry('y'));
  await ds.compactChanges(2);
  (feed as unknown as { stopped: boolean }).stopped = false;
  feed.wake();
  await until(() => resets === 1, 'the reset');
  t.equal(seen.length, 0, 'nothing is published from a log that lost the start');
  t.equal(feed.position, 2, 'the feed goes on from the end');
  await ds.createEntry(entry('z'));
  await until(() => seen.length === 1, 'the next change');
  t.equal(seen[0]!.revision, 3);
});
