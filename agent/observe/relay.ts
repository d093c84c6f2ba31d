/**
 * The agent's half of the cluster-wide view: one Relay stream to the server
 * (the agent API's TLS, the agent's SVID), carrying this node's flows in
 * batches, its auth map and counters every few seconds, and the answers to the
 * server's explain questions. It reconnects with back-off and jitter; on every
 * new stream the node's history goes first, so a restarted server (or another
 * one) holds it again. Flows that do not fit the queue while the server is
 * slow or away are counted as lost and reported, never dropped silently.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { NodeObservationMsg, RelayDownMsg, RelayUpMsg } from '../../api/agentproto.js';
import { toServiceError } from '../../common/grpcstatus.js';
import type { Logger } from '../../common/log.js';
import { isServerDown, type DuplexStream, type ServerConnection } from '../serverapi/index.js';
import type { FlowHistory } from './history.js';

export interface FlowRelayOptions {
  connection: Pick<ServerConnection, 'duplex' | 'failed'>;
  history: FlowHistory;
  logger: Logger;
  /** The node's auth map and counters, as they are now. */
  observation(): Omit<NodeObservationMsg, 'lost_in_relay'>;
  /** `meshid explain` on this agent (throws a MeshidError for a bad question). */
  explain(q: URLSearchParams): Record<string, unknown>;
  /** Flows waiting to be sent, at most (default 16,384). */
  maxQueue?: number;
  /** Flows per message, at most (default 512). */
  batchSize?: number;
  /** How long a flow may wait for more to share its message (default 50 ms). */
  flushMs?: number;
  /** How often the auth map and counters go up (default 2 s). */
  observationMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export type RelayStatus = 'connecting' | 'open' | 'disconnected' | 'stopped';

export class FlowRelay {
  status: RelayStatus = 'disconnected';
  /** Flows that did not fit the queue. */
  lost = 0;
  /** Flows written to a stream. */
  sent = 0;
  reconnects = 0;
  #queue: string[] = [];
  #lostUnreported = 0;
  #stream: DuplexStream | undefined;
  #blocked = false;
  #flushTimer: NodeJS.Timeout | undefined;
  #observeTimer: NodeJS.Timeout | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #attempt = 0;

  constructor(private readonly opts: FlowRelayOptions) {}

  start(): void {
    if (this.status !== 'disconnected') return;
    this.#connect();
    this.#observeTimer = setInterval(() => this.#sendObservation(), this.opts.observationMs ?? 2000);
    this.#observeTimer.unref();
  }

  stop(): void {
    this.status = 'stopped';
    for (const t of [this.#flushTimer, this.#reconnectTimer]) if (t) clearTimeout(t);
    if (this.#observeTimer) clearInterval(this.#observeTimer);
    this.#closeStream();
  }

  /** A new flow of this node (already in the history). */
  push(line: string): void {
    if (this.status === 'stopped') return;
    if (this.#queue.length >= (this.opts.maxQueue ?? 16_384)) {
      this.lost++;
      this.#lostUnreported++;
      return;
    }
    this.#queue.push(line);
    if (this.#queue.length >= (this.opts.batchSize ?? 512)) this.#flush();
    else this.#flushTimer ??= setTimeout(() => { this.#flushTimer = undefined; this.#flush(); }, this.opts.flushMs ?? 50);
  }

  get queued(): number { return this.#queue.length; }

  #connect(): void {
    if (this.status === 'stopped') return;
    this.status = 'connecting';
    let stream: DuplexStream;
    try {
      stream = this.opts.connection.duplex('Relay');
    } catch (err) {
      this.#scheduleReconnect(err as ServiceError);
      return;
    }
    this.#stream = stream;
    this.#blocked = false;
    stream.on('data', (msg: RelayDownMsg) => this.#onRequest(stream, msg));
    stream.on('drain', () => { this.#blocked = false; this.#flush(); });
    let ended = false;
    const end = (err: ServiceError | undefined): void => {
      if (ended || this.#stream !== stream) return;
      ended = true;
      this.#stream = undefined;
      this.#scheduleReconnect(err);
    };
    stream.on('error', (err: ServiceError) => {
      if (isServerDown(err)) this.opts.connection.failed(stream.address);
      end(err);
    });
    stream.on('end', () => end(undefined));
    // the history first: what the server holds of this node is replaced by it (its first
    // message says so); the queue is in it, and what was lost from the queue may be too
    const history = this.opts.history.lines();
    const size = this.opts.batchSize ?? 512;
    this.#queue = [];
    this.#write({ flows: { flows: history.slice(0, size), lost: 0, replay: true } });
    for (let i = size; i < history.length; i += size) this.#write({ flows: { flows: history.slice(i, i + size), lost: 0, replay: false } });
    this.status = 'open';
    this.#sendObservation();
  }

  #closeStream(): void {
    const s = this.#stream;
    this.#stream = undefined;
    if (!s) return;
    s.removeAllListeners();
    s.on('error', () => {});
    s.cancel();
  }

  #scheduleReconnect(err: ServiceError | undefined): void {
    if (this.status === 'stopped') return;
    this.status = 'disconnected';
    this.reconnects++;
    const min = this.opts.minBackoffMs ?? 500;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const delay = Math.round(Math.min(max, min * 2 ** this.#attempt++) * (0.8 + Math.random() * 0.4));
    this.opts.logger.warn('relay stream ended; reconnecting', { code: err?.code, reason: err?.details ?? err?.message, in_ms: delay });
    this.#reconnectTimer = setTimeout(() => { this.#reconnectTimer = undefined; this.#connect(); }, delay);
    this.#reconnectTimer.unref();
  }

  #write(msg: RelayUpMsg): void {
    const s = this.#stream;
    if (!s) return;
    if (!s.write(msg)) this.#blocked = true;
  }

  /** Sends what is queued, a batch at a time, while the stream takes it. */
  #flush(): void {
    if (this.#flushTimer) { clearTimeout(this.#flushTimer); this.#flushTimer = undefined; }
    const size = this.opts.batchSize ?? 512;
    while (this.#stream && this.status === 'open' && !this.#blocked && this.#queue.length > 0) {
      const flows = this.#queue.length <= size ? this.#queue : this.#queue.slice(0, size);
      this.#queue = this.#queue.length <= size ? [] : this.#queue.slice(size);
      this.#write({ flows: { flows, lost: this.#lostUnreported, replay: false } });
      this.#lostUnreported = 0;
      this.sent += flows.length;
      this.#attempt = 0;
    }
  }

  #sendObservation(): void {
    if (!this.#stream || this.status !== 'open') return;
    this.#write({ observation: { ...this.opts.observation(), lost_in_relay: this.lost } });
  }

  #onRequest(stream: DuplexStream, msg: RelayDownMsg): void {
    const q = msg.explain;
    if (!q) return;
    try {
      const answer = this.opts.explain(new URLSearchParams(q.query));
      this.#write({ explain: { id: q.id, error: null, json: JSON.stringify(answer) } });
    } catch (err) {
      const se = toServiceError(err);
      if (this.#stream === stream) this.#write({ explain: { id: q.id, error: { code: se.code, message: se.details }, json: '' } });
    }
  }
}
