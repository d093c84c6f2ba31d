// A WorkloadSource for tests: entries held in memory, real X.509-SVIDs and
// JWT-SVIDs minted and checked with the SPIFFE core (spiffe/).
import type { KeyObject } from 'node:crypto';
import { type CertificateIssuer, encodeName, generateKeyPair, issuerFromKey, keyIdentifier, mintCertificate, mintJwtSvid, mintX509Svid, PermissionDenied, pkcs8Der, SelectorSet, SpiffeId, spkiDer, verifyJwtSvid } from '../../../spiffe/index.js';
import type { CachedX509Svid, WorkloadSource } from '../../../agent/workloadapi/index.js';

export interface TestCa { trustDomain: string; der: Buffer; issuer: CertificateIssuer }

export function makeCa(trustDomain: string): TestCa {
  const { privateKey, publicKey } = generateKeyPair();
  const spki = spkiDer(publicKey);
  const subject = encodeName([['O', 'meshid test'], ['CN', trustDomain]]);
  const issuer = issuerFromKey(subject, keyIdentifier(spki), privateKey);
  const der = mintCertificate({
    subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    publicKeySpki: spki,
    uris: [`spiffe://${trustDomain}`],
    ca: {},
  }, issuer);
  return { trustDomain, der, issuer };
}

/** An X509-SVID for `id`, signed by `ca`: chain [leaf, ca], key as PKCS#8 DER. */
export function issueSvid(ca: TestCa, id: SpiffeId, hint = '', ttlMs = 3_600_000): CachedX509Svid {
  const { privateKey, publicKey } = generateKeyPair();
  const notAfter = new Date(Date.now() + ttlMs);
  const leaf = mintX509Svid(ca.issuer, { spiffeId: id, publicKeySpki: spkiDer(publicKey), notBefore: new Date(Date.now() - 60_000), notAfter });
  return { spiffeId: id, hint, certChainDer: [leaf, ca.der], privateKeyPkcs8Der: pkcs8Der(privateKey), expiresAt: notAfter };
}

interface Entry { spiffeId: SpiffeId; selectors: SelectorSet; svid: CachedX509Svid }
interface JwtKey { kid: string; privateKey: KeyObject; publicKey: KeyObject }


export class FakeWorkloadSource implements WorkloadSource {
  readonly ca: TestCa;
  readonly federatedCa: TestCa;
  private entries: Entry[] = [];
  private readonly jwtKeys = new Map<string, JwtKey>();
  private readonly listeners = new Set<() => void>();
  /** every selector set the server asked about, in order */
  readonly callers: SelectorSet[] = [];
  /** how many times onChange listeners were called */
  changes = 0;

  private constructor(ca: TestCa, federatedCa: TestCa) {
    this.ca = ca;
    this.federatedCa = federatedCa;
    for (const td of [ca.trustDomain, federatedCa.trustDomain]) {
      const { privateKey, publicKey } = generateKeyPair();
      this.jwtKeys.set(td, { kid: `${td}-key-1`, privateKey, publicKey });
    }
  }

  static async create(trustDomain = 'example.test', federated = 'federated.test'): Promise<FakeWorkloadSource> {
    return new FakeWorkloadSource(makeCa(trustDomain), makeCa(federated));
  }

  /** Adds (or replaces) an entry with a fresh SVID. Fires a change. */
  async setEntry(path: string, selectors: string[], hint = ''): Promise<CachedX509Svid> {
    const spiffeId = SpiffeId.parse(`spiffe://${this.ca.trustDomain}${path}`);
    const svid = issueSvid(this.ca, spiffeId, hint);
    this.entries = this.entries.filter((e) => !e.spiffeId.equals(spiffeId));
    this.entries.push({ spiffeId, selectors: SelectorSet.parse(selectors), svid });
    this.fire();
    return svid;
  }

  /** Re-issues the SVID of an entry (rotation). Fires a change. */
  async rotate(path: string): Promise<CachedX509Svid> {
    const entry = this.entries.find((e) => e.spiffeId.path === path);
    if (!entry) throw new Error(`no entry ${path}`);
    entry.svid = issueSvid(this.ca, entry.spiffeId, entry.svid.hint);
    this.fire();
    return entry.svid;
  }

  deleteEntry(path: string): void {
    this.entries = this.entries.filter((e) => e.spiffeId.path !== path);
    this.fire();
  }

  /** A change notification that changes nothing (the server must not resend). */
  touch(): void { this.fire(); }

  listenerCount(): number { return this.listeners.size; }

  private fire(): void {
    this.changes++;
    for (const l of [...this.listeners]) l();
  }

  private matching(caller: SelectorSet): Entry[] {
    this.callers.push(caller);
    return this.entries.filter((e) => e.selectors.subsetOf(caller));
  }

  x509SvidsFor(caller: SelectorSet): CachedX509Svid[] {
    return this.matching(caller).map((e) => e.svid);
  }

  x509Bundles(): Map<string, Buffer[]> {
    return new Map([[this.ca.trustDomain, [this.ca.der]], [this.federatedCa.trustDomain, [this.federatedCa.der]]]);
  }

  jwtBundles(): Map<string, Buffer> {
    const out = new Map<string, Buffer>();
    for (const [td, key] of this.jwtKeys) {
      const jwk = { ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, use: 'jwt-svid' };
      out.set(td, Buffer.from(JSON.stringify({ keys: [jwk] })));
    }
    return out;
  }

  federatedBundlesFor(): Map<string, Buffer[]> {
    return new Map([[this.federatedCa.trustDomain, [this.federatedCa.der]]]);
  }

  async jwtSvidsFor(caller: SelectorSet, audience: string[], spiffeId?: SpiffeId): Promise<{ spiffeId: SpiffeId; token: string; hint: string }[]> {
    const entries = this.matching(caller).filter((e) => !spiffeId || e.spiffeId.equals(spiffeId));
    if (entries.length === 0) throw new PermissionDenied('no identity issued');
    return entries.map((e) => ({ spiffeId: e.spiffeId, hint: e.svid.hint, token: this.mintJwt(e.spiffeId, audience) }));
  }

  /** A JWT-SVID signed with this trust domain's key (or another key, or already expired). */
  mintJwt(sub: SpiffeId, audience: string[], opts: { expSecondsFromNow?: number; key?: KeyObject } = {}): string {
    const key = this.jwtKeys.get(sub.trustDomain.name)!;
    const now = Date.now();
    const exp = new Date(now + (opts.expSecondsFromNow ?? 300) * 1000);
    const iat = new Date(Math.min(now, exp.getTime() - 60_000));
    return mintJwtSvid({ kid: key.kid, privateKey: opts.key ?? key.privateKey }, sub, audience, iat, exp);
  }

  validateJwtSvid(token: string, audience: string): { spiffeId: SpiffeId; claims: Record<string, unknown> } {
    const verified = verifyJwtSvid(token, (td) => {
      const key = this.jwtKeys.get(td.name);
      return key ? new Map([[key.kid, key.publicKey]]) : undefined;
    }, audience, new Date());
    return { spiffeId: verified.spiffeId, claims: verified.claims };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }
}
