/**
 * The client half: one long-lived TLS session per peer node, over which
 * batches of pairs are authenticated, several in flight at once.
 */
import { matchId, type SpiffeId } from '../../spiffe/index.js';
import type { MeshNode } from '../sync/index.js';
import { AuthCore, earliestOf, FailureReason, PairFailure, type OwnWorkload } from './core.js';
import {
  decodeServerMsg, encodeProof, pairsOf, proofInput, ProtocolError, signProof,
  type AuthenticateMsg, type DecodedResult, type WirePair,
} from './protocol.js';
import { connectSession, SecureContextCache, type Session } from './session.js';

export interface PeerClientOptions {
  core: AuthCore;
  nodeId: number;
  contexts: SecureContextCache;
  peerAddress: (node: MeshNode) => { host: string; port: number };
  handshakeTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxInFlightBatches: number;
}

/** The outcome of one pair of a batch; a thrown PairFailure instead means the whole batch failed in transit. */
export type PairOutcome = { ok: true; expiresAt: Date } | { ok: false; reason: FailureReason; detail: string };

interface Pending { resolve: (r: DecodedResult) => void; reject: (e: PairFailure) => void; timer: NodeJS.Timeout }

interface Connected { session: Session; peerAgentId: SpiffeId; ownLeaf: Buffer; refusal?: string }

/**
 * Cuts pairs into batches that each cover a square-ish tile of (client
 * identity × server identity): a batch of n pairs then needs about 2·√n
 * proofs per side instead of up to n + 1. Tiles are balanced (100 remote
 * identities make 4 columns of 25, not 3 of 32 and one of 4); small tiles
 * share a batch, big ones are split.
 */
export function planBatches<T extends { wire: WirePair }>(items: readonly T[], maxBatch: number): T[][] {
  if (items.length === 0) return [];
  const index = (values: number[]): Map<number, number> => new Map([...new Set(values)].sort((a, b) => a - b).map((v, i) => [v, i]));
  const li = index(items.map((i) => i.wire[0]));
  const ri = index(items.map((i) => i.wire[1]));
  const balanced = (n: number, size: number): number => Math.ceil(n / Math.ceil(n / Math.max(1, size)));
  const rSize = balanced(ri.size, Math.ceil(Math.sqrt(maxBatch)));
  const lSize = balanced(li.size, Math.floor(maxBatch / rSize));
  const tiles = new Map<number, T[]>();
  const columns = Math.ceil(ri.size / rSize);
  for (const item of items) {
    const tile = Math.floor(li.get(item.wire[0])! / lSize) * columns + Math.floor(ri.get(item.wire[1])! / rSize);
    let list = tiles.get(tile);
    if (!list) { list = []; tiles.set(tile, list); }
    list.push(item);
  }
  const out: T[][] = [];
  let current: T[] = [];
  for (const tile of [...tiles.keys()].sort((a, b) => a - b)) {
    const list = tiles.get(tile)!;
    if (current.length + list.length > maxBatch && current.length > 0) { out.push(current); current = []; }
    for (let i = 0; i < list.length; i += maxBatch) {
      const piece = list.slice(i, i + maxBatch);
      if (current.length + piece.length > maxBatch) { out.push(current); current = []; }
      current.push(...piece);
    }
  }
  if (current.length > 0) out.push(current);
  return out;
}

export class PeerClient {
  private connected: Connected | undefined;
  private connecting: Promise<Connected> | undefined;
  private nextBatch = 1;
  private readonly pending = new Map<number, Pending>();
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private closedForGood = false;

  constructor(private readonly opts: PeerClientOptions) {}

  private get core(): AuthCore { return this.opts.core; }
  get isConnected(): boolean { return this.connected?.session.isOpen ?? false; }

  /** Authenticates one batch of [local identity, remote identity] pairs with this node; outcomes align with `pairs`. */
  async exchange(pairs: WirePair[]): Promise<PairOutcome[]> {
    await this.slot();
    try {
      return await this.exchangeInSlot(pairs);
    } finally {
      this.inFlight--;
      this.slotWaiters.shift()?.();
    }
  }

  private slot(): Promise<void> {
    if (this.inFlight < this.opts.maxInFlightBatches) { this.inFlight++; return Promise.resolve(); }
    return new Promise((resolve) => this.slotWaiters.push(() => { this.inFlight++; resolve(); }));
  }

  private async exchangeInSlot(pairs: WirePair[]): Promise<PairOutcome[]> {
    const core = this.core;
    const conn = await this.session();
    const ownAgentExpiry = core.ownAgent().chain.expiresAt;
    let peerAgentExpiry: Date;
    try { peerAgentExpiry = core.checkPeerAgent(conn.session.peerChain, false).chain.expiresAt; } catch (err) {
      void conn.session.close();
      throw err;
    }
    const out: PairOutcome[] = new Array(pairs.length);
    const fail = (i: number, f: PairFailure): void => { out[i] = { ok: false, reason: f.reason, detail: f.message }; };

    // Our proofs: one signature per local identity over the pairs it takes part in.
    const own = new Map<number, OwnWorkload | PairFailure>();
    const sentIndex: number[] = [];
    pairs.forEach((p, i) => {
      let w = own.get(p[0]);
      if (w === undefined) {
        try { w = core.ownWorkload(p[0]); } catch (err) { if (!(err instanceof PairFailure)) throw err; w = err; }
        own.set(p[0], w);
      }
      if (w instanceof PairFailure) fail(i, w); else sentIndex.push(i);
    });
    if (sentIndex.length === 0) return out;
    const sent = sentIndex.map((i) => pairs[i]!);
    const batch = this.nextBatch++;
    const ekm = conn.session.ekm;
    const proofs = [];
    for (const [id, w] of own) {
      if (!(w instanceof PairFailure)) proofs.push(encodeProof(id, w.chain, signProof(w.key, proofInput(ekm, 'client', batch, id, pairsOf('client', id, sent)))));
    }
    const msg: AuthenticateMsg = { type: 'authenticate', batch, pairs: sent, proofs };
    const reply = this.awaitReply(conn, batch);
    conn.session.send(msg);
    core.stats.batches.sent++;
    const result = await reply;
    if (result.verdicts.length !== sent.length) {
      void conn.session.close();
      throw new PairFailure(FailureReason.malformed, `peer answered ${result.verdicts.length} verdicts for the ${sent.length} pairs of batch ${batch}`);
    }

    const accepted: WirePair[] = [];
    const acceptedIndex: number[] = [];
    result.verdicts.forEach((v, k) => {
      if (v === 0) { accepted.push(sent[k]!); acceptedIndex.push(sentIndex[k]!); }
      else out[sentIndex[k]!] = { ok: false, reason: FailureReason.refusedByPeer, detail: v };
    });
    const serverProofs = new Map(result.proofs.map((p) => [p.identity, p]));
    const serverChecks = new Map<number, Date | PairFailure>();
    const nodeId = this.opts.nodeId;
    const now = core.now();
    const sessionExpiry = Math.min(ownAgentExpiry.getTime(), peerAgentExpiry.getTime());
    accepted.forEach(([c, s], k) => {
      const i = acceptedIndex[k]!;
      if (!core.hosts(nodeId, s)) { fail(i, new PairFailure(FailureReason.remoteNotHosted, `node ${nodeId} hosts no endpoint of identity ${s}`)); return; }
      let check = serverChecks.get(s);
      if (check === undefined) {
        try { check = core.checkPeerProof(serverProofs.get(s), 'server', ekm, batch, s, pairsOf('server', s, accepted)); } catch (err) {
          if (!(err instanceof PairFailure)) throw err;
          check = err;
        }
        serverChecks.set(s, check);
      }
      if (check instanceof PairFailure) { fail(i, check); return; }
      const expiresAt = earliestOf(sessionExpiry, (own.get(c) as OwnWorkload).expiresAt, check);
      core.write(c, s, nodeId, expiresAt, 'client', now);
      out[i] = { ok: true, expiresAt };
    });
    return out;
  }

  private awaitReply(conn: Connected, batch: number): Promise<DecodedResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(batch);
        reject(new PairFailure(FailureReason.timeout, `no answer to batch ${batch} within ${this.opts.requestTimeoutMs} ms`));
        // A pipelined session with a lost answer is in an unknown state: start afresh.
        void conn.session.close();
      }, this.opts.requestTimeoutMs);
      this.pending.set(batch, { resolve, reject, timer });
    });
  }

  private failPending(f: PairFailure): void {
    for (const [batch, p] of this.pending) { clearTimeout(p.timer); this.pending.delete(batch); p.reject(f); }
  }

  /** The pooled session, (re)connected and re-checked as needed. */
  private async session(): Promise<Connected> {
    const core = this.core;
    const c = this.connected;
    if (c && c.session.isOpen) {
      const node = core.state.nodes.get(this.opts.nodeId);
      const ownLeaf = core.opts.agentSvid().chain[0];
      if (node?.agentId?.equals(c.peerAgentId) && ownLeaf && ownLeaf.equals(c.ownLeaf)) return c;
      // The registry changed the node's agent, or our agent SVID was renewed: a new session.
      this.connected = undefined;
      void c.session.close();
    }
    if (!this.connecting) {
      this.connecting = this.connect().finally(() => { this.connecting = undefined; });
    }
    return this.connecting;
  }

  private async connect(): Promise<Connected> {
    const core = this.core;
    if (this.closedForGood) throw new PairFailure(FailureReason.stopped, 'mutual auth is stopping');
    const node = core.state.nodes.get(this.opts.nodeId);
    if (!node) throw new PairFailure(FailureReason.unknownNode, `node ${this.opts.nodeId} is not in the node registry`);
    const own = core.ownAgent();
    const { host, port } = this.opts.peerAddress(node);
    let session: Session;
    try {
      session = await connectSession({ host, port, context: this.opts.contexts.get(own.material), timeoutMs: this.opts.handshakeTimeoutMs });
    } catch (err) {
      core.stats.handshakes.failed++;
      throw new PairFailure(FailureReason.unreachable, `cannot reach node ${node.id} at ${host}:${port}: ${(err as Error).message}`);
    }
    if (this.closedForGood) { session.destroy(); throw new PairFailure(FailureReason.stopped, 'mutual auth is stopping'); }
    let peerAgentId: SpiffeId;
    try {
      const peer = core.checkPeerAgent(session.peerChain);
      peerAgentId = peer.chain.spiffeId;
      const wrong = node.agentId ? matchId(node.agentId)(peerAgentId) : `node ${node.id} has no agent registered`;
      if (wrong) {
        throw new PairFailure(FailureReason.peerAgentMismatch, `node ${node.id} is registered to agent ${node.agentId ?? 'none'}, the peer at ${host}:${port} is ${peerAgentId}`);
      }
    } catch (err) {
      core.stats.handshakes.failed++;
      session.destroy();
      throw err;
    }
    core.stats.handshakes.client++;
    const conn: Connected = { session, peerAgentId, ownLeaf: own.material.chain[0]! };
    session.listen(
      (msg) => this.onMessage(conn, msg),
      (err) => this.failPending(new PairFailure(FailureReason.malformed, `peer sent a bad frame: ${err.message}`)),
    );
    session.socket.setTimeout(this.opts.idleTimeoutMs, () => { if (this.pending.size === 0) void session.close(); });
    void session.closed.then(() => {
      if (this.connected === conn) this.connected = undefined;
      this.failPending(conn.refusal !== undefined
        ? new PairFailure(FailureReason.sessionRefused, conn.refusal)
        : new PairFailure(FailureReason.sessionClosed, `session with node ${this.opts.nodeId} closed`));
    });
    this.connected = conn;
    return conn;
  }

  private onMessage(conn: Connected, msg: unknown): void {
    let m;
    try { m = decodeServerMsg(msg); } catch (err) {
      this.failPending(new PairFailure(FailureReason.malformed, `peer sent a bad message: ${(err as ProtocolError).message}`));
      void conn.session.close();
      return;
    }
    if ('sessionRefused' in m) {
      conn.refusal = m.sessionRefused;
      this.core.log.warn('mutual-auth session refused by peer', { node_id: this.opts.nodeId, detail: m.sessionRefused });
      this.failPending(new PairFailure(FailureReason.sessionRefused, m.sessionRefused));
      void conn.session.close();
      return;
    }
    const p = this.pending.get(m.batch);
    if (!p) return;
    this.pending.delete(m.batch);
    clearTimeout(p.timer);
    p.resolve(m);
  }

  /** Ends the session if the registry no longer holds its agent for this node. */
  dropStaleSession(): void {
    const c = this.connected;
    if (c && !this.core.speaksFor(c.peerAgentId, this.opts.nodeId)) {
      this.connected = undefined;
      void c.session.close();
    }
  }

  async close(): Promise<void> {
    this.closedForGood = true;
    const c = this.connected;
    this.connected = undefined;
    const connecting = this.connecting;
    if (c) await c.session.close(undefined, 200);
    if (connecting) {
      try { const late = await connecting; await late.session.close(undefined, 200); } catch { /* it failed: nothing to close */ }
    }
    this.failPending(new PairFailure(FailureReason.stopped, 'mutual auth stopped'));
  }
}
