/**
 * Jobs that must run on one server at a time, whichever servers share the
 * datastore: a lease row in the datastore (taken and renewed in serialized
 * write transactions, so exactly one server holds it) picks the leader. A
 * leader that dies stops renewing; another server takes the lease once it has
 * expired, within `leaseSeconds` plus one `everyMs`.
 *
 * The leader prunes what has expired (join tokens, entries with an expiry),
 * servers whose heartbeats stopped longer ago than their CA lifetime (their
 * keys leave the bundle), and the change log older than `changeRetentionSeconds`.
 */
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/log.js';
import type { ClusterAuthorities } from './ca/index.js';
import type { Datastore } from './datastore/index.js';

export const MAINTENANCE_LEASE = 'maintenance';

export interface LeaderJobsOptions {
  store: Datastore;
  serverId: string;
  authorities: ClusterAuthorities;
  clock: Clock;
  logger: Logger;
  /** How long a lease lasts without renewal. Default 10 s. */
  leaseSeconds?: number;
  /** How often the lease is renewed (or tried) and the jobs run. Default 3000 ms. */
  everyMs?: number;
  /** Change log entries older than this are compacted. Default 24 h. */
  changeRetentionSeconds?: number;
  /** Called when this server becomes, or stops being, the leader. */
  onLeadership?: (leader: boolean) => void;
}

export class LeaderJobs {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private leading = false;
  /** Times this server took the lease (for status and tests). */
  terms = 0;

  constructor(private readonly opts: LeaderJobsOptions) {}

  get isLeader(): boolean { return this.leading; }

  start(): void {
    const tick = (): void => {
      if (this.running) return;
      this.running = this.tick().finally(() => { this.running = undefined; });
    };
    tick();
    this.timer = setInterval(tick, this.opts.everyMs ?? 3000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    if (this.leading) {
      this.setLeading(false);
      // hand over at once instead of after the lease runs out
      await this.opts.store.releaseLease(MAINTENANCE_LEASE, this.opts.serverId).catch(() => undefined);
    }
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    if (leading) this.terms += 1;
    this.opts.logger.info(leading ? 'leader: this server runs the maintenance jobs' : 'no longer the leader', { server_id: this.opts.serverId });
    this.opts.onLeadership?.(leading);
  }

  private async tick(): Promise<void> {
    const { store, serverId } = this.opts;
    let leader: boolean;
    try {
      leader = await store.acquireLease(MAINTENANCE_LEASE, serverId, this.opts.leaseSeconds ?? 10);
    } catch (err) {
      // the datastore is unreachable: a lease that cannot be renewed is not held
      this.setLeading(false);
      this.opts.logger.warn('leader lease: datastore unavailable', { error: (err as Error).message });
      return;
    }
    this.setLeading(leader);
    if (leader) await this.runJobs();
  }

  /** The leader's jobs, each on its own so one failing does not stop the others. */
  async runJobs(): Promise<void> {
    const { store, logger } = this.opts;
    const job = async (name: string, fn: () => Promise<number>): Promise<void> => {
      try {
        const n = await fn();
        if (n > 0) logger.info(`pruned ${name}`, { count: n });
      } catch (err) {
        logger.warn(`pruning ${name} failed`, { error: (err as Error).message });
      }
    };
    await job('expired join tokens', () => store.pruneExpiredJoinTokens());
    await job('expired entries', () => store.pruneExpiredEntries());
    await job('dead servers', () => this.pruneDeadServers());
    await job('change log', () => this.compactChanges());
  }

  private async pruneDeadServers(): Promise<number> {
    const { store, authorities } = this.opts;
    const now = store.nowSeconds();
    const dead = (await store.listServers()).filter((s) => s.serverId !== this.opts.serverId && s.heartbeatAt + s.caTtl < now);
    if (dead.length === 0) return 0;
    await store.transaction(async (tx) => {
      for (const s of dead) await tx.deleteServer(s.serverId);
      await authorities.rebuild(tx);
    });
    for (const s of dead) this.opts.logger.info('server pruned: no heartbeat for longer than its CA lifetime', { server_id: s.serverId, last_heartbeat: new Date(s.heartbeatAt * 1000).toISOString() });
    return dead.length;
  }

  private async compactChanges(): Promise<number> {
    const { store } = this.opts;
    const cutoff = store.nowSeconds() - (this.opts.changeRetentionSeconds ?? 86_400);
    const old = await store.lastRevisionAtOrBefore(cutoff);
    return old > 0 ? store.compactChanges(old) : 0;
  }
}
