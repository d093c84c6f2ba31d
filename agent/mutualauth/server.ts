/**
 * The server half: accepts TLS sessions from peer agents on the mutual-auth
 * port, maps each client's agent SVID to its node through the node registry
 * (unknown agents are refused), and answers authenticate batches.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { ConnectionsPerKey } from '../../common/connlimit.js';
import type { SpiffeId } from '../../spiffe/index.js';
import { AuthCore, earliestOf, FailureReason, PairFailure, type OwnWorkload, type TunnelReadiness } from './core.js';
import { decodeAuthenticate, encodeProof, pairKey, pairsOf, proofInput, ProtocolError, signProof, type ResultMsg, type WirePair } from './protocol.js';
import { acceptSession, SecureContextCache, type Session } from './session.js';

export interface AuthServerOptions {
  core: AuthCore;
  listen: { host: string; port: number };
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
  maxSessions: number;
  /** Connections (handshaking or in session) one source address may hold; more are closed before TLS. */
  maxPerSource: number;
  /** Batches from a node wait (up to tunnelWaitMs) for the tunnel to it to be configured here. */
  tunnel?: TunnelReadiness;
  tunnelWaitMs?: number;
}

interface ServerSession {
  session: Session;
  nodeId: number;
  agentId: SpiffeId;
  /** Batch ids must increase within a session: a proof is never accepted twice. */
  lastBatch: number;
  /** Batches waiting, in order, for the tunnel to the client's node. */
  waiting?: unknown[];
}

/** Stop reading from a client while this much of our answers is still unsent. */
const MAX_UNSENT_BYTES = 16 * 1024 * 1024;

export class AuthServer {
  private server: Server | undefined;
  private readonly sessions = new Set<ServerSession>();
  private readonly handshaking = new Set<Socket>();
  private readonly contexts = new SecureContextCache();
  /** Open connections by source address. */
  private perSource: ConnectionsPerKey | undefined;
  private registered: { revision: number; addresses: Set<string> } | undefined;
  port = 0;

  constructor(private readonly opts: AuthServerOptions) {}

  private get core(): AuthCore { return this.opts.core; }

  async start(): Promise<number> {
    const server = createServer((raw) => this.onConnection(raw));
    server.maxConnections = this.opts.maxSessions;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.listen.port, this.opts.listen.host, () => { server.off('error', reject); resolve(); });
    });
    server.on('error', (err) => this.core.log.error('mutual-auth listener failed', { err }));
    this.server = server;
    const addr = server.address();
    this.port = addr && typeof addr === 'object' ? addr.port : this.opts.listen.port;
    return this.port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const raw of this.handshaking) raw.destroy();
    await Promise.all([...this.sessions].map((s) => s.session.close(undefined, 200)));
    await closed;
    // 'close' is emitted before libuv releases the handle (close callbacks run after this loop turn's check phase).
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  get sessionCount(): number { return this.sessions.size; }

  /** Ends the sessions of a node's agent (the node went away, or its agent changed). */
  closeNode(nodeId: number): void {
    for (const s of this.sessions) if (s.nodeId === nodeId) void s.session.close({ type: 'refused', reason: FailureReason.unknownAgent });
  }

  /** Ends the sessions whose agent the registry no longer holds for their node. */
  closeStale(): void {
    for (const s of this.sessions) {
      if (!this.core.speaksFor(s.agentId, s.nodeId)) this.refuseSession(s, FailureReason.unknownAgent, `agent ${s.agentId} is no longer registered for node ${s.nodeId}`);
    }
  }

  /** The underlay addresses of the nodes in the registry: the only sources a peer agent connects from. */
  private registeredAddresses(): Set<string> {
    const state = this.core.state;
    if (this.registered?.revision !== state.revision) {
      this.registered = { revision: state.revision, addresses: new Set([...state.nodes.values()].map((n) => n.address).filter((a) => a !== '')) };
    }
    return this.registered.addresses;
  }

  /**
   * Before any TLS: a source that is no node of the registry is closed at
   * once, and a node's address holds at most maxPerSource connections, so a
   * flood can neither fill the listener nor make a real peer wait.
   */
  private onConnection(raw: Socket): void {
    const source = (raw.remoteAddress ?? '').replace(/^::ffff:/, '');
    if (!this.registeredAddresses().has(source)) {
      this.core.countFailure('unregistered_source');
      raw.destroy();
      return;
    }
    this.perSource ??= new ConnectionsPerKey(this.opts.maxPerSource);
    if (!this.perSource.admit(source, raw)) {
      this.core.countFailure('source_limit');
      raw.destroy();
      return;
    }
    this.handshaking.add(raw);
    raw.once('close', () => this.handshaking.delete(raw));
    let context;
    try { context = this.contexts.get(this.core.ownAgent().material); } catch (err) {
      this.core.log.error('mutual-auth cannot serve: no usable agent SVID', { err });
      raw.destroy();
      return;
    }
    acceptSession(raw, context, this.opts.handshakeTimeoutMs).then(
      (session) => { this.handshaking.delete(raw); this.admit(session); },
      (err: Error) => {
        this.core.stats.handshakes.failed++;
        this.core.log.debug('mutual-auth handshake failed', { peer: raw.remoteAddress, err });
      },
    );
  }

  /** Decides whether the client's agent is one we talk to, then serves its batches. */
  private admit(session: Session): void {
    const core = this.core;
    let nodeId: number;
    let agentId: SpiffeId;
    try {
      const peer = core.checkPeerAgent(session.peerChain);
      agentId = peer.chain.spiffeId;
      nodeId = peer.nodeId;
      if (nodeId === 0) throw new PairFailure(FailureReason.unknownAgent, `agent ${agentId} is not registered for any node`);
      if (nodeId === core.state.localNodeId) throw new PairFailure(FailureReason.peerAgentMismatch, `agent ${agentId} claims this node`);
    } catch (err) {
      const reason = err instanceof PairFailure ? err.reason : FailureReason.peerAgentUntrusted;
      core.stats.handshakes.failed++;
      core.countFailure(reason);
      core.log.warn('mutual-auth session refused', { reason, detail: (err as Error).message, peer: session.socket.remoteAddress });
      void session.close({ type: 'refused', reason });
      return;
    }
    core.stats.handshakes.server++;
    const s: ServerSession = { session, nodeId, agentId, lastBatch: -1 };
    this.sessions.add(s);
    core.stats.sessions.server = this.sessions.size;
    void session.closed.then(() => { this.sessions.delete(s); core.stats.sessions.server = this.sessions.size; });
    session.socket.setTimeout(this.opts.idleTimeoutMs, () => void session.close());
    session.listen(
      (msg) => this.receive(s, msg),
      (err) => { core.countFailure(FailureReason.malformed); core.log.warn('mutual-auth session broken', { node_id: nodeId, detail: err.message }); },
    );
  }

  private refuseSession(s: ServerSession, reason: FailureReason, detail: string): void {
    this.core.countFailure(reason);
    this.core.log.warn('mutual-auth session ended', { node_id: s.nodeId, agent_id: s.agentId, reason, detail });
    void s.session.close({ type: 'refused', reason });
  }

  /**
   * Answers at once when the tunnel to the client's node is configured here;
   * otherwise holds this and later batches, in order, until it is (or the wait
   * ends), so an accepted pair finds the tunnel on this side too.
   */
  private receive(s: ServerSession, msg: unknown): void {
    const tunnel = this.opts.tunnel;
    if (s.waiting) { s.waiting.push(msg); return; }
    // the client sent this after waiting for its own side of the tunnel
    tunnel?.peerConfigured?.(s.nodeId);
    if (!tunnel || tunnel.ready(s.nodeId)) { this.onBatch(s, msg); return; }
    const waiting = [msg];
    s.waiting = waiting;
    const waitMs = this.opts.tunnelWaitMs ?? 5_000;
    void tunnel.wait(s.nodeId, waitMs).then((ok) => {
      if (!ok) this.core.log.warn('the tunnel to the node is not configured yet; answering its batches all the same', { node_id: s.nodeId, waited_ms: waitMs });
      s.waiting = undefined;
      for (const m of waiting) if (s.session.isOpen) this.onBatch(s, m);
    });
  }

  private onBatch(s: ServerSession, msg: unknown): void {
    const core = this.core;
    const state = core.state;
    let req;
    try { req = decodeAuthenticate(msg); } catch (err) {
      this.refuseSession(s, FailureReason.malformed, (err as ProtocolError).message);
      return;
    }
    if (req.batch <= s.lastBatch) { this.refuseSession(s, FailureReason.replayedBatch, `batch ${req.batch} after ${s.lastBatch}`); return; }
    s.lastBatch = req.batch;

    // The session is only as good as the registry and the certificates still are.
    if (!core.speaksFor(s.agentId, s.nodeId)) {
      this.refuseSession(s, FailureReason.unknownAgent, `agent ${s.agentId} is no longer registered for node ${s.nodeId}`);
      return;
    }
    let peerAgentExpiry: Date;
    let ownAgentExpiry: Date;
    try {
      peerAgentExpiry = core.checkPeerAgent(s.session.peerChain, false).chain.expiresAt;
      ownAgentExpiry = core.ownAgent().chain.expiresAt;
    } catch (err) {
      const f = err as PairFailure;
      this.refuseSession(s, f.reason ?? FailureReason.peerAgentUntrusted, f.message);
      return;
    }
    const seen = new Map<number, Set<number>>();
    for (const [c, srv] of req.pairs) {
      let row = seen.get(c);
      if (!row) { row = new Set(); seen.set(c, row); }
      if (row.has(srv)) { this.refuseSession(s, FailureReason.malformed, `pair ${c}:${srv} appears twice in batch ${req.batch}`); return; }
      row.add(srv);
    }
    core.stats.batches.served++;

    const ekm = s.session.ekm;
    const now = core.now();
    const proofs = new Map(req.proofs.map((p) => [p.identity, p]));
    const clientChecks = new Map<number, Date | PairFailure>();
    const own = new Map<number, OwnWorkload | PairFailure>();
    const attempt = <T>(fn: () => T): T | PairFailure => { try { return fn(); } catch (err) { if (err instanceof PairFailure) return err; throw err; } };

    const verdicts: ResultMsg['verdicts'] = new Array(req.pairs.length);
    const accepted: WirePair[] = [];
    const acceptedExpiry: Date[] = [];
    const refusals = new Map<string, { count: number; example: string }>();
    const refuse = (k: number, f: PairFailure): void => {
      verdicts[k] = f.reason;
      core.countFailure(f.reason);
      const r = refusals.get(f.reason);
      if (r) r.count++; else refusals.set(f.reason, { count: 1, example: f.message });
    };
    const sessionExpiry = Math.min(peerAgentExpiry.getTime(), ownAgentExpiry.getTime());
    req.pairs.forEach((p, k) => {
      const [c, srv] = p;
      if (!state.identities.has(c) || !state.identities.has(srv)) { refuse(k, new PairFailure(FailureReason.unknownIdentity, `pair ${pairKey(p)} names an unknown identity`)); return; }
      if (!core.hosts(s.nodeId, c)) { refuse(k, new PairFailure(FailureReason.remoteNotHosted, `node ${s.nodeId} hosts no endpoint of identity ${c}`)); return; }
      if (!core.hosts(state.localNodeId, srv)) { refuse(k, new PairFailure(FailureReason.localNotHosted, `this node hosts no endpoint of identity ${srv}`)); return; }
      let cc = clientChecks.get(c);
      if (cc === undefined) {
        cc = attempt(() => core.checkPeerProof(proofs.get(c), 'client', ekm, req.batch, c, pairsOf('client', c, req.pairs)));
        clientChecks.set(c, cc);
      }
      if (cc instanceof PairFailure) { refuse(k, cc); return; }
      let mine = own.get(srv);
      if (mine === undefined) { mine = attempt(() => core.ownWorkload(srv)); own.set(srv, mine); }
      if (mine instanceof PairFailure) { refuse(k, mine); return; }
      verdicts[k] = 0;
      accepted.push(p);
      acceptedExpiry.push(earliestOf(sessionExpiry, cc, mine.expiresAt));
    });

    // Written before answering: when the client sees success, both maps hold the pair.
    accepted.forEach(([c, srv], k) => core.write(srv, c, s.nodeId, acceptedExpiry[k]!, 'server', now));
    const outProofs = [...new Set(accepted.map((p) => p[1]))].map((srv) => {
      const mine = own.get(srv) as OwnWorkload;
      return encodeProof(srv, mine.chain, signProof(mine.key, proofInput(ekm, 'server', req.batch, srv, pairsOf('server', srv, accepted))));
    });
    for (const [reason, r] of refusals) {
      core.log.warn('mutual-auth pairs refused', { side: 'server', node_id: s.nodeId, agent_id: s.agentId, batch: req.batch, reason, count: r.count, detail: r.example });
    }
    const reply: ResultMsg = { type: 'result', batch: req.batch, verdicts, proofs: outProofs };
    s.session.send(reply);
    const sock = s.session.socket;
    if (sock.writableLength > MAX_UNSENT_BYTES) { sock.pause(); sock.once('drain', () => sock.resume()); }
  }
}
