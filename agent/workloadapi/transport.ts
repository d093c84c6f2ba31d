import { constants as http2Constants, createServer as createHttp2Server, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { status as Status } from '@grpc/grpc-js';
import { silentLogger, type Logger } from '../../common/log.js';

/**
 * gRPC over HTTP/2, server side, for the Workload API socket: the wire protocol
 * of grpc/PROTOCOL-HTTP2.md on node:http2, without a general-purpose gRPC
 * server in between.
 *
 * Why not @grpc/grpc-js's server: the Workload API answers most calls from a
 * cache, so the per-call cost is the transport's own; grpc-js spends about
 * twice node:http2's CPU per stream (interceptor chains, metadata objects,
 * deadline and compression machinery the Workload API does not use), which
 * is what sets the tail of FetchX509SVID's first answer. And a session here is
 * bound to its connection's peer when the connection is accepted, so a call
 * finds its caller directly rather than through grpc-js's peer string.
 *
 * What a client may rely on: POST with content-type application/grpc[+proto]
 * (else HTTP 415), unknown methods UNIMPLEMENTED, grpc-timeout honoured
 * (DEADLINE_EXCEEDED), one length-prefixed request message per call, requests
 * over the size limit RESOURCE_EXHAUSTED, compressed messages UNIMPLEMENTED
 * (the server offers only identity), grpc-message percent-encoded, Trailers-Only
 * responses for calls that fail before their first message, RST_STREAM seen as
 * cancellation, GOAWAY on shutdown.
 */

export const GRPC_CONTENT_TYPE = 'application/grpc';
/** gRPC's default limit for a received message. */
export const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;

export interface GrpcMethod<Context> {
  /** 'unary' answers with one message (call.reply); 'server-stream' may send any number (call.send) before call.finish. */
  kind: 'unary' | 'server-stream';
  /** Throws on bytes that are not the method's request message. */
  decodeRequest(bytes: Buffer): unknown;
  handle(call: GrpcCall<Context>, request: unknown): void;
}

export interface GrpcTransportOptions<Context> {
  /** By method name for `service` (the path is /<service>/<method>), or by whole path (/<other service>/<method>). */
  methods: ReadonlyMap<string, GrpcMethod<Context>>;
  service: string;
  /** Each call once, with its final status (CANCELLED when the client went away first). Unknown methods count as "unknown". */
  onCallEnd?: (method: string, code: Status) => void;
  logger?: Logger;
  /** Largest request message accepted. Default 4 MiB, gRPC's own default. */
  maxRequestBytes?: number;
  /** Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Default: no limit. */
  maxConcurrentStreams?: number;
}

/** A length-prefixed gRPC message (uncompressed): what a DATA frame of a call carries. */
export function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** grpc-message is percent-encoded: every byte outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** grpc-timeout: at most 8 digits and a unit (H M S m u n). undefined when absent; throws when malformed. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!match) throw new Error(`grpc-timeout "${value}" is malformed: expected up to 8 digits and one of H M S m u n`);
  return Number(match[1]) * TIMEOUT_UNIT_MS[match[2]!]!;
}

/** One call, as a handler sees it. Every call ends exactly once: finish(), reply(), the client's cancel, or its deadline. */
export class GrpcCall<Context> {
  private ended = false;
  private cancelledByClient = false;
  private deadline: NodeJS.Timeout | undefined;
  private readonly endHooks: (() => void)[] = [];
  /** The newest message waiting while the client does not read; a newer one replaces it. */
  private pendingFrame: Buffer | undefined;
  /** Since when the stream's write buffer has been full (the client stopped reading). */
  private blockedAt: number | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    readonly method: string,
    readonly headers: IncomingHttpHeaders,
    readonly context: Context,
    private readonly onEnd: (method: string, code: Status) => void,
  ) {}

  /** True once the call has ended for any reason: nothing more can be sent. */
  get done(): boolean { return this.ended; }
  /** True when the client reset the stream or the deadline passed before the call was finished. */
  get cancelled(): boolean { return this.cancelledByClient; }

  /** One metadata value; undefined when absent, and also when it was sent more than once. */
  metadata(name: string): string | undefined {
    const value = this.headers[name];
    return typeof value === 'string' ? value : undefined;
  }

  /** Runs once when the call ends, however it ends. */
  onEnded(hook: () => void): void {
    if (this.ended) hook();
    else this.endHooks.push(hook);
  }

  /** Sends one message (already framed by grpcFrame) on a server stream; ignored after the call ended. */
  send(frame: Buffer): void {
    if (this.ended || this.stream.destroyed) return;
    if (!this.stream.headersSent) this.stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE }, { waitForTrailers: true });
    this.stream.write(frame);
  }

  /**
   * Sends a stream message of which only the newest matters (a Workload API
   * answer). While the client does not read, at most one message is being
   * written and one waits; a newer message replaces the waiting one, as
   * SPIRE's cache subscribers keep only the latest update.
   */
  sendLatest(frame: Buffer): void {
    if (this.ended || this.stream.destroyed) return;
    if (this.blockedAt !== undefined) { this.pendingFrame = frame; return; }
    this.send(frame);
    if (!this.stream.writableNeedDrain) return;
    this.blockedAt = Date.now();
    this.stream.once('drain', () => {
      this.blockedAt = undefined;
      const next = this.pendingFrame;
      this.pendingFrame = undefined;
      if (next) this.sendLatest(next);
    });
  }

  /** How long the client has not been reading what sendLatest wrote; 0 when it keeps up. */
  blockedForMs(now = Date.now()): number { return this.blockedAt === undefined ? 0 : now - this.blockedAt; }

  /** Bytes this call holds for its client: written but not yet taken by HTTP/2, and the waiting message. */
  get bufferedBytes(): number { return (this.stream.destroyed ? 0 : this.stream.writableLength) + (this.pendingFrame?.length ?? 0); }

  /**
   * Ends a call whose client stopped reading. Trailers would queue behind the
   * unread messages, so the stream is reset with ENHANCE_YOUR_CALM, which gRPC
   * clients report as RESOURCE_EXHAUSTED.
   */
  abandon(): void {
    if (this.ended) return;
    this.pendingFrame = undefined;
    this.end(Status.RESOURCE_EXHAUSTED);
    if (!this.stream.destroyed) this.stream.close(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  /** Answers a unary call: its one message, then status OK. */
  reply(frame: Buffer): void {
    this.send(frame);
    this.finish(Status.OK, '');
  }

  /** Ends the call with a status: trailers after the messages sent, or a Trailers-Only response if none was. */
  finish(code: Status, details: string, headers: Record<string, string> = {}): void {
    if (this.ended) return;
    this.end(code);
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    const trailers: Record<string, string> = { ...headers, 'grpc-status': String(code) };
    if (details !== '') trailers['grpc-message'] = encodeGrpcMessage(details);
    if (!stream.headersSent) {
      stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE, ...trailers }, { endStream: true });
    } else {
      stream.once('wantTrailers', () => { if (!stream.destroyed) stream.sendTrailers(trailers); });
      stream.end();
    }
    // the request side may still be open (a finish before the request arrived): stop reading it
    stream.resume();
  }

  /** @internal the transport's: the deadline from grpc-timeout. */
  armDeadline(ms: number): void {
    this.deadline = setTimeout(() => {
      this.cancelledByClient = true;
      this.finish(Status.DEADLINE_EXCEEDED, 'deadline exceeded');
    }, ms);
    this.deadline.unref();
  }

  /** @internal the transport's: the stream closed; a call not yet ended was cancelled. */
  closed(): void {
    if (this.ended) return;
    this.cancelledByClient = true;
    this.end(Status.CANCELLED);
  }

  private end(code: Status): void {
    this.ended = true;
    clearTimeout(this.deadline);
    this.onEnd(this.method, code);
    for (const hook of this.endHooks.splice(0)) {
      try { hook(); } catch { /* a hook's failure must not stop the others */ }
    }
  }
}

/**
 * The HTTP/2 side of the Workload API: takes accepted sockets with the context
 * (the peer) they were accepted with, and routes each stream to its method.
 */
export class GrpcTransport<Context> {
  private readonly http2: Http2Server;
  private readonly methods: ReadonlyMap<string, GrpcMethod<Context>>;
  private readonly pathPrefix: string;
  private readonly onCallEnd: (method: string, code: Status) => void;
  private readonly logger: Logger;
  private readonly maxRequestBytes: number;
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly calls = new Set<GrpcCall<Context>>();
  /** the context of the socket being attached: node creates its session synchronously inside emit('connection') */
  private attaching: { context: Context } | undefined;

  constructor(options: GrpcTransportOptions<Context>) {
    this.methods = options.methods;
    this.pathPrefix = `/${options.service}/`;
    this.onCallEnd = options.onCallEnd ?? (() => {});
    this.logger = options.logger ?? silentLogger;
    this.maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    // never listens: a factory of server sessions for the sockets handed to attach()
    this.http2 = createHttp2Server(options.maxConcurrentStreams !== undefined ? { settings: { maxConcurrentStreams: options.maxConcurrentStreams } } : {});
    this.http2.on('session', (session: ServerHttp2Session) => this.sessionOpened(session));
    this.http2.on('sessionError', (err: Error) => this.logger.debug('workload API HTTP/2 session error', { error: err.message }));
  }

  /** Serves gRPC on an accepted connection; every call on it carries `context`. */
  attach(socket: Socket, context: Context): void {
    this.attaching = { context };
    try {
      this.http2.emit('connection', socket);
    } finally {
      this.attaching = undefined;
    }
  }

  /** Calls in progress (server streams included). */
  openCalls(): GrpcCall<Context>[] { return [...this.calls]; }

  /**
   * Sends GOAWAY on every session and waits up to graceMs for their calls to
   * finish, then closes what is left.
   */
  async close(graceMs: number): Promise<boolean> {
    const sessions = [...this.sessions];
    const closed = Promise.all(sessions.map((s) => new Promise<void>((resolve) => {
      if (s.closed || s.destroyed) { resolve(); return; }
      s.once('close', () => resolve());
      s.close();
    })));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), graceMs); });
    const late = await Promise.race([closed.then(() => false), timedOut]);
    clearTimeout(timer);
    for (const s of this.sessions) s.destroy();
    await closed;
    return !late;
  }

  private sessionOpened(session: ServerHttp2Session): void {
    const attaching = this.attaching;
    if (!attaching) {
      // only attach() creates sessions; anything else has no known peer
      session.destroy();
      return;
    }
    const context = attaching.context;
    this.sessions.add(session);
    session.on('error', (err) => this.logger.debug('workload API HTTP/2 session error', { error: err.message }));
    session.once('close', () => this.sessions.delete(session));
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.streamOpened(stream, headers, context));
  }

  private streamOpened(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, context: Context): void {
    stream.on('error', (err) => this.logger.debug('workload API HTTP/2 stream error', { error: err.message }));
    const contentType = headers['content-type'];
    if (headers[':method'] !== 'POST' || typeof contentType !== 'string' || !isGrpcContentType(contentType)) {
      // not a gRPC request: an HTTP answer, as the protocol asks (415 for a foreign content-type)
      stream.respond({ ':status': headers[':method'] !== 'POST' ? 405 : 415 }, { endStream: true });
      stream.resume();
      return;
    }
    const path = headers[':path'] ?? '';
    const name = path.startsWith(this.pathPrefix) ? path.slice(this.pathPrefix.length) : path;
    const method = this.methods.get(name);
    const call = new GrpcCall<Context>(stream, method ? name : 'unknown', headers, context, (m, code) => {
      this.calls.delete(call);
      this.onCallEnd(m, code);
    });
    this.calls.add(call);
    stream.once('close', () => call.closed());
    if (!method) {
      call.finish(Status.UNIMPLEMENTED, `unknown method ${path}`);
      return;
    }
    let timeoutMs: number | undefined;
    try {
      timeoutMs = parseGrpcTimeout(headers['grpc-timeout'] as string | undefined);
    } catch (err) {
      call.finish(Status.INTERNAL, (err as Error).message);
      return;
    }
    if (timeoutMs !== undefined) call.armDeadline(timeoutMs);
    this.readRequest(stream, call, method, headers, (request) => {
      try {
        method.handle(call, request);
      } catch (err) {
        this.logger.error('workload API handler failed', { method: name, error: (err as Error).message });
        call.finish(Status.INTERNAL, 'internal error');
      }
    });
  }

  /** Collects the request body (bounded) and hands over its one message, decoded. */
  private readRequest(stream: ServerHttp2Stream, call: GrpcCall<Context>, method: GrpcMethod<Context>, headers: IncomingHttpHeaders, deliver: (request: unknown) => void): void {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      if (call.done) return;
      size += chunk.length;
      if (size > this.maxRequestBytes + 5) {
        call.finish(Status.RESOURCE_EXHAUSTED, `request larger than the limit of ${this.maxRequestBytes} bytes`);
        return;
      }
      chunks.push(chunk);
    });
    stream.once('end', () => {
      if (call.done) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      if (body.length < 5) {
        call.finish(Status.INTERNAL, body.length === 0 ? 'the request carried no message' : 'the request message is truncated');
        return;
      }
      const compressed = body[0]!;
      const length = body.readUInt32BE(1);
      if (body.length !== 5 + length) {
        call.finish(Status.INTERNAL, body.length < 5 + length ? 'the request message is truncated' : `${method.kind === 'unary' ? 'a unary' : 'a server-streaming'} call takes exactly one request message`);
        return;
      }
      if (length > this.maxRequestBytes) {
        call.finish(Status.RESOURCE_EXHAUSTED, `request larger than the limit of ${this.maxRequestBytes} bytes`);
        return;
      }
      if (compressed !== 0) {
        const encoding = headers['grpc-encoding'];
        if (compressed === 1 && typeof encoding === 'string' && encoding !== 'identity') {
          call.finish(Status.UNIMPLEMENTED, `message compression "${encoding}" is not supported`, { 'grpc-accept-encoding': 'identity' });
        } else {
          call.finish(Status.INTERNAL, 'the request message is flagged compressed without a grpc-encoding');
        }
        return;
      }
      let request: unknown;
      try {
        request = method.decodeRequest(body.subarray(5));
      } catch (err) {
        call.finish(Status.INTERNAL, `the request is not a valid ${call.method} request message: ${(err as Error).message}`);
        return;
      }
      deliver(request);
    });
  }
}

function isGrpcContentType(value: string): boolean {
  return value === GRPC_CONTENT_TYPE || value.startsWith(`${GRPC_CONTENT_TYPE}+`) || value.startsWith(`${GRPC_CONTENT_TYPE};`);
}
