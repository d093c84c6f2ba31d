/**
 * Keeps one Sync stream open to the server: applies every message to the
 * agent state, and reconnects with exponential backoff and jitter when the
 * stream ends. The state (and so every SVID the agent serves) stays as it was
 * while the server is away.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../../common/log.js';
import type { SyncUpdateMsg } from '../../api/agentproto.js';
import { isServerDown, type ServerConnection } from '../serverapi/index.js';
import type { AgentState } from './state.js';

export interface SyncClientOptions {
  connection: ServerConnection;
  state: AgentState;
  logger: Logger;
  /** The agent's reaction to a refusal (evicted: attest again; banned: stop). */
  onRefused: (err: ServiceError) => Promise<void>;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export type SyncStatus = 'connecting' | 'synced' | 'disconnected' | 'stopped';

export class SyncClient {
  private stream: (NodeJS.EventEmitter & { cancel(): void }) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  status: SyncStatus = 'disconnected';
  /** Set on the first snapshot, and every later one. */
  lastSyncAt: Date | undefined;
  reconnects = 0;
  private firstSnapshot: Promise<void>;
  private resolveFirst!: () => void;

  constructor(private readonly opts: SyncClientOptions) {
    this.firstSnapshot = new Promise((r) => { this.resolveFirst = r; });
  }

  start(): void { this.connect(); }

  /** Resolves once the first snapshot has been applied. */
  synced(): Promise<void> { return this.firstSnapshot; }

  stop(): void {
    this.status = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const s = this.stream;
    this.stream = undefined;
    s?.removeAllListeners();
    s?.on('error', () => {});
    s?.cancel();
  }

  /** Drops the current stream and opens a new one now (after an SVID or bundle change). */
  restart(): void {
    if (this.status === 'stopped') return;
    const s = this.stream;
    this.stream = undefined;
    s?.removeAllListeners();
    s?.on('error', () => {});
    s?.cancel();
    this.connect();
  }

  private connect(): void {
    if (this.status === 'stopped') return;
    this.status = 'connecting';
    let stream: NodeJS.EventEmitter & { cancel(): void; address: string };
    try {
      // resume: a server whose change log still holds what came after this revision sends only that
      stream = this.opts.connection.stream('Sync', { revision: this.opts.state.revision });
    } catch (err) {
      this.scheduleReconnect(err as ServiceError);
      return;
    }
    this.stream = stream;
    let first = true;
    stream.on('data', (msg: SyncUpdateMsg) => {
      try {
        this.opts.state.apply(msg);
      } catch (err) {
        this.opts.logger.error('could not apply a Sync message', { err });
        return;
      }
      // the first message of a stream is a snapshot, or the changes since the revision the agent had
      if (msg.snapshot || first) {
        first = false;
        this.status = 'synced';
        this.attempt = 0;
        this.lastSyncAt = new Date();
        this.resolveFirst();
        this.opts.logger.info('synced with the server', { server: this.opts.connection.address, revision: Number(msg.revision), entries: msg.entries.length });
      }
    });
    let ended = false;
    const end = (err: ServiceError | undefined): void => {
      if (ended || this.stream !== stream) return;
      ended = true;
      this.stream = undefined;
      this.scheduleReconnect(err);
    };
    stream.on('error', (err: ServiceError) => {
      // a server that went away: the next attempt goes to another one (several --server addresses)
      if (isServerDown(err) || err.code === 1 /* CANCELLED by a server shutting down */) this.opts.connection.failed(stream.address);
      end(err);
    });
    stream.on('end', () => end(undefined));
  }

  private scheduleReconnect(err: ServiceError | undefined): void {
    if (this.status === 'stopped') return;
    this.status = 'disconnected';
    this.reconnects++;
    const min = this.opts.minBackoffMs ?? 250;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const base = Math.min(max, min * 2 ** this.attempt++);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.opts.logger.warn('Sync stream ended; reconnecting', { code: err?.code, reason: err?.details ?? err?.message, in_ms: delay });
    const next = (): void => { this.timer = setTimeout(() => this.connect(), delay); this.timer.unref(); };
    if (err && (err.code === 16 /* UNAUTHENTICATED */ || err.code === 7 /* PERMISSION_DENIED */)) {
      this.opts.onRefused(err).then(next, next);
    } else {
      next();
    }
  }
}
