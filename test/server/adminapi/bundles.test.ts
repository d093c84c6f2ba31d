import t from 'tap';
import { Bundle, derFromPem, TrustDomain } from '../../../spiffe/index.js';
import { auditLines, startAdminApi } from './fixtures/adminapi.js';

t.test('GET /v1/bundle returns the CA bundle as a SPIFFE document or PEM', async (t) => {
  const f = await startAdminApi(t, 'bundle');
  const doc = await f.call('GET', '/v1/bundle');
  t.equal(doc.status, 200);
  t.same(doc.json, f.ca.bundle().toJwks());
  const parsed = Bundle.fromJwks(TrustDomain.parse('example.org'), doc.json);
  t.equal(parsed.x509Authorities.length, f.ca.bundle().x509Authorities.length);
  t.ok(parsed.jwtAuthorities.length >= 1);
  const pem = await f.call('GET', '/v1/bundle?format=pem');
  t.equal(pem.status, 200);
  t.match(pem.headers.get('content-type'), /^application\/x-pem-file/);
  t.same(derFromPem(pem.text), f.ca.bundle().x509Authorities);
  const bad = await f.call('GET', '/v1/bundle?format=der');
  t.equal(bad.status, 400);
  t.equal(bad.json.error.field, 'format');
});

t.test('PUT /v1/bundles/{td} sets a federated bundle that GET /v1/bundles lists and DELETE removes', async (t) => {
  const own = await startAdminApi(t, 'fed-own');
  const partner = await startAdminApi(t, 'fed-partner');
  // Another CA's bundle stands in for the partner trust domain's.
  const partnerDoc = partner.ca.bundle().toJwks();
  const set = await own.call('PUT', '/v1/bundles/partner.example', partnerDoc);
  t.equal(set.status, 200);
  t.equal(set.json.trust_domain, 'partner.example');
  t.same(set.json.bundle.keys.length, (partnerDoc.keys as unknown[]).length);
  const stored = await own.store.getBundle(TrustDomain.parse('partner.example'));
  t.same(stored.document, set.json.bundle);

  const list = await own.call('GET', '/v1/bundles');
  t.same(list.json.bundles.map((b: { trust_domain: string }) => b.trust_domain), ['partner.example'], 'only federated bundles are listed');

  // An entry that federates with it keeps it from being deleted.
  const entry = await own.call('POST', '/v1/entries', {
    spiffe_id: 'spiffe://example.org/ns/a/sa/b', parent_id: 'spiffe://example.org/meshid/agent/x/y', selectors: ['k8s:sa:b'], federates_with: ['partner.example'],
  });
  t.equal(entry.status, 201);
  const inUse = await own.call('DELETE', '/v1/bundles/partner.example');
  t.equal(inUse.status, 409);
  t.equal(inUse.json.error.code, 'failed_precondition');
  t.equal((await own.call('DELETE', `/v1/entries/${entry.json.id}`)).status, 200);
  const del = await own.call('DELETE', '/v1/bundles/partner.example');
  t.equal(del.status, 200);
  t.same((await own.call('GET', '/v1/bundles')).json, { bundles: [] });
  t.equal((await own.call('DELETE', '/v1/bundles/partner.example')).status, 404);
  t.same(auditLines(own).filter((l) => String(l.action).startsWith('bundle.')).map((l) => [l.action, l.target, l.result]), [
    ['bundle.set', 'partner.example', 'ok'], ['bundle.delete', 'partner.example', 'error'],
    ['bundle.delete', 'partner.example', 'ok'], ['bundle.delete', 'partner.example', 'error'],
  ]);
});

t.test('PUT /v1/bundles refuses the own trust domain, bad names and bad documents, naming the field', async (t) => {
  const f = await startAdminApi(t, 'fed-bad');
  const good = f.ca.bundle().toJwks();
  for (const [path, body, field] of [
    ['/v1/bundles/example.org', good, 'trust_domain'],
    ['/v1/bundles/Bad_Domain', good, 'trust_domain'],
    ['/v1/bundles/partner.example', { keys: [] }, 'bundle.keys'],
    ['/v1/bundles/partner.example', { keys: [{ use: 'x509-svid', x5c: ['AAAA'] }] }, 'bundle.keys[0].x5c'],
    ['/v1/bundles/partner.example', { keys: [{ use: 'signing' }] }, 'bundle.keys[0].use'],
    ['/v1/bundles/partner.example', { nokeys: true }, 'bundle.keys'],
    ['/v1/bundles/partner.example', '"a string"', 'bundle'],
  ] as const) {
    const res = await f.call('PUT', path, body);
    t.equal(res.status, 400, `${path} ${JSON.stringify(body).slice(0, 60)}`);
    t.equal(res.json.error.field, field);
  }
  t.equal((await f.call('DELETE', '/v1/bundles/example.org')).status, 400);
  t.same(await f.store.listFederatedBundles(), []);
});
