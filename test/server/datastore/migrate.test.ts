import t from 'tap';
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { migrationsDir } from '../../../api/assets.js';
import { Datastore } from '../../../server/datastore/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { td, tempDir } from './fixtures/tempdb.js';
import { startWorker } from './fixtures/workers.js';

const shipped = readdirSync(migrationsDir).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();

t.test('opening a new file applies every migration in order and records each in schema_version', async (t) => {
  const path = join(tempDir(t, 'mig'), 'meshid.db');
  const ds = await Datastore.open({ path, trustDomain: td });
  t.equal(ds.schemaVersion, shipped.length);
  await ds.close();
  const db = new Database(path, { readonly: true });
  t.teardown(() => db.close());
  const rows = db.prepare('SELECT version, name FROM schema_version ORDER BY version').all() as { version: number; name: string }[];
  t.same(rows.map((r) => r.version), shipped.map((_, i) => i + 1));
  t.same(rows.map((r) => r.name), shipped);
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
  for (const table of ['registered_entries', 'entry_selectors', 'entry_dns_names', 'entry_federates_with', 'bundles',
    'attested_nodes', 'attested_node_selectors', 'join_tokens', 'ca_journal', 'identities', 'nodes', 'endpoints',
    'policies', 'changes', 'meta']) {
    t.ok(tables.includes(table), `table ${table} exists`);
  }
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
});

t.test('the connection runs in WAL mode with synchronous FULL, foreign keys on and a busy timeout', async (t) => {
  const path = join(tempDir(t, 'pragma'), 'meshid.db');
  const ds = await Datastore.open({ path, trustDomain: td, busyTimeoutMs: 1234 });
  t.teardown(() => ds.close());
  // the pragmas are per connection; read them through the datastore's own connection
  const db = (ds as unknown as { core: { engine: { db: Database.Database } } }).core.engine.db;
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'FULL is 2');
  t.equal(db.pragma('foreign_keys', { simple: true }), 1);
  t.equal(db.pragma('busy_timeout', { simple: true }), 1234);
});

t.test('reopening an up-to-date file applies nothing and keeps the data', async (t) => {
  const path = join(tempDir(t, 'reopen'), 'meshid.db');
  const first = await Datastore.open({ path, trustDomain: td });
  await first.setBundle(td, { keys: [] });
  await first.close();
  const second = await Datastore.open({ path, trustDomain: td });
  t.teardown(() => second.close());
  t.equal(second.schemaVersion, shipped.length);
  t.equal((await second.listBundles()).length, 1);
  t.equal(await second.currentRevision(), 1);
  const db = new Database(path, { readonly: true });
  t.teardown(() => db.close());
  t.equal(db.prepare('SELECT COUNT(*) FROM schema_version').pluck().get(), shipped.length, 'one row per migration, not two');
});

t.test('a database whose schema version is newer than the code knows is refused with a clear error', async (t) => {
  const path = join(tempDir(t, 'future'), 'meshid.db');
  await (await Datastore.open({ path, trustDomain: td })).close();
  const db = new Database(path);
  db.prepare('INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, 0)').run(shipped.length + 1, '9999_future.sql');
  db.close();
  const err = await t.rejects(() => Datastore.open({ path, trustDomain: td })) as unknown;
  t.type(err, MeshidError);
  const e = err as MeshidError;
  t.equal(e.code, 'failed_precondition');
  t.equal(e.field, 'schema_version');
  t.match(e.message, new RegExp(`schema version ${shipped.length + 1}, newer than the ${shipped.length}`));
});

t.test('a failing migration rolls back completely and leaves the previous version recorded', async (t) => {
  const dir = tempDir(t, 'failmig');
  const migs = join(dir, 'migrations');
  mkdirSync(migs);
  for (const f of shipped) copyFileSync(join(migrationsDir, f), join(migs, f));
  const next = String(shipped.length + 1).padStart(4, '0');
  writeFileSync(join(migs, `${next}_broken.sql`), 'CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n');
  const path = join(dir, 'meshid.db');
  await t.rejects(() => Datastore.open({ path, trustDomain: td, migrationsDir: migs }), /migration .*_broken\.sql failed/);
  const db = new Database(path, { readonly: true });
  t.teardown(() => db.close());
  t.equal(db.prepare('SELECT MAX(version) FROM schema_version').pluck().get(), shipped.length);
  t.equal(db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'").pluck().get(), 0, 'the partial table is gone');
});

t.test('a migrations folder with a gap in its numbering is refused', async (t) => {
  const dir = tempDir(t, 'gap');
  const migs = join(dir, 'migrations');
  mkdirSync(migs);
  copyFileSync(join(migrationsDir, shipped[0]!), join(migs, shipped[0]!));
  writeFileSync(join(migs, '0003_skipped_two.sql'), 'SELECT 1;');
  await t.rejects(() => Datastore.open({ path: join(dir, 'meshid.db'), trustDomain: td, migrationsDir: migs }), /without gaps/);
});

t.test('several processes opening a new file at once apply each migration exactly once', async (t) => {
  const path = join(tempDir(t, 'raceopen'), 'meshid.db');
  const workers = Array.from({ length: 4 }, (_, i) => startWorker(t, ['create-entries', path, `opener${i}`, '1']));
  await Promise.all(workers.map((w) => w.succeeded()));
  const db = new Database(path, { readonly: true });
  t.teardown(() => db.close());
  t.same(db.prepare('SELECT version FROM schema_version ORDER BY version').pluck().all(), shipped.map((_, i) => i + 1));
  t.equal(db.prepare('SELECT COUNT(*) FROM registered_entries').pluck().get(), 4, 'every process then wrote its entry');
});
