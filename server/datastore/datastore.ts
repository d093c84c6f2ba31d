import { migrationsDir as defaultMigrationsDir } from '../../api/assets.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { SelectorSet } from '../../spiffe/selector.js';
import { AttestedNodeStore, JoinTokenStore } from './agents.js';
import { BundleStore } from './bundles.js';
import { CaJournalStore } from './cajournal.js';
import { Core } from './core.js';
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
}

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
  }

  /** Opens (creating if needed) and migrates; refuses a file whose schema is newer than this code. */
  static open(opts: DatastoreOptions): Datastore {
    const core = new Core({
      path: opts.path,
      migrations: loadMigrations(opts.migrationsDir ?? defaultMigrationsDir),
      now: opts.now ?? Date.now,
      busyTimeoutMs: opts.busyTimeoutMs ?? 5000,
      onListenerError: opts.onListenerError ?? ((err) => process.emitWarning(`meshid datastore change listener failed: ${String(err)}`)),
    });
    return new Datastore(core, opts.trustDomain);
  }

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
  listEndpoints(filter: { nodeId?: number; identity?: number } = {}): Endpoint[] { return this.endpoints.list(filter); }
  deleteEndpoint(ip: string): void { this.endpoints.delete(ip); }

  upsertPolicy(policy: PolicyUpdate): Policy { return this.policies.upsert(policy); }
  getPolicy(namespace: string, name: string): Policy { return this.policies.get(namespace, name); }
  listPolicies(filter: { namespace?: string } = {}): Policy[] { return this.policies.list(filter); }
  deletePolicy(namespace: string, name: string): void { this.policies.delete(namespace, name); }
}
