import t, { type Test } from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

const parent = 'spiffe://example.org/meshid/agent/join_token/node-1';

/** The column where each header starts, found again in every row: the table is aligned. */
function assertAligned(t: Test, table: string, headers: string[]): string[] {
  const lines = table.trimEnd().split('\n');
  const starts = headers.map((h) => lines[0]!.indexOf(h));
  t.ok(starts.every((s, i) => s >= 0 && (i === 0 || s > starts[i - 1]!)), 'every header, in order');
  for (const line of lines.slice(1)) {
    for (const s of starts.slice(1)) t.equal(line[s - 1], ' ', `a column starts at ${s} in "${line}"`);
  }
  return lines;
}

t.test('entry create then entry list shows the entry, as an aligned table and as -o json', async (t) => {
  const f = await startAdminApi(t, 'cli-entry');
  const run = against(f);
  const created = await run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/ns/default/sa/web', '--parent-id', parent,
    '--selector', 'k8s:ns:default', '--selector', 'k8s:sa:web', '--x509-svid-ttl', '1h', '--dns', 'web.default.svc', '--hint', 'web']);
  t.equal(created.code, 0, created.stderr);
  t.match(created.stdout, /^Entry ID\s+: \S+$/m);
  t.match(created.stdout, /^SPIFFE ID\s+: spiffe:\/\/example\.org\/ns\/default\/sa\/web$/m);
  t.match(created.stdout, /^X509-SVID TTL\s+: 1h$/m);
  t.match(created.stdout, /^Selectors\s+: k8s:ns:default, k8s:sa:web$/m);
  const [stored] = (await f.store.listEntries()).items;
  t.equal(stored!.x509SvidTtl, 3600);
  t.same(stored!.dnsNames, ['web.default.svc']);
  t.equal(stored!.hint, 'web');

  t.equal((await run(['entry', 'create', '--k8s-sa', 'default/api', '--parent-id', parent])).code, 0);
  const list = await run(['entry', 'list']);
  t.equal(list.code, 0, list.stderr);
  const lines = assertAligned(t, list.stdout, ['ENTRY ID', 'SPIFFE ID', 'PARENT ID', 'SELECTORS', 'X509 TTL', 'JWT TTL']);
  t.equal(lines.length, 3);
  t.ok(lines.some((l) => l.startsWith(stored!.id) && l.includes('spiffe://example.org/ns/default/sa/web') && l.includes('k8s:ns:default,k8s:sa:web')));

  for (const args of [['-o', 'json', 'entry', 'list'], ['entry', 'list', '-o', 'json']]) {
    const json = await run(args);
    t.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout);
    t.equal(doc.entries.length, 2, args.join(' '));
    t.equal(doc.next_page_token, '');
    t.ok(doc.entries.some((e: { id: string; x509_svid_ttl: number }) => e.id === stored!.id && e.x509_svid_ttl === 3600));
  }
  const filtered = await run(['-o', 'json', 'entry', 'list', '--selector', 'k8s:sa:api', '--match', 'superset']);
  t.same(JSON.parse(filtered.stdout).entries.map((e: { spiffe_id: string }) => e.spiffe_id), ['spiffe://example.org/ns/default/sa/api']);
  const page = await run(['entry', 'list', '--page-size', '1']);
  t.match(page.stdout, /next page: --page-token \S+/);
});

t.test('--k8s-sa default/web makes spiffe://<td>/ns/default/sa/web with the k8s selectors', async (t) => {
  const f = await startAdminApi(t, 'cli-k8s');
  const res = await against(f)(['-o', 'json', 'entry', 'create', '--k8s-sa', 'default/web', '--parent-id', parent]);
  t.equal(res.code, 0, res.stderr);
  const e = JSON.parse(res.stdout);
  t.equal(e.spiffe_id, 'spiffe://example.org/ns/default/sa/web');
  t.same(e.selectors, ['k8s:ns:default', 'k8s:sa:web']);
  t.same((await f.store.getEntry(e.id)).selectors.toStrings(), ['k8s:ns:default', 'k8s:sa:web']);
});

t.test('bad input exits 1 naming the field and creates nothing; a missing --parent-id exits 2', async (t) => {
  const f = await startAdminApi(t, 'cli-bad');
  const run = against(f);
  const badId = await run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/ns/Bad Name', '--parent-id', parent, '--selector', 'k8s:ns:default']);
  t.equal(badId.code, 1);
  t.match(badId.stderr, /^meshid: invalid spiffe_id \(--spiffe-id\): /);
  t.equal(badId.stdout, '');
  const badSelector = await run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/web', '--parent-id', parent, '--selector', 'k8s:ns:a', '--selector', 'nocolon']);
  t.equal(badSelector.code, 1);
  t.match(badSelector.stderr, /invalid selectors\[1\] \(--selector\)/);
  const requestsBefore = f.metrics.adminRequests.get({ method: 'POST', route: '/v1/entries', status: 400 });
  const badTtl = await run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/web', '--parent-id', parent, '--selector', 'k8s:ns:a', '--x509-svid-ttl', 'soon']);
  t.equal(badTtl.code, 1);
  t.match(badTtl.stderr, /invalid x509_svid_ttl \(--x509-svid-ttl\)/);
  t.equal(f.metrics.adminRequests.get({ method: 'POST', route: '/v1/entries', status: 400 }), requestsBefore, 'a bad flag is refused before any request');
  const badSa = await run(['entry', 'create', '--k8s-sa', 'nonamespace', '--parent-id', parent]);
  t.equal(badSa.code, 1);
  t.match(badSa.stderr, /k8s_sa \(--k8s-sa\)/);
  t.equal((await f.store.listEntries()).items.length, 0, 'nothing was created');

  const noParent = await run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/web', '--selector', 'k8s:ns:a']);
  t.equal(noParent.code, 2);
  t.match(noParent.stderr, /--parent-id is required/);
});
