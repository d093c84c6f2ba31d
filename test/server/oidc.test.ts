// OIDC discovery for JWT-SVIDs (server/oidc.ts) on a whole meshid-server: the
// document and keys over real HTTP, checked by an independent JOSE implementation
// (the `jose` package) as a relying party outside the mesh would.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import * as jose from 'jose';
import { FakeClock } from '../../common/clock.js';
import { JsonLogger } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { MeshidServer } from '../../server/server.js';
import { tempDir } from './adminapi/fixtures/adminapi.js';

const HOUR = 3_600_000;

async function started(t: { teardown(fn: () => unknown): void }, extra: Record<string, unknown>, clock = new FakeClock(Date.now())) {
  const dir = tempDir(t, 'oidc');
  const config = serverConfigSchema.parse({ data_dir: dir, trust_domain: 'mesh.test', bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory', ...extra });
  const server = new MeshidServer(config, { clock, logger: new JsonLogger({ write: () => {} }, 'error') });
  t.teardown(() => server.stop());
  await server.start();
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const mint = async (audience: string[]): Promise<string> => {
    const res = await fetch(`http://127.0.0.1:${server.adminPort}/v1/svids/jwt`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ spiffe_id: 'spiffe://mesh.test/ns/shop/sa/web', audience }),
    });
    if (res.status !== 200) throw new Error(`mint: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { token: string }).token;
  };
  return { server, clock, mint, base: `http://127.0.0.1:${server.oidcPort}` };
}

t.test('a relying party finds the keys through the discovery document and validates a JWT-SVID with its issuer and audience', async (t) => {
  const issuer = 'https://oidc.mesh.test';
  const { server, mint, base } = await started(t, { jwt_issuer: issuer, oidc_discovery: { bind: '127.0.0.1:0' } });
  const doc = await (await fetch(`${base}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
  t.equal(doc['issuer'], issuer, 'the issuer is jwt_issuer');
  t.same(doc['response_types_supported'], ['id_token']);
  t.same(doc['id_token_signing_alg_values_supported'], ['RS256', 'ES256', 'ES384']);
  t.equal(doc['authorization_endpoint'], '');

  const keysRes = await fetch(`${base}/keys`);
  t.equal(keysRes.headers.get('cache-control'), 'no-cache, no-store, must-revalidate');
  const jwks = await keysRes.json() as { keys: Record<string, unknown>[] };
  t.same(jwks.keys.map((k) => k['kid']).sort(), server.ca.bundle().jwtAuthorities.map((a) => a.kid).sort(), 'exactly the bundle\'s JWT keys');
  for (const k of jwks.keys) {
    t.equal(k['use'], 'sig');
    t.equal(k['alg'], 'ES256');
    t.notOk('d' in k, 'no private part');
    t.notOk('x5c' in k, 'no X.509 authorities');
  }

  const jwt = await mint(['vault', 'sts.amazonaws.com']);
  const keySet = jose.createRemoteJWKSet(new URL(`${base}/keys`));
  const { payload, protectedHeader } = await jose.jwtVerify(jwt, keySet, { issuer, audience: 'sts.amazonaws.com' });
  t.equal(payload.sub, 'spiffe://mesh.test/ns/shop/sa/web');
  t.equal(payload.iss, issuer, 'the JWT-SVID carries iss');
  t.ok(jwks.keys.some((k) => k['kid'] === protectedHeader.kid), 'signed by a key the JWKS lists');
  await t.rejects(jose.jwtVerify(jwt, keySet, { issuer: 'https://someone.else', audience: 'vault' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'another issuer is refused');
  await t.rejects(jose.jwtVerify(jwt, keySet, { issuer, audience: 'not-mine' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'another audience is refused');
});

t.test('the keys follow JWT key rotation: a prepared key is published before it signs, and the new active key verifies', async (t) => {
  const { server, clock, mint, base } = await started(t, { jwt_issuer: 'https://oidc.mesh.test', ca_ttl: '24h', oidc_discovery: { bind: '127.0.0.1:0' } });
  const kids = async (): Promise<string[]> => ((await (await fetch(`${base}/keys`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
  const first = await kids();
  t.equal(first.length, 1);
  clock.advance(13 * HOUR);
  await server.ca.rotate();
  const withPrepared = await kids();
  t.equal(withPrepared.length, 2, 'the prepared key is published');
  t.ok(withPrepared.includes(first[0]!));
  clock.advance(8 * HOUR);
  await server.ca.rotate();
  const jwt = await mint(['vault']);
  const kid = jose.decodeProtectedHeader(jwt).kid!;
  t.not(kid, first[0], 'signed by the new key');
  t.ok((await kids()).includes(kid));
  const { payload } = await jose.jwtVerify(jwt, jose.createRemoteJWKSet(new URL(`${base}/keys`)), { issuer: 'https://oidc.mesh.test', audience: 'vault' });
  t.equal(payload.sub, 'spiffe://mesh.test/ns/shop/sa/web');
});

t.test('without jwt_issuer the document names the requested host; a host outside domains gets 400; only GET and HEAD; other paths 404', async (t) => {
  const { base, mint } = await started(t, { oidc_discovery: { bind: '127.0.0.1:0', domains: ['oidc.mesh.test'], allow_insecure_scheme: true } });
  // node:http, not fetch: fetch does not let a caller set Host
  const get = (path: string, host: string, method = 'GET') => new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method, headers: { host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
  const doc = JSON.parse((await get('/.well-known/openid-configuration', 'oidc.mesh.test:8443')).body) as Record<string, unknown>;
  t.equal(doc['issuer'], 'http://oidc.mesh.test:8443');
  t.equal(doc['jwks_uri'], 'http://oidc.mesh.test:8443/keys');
  const refused = await get('/.well-known/openid-configuration', 'evil.example');
  t.equal(refused.status, 400);
  t.equal((JSON.parse(refused.body) as { error: string }).error, 'domain "evil.example" is not allowed');
  t.equal((await get('/keys', 'evil.example')).status, 400, 'the keys too');
  const post = await get('/keys', 'oidc.mesh.test', 'POST');
  t.equal(post.status, 405);
  t.equal(post.headers['allow'], 'GET, HEAD');
  t.equal((await get('/keys', 'oidc.mesh.test', 'HEAD')).status, 200);
  t.equal((await get('/v1/entries', 'oidc.mesh.test')).status, 404, 'nothing of the admin API');
  t.notOk('iss' in jose.decodeJwt(await mint(['x'])), 'no iss without jwt_issuer');
});

t.test('bad OIDC settings are refused by name', async (t) => {
  const bad = (extra: Record<string, unknown>) => serverConfigSchema.safeParse({ data_dir: '/tmp/x', ...extra });
  t.match(JSON.stringify(bad({ jwt_issuer: 'oidc.mesh.test' }).error?.issues), /jwt_issuer/);
  t.match(JSON.stringify(bad({ jwt_issuer: 'https://oidc.mesh.test/?a=1' }).error?.issues), /without query/);
  t.match(JSON.stringify(bad({ oidc_discovery: { bind: 'nope' } }).error?.issues), /oidc_discovery.*bind|bind.*HOST:PORT/);
  t.match(JSON.stringify(bad({ oidc_discovery: { bind: '0.0.0.0:443', tls: true } }).error?.issues), /tls/);
});
