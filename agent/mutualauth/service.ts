/**
 * MutualAuth: the agent's out-of-band mutual-authentication service. It
 * authenticates (local identity, remote identity, remote node) pairs with the
 * peer node's agent and writes each authenticated pair into the auth map,
 * valid until the shortest-lived certificate involved expires; re-authenticates
 * before that; and removes entries whose identity or node went away.
 */
import type { AgentState, MeshNode, StateChange } from '../sync/index.js';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import type { MetricsRegistry } from '../../common/metrics.js';
import { AuthType, bootNsToWallClock, wallClockToBootNs, type AuthPair } from '../../bpf/index.js';
import type { SpiffeId } from '../../spiffe/index.js';
import { authPairKey, type AuthMapWriter } from './authmap.js';
import { AuthGc, type RemovalReason } from './gc.js';
import { PeerClient, planBatches, type PairOutcome } from './client.js';
import { AuthCore, earliest, FailureReason, PairFailure, type MutualAuthStats, type SvidMaterial, type TunnelReadiness } from './core.js';
import { DEFAULT_PORT, isU16, isU32, MAX_BATCH_PAIRS, type WirePair } from './protocol.js';
import { AuthServer } from './server.js';
import { SecureContextCache } from './session.js';

export interface MutualAuthOptions {
  state: AgentState;
  /** The agent's own X509-SVID (AgentIdentity.current()). */
  agentSvid: () => SvidMaterial;
  /** The workload X509-SVID this agent holds for a SPIFFE ID (SvidCache.svidFor), if any. */
  workloadSvid: (spiffeId: SpiffeId) => SvidMaterial | undefined;
  authMap: AuthMapWriter;
  clock: Clock;
  logger: Logger;
  /** Where this agent's service listens: the node address, port 4250. Port 0 picks a free port (tests). */
  listen: { host: string; port: number };
  /**
   * With WireGuard: pairs with a node are authenticated only once the tunnel to
   * it is configured here, on both sides (the server half waits too), so a pair
   * in the auth map means its first packet finds the tunnel. Waited for up to
   * tunnelWaitMs; after that the pairs go ahead, and the tunnel follows later.
   */
  tunnel?: TunnelReadiness;
  /** Default 5 s. */
  tunnelWaitMs?: number;
  /** Where a peer node's service listens; default the node's address, port 4250. */
  peerAddress?: (node: MeshNode) => { host: string; port: number };
  /** Wall clock → the kernel's boot-time clock (default bpf's wallClockToBootNs), and back. */
  toBootNs?: (d: Date) => bigint;
  fromBootNs?: (ns: bigint) => Date;
  /** Pairs per batch (default 1024, at most 4096). */
  maxBatchPairs?: number;
  /** Batches in flight per peer session (default 4). */
  maxInFlightBatches?: number;
  handshakeTimeoutMs?: number;
  /** How long an accepted connection has to finish its TLS handshake (default 2 s). */
  acceptHandshakeTimeoutMs?: number;
  /** Connections one registered source address may hold on the listener (default 16). */
  maxConnectionsPerSource?: number;
  requestTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxSessions?: number;
  /** Tries per pair when the peer is unreachable or the session fails (default 4), with exponential backoff from backoffMs. */
  maxAttempts?: number;
  backoffMs?: number;
  /**
   * Tries for a new pair (none in the auth map yet) that the peer refuses because
   * its view is behind ours: it does not know the identity or our endpoint yet,
   * or its workload's SVID has not arrived (default 8: about 14 s with the
   * default backoff, each wait at most 4 s). Each agent follows the registry on
   * its own Sync stream, so the peer may hear of a new pod after we do.
   */
  peerLagAttempts?: number;
  /** How often entries due for re-authentication are looked for (default 5 s). */
  reauthTickMs?: number;
  /** An entry this agent asked for is re-authenticated when this fraction of its lifetime is left (default 1/3). */
  reauthFraction?: number;
}

export interface PairRequest { localIdentity: number; remoteIdentity: number; remoteNodeId: number }

export interface AuthResult {
  pair: PairRequest;
  ok: boolean;
  /** When the auth entry expires (wall clock), on success. */
  expiresAt?: Date;
  reason?: FailureReason;
  detail?: string;
  /** The failure was in transit (unreachable, timeout, session refused): worth trying again later. */
  retryable?: boolean;
}

/** Failures that say nothing about the pair itself. */
const TRANSIENT: ReadonlySet<FailureReason> = new Set<FailureReason>([
  FailureReason.unreachable, FailureReason.timeout, FailureReason.sessionClosed, FailureReason.stopped,
  FailureReason.sessionRefused, FailureReason.malformed, FailureReason.peerAgentMismatch, FailureReason.peerAgentUntrusted,
  FailureReason.localAgentSvidInvalid, FailureReason.unknownNode,
]);

/**
 * What a peer refuses when its copy of the registry is behind ours, or its own
 * SVID for the workload has not arrived yet: worth asking again shortly for a
 * pair that is new, never a reason to keep an entry the peer now refuses.
 */
const PEER_LAG: ReadonlySet<string> = new Set<string>([
  FailureReason.unknownIdentity, FailureReason.remoteNotHosted, FailureReason.localNotHosted, FailureReason.noLocalSvid,
]);
const MAX_LAG_WAIT_MS = 4_000;

/** One pair being authenticated, and the authenticate() calls (result slot each) waiting for it. */
class Waiting {
  private readonly callers: { done: (i: number, r: AuthResult) => void; i: number }[] = [];
  constructor(readonly key: string, readonly request: PairRequest, readonly wire: WirePair, readonly nodeId: number, private readonly settled: (w: Waiting) => void) {}
  wait(done: (i: number, r: AuthResult) => void, i: number): void { this.callers.push({ done, i }); }
  resolve(r: AuthResult): void {
    this.settled(this);
    for (const c of this.callers) c.done(c.i, r);
  }
}

export class MutualAuth {
  private readonly core: AuthCore;
  /** The only remover of auth entries. */
  readonly gc: AuthGc;
  private readonly server: AuthServer;
  private readonly contexts = new SecureContextCache();
  private readonly peers = new Map<number, PeerClient>();
  private readonly inflight = new Map<string, Waiting>();
  private queue = new Map<number, Waiting[]>();
  private flushHandle: NodeJS.Immediate | undefined;
  private readonly running = new Set<Promise<void>>();
  private readonly sleeps = new Map<NodeJS.Timeout, () => void>();
  private reauthTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private started = false;
  private stopped = false;
  private reconciled = false;
  private readonly o: Required<Pick<MutualAuthOptions,
    'maxBatchPairs' | 'maxInFlightBatches' | 'handshakeTimeoutMs' | 'requestTimeoutMs' | 'idleTimeoutMs' | 'maxSessions' | 'maxAttempts' | 'backoffMs' | 'peerLagAttempts' | 'reauthTickMs' | 'reauthFraction' | 'tunnelWaitMs'>>;

  constructor(private readonly opts: MutualAuthOptions) {
    this.o = {
      maxBatchPairs: Math.min(Math.max(1, opts.maxBatchPairs ?? 1024), MAX_BATCH_PAIRS),
      maxInFlightBatches: opts.maxInFlightBatches ?? 4,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 15_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
      maxSessions: opts.maxSessions ?? 4096,
      maxAttempts: opts.maxAttempts ?? 4,
      backoffMs: opts.backoffMs ?? 200,
      peerLagAttempts: Math.max(1, opts.peerLagAttempts ?? 8),
      reauthTickMs: opts.reauthTickMs ?? 5_000,
      reauthFraction: opts.reauthFraction ?? 1 / 3,
      tunnelWaitMs: opts.tunnelWaitMs ?? 5_000,
    };
    this.core = new AuthCore({
      state: opts.state, agentSvid: opts.agentSvid, workloadSvid: opts.workloadSvid, authMap: opts.authMap,
      clock: opts.clock, logger: opts.logger, toBootNs: opts.toBootNs ?? wallClockToBootNs,
    });
    this.gc = new AuthGc({ authMap: opts.authMap, held: this.core.held, logger: opts.logger });
    this.server = new AuthServer({
      core: this.core, listen: opts.listen, handshakeTimeoutMs: opts.acceptHandshakeTimeoutMs ?? 2_000,
      idleTimeoutMs: this.o.idleTimeoutMs, maxSessions: this.o.maxSessions, maxPerSource: opts.maxConnectionsPerSource ?? 16,
      ...(opts.tunnel ? { tunnel: opts.tunnel, tunnelWaitMs: this.o.tunnelWaitMs } : {}),
    });
  }

  /** The port the service listens on (after start). */
  get port(): number { return this.server.port; }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.server.start();
    this.unsubscribe = this.opts.state.onChange((c) => this.onStateChange(c));
    this.reauthTimer = setInterval(() => { void this.reauthenticateDue(); }, this.o.reauthTickMs);
    this.reauthTimer.unref();
    // Before the first Sync snapshot the registry is empty and every pinned entry would look orphaned.
    if (this.opts.state.nodes.size > 0) this.track(this.reconcile().then(() => {}));
    this.opts.logger.info('mutual-auth listening', { host: this.opts.listen.host, port: this.port });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.unsubscribe?.();
    if (this.reauthTimer) clearInterval(this.reauthTimer);
    if (this.flushHandle) clearImmediate(this.flushHandle);
    for (const [timer, wake] of this.sleeps) { clearTimeout(timer); wake(); }
    this.sleeps.clear();
    for (const items of this.queue.values()) for (const w of items) w.resolve(this.failed(w.request, FailureReason.stopped, 'mutual auth stopped'));
    this.queue.clear();
    await Promise.all([this.server.stop(), ...[...this.peers.values()].map((p) => p.close())]);
    await Promise.all([...this.running]);
    this.peers.clear();
  }

  stats(): MutualAuthStats {
    const s = this.core.snapshot();
    s.sessions.client = [...this.peers.values()].filter((p) => p.isConnected).length;
    s.sessions.server = this.server.sessionCount;
    return s;
  }

  /** Entries this agent wrote or adopted and keeps fresh. */
  get heldEntries(): number { return this.core.held.size; }

  /**
   * Authenticates pairs with their remote nodes: grouped by node, in batches
   * over one pooled session per node, retried with backoff when the peer is
   * unreachable. A pair already being authenticated is not asked for twice.
   * Pairs with remoteNodeId 0 (or this node's id) are between two local
   * endpoints: both SVIDs are held here, so they are checked and written
   * locally, with remoteNodeId 0.
   */
  authenticate(pairs: readonly PairRequest[]): Promise<AuthResult[]> {
    if (pairs.length === 0) return Promise.resolve([]);
    const localNode = this.opts.state.localNodeId;
    return new Promise((resolveAll) => {
      const results: AuthResult[] = new Array(pairs.length);
      let remaining = pairs.length;
      const done = (i: number, r: AuthResult): void => { results[i] = r; if (--remaining === 0) resolveAll(results); };
      const settled = (w: Waiting): void => { if (this.inflight.get(w.key) === w) this.inflight.delete(w.key); };
      pairs.forEach((request, i) => {
        if (!isU32(request.localIdentity) || !isU32(request.remoteIdentity) || !isU16(request.remoteNodeId)) {
          done(i, this.failed(request, FailureReason.malformed, 'identities are u32, node ids u16'));
          return;
        }
        if (this.stopped) { done(i, this.failed(request, FailureReason.stopped, 'mutual auth is stopped')); return; }
        const nodeId = request.remoteNodeId === localNode ? 0 : request.remoteNodeId;
        const key = `${request.localIdentity}/${request.remoteIdentity}/${nodeId}`;
        let w = this.inflight.get(key);
        if (!w) {
          w = new Waiting(key, request, [request.localIdentity, request.remoteIdentity], nodeId, settled);
          this.inflight.set(key, w);
          const list = this.queue.get(nodeId);
          if (list) list.push(w); else this.queue.set(nodeId, [w]);
        }
        w.wait(done, i);
      });
      if (this.queue.size > 0 && !this.flushHandle) this.flushHandle = setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    this.flushHandle = undefined;
    const queued = this.queue;
    this.queue = new Map();
    for (const [nodeId, items] of queued) {
      if (nodeId === 0) this.authenticateLocal(items);
      else this.track(this.authenticateWithNode(nodeId, items));
    }
  }

  private track(p: Promise<void>): void {
    const tracked = p.catch((err) => this.opts.logger.error('mutual-auth task failed', { err })).finally(() => this.running.delete(tracked));
    this.running.add(tracked);
  }

  private failed(request: PairRequest, reason: FailureReason, detail: string): AuthResult {
    return { pair: request, ok: false, reason, detail, retryable: TRANSIENT.has(reason) };
  }

  /** Resolves failures, counting and logging them once per (node, reason). */
  private settleFailures(nodeId: number, failures: { w: Waiting; reason: FailureReason; detail: string }[]): void {
    const byReason = new Map<string, { count: number; detail: string; example: PairRequest }>();
    for (const f of failures) {
      this.core.countFailure(f.reason);
      f.w.resolve(this.failed(f.w.request, f.reason, f.detail));
      const r = byReason.get(f.reason);
      if (r) r.count++; else byReason.set(f.reason, { count: 1, detail: f.detail, example: f.w.request });
    }
    for (const [reason, r] of byReason) {
      this.opts.logger.warn('mutual-auth pairs not authenticated', { side: 'client', node_id: nodeId, reason, count: r.count, detail: r.detail, example: r.example });
    }
  }

  /** This side's checks before a pair goes to the peer: the pairs that may go, and the failures of the rest. */
  private precheck(nodeId: number, items: Waiting[], failures: { w: Waiting; reason: FailureReason; detail: string }[]): Waiting[] {
    const core = this.core;
    const state = this.opts.state;
    const remaining: Waiting[] = [];
    const ownChecked = new Map<number, PairFailure | null>();
    for (const w of items) {
      const { localIdentity: l, remoteIdentity: r } = w.request;
      let f: PairFailure | null = null;
      if (!state.nodes.has(nodeId)) f = new PairFailure(FailureReason.unknownNode, `node ${nodeId} is not in the node registry`);
      else if (!state.identities.has(l) || !state.identities.has(r)) f = new PairFailure(FailureReason.unknownIdentity, `identity ${state.identities.has(l) ? r : l} is unknown`);
      else if (!core.hosts(state.localNodeId, l)) f = new PairFailure(FailureReason.localNotHosted, `this node hosts no endpoint of identity ${l}`);
      else if (!core.hosts(nodeId, r)) f = new PairFailure(FailureReason.remoteNotHosted, `node ${nodeId} hosts no endpoint of identity ${r}`);
      else {
        if (!ownChecked.has(l)) {
          try { core.ownWorkload(l); ownChecked.set(l, null); } catch (err) { if (!(err instanceof PairFailure)) throw err; ownChecked.set(l, err); }
        }
        f = ownChecked.get(l) ?? null;
      }
      if (f) failures.push({ w, reason: f.reason, detail: f.message }); else remaining.push(w);
    }
    return remaining;
  }

  /** A new pair (nothing in the auth map for it) that the peer refused for a reason its lag explains. */
  private peerMayCatchUp(w: Waiting, detail: string | undefined): boolean {
    if (detail === undefined || !PEER_LAG.has(detail)) return false;
    const { localIdentity, remoteIdentity } = w.request;
    return !this.core.held.has(authPairKey({ localIdentity, remoteIdentity, remoteNodeId: w.nodeId, authType: AuthType.mutual }));
  }

  private async authenticateWithNode(nodeId: number, items: Waiting[]): Promise<void> {
    const failures: { w: Waiting; reason: FailureReason; detail: string }[] = [];
    let remaining = this.precheck(nodeId, items, failures);

    const tunnel = this.opts.tunnel;
    if (remaining.length > 0 && tunnel && !tunnel.ready(nodeId) && !(await tunnel.wait(nodeId, this.o.tunnelWaitMs)) && !this.stopped) {
      this.opts.logger.warn('the tunnel to the node is not configured yet; authenticating its pairs all the same', { node_id: nodeId, waited_ms: this.o.tunnelWaitMs });
    }
    const peer = this.peer(nodeId);
    let lagged = false;
    for (let attempt = 1; remaining.length > 0; attempt++) {
      const retry: Waiting[] = [];
      const lagging: Waiting[] = [];
      const last = attempt >= this.o.maxAttempts || this.stopped;
      const lastForLag = attempt >= this.o.peerLagAttempts || this.stopped;
      await Promise.all(planBatches(remaining, this.o.maxBatchPairs).map(async (batch) => {
        let outcomes: PairOutcome[];
        try {
          if (this.stopped) throw new PairFailure(FailureReason.stopped, 'mutual auth stopped');
          outcomes = await peer.exchange(batch.map((w) => w.wire));
          tunnel?.peerConfigured?.(nodeId);
        } catch (err) {
          const f = err instanceof PairFailure ? err : new PairFailure(FailureReason.sessionClosed, (err as Error).message);
          if (!last && TRANSIENT.has(f.reason) && f.reason !== FailureReason.stopped) retry.push(...batch);
          else for (const w of batch) failures.push({ w, reason: f.reason, detail: f.message });
          return;
        }
        batch.forEach((w, k) => {
          const o = outcomes[k];
          if (o?.ok) w.resolve({ pair: w.request, ok: true, expiresAt: o.expiresAt });
          else if (!lastForLag && o?.reason === FailureReason.refusedByPeer && this.peerMayCatchUp(w, o.detail)) lagging.push(w);
          else failures.push({ w, reason: o?.reason ?? FailureReason.noAnswer, detail: o?.detail ?? 'no outcome' });
        });
      }));
      if (lagging.length > 0 && !lagged) {
        lagged = true;
        this.opts.logger.info('mutual-auth peer has not caught up with new pairs yet; asking again', { node_id: nodeId, count: lagging.length, example: lagging[0]!.request });
      }
      remaining = [...retry, ...lagging];
      if (remaining.length > 0) await this.sleep(Math.min(this.o.backoffMs * 2 ** (attempt - 1), MAX_LAG_WAIT_MS) * (0.75 + Math.random() / 2));
      // meanwhile our own view may have moved too (the pod went away): check again what asks the peer again
      if (lagging.length > 0) remaining = [...retry, ...this.precheck(nodeId, lagging, failures)];
      if (this.stopped) {
        for (const w of remaining) failures.push({ w, reason: FailureReason.stopped, detail: 'mutual auth stopped' });
        remaining = [];
      }
    }
    this.settleFailures(nodeId, failures);
  }

  /** Both endpoints on this node: the agent holds both SVIDs, so it checks them and writes the pair itself. */
  private authenticateLocal(items: Waiting[]): void {
    const core = this.core;
    const state = this.opts.state;
    const failures: { w: Waiting; reason: FailureReason; detail: string }[] = [];
    for (const w of items) {
      const { localIdentity: l, remoteIdentity: r } = w.request;
      try {
        if (!state.identities.has(l) || !state.identities.has(r)) throw new PairFailure(FailureReason.unknownIdentity, `identity ${state.identities.has(l) ? r : l} is unknown`);
        for (const id of [l, r]) if (!core.hosts(state.localNodeId, id)) throw new PairFailure(FailureReason.localNotHosted, `this node hosts no endpoint of identity ${id}`);
        const expiresAt = earliest(core.ownAgent().chain.expiresAt, core.ownWorkload(l).expiresAt, core.ownWorkload(r).expiresAt);
        core.write(l, r, 0, expiresAt, 'local');
        w.resolve({ pair: w.request, ok: true, expiresAt });
      } catch (err) {
        if (!(err instanceof PairFailure)) throw err;
        failures.push({ w, reason: err.reason, detail: err.message });
      }
    }
    this.settleFailures(0, failures);
  }

  private peer(nodeId: number): PeerClient {
    let p = this.peers.get(nodeId);
    if (!p) {
      p = new PeerClient({
        core: this.core, nodeId, contexts: this.contexts,
        peerAddress: this.opts.peerAddress ?? ((n) => ({ host: n.address, port: DEFAULT_PORT })),
        handshakeTimeoutMs: this.o.handshakeTimeoutMs, requestTimeoutMs: this.o.requestTimeoutMs,
        idleTimeoutMs: this.o.idleTimeoutMs, maxInFlightBatches: this.o.maxInFlightBatches,
      });
      this.peers.set(nodeId, p);
    }
    return p;
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.sleeps.delete(timer); resolve(); }, ms);
      this.sleeps.set(timer, resolve);
    });
  }

  /**
   * Re-authenticates entries before they expire: those this agent asked for
   * when `reauthFraction` of their lifetime is left; those a peer asked for
   * (it refreshes them itself) only when a sixth is left. Expired entries are
   * removed. A pair the peer now refuses outright is removed; one that could
   * not be checked (peer unreachable) stays until it expires.
   */
  async reauthenticateDue(): Promise<AuthResult[]> {
    if (this.stopped) return [];
    const now = this.core.now().getTime();
    const due: PairRequest[] = [];
    for (const h of this.core.held.values()) {
      const left = h.expiresAt.getTime() - now;
      if (left <= 0) {
        this.gc.remove(h.pair, 'expired');
        continue;
      }
      const lifetime = Math.max(0, h.expiresAt.getTime() - h.authenticatedAt.getTime());
      const threshold = h.role === 'server' ? lifetime / 6 : lifetime * this.o.reauthFraction;
      if (h.role === 'reconciled' || left <= threshold) due.push({ localIdentity: h.pair.localIdentity, remoteIdentity: h.pair.remoteIdentity, remoteNodeId: h.pair.remoteNodeId });
    }
    if (due.length === 0) return [];
    const results = await this.authenticate(due);
    this.dropRefused(results);
    return results;
  }

  private dropRefused(results: AuthResult[]): void {
    for (const r of results) {
      if (r.ok || r.retryable) continue;
      this.gc.remove({ ...r.pair, authType: AuthType.mutual }, 'refused');
    }
  }

  /**
   * Deletes the mutual-auth entries for which `why` names a reason (through the
   * collector, which counts them by it). Returns how many were deleted.
   */
  removeWhere(why: (pair: AuthPair, expiresAtBootNs: bigint) => RemovalReason | undefined): number {
    return this.gc.sweep(why);
  }

  /** Why an entry no longer belongs in the map as the registry stands, if it does not. */
  private orphanReason(p: AuthPair): RemovalReason | undefined {
    const state = this.opts.state;
    if (!state.identities.has(p.localIdentity) || !state.identities.has(p.remoteIdentity)) return 'identity_gone';
    if (p.remoteNodeId !== 0 && !state.nodes.has(p.remoteNodeId)) return 'node_gone';
    if (!this.core.hosts(state.localNodeId, p.localIdentity)) return 'endpoint_gone';
    if (!this.core.hosts(p.remoteNodeId === 0 ? state.localNodeId : p.remoteNodeId, p.remoteIdentity)) return 'endpoint_gone';
    return undefined;
  }

  /** Removes entries whose identities, node or endpoints went away. */
  collectOrphans(): number {
    return this.gc.sweep((p) => this.orphanReason(p));
  }

  /**
   * At start: the pinned auth map survived a restart. Entries whose identity,
   * node or endpoints went away, or that expired, are removed; the rest stay
   * (the datapath keeps working) and are authenticated again now, and removed
   * only if the peer refuses them.
   */
  async reconcile(): Promise<AuthResult[]> {
    this.reconciled = true;
    const fromBootNs = this.opts.fromBootNs ?? bootNsToWallClock;
    const now = this.core.now();
    const recheck: PairRequest[] = [];
    let dropped = 0;
    for (const { pair, expiresAtBootNs } of [...this.opts.authMap.entries()]) {
      if (pair.authType !== AuthType.mutual) continue;
      const expiresAt = fromBootNs(expiresAtBootNs);
      const why = expiresAt <= now ? 'expired' : this.orphanReason(pair);
      if (why) { this.gc.remove(pair, why); dropped++; continue; }
      const key = authPairKey(pair);
      if (!this.core.held.has(key)) this.core.held.set(key, { pair, expiresAt, authenticatedAt: now, role: 'reconciled' });
      recheck.push({ localIdentity: pair.localIdentity, remoteIdentity: pair.remoteIdentity, remoteNodeId: pair.remoteNodeId });
    }
    this.opts.logger.info('mutual-auth reconciled the auth map', { kept: recheck.length, dropped });
    if (recheck.length === 0) return [];
    const results = await this.authenticate(recheck);
    this.dropRefused(results);
    return results;
  }

  private onStateChange(c: StateChange): void {
    const goneIds = new Set(c.identities.removed);
    const goneNodes = new Set(c.nodes.removed);
    // A node whose agent changed (re-attested, evicted): end sessions with the old agent.
    for (const id of c.nodes.upserted) this.peers.get(id)?.dropStaleSession();
    if (c.nodes.upserted.length > 0) this.server.closeStale();
    for (const id of goneNodes) {
      const p = this.peers.get(id);
      if (p) { void p.close(); this.peers.delete(id); }
      this.server.closeNode(id);
    }
    if (goneIds.size > 0 || goneNodes.size > 0) {
      this.gc.sweep((p) => (goneIds.has(p.localIdentity) || goneIds.has(p.remoteIdentity) ? 'identity_gone'
        : p.remoteNodeId !== 0 && goneNodes.has(p.remoteNodeId) ? 'node_gone' : undefined));
    }
    if (!this.reconciled && c.snapshot && !this.stopped && this.started) this.track(this.reconcile().then(() => {}));
  }

  /** Exposes the counters as gauges in the agent's registry. */
  registerMetrics(registry: MetricsRegistry): void {
    const pairs = registry.gauge('meshid_agent_mutual_auth_pairs_authenticated', 'Pairs authenticated since start, by role (client, server, local).');
    pairs.collect(() => { const s = this.stats(); for (const [role, n] of Object.entries(s.pairsAuthenticated)) pairs.set(n, { role }); });
    const failures = registry.gauge('meshid_agent_mutual_auth_failures', 'Pairs or sessions not authenticated since start, by reason.');
    failures.collect(() => { for (const [reason, n] of Object.entries(this.stats().failures)) failures.set(n, { reason }); });
    const handshakes = registry.gauge('meshid_agent_mutual_auth_handshakes', 'TLS sessions with peer agents since start, by side (client, server, failed).');
    handshakes.collect(() => { for (const [side, n] of Object.entries(this.stats().handshakes)) handshakes.set(n, { side }); });
    const batches = registry.gauge('meshid_agent_mutual_auth_batches', 'Batches sent (as client) and served (as server) since start.');
    batches.collect(() => { const b = this.stats().batches; batches.set(b.sent, { direction: 'sent' }); batches.set(b.served, { direction: 'served' }); });
    const sessions = registry.gauge('meshid_agent_mutual_auth_sessions', 'Open sessions with peer agents, by side.');
    sessions.collect(() => { const s = this.stats().sessions; sessions.set(s.client, { side: 'client' }); sessions.set(s.server, { side: 'server' }); });
    this.gc.registerMetrics(registry);
    const entries = registry.gauge('meshid_agent_mutual_auth_entries', 'Auth map entries this agent keeps fresh.');
    entries.collect(() => entries.set(this.core.held.size));
  }
}
