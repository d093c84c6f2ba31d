import t from 'tap';
import Database from 'better-sqlite3';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { systemClock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { backupDatastore } from '../../server/datastore/backup.js';
import { MeshidServer, type MeshidServerDeps } from '../../server/server.js';
import { Selector, SelectorSet, SpiffeId } from '../../spiffe/index.js';
import { tempDir } from './adminapi/fixtures/adminapi.js';

// A server on a real SQLite file and disk CA keys, stopped and started on the same data dir.
type T = { teardown(fn: () => unknown): void };

function serverOn(dir: string, extra: Record<string, unknown> = {}, startup: MeshidServerDeps['startup'] = {}) {
  const config = serverConfigSchema.parse({ data_dir: dir, trust_domain: 'example.org', bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'disk', ...extra });
  const logs = new MemoryLogSink();
  const server = new MeshidServer(config, { clock: systemClock, logger: new JsonLogger(logs, 'debug'), startup });
  return { server, logs };
}

async function initialised(tt: T, entries = 3) {
  const dir = tempDir(tt, 'inst');
  const { server } = serverOn(dir);
  await server.start();
  for (let i = 0; i < entries; i++) {
    await server.store.createEntry({ spiffeId: SpiffeId.parse(`spiffe://example.org/ns/default/sa/app${i}`), parentId: SpiffeId.parse('spiffe://example.org/meshid/agent/x/n1'), selectors: SelectorSet.of([Selector.of('unix', `uid:${1000 + i}`)]) });
  }
  await server.stop();
  return dir;
}

async function refusal(dir: string, extra: Record<string, unknown> = {}, startup: MeshidServerDeps['startup'] = {}): Promise<Error & { code?: string }> {
  const { server } = serverOn(dir, extra, startup);
  try {
    await server.start();
  } catch (err) {
    await server.stop().catch(() => {});
    return err as Error & { code?: string };
  }
  await server.stop();
  throw new Error('the server started');
}

const ds = (dir: string) => join(dir, 'datastore.sqlite3');
const removeDatastore = (dir: string) => { for (const f of ['', '-wal', '-shm']) rmSync(ds(dir) + f, { force: true }); };

t.test('a data dir records its installation; the datastore records the same one', async (tt) => {
  const dir = await initialised(tt);
  const marker = JSON.parse(readFileSync(join(dir, 'installation.json'), 'utf8')) as Record<string, string>;
  tt.match(marker, { trust_domain: 'example.org', datastore: `sqlite:${ds(dir)}` });
  tt.match(marker['installation_id'], /^[0-9a-f-]{36}$/);
  tt.equal(statSync(join(dir, 'installation.json')).mode & 0o777, 0o600);
  const { server } = serverOn(dir);
  await server.start();
  tt.equal((await server.store.installation())?.installationId, marker['installation_id']);
  tt.equal((await server.store.listEntries()).items.length, 3, 'a restart keeps everything');
  await server.stop();
});

t.test('a deleted datastore is refused at start with how to recover; --init-fresh starts a new installation', async (tt) => {
  const dir = await initialised(tt);
  const before = JSON.parse(readFileSync(join(dir, 'installation.json'), 'utf8')) as Record<string, string>;
  removeDatastore(dir);
  const err = await refusal(dir);
  tt.equal(err.code, 'failed_precondition');
  tt.match(err.message, /datastore .*datastore.sqlite3 is missing, but data dir .* was initialised/);
  tt.match(err.message, /restore the datastore from a backup/);
  tt.match(err.message, /--init-fresh/);
  tt.notOk(existsSync(ds(dir)), 'the refusal created no new datastore');
  const { server } = serverOn(dir, {}, { initFresh: true });
  await server.start();
  tt.equal((await server.store.listEntries()).items.length, 0);
  tt.not((await server.store.installation())?.installationId, before['installation_id'], 'a new installation id');
  await server.stop();
});

t.test('a datastore truncated to nothing is refused', async (tt) => {
  const dir = await initialised(tt);
  truncateSync(ds(dir), 0);
  for (const f of ['-wal', '-shm']) rmSync(ds(dir) + f, { force: true });
  const err = await refusal(dir);
  tt.match(err.message, /is empty \(0 bytes\), but data dir/);
});

t.test('CA keys without a datastore (the marker lost too) are refused', async (tt) => {
  const dir = await initialised(tt);
  removeDatastore(dir);
  rmSync(join(dir, 'installation.json'));
  const err = await refusal(dir);
  tt.match(err.message, /but CA keys exist in .*keys/);
});

t.test('a datastore of another installation or another trust domain is refused', async (tt) => {
  const a = await initialised(tt);
  const b = await initialised(tt);
  removeDatastore(a);
  copyFileSync(ds(b), ds(a));
  const err = await refusal(a);
  tt.match(err.message, /belongs to installation .* but data dir .* to /);
  const c = await initialised(tt);
  const td = await refusal(c, { trust_domain: 'other.test' });
  tt.match(td.message, /belongs to trust domain example.org, not other.test/);
});

t.test('a missing active CA key is refused unless --replace-lost-ca-key; the memory key manager makes new keys as always', async (tt) => {
  const dir = await initialised(tt);
  rmSync(join(dir, 'keys'), { recursive: true });
  const err = await refusal(dir);
  tt.equal(err.code, 'failed_precondition');
  tt.match(err.message, /key of the active X.509 CA slot .* is missing/);
  tt.match(err.message, /--replace-lost-ca-key/);
  const { server, logs } = serverOn(dir, {}, { replaceLostCaKey: true });
  await server.start();
  tt.equal((await server.store.listEntries()).items.length, 3, 'the entries are still there');
  tt.ok(logs.lines.some((l) => l['msg'] === 'active CA key is missing; making a new one'));
  await server.stop();
});

/** Overwrites `pages` pages (not the header page) with seeded junk. */
function corrupt(file: string, pages: number, seed = 7): void {
  const size = statSync(file).size;
  const pageSize = 4096;
  const count = Math.floor(size / pageSize);
  let x = seed;
  const next = () => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x; };
  const fd = openSync(file, 'r+');
  for (let i = 0; i < pages; i++) {
    const page = 1 + (next() % (count - 1));
    const junk = Buffer.alloc(pageSize);
    for (let j = 0; j < pageSize; j++) junk[j] = next() & 0xff;
    writeSync(fd, junk, 0, pageSize, page * pageSize);
  }
  closeSync(fd);
}

t.test('a datastore with overwritten pages is refused at start by the integrity check', async (tt) => {
  const dir = await initialised(tt, 400);
  corrupt(ds(dir), 20);
  const err = await refusal(dir);
  tt.equal(err.code, 'data_loss');
  tt.match(err.message, /datastore .* is corrupt \(integrity_check: /);
  tt.match(err.message, /restore it from a backup/);
});

t.test('corruption met at run time answers data_loss, turns readiness off and is counted', async (tt) => {
  const dir = await initialised(tt, 400);
  // damage only the entries table's root page, which start-up does not read
  const db = new Database(ds(dir), { readonly: true });
  const root = db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'registered_entries'").pluck().get() as number;
  db.close();
  const fd = openSync(ds(dir), 'r+');
  writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, (root - 1) * 4096);
  closeSync(fd);
  const { server, logs } = serverOn(dir, { datastore_check_timeout: 0 }); // the start-up check off, so a call meets the damage
  await server.start();
  tt.teardown(() => server.stop());
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const res = await fetch(`http://127.0.0.1:${server.adminPort}/v1/entries?page_size=1000`, { headers: { authorization: `Bearer ${token}` } });
  const body = await res.json() as { error?: { code: string; message: string } };
  tt.equal(res.status, 500);
  tt.equal(body.error?.code, 'data_loss');
  tt.match(body.error?.message, /datastore is corrupt/);
  const ready = await fetch(`http://127.0.0.1:${server.adminPort}/ready`);
  tt.equal(ready.status, 503, 'not ready');
  tt.match(server.metrics.registry.render(), /meshid_server_datastore_corruption_total\{when="run"\} [1-9]/);
  tt.ok(logs.lines.some((l) => l['level'] === 'error' && /datastore is corrupt/.test(String(l['msg']))));
});

t.test('datastore backup is consistent while the server writes; restoring it brings everything back', async (tt) => {
  const dir = await initialised(tt, 50);
  const { server } = serverOn(dir);
  await server.start();
  let writing = true;
  let written = 0;
  const writer = (async () => {
    while (writing) {
      await server.store.createEntry({ spiffeId: SpiffeId.parse(`spiffe://example.org/ns/w/sa/w${written}`), parentId: SpiffeId.parse('spiffe://example.org/meshid/agent/x/n1'), selectors: SelectorSet.of([Selector.of('unix', `uid:${written}`)]) });
      written++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  const file = join(tempDir(tt, 'backup'), 'meshid.backup');
  const summary = await backupDatastore(ds(dir), file);
  writing = false;
  await writer;
  tt.ok(summary.entries >= 50, `the backup holds ${summary.entries} entries`);
  tt.equal(summary.installationId, (await server.store.installation())?.installationId);
  await tt.rejects(backupDatastore(ds(dir), file), { code: 'failed_precondition', message: /exists/ }, 'an existing file is not overwritten');
  await server.stop();
  removeDatastore(dir);
  copyFileSync(file, ds(dir));
  const restored = serverOn(dir);
  await restored.server.start();
  tt.equal((await restored.server.store.listEntries({ pageSize: 1000 })).items.length, summary.entries, 'the restored server has what the backup had');
  await restored.server.stop();
});
