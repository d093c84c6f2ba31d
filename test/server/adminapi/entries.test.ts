import t from 'tap';
import { auditLines, startAdminApi } from './fixtures/adminapi.js';

const parent = 'spiffe://example.org/meshid/agent/join_token/node-1';
const web = { spiffe_id: 'spiffe://example.org/ns/default/sa/web', parent_id: parent, selectors: ['k8s:ns:default', 'k8s:sa:web'] };
const sa = (name: string, ns = 'default') => ({ spiffe_id: `spiffe://example.org/ns/${ns}/sa/${name}`, parent_id: parent, selectors: [`k8s:ns:${ns}`, `k8s:sa:${name}`] });

t.test('POST /v1/entries creates an entry (201) that GET, list, PATCH and DELETE then see', async (t) => {
  const f = await startAdminApi(t, 'crud');
  const created = await f.call('POST', '/v1/entries', { ...web, x509_svid_ttl: 600, dns_names: ['web.default.svc'], hint: 'web' });
  t.equal(created.status, 201);
  t.match(created.json, { spiffe_id: web.spiffe_id, parent_id: parent, selectors: web.selectors, x509_svid_ttl: 600, dns_names: ['web.default.svc'], hint: 'web' });
  const id = created.json.id as string;
  t.equal((await f.store.getEntry(id)).spiffeId.toString(), web.spiffe_id, 'it is in the datastore');

  const got = await f.call('GET', `/v1/entries/${id}`);
  t.equal(got.status, 200);
  t.same(got.json, created.json);

  const patched = await f.call('PATCH', `/v1/entries/${id}`, { jwt_svid_ttl: 120, hint: 'web2' });
  t.equal(patched.status, 200);
  t.equal(patched.json.jwt_svid_ttl, 120);
  t.equal(patched.json.hint, 'web2');
  t.equal(patched.json.x509_svid_ttl, 600, 'fields left out keep their value');
  t.ok(patched.json.revision > created.json.revision);

  const deleted = await f.call('DELETE', `/v1/entries/${id}`);
  t.equal(deleted.status, 200);
  t.equal(deleted.json.id, id);
  const gone = await f.call('GET', `/v1/entries/${id}`);
  t.equal(gone.status, 404);
  t.equal(gone.json.error.code, 'not_found');
  t.same(auditLines(f).map((l) => [l.action, l.target, l.result]), [
    ['entry.create', id, 'ok'], ['entry.update', id, 'ok'], ['entry.delete', id, 'ok'],
  ]);
  t.equal(auditLines(f)[0]!.caller, '127.0.0.1');
});

t.test('the k8s_sa shorthand makes the ServiceAccount entry', async (t) => {
  const f = await startAdminApi(t, 'shorthand');
  const res = await f.call('POST', '/v1/entries', { k8s_sa: 'shop/cart', parent_id: parent, x509_svid_ttl: 300 });
  t.equal(res.status, 201);
  t.equal(res.json.spiffe_id, 'spiffe://example.org/ns/shop/sa/cart');
  t.same(res.json.selectors, ['k8s:ns:shop', 'k8s:sa:cart']);
  t.equal(res.json.x509_svid_ttl, 300);
  for (const [body, field] of [
    [{ k8s_sa: 'no-slash', parent_id: parent }, 'k8s_sa'],
    [{ k8s_sa: 'Bad_NS/x', parent_id: parent }, 'k8s_sa'],
    [{ k8s_sa: 'a/b/c', parent_id: parent }, 'k8s_sa'],
    [{ k8s_sa: 'a/b' }, 'parent_id'],
    [{ k8s_sa: 'a/b', parent_id: parent, spiffe_id: web.spiffe_id }, 'k8s_sa'],
    [{ k8s_sa: 'a/b', parent_id: 'spiffe://other.org/agent' }, 'parent_id'],
  ] as const) {
    const bad = await f.call('POST', '/v1/entries', body);
    t.equal(bad.status, 400, JSON.stringify(body));
    t.equal(bad.json.error.field, field, JSON.stringify(body));
  }
  t.equal((await f.store.listEntries()).items.length, 1);
});

t.test('bad input is 400 naming the field, and nothing is written', async (t) => {
  const f = await startAdminApi(t, 'bad');
  const cases: [unknown, string, string][] = [
    [{ ...web, spiffe_id: 'http://example.org/web' }, 'spiffe_id', 'invalid_spiffe_id'],
    [{ ...web, spiffe_id: 'spiffe://other.org/web' }, 'spiffe_id', 'invalid_spiffe_id'],
    [{ ...web, parent_id: 'spiffe://example.org/a//b' }, 'parent_id', 'invalid_spiffe_id'],
    [{ ...web, selectors: ['k8s:ns:default', 'nocolon'] }, 'selectors[1]', 'invalid_selector'],
    [{ ...web, selectors: [] }, 'selectors', 'invalid_argument'],
    [{ ...web, x509_svid_ttl: -5 }, 'x509_svid_ttl', 'invalid_argument'],
    [{ ...web, x509_svid_ttl: 10 ** 9 }, 'x509_svid_ttl', 'invalid_argument'],
    [{ ...web, jwt_svid_ttl: '60' }, 'jwt_svid_ttl', 'invalid_argument'],
    [{ ...web, dns_names: ['ok.example', 'bad..name'] }, 'dns_names[1]', 'invalid_argument'],
    [{ ...web, colour: 'blue' }, 'colour', 'invalid_argument'],
    [{ parent_id: parent, selectors: web.selectors }, 'spiffe_id', 'invalid_argument'],
  ];
  for (const [body, field, code] of cases) {
    const res = await f.call('POST', '/v1/entries', body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.same(Object.keys(res.json), ['error']);
    t.equal(res.json.error.field, field, JSON.stringify(body));
    t.equal(res.json.error.code, code);
    t.type(res.json.error.message, 'string');
  }
  t.equal((await f.store.listEntries()).items.length, 0);
  const audits = auditLines(f);
  t.equal(audits.length, cases.length, 'every refused create is audited');
  t.ok(audits.every((l) => l.result === 'error' && typeof l.error === 'string' && l.action === 'entry.create'));
  t.equal(audits[0]!.target, 'http://example.org/web', 'the target is what was asked for');

  const created = await f.call('POST', '/v1/entries', web);
  const badPatch = await f.call('PATCH', `/v1/entries/${created.json.id}`, { selectors: ['x'] });
  t.equal(badPatch.status, 400);
  t.equal(badPatch.json.error.field, 'selectors[0]');
  const badId = await f.call('GET', '/v1/entries/bad%20id');
  t.equal(badId.status, 400);
  t.equal(badId.json.error.field, 'id');
});

t.test('a duplicate entry is 409 already_exists', async (t) => {
  const f = await startAdminApi(t, 'dup');
  t.equal((await f.call('POST', '/v1/entries', web)).status, 201);
  const dup = await f.call('POST', '/v1/entries', web);
  t.equal(dup.status, 409);
  t.equal(dup.json.error.code, 'already_exists');
  t.equal(dup.json.error.field, 'spiffe_id');
  const chosen = await f.call('POST', '/v1/entries', { ...sa('api'), id: 'api-entry' });
  t.equal(chosen.json.id, 'api-entry');
  const sameId = await f.call('POST', '/v1/entries', { ...sa('other'), id: 'api-entry' });
  t.equal(sameId.status, 409);
});

t.test('batchCreate and batchDelete answer per item', async (t) => {
  const f = await startAdminApi(t, 'batch');
  const res = await f.call('POST', '/v1/entries:batchCreate', {
    entries: [sa('a'), { ...sa('b'), spiffe_id: 'bad' }, { k8s_sa: 'default/c', parent_id: parent }, { k8s_sa: 'nope', parent_id: parent }, sa('a')],
  });
  t.equal(res.status, 200);
  const codes = res.json.results.map((r: { status: { code: string } }) => r.status.code);
  t.same(codes, ['ok', 'invalid_spiffe_id', 'ok', 'invalid_argument', 'already_exists']);
  t.equal(res.json.results[1].status.field, 'spiffe_id');
  t.equal(res.json.results[3].status.field, 'k8s_sa');
  t.equal(res.json.results[2].entry.spiffe_id, 'spiffe://example.org/ns/default/sa/c');
  t.equal((await f.store.listEntries()).items.length, 2);
  const a = res.json.results[0].entry.id;
  const audits = auditLines(f);
  t.equal(audits.length, 5, 'one audit line per item');
  t.same(audits.map((l) => l.result), ['ok', 'error', 'ok', 'error', 'error']);
  t.equal(audits[0]!.target, a);

  const del = await f.call('POST', '/v1/entries:batchDelete', { ids: [a, 'missing', 'bad id'] });
  t.equal(del.status, 200);
  t.same(del.json.results.map((r: { status: { code: string } }) => r.status.code), ['ok', 'not_found', 'invalid_argument']);
  t.equal(del.json.results[0].entry.id, a);
  t.equal((await f.store.listEntries()).items.length, 1);

  for (const [path, body, field] of [
    ['/v1/entries:batchCreate', { entries: [] }, 'entries'],
    ['/v1/entries:batchCreate', { entries: 'x' }, 'entries'],
    ['/v1/entries:batchCreate', { items: [] }, 'items'],
    ['/v1/entries:batchDelete', { ids: {} }, 'ids'],
  ] as const) {
    const bad = await f.call('POST', path, body);
    t.equal(bad.status, 400, JSON.stringify(body));
    t.equal(bad.json.error.field, field);
  }
  const tooMany = await f.call('POST', '/v1/entries:batchDelete', { ids: Array.from({ length: 1001 }, (_, i) => `id-${i}`) });
  t.equal(tooMany.status, 413);
  t.equal(tooMany.json.error.field, 'ids');
});

t.test('GET /v1/entries filters by query parameters and pages', async (t) => {
  const f = await startAdminApi(t, 'list');
  const otherParent = 'spiffe://example.org/meshid/agent/join_token/node-2';
  for (const name of ['a', 'b', 'c', 'd', 'e']) t.equal((await f.call('POST', '/v1/entries', sa(name))).status, 201);
  t.equal((await f.call('POST', '/v1/entries', { ...sa('x', 'shop'), parent_id: otherParent, hint: 'hx' })).status, 201);

  const all = await f.call('GET', '/v1/entries');
  t.equal(all.json.entries.length, 6);
  t.equal(all.json.next_page_token, '');

  const byId = await f.call('GET', `/v1/entries?spiffe_id=${encodeURIComponent('spiffe://example.org/ns/default/sa/c')}`);
  t.same(byId.json.entries.map((e: { spiffe_id: string }) => e.spiffe_id), ['spiffe://example.org/ns/default/sa/c']);
  const byParent = await f.call('GET', `/v1/entries?parent_id=${encodeURIComponent(otherParent)}`);
  t.equal(byParent.json.entries.length, 1);
  const byHint = await f.call('GET', '/v1/entries?hint=hx');
  t.equal(byHint.json.entries.length, 1);
  const superset = await f.call('GET', '/v1/entries?selector=k8s:ns:default&match=superset');
  t.equal(superset.json.entries.length, 5);
  const exact = await f.call('GET', '/v1/entries?selector=k8s:ns:default&selector=k8s:sa:b');
  t.same(exact.json.entries.map((e: { spiffe_id: string }) => e.spiffe_id), ['spiffe://example.org/ns/default/sa/b'], 'match defaults to exact');
  const any = await f.call('GET', '/v1/entries?selector=k8s:sa:a&selector=k8s:sa:x&match=any');
  t.equal(any.json.entries.length, 2);

  const seen: string[] = [];
  let token = '';
  let pages = 0;
  do {
    const page = await f.call('GET', `/v1/entries?page_size=2${token ? `&page_token=${encodeURIComponent(token)}` : ''}`);
    t.equal(page.status, 200);
    t.ok(page.json.entries.length <= 2);
    seen.push(...page.json.entries.map((e: { id: string }) => e.id));
    token = page.json.next_page_token;
    pages++;
  } while (token && pages < 10);
  t.equal(pages, 3);
  t.same([...seen].sort(), all.json.entries.map((e: { id: string }) => e.id).sort(), 'pages cover every entry once');

  for (const [query, field] of [
    ['spiffe_id=not-an-id', 'spiffe_id'],
    ['selector=nocolon', 'selector[0]'],
    ['selector=k8s:a&match=most', 'match'],
    ['match=any', 'match'],
    ['page_size=-1', 'page_size'],
    ['spiffe_id=a&spiffe_id=b', 'spiffe_id'],
    ['spiffeId=x', 'spiffeId'],
  ]) {
    const bad = await f.call('GET', `/v1/entries?${query}`);
    t.equal(bad.status, 400, query);
    t.equal(bad.json.error.field, field, query);
  }
});
