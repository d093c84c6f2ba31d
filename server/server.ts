/** meshid-server: the parts wired together, started and stopped as one. */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/log.js';
import { DataLoss, FailedPrecondition } from '../spiffe/errors.js';
import { AdminApi } from './adminapi/index.js';
import { AgentApiServer } from './agentapi/server.js';
import { AttestorRegistry, JoinTokenAttestor, type NodeAttestor } from './attestation/index.js';
import { CertificateAuthority, DatastoreCaJournal, DiskKeyManager, loadUpstreamAuthority, MemoryKeyManager, P256 } from './ca/index.js';
import type { ServerConfig } from './config.js';
import { Datastore } from './datastore/index.js';
import { checkIntegrity } from './datastore/integrity.js';
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
  ca!: CertificateAuthority;
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
    const datastorePath = join(config.data_dir, 'datastore.sqlite3');
    const keysDir = join(config.data_dir, 'keys');
    const installation = {
      dataDir: config.data_dir, datastorePath, trustDomain: config.trust_domain.name, initFresh: deps.startup?.initFresh ?? false,
      ...(config.key_manager === 'disk' ? { keysDir } : {}),
    };
    checkBeforeOpen(installation);
    await this.checkIntegrity(datastorePath);
    this.store = Datastore.open({
      path: datastorePath, trustDomain: config.trust_domain, now: () => deps.clock.now().getTime(),
      onCorruption: (err) => this.datastoreCorrupt(err),
    });
    const bound = bindInstallation(this.store, installation);
    if (bound.created) log.info('new installation', { installation_id: bound.installationId, data_dir: config.data_dir });
    const subject: [string, string][] = [['C', config.ca_subject.country], ['O', config.ca_subject.organization]];
    if (config.ca_subject.common_name) subject.push(['CN', config.ca_subject.common_name]);
    const p256 = P256.load();
    if (!p256) log.warn('the native P-256 addon is not built (make native): CSRs and SVIDs are checked and signed by node:crypto, at about half the rate');
    this.ca = new CertificateAuthority({
      trustDomain: config.trust_domain,
      keys: config.key_manager === 'disk' ? new DiskKeyManager(keysDir) : new MemoryKeyManager(),
      // a new key is normal only where agents keep trusting what signs it: memory keys (tests), an upstream CA
      lostActiveKey: config.key_manager === 'disk' && !config.upstream_authority && !deps.startup?.replaceLostCaKey ? 'refuse' : 'replace',
      journal: new DatastoreCaJournal(this.store),
      clock: deps.clock,
      logger: log.child({ component: 'ca' }),
      caTtlSeconds: config.ca_ttl,
      x509SvidTtlSeconds: config.x509_svid_ttl,
      jwtSvidTtlSeconds: config.jwt_svid_ttl,
      keyType: config.ca_key_type,
      caSubject: subject,
      ...(config.upstream_authority ? { upstream: loadUpstreamAuthority(config.upstream_authority.cert_file, config.upstream_authority.key_file, config.upstream_authority.bundle_file) } : {}),
      onBundleChange: (bundle) => this.store.setBundle(config.trust_domain, bundle.toJwks() as never),
      onRotation: (kind, event) => this.metrics.caRotations.inc({ kind, event }),
      ...(p256 ? { p256 } : {}),
      ...(config.jwt_issuer ? { jwtIssuer: config.jwt_issuer } : {}),
    });
    this.ca.start();
    this.registration = new Registration({ datastore: this.store, trustDomain: config.trust_domain, now: () => deps.clock.now().getTime() });
    this.metrics.entries.collect(() => this.metrics.entries.set(this.store.listEntries().items.length));
    this.metrics.agents.collect(() => {
      const all = this.store.listAttestedNodes().items;
      this.metrics.agents.set(all.filter((a) => !a.banned).length, { state: 'active' });
      this.metrics.agents.set(all.filter((a) => a.banned).length, { state: 'banned' });
    });
    if (config.kubernetes.enabled) {
      // loaded only here: @kubernetes/client-node costs ~60 MB of RSS that a server outside Kubernetes should not carry
      const { KubernetesIntegration } = await import('./k8s/index.js');
      this.kubernetes = new KubernetesIntegration({ config: config.kubernetes, store: this.store, trustDomain: config.trust_domain, clock: deps.clock, logger: log.child({ component: 'k8s' }) });
    }
    this.agentApi = new AgentApiServer({
      bind: config.bind,
      ca: this.ca,
      store: this.store,
      attestors: new AttestorRegistry([new JoinTokenAttestor(this.store, config.trust_domain), ...(this.kubernetes ? [this.kubernetes.attestor] : []), ...(deps.attestors ?? [])]),
      clock: deps.clock,
      logger: log.child({ component: 'agentapi' }),
      metrics: this.metrics,
      agentSvidTtlSeconds: config.agent_svid_ttl,
      endpoints: new IdentityAllocator(this.store),
      kubernetesOwnsNodes: this.kubernetes !== undefined,
      attestPerSourcePerMinute: config.agent_api_limits.attest_per_source_per_minute,
      maxConnectionsPerSource: config.agent_api_limits.connections_per_source,
      maxConnections: config.agent_api_limits.connections,
    });
    this.agentPort = await this.agentApi.start();
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
    });
    this.adminPort = await this.adminApi.start();
    if (config.oidc_discovery) {
      const o = config.oidc_discovery;
      this.oidc = new OidcDiscoveryServer({
        bind: o.bind, bundle: () => this.ca.bundle(), domains: o.domains, allowInsecureScheme: o.allow_insecure_scheme,
        ...(config.jwt_issuer ? { issuer: config.jwt_issuer } : {}), ...(o.jwks_uri ? { jwksUri: o.jwks_uri } : {}),
        logger: log.child({ component: 'oidc' }),
      });
      this.oidcPort = await this.oidc.start();
    }
    await this.kubernetes?.start();
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

  async stop(): Promise<void> {
    this.ready = false;
    await this.kubernetes?.stop();
    await this.oidc?.stop();
    await this.adminApi?.stop();
    await this.agentApi?.stop();
    this.ca?.stop();
    this.store?.close();
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
