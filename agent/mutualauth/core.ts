/**
 * What the client and server halves share: the node and identity registry
 * (from the Sync state), the agent's own SVIDs, chain validation, the checks
 * on a peer's proofs, auth-map writes, and the counters.
 */
import type { KeyObject } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { AuthType, type AuthPair } from '../../bpf/index.js';
import { matchAgentOf, type Matcher, matchId, SpiffeId } from '../../spiffe/index.js';
import type { AgentState } from '../sync/index.js';
import { authPairKey, type AuthMapWriter } from './authmap.js';
import { ChainValidator, type ValidatedChain } from './chains.js';
import { proofInput, verifyProof, type Proof, type Side, type WirePair } from './protocol.js';

/** Why a pair was not authenticated; stable strings, used as counter labels and sent to the peer. */
export const FailureReason = {
  unknownNode: 'unknown-node',
  unknownIdentity: 'unknown-identity',
  /** This node does not host an endpoint of its side's identity. */
  localNotHosted: 'local-not-hosted',
  /** The peer's node does not host an endpoint of the identity it claims. */
  remoteNotHosted: 'remote-not-hosted',
  noLocalSvid: 'no-local-svid',
  localSvidInvalid: 'local-svid-invalid',
  localAgentSvidInvalid: 'local-agent-svid-invalid',
  /** The peer agent's chain does not validate against the bundle, or is not an agent ID of this trust domain. */
  peerAgentUntrusted: 'peer-agent-untrusted',
  /** The peer agent is valid but not the one the node registry holds for the node. */
  peerAgentMismatch: 'peer-agent-mismatch',
  /** (server) The client's agent ID is not registered for any node. */
  unknownAgent: 'unknown-agent',
  peerSvidInvalid: 'peer-svid-invalid',
  /** The peer's workload SVID is valid but for another SPIFFE ID than the identity's ServiceAccount. */
  peerSvidMismatch: 'peer-svid-mismatch',
  missingProof: 'missing-proof',
  badSignature: 'bad-signature',
  replayedBatch: 'replayed-batch',
  malformed: 'malformed',
  /** The peer refused the pair; its reason is in `detail`. */
  refusedByPeer: 'refused-by-peer',
  /** The peer ended the session (e.g. it does not know our agent yet); its reason is in `detail`. */
  sessionRefused: 'session-refused',
  /** The peer did not answer for a pair it was asked about. */
  noAnswer: 'no-answer',
  unreachable: 'unreachable',
  timeout: 'timeout',
  sessionClosed: 'session-closed',
  stopped: 'stopped',
} as const;
export type FailureReason = typeof FailureReason[keyof typeof FailureReason];

export class PairFailure extends Error {
  constructor(readonly reason: FailureReason, message: string) { super(message); this.name = 'PairFailure'; }
}

/** Whether this node's tunnel to a peer node can carry traffic yet (NodeMembership, with WireGuard). */
export interface TunnelReadiness {
  /** True once the tunnel to the node is configured here as the node registry describes it. */
  ready(nodeId: number): boolean;
  /** Resolves true when ready(nodeId), false when timeoutMs pass first or the node leaves the registry. */
  wait(nodeId: number, timeoutMs: number): Promise<boolean>;
  /**
   * The peer node has its side of the tunnel configured too: it answered a
   * batch, or sent one, after waiting for it. The side that leads the pair of
   * nodes may start the tunnel's handshake now.
   */
  peerConfigured?(nodeId: number): void;
}

export interface SvidMaterial { chain: readonly Buffer[]; key: KeyObject }

/** An own workload SVID, validated and ready to sign with. */
export interface OwnWorkload { chain: readonly Buffer[]; key: KeyObject; expiresAt: Date }

/** An own or peer agent SVID, validated. */
export interface AgentCheck { ok: true; chain: ValidatedChain; nodeId: number }

export interface MutualAuthStats {
  pairsAuthenticated: { client: number; server: number; local: number };
  failures: Record<string, number>;
  handshakes: { client: number; server: number; failed: number };
  batches: { sent: number; served: number };
  chainCache: { size: number; hits: number; misses: number };
  sessions: { client: number; server: number };
}

export interface CoreOptions {
  state: AgentState;
  agentSvid: () => SvidMaterial;
  workloadSvid: (spiffeId: SpiffeId) => SvidMaterial | undefined;
  authMap: AuthMapWriter;
  clock: Clock;
  logger: Logger;
  toBootNs: (d: Date) => bigint;
}

/** An auth entry this agent wrote, remembered for re-authentication. */
export interface HeldEntry { pair: AuthPair; expiresAt: Date; authenticatedAt: Date; role: 'client' | 'server' | 'local' | 'reconciled' }

export class AuthCore {
  readonly validator: ChainValidator;
  readonly held = new Map<string, HeldEntry>();
  readonly stats: MutualAuthStats = {
    pairsAuthenticated: { client: 0, server: 0, local: 0 }, failures: {},
    handshakes: { client: 0, server: 0, failed: 0 }, batches: { sent: 0, served: 0 },
    chainCache: { size: 0, hits: 0, misses: 0 }, sessions: { client: 0, server: 0 },
  };

  private readonly isPeerAgent: Matcher;

  constructor(readonly opts: CoreOptions) {
    this.validator = new ChainValidator(() => opts.state.bundles, opts.clock);
    this.isPeerAgent = matchAgentOf(opts.state.trustDomain);
  }

  get state(): AgentState { return this.opts.state; }
  get log(): Logger { return this.opts.logger; }
  now(): Date { return this.opts.clock.now(); }

  /** Whether `nodeId` hosts an endpoint of `identity` (per the state's endpoints). */
  hosts(nodeId: number, identity: number): boolean {
    return this.opts.state.index().identitiesOnNode.get(nodeId)?.has(identity) ?? false;
  }

  /** Whether the registry holds `agent` as the agent of node `nodeId`. */
  speaksFor(agent: SpiffeId, nodeId: number): boolean {
    return this.opts.state.nodes.get(nodeId)?.agentId?.equals(agent) ?? false;
  }

  /** The SPIFFE ID that the server assigned to `identity`, if known. */
  spiffeIdOf(identity: number): SpiffeId | undefined { return this.opts.state.identities.get(identity)?.spiffeId; }

  countFailure(reason: string, n = 1): void { this.stats.failures[reason] = (this.stats.failures[reason] ?? 0) + n; }

  /** The agent's own SVID, validated (the auth entries it backs may not outlive it). */
  ownAgent(): { material: SvidMaterial; chain: ValidatedChain } {
    const material = this.opts.agentSvid();
    try {
      return { material, chain: this.validator.validate(material.chain) };
    } catch (err) {
      throw new PairFailure(FailureReason.localAgentSvidInvalid, `own agent SVID does not validate: ${(err as Error).message}`);
    }
  }

  /** The workload SVID this agent holds for `identity`, checked: valid now, and for the identity's ServiceAccount. */
  ownWorkload(identity: number): OwnWorkload {
    const id = this.spiffeIdOf(identity);
    if (id === undefined) throw new PairFailure(FailureReason.unknownIdentity, `identity ${identity} is unknown`);
    const m = this.opts.workloadSvid(id);
    if (!m) throw new PairFailure(FailureReason.noLocalSvid, `no workload SVID held for ${id}`);
    let v: ValidatedChain;
    try { v = this.validator.validate(m.chain); } catch (err) {
      throw new PairFailure(FailureReason.localSvidInvalid, `own workload SVID for ${id} does not validate: ${(err as Error).message}`);
    }
    const wrong = matchId(id)(v.spiffeId);
    if (wrong) throw new PairFailure(FailureReason.localSvidInvalid, `own workload SVID for identity ${identity}: ${wrong}`);
    return { chain: m.chain, key: m.key, expiresAt: v.expiresAt };
  }

  /**
   * Validates a peer agent's chain: trusted by the bundle, an agent ID of
   * this trust domain. Returns the node the registry holds it for (0: none;
   * not looked up when `findNode` is false, for re-checks of a known session).
   */
  checkPeerAgent(chain: readonly Buffer[], findNode = true): { chain: ValidatedChain; nodeId: number } {
    let v: ValidatedChain;
    try { v = this.validator.validate(chain); } catch (err) {
      throw new PairFailure(FailureReason.peerAgentUntrusted, `peer agent SVID does not validate: ${(err as Error).message}`);
    }
    const refused = this.isPeerAgent(v.spiffeId);
    if (refused) throw new PairFailure(FailureReason.peerAgentUntrusted, `peer refused: ${refused}`);
    let nodeId = 0;
    if (findNode) nodeId = this.opts.state.index().nodeByAgent.get(v.spiffeId.toString())?.id ?? 0;
    return { chain: v, nodeId };
  }

  /**
   * Checks a peer's proof for its `identity` over `pairs` (all the batch's
   * pairs of that identity, sorted): the chain validates, is for the
   * identity's ServiceAccount, and its key signed this session's proof input.
   * Returns the workload SVID's expiry.
   */
  checkPeerProof(proof: Proof | undefined, peerSide: Side, ekm: Buffer, batch: number, identity: number, pairs: readonly WirePair[]): Date {
    if (!proof) throw new PairFailure(FailureReason.missingProof, `no proof for identity ${identity}`);
    const expected = this.spiffeIdOf(identity);
    if (expected === undefined) throw new PairFailure(FailureReason.unknownIdentity, `identity ${identity} is unknown`);
    let v: ValidatedChain;
    try { v = this.validator.validate(proof.chain); } catch (err) {
      throw new PairFailure(FailureReason.peerSvidInvalid, `workload SVID for identity ${identity} does not validate: ${(err as Error).message}`);
    }
    const wrong = matchId(expected)(v.spiffeId);
    if (wrong) throw new PairFailure(FailureReason.peerSvidMismatch, `workload SVID for identity ${identity}: ${wrong}`);
    if (!verifyProof(v.publicKey, proofInput(ekm, peerSide, batch, identity, pairs), proof.signature)) {
      throw new PairFailure(FailureReason.badSignature, `proof for identity ${identity} is not signed by its SVID key over this session and batch`);
    }
    return v.expiresAt;
  }

  /** Writes an authenticated pair into the auth map and remembers it for re-authentication. */
  write(local: number, remote: number, remoteNodeId: number, expiresAt: Date, role: HeldEntry['role'], authenticatedAt = this.now()): void {
    const pair: AuthPair = { localIdentity: local, remoteIdentity: remote, remoteNodeId, authType: AuthType.mutual };
    this.opts.authMap.upsert(pair, this.bootNs(expiresAt));
    this.held.set(authPairKey(pair), { pair, expiresAt, authenticatedAt, role });
    this.stats.pairsAuthenticated[role === 'reconciled' ? 'client' : role]++;
  }

  /**
   * Wall clock → boot time. A batch writes many pairs with the same few
   * expiries, and each conversion reads two kernel clocks, so conversions are
   * remembered for a second (the offset between the clocks only moves with
   * clock steps and suspend).
   */
  private bootNs(d: Date): bigint {
    const now = this.opts.clock.now().getTime();
    if (now - this.bootMemoAt > 1000 || this.bootMemo.size > 4096) { this.bootMemo.clear(); this.bootMemoAt = now; }
    const t = d.getTime();
    let v = this.bootMemo.get(t);
    if (v === undefined) { v = this.opts.toBootNs(d); this.bootMemo.set(t, v); }
    return v;
  }
  private readonly bootMemo = new Map<number, bigint>();
  private bootMemoAt = 0;

  snapshot(): MutualAuthStats {
    return {
      ...this.stats, failures: { ...this.stats.failures }, pairsAuthenticated: { ...this.stats.pairsAuthenticated },
      handshakes: { ...this.stats.handshakes }, batches: { ...this.stats.batches }, sessions: { ...this.stats.sessions },
      chainCache: { size: this.validator.size, hits: this.validator.hits, misses: this.validator.misses },
    };
  }
}

/** The earliest of some dates. */
export const earliest = (...ds: Date[]): Date => new Date(Math.min(...ds.map((d) => d.getTime())));

/**
 * The earliest of a session's expiry (ms) and two workload SVIDs' expiries.
 * Pairs of a batch share few distinct values, so equal results share one Date.
 */
export function earliestOf(sessionMs: number, a: Date, b: Date): Date {
  const ms = Math.min(sessionMs, a.getTime(), b.getTime());
  if (ms === a.getTime()) return a;
  if (ms === b.getTime()) return b;
  return new Date(ms);
}
