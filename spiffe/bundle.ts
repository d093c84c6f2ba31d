/** SPIFFE trust bundles: X.509 authorities and JWT keys of one trust domain, as JWKS or PEM. */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { InvalidArgument } from './errors.js';
import { TrustDomain } from './id.js';
import { derFromPem, parseCertificate, pemFromDer } from './x509.js';

export interface JwtAuthority { kid: string; publicKey: KeyObject; expiresAt?: Date }

export class Bundle {
  constructor(
    readonly trustDomain: TrustDomain,
    readonly x509Authorities: readonly Buffer[],
    readonly jwtAuthorities: readonly JwtAuthority[],
    readonly sequence = 0,
    /** Seconds; how often consumers should refresh (spiffe_refresh_hint). */
    readonly refreshHint = 0,
  ) { Object.freeze(this); }

  jwtKeys(): Map<string, KeyObject> { return new Map(this.jwtAuthorities.map((a) => [a.kid, a.publicKey])); }
  x509Pem(): string { return this.x509Authorities.map((d) => pemFromDer(d)).join(''); }
  /** The Workload API encoding: concatenated DER. */
  x509Der(): Buffer { return Buffer.concat([...this.x509Authorities]); }

  /** The SPIFFE bundle format (SPIFFE Trust Domain and Bundle standard §4): a JWKS with `use` per key. */
  toJwks(): Record<string, unknown> {
    const keys: Record<string, unknown>[] = [];
    for (const der of this.x509Authorities) {
      const jwk = createPublicKey({ key: parseCertificate(der).spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
      keys.push({ use: 'x509-svid', ...jwk, x5c: [der.toString('base64')] });
    }
    for (const a of this.jwtAuthorities) {
      keys.push({ use: 'jwt-svid', kid: a.kid, ...a.publicKey.export({ format: 'jwk' }) });
    }
    const out: Record<string, unknown> = { keys, spiffe_sequence: this.sequence };
    if (this.refreshHint > 0) out['spiffe_refresh_hint'] = this.refreshHint;
    return out;
  }

  toJson(): string { return JSON.stringify(this.toJwks(), null, 2); }

  static fromJwks(td: TrustDomain, input: string | Record<string, unknown>): Bundle {
    let doc: Record<string, unknown>;
    try { doc = typeof input === 'string' ? JSON.parse(input) : input; } catch (err) {
      throw new InvalidArgument(`bundle is not valid JSON: ${(err as Error).message}`, 'bundle');
    }
    if (!doc || !Array.isArray(doc['keys'])) throw new InvalidArgument('bundle has no "keys" array', 'bundle.keys');
    const x509: Buffer[] = [];
    const jwt: JwtAuthority[] = [];
    (doc['keys'] as Record<string, unknown>[]).forEach((k, i) => {
      const field = `bundle.keys[${i}]`;
      if (typeof k !== 'object' || k === null || Array.isArray(k)) throw new InvalidArgument('a key must be a JSON object', field);
      if (k['use'] === 'x509-svid') {
        const x5c = k['x5c'];
        if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string') throw new InvalidArgument('an x509-svid key needs exactly one x5c certificate', `${field}.x5c`);
        const der = Buffer.from(x5c[0], 'base64');
        try { parseCertificate(der); } catch (err) { throw new InvalidArgument((err as Error).message, `${field}.x5c`); }
        x509.push(der);
      } else if (k['use'] === 'jwt-svid') {
        if (typeof k['kid'] !== 'string' || k['kid'] === '') throw new InvalidArgument('a jwt-svid key needs a kid', `${field}.kid`);
        const { use: _use, kid, ...jwk } = k;
        let publicKey: KeyObject;
        try { publicKey = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }); } catch (err) {
          throw new InvalidArgument(`not a usable public key: ${(err as Error).message}`, field);
        }
        jwt.push({ kid: kid as string, publicKey });
      } else {
        throw new InvalidArgument(`key use must be "x509-svid" or "jwt-svid", not ${JSON.stringify(k['use'])}`, `${field}.use`);
      }
    });
    const seqNo = typeof doc['spiffe_sequence'] === 'number' ? doc['spiffe_sequence'] : 0;
    const hint = typeof doc['spiffe_refresh_hint'] === 'number' ? doc['spiffe_refresh_hint'] : 0;
    return new Bundle(td, x509, jwt, seqNo, hint);
  }

  static fromPem(td: TrustDomain, pem: string): Bundle {
    const ders = derFromPem(pem);
    if (ders.length === 0) throw new InvalidArgument('no CERTIFICATE blocks in PEM bundle', 'bundle');
    ders.forEach((d, i) => { try { parseCertificate(d); } catch (err) { throw new InvalidArgument((err as Error).message, `bundle[${i}]`); } });
    return new Bundle(td, ders, []);
  }
}

/** Bundles by trust domain name: the local one plus federated ones. */
export class BundleSet {
  private readonly byName = new Map<string, Bundle>();
  constructor(bundles: Iterable<Bundle> = []) { for (const b of bundles) this.byName.set(b.trustDomain.name, b); }
  get(td: TrustDomain | string): Bundle | undefined { return this.byName.get(typeof td === 'string' ? td : td.name); }
  all(): Bundle[] { return [...this.byName.values()]; }
  /** For verifyX509Svid. */
  x509 = (td: TrustDomain): readonly Buffer[] | undefined => this.get(td)?.x509Authorities;
  /** For verifyJwtSvid. */
  jwt = (td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined => this.get(td)?.jwtKeys();
}
