import t, { type Test } from 'tap';
import { createHmac, sign as cryptoSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import {
  generateKeyPair, MAX_JWT_BYTES, MeshidError, mintJwtSvid, peekJwt, SpiffeId, spkiDer, verifyJwtSvid, type JwtBundleSource, type KeyPair, type KeyType,
} from '../../spiffe/index.js';

const NOW = new Date(Date.UTC(2030, 0, 15, 12, 0, 0));
const NOW_S = Math.floor(NOW.getTime() / 1000);
const ID = SpiffeId.parse('spiffe://example.org/ns/default/sa/web');
const AUD = 'spiffe://example.org/ns/default/sa/db';
const later = (s: number): Date => new Date(NOW.getTime() + s * 1000);

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Signs any header and claims with `key`, bypassing mintJwtSvid, so a test can produce tokens the core would never mint. */
function signRaw(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject, hash = 'sha256'): string {
  const input = `${b64(header)}.${b64(claims)}`;
  const sig = cryptoSign(hash, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

const goodClaims = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ sub: ID.toString(), aud: [AUD], exp: NOW_S + 300, iat: NOW_S, ...over });

function bundle(kid: string, key: KeyObject, td = 'example.org'): JwtBundleSource {
  return (d) => (d.name === td ? new Map([[kid, key]]) : undefined);
}

function jwtError(fn: () => unknown): MeshidError {
  try { fn(); } catch (err) { if (err instanceof MeshidError) return err; throw err; }
  throw new Error('the token was accepted');
}

function rejects(tt: Test, fn: () => unknown, code: string, why: RegExp, what: string): void {
  const err = jwtError(fn);
  tt.equal(err.code, code, `${what}: ${code}`);
  tt.match(err.message, why, `${what}: message`);
}

const keysByAlg: Array<[string, KeyType]> = [['ES256', 'ec-p256'], ['ES384', 'ec-p384'], ['RS256', 'rsa-2048']];

for (const [alg, type] of keysByAlg) {
  t.test(`a ${alg} JWT-SVID minted by the core verifies with the core and with jose`, async (tt) => {
    const k = generateKeyPair(type);
    const token = mintJwtSvid({ kid: 'k1', privateKey: k.privateKey }, ID, [AUD, 'other'], NOW, later(300));
    const { header } = peekJwt(token);
    tt.same(header, { alg, kid: 'k1', typ: 'JWT' });
    const v = verifyJwtSvid(token, bundle('k1', k.publicKey), AUD, NOW);
    tt.ok(v.spiffeId.equals(ID));
    tt.same(v.claims.aud, [AUD, 'other']);
    tt.equal(v.claims.iat, NOW_S);
    tt.equal(v.expiresAt.getTime(), later(300).getTime());
    tt.equal(v.kid, 'k1');
    tt.equal(v.alg, alg);
    const j = await jose.jwtVerify(token, k.publicKey, { audience: AUD, currentDate: NOW, algorithms: [alg] });
    tt.equal(j.payload.sub, ID.toString(), 'jose: sub');
    tt.same(j.payload.aud, [AUD, 'other'], 'jose: aud');
    tt.equal(j.payload.exp, NOW_S + 300, 'jose: exp');
    tt.equal(j.protectedHeader.kid, 'k1', 'jose: kid');
    await tt.rejects(jose.jwtVerify(token, k.publicKey, { audience: AUD, currentDate: later(301) }), { code: 'ERR_JWT_EXPIRED' }, 'jose agrees on expiry (the check is live)');
  });
}

t.test('tokens signed by jose (ES256, ES384, RS256, PS256) verify with the core', async (tt) => {
  const cases: Array<[string, KeyObject, KeyObject]> = [];
  for (const [alg, type] of keysByAlg) { const k = generateKeyPair(type); cases.push([alg, k.privateKey, k.publicKey]); }
  const rsa = generateKeyPair('rsa-2048');
  cases.push(['PS256', rsa.privateKey, rsa.publicKey]);
  for (const [alg, priv, pub] of cases) {
    const token = await new jose.SignJWT({ sub: ID.toString(), aud: AUD })
      .setProtectedHeader({ alg, kid: 'j' }).setIssuedAt(NOW_S).setExpirationTime(NOW_S + 60).sign(priv);
    const v = verifyJwtSvid(token, bundle('j', pub), AUD, NOW);
    tt.equal(v.alg, alg, `${alg} verifies`);
    tt.same(v.claims.aud, [AUD], `${alg}: a string aud reads as a one-element list`);
  }
});

t.test('audience may be a string or an array, and must contain the expected audience', async (tt) => {
  const k = generateKeyPair();
  const pub = bundle('k', k.publicKey);
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: AUD }), k.privateKey), pub, AUD, NOW), 'string aud');
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: ['x', AUD, 'y'] }), k.privateKey), pub, AUD, NOW), 'array aud');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: ['x'] }), k.privateKey), pub, AUD, NOW), 'jwt_audience', /is not among \["x"\]/, 'wrong audience in an array');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: 'x' }), k.privateKey), pub, AUD, NOW), 'jwt_audience', /is not among/, 'wrong audience as a string');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: [] }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /no aud/, 'empty aud');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: undefined }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /no aud/, 'missing aud');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ aud: [AUD, 7] }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /no aud/, 'non-string in aud');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims(), k.privateKey), pub, '', NOW), 'invalid_argument', /audience is required/, 'no expected audience');
});

t.test('alg "none" is rejected', async (tt) => {
  const k = generateKeyPair();
  const token = `${b64({ alg: 'none', kid: 'k' })}.${b64(goodClaims())}.`;
  rejects(tt, () => verifyJwtSvid(token, bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /algorithm none is not allowed/, 'none');
});

t.test('an HS256 token forged with the public key as HMAC secret is rejected', async (tt) => {
  const k = generateKeyPair();
  const input = `${b64({ alg: 'HS256', kid: 'k', typ: 'JWT' })}.${b64(goodClaims())}`;
  const mac = createHmac('sha256', spkiDer(k.publicKey)).update(input).digest('base64url');
  rejects(tt, () => verifyJwtSvid(`${input}.${mac}`, bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /HS256 is not allowed/, 'HS256');
  const input384 = `${b64({ alg: 'HS384', kid: 'k' })}.${b64(goodClaims())}`;
  rejects(tt, () => verifyJwtSvid(`${input384}.${createHmac('sha384', 'x').update(input384).digest('base64url')}`, bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /HS384 is not allowed/, 'HS384');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'EdDSA', kid: 'k' }, goodClaims(), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /unsupported algorithm EdDSA/, 'EdDSA');
  rejects(tt, () => verifyJwtSvid(signRaw({ kid: 'k' }, goodClaims(), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /no alg/, 'no alg');
});

t.test('a token without a kid, or with a kid the bundle does not hold, is rejected', async (tt) => {
  const k = generateKeyPair();
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256' }, goodClaims(), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /no kid/, 'missing kid');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: '' }, goodClaims(), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /no kid/, 'empty kid');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'other' }, goodClaims(), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'jwt_signature', /kid "other" is not in the bundle of "example.org"/, 'unknown kid');
});

t.test('the bundle is chosen by the trust domain of sub', async (tt) => {
  const k = generateKeyPair();
  const token = signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ sub: 'spiffe://other.org/x' }), k.privateKey);
  rejects(tt, () => verifyJwtSvid(token, bundle('k', k.publicKey, 'example.org'), AUD, NOW), 'untrusted', /no JWT bundle for trust domain "other.org"/, 'no bundle for the sub trust domain');
  tt.ok(verifyJwtSvid(token, bundle('k', k.publicKey, 'other.org'), AUD, NOW));
});

t.test('a token with a changed signature is rejected', async (tt) => {
  for (const [, type] of keysByAlg) {
    const k = generateKeyPair(type);
    const token = mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [AUD], NOW, later(60));
    const [h, c, s] = token.split('.') as [string, string, string];
    const sig = Buffer.from(s, 'base64url');
    sig[5]! ^= 0x01;
    rejects(tt, () => verifyJwtSvid(`${h}.${c}.${sig.toString('base64url')}`, bundle('k', k.publicKey), AUD, NOW), 'jwt_signature', /signature does not verify/, `${type}: flipped signature bit`);
    const other = generateKeyPair(type);
    rejects(tt, () => verifyJwtSvid(token, bundle('k', other.publicKey), AUD, NOW), 'jwt_signature', /signature does not verify/, `${type}: another key`);
    const claims = b64({ ...peekJwt(token).claims, sub: 'spiffe://example.org/admin' });
    rejects(tt, () => verifyJwtSvid(`${h}.${claims}.${s}`, bundle('k', k.publicKey), AUD, NOW), 'jwt_signature', /does not verify/, `${type}: changed claims`);
  }
});

t.test('a signature part that is not canonical base64url is rejected', async (tt) => {
  const k = generateKeyPair();
  const token = mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [AUD], NOW, later(60));
  const pub = bundle('k', k.publicKey);
  tt.ok(verifyJwtSvid(token, pub, AUD, NOW), 'the original verifies (control)');
  rejects(tt, () => verifyJwtSvid(token + '$', pub, AUD, NOW), 'jwt_signature', /base64url/, 'a stray character');
  rejects(tt, () => verifyJwtSvid(token + '=', pub, AUD, NOW), 'jwt_signature', /base64url/, 'padding');
  // 64 signature bytes are 86 characters; the last one carries 4 unused bits that must be zero.
  const last = token[token.length - 1]!;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const twin = alphabet[alphabet.indexOf(last) ^ 0x01]!;
  rejects(tt, () => verifyJwtSvid(token.slice(0, -1) + twin, pub, AUD, NOW), 'jwt_signature', /base64url/, 'non-zero unused bits in the last character');
});

t.test('an expired token is rejected, and exp equal to now counts as expired', async (tt) => {
  const k = generateKeyPair();
  const token = mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [AUD], NOW, later(60));
  tt.ok(verifyJwtSvid(token, bundle('k', k.publicKey), AUD, later(59)));
  rejects(tt, () => verifyJwtSvid(token, bundle('k', k.publicKey), AUD, later(60)), 'jwt_expired', /token expired at/, 'exp == now');
  rejects(tt, () => verifyJwtSvid(token, bundle('k', k.publicKey), AUD, later(3600)), 'jwt_expired', /token expired at/, 'long after');
});

t.test('a token without exp is rejected', async (tt) => {
  const k = generateKeyPair();
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ exp: undefined }), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /no exp/, 'missing exp');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ exp: String(NOW_S + 60) }), k.privateKey), bundle('k', k.publicKey), AUD, NOW), 'invalid_jwt', /no exp/, 'exp as a string');
});

t.test('iat or nbf in the future is rejected, with one second of leeway', async (tt) => {
  const k = generateKeyPair();
  const pub = bundle('k', k.publicKey);
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ iat: NOW_S + 1 }), k.privateKey), pub, AUD, NOW), 'iat one second ahead');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ iat: NOW_S + 30 }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /iat is in the future/, 'iat ahead');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ iat: 'soon' }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /iat/, 'iat not a number');
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ iat: undefined }), k.privateKey), pub, AUD, NOW), 'iat is optional');
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ nbf: NOW_S }), k.privateKey), pub, AUD, NOW), 'nbf now');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ nbf: NOW_S + 30 }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /nbf in the future/, 'nbf ahead');
});

t.test('sub must be a SPIFFE ID', async (tt) => {
  const k = generateKeyPair();
  const pub = bundle('k', k.publicKey);
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ sub: 'web' }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /sub is not a SPIFFE ID: scheme/, 'plain name');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ sub: 'spiffe://example.org/a/../b' }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /sub is not a SPIFFE ID/, 'dot segment');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims({ sub: undefined }), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /no sub/, 'missing sub');
});

t.test('malformed tokens are rejected', async (tt) => {
  const k = generateKeyPair();
  const pub = bundle('k', k.publicKey);
  const good = mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [AUD], NOW, later(60));
  const [h, c] = good.split('.') as [string, string, string];
  rejects(tt, () => verifyJwtSvid(`${h}.${c}`, pub, AUD, NOW), 'invalid_jwt', /three dot-separated parts/, 'two parts');
  rejects(tt, () => verifyJwtSvid(`${good}.x`, pub, AUD, NOW), 'invalid_jwt', /three dot-separated parts/, 'four parts');
  rejects(tt, () => verifyJwtSvid(`${b64('not json')}.${c}.AA`, pub, AUD, NOW), 'invalid_jwt', /header is not base64url JSON/, 'non-JSON header');
  rejects(tt, () => verifyJwtSvid(`${h}.${b64('{"sub":')}.AA`, pub, AUD, NOW), 'invalid_jwt', /claims is not base64url JSON/, 'truncated JSON claims');
  rejects(tt, () => verifyJwtSvid(`${h}.${b64([1, 2])}.AA`, pub, AUD, NOW), 'invalid_jwt', /claims is not a JSON object/, 'claims an array');
  rejects(tt, () => verifyJwtSvid(`${b64('null')}.${c}.AA`, pub, AUD, NOW), 'invalid_jwt', /header is not a JSON object/, 'header null');
  rejects(tt, () => verifyJwtSvid('', pub, AUD, NOW), 'invalid_jwt', /empty/, 'empty');
  rejects(tt, () => verifyJwtSvid('a'.repeat(MAX_JWT_BYTES + 1), pub, AUD, NOW), 'invalid_jwt', /longer than 16384 bytes/, 'oversized');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k', typ: 'at+jwt' }, goodClaims(), k.privateKey), pub, AUD, NOW), 'invalid_jwt', /typ at\+jwt is not JWT or JOSE/, 'typ at+jwt');
  tt.ok(verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k', typ: 'JOSE' }, goodClaims(), k.privateKey), pub, AUD, NOW), 'typ JOSE is fine');
});

t.test('an algorithm that does not fit the key of the kid is rejected', async (tt) => {
  const p256 = generateKeyPair('ec-p256');
  const p384 = generateKeyPair('ec-p384');
  const rsa = generateKeyPair('rsa-2048');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES384', kid: 'k' }, goodClaims(), p256.privateKey, 'sha384'), bundle('k', p256.publicKey), AUD, NOW), 'jwt_signature', /ES384 does not fit the key of kid "k"/, 'ES384 on P-256');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims(), p384.privateKey), bundle('k', p384.publicKey), AUD, NOW), 'jwt_signature', /ES256 does not fit/, 'ES256 on P-384');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'RS256', kid: 'k' }, goodClaims(), p256.privateKey), bundle('k', p256.publicKey), AUD, NOW), 'jwt_signature', /RS256 does not fit/, 'RS256 on EC');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims(), p256.privateKey), bundle('k', rsa.publicKey), AUD, NOW), 'jwt_signature', /ES256 does not fit/, 'ES256 on RSA');
  const ed = generateKeyPairSync('ed25519');
  rejects(tt, () => verifyJwtSvid(signRaw({ alg: 'ES256', kid: 'k' }, goodClaims(), p256.privateKey), bundle('k', ed.publicKey), AUD, NOW), 'jwt_signature', /does not fit/, 'ES256 on Ed25519');
});

t.test('mintJwtSvid needs an audience and keeps its own claims over extras', async (tt) => {
  const k: KeyPair = generateKeyPair();
  tt.throws(() => mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [], NOW, later(60)), { code: 'invalid_argument', field: 'audience' });
  const token = mintJwtSvid({ kid: 'k', privateKey: k.privateKey }, ID, [AUD], NOW, later(60), { sub: 'spiffe://evil/x', aud: ['evil'], exp: 1e12, team: 'payments' });
  const { claims } = peekJwt(token);
  tt.equal(claims['sub'], ID.toString());
  tt.same(claims['aud'], [AUD]);
  tt.equal(claims['exp'], NOW_S + 60);
  tt.equal(claims['team'], 'payments', 'other extra claims are kept');
  tt.equal(verifyJwtSvid(token, bundle('k', k.publicKey), AUD, NOW).claims['team'], 'payments');
  tt.throws(() => mintJwtSvid({ kid: 'k', privateKey: generateKeyPairSync('ed25519').privateKey }, ID, [AUD], NOW, later(60)), { code: 'invalid_argument' });
});

t.test('peekJwt decodes without checking', async (tt) => {
  const k = generateKeyPair();
  const { header, claims } = peekJwt(signRaw({ alg: 'none', kid: 'z' }, { anything: 1 }, k.privateKey));
  tt.same(header, { alg: 'none', kid: 'z' });
  tt.same(claims, { anything: 1 });
  tt.throws(() => peekJwt('a.b'), { code: 'invalid_jwt' });
});
