import { closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { MeshidError, SelectorSet, Unauthenticated } from '../../spiffe/index.js';
import type { PeerProcess, WorkloadAttestor } from './attestor.js';
import { peerCredentials, peerPidfd, pidfdAlive, type PeerCredentials } from './peercred.js';
import { processStartTimeSync } from './proc.js';

export interface WorkloadAttestationOptions {
  attestors: readonly WorkloadAttestor[];
  /** Default /proc. */
  procRoot?: string;
  /** How long a process's selectors are reused. Default 10 s; a process that changes namespace or executable is re-attested after that. */
  cacheTtlMs?: number;
  /** Most processes whose selectors are kept. Default 4096. */
  cacheSize?: number;
  /** Clock in ms (tests pass a fake). Default Date.now. */
  now?: () => number;
  /**
   * How the peer of a socket is read. Default SO_PEERCRED through the native
   * addon, with SO_PEERPIDFD (where the kernel has it) to make sure the start
   * time read at accept belongs to the process that connected.
   */
  credentials?: (socket: Socket) => PeerCredentials;
}

interface CacheEntry { expiresAt: number; selectors: Promise<SelectorSet> }

/**
 * Turns the peer of a Workload API connection into selectors. The peer is
 * pinned when the connection is accepted (SO_PEERCRED pid, uid, gid plus the
 * process's start time); every attestation then runs the attestors for that
 * process and checks, once the answer is known, that the same process (same pid
 * AND same start time) is still alive. Results are cached per (pid, start
 * time, uid, gid), so a process that reuses a pid never inherits the selectors
 * of the process that had it before.
 */
export class WorkloadAttestation {
  private readonly attestors: readonly WorkloadAttestor[];
  private readonly procRoot: string;
  private readonly ttlMs: number;
  private readonly cacheSize: number;
  private readonly now: () => number;
  private readonly credentials: (socket: Socket) => PeerCredentials;
  private readonly pidfd: ((socket: Socket) => number | undefined) | undefined;
  private readonly cache = new Map<string, CacheEntry>();
  /** The pidfd of each pinned peer whose kernel gave one (SO_PEERPIDFD), open until release(). */
  private readonly pidfds = new WeakMap<PeerProcess, number>();

  constructor(options: WorkloadAttestationOptions) {
    this.attestors = options.attestors;
    this.procRoot = options.procRoot ?? '/proc';
    this.ttlMs = options.cacheTtlMs ?? 10_000;
    this.cacheSize = options.cacheSize ?? 4096;
    this.now = options.now ?? Date.now;
    this.credentials = options.credentials ?? peerCredentials;
    // an injected credentials reader (tests) has no kernel peer to take a pidfd of
    this.pidfd = options.credentials ? undefined : peerPidfd;
  }

  /** Pins the process at the other end of a just-accepted connection. Throws when it is already gone. */
  identifyPeer(socket: Socket): PeerProcess {
    const { pid, uid, gid } = this.credentials(socket);
    const pidfd = this.pidfd?.(socket);
    let pinned = false;
    try {
      const startTime = processStartTimeSync(this.procRoot, pid);
      // SO_PEERCRED's pid may already name another process if the caller exited
      // before we accepted; the pidfd, taken at connect, tells: if the process it
      // names is still alive after the read, the start time read is the caller's
      if (startTime === undefined || (pidfd !== undefined && !pidfdAlive(pidfd))) {
        throw new Unauthenticated(`caller process ${pid} exited before it could be attested`);
      }
      const peer: PeerProcess = { pid, uid, gid, startTime };
      if (pidfd !== undefined) this.pidfds.set(peer, pidfd);
      pinned = true;
      return peer;
    } finally {
      if (!pinned && pidfd !== undefined) closeSync(pidfd);
    }
  }

  /** Lets go of a peer whose connection closed (its pidfd, if it had one). */
  release(peer: PeerProcess): void {
    const pidfd = this.pidfds.get(peer);
    if (pidfd === undefined) return;
    // forgotten before the close, so that no later check can use a reused fd number
    this.pidfds.delete(peer);
    closeSync(pidfd);
  }

  /** The selectors of the peer; throws Unauthenticated when the process is gone or its pid now names another process. */
  async attest(peer: PeerProcess): Promise<SelectorSet> {
    const key = `${peer.pid}:${peer.startTime}:${peer.uid}:${peer.gid}`;
    const now = this.now();
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt > now) {
      const selectors = await cached.selectors;
      // the answer is known; is the process that asked still the one it describes?
      this.assertAlive(peer);
      return selectors;
    }
    // stored before anything awaits, so concurrent calls of one process share this run
    const entry: CacheEntry = { expiresAt: now + this.ttlMs, selectors: this.runAttestors(peer) };
    this.cache.delete(key);
    if (this.cache.size >= this.cacheSize) this.evict(now);
    this.cache.set(key, entry);
    // a failed attestation is not remembered
    entry.selectors.catch(() => { if (this.cache.get(key) === entry) this.cache.delete(key); });
    return entry.selectors;
  }

  /** Drops every cached answer (e.g. when attestor configuration changes). */
  clear(): void { this.cache.clear(); }

  /** Runs every attestor; the process must be alive with the same start time before and after. */
  private async runAttestors(peer: PeerProcess): Promise<SelectorSet> {
    this.assertAlive(peer);
    let selectors: SelectorSet;
    try {
      const lists = await Promise.all(this.attestors.map((a) => a.attest(peer.pid, peer.uid, peer.gid)));
      selectors = SelectorSet.of(lists.flat());
    } catch (err) {
      // an attestor usually fails because the process exited while it read /proc
      this.assertAlive(peer);
      if (err instanceof MeshidError) throw err;
      throw new MeshidError('internal', `workload attestation of pid ${peer.pid} failed: ${(err as Error).message}`, undefined, { cause: err });
    }
    this.assertAlive(peer);
    return selectors;
  }

  /**
   * Runs on every call. With the peer's pidfd it is one syscall; without one
   * (older kernels, peers made up by tests), /proc/<pid>/stat must still show
   * the same start time: synchronous on purpose, since that read is in-memory
   * procfs work, cheaper than a trip through libuv's thread pool.
   */
  private assertAlive(peer: PeerProcess): void {
    const pidfd = this.pidfds.get(peer);
    const alive = pidfd !== undefined ? pidfdAlive(pidfd) : processStartTimeSync(this.procRoot, peer.pid) === peer.startTime;
    if (!alive) {
      throw new Unauthenticated(`caller process ${peer.pid} is gone: could not verify the existence of the original caller`);
    }
  }

  /** Expired entries first; then the oldest insertions. */
  private evict(now: number): void {
    for (const [k, e] of this.cache) if (e.expiresAt <= now) this.cache.delete(k);
    while (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
  }
}
