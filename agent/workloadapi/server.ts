import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server as NetServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { ConnectionsPerKey } from '../../common/connlimit.js';
import { silentLogger, type Logger } from '../../common/log.js';
import type { MetricsRegistry } from '../../common/metrics.js';
import { checkAudience, FailedPrecondition, InvalidArgument, PermissionDenied, type SelectorSet, SpiffeId, Unavailable } from '../../spiffe/index.js';
import { loadPeercredAddon, type PeerCredentials, type PeerProcess, WorkloadAttestation, type WorkloadAttestor } from '../workloadattestor/index.js';
import { WorkloadApiMetrics } from './metrics.js';
import {
  DEFAULT_SOCKET_PATH,
  loadReadinessProto,
  loadWorkloadProto,
  WAIT_READY_PATH,
  type WaitReadyRequestMessage,
  SECURITY_HEADER,
  type JWTBundlesResponseMessage,
  type JWTSVIDMessage,
  type JWTSVIDRequestMessage,
  type JWTSVIDResponseMessage,
  type ValidateJWTSVIDRequestMessage,
  type ValidateJWTSVIDResponseMessage,
  type WorkloadProto,
  type X509BundlesResponseMessage,
  type X509SVIDMessage,
  type X509SVIDResponseMessage,
} from './proto.js';
import type { CachedX509Svid, WorkloadSource } from './source.js';
import { toServiceError } from './status.js';
import { toStruct } from './struct.js';
import { grpcFrame, GrpcTransport, type GrpcCall, type GrpcMethod } from './transport.js';

export interface WorkloadApiServerOptions {
  /** Default /run/meshid/agent.sock; its folder is created. */
  socketPath?: string;
  source: WorkloadSource;
  /** Run for every caller; their selectors together are the caller's selectors. */
  attestors: readonly WorkloadAttestor[];
  logger?: Logger;
  /** Where the agent's /metrics renders the Workload API counters; `server.metrics` has them either way. */
  metricsRegistry?: MetricsRegistry;
  /** Serve bundles and ValidateJWTSVID to callers that match no entry (spire-agent's allow_unauthenticated_verifiers). Default false. */
  allowUnauthenticatedVerifiers?: boolean;
  /** How long one process's selectors are reused. Default 10 s. */
  attestationCacheTtlMs?: number;
  /** Default /proc (tests point it elsewhere). */
  procRoot?: string;
  /** Reads the peer of an accepted connection. Default SO_PEERCRED through the native addon. */
  peerCredentials?: (socket: Socket) => PeerCredentials;
  /**
   * meshid's Readiness service on the same socket (api/proto/readiness.proto):
   * the caller's endpoint readiness, from the caller process, once ready or
   * after timeoutMs or when `gone()` says the caller left. Absent: not served.
   */
  readiness?: (caller: PeerProcess, timeoutMs: number, gone: () => boolean) => Promise<ReadinessAnswer>;
  /** How long stop() waits for streams to deliver their final status before it cuts connections. Default 2000 ms. */
  stopGraceMs?: number;
  /** A stream whose client reads nothing for this long is reset (RESOURCE_EXHAUSTED). Default 30 000 ms. */
  slowReaderDeadlineMs?: number;
}

export interface ReadinessAnswer { ready: boolean; endpoints: string[]; waiting_for: string[] }

/** The longest WaitReady wait, seconds. */
const MAX_WAIT_READY_SECONDS = 600;

type StreamKind = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles';
type Call = GrpcCall<PeerProcess>;

/** One stream message, serialized once and shared by every stream that sends it; stale from validUntil (ms) on. */
interface Answer { message: unknown; validUntil: number; bytes?: Buffer; frame?: Buffer }

interface OpenStream {
  kind: StreamKind;
  call: Call;
  selectors: SelectorSet;
  /** the last message sent, so an unchanged answer is not sent again */
  lastSent: Answer;
}

const NO_IDENTITY = 'no identity issued';
const MAX_REQUEST_BYTES = 64 * 1024;
const MAX_STREAMS_PER_CONNECTION = 1000;
/** Connections one process may hold open on the socket (a client needs one; a pool a few). */
const MAX_CONNECTIONS_PER_PROCESS = 64;
/** Connections on the socket in all. */
const MAX_CONNECTIONS = 8192;

/**
 * The SPIFFE Workload API on a Unix socket, as spire-agent serves it.
 *
 * Connections are accepted by our own net.Server, so that each one's peer can
 * be read from its file descriptor (SO_PEERCRED) before any call arrives; the
 * socket is then served by the gRPC transport (transport.ts) with that peer
 * bound to its HTTP/2 session, so every call on the connection carries the
 * process that opened it and nothing a client sends can change it.
 */
export class WorkloadApiServer {
  readonly socketPath: string;
  readonly metrics: WorkloadApiMetrics;
  private readonly source: WorkloadSource;
  private readonly logger: Logger;
  private readonly attestation: WorkloadAttestation;
  private readonly allowUnauthenticatedVerifiers: boolean;
  private readonly stopGraceMs: number;
  private readonly slowReaderDeadlineMs: number;
  private slowReaderSweep: NodeJS.Timeout | undefined;
  private readonly proto: WorkloadProto;
  private readonly customPeerCredentials: boolean;
  private readonly readiness: WorkloadApiServerOptions['readiness'];
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopped: Promise<void> | undefined;
  private transport: GrpcTransport<PeerProcess> | undefined;
  private netServer: NetServer | undefined;
  private socketInode: number | undefined;
  private unsubscribe: (() => void) | undefined;
  private refreshScheduled: NodeJS.Immediate | undefined;
  /**
   * Stream answers by stream kind and selector set, valid until the source
   * reports a change: many streams of one workload share one answer, computed
   * once. null: the selectors are entitled to nothing.
   */
  private readonly answers = new Map<string, Answer | Error>();
  private readonly sockets = new Set<Socket>();
  /** Open connections per peer process (pid and start time). */
  private readonly perProcess = new ConnectionsPerKey(MAX_CONNECTIONS_PER_PROCESS);
  private readonly streams = new Set<OpenStream>();

  constructor(options: WorkloadApiServerOptions) {
    this.socketPath = options.socketPath ?? DEFAULT_SOCKET_PATH;
    this.source = options.source;
    this.logger = options.logger ?? silentLogger;
    this.allowUnauthenticatedVerifiers = options.allowUnauthenticatedVerifiers ?? false;
    this.stopGraceMs = options.stopGraceMs ?? 2000;
    this.slowReaderDeadlineMs = options.slowReaderDeadlineMs ?? 30_000;
    this.metrics = new WorkloadApiMetrics(options.metricsRegistry);
    this.metrics.bufferedBytes = () => this.bufferedBytes();
    this.attestation = new WorkloadAttestation({
      attestors: options.attestors,
      ...(options.attestationCacheTtlMs !== undefined ? { cacheTtlMs: options.attestationCacheTtlMs } : {}),
      ...(options.procRoot !== undefined ? { procRoot: options.procRoot } : {}),
      ...(options.peerCredentials !== undefined ? { credentials: options.peerCredentials } : {}),
    });
    this.proto = loadWorkloadProto();
    this.customPeerCredentials = options.peerCredentials !== undefined;
    this.readiness = options.readiness;
  }

  /** Listens on the socket (mode 0777, any workload may connect); removes a stale socket file left by a dead agent. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new FailedPrecondition(`the Workload API server was already started (${this.state})`);
    this.state = 'starting';
    try {
      // without the addon no caller could be identified: fail here, not on every connection
      if (!this.customPeerCredentials) loadPeercredAddon();
      await mkdir(dirname(this.socketPath), { recursive: true, mode: 0o755 });
      await removeStaleSocket(this.socketPath);
      this.transport = new GrpcTransport<PeerProcess>({
        service: 'SpiffeWorkloadAPI',
        methods: this.methods(),
        onCallEnd: (method, code) => this.metrics.countCall(method, code),
        logger: this.logger,
        // every caller may connect, before it is attested: what one connection can make
        // the agent hold is bounded. Workload API requests are an audience list and a
        // SPIFFE ID at most; no workload needs a thousand calls open on one connection.
        maxRequestBytes: MAX_REQUEST_BYTES,
        maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
      });
      this.unsubscribe = this.source.onChange(() => {
        // dropped at once, so that a stream opened before the refresh runs gets the new answer
        this.answers.clear();
        this.scheduleRefresh();
      });
      const netServer = createServer((socket) => this.acceptConnection(socket));
      this.netServer = netServer;
      await new Promise<void>((resolve, reject) => {
        netServer.once('error', reject);
        netServer.listen(this.socketPath, () => { netServer.off('error', reject); resolve(); });
      });
      netServer.on('error', (err) => this.logger.error('workload API socket error', { error: err.message }));
      this.socketInode = (await lstat(this.socketPath)).ino;
      this.slowReaderSweep = setInterval(() => this.closeSlowReaders(), Math.min(1000, Math.max(50, this.slowReaderDeadlineMs / 4)));
      this.slowReaderSweep.unref();
      await chmod(this.socketPath, 0o777);
      this.state = 'running';
      this.logger.info('workload API listening', { socket: this.socketPath });
    } catch (err) {
      await this.shutdown();
      this.state = 'stopped';
      throw err;
    }
  }

  /** Ends every stream (UNAVAILABLE), closes every connection and removes the socket file. Idempotent. */
  stop(): Promise<void> {
    if (this.state === 'new') { this.state = 'stopped'; return Promise.resolve(); }
    this.stopped ??= this.shutdown().then(() => { this.state = 'stopped'; });
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    if (this.slowReaderSweep) clearInterval(this.slowReaderSweep);
    this.slowReaderSweep = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.refreshScheduled) clearImmediate(this.refreshScheduled);
    this.refreshScheduled = undefined;
    const netServer = this.netServer;
    const listenerClosed = netServer?.listening
      ? new Promise<void>((resolve) => netServer.close(() => resolve()))
      : Promise.resolve();
    const transport = this.transport;
    if (transport) {
      // every call ends with a status first (streams UNAVAILABLE, unary calls still
      // attesting likewise), so that GOAWAY finds nothing left to wait for
      const unavailable = new Unavailable('the workload API is shutting down');
      for (const stream of [...this.streams]) this.endStream(stream, unavailable);
      for (const call of transport.openCalls()) this.finishWithError(call, unavailable);
      const inTime = await transport.close(this.stopGraceMs);
      if (!inTime) this.logger.warn('workload API connections did not close in time; closed them', { connections: this.sockets.size });
    }
    for (const socket of this.sockets) socket.destroy();
    await listenerClosed;
    this.answers.clear();
    this.transport = undefined;
    this.netServer = undefined;
    await this.removeOwnSocket();
  }

  /** Unlinks the socket file only if it is still the one this server created. */
  private async removeOwnSocket(): Promise<void> {
    if (this.socketInode === undefined) return;
    try {
      const st = await lstat(this.socketPath);
      if (st.isSocket() && st.ino === this.socketInode) await unlink(this.socketPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.socketInode = undefined;
  }

  private acceptConnection(socket: Socket): void {
    socket.on('error', (err) => this.logger.debug('workload API connection error', { error: err.message }));
    const transport = this.transport;
    if (!transport || this.state === 'stopping' || this.state === 'stopped') { socket.destroy(); return; }
    let peer: PeerProcess;
    try {
      peer = this.attestation.identifyPeer(socket);
    } catch (err) {
      this.logger.warn('workload API connection refused: its peer cannot be identified', { error: (err as Error).message });
      socket.destroy();
      return;
    }
    const key = `${peer.pid}/${peer.startTime}`;
    if (this.sockets.size >= MAX_CONNECTIONS || !this.perProcess.admit(key, socket)) {
      this.metrics.connectionsRefused++;
      this.logger.warn('workload API connection refused: too many open', { pid: peer.pid, uid: peer.uid, of_process: this.perProcess.held(key), total: this.sockets.size });
      this.attestation.release(peer);
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    this.metrics.openConnections++;
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.metrics.openConnections--;
      this.attestation.release(peer);
    });
    transport.attach(socket, peer);
  }

  private methods(): Map<string, GrpcMethod<PeerProcess>> {
    const decoder = (name: string) => this.proto.service[name]!.requestDeserialize;
    const stream = (kind: StreamKind): GrpcMethod<PeerProcess> => ({
      kind: 'server-stream',
      decodeRequest: decoder(kind),
      handle: (call) => { void this.serveStream(kind, call); },
    });
    const methods = new Map<string, GrpcMethod<PeerProcess>>([
      ['FetchX509SVID', stream('FetchX509SVID')],
      ['FetchX509Bundles', stream('FetchX509Bundles')],
      ['FetchJWTBundles', stream('FetchJWTBundles')],
      ['FetchJWTSVID', {
        kind: 'unary',
        decodeRequest: decoder('FetchJWTSVID'),
        handle: (call, request) => { this.unary(call, 'FetchJWTSVID', () => this.fetchJwtSvid(call, request as JWTSVIDRequestMessage)); },
      }],
      ['ValidateJWTSVID', {
        kind: 'unary',
        decodeRequest: decoder('ValidateJWTSVID'),
        handle: (call, request) => { this.unary(call, 'ValidateJWTSVID', () => this.validateJwtSvid(call, request as ValidateJWTSVIDRequestMessage)); },
      }],
    ]);
    const readiness = this.readiness;
    if (readiness) {
      const def = loadReadinessProto().service['WaitReady']!;
      methods.set(WAIT_READY_PATH, {
        kind: 'unary',
        decodeRequest: def.requestDeserialize,
        handle: (call, request) => {
          this.waitReady(call, request as WaitReadyRequestMessage, readiness)
            .then((answer) => { if (!call.done) call.reply(grpcFrame(def.responseSerialize(answer))); }, (err: unknown) => this.finishWithError(call, err));
        },
      });
    }
    return methods;
  }

  /** The caller's readiness, waited for until it is ready, the wait ends, the caller goes away or the server stops. */
  private async waitReady(call: Call, request: WaitReadyRequestMessage, readiness: NonNullable<WorkloadApiServerOptions['readiness']>): Promise<ReadinessAnswer> {
    if (call.metadata(SECURITY_HEADER) !== 'true') throw new InvalidArgument('security header missing from request', SECURITY_HEADER);
    if (request.timeout_seconds > MAX_WAIT_READY_SECONDS) throw new InvalidArgument(`timeout_seconds must be at most ${MAX_WAIT_READY_SECONDS}`, 'timeout_seconds');
    return readiness(call.context, request.timeout_seconds * 1000, () => call.done || this.state !== 'running');
  }

  private unary<T>(call: Call, method: string, body: () => Promise<T>): void {
    body().then((response) => {
      call.reply(grpcFrame(this.proto.service[method]!.responseSerialize(response)));
    }, (err: unknown) => this.finishWithError(call, err));
  }

  private finishWithError(call: Call, err: unknown): void {
    if (call.done) return;
    this.logCallError(err);
    const status = toServiceError(err);
    call.finish(status.code, status.details);
  }

  private logCallError(err: unknown): void {
    const e = err as Error & { code?: string };
    if (e?.code === undefined || e.code === 'internal') this.logger.error('workload API call failed', { error: e?.message });
    else this.logger.debug('workload API call refused', { code: e.code, error: e.message });
  }

  /** The caller's selectors: the peer pinned when its connection was accepted, attested (cached per process). */
  private async attestCaller(call: Call): Promise<SelectorSet> {
    // SPIFFE Workload Endpoint §5: the header proves the call did not come through a
    // proxy (SSRF); the standard requires exactly "true"
    if (call.metadata(SECURITY_HEADER) !== 'true') throw new InvalidArgument('security header missing from request', SECURITY_HEADER);
    return this.attestation.attest(call.context);
  }

  private async serveStream(kind: StreamKind, call: Call): Promise<void> {
    try {
      const selectors = await this.attestCaller(call);
      if (call.done) return;
      if (this.state !== 'running') throw new Unavailable('the workload API is shutting down');
      // from here to registration nothing awaits, so no change can slip between
      // the first answer and the subscription to the next ones
      const answer = this.answer(kind, selectors);
      const stream: OpenStream = { kind, call, selectors, lastSent: answer };
      this.streams.add(stream);
      this.metrics.openStreams++;
      call.onEnded(() => this.forgetStream(stream));
      call.sendLatest(this.frame(kind, answer));
    } catch (err) {
      this.finishWithError(call, err);
    }
  }

  /** Bytes held for stream clients now. */
  bufferedBytes(): number {
    let n = 0;
    for (const s of this.streams) n += s.call.bufferedBytes;
    return n;
  }

  /** Resets the streams whose client has read nothing for longer than the deadline. */
  private closeSlowReaders(): void {
    const now = Date.now();
    for (const stream of [...this.streams]) {
      const blocked = stream.call.blockedForMs(now);
      if (blocked <= this.slowReaderDeadlineMs) continue;
      this.forgetStream(stream);
      stream.call.abandon();
      this.metrics.slowReadersClosed++;
      this.logger.warn('workload API stream reset: its client read nothing for too long', { method: stream.kind, blocked_ms: blocked, deadline_ms: this.slowReaderDeadlineMs });
    }
  }

  private forgetStream(stream: OpenStream): void {
    if (this.streams.delete(stream)) this.metrics.openStreams--;
  }

  /** Ends an open stream with the status of err (logged by whoever raised it). */
  private endStream(stream: OpenStream, err: unknown): void {
    this.forgetStream(stream);
    const status = toServiceError(err);
    stream.call.finish(status.code, status.details);
  }

  /** Coalesces a burst of source changes into one pass over the open streams. */
  private scheduleRefresh(): void {
    if (this.refreshScheduled || this.state !== 'running') return;
    this.refreshScheduled = setImmediate(() => {
      this.refreshScheduled = undefined;
      this.refreshStreams();
    });
  }

  /**
   * Recomputes each open stream's answer (once per stream kind and selector set)
   * and sends it where it differs from the last message sent; a stream whose
   * caller no longer matches any entry ends with PermissionDenied.
   */
  private refreshStreams(): void {
    const failures = new Map<string, unknown>();
    for (const stream of [...this.streams]) {
      const key = answerKey(stream.kind, stream.selectors);
      let answer: Answer | undefined;
      let error: unknown = failures.get(key);
      if (error === undefined) {
        try {
          answer = this.answer(stream.kind, stream.selectors);
        } catch (err) {
          this.logCallError(err);
          error = err ?? new Error('the workload source failed');
          failures.set(key, error);
        }
      }
      if (!answer) { this.endStream(stream, error); continue; }
      if (answer === stream.lastSent) continue;
      if (this.serialized(stream.kind, answer).equals(this.serialized(stream.kind, stream.lastSent))) {
        stream.lastSent = answer;
        continue;
      }
      stream.lastSent = answer;
      stream.call.sendLatest(this.frame(stream.kind, answer));
    }
  }

  private serialized(kind: StreamKind, answer: Answer): Buffer {
    answer.bytes ??= this.proto.service[kind]!.responseSerialize(answer.message);
    return answer.bytes;
  }

  private frame(kind: StreamKind, answer: Answer): Buffer {
    answer.frame ??= grpcFrame(this.serialized(kind, answer));
    return answer.frame;
  }

  /**
   * The current message of a stream for these selectors. Throws PermissionDenied
   * when the caller is entitled to nothing, Unavailable when it is entitled but
   * holds no valid SVID (an expired one is never served).
   */
  private answer(kind: StreamKind, selectors: SelectorSet): Answer {
    const key = answerKey(kind, selectors);
    const now = Date.now();
    let answer = this.answers.get(key);
    if (answer === undefined || (!(answer instanceof Error) && answer.validUntil <= now)) {
      try {
        answer = kind === 'FetchX509SVID' ? this.x509SvidAnswer(selectors, now)
          : { message: kind === 'FetchX509Bundles' ? this.x509BundlesResponse(selectors) : this.jwtBundlesResponse(selectors), validUntil: Infinity };
      } catch (err) {
        if (!(err instanceof PermissionDenied) && !(err instanceof Unavailable)) throw err;
        answer = err;
      }
      // many distinct callers between two changes: start over rather than grow without bound
      if (this.answers.size >= 1024) this.answers.clear();
      this.answers.set(key, answer);
    }
    if (answer instanceof Error) throw answer;
    return answer;
  }

  /** The caller's identities, signed or not; empty when it is entitled to nothing. */
  private identities(selectors: SelectorSet): SpiffeId[] {
    return this.source.identitiesFor?.(selectors) ?? this.source.x509SvidsFor(selectors).map((s) => s.spiffeId);
  }

  private x509SvidAnswer(selectors: SelectorSet, now: number): Answer {
    const svids = this.source.x509SvidsFor(selectors).filter((s) => s.expiresAt.getTime() > now);
    if (svids.length === 0) {
      if (this.identities(selectors).length === 0) throw new PermissionDenied(NO_IDENTITY);
      throw new Unavailable(this.source.unavailableReason?.() ?? 'no valid SVID for this workload now; try again shortly');
    }
    return { message: this.x509SvidResponse(selectors, svids), validUntil: Math.min(...svids.map((s) => s.expiresAt.getTime())) };
  }

  private x509SvidResponse(selectors: SelectorSet, valid: CachedX509Svid[]): X509SVIDResponseMessage {
    const svids = uniqueHints(valid, (s) => s.hint, this.logger);
    const bundles = this.source.x509Bundles();
    const own = new Set(svids.map((s) => s.spiffeId.trustDomain.name));
    const federated = new Map([...this.source.federatedBundlesFor(selectors)].filter(([td]) => !own.has(td)));
    return {
      svids: svids.map((s): X509SVIDMessage => ({
        spiffe_id: s.spiffeId.toString(),
        x509_svid: Buffer.concat(s.certChainDer),
        x509_svid_key: s.privateKeyPkcs8Der,
        bundle: Buffer.concat(bundles.get(s.spiffeId.trustDomain.name) ?? []),
        hint: s.hint,
      })),
      crl: [],
      federated_bundles: byTrustDomainId(federated, (certs) => Buffer.concat(certs)),
    };
  }

  /**
   * The trust domains whose bundles the caller gets: its identities' own plus
   * those its entries federate with (bundles stay served while its SVIDs await
   * renewal). PermissionDenied for a caller entitled to nothing.
   */
  private entitledTrustDomains(selectors: SelectorSet): Set<string> {
    const ids = this.identities(selectors);
    if (ids.length === 0) {
      if (!this.allowUnauthenticatedVerifiers) throw new PermissionDenied(NO_IDENTITY);
      return new Set(this.source.x509Bundles().keys());
    }
    const trustDomains = new Set(ids.map((id) => id.trustDomain.name));
    for (const td of this.source.federatedBundlesFor(selectors).keys()) trustDomains.add(td);
    return trustDomains;
  }

  private x509BundlesResponse(selectors: SelectorSet): X509BundlesResponseMessage {
    const entitled = this.entitledTrustDomains(selectors);
    const bundles = new Map(this.source.x509Bundles());
    for (const [td, certs] of this.source.federatedBundlesFor(selectors)) if (!bundles.has(td)) bundles.set(td, certs);
    const visible = new Map([...bundles].filter(([td]) => entitled.has(td)));
    return { crl: [], bundles: byTrustDomainId(visible, (certs) => Buffer.concat(certs)) };
  }

  private jwtBundlesResponse(selectors: SelectorSet): JWTBundlesResponseMessage {
    const entitled = this.entitledTrustDomains(selectors);
    const visible = new Map([...this.source.jwtBundles()].filter(([td]) => entitled.has(td)));
    return { bundles: byTrustDomainId(visible, (jwks) => jwks) };
  }

  private async fetchJwtSvid(call: Call, request: JWTSVIDRequestMessage): Promise<JWTSVIDResponseMessage> {
    const { audience, spiffe_id: requested } = request;
    if (audience.length === 0 || audience.some((a) => a === '')) throw new InvalidArgument('audience must be specified', 'audience');
    checkAudience(audience);
    const spiffeId = requested ? SpiffeId.parse(requested, 'spiffe_id') : undefined;
    const selectors = await this.attestCaller(call);
    const svids = await this.source.jwtSvidsFor(selectors, [...audience], spiffeId);
    if (svids.length === 0) throw new PermissionDenied(NO_IDENTITY);
    return {
      svids: uniqueHints(svids, (s) => s.hint, this.logger).map((s): JWTSVIDMessage => ({ spiffe_id: s.spiffeId.toString(), svid: s.token, hint: s.hint })),
    };
  }

  private async validateJwtSvid(call: Call, request: ValidateJWTSVIDRequestMessage): Promise<ValidateJWTSVIDResponseMessage> {
    const { audience, svid } = request;
    if (audience === '') throw new InvalidArgument('audience must be specified', 'audience');
    if (svid === '') throw new InvalidArgument('svid must be specified', 'svid');
    // As spire-agent: the caller is attested, but one with no identity may still verify tokens against
    // its own trust domain's bundle (public keys); federated bundles only for the entries it has.
    const selectors = await this.attestCaller(call);
    const { spiffeId, claims } = this.source.validateJwtSvid(svid, audience, selectors);
    return { spiffe_id: spiffeId.toString(), claims: toStruct(claims) };
  }
}

function answerKey(kind: StreamKind, selectors: SelectorSet): string {
  return `${kind}\n${selectors.key()}`;
}

/**
 * The standard requires a set hint to be unique within one response; like
 * spire-agent, the first SVID with a hint wins and later ones are left out.
 */
function uniqueHints<T>(items: T[], hint: (item: T) => string, logger: Logger): T[] {
  const seen = new Set<string>();
  return items.filter((item) => {
    const h = hint(item);
    if (h === '') return true;
    if (seen.has(h)) {
      logger.warn('workload API left out an SVID whose hint is already used in this response', { hint: h });
      return false;
    }
    seen.add(h);
    return true;
  });
}

/** Bundles keyed by trust domain ID ("spiffe://example.org"), in a stable order so equal answers serialize equally. */
function byTrustDomainId<T>(byName: Map<string, T>, encode: (value: T) => Buffer): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const name of [...byName.keys()].sort()) out[`spiffe://${name}`] = encode(byName.get(name)!);
  return out;
}

/**
 * A socket file left by an agent that died is removed; one that something still
 * listens on, or a path that is not a socket, is an error rather than a takeover.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try { st = await lstat(path); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new FailedPrecondition(`${path} exists and is not a socket`, 'socketPath');
  const live = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => { probe.destroy(); resolve(false); });
  });
  if (live) throw new FailedPrecondition(`another process is serving ${path}`, 'socketPath');
  await unlink(path);
}
