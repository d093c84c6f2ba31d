import { migrationsDir as defaultMigrationsDir } from '../../api/assets.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { SelectorSet } from '../../spiffe/selector.js';
import { AttestedNodeStore, JoinTokenStore } from './agents.js';
import { BundleStore } from './bundles.js';
import { CaJournalStore } from './cajournal.js';
import { Core, isCorruption, toMeshidError } from './core.js';
import type { MeshidError } from '../../spiffe/errors.js';
import { EntryStore } from './entries.js';
import { EndpointStore, IdentityStore, NodeStore, PolicyStore } from './mesh.js';
import { loadMigrations } from './migrate.js';
import type {
  AttestedNode, AttestedNodePatch, BatchResult, CaJournalRecord, Change, ChangeListener, ConsumedJoinToken, Endpoint,
  EndpointUpdate, EntryPatch, EntrySpec, Identity, ListAttestedNodesOptions, ListEntriesOptions, MeshNode, MeshNodeUpdate,
  NewAttestedNode, NewJoinToken, Page, Policy, PolicyUpdate, RegistrationEntry, ServiceAccountRef, SpiffeBundleDocument,
  StoredBundle,
} from './types.js';

export interface DatastoreOptions {
  /** The SQLite file; created with its folder's permissions if missing. */
  path: string;
  /** The server's own trust domain: its bundle is not "federated". */
  trustDomain: TrustDomain;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number;
  /** Where the NNNN_name.sql files are; defaults to the package's migrations/. */
  migrationsDir?: string;
  /** How long a writer waits for another connection's write lock. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Where an exception thrown by an onChange listener goes. Default: process.emitWarning. */
  onListenerError?: (err: unknown) => void;
  /** Called when a call finds the file corrupt (SQLITE_CORRUPT, SQLITE_NOTADB); the call itself throws DataLoss. */
  onCorruption?: (err: MeshidError) => void;
}

/** The installation a datastore belongs to (see server/installation.ts). */
export interface InstallationRecord { installationId: string; trustDomain: string; createdAt: number }

/**
 * meshid-server's store: one SQLite file in WAL mode. Methods are synchronous
 * (better-sqlite3); each one that writes runs in one transaction, and each write
 * that changes what agents see gets its own revision in the change log.
 * Errors are MeshidError subclasses naming the field.
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

  private constructor(core: Core, trustDomain: TrustDomain) {
    this.core = core;
    this.trustDomain = trustDomain;
    this.entries = new EntryStore(core);
    this.agents = new AttestedNodeStore(core);
    this.joinTokens = new JoinTokenStore(core);
    this.bundles = new BundleStore(core, trustDomain, this.entries);
    this.caJournal = new CaJournalStore(core);
    this.identities = new IdentityStore(core);
    this.nodes = new NodeStore(core);
    this.endpoints = new EndpointStore(core);
    this.policies = new PolicyStore(core);
    this.convertErrors();
  }

  /**
   * Every method's errors leave as MeshidErrors (a raw SqliteError from a
   * statement becomes DataLoss, StorageExhausted, Unavailable or Internal),
   * and a corrupt file is reported once per call to onCorruption.
   */
  private convertErrors(): void {
    const proto = Datastore.prototype as unknown as Record<string, unknown>;
    const reported = new WeakSet<object>(); // a method that calls another reports once
    for (const name of Object.getOwnPropertyNames(proto)) {
      const d = Object.getOwnPropertyDescriptor(proto, name);
      if (name === 'constructor' || !d || typeof d.value !== 'function' || name === 'convertErrors') continue;
      const method = d.value as (...args: unknown[]) => unknown;
      const fail = (err: unknown): never => {
        const e = toMeshidError(err);
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

  /** Opens (creating if needed) and migrates; refuses a file whose schema is newer than this code. */
  static open(opts: DatastoreOptions): Datastore {
    const core = new Core({
      path: opts.path,
      migrations: loadMigrations(opts.migrationsDir ?? defaultMigrationsDir),
      now: opts.now ?? Date.now,
      busyTimeoutMs: opts.busyTimeoutMs ?? 5000,
      onListenerError: opts.onListenerError ?? ((err) => process.emitWarning(`meshid datastore change listener failed: ${String(err)}`)),
      onOpenError: (err) => { if (isCorruption(err)) opts.onCorruption?.(toMeshidError(err)); },
    });
    const store = new Datastore(core, opts.trustDomain);
    store.onCorruption = opts.onCorruption;
    return store;
  }

  /** The SQLite file. */
  get path(): string { return this.core.path; }

  // Installation

  installation(): InstallationRecord | undefined {
    const row = this.core.stmt('SELECT installation_id, trust_domain, created_at FROM installation WHERE singleton = 1').get() as
      { installation_id: string; trust_domain: string; created_at: number } | undefined;
    return row && { installationId: row.installation_id, trustDomain: row.trust_domain, createdAt: row.created_at };
  }

  /** Records which installation this datastore belongs to; once. */
  recordInstallation(installationId: string): InstallationRecord {
    this.core.write(() => {
      this.core.stmt('INSERT INTO installation (singleton, installation_id, trust_domain, created_at) VALUES (1, ?, ?, ?)')
        .run(installationId, this.trustDomain.name, this.core.nowSeconds());
    });
    return this.installation()!;
  }

  /** Whether anything was ever written: a change, a CA slot, an agent, an entry. */
  hasData(): boolean {
    return this.core.currentRevision() > 0 ||
      !!this.core.stmt('SELECT 1 FROM ca_journal UNION ALL SELECT 1 FROM attested_nodes UNION ALL SELECT 1 FROM registered_entries LIMIT 1').get();
  }

  /** A consistent copy of the whole datastore in `file` (SQLite's online backup), while it is in use. */
  async backup(file: string): Promise<void> { await this.core.db.backup(file); }

  get schemaVersion(): number { return this.core.schemaVersion; }
  close(): void { this.core.close(); }

  // Revisions and changes

  currentRevision(): number { return this.core.currentRevision(); }
  /** The datastore's clock in Unix seconds, as entry expiry is compared. */
  nowSeconds(): number { return this.core.nowSeconds(); }

  /** Changes with revision > `revision`, oldest first. FailedPrecondition when that part of the log was compacted. */
  changesSince(revision: number, limit = 1000): Change[] { return this.core.changesSince(revision, limit); }
  compactChanges(throughRevision: number): number { return this.core.compactChanges(throughRevision); }
  /**
   * Called after each committed write transaction of THIS Datastore object with its
   * changes. Writes by other connections (other processes) are not heard; read
   * changesSince for those. Returns the unsubscribe function.
   */
  onChange(listener: ChangeListener): () => void { return this.core.onChange(listener); }
  /** Runs `read` on one consistent snapshot (e.g. a sync stream's snapshot plus its revision). */
  readSnapshot<T>(read: () => T): T { return this.core.read(read); }
  /** Runs `fn`'s reads and writes in one write transaction: all of it commits, or none (a check and the write it guards, several writes). */
  transaction<T>(fn: () => T): T { return this.core.write(fn); }

  // Registration entries

  createEntry(spec: EntrySpec): RegistrationEntry { return this.entries.create(spec); }
  batchCreateEntries(specs: readonly EntrySpec[]): BatchResult<RegistrationEntry>[] { return this.entries.batchCreate(specs); }
  getEntry(id: string): RegistrationEntry { return this.entries.get(id); }
  findEntry(id: string): RegistrationEntry | undefined { return this.entries.find(id); }
  updateEntry(id: string, patch: EntryPatch): RegistrationEntry { return this.entries.update(id, patch); }
  deleteEntry(id: string): RegistrationEntry { return this.entries.delete(id); }
  batchDeleteEntries(ids: readonly string[]): BatchResult<RegistrationEntry>[] { return this.entries.batchDelete(ids); }
  listEntries(opts: ListEntriesOptions = {}): Page<RegistrationEntry> { return this.entries.list(opts); }
  entriesForAgent(agentId: SpiffeId, nodeSelectors: SelectorSet): RegistrationEntry[] { return this.entries.forAgent(agentId, nodeSelectors); }
  /** The SPIFFE IDs of the node aliases an agent with these node selectors belongs to. */
  nodeAliasesOf(nodeSelectors: SelectorSet): string[] { return this.entries.aliasesOfNode(this.trustDomain, nodeSelectors); }
  pruneExpiredEntries(): number { return this.entries.pruneExpired(); }

  // Attested nodes

  createAttestedNode(node: NewAttestedNode): AttestedNode { return this.agents.create(node); }
  findAttestedNode(id: SpiffeId): AttestedNode | undefined { return this.agents.find(id); }
  getAttestedNode(id: SpiffeId): AttestedNode { return this.agents.get(id); }
  listAttestedNodes(opts: ListAttestedNodesOptions = {}): Page<AttestedNode> { return this.agents.list(opts); }
  updateAttestedNode(id: SpiffeId, patch: AttestedNodePatch): AttestedNode { return this.agents.update(id, patch); }
  banAttestedNode(id: SpiffeId): AttestedNode { return this.agents.ban(id); }
  evictAttestedNode(id: SpiffeId): AttestedNode { return this.agents.evict(id); }

  // Join tokens

  createJoinToken(token: NewJoinToken): void { this.joinTokens.create(token); }
  consumeJoinToken(token: string): ConsumedJoinToken { return this.joinTokens.consume(token); }
  pruneExpiredJoinTokens(): number { return this.joinTokens.pruneExpired(); }

  // Bundles

  getBundle(td: TrustDomain): StoredBundle { return this.bundles.get(td); }
  setBundle(td: TrustDomain, document: SpiffeBundleDocument): StoredBundle { return this.bundles.set(td, document); }
  listBundles(): StoredBundle[] { return this.bundles.list(); }
  listFederatedBundles(): StoredBundle[] { return this.bundles.listFederated(); }
  deleteFederatedBundle(td: TrustDomain): void { this.bundles.deleteFederated(td); }

  // CA journal

  loadCaJournal(): CaJournalRecord[] { return this.caJournal.load(); }
  saveCaJournal(records: readonly CaJournalRecord[]): void { this.caJournal.save(records); }

  // Identities, nodes, endpoints, policies

  allocateIdentity(labelsKey: string, labels: Record<string, string>, serviceAccount: ServiceAccountRef): Identity {
    return this.identities.allocate(labelsKey, labels, serviceAccount);
  }
  getIdentity(id: number): Identity { return this.identities.get(id); }
  findIdentityByLabelsKey(labelsKey: string): Identity | undefined { return this.identities.findByLabelsKey(labelsKey); }
  listIdentities(): Identity[] { return this.identities.list(); }
  deleteIdentity(id: number): void { this.identities.delete(id); }

  allocateNodeId(name: string): number { return this.nodes.allocateId(name); }
  upsertNode(node: MeshNodeUpdate): MeshNode { return this.nodes.upsert(node); }
  getNode(id: number): MeshNode { return this.nodes.get(id); }
  findNodeByName(name: string): MeshNode | undefined { return this.nodes.findByName(name); }
  listNodes(): MeshNode[] { return this.nodes.list(); }
  deleteNode(id: number): void { this.nodes.delete(id); }

  upsertEndpoint(endpoint: EndpointUpdate): Endpoint { return this.endpoints.upsert(endpoint); }
  getEndpoint(ip: string): Endpoint { return this.endpoints.get(ip); }
  findEndpoint(ip: string): Endpoint | undefined { return this.endpoints.find(ip); }
  listEndpoints(filter: { nodeId?: number; identity?: number } = {}): Endpoint[] { return this.endpoints.list(filter); }
  deleteEndpoint(ip: string): void { this.endpoints.delete(ip); }

  upsertPolicy(policy: PolicyUpdate): Policy { return this.policies.upsert(policy); }
  getPolicy(namespace: string, name: string): Policy { return this.policies.get(namespace, name); }
  listPolicies(filter: { namespace?: string } = {}): Policy[] { return this.policies.list(filter); }
  deletePolicy(namespace: string, name: string): void { this.policies.delete(namespace, name); }
}
