/** meshid-agent: the parts wired together, started and stopped as one. */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/log.js';
import { MetricsRegistry } from '../common/metrics.js';
import { Bundle, FailedPrecondition } from '../spiffe/index.js';
import { AgentIdentity, JoinTokenPlugin, type AgentBanned, type NodeAttestorPlugin } from './attestation/index.js';
import { SvidCache } from './cache/index.js';
import type { AgentConfig } from './config.js';
import { HealthServer } from './health/index.js';
import { ServerConnection } from './serverapi/index.js';
import { AgentState, SyncClient } from './sync/index.js';
import { WorkloadApiServer } from './workloadapi/index.js';
import { NetnsAttestor, type PeerProcess, UnixAttestor, type WorkloadAttestor } from './workloadattestor/index.js';
import { DatapathManager } from './datapath/index.js';
import { NodeMembership } from './node/index.js';
import { LocalEndpoints } from './endpoints.js';
import { WireGuardManager } from './wireguard/index.js';
import type { AuthPair, FlowEvent } from '../bpf/index.js';
import type { Flow } from '../api/flow.js';
import type { NodeObservationMsg } from '../api/agentproto.js';
import { authEntriesJson, FlowDecoder, FlowHistory, FlowRelay } from './observe/index.js';
import { explainQuery, PolicyMapSync, type AuthRequirement } from './policy/index.js';
import { AuthPlanner, MutualAuth } from './mutualauth/index.js';
import { AgentAdminServer, type AgentAdminView } from './admin/index.js';

export interface MeshidAgentDeps {
  clock: Clock;
  logger: Logger;
  /** Node attestation other than join tokens (k8s_psat). */
  attestor?: NodeAttestorPlugin;
  /** Extra workload attestors (k8s). */
  workloadAttestors?: WorkloadAttestor[];
  /** Called when the server bans this agent; the binary exits. */
  onFatal?: (err: Error) => void;
}

/** Reads a bootstrap bundle: SPIFFE bundle JSON, or PEM certificates. */
export function readBundleFile(path: string, config: AgentConfig): Bundle {
  const text = readFileSync(path, 'utf8');
  return text.trimStart().startsWith('{') ? Bundle.fromJwks(config.trust_domain, text) : Bundle.fromPem(config.trust_domain, text);
}

export class MeshidAgent {
  readonly registry = new MetricsRegistry();
  readonly state: AgentState;
  readonly connection: ServerConnection;
  identity!: AgentIdentity;
  cache!: SvidCache;
  sync!: SyncClient;
  workloadApi!: WorkloadApiServer;
  private health: HealthServer | undefined;
  wireguard: WireGuardManager | undefined;
  membership: NodeMembership | undefined;
  /** Endpoints added and removed at run time (admin socket), and their readiness. */
  endpoints: LocalEndpoints | undefined;
  datapath: DatapathManager | undefined;
  /** Listeners of this node's flows (the admin socket's observe streams): its line, and the flow parsed on demand. */
  readonly flowListeners = new Set<(line: string, flow: () => Flow) => void>();
  /** The newest flows of this node. */
  readonly flowHistory: FlowHistory;
  /** This node's flows, auth map and counters to each server (every server shows the whole cluster). */
  relays: FlowRelay[] = [];
  private readonly flowDecoder: FlowDecoder;
  policy: PolicyMapSync | undefined;
  /** Which auth entries this node must hold. */
  readonly planner: AuthPlanner;
  mutualAuth: MutualAuth | undefined;
  private admin: AgentAdminServer | undefined;
  /** Where datapath signals go (the mutual-auth component). */
  onSignal: (pair: AuthPair) => void = () => {};
  healthPort = 0;
  private started = false;

  constructor(readonly config: AgentConfig, private readonly deps: MeshidAgentDeps) {
    this.state = new AgentState(config.trust_domain);
    this.connection = new ServerConnection(config.server, config.trust_domain);
    this.planner = new AuthPlanner({ state: this.state, ownPairs: () => this.policy?.authPairs() });
    this.flowHistory = new FlowHistory(config.observe.flow_history);
    this.flowDecoder = new FlowDecoder({ nodeName: this.nodeName, state: this.state });
  }

  get nodeName(): string { return this.config.node_name ?? hostname(); }

  async start(): Promise<void> {
    const { config, deps } = this;
    const log = deps.logger;
    const stored = join(config.data_dir, 'bundle.json');
    let bootstrap: Bundle;
    if (config.trust_bundle) bootstrap = readBundleFile(config.trust_bundle, config);
    else if (existsSync(stored)) bootstrap = readBundleFile(stored, config);
    else throw new FailedPrecondition('no trust bundle: give --trust-bundle FILE (the server\'s bundle, `meshid bundle show`)', 'trust_bundle');

    const attestor = deps.attestor ?? (config.join_token ? new JoinTokenPlugin(config.join_token) : undefined);
    this.identity = new AgentIdentity({
      trustDomain: config.trust_domain, dataDir: config.data_dir, connection: this.connection, bootstrapBundle: bootstrap,
      attestor, clock: deps.clock, logger: log.child({ component: 'attestation' }),
      onSvid: () => { if (this.started) this.sync.restart(); },
    });
    this.identity.onBanned = (err: AgentBanned) => this.fatal(err);
    const refused = (err: ServiceError): Promise<void> => this.identity.handleServerRefusal(err);

    await this.identity.start();
    this.cache = new SvidCache({ state: this.state, connection: this.connection, clock: deps.clock, logger: log.child({ component: 'cache' }), maxSvids: config.max_svids, onServerRefusal: refused, availabilityTargetMs: config.availability_target * 1000 });
    this.sync = new SyncClient({ connection: this.connection, state: this.state, logger: log.child({ component: 'sync' }), onRefused: refused });
    this.state.onChange((c) => {
      if (!c.bundles) return;
      const own = this.state.bundles.get(config.trust_domain);
      if (own && own.x509Authorities.length > 0) this.identity.updateBundle(own);
    });
    this.cache.start();
    this.sync.start();
    await this.startMesh();

    this.workloadApi = new WorkloadApiServer({
      socketPath: config.socket, source: this.cache, logger: log.child({ component: 'workloadapi' }), metricsRegistry: this.registry,
      slowReaderDeadlineMs: config.slow_reader_deadline * 1000,
      attestors: [new UnixAttestor({ workloadSha256: config.workload_sha256 }), new NetnsAttestor(), ...(deps.workloadAttestors ?? [])],
      allowUnauthenticatedVerifiers: config.allow_unauthenticated_verifiers,
      ...(this.endpoints ? { readiness: (caller: PeerProcess, timeoutMs: number, gone: () => boolean) => this.endpoints!.waitCallerReady(caller.pid, timeoutMs, gone) } : {}),
    });
    await this.workloadApi.start();
    this.registerMetrics();
    this.health = new HealthServer({ bind: config.health, registry: this.registry, readiness: () => this.readiness() });
    this.healthPort = await this.health.start();
    this.started = true;
    log.info('meshid-agent started', { spiffe_id: this.identity.current().spiffeId.toString(), socket: config.socket, health_port: this.healthPort });
  }

  /** WireGuard, node registration and the datapath, each where the config turns it on. */
  private async startMesh(): Promise<void> {
    const { config, deps } = this;
    const log = deps.logger;
    if (config.wireguard.enabled) {
      this.wireguard = new WireGuardManager({
        keyFile: join(config.data_dir, 'wireguard.key'), device: config.wireguard.device, listenPort: config.wireguard.port,
        implementation: config.wireguard.implementation, logger: log.child({ component: 'wireguard' }),
        ...(config.wireguard.address ? { address: config.wireguard.address } : {}),
      });
      await this.wireguard.start();
    }
    if (config.node.address || config.endpoints.length > 0 || this.wireguard) {
      this.membership = new NodeMembership({
        name: this.nodeName, address: config.node.address ?? '', podCidr: config.node.pod_cidr ?? '',
        endpoints: config.endpoints.map((e) => ({ name: e.name, namespace: e.namespace, serviceAccount: e.service_account, labels: e.labels, ip: e.ip, interface: e.interface })),
        connection: this.connection, state: this.state, logger: log.child({ component: 'node' }), wireguardPort: config.wireguard.port,
        endpointsOwnedElsewhere: config.kubernetes.enabled,
        ...(this.wireguard ? { wireguard: this.wireguard } : {}),
      });
      this.membership.start();
    }
    if (config.datapath.enabled) {
      this.datapath = new DatapathManager({
        state: this.state, logger: log.child({ component: 'datapath' }), registry: this.registry, pinDir: config.datapath.pin_dir,
        interfaces: config.endpoints.map((e) => e.interface), discoverInterfaces: config.datapath.discover_interfaces,
        ...(this.wireguard ? { wireguardDevice: this.wireguard.device } : {}),
        onSignal: (pair) => this.onSignal(pair),
        onEvent: (e) => this.onFlowEvent(e),
      });
      this.datapath.start();
      this.datapath.datapath.setTraceForwarded(config.observe.trace_forwarded);
      if (config.observe.relay) {
        // one stream to each server: an operator asks any of them, and each must know every node
        this.relays = this.connection.addresses.map((address) => new FlowRelay({
          connection: { duplex: (method) => this.connection.duplexTo(address, method), failed: () => {} },
          history: this.flowHistory, logger: log.child({ component: 'relay', server: address }),
          observation: () => this.observation(), explain: (q) => this.explain(q),
        }));
        for (const r of this.relays) r.start();
      }
      const authMap = this.datapath.datapath.auth;
      this.policy = new PolicyMapSync({
        state: this.state, map: this.datapath.datapath.policy, logger: log.child({ component: 'policy' }),
        // make-before-break: a flow allowed so far keeps passing while its new auth requirement's pair is authenticated
        ...(config.mutual_auth.enabled ? {
          authUpgrade: {
            holdMs: config.mutual_auth.upgrade_grace * 1000,
            now: () => deps.clock.now().getTime(),
            ready: (p: AuthRequirement) => this.planner.heldEverywhere(p, (pair) => authMap.get(pair) !== undefined),
          },
        } : {}),
      });
      this.policy.start();
    }
    if (config.mutual_auth.enabled) {
      if (!this.datapath || !this.policy) throw new FailedPrecondition('mutual_auth needs the datapath (datapath.enabled: true)', 'mutual_auth.enabled');
      if (!config.node.address) throw new FailedPrecondition('mutual_auth needs node.address (where peers reach this agent)', 'node.address');
      const auth = new MutualAuth({
        state: this.state,
        agentSvid: () => { const s = this.identity.current(); return { chain: s.chain, key: s.key }; },
        workloadSvid: (id) => { const h = this.cache.svidFor(id); return h && { chain: h.svid.certChainDer, key: h.key }; },
        authMap: this.datapath.datapath.auth, clock: deps.clock, logger: log.child({ component: 'mutualauth' }),
        listen: { host: config.node.address, port: config.mutual_auth.port },
        ...(this.wireguard && this.membership ? { tunnel: this.membership } : {}),
      });
      this.mutualAuth = auth;
      await auth.start();
      auth.registerMetrics(this.registry);
      this.onSignal = (pair) => { void auth.authenticate([{ localIdentity: pair.localIdentity, remoteIdentity: pair.remoteIdentity, remoteNodeId: pair.remoteNodeId }]); };
      const policy = this.policy;
      const authMap = this.datapath.datapath.auth;
      const held = (pair: AuthPair): boolean => authMap.get(pair) !== undefined;
      // Pre-authentication: every pair a policy requires, with every node that hosts the remote identity,
      // as soon as the pair, the identity or the endpoint appears; so the first packet finds its entry.
      // Entries held until their pairs are authenticated (make-before-break) may go once it is done.
      const preauthenticate = (pairs: readonly AuthRequirement[]): void => {
        const requests = this.planner.requests(pairs, held);
        if (requests.length > 0) void auth.authenticate(requests).finally(() => policy.recheckHeld());
      };
      policy.onAuthPairsChange((c) => { if (c.added.length > 0) preauthenticate(c.added); });
      this.state.onChange((c) => {
        if (c.snapshot || c.policies.upserted.length + c.policies.removed.length + c.identities.removed.length > 0) {
          const needed = this.planner.neededByPolicy();
          auth.removeWhere((p) => (needed(p) ? undefined : 'no_policy'));
        }
        if (c.endpoints.upserted.length + c.endpoints.removed.length + c.nodes.removed.length + c.identities.removed.length > 0 || c.snapshot) {
          auth.collectOrphans();
          preauthenticate(policy.authPairs());
        }
      });
      // The SVIDs a proof needs may arrive after the pairs: try again when they do.
      this.cache.onChange(() => preauthenticate(policy.authPairs()));
      void auth.reconcile();
      preauthenticate(policy.authPairs());
    }
    if (this.membership) {
      this.endpoints = new LocalEndpoints({
        state: this.state, membership: this.membership, planner: this.planner,
        ...(this.datapath ? { datapath: this.datapath, authMap: this.datapath.datapath.auth } : {}),
      });
    }
    if (this.datapath || this.mutualAuth || this.endpoints) {
      this.admin = new AgentAdminServer(this.adminView(), config.admin_socket);
      await this.admin.start();
    }
  }

  /** What the admin socket may read. */
  private adminView(): AgentAdminView {
    return {
      nodeName: this.nodeName,
      state: this.state,
      identity: () => ({ spiffeId: this.identity.current().spiffeId.toString(), sync: this.sync.status, server: this.connection.address, svids: this.cache.size }),
      wireguard: () => (this.wireguard ? { device: this.wireguard.device, public_key: this.wireguard.publicKey } : null),
      discoveredInterfaces: () => (this.datapath ? Object.fromEntries(this.datapath.discoveredInterfaces()) : null),
      mutualAuthStats: () => this.mutualAuth?.stats() ?? null,
      authEntries: () => this.datapath?.datapath.auth.entries() ?? [],
      explain: (q) => this.explain(q),
      endpoints: () => this.endpoints,
      onFlow: (listener) => { this.flowListeners.add(listener); return () => { this.flowListeners.delete(listener); }; },
      flowHistory: (last) => this.flowHistory.lines(last),
    };
  }

  /** A datapath event: decoded once, kept in the history, relayed, shown to the admin socket's streams. */
  private onFlowEvent(e: FlowEvent): void {
    const line = this.flowDecoder.line(e);
    this.flowHistory.add(line);
    for (const r of this.relays) r.push(line);
    if (this.flowListeners.size === 0) return;
    let flow: Flow | undefined;
    const parsed = (): Flow => (flow ??= JSON.parse(line) as Flow);
    for (const l of this.flowListeners) l(line, parsed);
  }

  /** What a relay reports of this node besides its flows. */
  private observation(): Omit<NodeObservationMsg, 'lost_in_relay'> {
    const dp = this.datapath?.datapath;
    return {
      auth_entries_json: JSON.stringify(dp ? authEntriesJson(this.state, this.nodeName, dp.auth.entries()) : []),
      counters: dp ? dp.metrics.read().map((m) => ({ reason: m.reason, direction: m.direction, packets: Number(m.packets), bytes: Number(m.bytes) })) : [],
      lost_in_ring: dp ? Number(dp.eventsLost()) : 0,
    };
  }

  /** `meshid explain`: from/to are pod names, namespace/pod, or IPs. */
  explain(q: URLSearchParams): Record<string, unknown> {
    const authMap = this.datapath?.datapath.auth;
    return explainQuery(this.state, q, { nodeName: this.nodeName, ...(authMap ? { hasAuthEntry: (p: AuthPair) => authMap.get(p) !== undefined } : {}) });
  }

  private fatal(err: Error): void {
    this.deps.logger.error('agent stopping', { reason: err.message });
    this.deps.onFatal?.(err);
  }

  readiness(): { ready: boolean; reason: string } {
    if (!this.started) return { ready: false, reason: 'starting' };
    if (!this.sync.lastSyncAt) return { ready: false, reason: 'not yet synced with the server' };
    const l = this.cache.lifetimes();
    if (l.expired > 0 && l.fresh + l.renewalDue === 0) {
      const since = this.cache.serverFailingSince;
      return { ready: false, reason: `all ${l.expired} X509-SVIDs held have expired${since ? `; the server has been unreachable since ${since.toISOString()}` : ''}` };
    }
    return { ready: true, reason: `sync ${this.sync.status}, ${this.cache.size} SVIDs cached` };
  }

  private registerMetrics(): void {
    const r = this.registry;
    this.cache.registerMetrics(r);
    const entries = r.gauge('meshid_agent_entries', 'Registration entries this agent holds.');
    entries.collect(() => entries.set(this.state.entries.size));
    const flows = r.gauge('meshid_agent_flows', 'Flows of this node: observed (decoded from the datapath), relayed to the server, lost (outcome: the kernel ring or the relay queue was full), and held in the history.');
    flows.collect(() => {
      flows.reset();
      flows.set(this.flowHistory.added, { outcome: 'observed' });
      flows.set(this.flowHistory.size, { outcome: 'in_history' });
      for (const r of this.relays) {
        flows.set(flows.get({ outcome: 'relayed' }) + r.sent, { outcome: 'relayed' });
        flows.set(flows.get({ outcome: 'lost_in_relay' }) + r.lost, { outcome: 'lost_in_relay' });
      }
      if (this.datapath) flows.set(Number(this.datapath.datapath.eventsLost()), { outcome: 'lost_in_ring' });
    });
    const relay = r.gauge('meshid_agent_relay_connected', 'Relay streams to the servers, by state (open while the server hears this node).');
    relay.collect(() => { relay.reset(); for (const x of this.relays) relay.set(relay.get({ state: x.status }) + 1, { state: x.status }); });
    const sync = r.gauge('meshid_agent_sync_connected', '1 while the Sync stream is up, by state.');
    sync.collect(() => { sync.reset(); sync.set(1, { state: this.sync.status }); });
    const reconnects = r.gauge('meshid_agent_sync_reconnects', 'Sync stream reconnects since start.');
    reconnects.collect(() => reconnects.set(this.sync.reconnects));
    const agentExpiry = r.gauge('meshid_agent_svid_expiry_seconds', 'Unix time when the agent SVID expires.');
    agentExpiry.collect(() => agentExpiry.set(Math.floor(this.identity.current().expiresAt.getTime() / 1000)));
  }

  async stop(): Promise<void> {
    this.started = false;
    await this.health?.stop();
    await this.workloadApi?.stop();
    await this.admin?.stop();
    for (const r of this.relays) r.stop();
    await this.mutualAuth?.stop();
    this.policy?.stop();
    this.datapath?.stop();
    this.membership?.stop();
    await this.wireguard?.stop();
    this.sync?.stop();
    this.cache?.stop();
    this.identity?.stop();
    this.connection.close();
  }
}
