import { createPrivateKey, createPublicKey, generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto';
import { oid, seq, tlv, TAG } from './der.js';
import { InvalidArgument } from './errors.js';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-4096';
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

export interface KeyPair { privateKey: KeyObject; publicKey: KeyObject; type: KeyType }

// Node 20 supports JWK as a key-generation output; @types/node 20 does not say so.
const JWK_OUT = { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } } as unknown as { publicKeyEncoding: { type: 'spki'; format: 'der' }; privateKeyEncoding: { type: 'pkcs8'; format: 'der' } };

function generateJwk(type: KeyType): JsonWebKey {
  const out = (): JsonWebKey => {
    switch (type) {
      case 'ec-p256': return generateKeyPairSync('ec', { namedCurve: 'prime256v1', ...JWK_OUT }).privateKey as unknown as JsonWebKey;
      case 'ec-p384': return generateKeyPairSync('ec', { namedCurve: 'secp384r1', ...JWK_OUT }).privateKey as unknown as JsonWebKey;
      case 'rsa-2048': return generateKeyPairSync('rsa', { modulusLength: 2048, ...JWK_OUT }).privateKey as unknown as JsonWebKey;
      case 'rsa-4096': return generateKeyPairSync('rsa', { modulusLength: 4096, ...JWK_OUT }).privateKey as unknown as JsonWebKey;
    }
  };
  const jwk = out();
  if (typeof jwk !== 'object' || jwk === null || Buffer.isBuffer(jwk)) throw new Error('node:crypto did not return a JWK from key generation');
  return jwk;
}

/**
 * A fresh key pair. The key-generation job hands back a JWK and we import it:
 * on Node 20 a KeyObject that comes from a key-generation job shares a mutex
 * with the job, and reading its details or exporting it while the garbage
 * collector destroys the job deadlocks the main thread for good (issue 14).
 * An imported KeyObject belongs to no job. JWK is the cheapest way through
 * (~350 µs a P-256 pair here against ~1.3 ms through DER).
 */
export function generateKeyPair(type: KeyType = DEFAULT_KEY_TYPE): KeyPair {
  const privateKey = createPrivateKey({ key: generateJwk(type), format: 'jwk' });
  return { privateKey, publicKey: createPublicKey(privateKey), type };
}

export const spkiDer = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
export const pkcs8Der = (k: KeyObject): Buffer => k.export({ type: 'pkcs8', format: 'der' });
export const privateKeyFromPkcs8 = (der: Buffer): KeyObject => createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
// The fixed DER prefixes of uncompressed EC P-256 / P-384 SubjectPublicKeyInfos.
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const P384_SPKI_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex');

/** The 65-byte uncompressed point of a P-256 SubjectPublicKeyInfo, or undefined for any other key or encoding. */
export function p256Point(spki: Buffer): Buffer | undefined {
  const n = P256_SPKI_PREFIX.length;
  if (spki.length !== n + 65 || spki[n] !== 0x04 || !spki.subarray(0, n).equals(P256_SPKI_PREFIX)) return undefined;
  return spki.subarray(n);
}

/**
 * Imports a public key from SPKI DER. EC keys go through JWK coordinates:
 * OpenSSL 3's DER decoder costs ~190 µs a key here, the JWK path ~65 µs, and
 * the signing path imports one key per CSR.
 */
export function publicKeyFromSpki(der: Buffer): KeyObject {
  for (const [prefix, crv, size] of [[P256_SPKI_PREFIX, 'P-256', 32], [P384_SPKI_PREFIX, 'P-384', 48]] as const) {
    if (der.length === prefix.length + 1 + 2 * size && der[prefix.length] === 0x04 && der.subarray(0, prefix.length).equals(prefix)) {
      const x = der.subarray(prefix.length + 1, prefix.length + 1 + size).toString('base64url');
      const y = der.subarray(prefix.length + 1 + size).toString('base64url');
      return createPublicKey({ key: { kty: 'EC', crv, x, y }, format: 'jwk' });
    }
  }
  return createPublicKey({ key: der, format: 'der', type: 'spki' });
}
export const privateKeyPem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }) as string;

/** How a key signs an X.509 structure: the AlgorithmIdentifier DER and node:crypto's digest name. */
export interface SignatureAlgorithm { algorithmIdentifier: Buffer; hash: 'sha256' | 'sha384' | 'sha512'; rsaPss?: false; jwsAlg: string }

const ECDSA_SHA256: SignatureAlgorithm = { algorithmIdentifier: seq(oid('1.2.840.10045.4.3.2')), hash: 'sha256', jwsAlg: 'ES256' };
const ECDSA_SHA384: SignatureAlgorithm = { algorithmIdentifier: seq(oid('1.2.840.10045.4.3.3')), hash: 'sha384', jwsAlg: 'ES384' };
const RSA_SHA256: SignatureAlgorithm = { algorithmIdentifier: seq(oid('1.2.840.113549.1.1.11'), tlv(TAG.NULL)), hash: 'sha256', jwsAlg: 'RS256' };

/** The algorithm a key of this type signs with, known without asking the key. */
export function signatureAlgorithmForType(type: KeyType): SignatureAlgorithm {
  switch (type) {
    case 'ec-p256': return ECDSA_SHA256;
    case 'ec-p384': return ECDSA_SHA384;
    case 'rsa-2048': case 'rsa-4096': return RSA_SHA256;
  }
}

/** The algorithm a private (or public) key signs with; EC P-256 → ES256, P-384 → ES384, RSA → RS256. */
export function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  const t = key.asymmetricKeyType;
  if (t === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return ECDSA_SHA256;
    if (curve === 'secp384r1') return ECDSA_SHA384;
    throw new InvalidArgument(`unsupported EC curve ${curve}; use P-256 or P-384`);
  }
  if (t === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new InvalidArgument(`RSA key of ${bits} bits is too small; use 2048 or more`);
    return RSA_SHA256;
  }
  throw new InvalidArgument(`unsupported key type ${t}; use EC P-256, EC P-384 or RSA`);
}

/** Signature algorithm OIDs that we accept on CSRs and certificates, with the digest they use. */
export const SIGNATURE_OIDS: Readonly<Record<string, { hash: 'sha256' | 'sha384' | 'sha512'; family: 'ec' | 'rsa' }>> = {
  '1.2.840.10045.4.3.2': { hash: 'sha256', family: 'ec' },
  '1.2.840.10045.4.3.3': { hash: 'sha384', family: 'ec' },
  '1.2.840.10045.4.3.4': { hash: 'sha512', family: 'ec' },
  '1.2.840.113549.1.1.11': { hash: 'sha256', family: 'rsa' },
  '1.2.840.113549.1.1.12': { hash: 'sha384', family: 'rsa' },
  '1.2.840.113549.1.1.13': { hash: 'sha512', family: 'rsa' },
};
