import t from 'tap';
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import {
  DEFAULT_KEY_TYPE, generateKeyPair, pkcs8Der, privateKeyFromPkcs8, privateKeyPem, publicKeyFromSpki, SIGNATURE_OIDS, signatureAlgorithmFor,
  spkiDer, type KeyType,
} from '../../spiffe/index.js';
import { decodeOid, readWhole, children, TAG } from '../../spiffe/der.js';

const algOid = (algorithmIdentifier: Buffer): string => decodeOid(children(readWhole(algorithmIdentifier, TAG.SEQUENCE).content)[0]!.content);

t.test('generateKeyPair makes each supported key type, P-256 by default', async (tt) => {
  tt.equal(DEFAULT_KEY_TYPE, 'ec-p256');
  const want: Record<KeyType, [string, string | number]> = {
    'ec-p256': ['ec', 'prime256v1'], 'ec-p384': ['ec', 'secp384r1'], 'rsa-2048': ['rsa', 2048], 'rsa-4096': ['rsa', 4096],
  };
  for (const [type, [kty, detail]] of Object.entries(want) as Array<[KeyType, [string, string | number]]>) {
    const k = generateKeyPair(type);
    tt.equal(k.privateKey.asymmetricKeyType, kty, `${type} type`);
    tt.equal(kty === 'ec' ? k.privateKey.asymmetricKeyDetails?.namedCurve : k.privateKey.asymmetricKeyDetails?.modulusLength, detail, `${type} size`);
    tt.equal(k.privateKey.type, 'private');
    tt.equal(k.publicKey.type, 'public');
  }
  tt.equal(generateKeyPair().privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

t.test('signatureAlgorithmFor maps P-256 to ES256, P-384 to ES384 and RSA to RS256', async (tt) => {
  const p256 = signatureAlgorithmFor(generateKeyPair('ec-p256').privateKey);
  tt.equal(p256.jwsAlg, 'ES256'); tt.equal(p256.hash, 'sha256'); tt.equal(algOid(p256.algorithmIdentifier), '1.2.840.10045.4.3.2');
  tt.equal(p256.algorithmIdentifier.toString('hex'), '300a06082a8648ce3d040302', 'ECDSA AlgorithmIdentifier has no parameters (RFC 5758)');
  const p384 = signatureAlgorithmFor(generateKeyPair('ec-p384').publicKey);
  tt.equal(p384.jwsAlg, 'ES384'); tt.equal(p384.hash, 'sha384'); tt.equal(algOid(p384.algorithmIdentifier), '1.2.840.10045.4.3.3');
  const rsa = signatureAlgorithmFor(generateKeyPair('rsa-2048').privateKey);
  tt.equal(rsa.jwsAlg, 'RS256'); tt.equal(rsa.hash, 'sha256'); tt.equal(algOid(rsa.algorithmIdentifier), '1.2.840.113549.1.1.11');
  tt.equal(rsa.algorithmIdentifier.toString('hex'), '300d06092a864886f70d01010b0500', 'RSA AlgorithmIdentifier carries NULL parameters (RFC 4055)');
});

t.test('signatureAlgorithmFor refuses keys the core does not sign with', async (tt) => {
  tt.throws(() => signatureAlgorithmFor(generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey), { code: 'invalid_argument', message: /unsupported EC curve secp521r1/ });
  tt.throws(() => signatureAlgorithmFor(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey), { message: /unsupported EC curve/ });
  tt.throws(() => signatureAlgorithmFor(generateKeyPairSync('ed25519').privateKey), { message: /unsupported key type ed25519/ });
  tt.throws(() => signatureAlgorithmFor(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), { message: /RSA key of 1024 bits is too small/ });
});

t.test('publicKeyFromSpki imports EC keys (fast path) and RSA keys to the same key node:crypto reads', async (tt) => {
  for (const type of ['ec-p256', 'ec-p384', 'rsa-2048'] as const) {
    const k = generateKeyPair(type);
    const spki = spkiDer(k.publicKey);
    const imported = publicKeyFromSpki(spki);
    tt.ok(spkiDer(imported).equals(spki), `${type}: re-exports to the same SPKI`);
    tt.ok(imported.equals(createPublicKey({ key: spki, format: 'der', type: 'spki' })), `${type}: equals node's own import`);
    const sig = sign(type.startsWith('rsa') ? 'sha256' : 'sha256', Buffer.from('x'), k.privateKey);
    tt.ok(verify('sha256', Buffer.from('x'), imported, sig), `${type}: verifies a signature of its private key`);
  }
});

t.test('publicKeyFromSpki rejects an EC point that is not on the curve', async (tt) => {
  for (const type of ['ec-p256', 'ec-p384'] as const) {
    const spki = Buffer.from(spkiDer(generateKeyPair(type).publicKey));
    spki[spki.length - 1] ^= 0x01;
    tt.throws(() => publicKeyFromSpki(spki), Error, `${type}: off-curve point`);
  }
  tt.throws(() => publicKeyFromSpki(Buffer.from('3000', 'hex')), Error, 'an empty SEQUENCE');
});

t.test('a compressed EC point is not taken by the fast path but still imports', async (tt) => {
  const k = generateKeyPair('ec-p256');
  const jwk = k.publicKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  const prefix = Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex');
  const compressed = Buffer.concat([prefix, Buffer.from([(y[31]! & 1) ? 0x03 : 0x02]), x]);
  tt.ok(publicKeyFromSpki(compressed).equals(k.publicKey));
});

t.test('PKCS#8 export and import round-trip a private key', async (tt) => {
  for (const type of ['ec-p256', 'ec-p384', 'rsa-2048'] as const) {
    const k = generateKeyPair(type);
    const back = privateKeyFromPkcs8(pkcs8Der(k.privateKey));
    tt.ok(back.equals(k.privateKey), `${type}`);
    tt.match(privateKeyPem(k.privateKey), /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/);
  }
});

t.test('SIGNATURE_OIDS lists ECDSA and RSA PKCS#1 v1.5 with SHA-2 only', async (tt) => {
  tt.same(Object.keys(SIGNATURE_OIDS).sort(), [
    '1.2.840.10045.4.3.2', '1.2.840.10045.4.3.3', '1.2.840.10045.4.3.4', '1.2.840.113549.1.1.11', '1.2.840.113549.1.1.12', '1.2.840.113549.1.1.13',
  ]);
  tt.equal(SIGNATURE_OIDS['1.2.840.113549.1.1.5'], undefined, 'sha1WithRSAEncryption is not accepted');
  tt.equal(SIGNATURE_OIDS['1.2.840.10045.4.1'], undefined, 'ecdsa-with-SHA1 is not accepted');
  tt.same(SIGNATURE_OIDS['1.2.840.10045.4.3.3'], { hash: 'sha384', family: 'ec' });
  tt.same(SIGNATURE_OIDS['1.2.840.113549.1.1.11'], { hash: 'sha256', family: 'rsa' });
});
