/** The agent API: node attestation, SVID signing for agents, and the Sync stream. */
import { Server, status as Status, type ConnectionInjector, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseBind } from '../../common/bind.js';
import { ConnectionsPerKey } from '../../common/connlimit.js';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { toServiceError } from '../../common/grpcstatus.js';
import {
  loadAgentProto, type AttestAgentRequestMsg, type AttestAgentResponseMsg, type BatchNewX509SvidRequestMsg,
  type BatchNewX509SvidResponseMsg, type BatchNewX509SvidResultMsg, type NewJwtSvidRequestMsg, type NewJwtSvidResponseMsg,
  type PublishNodeRequestMsg, type PublishNodeResponseMsg, type RegisterEndpointsRequestMsg, type RegisterEndpointsResponseMsg,
  type RelayDownMsg, type RelayUpMsg, type RenewAgentRequestMsg, type RenewAgentResponseMsg, type SyncUpdateMsg,
} from '../../api/agentproto.js';
import { type Bundle, checkAudience, FailedPrecondition, InvalidArgument, matchAgentOf, MeshidError, NotFound, pemFromDer, PermissionDenied, ResourceExhausted, type SpiffeId, Unauthenticated, verifyX509Svid } from '../../spiffe/index.js';
import type { CertificateAuthority, SignedX509Svid } from '../ca/index.js';
import type { AttestedNode, Datastore, RegistrationEntry } from '../datastore/index.js';
import type { AttestorRegistry } from '../attestation/index.js';
import type { ServerMetrics } from '../metrics.js';
import type { RelayHub } from '../observe/index.js';
import { AgentApiCredentials } from './credentials.js';
import { endpointMsg, nodeMsg, x509SvidMsg } from './convert.js';
import { AgentSyncStream, type ChangeSource } from './sync.js';
import { ServerIdentity } from './identity.js';
import type { EndpointRegistrar } from './endpoints.js';
import { authorizeEndpointClaim, authorizeNodeClaim } from './nodeclaims.js';
import { AgentLookups } from './lookups.js';
import { Gate } from '../../common/gate.js';

export interface AgentApiOptions {
  /** host:port; port 0 picks a free one (see start()'s result). */
  bind: string;
  ca: CertificateAuthority;
  store: Datastore;
  attestors: AttestorRegistry;
  clock: Clock;
  logger: Logger;
  metrics: ServerMetrics;
  agentSvidTtlSeconds: number;
  endpoints: EndpointRegistrar;
  /** Nodes and pods come from the Kubernetes API: its addresses, pod CIDRs and pod IPs win over what agents claim. */
  kubernetesOwnsNodes?: boolean;
  /** Largest number of CSRs in one BatchNewX509SVID call. */
  maxBatchSize?: number;
  /** Where agents' Relay streams go (flows, auth maps, counters, explain); absent: Relay is refused. */
  relay?: RelayHub;
  /** Sync snapshots read at once; more wait their turn. Default 4. */
  concurrentSnapshots?: number;
  /** Largest request message, bytes. */
  maxMessageBytes?: number;
  /** Connections one source address may hold (an agent needs one or two). Default 32. */
  maxConnectionsPerSource?: number;
  /** Connections in all. Default 20 000. */
  maxConnections?: number;
  /** A connection that has not sent a TLS ClientHello by then is closed. Default 5000 ms. */
  helloTimeoutMs?: number;
  /** AttestAgent calls one source address may make a minute. Default 60. */
  attestPerSourcePerMinute?: number;
  /**
   * Where Sync streams hear of changes: the change feed (every server's writes,
   * datastore/feed.ts), as meshid-server runs it. Default: the datastore's own
   * commits, enough for one server in one process.
   */
  changes?: ChangeSource & { onReset?(listener: () => void): () => void };
  /** The trust domain's authorities, to verify agents by: every server's (ca/cluster.ts). Default: this CA's own. */
  trust?: { bundle(): Bundle; intermediates(): Buffer[]; onChange?(listener: () => void): void };
}

/** gRPC handlers get the authenticated agent from here; one lookup per call. */
interface Caller { node: AttestedNode; agentId: SpiffeId }

export class AgentApiServer {
  private server: Server | undefined;
  private readonly identity: ServerIdentity;
  private readonly streams = new Set<AgentSyncStream>();
  private readonly maxBatch: number;
  /** Per-agent lookups between the changes that alter them (lookups.ts). */
  readonly lookups: AgentLookups;
  /**
   * Sync snapshots read several tables each; when thousands of agents connect at
   * once (a server restart, a failover) they take their turn here instead of
   * queueing on the datastore's connections, where a wait is bounded by the busy
   * timeout and attestation and signing would wait behind them.
   */
  private readonly snapshots: Gate;

  constructor(private readonly opts: AgentApiOptions) {
    this.lookups = new AgentLookups(opts.store, opts.changes ?? opts.store);
    this.snapshots = new Gate(opts.concurrentSnapshots ?? 4);
    const trust = opts.trust;
    this.identity = trust
      ? new ServerIdentity(opts.ca, opts.clock, opts.logger, () => [trust.bundle().x509Pem(), ...trust.intermediates().map((d) => pemFromDer(d))].join(''))
      : new ServerIdentity(opts.ca, opts.clock, opts.logger);
    trust?.onChange?.(() => this.identity.refreshRoots());
    this.maxBatch = opts.maxBatchSize ?? 1000;
  }

  async start(): Promise<number> {
    this.opts.changes?.onReset?.(() => { for (const s of this.streams) s.resync(); });
    this.lookups.start();
    const creds = new AgentApiCredentials(this.identity.start());
    this.identity.onRotate((ctx) => creds.update(ctx));
    const maxBytes = this.opts.maxMessageBytes ?? 4 * 1024 * 1024;
    this.server = new Server({ 'grpc.max_receive_message_length': maxBytes, 'grpc.max_send_message_length': 64 * 1024 * 1024 });
    this.server.addService(loadAgentProto().service, this.handlers());
    // Our own listener hands each admitted TCP connection to gRPC: limits apply before TLS.
    const injector = this.server.createConnectionInjector(creds);
    this.injector = injector;
    const { host, port } = parseBind(this.opts.bind, 'bind');
    const listener = createNetServer((socket) => this.admit(socket, injector));
    listener.maxConnections = this.opts.maxConnections ?? 20_000;
    this.listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(port, host ?? '::', () => { listener.off('error', reject); resolve(); });
    });
    listener.on('error', (err) => this.opts.logger.error('agent API listener failed', { err }));
    const bound = (listener.address() as AddressInfo).port;
    this.opts.logger.info('agent API listening', { bind: this.opts.bind, port: bound });
    return bound;
  }

  private injector: ConnectionInjector | undefined;
  private listener: NetServer | undefined;
  private perSource: ConnectionsPerKey | undefined;
  private readonly attestWindow = new Map<string, { start: number; count: number }>();

  /** Per-source cap and a ClientHello deadline, then TLS and gRPC. */
  private admit(socket: Socket, injector: ConnectionInjector): void {
    const source = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    this.perSource ??= new ConnectionsPerKey(this.opts.maxConnectionsPerSource ?? 32);
    if (!this.perSource.admit(source, socket)) {
      this.opts.metrics.agentApiConnectionsRefused.inc({ reason: 'source_limit' });
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    const hello = setTimeout(() => {
      // a ClientHello is a few hundred bytes; a connection that sent none by now is holding a slot
      if (socket.bytesRead < 64) {
        this.opts.metrics.agentApiConnectionsRefused.inc({ reason: 'hello_timeout' });
        socket.destroy();
      }
    }, this.opts.helloTimeoutMs ?? 5000);
    hello.unref();
    socket.once('close', () => clearTimeout(hello));
    injector.injectConnection(socket);
  }

  /** AttestAgent per source address: a fixed window of a minute, as SPIRE limits attestation per IP. */
  private limitAttestation(peer: string): void {
    const source = peer.replace(/^ipv[46]:/, '').replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const now = Date.now();
    const limit = this.opts.attestPerSourcePerMinute ?? 60;
    let w = this.attestWindow.get(source);
    if (!w || now - w.start >= 60_000) {
      if (this.attestWindow.size > 10_000) this.attestWindow.clear();
      w = { start: now, count: 0 };
      this.attestWindow.set(source, w);
    }
    if (++w.count > limit) throw new ResourceExhausted(`more than ${limit} AttestAgent calls from ${source} in a minute; try again in ${Math.ceil((w.start + 60_000 - now) / 1000)} s`);
  }

  async stop(): Promise<void> {
    this.lookups.stop();
    for (const s of this.streams) s.stop();
    this.streams.clear();
    this.identity.stop();
    const server = this.server;
    this.server = undefined;
    const listener = this.listener;
    this.listener = undefined;
    if (!server) return;
    const closed = listener ? new Promise<void>((resolve) => listener.close(() => resolve())) : Promise.resolve();
    this.injector?.drain(1000);
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => { this.injector?.destroy(); server.forceShutdown(); resolve(); }, 2000);
      server.tryShutdown(() => { clearTimeout(force); resolve(); });
    });
    this.injector?.destroy();
    this.injector = undefined;
    await closed;
  }

  /** The server's own SVID chain, so tests and tools can pin it. */
  serverCertificateChain(): Buffer[] { return this.identity.chain(); }

  private handlers(): UntypedServiceImplementation {
    const attest = this.unary('AttestAgent', false, (req: AttestAgentRequestMsg) => this.attestAgent(req));
    return {
      AttestAgent: (call: ServerUnaryCall<AttestAgentRequestMsg, AttestAgentResponseMsg>, callback: sendUnaryData<AttestAgentResponseMsg>) => {
        try { this.limitAttestation(call.getPeer()); } catch (err) {
          this.opts.metrics.agentApiCalls.inc({ method: 'AttestAgent', code: 'RESOURCE_EXHAUSTED' });
          callback(toServiceError(err));
          return;
        }
        attest(call, callback);
      },
      RenewAgent: this.unary('RenewAgent', true, (req: RenewAgentRequestMsg, caller) => this.renewAgent(req, caller!)),
      BatchNewX509SVID: this.unary('BatchNewX509SVID', true, (req: BatchNewX509SvidRequestMsg, caller) => this.batchNewX509Svid(req, caller!)),
      NewJWTSVID: this.unary('NewJWTSVID', true, (req: NewJwtSvidRequestMsg, caller) => this.newJwtSvid(req, caller!)),
      PublishNode: this.unary('PublishNode', true, (req: PublishNodeRequestMsg, caller) => this.publishNode(req, caller!)),
      RegisterEndpoints: this.unary('RegisterEndpoints', true, (req: RegisterEndpointsRequestMsg, caller) => this.registerEndpoints(req, caller!)),
      Sync: (call: ServerWritableStream<unknown, SyncUpdateMsg>) => { void this.sync(call); },
      Relay: (call: ServerDuplexStream<RelayUpMsg, RelayDownMsg>) => { void this.relay(call); },
    };
  }

  private unary<Req, Res>(method: string, authenticated: boolean, fn: (req: Req, caller: Caller | undefined) => Promise<Res> | Res) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const started = performance.now();
      let caller: Caller | undefined;
      Promise.resolve()
        .then(async () => { caller = authenticated ? await this.authenticate(call) : undefined; return fn(call.request, caller); })
        .then((res) => {
          this.opts.metrics.agentApiCalls.inc({ method, code: 'OK' });
          callback(null, res);
        }, (err: unknown) => {
          const se = toServiceError(err);
          this.opts.metrics.agentApiCalls.inc({ method, code: Status[se.code] ?? String(se.code) });
          if (!(err instanceof MeshidError)) this.opts.logger.error('agent API call failed', { method, err });
          else if (caller && err.code === 'permission_denied') {
            // an attested agent reaching for what is not its own: the operator's audit trail names it
            this.opts.metrics.agentRefusals.inc({ method });
            this.opts.logger.warn('agent refused', { audit: true, action: method, agent_id: caller.agentId.toString(), result: 'denied', reason: err.message });
          } else this.opts.logger.info('agent API call refused', { method, code: err.code, reason: err.message });
          callback(se);
        })
        .finally(() => this.opts.metrics.agentApiLatency.observe((performance.now() - started) / 1000, { method }));
    };
  }

  /**
   * The caller's agent SVID, checked against the trust bundle, and its attested
   * node record: an evicted agent must attest again (Unauthenticated), a banned
   * one gets nothing (PermissionDenied), a superseded SVID is refused.
   */
  private async authenticate(call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } | null }): Promise<Caller> {
    const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
    if (!raw) throw new Unauthenticated('no client certificate: attest with AttestAgent first');
    const trust = this.opts.trust ?? this.opts.ca;
    const bundle = trust.bundle();
    let agentId: SpiffeId, serial: string;
    try {
      const v = verifyX509Svid([raw, ...trust.intermediates()], (td) => (td.equals(bundle.trustDomain) ? bundle.x509Authorities : undefined), this.opts.clock.now());
      agentId = v.spiffeId;
      serial = v.leaf.serialHex;
    } catch (err) {
      throw new Unauthenticated(`client certificate refused: ${(err as Error).message}`);
    }
    const refused = matchAgentOf(bundle.trustDomain)(agentId);
    if (refused) throw new PermissionDenied(refused);
    let node = await this.lookups.attestedNode(agentId);
    if (!node) throw new Unauthenticated(`agent ${agentId} is not attested (evicted?): attest again`);
    if (node.banned) throw new PermissionDenied(`agent ${agentId} is banned`);
    if (serial !== node.certSerial) {
      if (serial !== node.newCertSerial) throw new Unauthenticated(`agent SVID serial ${serial} is not the current one: attest again`);
      node = await this.opts.store.updateAttestedNode(agentId, {
        certSerial: node.newCertSerial, certNotAfter: node.newCertNotAfter, newCertSerial: '', newCertNotAfter: 0,
      });
    }
    return { node, agentId };
  }

  private signAgentSvid(agentId: SpiffeId, csr: Buffer) {
    const { publicKeySpki } = this.opts.ca.parseCsr(csr);
    return this.opts.ca.signX509Svid(agentId, publicKeySpki, this.opts.agentSvidTtlSeconds);
  }

  private async attestAgent(req: AttestAgentRequestMsg): Promise<AttestAgentResponseMsg> {
    if (!req.attestation || !req.attestation.type) throw new InvalidArgument('attestation data is missing', 'attestation');
    if (!req.csr || req.csr.length === 0) throw new InvalidArgument('csr is missing', 'csr');
    const { publicKeySpki } = this.opts.ca.parseCsr(req.csr); // before the attestor spends a one-time token
    const result = await this.opts.attestors.get(req.attestation.type).attest(req.attestation.payload);
    const existing = await this.opts.store.findAttestedNode(result.agentId);
    if (existing?.banned) throw new PermissionDenied(`agent ${result.agentId} is banned`);
    const svid = this.opts.ca.signX509Svid(result.agentId, publicKeySpki, this.opts.agentSvidTtlSeconds);
    const certNotAfter = Math.floor(svid.expiresAt.getTime() / 1000);
    if (existing) {
      await this.opts.store.updateAttestedNode(result.agentId, {
        attestationType: req.attestation.type, certSerial: svid.serialHex, certNotAfter, newCertSerial: '', newCertNotAfter: 0,
        selectors: result.selectors, canReattest: result.canReattest,
      });
    } else {
      await this.opts.store.createAttestedNode({
        spiffeId: result.agentId, attestationType: req.attestation.type, certSerial: svid.serialHex, certNotAfter,
        selectors: result.selectors, canReattest: result.canReattest,
      });
    }
    this.opts.metrics.svidsSigned.inc({ type: 'agent' });
    this.opts.logger.info('agent attested', { agent_id: result.agentId.toString(), attestation: req.attestation.type });
    return { svid: x509SvidMsg(result.agentId, svid.certChainDer, svid.expiresAt), bundle: Buffer.from((this.opts.trust ?? this.opts.ca).bundle().toJson()) };
  }

  private async renewAgent(req: RenewAgentRequestMsg, caller: Caller): Promise<RenewAgentResponseMsg> {
    const svid = this.signAgentSvid(caller.agentId, req.csr);
    await this.opts.store.updateAttestedNode(caller.agentId, { newCertSerial: svid.serialHex, newCertNotAfter: Math.floor(svid.expiresAt.getTime() / 1000) });
    this.opts.metrics.svidsSigned.inc({ type: 'agent' });
    return { svid: x509SvidMsg(caller.agentId, svid.certChainDer, svid.expiresAt) };
  }

  /** The entries the caller may have, by id. */
  private async authorizedEntries(caller: Caller): Promise<Map<string, RegistrationEntry>> {
    return this.lookups.entriesFor(caller.agentId, caller.node.selectors, this.opts.store.nowSeconds());
  }

  private async batchNewX509Svid(req: BatchNewX509SvidRequestMsg, caller: Caller): Promise<BatchNewX509SvidResponseMsg> {
    if (req.params.length === 0) throw new InvalidArgument('params is empty', 'params');
    if (req.params.length > this.maxBatch) throw new ResourceExhausted(`${req.params.length} CSRs in one call; the limit is ${this.maxBatch}`, 'params');
    const entries = await this.authorizedEntries(caller);
    const started = performance.now();
    const results: BatchNewX509SvidResultMsg[] = new Array(req.params.length);
    const refused = (i: number, err: unknown): BatchNewX509SvidResultMsg => {
      const se = toServiceError(err);
      if (!(err instanceof MeshidError)) this.opts.logger.error('signing failed', { entry_id: req.params[i]!.entry_id, index: i, err });
      return { status: { code: se.code, message: se.details }, svid: null, entry_id: req.params[i]!.entry_id };
    };
    // authorised first, here; the signing path (CSR check, encoding, signature) for the batch as one
    const toSign: Array<{ index: number; entry: RegistrationEntry }> = [];
    req.params.forEach((p, i) => {
      const entry = entries.get(p.entry_id);
      if (entry) toSign.push({ index: i, entry });
      else results[i] = refused(i, new PermissionDenied(`entry "${p.entry_id}" does not exist or is not authorised for ${caller.agentId}`));
    });
    let signed: Array<SignedX509Svid | MeshidError>;
    try {
      signed = await this.opts.ca.signX509Svids(toSign.map(({ index, entry }) => ({
        spiffeId: entry.spiffeId, csr: req.params[index]!.csr, ttlSeconds: entry.x509SvidTtl, dnsNames: entry.dnsNames,
      })));
    } catch (err) {
      // the whole batch failed (the CA is not started, a signing worker died): every item says why
      for (const { index } of toSign) results[index] = refused(index, err);
      return { results };
    }
    const seconds = (performance.now() - started) / 1000;
    signed.forEach((svid, k) => {
      const { index, entry } = toSign[k]!;
      if (svid instanceof MeshidError) {
        results[index] = refused(index, svid);
        return;
      }
      this.opts.metrics.svidsSigned.inc({ type: 'x509' });
      this.opts.metrics.signingLatency.observe(seconds);
      results[index] = { status: { code: Status.OK, message: '' }, svid: x509SvidMsg(entry.spiffeId, svid.certChainDer, svid.expiresAt), entry_id: req.params[index]!.entry_id };
    });
    return { results };
  }

  private async newJwtSvid(req: NewJwtSvidRequestMsg, caller: Caller): Promise<NewJwtSvidResponseMsg> {
    checkAudience(req.audience);
    const entry = (await this.authorizedEntries(caller)).get(req.entry_id);
    if (!entry) throw new PermissionDenied(`entry "${req.entry_id}" does not exist or is not authorised for ${caller.agentId}`);
    const jwt = this.opts.ca.signJwtSvid(entry.spiffeId, req.audience, entry.jwtSvidTtl);
    this.opts.metrics.svidsSigned.inc({ type: 'jwt' });
    return { svid: { token: jwt.token, spiffe_id: entry.spiffeId.toString(), expires_at: Math.floor(jwt.expiresAt.getTime() / 1000), issued_at: Math.floor(jwt.issuedAt.getTime() / 1000) } };
  }

  private async publishNode(req: PublishNodeRequestMsg, caller: Caller): Promise<PublishNodeResponseMsg> {
    const node = await this.opts.store.transaction(async (tx) => {
      const claim = authorizeNodeClaim(req, { agentId: caller.agentId, selectors: caller.node.selectors }, await tx.listNodes(), this.opts.kubernetesOwnsNodes ?? false);
      for (const o of claim.overridden) {
        this.opts.metrics.agentClaimsOverridden.inc({ field: o.field });
        this.opts.logger.warn('agent claim disagrees with the Kubernetes API, which wins', { agent_id: caller.agentId.toString(), node: req.name, field: o.field, claimed: o.claimed, kept: o.kept });
      }
      return tx.upsertNode(claim.update);
    });
    return { node: nodeMsg(node) };
  }

  private async registerEndpoints(req: RegisterEndpointsRequestMsg, caller: Caller): Promise<RegisterEndpointsResponseMsg> {
    const endpoints = await this.opts.store.transaction(async (tx) => {
      const node = (await tx.listNodes()).find((n) => n.agentId === caller.agentId.toString());
      if (!node) throw new NotFound(`agent ${caller.agentId} has not published its node`, 'node');
      if (this.opts.kubernetesOwnsNodes) {
        // pods come from the API; an agent's list neither adds nor (empty) removes any
        if (req.endpoints.length > 0) throw new PermissionDenied(`endpoints come from the Kubernetes API here; agent ${caller.agentId} may not register any`);
        return tx.listEndpoints({ nodeId: node.id });
      }
      await authorizeEndpointClaim(req.endpoints, node, (ip) => tx.findEndpoint(ip));
      return this.opts.endpoints.replaceNodeEndpoints(node.id, req.endpoints, tx);
    });
    return { endpoints: endpoints.map(endpointMsg) };
  }

  /**
   * An agent's Relay stream: its node is the one the registry binds to its SVID
   * (PublishNode), so an agent can speak only for its own node.
   */
  private async relay(call: ServerDuplexStream<RelayUpMsg, RelayDownMsg>): Promise<void> {
    let caller: Caller;
    try {
      if (!this.opts.relay) throw new FailedPrecondition('this server keeps no relay');
      caller = await this.authenticate(call);
    } catch (err) {
      call.emit('error', toServiceError(err));
      return;
    }
    if (call.cancelled) return;
    const agentId = caller.agentId.toString();
    const node = (await this.opts.store.listNodes()).find((n) => n.agentId === agentId)?.name;
    if (!node) {
      // nothing to speak for yet: the agent asks again (it publishes its node as it starts)
      call.emit('error', toServiceError(new FailedPrecondition(`agent ${agentId} has published no node yet (PublishNode): a relay stream speaks for its node`)));
      return;
    }
    const link = this.opts.relay!.attach(node, agentId, { write: (msg) => call.write(msg) });
    this.opts.metrics.agentApiCalls.inc({ method: 'Relay', code: 'OK' });
    call.on('data', (msg: RelayUpMsg) => link.receive(msg));
    let closed = false;
    const end = (): void => { if (!closed) { closed = true; link.close(); } };
    call.on('end', () => { end(); call.end(); });
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
  }

  private async sync(call: ServerWritableStream<unknown, SyncUpdateMsg>): Promise<void> {
    let caller: Caller;
    try {
      caller = await this.authenticate(call);
    } catch (err) {
      call.emit('error', toServiceError(err));
      return;
    }
    if (call.cancelled) return;
    const stream = new AgentSyncStream(this.opts.store, caller.agentId, caller.node.selectors, {
      write: (msg) => call.write(msg),
      fail: (err) => { this.streams.delete(stream); call.emit('error', toServiceError(err)); },
    }, undefined, this.opts.changes, this.snapshots);
    this.streams.add(stream);
    this.opts.metrics.syncStreams.set(this.streams.size);
    const end = (): void => {
      stream.stop();
      this.streams.delete(stream);
      this.opts.metrics.syncStreams.set(this.streams.size);
    };
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
    stream.start(Number((call.request as { revision?: number | string } | undefined)?.revision ?? 0));
  }
}
