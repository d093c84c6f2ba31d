/**
 * What only the PostgreSQL engine has: its migrations, its URL and password
 * handling, and surviving the database going away. A real PostgreSQL server
 * (test/helpers/postgres.ts), started for this file.
 */
import { mkdtempSync, mkdirSync, writeFileSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { migrationsDir } from '../../../api/assets.js';
import { Datastore, parseDatastoreUrl } from '../../../server/datastore/index.js';
import { ChangeFeed } from '../../../server/datastore/feed.js';
import { redactUrl } from '../../../server/datastore/postgres.js';
import { agentId, type MeshidError, SelectorSet, TrustDomain } from '../../../spiffe/index.js';
import { PostgresCluster } from '../../helpers/postgres.js';
import { rawQuery } from './fixtures/tempdb.js';

const td = TrustDomain.parse('example.org');
const parent = agentId(td, 'test', 'pg');
const entry = (name: string) => ({ id: name, spiffeId: td.child('w', name), parentId: parent, selectors: SelectorSet.parse([`k8s:sa:${name}`]) });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cluster = await PostgresCluster.start();
t.teardown(() => cluster.destroy());
let n = 0;
const fresh = (): Promise<string> => cluster.createDatabase(`pg_engine_${++n}`);

t.test('migrations are numbered and recorded; both dialects know the same versions', async (t) => {
  const url = await fresh();
  const ds = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => ds.close());
  const sqliteVersions = readdirSync(migrationsDir).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
  const pgVersions = readdirSync(join(migrationsDir, 'postgres')).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
  t.same(pgVersions, sqliteVersions, 'one PostgreSQL migration per SQLite migration, same numbers and names');
  t.equal(ds.engine, 'postgres');
  t.equal(ds.schemaVersion, sqliteVersions.length);
  const rows = await rawQuery(url, 'SELECT version, name FROM schema_version ORDER BY version');
  t.same(rows.map((r) => [Number(r.version), r.name]), pgVersions.map((f, i) => [i + 1, f]));
});

t.test('a database with a newer schema than this code is refused at open, naming both versions', async (t) => {
  const url = await fresh();
  await (await Datastore.open({ url, trustDomain: td })).close();
  await rawQuery(url, "INSERT INTO schema_version (version, name, applied_at) VALUES (99, '0099_future.sql', 0)");
  const err = await t.rejects(() => Datastore.open({ url, trustDomain: td })) as MeshidError;
  t.equal(err.code, 'failed_precondition');
  t.match(err.message, /schema version 99, newer than the \d+ this meshid-server knows/);
  t.notMatch(err.message, /password/);
});

t.test('a migration that fails leaves the database at the version before it', async (t) => {
  const url = await fresh();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-pgmig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'postgres'));
  writeFileSync(join(dir, 'postgres', '0001_init.sql'), readFileSync(join(migrationsDir, 'postgres', '0001_init.sql')));
  writeFileSync(join(dir, 'postgres', '0002_broken.sql'), 'CREATE TABLE half_done (x INTEGER); SELECT no_such_function();');
  await t.rejects(() => Datastore.open({ url, trustDomain: td, migrationsDir: join(dir, 'postgres') }), /migration 0002_broken\.sql failed/);
  t.same((await rawQuery(url, 'SELECT version FROM schema_version')).map((r) => Number(r.version)), [1]);
  t.same(await rawQuery(url, "SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'"), [], 'nothing of it stays');
});

t.test('servers that open a new database at once apply each migration once', async (t) => {
  const url = await fresh();
  const opened = await Promise.all(Array.from({ length: 4 }, () => Datastore.open({ url, trustDomain: td })));
  t.teardown(() => Promise.all(opened.map((d) => d.close())));
  const rows = await rawQuery(url, 'SELECT version, COUNT(*) AS n FROM schema_version GROUP BY version ORDER BY version');
  t.ok(rows.length > 0 && rows.every((r) => Number(r.n) === 1), 'every version recorded once');
  t.same(new Set(opened.map((d) => d.schemaVersion)).size, 1);
});

t.test('the datastore URL: schemes, bad input, and the password kept out of every message', async (t) => {
  t.same(parseDatastoreUrl('sqlite:/var/lib/x.sqlite3'), { engine: 'sqlite', path: '/var/lib/x.sqlite3' });
  t.same(parseDatastoreUrl('/var/lib/x.sqlite3'), { engine: 'sqlite', path: '/var/lib/x.sqlite3' });
  t.same(parseDatastoreUrl('postgresql://u@h/db'), { engine: 'postgres', url: 'postgresql://u@h/db' });
  t.throws(() => parseDatastoreUrl('mysql://u@h/db'), { code: 'invalid_argument', field: 'datastore.url', message: /mysql: is not supported/ });
  t.throws(() => parseDatastoreUrl('sqlite:'), { code: 'invalid_argument', message: /names no file/ });
  t.equal(redactUrl('postgres://meshid:s3cret@db:5432/meshid'), 'postgres://meshid:***@db:5432/meshid');
  // a server that is not there: Unavailable, naming the URL without its password
  const err = await t.rejects(() => Datastore.open({ url: 'postgres://meshid:s3cret-pw@127.0.0.1:1/meshid', trustDomain: td, busyTimeoutMs: 1000 })) as MeshidError;
  t.equal(err.code, 'unavailable');
  t.match(err.message, /postgres:\/\/meshid:\*\*\*@127\.0\.0\.1:1\/meshid is unreachable/);
  t.notMatch(err.message + String(err.stack), /s3cret-pw/);
  // the password from its own option (config datastore.password_file), and from the URL: both kept out of location
  const db = (await fresh()).split('/').pop()!;
  const ds = await Datastore.open({ url: `postgres://meshid:in-url@127.0.0.1:${cluster.port}/${db}`, trustDomain: td });
  t.teardown(() => ds.close());
  t.equal(ds.location, `postgres://meshid:***@127.0.0.1:${cluster.port}/${db}`);
});

t.test('PostgreSQL restarted under a running datastore: calls fail as Unavailable meanwhile, then work again by themselves; the feed catches up', async (t) => {
  const url = await fresh();
  const ds = await Datastore.open({ url, trustDomain: td, busyTimeoutMs: 2000 });
  t.teardown(() => ds.close());
  const writer = await Datastore.open({ url, trustDomain: td, busyTimeoutMs: 2000 });
  t.teardown(() => writer.close());
  const feed = new ChangeFeed(ds, { pollMs: 200 });
  await feed.start();
  t.teardown(() => feed.stop());
  const seen: string[] = [];
  feed.onChange((cs) => seen.push(...cs.map((c) => c.id)));
  await writer.createEntry(entry('before'));
  for (let i = 0; i < 200 && seen.length < 1; i++) await sleep(10);
  t.same(seen, ['before']);

  cluster.stopServer('fast');
  const down = await t.rejects(() => ds.listEntries()) as MeshidError;
  t.equal(down.code, 'unavailable', `a call while the database is down is Unavailable (${down.message})`);
  t.notMatch(down.message, /password/);
  cluster.startServer();
  // the pool makes new connections by itself
  let entries: string[] = [];
  for (let i = 0; i < 100; i++) {
    try { entries = (await ds.listEntries()).items.map((e) => e.id); break; } catch { await sleep(100); }
  }
  t.same(entries, ['before'], 'reads work again without a restart');
  await writer.createEntry(entry('after'));
  for (let i = 0; i < 500 && seen.length < 2; i++) await sleep(10);
  t.same(seen, ['before', 'after'], 'the feed (its LISTEN connection made again) hears the write after the restart');
});

t.test('more work than the pool has connections waits its turn beyond the connect timeout, instead of failing', async (t) => {
  const url = await fresh();
  const ds = await Datastore.open({ url, trustDomain: td, busyTimeoutMs: 1000, poolSize: 2 });
  t.teardown(() => ds.close());
  await ds.createEntry(entry('e1'));
  // six snapshot reads of 0.6 s each on two connections: the last ones wait about 1.2 s, longer than the 1 s connect timeout
  const started = Date.now();
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => ds.readSnapshot(async (snap) => {
    const list = await snap.listEntries();
    await sleep(600);
    return list.items.length;
  })));
  t.same(results.map((r) => r.status), Array(6).fill('fulfilled'), JSON.stringify(results.filter((r) => r.status === 'rejected')));
  t.ok(Date.now() - started >= 1700, 'and they did take turns on the two connections');
  // plain reads too: forty at once on two connections
  const reads = await Promise.allSettled(Array.from({ length: 40 }, () => ds.listEntries()));
  t.equal(reads.filter((r) => r.status === 'fulfilled').length, 40);
});
