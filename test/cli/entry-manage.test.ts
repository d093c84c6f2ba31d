import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

const parent = 'spiffe://example.org/meshid/agent/join_token/node-1';

t.test('entry show, update and delete', async (t) => {
  const f = await startAdminApi(t, 'cli-crud');
  const run = against(f);
  const created = JSON.parse((await run(['-o', 'json', 'entry', 'create', '--k8s-sa', 'shop/cart', '--parent-id', parent, '--admin'])).stdout);
  const show = await run(['entry', 'show', created.id]);
  t.equal(show.code, 0);
  t.match(show.stdout, new RegExp(`^Entry ID\\s+: ${created.id}$`, 'm'));
  t.match(show.stdout, /^Admin\s+: true$/m);
  const updated = await run(['-o', 'json', 'entry', 'update', created.id, '--jwt-svid-ttl', '2m', '--no-admin', '--hint', 'cart']);
  t.equal(updated.code, 0, updated.stderr);
  t.match(JSON.parse(updated.stdout), { jwt_svid_ttl: 120, admin: false, hint: 'cart', spiffe_id: 'spiffe://example.org/ns/shop/sa/cart' });
  t.equal((await run(['entry', 'update', created.id])).code, 2, 'an update with no field is a usage error');
  const missing = await run(['entry', 'show', 'no-such-entry']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /not found/);
  const del = await run(['entry', 'delete', created.id]);
  t.equal(del.code, 0);
  t.match(del.stdout, `deleted entry ${created.id}`);
  t.equal((await f.store.listEntries()).items.length, 0);
  const a = JSON.parse((await run(['-o', 'json', 'entry', 'create', '--k8s-sa', 'shop/a', '--parent-id', parent])).stdout);
  const several = await run(['entry', 'delete', a.id, 'missing-id']);
  t.equal(several.code, 1, 'several ids go in one batch; a missing one fails the command');
  t.match(several.stdout, `deleted entry ${a.id}`);
  t.match(several.stdout, /item 1 \(missing-id\): not_found/);
  t.equal((await f.store.listEntries()).items.length, 0);
});

t.test('entry create --data creates a spire-server style batch and reports each failed item', async (t) => {
  const f = await startAdminApi(t, 'cli-data');
  const dir = f.dir;
  const file = join(dir, 'entries.json');
  writeFileSync(file, JSON.stringify({
    entries: [
      { spiffe_id: 'spiffe://example.org/ns/a/sa/a', parent_id: parent, selectors: [{ type: 'k8s', value: 'sa:a' }], x509_svid_ttl: 600 },
      { spiffe_id: { trust_domain: 'example.org', path: '/ns/b/sa/b' }, parent_id: parent, selectors: ['k8s:sa:b'] },
    ],
  }));
  const ok = await against(f)(['entry', 'create', '--data', file]);
  t.equal(ok.code, 0, ok.stderr);
  t.same((await f.store.listEntries()).items.map((e) => e.spiffeId.toString()).sort(), ['spiffe://example.org/ns/a/sa/a', 'spiffe://example.org/ns/b/sa/b']);
  const stdin = await against(f)(['-o', 'json', 'entry', 'create', '--data', '-'],
    JSON.stringify([{ spiffe_id: 'spiffe://example.org/ns/c/sa/c', parent_id: parent, selectors: ['k8s:sa:c'] }, { spiffe_id: 'bad', parent_id: parent, selectors: ['k8s:sa:d'] }]));
  t.equal(stdin.code, 1, 'a batch with a failed item exits 1');
  const results = JSON.parse(stdin.stdout).results;
  t.same(results.map((r: { status: { code: string } }) => r.status.code), ['ok', 'invalid_spiffe_id']);
  t.match(stdin.stderr, /1 of 2 items failed/);
  const table = await against(f)(['entry', 'create', '--data', '-'], JSON.stringify({ entries: [{ spiffe_id: 'spiffe://example.org/x', parent_id: parent, selectors: ['bad'] }] }));
  t.match(table.stdout, /item 0: invalid_selector: invalid selectors\[0\] \(--selector\)/);
  t.equal((await f.store.listEntries()).items.length, 3);
  const notJson = await against(f)(['entry', 'create', '--data', '-'], '{');
  t.equal(notJson.code, 1);
  t.match(notJson.stderr, /not valid JSON/);
});
