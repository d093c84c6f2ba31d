/**
 * The change feed: what every server's Sync streams hear. It follows the
 * revisioned change log (the source of truth) from where it started, so writes
 * made through any server (or any process on the SQLite file) reach this
 * server's agents. It reads the log when woken: by this process's own commits,
 * by PostgreSQL NOTIFY from other servers, and by a poll every `pollMs` in case
 * a notification was lost or never sent. A wake-up is only a hint; nothing is
 * ever taken from it but "look now".
 *
 * Writes are serialized and revisions committed in order (engine.ts), so reading
 * "revision > last seen" never skips a change that commits later with a smaller
 * revision.
 */
import type { Logger } from '../../common/log.js';
import type { Datastore } from './datastore.js';
import type { Change, ChangeListener } from './types.js';

export interface ChangeFeedOptions {
  /** How often the log is read without a wake-up. Default 1000 ms. */
  pollMs?: number;
  /** Changes read per query. Default 1000. */
  batch?: number;
  logger?: Logger;
}

export class ChangeFeed {
  private readonly listeners = new Set<ChangeListener>();
  private readonly resetListeners = new Set<() => void>();
  private revision = 0;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribeOwn: (() => void) | undefined;
  private unsubscribeOthers: (() => Promise<void>) | undefined;
  private stopped = true;
  private readonly pollMs: number;
  private readonly batch: number;

  constructor(private readonly store: Datastore, private readonly opts: ChangeFeedOptions = {}) {
    this.pollMs = opts.pollMs ?? 1000;
    this.batch = opts.batch ?? 1000;
  }

  /** The revision of the last change published. */
  get position(): number { return this.revision; }

  /** Starts following the log at its current end. */
  async start(): Promise<void> {
    this.stopped = false;
    this.revision = await this.store.currentRevision();
    this.unsubscribeOwn = this.store.onChange(() => this.wake());
    this.unsubscribeOthers = await this.store.subscribeToOtherWriters(() => this.wake());
    this.timer = setInterval(() => this.wake(), this.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unsubscribeOwn?.();
    await this.unsubscribeOthers?.();
    await this.running;
    this.listeners.clear();
    this.resetListeners.clear();
  }

  /** Called with every committed change, in revision order, each once. Returns the unsubscribe function. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** Called when the log no longer holds what the feed had not read yet (compacted): listeners must start over from a snapshot. */
  onReset(listener: () => void): () => void {
    this.resetListeners.add(listener);
    return () => { this.resetListeners.delete(listener); };
  }

  /** Reads the log now (coalesced with a read in progress). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    this.running = this.catchUp().finally(() => {
      this.running = undefined;
      if (this.again) { this.again = false; this.wake(); }
    });
  }

  /** Resolves once every change committed before the call has been published. */
  async caughtUp(): Promise<void> {
    const target = await this.store.currentRevision();
    while (this.revision < target && !this.stopped) {
      this.wake();
      await (this.running ?? new Promise((r) => setTimeout(r, 5)));
    }
  }

  private async catchUp(): Promise<void> {
    for (;;) {
      let changes: Change[];
      try {
        changes = await this.store.changesSince(this.revision, this.batch);
      } catch (err) {
        if ((err as { code?: string }).code === 'failed_precondition') {
          this.revision = await this.store.currentRevision();
          this.opts.logger?.warn('change feed fell behind the compacted log; streams start over from a snapshot', { revision: this.revision });
          for (const l of [...this.resetListeners]) l();
          return;
        }
        // the database is unreachable: the next wake-up or poll tries again
        this.opts.logger?.warn('change feed could not read the change log', { error: (err as Error).message });
        return;
      }
      if (changes.length === 0 || this.stopped) return;
      this.revision = changes[changes.length - 1]!.revision;
      const frozen = Object.freeze(changes.map((c) => Object.freeze(c)));
      for (const listener of [...this.listeners]) {
        try { listener(frozen); } catch (err) { this.opts.logger?.error('change feed listener failed', { err }); }
      }
      if (changes.length < this.batch) return;
    }
  }
}
