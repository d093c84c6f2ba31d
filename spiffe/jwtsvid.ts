/** JWT-SVIDs per the SPIFFE JWT-SVID standard: JWS compact, asymmetric algorithms only. */
import { createHash, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { InvalidArgument, InvalidJwt, JwtAudienceMismatch, JwtExpired, JwtSignatureInvalid, Untrusted } from './errors.js';
import { SpiffeId, type TrustDomain } from './id.js';
import { signatureAlgorithmFor } from './keys.js';

export const MAX_JWT_BYTES = 16 * 1024;

/** JWS algorithms a JWT-SVID may use (standard §3: no `none`, no HMAC). */
const ALGS: Record<string, { hash: string; family: 'ec' | 'rsa' | 'rsa-pss'; curve?: string }> = {
  ES256: { hash: 'sha256', family: 'ec', curve: 'prime256v1' },
  ES384: { hash: 'sha384', family: 'ec', curve: 'secp384r1' },
  RS256: { hash: 'sha256', family: 'rsa' },
  RS384: { hash: 'sha384', family: 'rsa' },
  RS512: { hash: 'sha512', family: 'rsa' },
  PS256: { hash: 'sha256', family: 'rsa-pss' },
  PS384: { hash: 'sha384', family: 'rsa-pss' },
  PS512: { hash: 'sha512', family: 'rsa-pss' },
};

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export interface JwtSigner { kid: string; privateKey: KeyObject }

export interface JwtSvidClaims {
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  [claim: string]: unknown;
}

/** The most audiences one JWT-SVID carries, and the longest one: a token stays a header's size. */
export const MAX_AUDIENCES = 32;
export const MAX_AUDIENCE_LENGTH = 256;

/** Checks an audience list for a JWT-SVID; the error names the field and the item. */
export function checkAudience(audience: readonly string[], field = 'audience'): void {
  if (audience.length === 0) throw new InvalidArgument('a JWT-SVID needs at least one audience', field);
  if (audience.length > MAX_AUDIENCES) throw new InvalidArgument(`${audience.length} audiences; a JWT-SVID carries at most ${MAX_AUDIENCES}`, field);
  audience.forEach((a, i) => {
    if (typeof a !== 'string' || a === '') throw new InvalidArgument('an audience must be a non-empty string', `${field}[${i}]`);
    if (a.length > MAX_AUDIENCE_LENGTH) throw new InvalidArgument(`audience of ${a.length} characters; at most ${MAX_AUDIENCE_LENGTH}`, `${field}[${i}]`);
  });
}

/** The one function that mints a JWT-SVID. */
export function mintJwtSvid(signer: JwtSigner, spiffeId: SpiffeId, audience: readonly string[], issuedAt: Date, expiresAt: Date, extra: Record<string, unknown> = {}): string {
  checkAudience(audience);
  const alg = signatureAlgorithmFor(signer.privateKey).jwsAlg;
  const header = { alg, kid: signer.kid, typ: 'JWT' };
  const claims: JwtSvidClaims = {
    ...extra,
    sub: spiffeId.toString(),
    aud: [...audience],
    exp: Math.floor(expiresAt.getTime() / 1000),
    iat: Math.floor(issuedAt.getTime() / 1000),
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = cryptoSign(ALGS[alg]!.hash, Buffer.from(input), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

/** Where validation finds a trust domain's JWT authorities: kid → public key. */
export type JwtBundleSource = (td: TrustDomain) => ReadonlyMap<string, KeyObject> | undefined;

export interface VerifiedJwtSvid { spiffeId: SpiffeId; claims: JwtSvidClaims; expiresAt: Date; kid: string; alg: string }

function decodeJson(part: string, what: string): Record<string, unknown> {
  let v: unknown;
  try { v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')); } catch { throw new InvalidJwt(`${what} is not base64url JSON`); }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidJwt(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** Header and claims without any check: for logging and routing to the right bundle only. */
export function peekJwt(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const parts = token.split('.');
  if (parts.length !== 3) throw new InvalidJwt('token is not a JWS compact serialization (three dot-separated parts)');
  return { header: decodeJson(parts[0]!, 'header'), claims: decodeJson(parts[1]!, 'claims') };
}

/**
 * Validates a JWT-SVID: allowed algorithm, known kid in the subject's trust
 * domain bundle, signature, sub a SPIFFE ID, `audience` among aud, exp in the
 * future, iat and nbf not in the future.
 */
export function verifyJwtSvid(token: string, bundles: JwtBundleSource, audience: string, now: Date): VerifiedJwtSvid {
  if (typeof token !== 'string' || token.length === 0) throw new InvalidJwt('token is empty');
  if (token.length > MAX_JWT_BYTES) throw new InvalidJwt(`token is longer than ${MAX_JWT_BYTES} bytes`);
  if (!audience) throw new InvalidArgument('audience is required', 'audience');
  const { header, claims } = peekJwt(token);
  const algName = header['alg'];
  if (typeof algName !== 'string') throw new InvalidJwt('header has no alg');
  if (algName === 'none' || /^HS/.test(algName)) throw new InvalidJwt(`algorithm ${algName} is not allowed for JWT-SVIDs`);
  const alg = ALGS[algName];
  if (!alg) throw new InvalidJwt(`unsupported algorithm ${algName}`);
  const kid = header['kid'];
  if (typeof kid !== 'string' || kid === '') throw new InvalidJwt('header has no kid');
  if (header['typ'] !== undefined && header['typ'] !== 'JWT' && header['typ'] !== 'JOSE') throw new InvalidJwt(`header typ ${String(header['typ'])} is not JWT or JOSE`);
  if (typeof claims['sub'] !== 'string') throw new InvalidJwt('claims have no sub');
  let spiffeId: SpiffeId;
  try { spiffeId = SpiffeId.parse(claims['sub']); } catch (err) { throw new InvalidJwt(`sub is not a SPIFFE ID: ${(err as Error).message}`); }
  const keys = bundles(spiffeId.trustDomain);
  if (!keys) throw new Untrusted(`no JWT bundle for trust domain "${spiffeId.trustDomain.name}"`);
  const key = keys.get(kid);
  if (!key) throw new JwtSignatureInvalid(`kid "${kid}" is not in the bundle of "${spiffeId.trustDomain.name}"`);
  const keyFamily = key.asymmetricKeyType === 'ec' ? 'ec' : key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss' ? 'rsa' : key.asymmetricKeyType;
  if (keyFamily !== (alg.family === 'ec' ? 'ec' : 'rsa') || (alg.curve && key.asymmetricKeyDetails?.namedCurve !== alg.curve)) {
    throw new JwtSignatureInvalid(`algorithm ${algName} does not fit the key of kid "${kid}"`);
  }
  const [h, c, s] = token.split('.') as [string, string, string];
  const sig = Buffer.from(s, 'base64url');
  // Buffer.from skips characters outside the alphabet and ignores non-zero trailing bits, so many
  // strings decode to one signature; a token must have exactly one spelling.
  if (sig.toString('base64url') !== s) throw new JwtSignatureInvalid('signature is not canonical base64url');
  let ok = false;
  try {
    const keyArg = alg.family === 'ec'
      ? { key, dsaEncoding: 'ieee-p1363' as const }
      : alg.family === 'rsa-pss' ? { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: createHash(alg.hash).digest().length } : key;
    ok = cryptoVerify(alg.hash, Buffer.from(`${h}.${c}`), keyArg, sig);
  } catch { ok = false; }
  if (!ok) throw new JwtSignatureInvalid('signature does not verify');
  const aud = typeof claims['aud'] === 'string' ? [claims['aud']] : claims['aud'];
  if (!Array.isArray(aud) || aud.length === 0 || !aud.every((a) => typeof a === 'string')) throw new InvalidJwt('claims have no aud');
  if (!aud.includes(audience)) throw new JwtAudienceMismatch(`audience "${audience}" is not among ${JSON.stringify(aud)}`);
  const exp = claims['exp'];
  if (typeof exp !== 'number') throw new InvalidJwt('claims have no exp');
  const nowS = now.getTime() / 1000;
  if (exp <= nowS) throw new JwtExpired(`token expired at ${new Date(exp * 1000).toISOString()}`);
  const iat = claims['iat'];
  if (iat !== undefined && (typeof iat !== 'number' || iat > nowS + 1)) throw new InvalidJwt('iat is in the future');
  const nbf = claims['nbf'];
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowS + 1)) throw new InvalidJwt('token is not valid yet (nbf in the future)');
  return { spiffeId, claims: { ...claims, aud } as JwtSvidClaims, expiresAt: new Date(exp * 1000), kid, alg: algName };
}
