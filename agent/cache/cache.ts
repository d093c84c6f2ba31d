/**
 * The agent's SVID cache: one key pair and X509-SVID per registration entry
 * the agent holds, signed in batches, renewed at half life, dropped with the
 * entry; JWT-SVIDs per (entry, audience set), renewed before expiry. It is
 * the Workload API's source of answers.
 */
import { status as Status, type ServiceError } from '@grpc/grpc-js';
import type { KeyObject } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import type { MetricsRegistry } from '../../common/metrics.js';
import type { BatchNewX509SvidResponseMsg, NewJwtSvidResponseMsg } from '../../api/agentproto.js';
import { type BundleSet, createCsr, generateKeyPair, parseCertificate, PermissionDenied, pkcs8Der, type SelectorSet, signatureAlgorithmForType, type SpiffeId, Unavailable, verifyJwtSvid } from '../../spiffe/index.js';
import type { CachedX509Svid, WorkloadSource } from '../workloadapi/index.js';
import type { AgentEntry, AgentState, StateChange } from '../sync/index.js';
import type { ServerConnection } from '../serverapi/index.js';

export interface SvidCacheOptions {
  state: AgentState;
  connection: ServerConnection;
  clock: Clock;
  logger: Logger;
  /** At most this many X509-SVIDs are kept; beyond it, those no workload asked for recently go first. */
  maxSvids?: number;
  maxJwtSvids?: number;
  /** CSRs per BatchNewX509SVID call. */
  batchSize?: number;
  /** How often due renewals are looked for. */
  tickMs?: number;
  onServerRefusal?: (err: ServiceError) => Promise<void>;
  /**
   * SPIRE's availability_target, in ms: an X509-SVID is renewed once its
   * remaining lifetime falls below this, so an outage of every server this long
   * never lets one expire. 0 (default), or an SVID whose whole lifetime is not
   * longer than it: renewed at half life.
   */
  availabilityTargetMs?: number;
}

/** When an SVID issued at `issuedAt` that expires at `expiresAt` is due for renewal. */
export function renewalDueAt(issuedAt: number, expiresAt: number, availabilityTargetMs = 0): number {
  const half = issuedAt + (expiresAt - issuedAt) / 2;
  if (availabilityTargetMs <= 0 || expiresAt - issuedAt <= availabilityTargetMs) return half;
  return expiresAt - availabilityTargetMs;
}

interface Held { svid: CachedX509Svid; key: KeyObject; issuedAt: number; entryRevision: number; lastUsed: number }
interface HeldJwt { token: string; spiffeId: SpiffeId; hint: string; issuedAt: number; expiresAt: number; lastUsed: number }

export class SvidCache implements WorkloadSource {
  private readonly held = new Map<string, Held>();
  private readonly jwts = new Map<string, HeldJwt>();
  private readonly queue = new Set<string>();
  private listeners: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private signing = false;
  private unsubscribe: (() => void) | undefined;
  /** Entries evicted by the cap: signed again when a workload asks. */
  private readonly evicted = new Set<string>();
  renewals = 0;
  signFailures = 0;
  /** When calls to the server started failing (ms); undefined while they succeed. */
  private failingSince: number | undefined;
  /** Up to when expiries were looked at, so each expiry is reported once. */
  private expiriesSeenUntil = 0;

  constructor(private readonly opts: SvidCacheOptions) {}

  start(): void {
    this.unsubscribe = this.opts.state.onChange((c) => this.onStateChange(c));
    for (const id of this.opts.state.entries.keys()) this.queue.add(id);
    this.timer = setInterval(() => this.tick(), this.opts.tickMs ?? 1000);
    this.timer.unref();
    this.kick();
  }

  /** Stops renewing: nothing is signed after this, including a retry that was waiting out its back-off. */
  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    this.listeners = [];
  }

  /** The cache's gauges: SVIDs held, by remaining lifetime, the least remaining lifetime, renewals and failures. */
  registerMetrics(registry: MetricsRegistry): void {
    const svids = registry.gauge('meshid_agent_svids', 'X509-SVIDs held for workloads.');
    svids.collect(() => svids.set(this.size));
    const byLifetime = registry.gauge('meshid_agent_x509_svids_by_lifetime', 'X509-SVIDs held, by remaining lifetime: fresh (before half life), renewal_due (past it), expired (never served).');
    byLifetime.collect(() => {
      const l = this.lifetimes();
      byLifetime.set(l.fresh, { state: 'fresh' });
      byLifetime.set(l.renewalDue, { state: 'renewal_due' });
      byLifetime.set(l.expired, { state: 'expired' });
    });
    const minRemaining = registry.gauge('meshid_agent_x509_svid_min_remaining_seconds', 'The least remaining lifetime of any X509-SVID held (negative: expired).');
    minRemaining.collect(() => {
      const m = this.lifetimes().minRemainingMs;
      // floor: an SVID expired by any amount shows negative
      if (m !== undefined) minRemaining.set(Math.floor(m / 1000)); else minRemaining.reset();
    });
    const renewals = registry.gauge('meshid_agent_svid_renewals', 'X509-SVIDs renewed since start.');
    renewals.collect(() => renewals.set(this.renewals));
    const failures = registry.gauge('meshid_agent_svid_sign_failures', 'X509-SVID signing attempts that failed since start.');
    failures.collect(() => failures.set(this.signFailures));
  }

  get size(): number { return this.held.size; }

  onChange(listener: () => void): () => void {
    this.listeners.push(listener);
    return () => { this.listeners = this.listeners.filter((l) => l !== listener); };
  }

  private notify(): void { for (const l of [...this.listeners]) { try { l(); } catch (err) { this.opts.logger.error('change listener failed', { err }); } } }

  /** Resolves when nothing is waiting to be signed (tests, readiness). */
  async settled(timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while ((this.queue.size > 0 || this.signing) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  }

  private onStateChange(c: StateChange): void {
    let changed = c.bundles;
    for (const id of c.entries.removed) {
      this.queue.delete(id);
      this.evicted.delete(id);
      if (this.held.delete(id)) changed = true;
      for (const k of [...this.jwts.keys()]) if (k.startsWith(`${id}\0`)) this.jwts.delete(k);
    }
    for (const e of c.entries.upserted) {
      const h = this.held.get(e.id);
      if (!h || h.entryRevision !== e.revision) this.queue.add(e.id);
      for (const k of [...this.jwts.keys()]) if (k.startsWith(`${e.id}\0`)) this.jwts.delete(k);
    }
    if (changed) this.notify();
    this.kick();
  }

  /** Queues SVIDs due for renewal (half life, or availability_target), tells listeners about SVIDs that expired, and signs what is queued. */
  private tick(): void {
    const now = this.opts.clock.now().getTime();
    let expired = false;
    for (const [id, h] of this.held) {
      if (now >= renewalDueAt(h.issuedAt, h.svid.expiresAt.getTime(), this.opts.availabilityTargetMs)) this.queue.add(id);
      const exp = h.svid.expiresAt.getTime();
      if (exp > this.expiriesSeenUntil && exp <= now) expired = true;
    }
    this.expiriesSeenUntil = now;
    // an expired SVID leaves every answer it was in (the Workload API never serves one)
    if (expired) this.notify();
    for (const [k, j] of this.jwts) if (j.expiresAt <= now) this.jwts.delete(k);
    this.kick();
  }

  private kick(): void {
    if (this.stopped || this.signing || this.queue.size === 0) return;
    this.signing = true;
    this.signQueued().finally(() => {
      this.signing = false;
      if (this.queue.size > 0 && !this.backoff) this.kick();
    });
  }

  private backoff = false;
  private backoffTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  private async signQueued(): Promise<void> {
    const batchSize = this.opts.batchSize ?? 500;
    while (this.queue.size > 0 && !this.stopped) {
      const ids = [...this.queue].slice(0, batchSize);
      const entries = ids.map((id) => this.opts.state.entries.get(id)).filter((e): e is AgentEntry => !!e);
      for (const id of ids) this.queue.delete(id);
      if (entries.length === 0) continue;
      const keys = entries.map(() => generateKeyPair());
      let res: BatchNewX509SvidResponseMsg;
      try {
        res = await this.opts.connection.unary<BatchNewX509SvidResponseMsg>('BatchNewX509SVID', {
          params: entries.map((e, i) => ({ entry_id: e.id, csr: createCsr(keys[i]!.privateKey, keys[i]!.publicKey, undefined, signatureAlgorithmForType(keys[i]!.type)) })),
        });
      } catch (err) {
        for (const e of entries) this.queue.add(e.id);
        this.signFailures++;
        this.failingSince ??= this.opts.clock.now().getTime();
        this.opts.logger.warn('signing X509-SVIDs failed; will retry', { entries: entries.length, code: (err as ServiceError).code, reason: (err as ServiceError).details ?? (err as Error).message });
        await this.opts.onServerRefusal?.(err as ServiceError);
        if (this.stopped) return;
        this.backoff = true;
        this.backoffTimer = setTimeout(() => { this.backoffTimer = undefined; this.backoff = false; this.kick(); }, 2000);
        this.backoffTimer.unref();
        return;
      }
      const now = this.opts.clock.now().getTime();
      this.failingSince = undefined;
      res.results.forEach((r, i) => {
        const entry = entries[i]!;
        if (!r.svid || r.status?.code !== 0) {
          this.signFailures++;
          this.opts.logger.warn('server refused an X509-SVID', { entry_id: entry.id, code: r.status?.code, reason: r.status?.message });
          return;
        }
        if (!this.opts.state.entries.has(entry.id)) return; // removed while signing
        const chain = r.svid.cert_chain;
        const leaf = parseCertificate(chain[0]!);
        const prev = this.held.get(entry.id);
        if (prev) this.renewals++;
        this.held.set(entry.id, {
          svid: { spiffeId: entry.spiffeId, hint: entry.hint, certChainDer: chain, privateKeyPkcs8Der: pkcs8Der(keys[i]!.privateKey), expiresAt: leaf.notAfter },
          key: keys[i]!.privateKey, issuedAt: Math.min(now, leaf.notBefore.getTime() + 10_000), entryRevision: entry.revision, lastUsed: prev?.lastUsed ?? 0,
        });
      });
      this.enforceCap();
      this.notify();
    }
  }

  private enforceCap(): void {
    const max = this.opts.maxSvids ?? 10_000;
    if (this.held.size <= max) return;
    const victims = [...this.held].sort((a, b) => a[1].lastUsed - b[1].lastUsed).slice(0, this.held.size - max);
    for (const [id] of victims) { this.held.delete(id); this.evicted.add(id); }
  }

  private matching(caller: SelectorSet): AgentEntry[] {
    const out: AgentEntry[] = [];
    for (const e of this.opts.state.entries.values()) if (e.selectors.subsetOf(caller)) out.push(e);
    return out;
  }

  /** The identities (entries) a caller with these selectors has, whether or not their SVIDs are ready. */
  entriesFor(caller: SelectorSet): AgentEntry[] { return this.matching(caller); }

  identitiesFor(caller: SelectorSet): SpiffeId[] { return this.matching(caller).map((e) => e.spiffeId); }

  /** Why an entitled caller has no valid SVID now. */
  unavailableReason(): string {
    if (this.failingSince !== undefined) {
      return `no valid SVID for this workload: the server has been unreachable since ${new Date(this.failingSince).toISOString()} and the SVIDs it signed have expired`;
    }
    return 'no SVID signed yet for this workload; try again shortly';
  }

  /** When calls to the server started failing; undefined while they succeed. */
  get serverFailingSince(): Date | undefined { return this.failingSince === undefined ? undefined : new Date(this.failingSince); }

  /** Held X509-SVIDs by state: fresh (before half life), renewal due (past it), expired; and the least remaining lifetime. */
  lifetimes(): { fresh: number; renewalDue: number; expired: number; minRemainingMs: number | undefined } {
    const now = this.opts.clock.now().getTime();
    const out = { fresh: 0, renewalDue: 0, expired: 0, minRemainingMs: undefined as number | undefined };
    for (const h of this.held.values()) {
      const exp = h.svid.expiresAt.getTime();
      if (exp <= now) out.expired++;
      else if (now >= renewalDueAt(h.issuedAt, exp, this.opts.availabilityTargetMs)) out.renewalDue++;
      else out.fresh++;
      out.minRemainingMs = Math.min(out.minRemainingMs ?? Infinity, exp - now);
    }
    return out;
  }

  x509SvidsFor(caller: SelectorSet): CachedX509Svid[] {
    const now = this.opts.clock.now().getTime();
    const out: CachedX509Svid[] = [];
    for (const e of this.matching(caller)) {
      const h = this.held.get(e.id);
      if (h && h.svid.expiresAt.getTime() > now) { h.lastUsed = now; out.push(h.svid); }
      else if (this.evicted.delete(e.id)) { this.queue.add(e.id); this.kick(); }
    }
    return out;
  }

  /** The SVID and key of one SPIFFE ID, for the agent's own use (mutual auth proofs). */
  svidFor(spiffeId: SpiffeId): { svid: CachedX509Svid; key: KeyObject } | undefined {
    for (const h of this.held.values()) if (h.svid.spiffeId.equals(spiffeId)) return { svid: h.svid, key: h.key };
    return undefined;
  }

  private bundleSet(): BundleSet { return this.opts.state.bundles; }

  x509Bundles(): Map<string, Buffer[]> {
    return new Map(this.bundleSet().all().map((b) => [b.trustDomain.name, [...b.x509Authorities]]));
  }

  jwtBundles(): Map<string, Buffer> {
    return new Map(this.bundleSet().all().map((b) => {
      const jwks = b.toJwks() as { keys: { use: string }[] };
      return [b.trustDomain.name, Buffer.from(JSON.stringify({ keys: jwks.keys.filter((k) => k.use === 'jwt-svid') }))];
    }));
  }

  federatedBundlesFor(caller: SelectorSet): Map<string, Buffer[]> {
    const tds = new Set(this.matching(caller).flatMap((e) => e.federatesWith));
    const out = new Map<string, Buffer[]>();
    for (const td of tds) {
      const b = this.bundleSet().get(td);
      if (b && td !== this.opts.state.trustDomain.name) out.set(td, [...b.x509Authorities]);
    }
    return out;
  }

  async jwtSvidsFor(caller: SelectorSet, audience: string[], spiffeId?: SpiffeId): Promise<{ spiffeId: SpiffeId; token: string; hint: string }[]> {
    let entries = this.matching(caller);
    if (spiffeId) entries = entries.filter((e) => e.spiffeId.equals(spiffeId));
    if (entries.length === 0) throw new PermissionDenied(spiffeId ? `no identity ${spiffeId} issued to this caller` : 'no identity issued');
    const aud = [...new Set(audience)].sort();
    const now = this.opts.clock.now().getTime();
    return Promise.all(entries.map(async (e) => {
      const key = `${e.id}\0${aud.join('\0')}`;
      const held = this.jwts.get(key);
      // Renew once past half the lifetime, so callers never get a token about to expire.
      if (held && now < held.issuedAt + (held.expiresAt - held.issuedAt) / 2) {
        held.lastUsed = now;
        return { spiffeId: held.spiffeId, token: held.token, hint: held.hint };
      }
      let res: NewJwtSvidResponseMsg;
      try {
        res = await this.opts.connection.unary<NewJwtSvidResponseMsg>('NewJWTSVID', { entry_id: e.id, audience: aud });
        this.failingSince = undefined;
      } catch (err) {
        if ((err as ServiceError).code !== Status.UNAVAILABLE && (err as ServiceError).code !== Status.DEADLINE_EXCEEDED) throw err;
        this.failingSince ??= now;
        // the server is away: a token that is still valid serves until it expires, never after
        if (held && held.expiresAt > now) { held.lastUsed = now; return { spiffeId: held.spiffeId, token: held.token, hint: held.hint }; }
        throw new Unavailable(this.unavailableReason().replace('SVIDs it signed have', 'JWT-SVIDs it signed have'));
      }
      const svid = res.svid!;
      this.jwts.set(key, { token: svid.token, spiffeId: e.spiffeId, hint: e.hint, issuedAt: Number(svid.issued_at) * 1000, expiresAt: Number(svid.expires_at) * 1000, lastUsed: now });
      this.capJwts();
      return { spiffeId: e.spiffeId, token: svid.token, hint: e.hint };
    }));
  }

  private capJwts(): void {
    const max = this.opts.maxJwtSvids ?? 1000;
    if (this.jwts.size <= max) return;
    for (const [k] of [...this.jwts].sort((a, b) => a[1].lastUsed - b[1].lastUsed).slice(0, this.jwts.size - max)) this.jwts.delete(k);
  }

  /**
   * As spire-agent validates: against this trust domain's JWT bundle and the
   * bundles of the trust domains the caller's entries federate with; a caller
   * with no identity still validates against its own trust domain's.
   */
  validateJwtSvid(token: string, audience: string, caller?: SelectorSet): { spiffeId: SpiffeId; claims: Record<string, unknown> } {
    const allowed = new Set([this.opts.state.trustDomain.name, ...(caller ? this.matching(caller).flatMap((e) => e.federatesWith) : [])]);
    const all = this.bundleSet().jwt;
    const v = verifyJwtSvid(token, (td) => (allowed.has(td.name) ? all(td) : undefined), audience, this.opts.clock.now());
    return { spiffeId: v.spiffeId, claims: v.claims };
  }
}
