/** meshid-server: the parts wired together, started and stopped as one. */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/log.js';
import { DataLoss, FailedPrecondition } from '../spiffe/index.js';
import { AdminApi } from './adminapi/index.js';
import { AgentApiServer } from './agentapi/index.js';
import { AttestorRegistry, JoinTokenAttestor, type NodeAttestor } from './attestation/index.js';
import { RelayHub } from './observe/index.js';
import { CertificateAuthority, ClusterAuthorities, DatastoreCaJournal, DiskKeyManager, loadUpstreamAuthority, MemoryKeyManager, P256, SigningPool } from './ca/index.js';
import type { ServerConfig } from './config.js';
import { ChangeFeed, checkIntegrity, Datastore, parseDatastoreUrl, redactUrl } from './datastore/index.js';
import { LeaderJobs } from './leader.js';
import { bindInstallation, checkBeforeOpen } from './installation.js';
import { IdentityAllocator } from './identity/index.js';
import { ServerMetrics } from './metrics.js';
import { OidcDiscoveryServer } from './oidc.js';
import { Registration } from './registration/index.js';
import type { KubernetesIntegration } from './k8s/index.js';

export interface MeshidServerDeps {
  clock: Clock;
  logger: Logger;
  /** Extra node attestors (k8s_psat); join_token is always there. */
  attestors?: NodeAttestor[];
  /** One-start operator choices (command-line flags). */
  startup?: {
    /** Create a new installation where the data dir says one existed (its datastore is missing or empty). */
    initFresh?: boolean;
    /** Make a new CA key where the active one is missing. */
    replaceLostCaKey?: boolean;
  };
}

export class MeshidServer {
  readonly metrics = new ServerMetrics();
  store!: Datastore;
  /** Every server's committed changes, from the change log; what Sync streams and the Kubernetes bundle publisher hear. */
  feed!: ChangeFeed;
  /** This server's id among those sharing the datastore (data_dir/server_id, or config server_id). */
  serverId = '';
  /** Every server's authorities: the trust domain's bundle. */
  authorities!: ClusterAuthorities;
  leader: LeaderJobs | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  ca!: CertificateAuthority;
  private signingPool: SigningPool | undefined;
  /** What the agents connected to this server relay. */
  relay!: RelayHub;
  registration!: Registration;
  private agentApi: AgentApiServer | undefined;
  private adminApi: AdminApi | undefined;
  private oidc: OidcDiscoveryServer | undefined;
  kubernetes: KubernetesIntegration | undefined;
  private ready = false;
  agentPort = 0;
  adminPort = 0;
  /** The OIDC discovery port, when oidc_discovery is configured. */
  oidcPort = 0;

  constructor(readonly config: ServerConfig, private readonly deps: MeshidServerDeps) {}

  async start(): Promise<void> {
    const { config, deps } = this;
    const log = deps.logger;
    mkdirSync(config.data_dir, { recursive: true, mode: 0o700 });
    const where = parseDatastoreUrl(config.datastore.url ?? `sqlite:${join(config.data_dir, 'datastore.sqlite3')}`);
    const datastorePath = where.engine === 'sqlite' ? where.path : redactUrl(where.url);
    const keysDir = join(config.data_dir, 'keys');
    const installation = {
      dataDir: config.data_dir, datastorePath, trustDomain: config.trust_domain.name, initFresh: deps.startup?.initFresh ?? false,
      ...(config.key_manager === 'disk' ? { keysDir } : {}),
    };
    if (where.engine === 'sqlite') {
      checkBeforeOpen(installation);
      await this.checkIntegrity(where.path);
    }
    const password = config.datastore.password_file ? readSecretFile(config.datastore.password_file, 'datastore.password_file') : undefined;
    this.store = await Datastore.open({
      url: where.engine === 'sqlite' ? `sqlite:${where.path}` : where.url, trustDomain: config.trust_domain, now: () => deps.clock.now().getTime(),
      ...(password !== undefined ? { password } : {}), poolSize: config.datastore.pool_size,
      onCorruption: (err) => this.datastoreCorrupt(err),
      onConnectionError: (err) => log.warn('datastore connection lost; it is made again on next use', { datastore: datastorePath, error: err.message }),
    });
    log.info('datastore open', { engine: this.store.engine, datastore: this.store.location, schema_version: this.store.schemaVersion });
    this.feed = new ChangeFeed(this.store, { logger: log.child({ component: 'feed' }) });
    await this.feed.start();
    const bound = await bindInstallation(this.store, installation);
    if (bound.created) log.info('new installation', { installation_id: bound.installationId, data_dir: config.data_dir });
    this.serverId = config.server_id ?? serverIdOf(config.data_dir);
    await this.store.registerServer({ serverId: this.serverId, agentAddress: config.bind, caTtl: config.ca_ttl });
    this.authorities = new ClusterAuthorities({ store: this.store, serverId: this.serverId, trustDomain: config.trust_domain, clock: deps.clock, logger: log.child({ component: 'authorities' }) });
    const subject: [string, string][] = [['C', config.ca_subject.country], ['O', config.ca_subject.organization]];
    if (config.ca_subject.common_name) subject.push(['CN', config.ca_subject.common_name]);
    const p256 = P256.load();
    if (config.signing.workers > 0) {
      this.signingPool = new SigningPool({ workers: config.signing.workers, logger: log.child({ component: 'signing' }), nativeP256: !!p256 });
      this.signingPool.start();
      log.info('signing on worker threads', { workers: this.signingPool.size });
    }
    if (!p256) log.warn('the native P-256 addon is not built (make native): CSRs and SVIDs are checked and signed by node:crypto, at about half the rate');
    this.ca = new CertificateAuthority({
      trustDomain: config.trust_domain,
      keys: config.key_manager === 'disk' ? new DiskKeyManager(keysDir) : new MemoryKeyManager(),
      // a new key is normal only where agents keep trusting what signs it: memory keys (tests), an upstream CA
      lostActiveKey: config.key_manager === 'disk' && !config.upstream_authority && !deps.startup?.replaceLostCaKey ? 'refuse' : 'replace',
      journal: new DatastoreCaJournal(this.store, this.serverId),
      clock: deps.clock,
      logger: log.child({ component: 'ca' }),
      caTtlSeconds: config.ca_ttl,
      x509SvidTtlSeconds: config.x509_svid_ttl,
      jwtSvidTtlSeconds: config.jwt_svid_ttl,
      keyType: config.ca_key_type,
      caSubject: subject,
      ...(config.upstream_authority ? { upstream: loadUpstreamAuthority(config.upstream_authority.cert_file, config.upstream_authority.key_file, config.upstream_authority.bundle_file) } : {}),
      // this server's authorities join every other server's in the trust domain's bundle
      onBundleChange: (bundle) => this.authorities.publish(bundle, this.ca.intermediates()),
      onRotation: (kind, event) => this.metrics.caRotations.inc({ kind, event }),
      ...(p256 ? { p256 } : {}),
      ...(this.signingPool ? { signingPool: this.signingPool } : {}),
      ...(config.jwt_issuer ? { jwtIssuer: config.jwt_issuer } : {}),
    });
    await this.ca.start();
    // another server's rotation changes the bundle: verify agents and answer with the new union
    this.feed.onChange((changes) => {
      if (changes.some((c) => c.kind === 'bundle' && c.id === config.trust_domain.name)) {
        this.authorities.refresh().catch((err: unknown) => log.warn('reading the trust bundle failed', { error: (err as Error).message }));
      }
    });
    this.heartbeat = setInterval(() => { void this.beat(); }, 5000);
    this.heartbeat.unref();
    this.registration = new Registration({ datastore: this.store, trustDomain: config.trust_domain, now: () => deps.clock.now().getTime() });
    this.metrics.onRefresh(async () => this.metrics.entries.set((await this.store.listEntries()).items.length));
    this.metrics.onRefresh(async () => {
      const all = (await this.store.listAttestedNodes()).items;
      this.metrics.agents.set(all.filter((a) => !a.banned).length, { state: 'active' });
      this.metrics.agents.set(all.filter((a) => a.banned).length, { state: 'banned' });
    });
    if (config.kubernetes.enabled) {
      // loaded only here: @kubernetes/client-node costs ~60 MB of RSS that a server outside Kubernetes should not carry
      const { KubernetesIntegration } = await import('./k8s/index.js');
      this.kubernetes = new KubernetesIntegration({ config: config.kubernetes, store: this.store, ...(this.feed ? { changes: this.feed } : {}), trustDomain: config.trust_domain, clock: deps.clock, logger: log.child({ component: 'k8s' }) });
    }
    this.relay = new RelayHub({ logger: log.child({ component: 'relay' }), historyPerNode: config.observe.flow_history_per_node });
    this.agentApi = new AgentApiServer({
      bind: config.bind,
      relay: this.relay,
      ca: this.ca,
      store: this.store,
      attestors: new AttestorRegistry([new JoinTokenAttestor(this.store, config.trust_domain), ...(this.kubernetes ? [this.kubernetes.attestor] : []), ...(deps.attestors ?? [])]),
      clock: deps.clock,
      logger: log.child({ component: 'agentapi' }),
      metrics: this.metrics,
      agentSvidTtlSeconds: config.agent_svid_ttl,
      endpoints: new IdentityAllocator(this.store),
      kubernetesOwnsNodes: this.kubernetes !== undefined,
      changes: this.feed,
      trust: this.authorities,
      attestPerSourcePerMinute: config.agent_api_limits.attest_per_source_per_minute,
      maxConnectionsPerSource: config.agent_api_limits.connections_per_source,
      maxConnections: config.agent_api_limits.connections,
    });
    this.agentPort = await this.agentApi.start();
    const relayNodes = this.metrics.registry.gauge('meshid_server_relay_nodes', 'Nodes that have relayed to this server, by the state of their stream (connected, unavailable).');
    relayNodes.collect(() => {
      relayNodes.reset();
      for (const state of ['connected', 'unavailable'] as const) relayNodes.set(this.relay.nodes().filter((n) => n.state === state).length, { state });
    });
    const relayFlows = this.metrics.registry.gauge('meshid_server_relay_flows', 'Flows relayed to this server since it started, by node and outcome (received; lost: what the node reported it could not relay).');
    relayFlows.collect(() => {
      relayFlows.reset();
      for (const n of this.relay.nodes()) {
        relayFlows.set(n.flows_received, { node: n.node, outcome: 'received' });
        relayFlows.set(n.flows_lost, { node: n.node, outcome: 'lost' });
      }
    });
    this.adminApi = new AdminApi({
      bind: config.admin,
      store: this.store,
      ca: this.ca,
      registration: this.registration,
      metrics: this.metrics,
      logger: log.child({ component: 'adminapi' }),
      clock: deps.clock,
      authToken: this.adminToken(),
      ready: () => this.ready && !this.corrupt,
      trustBundle: () => this.authorities.bundle(),
      serverId: this.serverId,
      relay: this.relay,
    });
    this.adminPort = await this.adminApi.start();
    if (config.oidc_discovery) {
      const o = config.oidc_discovery;
      this.oidc = new OidcDiscoveryServer({
        bind: o.bind, bundle: () => this.authorities.bundle(), domains: o.domains, allowInsecureScheme: o.allow_insecure_scheme,
        ...(config.jwt_issuer ? { issuer: config.jwt_issuer } : {}), ...(o.jwks_uri ? { jwksUri: o.jwks_uri } : {}),
        logger: log.child({ component: 'oidc' }),
      });
      this.oidcPort = await this.oidc.start();
    }
    await this.kubernetes?.start();
    this.leader = new LeaderJobs({ store: this.store, serverId: this.serverId, authorities: this.authorities, clock: deps.clock, logger: log.child({ component: 'leader' }) });
    this.leader.start();
    this.ready = true;
    log.info('meshid-server started', { trust_domain: config.trust_domain.name, agent_port: this.agentPort, admin_port: this.adminPort, data_dir: config.data_dir });
  }

  private corrupt = false;

  /** SQLite's check of the file before it is used; a corrupt file is refused, a check that takes too long goes on in the background. */
  private async checkIntegrity(path: string): Promise<void> {
    if (!existsSync(path) || statSync(path).size === 0) return;
    const limitMs = this.config.datastore_check_timeout * 1000;
    if (limitMs <= 0) return;
    const r = await checkIntegrity(path, limitMs);
    if (r.state === 'corrupt') {
      this.metrics.datastoreCorruption.inc({ when: 'start' });
      throw new DataLoss(`datastore ${path} is corrupt (${r.check}: ${r.problems.slice(0, 5).join('; ')}): ` +
        'restore it from a backup (see "meshid-server datastore backup"); the server does not start on a damaged datastore');
    }
    if (r.state === 'unfinished') this.deps.logger.warn('datastore integrity check did not finish in time; starting without it', { check: r.check, limit_ms: limitMs });
    else this.deps.logger.info('datastore integrity check passed', { check: r.check, ms: r.ms });
  }

  /** A call found the datastore corrupt: not ready any more, counted, logged; the call answers DataLoss. */
  private datastoreCorrupt(err: Error): void {
    this.metrics.datastoreCorruption.inc({ when: 'run' });
    if (this.corrupt) return;
    this.corrupt = true;
    this.deps.logger.error('datastore is corrupt; readiness is off until the server is restarted on a restored datastore', { err });
  }

  /** The heartbeat; a server that was pruned while it could not reach the datastore registers and publishes again. */
  private async beat(): Promise<void> {
    try {
      if (await this.store.serverHeartbeat(this.serverId)) return;
      this.deps.logger.warn('this server was pruned from the datastore; registering again', { server_id: this.serverId });
      await this.store.registerServer({ serverId: this.serverId, agentAddress: this.config.bind, caTtl: this.config.ca_ttl });
      await this.ca.rotate();
      await this.authorities.publish(this.ca.bundle(), this.ca.intermediates());
    } catch (err) {
      this.deps.logger.warn('server heartbeat failed', { error: (err as Error).message });
    }
  }

  async stop(): Promise<void> {
    this.ready = false;
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.leader?.stop();
    await this.kubernetes?.stop();
    await this.oidc?.stop();
    await this.adminApi?.stop();
    await this.agentApi?.stop();
    this.ca?.stop();
    await this.signingPool?.stop();
    await this.feed?.stop();
    await this.store?.close();
  }

  /** The admin bearer token: read from the configured file, or made once under data_dir (0600). */
  private adminToken(): string {
    const file = this.config.admin_token_file ?? join(this.config.data_dir, 'admin.token');
    if (!existsSync(file)) {
      writeFileSync(file, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
      chmodSync(file, 0o600);
    }
    if (statSync(file).mode & 0o077) throw new FailedPrecondition(`admin token file ${file} must have mode 0600`, 'admin_token_file');
    const token = readFileSync(file, 'utf8').trim();
    if (token.length < 16) throw new FailedPrecondition(`admin token in ${file} is shorter than 16 characters`, 'admin_token_file');
    return token;
  }
}

/** A secret in a file of its own: mode 0600 (or stricter), first line, not empty. */
function readSecretFile(file: string, field: string): string {
  if (!existsSync(file)) throw new FailedPrecondition(`${field} ${file} does not exist`, field);
  if (statSync(file).mode & 0o077) throw new FailedPrecondition(`${field} ${file} must have mode 0600 (it holds a password)`, field);
  const secret = readFileSync(file, 'utf8').split('\n')[0]!.trim();
  if (secret === '') throw new FailedPrecondition(`${field} ${file} is empty`, field);
  return secret;
}

/** The server's id, made once and kept in the data dir: a server that restarts with its data dir is the same server. */
function serverIdOf(dataDir: string): string {
  const file = join(dataDir, 'server_id');
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[A-Za-z0-9._-]{1,128}$/.test(id)) return id;
    throw new FailedPrecondition(`${file} holds no valid server id; remove it to make a new one`, 'server_id');
  }
  const id = `server-${randomBytes(6).toString('hex')}`;
  writeFileSync(file, id + '\n', { mode: 0o600 });
  return id;
}
