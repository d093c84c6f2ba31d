import t from 'tap';
import { BundleSet, createCsr, derFromPem, generateKeyPair, parseCertificate, verifyJwtSvid, verifyX509Svid } from '../../../spiffe/index.js';
import { auditLines, startAdminApi } from './fixtures/adminapi.js';

const id = 'spiffe://example.org/ns/default/sa/web';

function csrFor(type: 'ec-p256' | 'rsa-2048' = 'ec-p256') {
  const keys = generateKeyPair(type);
  return { keys, csr: createCsr(keys.privateKey, keys.publicKey).toString('base64') };
}

t.test('POST /v1/svids/x509 signs the CSR key into an X509-SVID that verifies against the bundle', async (t) => {
  const f = await startAdminApi(t, 'x509');
  const { keys, csr } = csrFor();
  const res = await f.call('POST', '/v1/svids/x509', { spiffe_id: id, csr, ttl: 120, dns_names: ['web.default.svc'] });
  t.equal(res.status, 200);
  t.equal(res.json.spiffe_id, id);
  const chain = derFromPem(res.json.cert_chain);
  t.ok(chain.length >= 1);
  const verified = verifyX509Svid(chain, new BundleSet([f.ca.bundle()]).x509, new Date());
  t.equal(verified.spiffeId.toString(), id);
  const leaf = parseCertificate(chain[0]!);
  t.ok(leaf.spki.equals(keys.publicKey.export({ type: 'spki', format: 'der' })), 'the certificate holds the CSR key');
  t.same(leaf.dnsNames, ['web.default.svc']);
  t.equal(res.json.expires_at, Math.floor(leaf.notAfter.getTime() / 1000));
  t.ok(Math.abs(res.json.expires_at - (Date.now() / 1000 + 120)) < 5, 'the TTL asked for');
  t.same(derFromPem(res.json.bundle), f.ca.bundle().x509Authorities);
  t.equal(f.metrics.svidsSigned.get({ type: 'x509' }), 1);
  t.same(auditLines(f).map((l) => [l.action, l.target, l.result]), [['svid.mint_x509', id, 'ok']]);
});

t.test('POST /v1/svids/x509 refuses bad input naming the field', async (t) => {
  const f = await startAdminApi(t, 'x509-bad');
  const { csr } = csrFor();
  const tampered = Buffer.from(csr, 'base64');
  tampered[tampered.length - 3] ^= 0xff;
  for (const [body, field] of [
    [{ csr }, 'spiffe_id'],
    [{ spiffe_id: 'spiffe://other.org/x', csr }, 'spiffe_id'],
    [{ spiffe_id: 'spiffe://example.org', csr }, 'spiffe_id'],
    [{ spiffe_id: id }, 'csr'],
    [{ spiffe_id: id, csr: 'not base64!' }, 'csr'],
    [{ spiffe_id: id, csr: Buffer.from('junk').toString('base64') }, 'csr'],
    [{ spiffe_id: id, csr: tampered.toString('base64') }, 'csr'],
    [{ spiffe_id: id, csr, ttl: -1 }, 'ttl'],
    [{ spiffe_id: id, csr, ttl: 30 * 86400 }, 'ttl'],
    [{ spiffe_id: id, csr, dns_names: ['ok', 'no spaces'] }, 'dns_names[1]'],
    [{ spiffe_id: id, csr, key: 'x' }, 'key'],
  ] as const) {
    const res = await f.call('POST', '/v1/svids/x509', body);
    t.equal(res.status, 400, JSON.stringify(body).slice(0, 80));
    t.equal(res.json.error.field, field, JSON.stringify(body).slice(0, 80));
  }
  t.equal(f.metrics.svidsSigned.get({ type: 'x509' }), 0);
  t.ok(auditLines(f).every((l) => l.result === 'error'));
});

t.test('POST /v1/svids/jwt signs a JWT-SVID for the audience that verifies against the bundle', async (t) => {
  const f = await startAdminApi(t, 'jwt');
  const res = await f.call('POST', '/v1/svids/jwt', { spiffe_id: id, audience: ['api', 'db'], ttl: 60 });
  t.equal(res.status, 200);
  const verified = verifyJwtSvid(res.json.token, new BundleSet([f.ca.bundle()]).jwt, 'db', new Date());
  t.equal(verified.spiffeId.toString(), id);
  t.equal(res.json.expires_at, Math.floor(verified.expiresAt.getTime() / 1000));
  t.ok(Math.abs(res.json.expires_at - (Date.now() / 1000 + 60)) < 5);
  for (const [body, field] of [
    [{ spiffe_id: id }, 'audience'], [{ spiffe_id: id, audience: [] }, 'audience'], [{ spiffe_id: id, audience: ['a', ''] }, 'audience[1]'],
    [{ spiffe_id: id, audience: 'a' }, 'audience'], [{ spiffe_id: 'x', audience: ['a'] }, 'spiffe_id'], [{ spiffe_id: id, audience: ['a'], ttl: 2 * 86400 }, 'ttl'],
  ] as const) {
    const bad = await f.call('POST', '/v1/svids/jwt', body);
    t.equal(bad.status, 400, JSON.stringify(body));
    t.equal(bad.json.error.field, field);
  }
  t.same(auditLines(f).map((l) => l.result), ['ok', 'error', 'error', 'error', 'error', 'error', 'error']);
});
