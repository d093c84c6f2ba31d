import { migrationsDir as defaultMigrationsDir } from '../../api/assets.js';
import { FailedPrecondition, InvalidArgument, MeshidError, type SelectorSet, type SpiffeId, type TrustDomain } from '../../spiffe/index.js';
import { AttestedNodeStore, JoinTokenStore } from './agents.js';
import { BundleStore } from './bundles.js';
import { CaJournalStore } from './cajournal.js';
import { join } from 'node:path';
import { Core, isCorruption, toMeshidError, type Queryable, type Tx } from './core.js';
import type { Engine } from './engine.js';
import { PostgresEngine } from './postgres.js';
import { SqliteEngine } from './sqlite.js';
import { EntryStore } from './entries.js';
import { checkSameAccount, EndpointStore, IdentityStore, NodeStore, PolicyStore } from './mesh.js';
import { loadMigrations } from './migrate.js';
import { ServerStore, type LeaseRecord, type ServerAuthority, type ServerRecord } from './servers.js';
import type {
  AttestedNode, AttestedNodePatch, BatchResult, CaJournalRecord, Change, ChangeListener, ConsumedJoinToken, Endpoint,
  EndpointUpdate, EntryPatch, EntrySpec, Identity, ListAttestedNodesOptions, ListEntriesOptions, MeshNode, MeshNodeUpdate,
  NewAttestedNode, NewJoinToken, Page, Policy, PolicyUpdate, RegistrationEntry, ServiceAccountRef, SpiffeBundleDocument,
  StoredBundle,
} from './types.js';

export interface DatastoreOptions {
  /**
   * Where the data is: `sqlite:PATH` (or a bare path) for the embedded file, created
   * with its folder's permissions if missing, or `postgres://…` for a database that
   * several servers share.
   */
  url?: string;
  /** The SQLite file (the same as url `sqlite:PATH`). */
  path?: string;
  /** The PostgreSQL password where the URL and PG* environment have none (config datastore.password_file). */
  password?: string;
  /** The server's own trust domain: its bundle is not "federated". */
  trustDomain: TrustDomain;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number;
  /** Where the NNNN_name.sql files are; defaults to the package's migrations/ (migrations/postgres/ for PostgreSQL). */
  migrationsDir?: string;
  /** How long a writer waits for another writer's lock. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** PostgreSQL connections in the pool. Default 10. */
  poolSize?: number;
  /** Where an exception thrown by an onChange listener goes. Default: process.emitWarning. */
  onListenerError?: (err: unknown) => void;
  /** Called when a call finds the data corrupt (SQLITE_CORRUPT, SQLITE_NOTADB, XX001); the call itself throws DataLoss. */
  onCorruption?: (err: MeshidError) => void;
  /** Errors of idle PostgreSQL connections (the database restarted): logged by the caller, not fatal. */
  onConnectionError?: (err: Error) => void;
}

/** The installation a datastore belongs to (see server/installation.ts). */
export interface InstallationRecord { installationId: string; trustDomain: string; createdAt: number }

/** `sqlite:PATH`, a bare path, or `postgres://…`. */
export type DatastoreLocation = { engine: 'sqlite'; path: string } | { engine: 'postgres'; url: string };

export function parseDatastoreUrl(url: string): DatastoreLocation {
  if (/^postgres(ql)?:\/\//.test(url)) return { engine: 'postgres', url };
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (path === '') throw new InvalidArgument('datastore URL sqlite: names no file: use sqlite:/path/to/datastore.sqlite3', 'datastore.url');
    return { engine: 'sqlite', path };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new InvalidArgument(`datastore URL ${url.split(':')[0]}: is not supported: use sqlite:PATH or postgres://…`, 'datastore.url');
  }
  if (url === '') throw new InvalidArgument('datastore URL is empty', 'datastore.url');
  return { engine: 'sqlite', path: url };
}

/**
 * meshid-server's store, behind one asynchronous interface on either engine.
 * Each method that writes runs in one transaction, and each write that changes
 * what agents see gets its own revision in the change log. Errors are
 * MeshidError subclasses naming the field.
 *
 * `transaction(fn)` hands `fn` a Datastore bound to one write transaction:
 * everything it calls on that object commits together or not at all.
 */
export class Datastore {
  readonly trustDomain: TrustDomain;
  private readonly core: Core;
  private readonly entries: EntryStore;
  private readonly agents: AttestedNodeStore;
  private readonly joinTokens: JoinTokenStore;
  private readonly bundles: BundleStore;
  private readonly caJournal: CaJournalStore;
  private readonly identities: IdentityStore;
  private readonly nodes: NodeStore;
  private readonly endpoints: EndpointStore;
  private readonly policies: PolicyStore;
  private readonly servers: ServerStore;
  /** Set on the Datastore that transaction() hands out. */
  private readonly tx: Tx | undefined;
  /** Set on the Datastore that readSnapshot() hands out. */
  private readonly snapshot: Queryable | undefined;

  private constructor(core: Core, trustDomain: TrustDomain, bound: { tx?: Tx; snapshot?: Queryable } = {}, parent?: Datastore) {
    this.core = core;
    this.trustDomain = trustDomain;
    this.tx = bound.tx;
    this.snapshot = bound.snapshot;
    this.entries = parent?.entries ?? new EntryStore(core);
    this.agents = parent?.agents ?? new AttestedNodeStore(core);
    this.joinTokens = parent?.joinTokens ?? new JoinTokenStore(core);
    this.bundles = parent?.bundles ?? new BundleStore(core, trustDomain, this.entries);
    this.caJournal = parent?.caJournal ?? new CaJournalStore(core);
    this.identities = parent?.identities ?? new IdentityStore(core);
    this.nodes = parent?.nodes ?? new NodeStore(core);
    this.endpoints = parent?.endpoints ?? new EndpointStore(core);
    this.policies = parent?.policies ?? new PolicyStore(core);
    this.servers = parent?.servers ?? new ServerStore(core);
    this.onCorruption = parent?.onCorruption;
    this.convertErrors();
  }

  /**
   * Every method's errors leave as MeshidErrors (a raw engine error becomes
   * DataLoss, StorageExhausted, Unavailable or Internal), and corrupt data is
   * reported once per call to onCorruption.
   */
  private convertErrors(): void {
    const proto = Datastore.prototype as unknown as Record<string, unknown>;
    const reported = new WeakSet<object>(); // a method that calls another reports once
    for (const name of Object.getOwnPropertyNames(proto)) {
      const d = Object.getOwnPropertyDescriptor(proto, name);
      if (name === 'constructor' || !d || typeof d.value !== 'function' || name === 'convertErrors') continue;
      const method = d.value as (...args: unknown[]) => unknown;
      const fail = (err: unknown): never => {
        const e = this.core.engine.toMeshidError(err);
        if (isCorruption(e) && !reported.has(e)) { reported.add(e); this.onCorruption?.(e); }
        throw e;
      };
      (this as unknown as Record<string, unknown>)[name] = (...args: unknown[]): unknown => {
        let out: unknown;
        try { out = method.apply(this, args); } catch (err) { return fail(err); }
        return out instanceof Promise ? out.catch(fail) : out;
      };
    }
  }

  private onCorruption: ((err: MeshidError) => void) | undefined;

  /** Opens (creating a SQLite file if needed) and migrates; refuses a schema newer than this code. */
  static async open(opts: DatastoreOptions): Promise<Datastore> {
    const where = opts.url !== undefined ? parseDatastoreUrl(opts.url)
      : opts.path !== undefined ? { engine: 'sqlite' as const, path: opts.path }
        : undefined;
    if (!where) throw new InvalidArgument('no datastore: give url (sqlite:PATH or postgres://…) or path', 'datastore.url');
    const busyTimeoutMs = opts.busyTimeoutMs ?? 5000;
    let engine: Engine;
    if (where.engine === 'sqlite') {
      try {
        engine = new SqliteEngine({ path: where.path, busyTimeoutMs });
      } catch (err) {
        if (isCorruption(err)) opts.onCorruption?.(toMeshidError(err));
        throw toMeshidError(err);
      }
    } else {
      engine = new PostgresEngine({
        url: where.url, busyTimeoutMs, ...(opts.password !== undefined ? { password: opts.password } : {}),
        ...(opts.poolSize !== undefined ? { poolSize: opts.poolSize } : {}),
        ...(opts.onConnectionError ? { onIdleError: opts.onConnectionError } : {}),
      });
    }
    const core = new Core({
      engine,
      now: opts.now ?? Date.now,
      onListenerError: opts.onListenerError ?? ((err) => process.emitWarning(`meshid datastore change listener failed: ${String(err)}`)),
    });
    const dir = opts.migrationsDir ?? (where.engine === 'postgres' ? join(defaultMigrationsDir, 'postgres') : defaultMigrationsDir);
    try {
      await core.migrate(loadMigrations(dir));
    } catch (err) {
      await engine.close().catch(() => undefined);
      const e = engine.toMeshidError(err);
      if (isCorruption(e)) opts.onCorruption?.(e);
      throw e;
    }
    const store = new Datastore(core, opts.trustDomain);
    store.onCorruption = opts.onCorruption;
    return store;
  }

  /** Which engine, and where: a file path, or a URL without its password. */
  get engine(): 'sqlite' | 'postgres' { return this.core.dialect.name; }
  get location(): string { return this.core.engine.location; }
  /** The SQLite file ('' on PostgreSQL). */
  get path(): string { return this.core.engine instanceof SqliteEngine ? this.core.engine.location : ''; }

  private write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.snapshot) return Promise.reject(new MeshidError('internal', 'datastore: a write inside a read snapshot'));
    return this.tx ? fn(this.tx) : this.core.write(fn);
  }

  private read<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    const bound = this.tx ?? this.snapshot;
    return bound ? fn(bound) : this.core.read(fn);
  }

  // Installation

  installation(): Promise<InstallationRecord | undefined> {
    return this.read(async (q) => {
      const row = await q.get<{ installation_id: string; trust_domain: string; created_at: number }>(
        'SELECT installation_id, trust_domain, created_at FROM installation WHERE singleton = 1');
      return row && { installationId: row.installation_id, trustDomain: row.trust_domain, createdAt: row.created_at };
    });
  }

  /**
   * Records which installation this datastore belongs to, once: when another
   * server recorded one first (servers starting together on an empty database),
   * that one stays and is returned.
   */
  async recordInstallation(installationId: string): Promise<InstallationRecord> {
    await this.write((tx) => tx.run(`INSERT INTO installation (singleton, installation_id, trust_domain, created_at) VALUES (1, ?, ?, ?)
        ON CONFLICT (singleton) DO NOTHING`, installationId, this.trustDomain.name, this.core.nowSeconds()));
    return (await this.installation())!;
  }

  /** Whether anything was ever written: a change, a CA slot, an agent, an entry. */
  hasData(): Promise<boolean> {
    return this.read(async (q) => await this.core.currentRevision(q) > 0 ||
      !!await q.get('SELECT 1 FROM ca_journal UNION ALL SELECT 1 FROM attested_nodes UNION ALL SELECT 1 FROM registered_entries LIMIT 1'));
  }

  /** A consistent copy of the whole SQLite datastore in `file` (SQLite's online backup), while it is in use. */
  async backup(file: string): Promise<void> {
    if (!(this.core.engine instanceof SqliteEngine)) throw new FailedPrecondition('backup copies a SQLite datastore; back PostgreSQL up with pg_dump', 'datastore.url');
    await this.core.engine.backup(file);
  }

  get schemaVersion(): number { return this.core.schemaVersion; }
  close(): Promise<void> { return this.core.close(); }

  // Revisions and changes

  currentRevision(): Promise<number> { return this.read((q) => this.core.currentRevision(q)); }
  /** The datastore's clock in Unix seconds, as entry expiry is compared. */
  nowSeconds(): number { return this.core.nowSeconds(); }

  /** Changes with revision > `revision`, oldest first. FailedPrecondition when that part of the log was compacted. */
  changesSince(revision: number, limit = 1000): Promise<Change[]> {
    return this.read((q) => this.core.changesSince(q, revision, limit));
  }
  compactChanges(throughRevision: number): Promise<number> { return this.core.compactChanges(throughRevision); }
  /** The newest revision written at or before `at` (unix seconds); 0 when none. */
  lastRevisionAtOrBefore(at: number): Promise<number> {
    return this.read(async (q) => (await q.value<number | null>('SELECT MAX(revision) FROM changes WHERE at <= ?', at)) ?? 0);
  }
  /**
   * Called after each committed write transaction of THIS Datastore object with its
   * changes. Writes by other processes or servers are not heard here; the change
   * feed (feed.ts) follows the log for those. Returns the unsubscribe function.
   */
  onChange(listener: ChangeListener): () => void { return this.core.onChange(listener); }
  /** Calls `wake` when another server may have written (PostgreSQL NOTIFY); undefined on SQLite. */
  subscribeToOtherWriters(wake: () => void): Promise<() => Promise<void>> | undefined {
    return this.core.engine.subscribe?.(wake);
  }
  /** Runs `read` on one consistent snapshot (e.g. a sync stream's snapshot plus its revision). */
  readSnapshot<T>(read: (snapshot: Datastore) => Promise<T>): Promise<T> {
    if (this.tx || this.snapshot) return read(this);
    return this.core.read((q) => read(new Datastore(this.core, this.trustDomain, { snapshot: q }, this)), true);
  }
  /** Runs `fn`'s reads and writes in one write transaction: all of it commits, or none (a check and the write it guards, several writes). */
  transaction<T>(fn: (tx: Datastore) => Promise<T>): Promise<T> {
    if (this.snapshot) return Promise.reject(new MeshidError('internal', 'datastore: a transaction inside a read snapshot'));
    if (this.tx) return fn(this);
    return this.core.write((tx) => fn(new Datastore(this.core, this.trustDomain, { tx }, this)));
  }

  /** For tools that move whole tables (datastore migrate): reads on one consistent snapshot, in SQL. */
  readRows<T>(fn: (q: Queryable) => Promise<T>): Promise<T> { return this.core.read(fn, true); }
  /** For tools that move whole tables: one write transaction, in SQL (no change is recorded or announced). */
  writeRows<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> { return this.core.write(fn); }

  // Registration entries

  createEntry(spec: EntrySpec): Promise<RegistrationEntry> { return this.write((tx) => this.entries.create(tx, spec)); }
  batchCreateEntries(specs: readonly EntrySpec[]): Promise<BatchResult<RegistrationEntry>[]> { return this.write((tx) => this.entries.batchCreate(tx, specs)); }
  getEntry(id: string): Promise<RegistrationEntry> { return this.read((q) => this.entries.get(q, id)); }
  findEntry(id: string): Promise<RegistrationEntry | undefined> { return this.read((q) => this.entries.find(q, id)); }
  updateEntry(id: string, patch: EntryPatch): Promise<RegistrationEntry> { return this.write((tx) => this.entries.update(tx, id, patch)); }
  deleteEntry(id: string): Promise<RegistrationEntry> { return this.write((tx) => this.entries.delete(tx, id)); }
  batchDeleteEntries(ids: readonly string[]): Promise<BatchResult<RegistrationEntry>[]> { return this.write((tx) => this.entries.batchDelete(tx, ids)); }
  listEntries(opts: ListEntriesOptions = {}): Promise<Page<RegistrationEntry>> { return this.read((q) => this.entries.list(q, opts)); }
  entriesForAgent(agentId: SpiffeId, nodeSelectors: SelectorSet): Promise<RegistrationEntry[]> {
    return this.read((q) => this.entries.forAgent(q, agentId, nodeSelectors));
  }
  /** The SPIFFE IDs of the node aliases an agent with these node selectors belongs to. */
  nodeAliasesOf(nodeSelectors: SelectorSet): Promise<string[]> { return this.read((q) => this.entries.aliasesOfNode(q, this.trustDomain, nodeSelectors)); }
  pruneExpiredEntries(): Promise<number> { return this.write((tx) => this.entries.pruneExpired(tx)); }

  // Attested nodes

  createAttestedNode(node: NewAttestedNode): Promise<AttestedNode> { return this.write((tx) => this.agents.create(tx, node)); }
  findAttestedNode(id: SpiffeId): Promise<AttestedNode | undefined> { return this.read((q) => this.agents.find(q, id)); }
  getAttestedNode(id: SpiffeId): Promise<AttestedNode> { return this.read((q) => this.agents.get(q, id)); }
  listAttestedNodes(opts: ListAttestedNodesOptions = {}): Promise<Page<AttestedNode>> { return this.read((q) => this.agents.list(q, opts)); }
  async updateAttestedNode(id: SpiffeId, patch: AttestedNodePatch): Promise<AttestedNode> {
    AttestedNodeStore.checkPatch(patch);
    return this.write((tx) => this.agents.update(tx, id, patch));
  }
  banAttestedNode(id: SpiffeId): Promise<AttestedNode> { return this.write((tx) => this.agents.ban(tx, id)); }
  evictAttestedNode(id: SpiffeId): Promise<AttestedNode> { return this.write((tx) => this.agents.evict(tx, id)); }

  // Join tokens

  async createJoinToken(token: NewJoinToken): Promise<void> {
    JoinTokenStore.check(token);
    return this.write((tx) => this.joinTokens.create(tx, token));
  }
  /** Uses a token up (exactly one of any number of concurrent callers gets it); an expired one is used up and refused. */
  async consumeJoinToken(token: string): Promise<ConsumedJoinToken> {
    const consumed = await this.write((tx) => this.joinTokens.consume(tx, token));
    if (consumed.expiresAt <= this.core.nowSeconds()) {
      throw new FailedPrecondition(`join token expired at ${new Date(consumed.expiresAt * 1000).toISOString()}`, 'join_token');
    }
    return consumed;
  }
  pruneExpiredJoinTokens(): Promise<number> { return this.write((tx) => this.joinTokens.pruneExpired(tx)); }

  // Bundles

  getBundle(td: TrustDomain): Promise<StoredBundle> { return this.read((q) => this.bundles.get(q, td)); }
  setBundle(td: TrustDomain, document: SpiffeBundleDocument): Promise<StoredBundle> { return this.write((tx) => this.bundles.set(tx, td, document)); }
  listBundles(): Promise<StoredBundle[]> { return this.read((q) => this.bundles.list(q)); }
  listFederatedBundles(): Promise<StoredBundle[]> { return this.read((q) => this.bundles.listFederated(q)); }
  deleteFederatedBundle(td: TrustDomain): Promise<void> { return this.write((tx) => this.bundles.deleteFederated(tx, td)); }

  // CA journal

  /** One server's CA journal; '' is that of a single server from before servers had ids. */
  loadCaJournal(serverId = ''): Promise<CaJournalRecord[]> { return this.read((q) => this.caJournal.load(q, serverId)); }
  async saveCaJournal(records: readonly CaJournalRecord[], serverId = ''): Promise<void> {
    CaJournalStore.check(records);
    return this.write((tx) => this.caJournal.save(tx, serverId, records));
  }

  // Servers and leases

  registerServer(s: { serverId: string; agentAddress: string; caTtl: number }): Promise<ServerRecord> {
    return this.write(async (tx) => {
      const record = await this.servers.register(tx, s);
      await this.servers.claimUnownedCaJournal(tx, s.serverId);
      return record;
    });
  }
  getServer(serverId: string): Promise<ServerRecord> { return this.read((q) => this.servers.get(q, serverId)); }
  listServers(): Promise<ServerRecord[]> { return this.read((q) => this.servers.list(q)); }
  setServerAuthorities(serverId: string, authorities: readonly ServerAuthority[], intermediates: readonly string[]): Promise<void> {
    return this.write((tx) => this.servers.setAuthorities(tx, serverId, authorities, intermediates));
  }
  /** False when the server's row is gone (pruned): it must register again. */
  serverHeartbeat(serverId: string): Promise<boolean> { return this.write((tx) => this.servers.heartbeat(tx, serverId)); }
  deleteServer(serverId: string): Promise<void> { return this.write((tx) => this.servers.delete(tx, serverId)); }
  acquireLease(name: string, holder: string, ttlSeconds: number): Promise<boolean> { return this.write((tx) => this.servers.acquireLease(tx, name, holder, ttlSeconds)); }
  releaseLease(name: string, holder: string): Promise<void> { return this.write((tx) => this.servers.releaseLease(tx, name, holder)); }
  listLeases(): Promise<LeaseRecord[]> { return this.read((q) => this.servers.listLeases(q)); }

  // Identities, nodes, endpoints, policies

  /** The identity of this label set: the existing one (read without a write lock), or a new number. */
  async allocateIdentity(labelsKey: string, labels: Record<string, string>, serviceAccount: ServiceAccountRef): Promise<Identity> {
    IdentityStore.check(labelsKey, labels, serviceAccount);
    const existing = await this.read((q) => this.identities.findByLabelsKey(q, labelsKey));
    if (existing) return checkSameAccount(existing, serviceAccount);
    return this.write((tx) => this.identities.allocate(tx, labelsKey, labels, serviceAccount));
  }
  getIdentity(id: number): Promise<Identity> { return this.read((q) => this.identities.get(q, id)); }
  findIdentityByLabelsKey(labelsKey: string): Promise<Identity | undefined> { return this.read((q) => this.identities.findByLabelsKey(q, labelsKey)); }
  listIdentities(): Promise<Identity[]> { return this.read((q) => this.identities.list(q)); }
  deleteIdentity(id: number): Promise<void> { return this.write((tx) => this.identities.delete(tx, id)); }

  async allocateNodeId(name: string): Promise<number> {
    const existing = typeof name === 'string' && name !== '' ? await this.read((q) => this.nodes.findByName(q, name)) : undefined;
    if (existing) return existing.id;
    return this.write((tx) => this.nodes.allocateId(tx, name));
  }
  async upsertNode(node: MeshNodeUpdate): Promise<MeshNode> {
    NodeStore.checkUpdate(node);
    return this.write((tx) => this.nodes.upsert(tx, node));
  }
  getNode(id: number): Promise<MeshNode> { return this.read((q) => this.nodes.get(q, id)); }
  findNodeByName(name: string): Promise<MeshNode | undefined> { return this.read((q) => this.nodes.findByName(q, name)); }
  listNodes(): Promise<MeshNode[]> { return this.read((q) => this.nodes.list(q)); }
  deleteNode(id: number): Promise<void> { return this.write((tx) => this.nodes.delete(tx, id)); }

  upsertEndpoint(endpoint: EndpointUpdate): Promise<Endpoint> { return this.write((tx) => this.endpoints.upsert(tx, endpoint)); }
  getEndpoint(ip: string): Promise<Endpoint> { return this.read((q) => this.endpoints.get(q, ip)); }
  findEndpoint(ip: string): Promise<Endpoint | undefined> { return this.read((q) => this.endpoints.find(q, ip)); }
  listEndpoints(filter: { nodeId?: number; identity?: number } = {}): Promise<Endpoint[]> { return this.read((q) => this.endpoints.list(q, filter)); }
  deleteEndpoint(ip: string): Promise<void> { return this.write((tx) => this.endpoints.delete(tx, ip)); }

  upsertPolicy(policy: PolicyUpdate): Promise<Policy> { return this.write((tx) => this.policies.upsert(tx, policy)); }
  getPolicy(namespace: string, name: string): Promise<Policy> { return this.read((q) => this.policies.get(q, namespace, name)); }
  listPolicies(filter: { namespace?: string } = {}): Promise<Policy[]> { return this.read((q) => this.policies.list(q, filter)); }
  deletePolicy(namespace: string, name: string): Promise<void> { return this.write((tx) => this.policies.delete(tx, namespace, name)); }
}
