import t from 'tap';
import * as jose from 'jose';
import { createPublicKey } from 'node:crypto';
import {
  Bundle, BundleSet, generateKeyPair, MeshidError, mintJwtSvid, pemFromDer, SpiffeId, splitConcatenatedDer, TrustDomain, verifyJwtSvid,
  verifyX509Svid,
} from '../../spiffe/index.js';
import { at, HOUR, makeLeaf, makeRoot, NOW, openssl, tempDir, writeTemp } from './fixtures.js';

const TD = TrustDomain.parse('example.org');

function fieldOf(fn: () => unknown): { field: string | undefined; message: string; code: string } {
  try { fn(); } catch (err) {
    if (err instanceof MeshidError) return { field: err.field, message: err.message, code: err.code };
    throw err;
  }
  throw new Error('no error');
}

function sampleBundle(): { bundle: Bundle; roots: ReturnType<typeof makeRoot>[]; jwt: ReturnType<typeof generateKeyPair>[] } {
  const roots = [makeRoot(), makeRoot({ keyType: 'rsa-2048' })];
  const jwt = [generateKeyPair('ec-p256'), generateKeyPair('rsa-2048')];
  const bundle = new Bundle(TD, roots.map((r) => r.der), [{ kid: 'jwt-1', publicKey: jwt[0]!.publicKey }, { kid: 'jwt-2', publicKey: jwt[1]!.publicKey }], 7, 300);
  return { bundle, roots, jwt };
}

t.test('toJwks writes one key per authority with its use, x5c for X.509 and kid for JWT, plus sequence and refresh hint', async (tt) => {
  const { bundle, roots } = sampleBundle();
  const doc = bundle.toJwks() as { keys: Array<Record<string, unknown>>; spiffe_sequence: number; spiffe_refresh_hint: number };
  tt.equal(doc.keys.length, 4);
  tt.same(doc.keys.map((k) => k['use']), ['x509-svid', 'x509-svid', 'jwt-svid', 'jwt-svid']);
  tt.same(doc.keys[0]!['x5c'], [roots[0]!.der.toString('base64')], 'x5c holds exactly the DER, standard base64');
  tt.equal(doc.keys[0]!['kty'], 'EC');
  tt.equal(doc.keys[0]!['crv'], 'P-256');
  const certJwk = createPublicKey({ key: roots[0]!.spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
  tt.equal(doc.keys[0]!['x'], certJwk.x, 'the x509-svid key parameters are the certificate key');
  tt.equal(doc.keys[1]!['kty'], 'RSA');
  tt.equal(doc.keys[2]!['kid'], 'jwt-1');
  tt.equal(doc.keys[2]!['kty'], 'EC');
  tt.equal(doc.keys[3]!['kid'], 'jwt-2');
  tt.equal(doc.keys[3]!['kty'], 'RSA');
  tt.notOk('d' in doc.keys[2]! || 'd' in doc.keys[3]!, 'no private parts');
  tt.equal(doc.spiffe_sequence, 7);
  tt.equal(doc.spiffe_refresh_hint, 300);
  const bare = new Bundle(TD, [roots[0]!.der], []).toJwks();
  tt.equal(bare['spiffe_sequence'], 0);
  tt.notOk('spiffe_refresh_hint' in bare, 'no refresh hint unless one is set');
  tt.same(JSON.parse(bundle.toJson()), doc, 'toJson is the same document');
});

t.test('fromJwks round-trips a bundle, from an object or a JSON string', async (tt) => {
  const { bundle, jwt } = sampleBundle();
  for (const input of [bundle.toJwks(), bundle.toJson()]) {
    const back = Bundle.fromJwks(TD, input);
    tt.ok(back.trustDomain.equals(TD));
    tt.equal(back.x509Authorities.length, 2);
    tt.ok(back.x509Authorities.every((d, i) => d.equals(bundle.x509Authorities[i]!)), 'same certificates');
    tt.same(back.jwtAuthorities.map((a) => a.kid), ['jwt-1', 'jwt-2']);
    tt.ok(back.jwtAuthorities[0]!.publicKey.equals(jwt[0]!.publicKey) && back.jwtAuthorities[1]!.publicKey.equals(jwt[1]!.publicKey), 'same keys');
    tt.equal(back.sequence, 7);
    tt.equal(back.refreshHint, 300);
    tt.same(back.toJwks(), bundle.toJwks(), 'and writes the same document again');
  }
});

t.test('jose reads the jwt-svid keys of toJwks as a JWKS and verifies a JWT-SVID with them', async (tt) => {
  const { bundle, jwt } = sampleBundle();
  const token = mintJwtSvid({ kid: 'jwt-2', privateKey: jwt[1]!.privateKey }, SpiffeId.parse('spiffe://example.org/w'), ['aud'], NOW, at(HOUR));
  const doc = bundle.toJwks() as { keys: jose.JWK[] };
  // jose only takes keys whose "use" is "sig"; a SPIFFE-aware reader drops the SPIFFE "use" first.
  const set = jose.createLocalJWKSet({ keys: doc.keys.filter((k) => k.use === 'jwt-svid').map(({ use: _use, ...k }) => k) });
  const r = await jose.jwtVerify(token, set, { audience: 'aud', currentDate: NOW });
  tt.equal(r.protectedHeader.kid, 'jwt-2');
});

t.test('a bad bundle document is rejected with the field that is wrong', async (tt) => {
  const { bundle } = sampleBundle();
  const good = bundle.toJwks() as { keys: Array<Record<string, unknown>> };
  const withKey = (i: number, k: unknown): Record<string, unknown> => ({ ...good, keys: good.keys.map((x, j) => (j === i ? k : x)) });
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['not JSON', '{"keys":', 'bundle', /not valid JSON/],
    ['JSON null', 'null', 'bundle.keys', /no "keys" array/],
    ['no keys', {}, 'bundle.keys', /no "keys" array/],
    ['keys not an array', { keys: {} }, 'bundle.keys', /no "keys" array/],
    ['unknown use', withKey(1, { ...good.keys[1], use: 'sig' }), 'bundle.keys[1].use', /"x509-svid" or "jwt-svid", not "sig"/],
    ['missing use', withKey(2, { ...good.keys[2], use: undefined }), 'bundle.keys[2].use', /not undefined/],
    ['x5c missing', withKey(0, { ...good.keys[0], x5c: undefined }), 'bundle.keys[0].x5c', /exactly one x5c/],
    ['x5c with two certificates', withKey(0, { ...good.keys[0], x5c: [...(good.keys[0]!['x5c'] as string[]), ...(good.keys[1]!['x5c'] as string[])] }), 'bundle.keys[0].x5c', /exactly one x5c/],
    ['x5c not a string', withKey(0, { ...good.keys[0], x5c: [42] }), 'bundle.keys[0].x5c', /exactly one x5c/],
    ['x5c not a certificate', withKey(1, { ...good.keys[1], x5c: [Buffer.from('nope').toString('base64')] }), 'bundle.keys[1].x5c', /malformed certificate/],
    ['jwt key without kid', withKey(3, { ...good.keys[3], kid: undefined }), 'bundle.keys[3].kid', /needs a kid/],
    ['jwt key with empty kid', withKey(2, { ...good.keys[2], kid: '' }), 'bundle.keys[2].kid', /needs a kid/],
    ['jwt key that is not a key', withKey(2, { use: 'jwt-svid', kid: 'x', kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }), 'bundle.keys[2]', /not a usable public key/],
    ['key that is null', withKey(1, null), 'bundle.keys[1]', /JSON object/],
    ['key that is a string', withKey(0, 'x509-svid'), 'bundle.keys[0]', /JSON object/],
  ];
  for (const [what, input, field, why] of cases) {
    const e = fieldOf(() => Bundle.fromJwks(TD, input as Record<string, unknown>));
    tt.equal(e.code, 'invalid_argument', `${what}: invalid_argument`);
    tt.equal(e.field, field, `${what}: field ${field}`);
    tt.match(e.message, why, `${what}: message`);
  }
});

t.test('PEM round-trips the X.509 authorities and openssl reads every certificate', async (tt) => {
  const { bundle } = sampleBundle();
  const pem = bundle.x509Pem();
  tt.equal(pem.match(/-----BEGIN CERTIFICATE-----/g)?.length, 2);
  const back = Bundle.fromPem(TD, pem);
  tt.ok(back.x509Authorities.every((d, i) => d.equals(bundle.x509Authorities[i]!)));
  tt.same(back.jwtAuthorities, []);
  const r = openssl(['storeutl', '-noout', '-certs', writeTemp(tempDir(tt), 'bundle.pem', pem)]);
  tt.equal(r.status, 0, r.stderr);
  tt.match(r.stdout, /Total found: 2/, 'openssl finds both certificates');
  const e1 = fieldOf(() => Bundle.fromPem(TD, 'no certificates'));
  tt.equal(e1.field, 'bundle');
  const e2 = fieldOf(() => Bundle.fromPem(TD, pem + pemFromDer(Buffer.from('junk'))));
  tt.equal(e2.field, 'bundle[2]', 'the bad certificate is named by index');
});

t.test('x509Der is the Workload API concatenation of the authorities', async (tt) => {
  const { bundle } = sampleBundle();
  const parts = splitConcatenatedDer(bundle.x509Der());
  tt.equal(parts.length, 2);
  tt.ok(parts[0]!.equals(bundle.x509Authorities[0]!) && parts[1]!.equals(bundle.x509Authorities[1]!));
});

t.test('a bundle is immutable and jwtKeys maps kid to key', async (tt) => {
  const { bundle, jwt } = sampleBundle();
  tt.ok(Object.isFrozen(bundle));
  const m = bundle.jwtKeys();
  tt.same([...m.keys()], ['jwt-1', 'jwt-2']);
  tt.ok(m.get('jwt-1')!.equals(jwt[0]!.publicKey));
});

t.test('BundleSet finds bundles by trust domain and feeds both verifiers', async (tt) => {
  const root = makeRoot();
  const jwtKey = generateKeyPair();
  const local = new Bundle(TD, [root.der], [{ kid: 'k', publicKey: jwtKey.publicKey }], 1);
  const otherRoot = makeRoot();
  const federated = new Bundle(TrustDomain.parse('other.org'), [otherRoot.der], [], 3);
  const set = new BundleSet([local, federated]);
  tt.equal(set.get(TD), local);
  tt.equal(set.get('other.org'), federated);
  tt.equal(set.get('nope.org'), undefined);
  tt.equal(set.all().length, 2);
  const leaf = makeLeaf(root, 'spiffe://example.org/w');
  tt.equal(verifyX509Svid([leaf.der], set.x509, NOW).spiffeId.toString(), 'spiffe://example.org/w', 'x509 source');
  const fedLeaf = makeLeaf(otherRoot, 'spiffe://other.org/w');
  tt.equal(verifyX509Svid([fedLeaf.der], set.x509, NOW).spiffeId.trustDomain.name, 'other.org', 'a federated leaf verifies against its own bundle');
  const crossLeaf = makeLeaf(otherRoot, 'spiffe://example.org/w');
  tt.throws(() => verifyX509Svid([crossLeaf.der], set.x509, NOW), { code: 'untrusted' }, 'a federated root cannot sign for the local trust domain');
  const token = mintJwtSvid({ kid: 'k', privateKey: jwtKey.privateKey }, SpiffeId.parse('spiffe://example.org/w'), ['a'], NOW, at(HOUR));
  tt.equal(verifyJwtSvid(token, set.jwt, 'a', NOW).kid, 'k', 'jwt source');
  const replaced = new BundleSet([local, new Bundle(TD, [otherRoot.der], [], 2)]);
  tt.equal(replaced.get(TD)!.sequence, 2, 'a later bundle of the same trust domain wins');
  tt.throws(() => verifyJwtSvid(token, replaced.jwt, 'a', NOW), { code: 'jwt_signature' }, 'and its keys are the ones used');
});
