/**
 * The server's certificate authority: X.509 signing certificates and JWT keys,
 * each rotating through prepared → active → old. A prepared authority enters
 * the bundle at once, so agents trust it before it signs anything; an old one
 * stays in the bundle until it expires, so SVIDs it signed stay valid.
 */
import { createPublicKey, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { Bundle, type CertificateIssuer, MeshidError, type CertificationRequest, type CsrOptions, encodeName, FailedPrecondition, InvalidArgument, issuerFromKey, type JwtAuthority, keyIdentifier, type KeyType, mintCertificate, mintJwtSvid, mintX509Svid, parseCertificate, parseCsr, publicKeyFromSpki, SerialSource, type SpiffeId, spkiDer, type TrustDomain } from '../../spiffe/index.js';
import type { KeyManager } from './keymanager.js';
import type { P256 } from './p256.js';
import { type SigningAuthority, type SigningPool, type SignOutcome, signOrder, type SvidOrder } from './signing.js';
import type { UpstreamAuthority } from './upstream.js';

export type SlotState = 'prepared' | 'active' | 'old';
export type SlotKind = 'x509' | 'jwt';

/** One CA key and what it certifies; persisted through the CA journal. */
export interface CaSlot {
  kind: SlotKind;
  id: string;
  state: SlotState;
  /** The key's id in the KeyManager. */
  keyId: string;
  notBefore: number;
  notAfter: number;
  /** x509: the signing certificate, base64 DER. */
  certDer?: string;
  /** jwt: the key id published in the bundle. */
  kid?: string;
  /** jwt: the public key, base64 SPKI DER (the bundle needs it even without the private key). */
  publicKeySpki?: string;
}

export interface CaJournal {
  load(): Promise<CaSlot[]>;
  save(slots: readonly CaSlot[]): Promise<void>;
}

export class MemoryCaJournal implements CaJournal {
  private slots: CaSlot[] = [];
  async load(): Promise<CaSlot[]> { return this.slots.map((s) => ({ ...s })); }
  async save(slots: readonly CaSlot[]): Promise<void> { this.slots = slots.map((s) => ({ ...s })); }
}

export interface CaOptions {
  /**
   * When the key of the active slot is gone at start: 'replace' makes a new
   * one (memory keys, an upstream CA whose root agents keep trusting);
   * 'refuse' throws, for a self-signed CA whose lost key means agents that no
   * longer trust the server. Default 'replace'.
   */
  lostActiveKey?: 'replace' | 'refuse';
  trustDomain: TrustDomain;
  keys: KeyManager;
  journal: CaJournal;
  clock: Clock;
  logger: Logger;
  /** Lifetime of each signing certificate and JWT key. */
  caTtlSeconds: number;
  x509SvidTtlSeconds: number;
  jwtSvidTtlSeconds: number;
  keyType: KeyType;
  /** Subject of the signing certificates; the URI SAN is the trust domain ID. */
  caSubject: ReadonlyArray<readonly [string, string]>;
  upstream?: UpstreamAuthority;
  /** How often start() checks for rotation. */
  rotationCheckSeconds?: number;
  /** Called with the new bundle whenever it changes. */
  onBundleChange?: (bundle: Bundle) => void | Promise<void>;
  /** Counts rotations (prepared/activated/pruned) for /metrics. */
  onRotation?: (kind: SlotKind, event: 'prepared' | 'activated' | 'pruned') => void;
  /** The `iss` claim of JWT-SVIDs (jwt_issuer); absent: none. */
  jwtIssuer?: string;
  /** Native ECDSA P-256 for CSR checks and X.509 signatures (P256.load()); absent: node:crypto does both. */
  p256?: P256;
  /**
   * Worker threads for batches of X509-SVIDs (signX509Svids), started and
   * stopped by the caller; absent: batches are signed on the event loop.
   */
  signingPool?: SigningPool;
}

/** One X509-SVID of a batch: whom it is for and the CSR that brings the key. */
export interface X509SvidRequest {
  spiffeId: SpiffeId;
  csr: Buffer;
  /** 0 or absent: the server's x509_svid_ttl. */
  ttlSeconds?: number;
  dnsNames?: readonly string[];
}

/** A prepared slot becomes active at 5/6 of the active one's life; one is prepared at 1/2. */
export const PREPARE_AT = 1 / 2;
export const ACTIVATE_AT = 5 / 6;
/** SVIDs start a little in the past so clocks a few seconds behind still accept them. */
export const BACKDATE_MS = 10_000;

export interface SignedX509Svid { certChainDer: Buffer[]; expiresAt: Date; serialHex: string }
export interface SignedJwtSvid { token: string; issuedAt: Date; expiresAt: Date }

interface ActiveX509 {
  slot: CaSlot;
  issuer: CertificateIssuer;
  chainTail: Buffer[];
  notAfter: number;
  /** Changes with every activation: the signing pool's workers re-import the key once per version. */
  version: number;
  /** What the pool's workers rebuild the issuer from (made on first use). */
  forWorkers?: SigningAuthority;
}
interface ActiveJwt { slot: CaSlot; kid: string; key: KeyObject; notAfter: number }

export class CertificateAuthority {
  private slots: CaSlot[] = [];
  private readonly serials = new SerialSource();
  private x509: ActiveX509 | undefined;
  private jwt: ActiveJwt | undefined;
  private currentBundle: Bundle | undefined;
  private sequence = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly csrOptions: CsrOptions;
  private x509Version = 0;

  constructor(private readonly opts: CaOptions) {
    if (opts.caTtlSeconds < 60) throw new InvalidArgument('ca_ttl must be at least 60s', 'ca_ttl');
    if (opts.x509SvidTtlSeconds <= 0) throw new InvalidArgument('x509_svid_ttl must be positive', 'x509_svid_ttl');
    if (opts.jwtSvidTtlSeconds <= 0) throw new InvalidArgument('jwt_svid_ttl must be positive', 'jwt_svid_ttl');
    const p256 = opts.p256;
    this.csrOptions = p256 ? { verifyP256: (point, message, signature) => p256.verify(point, message, signature) } : {};
  }

  /** Loads the journal, makes the keys it lacks, and checks for rotation every few seconds. */
  async start(): Promise<void> {
    await this.load();
    await this.rotate();
    const every = (this.opts.rotationCheckSeconds ?? 10) * 1000;
    this.timer = setInterval(() => {
      this.rotate().catch((err: unknown) => this.opts.logger.error('CA rotation failed', { err }));
    }, every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async load(): Promise<void> {
    this.slots = (await this.opts.journal.load()).filter((s) => {
      const usable = s.kind === 'jwt' ? !!s.publicKeySpki : !!s.certDer;
      if (!usable) this.opts.logger.warn('dropping unusable CA journal slot', { slot: s.id });
      return usable;
    });
  }

  /**
   * Brings the slots up to date with the clock: prunes expired ones, makes an
   * active slot where none is usable, prepares and activates successors.
   * Idempotent; start() calls it periodically, tests call it after moving the clock.
   */
  rotate(): Promise<void> {
    // one at a time: the timer's and a test's (or start's) must not interleave
    const run = this.rotating.then(() => this.rotateNow());
    this.rotating = run.catch(() => undefined);
    return run;
  }

  private rotating: Promise<void> = Promise.resolve();

  private async rotateNow(): Promise<void> {
    const now = this.opts.clock.now().getTime();
    let changed = false;
    for (const kind of ['x509', 'jwt'] as const) {
      const before = this.slots.length;
      for (const s of this.slots.filter((x) => x.kind === kind && x.notAfter <= now)) {
        this.opts.keys.delete(s.keyId);
        this.opts.onRotation?.(kind, 'pruned');
      }
      this.slots = this.slots.filter((x) => x.kind !== kind || x.notAfter > now);
      if (this.slots.length !== before) changed = true;

      let active = this.slots.find((s) => s.kind === kind && s.state === 'active');
      let prepared = this.slots.find((s) => s.kind === kind && s.state === 'prepared');
      if (active && !this.opts.keys.get(active.keyId)) {
        if (this.opts.lostActiveKey === 'refuse') {
          throw new FailedPrecondition(`the key of the active ${kind === 'x509' ? 'X.509 CA' : 'JWT'} slot ${active.id} (key ${active.keyId}) is missing from the key manager, ` +
            'while the datastore expects it; agents trust only that CA: restore the key file from a backup, or start once with --replace-lost-ca-key ' +
            'to make a new CA (agents must then get the new bundle through Sync before their SVIDs expire)', 'key_manager');
        }
        this.opts.logger.warn('active CA key is missing; making a new one', { kind, slot: active.id });
        active.state = 'old';
        active = undefined;
      }
      if (!active) {
        if (prepared && this.opts.keys.get(prepared.keyId)) { prepared.state = 'active'; active = prepared; prepared = undefined; }
        else { active = this.newSlot(kind, now, 'active'); }
        this.opts.onRotation?.(kind, 'activated');
        changed = true;
      }
      const life = active.notAfter - active.notBefore;
      if (!prepared && now >= active.notBefore + life * PREPARE_AT) {
        prepared = this.newSlot(kind, now, 'prepared');
        this.opts.onRotation?.(kind, 'prepared');
        changed = true;
      }
      if (prepared && now >= active.notBefore + life * ACTIVATE_AT) {
        active.state = 'old';
        prepared.state = 'active';
        this.opts.onRotation?.(kind, 'activated');
        changed = true;
      }
    }
    if (changed || !this.x509 || !this.jwt) {
      await this.opts.journal.save(this.slots);
      this.refreshActive();
      this.sequence++;
      this.currentBundle = this.buildBundle();
      this.opts.logger.info('CA slots updated', { slots: this.slots.map((s) => ({ kind: s.kind, id: s.id, state: s.state, notAfter: new Date(s.notAfter).toISOString() })) });
      await this.opts.onBundleChange?.(this.currentBundle);
    }
  }

  private newSlot(kind: SlotKind, now: number, state: SlotState): CaSlot {
    const id = `${kind}-${now}-${randomBytes(4).toString('hex')}`;
    const key = this.opts.keys.generate(id, this.opts.keyType);
    let notAfter = now + this.opts.caTtlSeconds * 1000;
    const notBefore = now - BACKDATE_MS;
    const slot: CaSlot = { kind, id, state, keyId: id, notBefore: now, notAfter };
    const pub = spkiDer(publicKeyFromPrivate(key));
    if (kind === 'jwt') {
      slot.kid = randomUUID().replace(/-/g, '');
      slot.publicKeySpki = pub.toString('base64');
    } else {
      const subject = encodeName(this.opts.caSubject);
      const up = this.opts.upstream;
      let issuer: CertificateIssuer;
      if (up) {
        notAfter = Math.min(notAfter, up.cert.notAfter.getTime());
        if (notAfter <= now) throw new FailedPrecondition('the upstream CA certificate has expired', 'upstream_authority');
        issuer = this.issuer(up.cert.subject, up.cert.subjectKeyId ?? keyIdentifier(up.cert.spki), up.key);
      } else {
        issuer = this.issuer(subject, keyIdentifier(pub), key);
      }
      const cert = mintCertificate({
        subject, notBefore: new Date(notBefore), notAfter: new Date(notAfter), publicKeySpki: pub,
        uris: [this.opts.trustDomain.id().toString()], ca: up ? { pathLen: 0 } : {},
      }, issuer);
      slot.notAfter = notAfter;
      slot.certDer = cert.toString('base64');
    }
    this.slots.push(slot);
    this.opts.logger.info('CA key prepared', { kind, slot: id, state, notAfter: new Date(notAfter).toISOString() });
    return slot;
  }

  /** An issuer that signs natively when its key is P-256 and the accelerator is there. */
  private issuer(subject: Buffer, keyId: Buffer, key: KeyObject): CertificateIssuer {
    const issuer = issuerFromKey(subject, keyId, key);
    const sign = this.opts.p256?.signerFor(key);
    return sign ? { ...issuer, sign } : issuer;
  }

  private refreshActive(): void {
    const x = this.slots.find((s) => s.kind === 'x509' && s.state === 'active')!;
    const xKey = this.opts.keys.get(x.keyId)!;
    const cert = parseCertificate(Buffer.from(x.certDer!, 'base64'));
    const chainTail = this.opts.upstream ? [cert.der, ...this.opts.upstream.chain] : [];
    this.x509 = {
      slot: x, issuer: this.issuer(cert.subject, cert.subjectKeyId ?? keyIdentifier(cert.spki), xKey), chainTail,
      notAfter: cert.notAfter.getTime(), version: ++this.x509Version,
    };
    const j = this.slots.find((s) => s.kind === 'jwt' && s.state === 'active')!;
    this.jwt = { slot: j, kid: j.kid!, key: this.opts.keys.get(j.keyId)!, notAfter: j.notAfter };
  }

  private buildBundle(): Bundle {
    const x509 = this.opts.upstream
      ? this.opts.upstream.roots
      : this.slots.filter((s) => s.kind === 'x509').sort((a, b) => a.notBefore - b.notBefore).map((s) => Buffer.from(s.certDer!, 'base64'));
    const jwt: JwtAuthority[] = this.slots.filter((s) => s.kind === 'jwt').sort((a, b) => a.notBefore - b.notBefore).map((s) => ({
      kid: s.kid!, publicKey: publicKeyFromSpki(Buffer.from(s.publicKeySpki!, 'base64')), expiresAt: new Date(s.notAfter),
    }));
    return new Bundle(this.opts.trustDomain, x509, jwt, this.sequence, Math.max(1, Math.floor(this.opts.caTtlSeconds / 6)));
  }

  bundle(): Bundle {
    if (!this.currentBundle) throw new FailedPrecondition('the CA has not started');
    return this.currentBundle;
  }

  /**
   * The server's own signing certificates below the bundle (upstream mode):
   * clients present only their leaf, so the server completes their chains.
   */
  intermediates(): Buffer[] {
    if (!this.opts.upstream) return [];
    return [...this.slots.filter((s) => s.kind === 'x509').map((s) => Buffer.from(s.certDer!, 'base64')), ...this.opts.upstream.chain];
  }

  /** The slots, for the admin API and tests. */
  listSlots(): readonly CaSlot[] { return this.slots.map((s) => ({ ...s })); }

  /** Parses a CSR and checks its signature (natively for P-256 keys when the CA has the accelerator). */
  parseCsr(der: Buffer): CertificationRequest {
    return parseCsr(der, this.csrOptions);
  }

  /**
   * Signs an X509-SVID for `spiffeId` with the active signing certificate. The
   * TTL defaults to the server's; either way the SVID ends no later than the
   * signing certificate.
   */
  signX509Svid(spiffeId: SpiffeId, publicKeySpki: Buffer, ttlSeconds = 0, dnsNames: string[] = []): SignedX509Svid {
    const a = this.activeX509();
    const { notBefore, notAfter } = this.validity(a, spiffeId, ttlSeconds);
    const serial = this.serials.next();
    const der = mintX509Svid(a.issuer, { spiffeId, publicKeySpki, notBefore, notAfter, dnsNames, serial });
    return this.signed(a, der, serial.toString('hex'), notAfter);
  }

  /**
   * Signs a batch of X509-SVIDs from their CSRs, with the same rules as
   * signX509Svid, on the signing pool's workers when the CA has one (the event
   * loop stays free), else here. Outcomes come in the requests' order; a request
   * that fails (a bad CSR, an ID of another trust domain) gets its error and the
   * others their SVIDs.
   */
  async signX509Svids(requests: readonly X509SvidRequest[]): Promise<Array<SignedX509Svid | MeshidError>> {
    const a = this.activeX509();
    const outcomes: Array<SignedX509Svid | MeshidError | undefined> = new Array(requests.length);
    const orders: SvidOrder[] = [];
    const positions: number[] = [];
    requests.forEach((r, i) => {
      try {
        orders.push({ csr: r.csr, spiffeId: r.spiffeId, dnsNames: r.dnsNames ?? [], ...this.validity(a, r.spiffeId, r.ttlSeconds ?? 0) });
        positions.push(i);
      } catch (err) {
        if (!(err instanceof MeshidError)) throw err;
        outcomes[i] = err;
      }
    });
    const pool = this.opts.signingPool;
    const leaves: SignOutcome[] = pool
      ? await pool.sign(this.authorityForWorkers(a), orders)
      : orders.map((o) => {
        try { return signOrder(a.issuer, this.csrOptions, this.serials, o); } catch (err) {
          if (err instanceof MeshidError) return err;
          throw err;
        }
      });
    leaves.forEach((leaf, k) => {
      outcomes[positions[k]!] = leaf instanceof MeshidError ? leaf : this.signed(a, leaf.der, leaf.serialHex, orders[k]!.notAfter);
    });
    return outcomes as Array<SignedX509Svid | MeshidError>;
  }

  private activeX509(): ActiveX509 {
    if (!this.x509) throw new FailedPrecondition('the CA has not started');
    return this.x509;
  }

  /** When an SVID for `spiffeId` starts and ends; refuses an ID of another trust domain. */
  private validity(a: ActiveX509, spiffeId: SpiffeId, ttlSeconds: number): { notBefore: Date; notAfter: Date } {
    if (!spiffeId.memberOf(this.opts.trustDomain)) throw new InvalidArgument(`${spiffeId} is not in trust domain ${this.opts.trustDomain.name}`, 'spiffe_id');
    const now = this.opts.clock.now().getTime();
    const ttl = (ttlSeconds > 0 ? ttlSeconds : this.opts.x509SvidTtlSeconds) * 1000;
    return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(Math.min(now + ttl, a.notAfter)) };
  }

  private signed(a: ActiveX509, der: Buffer, serialHex: string, notAfter: Date): SignedX509Svid {
    return { certChainDer: [der, ...a.chainTail], expiresAt: new Date(Math.floor(notAfter.getTime() / 1000) * 1000), serialHex };
  }

  private authorityForWorkers(a: ActiveX509): SigningAuthority {
    a.forWorkers ??= {
      version: a.version, subject: a.issuer.subject, keyId: a.issuer.keyId,
      privateKeyPkcs8: a.issuer.privateKey.export({ format: 'der', type: 'pkcs8' }),
    };
    return a.forWorkers;
  }

  signJwtSvid(spiffeId: SpiffeId, audience: readonly string[], ttlSeconds = 0): SignedJwtSvid {
    const j = this.jwt;
    if (!j) throw new FailedPrecondition('the CA has not started');
    if (!spiffeId.memberOf(this.opts.trustDomain)) throw new InvalidArgument(`${spiffeId} is not in trust domain ${this.opts.trustDomain.name}`, 'spiffe_id');
    const now = this.opts.clock.now();
    const ttl = (ttlSeconds > 0 ? ttlSeconds : this.opts.jwtSvidTtlSeconds) * 1000;
    const expiresAt = new Date(Math.min(now.getTime() + ttl, j.notAfter));
    const extra = this.opts.jwtIssuer ? { iss: this.opts.jwtIssuer } : {};
    return { token: mintJwtSvid({ kid: j.kid, privateKey: j.key }, spiffeId, audience, now, expiresAt, extra), issuedAt: now, expiresAt };
  }
}

function publicKeyFromPrivate(key: KeyObject): KeyObject {
  return createPublicKey(key);
}
