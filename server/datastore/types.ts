import type { MeshidError, SelectorSet, SpiffeId, TrustDomain } from '../../spiffe/index.js';

/** Unix seconds. */
export type UnixSeconds = number;

export interface RegistrationEntry {
  id: string; /* uuid, or the id the admin chose */
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: SelectorSet;
  x509SvidTtl: number; /* seconds, 0 = server default */
  jwtSvidTtl: number;
  dnsNames: string[];
  hint: string;
  admin: boolean;
  downstream: boolean;
  federatesWith: TrustDomain[];
  expiresAt: UnixSeconds; /* 0 = never */
  createdAt: UnixSeconds;
  /** The revision of the entry's last change. */
  revision: number;
}

/** What a caller supplies to create an entry; omitted fields take their zero value. */
export interface EntrySpec {
  id?: string;
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: SelectorSet;
  x509SvidTtl?: number;
  jwtSvidTtl?: number;
  dnsNames?: readonly string[];
  hint?: string;
  admin?: boolean;
  downstream?: boolean;
  federatesWith?: readonly TrustDomain[];
  expiresAt?: UnixSeconds;
}

/** Fields of an entry that an update may change; omitted fields keep their value. */
export type EntryPatch = Partial<Omit<EntrySpec, 'id'>>;

/**
 * How an entry's selectors relate to the filter's (SPIRE's MatchBehavior):
 * - exact: the same set;
 * - subset: every entry selector is in the filter (what a workload with these selectors may get);
 * - superset: every filter selector is in the entry;
 * - any: the entry has at least one of the filter selectors.
 */
export type SelectorMatch = 'exact' | 'subset' | 'superset' | 'any';

export interface ListEntriesOptions {
  bySpiffeId?: SpiffeId;
  byParentId?: SpiffeId;
  bySelectors?: { selectors: SelectorSet; match: SelectorMatch };
  byHint?: string;
  /** 0 or absent: everything in one page. */
  pageSize?: number;
  /** The `nextPageToken` of the previous page. */
  pageToken?: string;
}

export interface Page<T> {
  items: T[];
  /** Empty when this is the last page. */
  nextPageToken: string;
}

/** One item of a batch: each succeeds or fails on its own. */
export type BatchResult<T> = { ok: true; value: T } | { ok: false; error: MeshidError };

export interface AttestedNode {
  spiffeId: SpiffeId;
  attestationType: string;
  certSerial: string;
  certNotAfter: UnixSeconds;
  /** Set while the agent rotates its SVID and the new certificate is not yet in use. */
  newCertSerial: string;
  newCertNotAfter: UnixSeconds;
  banned: boolean;
  canReattest: boolean;
  selectors: SelectorSet;
  createdAt: UnixSeconds;
  updatedAt: UnixSeconds;
  revision: number;
}

export interface NewAttestedNode {
  spiffeId: SpiffeId;
  attestationType: string;
  certSerial: string;
  certNotAfter: UnixSeconds;
  canReattest?: boolean;
  selectors?: SelectorSet;
}

export interface AttestedNodePatch {
  attestationType?: string;
  certSerial?: string;
  certNotAfter?: UnixSeconds;
  newCertSerial?: string;
  newCertNotAfter?: UnixSeconds;
  canReattest?: boolean;
  selectors?: SelectorSet;
}

export interface ListAttestedNodesOptions {
  banned?: boolean;
  attestationType?: string;
  /** Only agents whose current certificate expires before this time. */
  expiresBefore?: UnixSeconds;
  pageSize?: number;
  pageToken?: string;
}

export interface NewJoinToken {
  /** The secret itself; only its SHA-256 is stored. */
  token: string;
  expiresAt: UnixSeconds;
  /** The agent SPIFFE ID that attesting with this token yields; absent: the attestor's default. */
  agentId?: SpiffeId;
}

export interface ConsumedJoinToken {
  expiresAt: UnixSeconds;
  agentId: SpiffeId | undefined;
}

/** A SPIFFE bundle document (SPIFFE Trust Domain and Bundle §4): a JWK Set with SPIFFE members. */
export interface SpiffeBundleDocument {
  keys: Record<string, unknown>[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
  [member: string]: unknown;
}

export interface StoredBundle {
  trustDomain: TrustDomain;
  document: SpiffeBundleDocument;
  updatedAt: UnixSeconds;
  revision: number;
}

export type CaKeyKind = 'x509' | 'jwt';
export type CaSlotState = 'prepared' | 'active' | 'old';

/** One key/authority record of the CA journal. `data` belongs to the CA module. */
export interface CaJournalRecord {
  kind: CaKeyKind;
  id: string;
  state: CaSlotState;
  data: unknown;
}

export interface ServiceAccountRef {
  namespace: string;
  name: string;
}

export interface Identity {
  /** u32, >= 256 (smaller numbers are reserved). */
  id: number;
  labelsKey: string;
  labels: Record<string, string>;
  serviceAccount: ServiceAccountRef;
  createdAt: UnixSeconds;
  revision: number;
}

export interface MeshNode {
  /** u16, >= 1 (0 means "this node" in the datapath maps). */
  id: number;
  name: string;
  address: string;
  wireguardPublicKey: string;
  podCidr: string;
  /** The agent SPIFFE ID that speaks for this node ('' until an agent publishes it). */
  agentId: string;
  createdAt: UnixSeconds;
  revision: number;
}

export interface MeshNodeUpdate {
  name: string;
  address?: string;
  wireguardPublicKey?: string;
  podCidr?: string;
  agentId?: string;
}

export interface Endpoint {
  ip: string;
  identity: number;
  nodeId: number;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  revision: number;
}

export type EndpointUpdate = Omit<Endpoint, 'revision'>;

export interface Policy {
  namespace: string;
  name: string;
  kind: string;
  spec: unknown;
  revision: number;
}

export type PolicyUpdate = Omit<Policy, 'revision'>;

export type ChangeKind = 'entry' | 'bundle' | 'agent' | 'identity' | 'node' | 'endpoint' | 'policy';
export type ChangeOp = 'upsert' | 'delete';

/**
 * One change that agents can see. `id` is the object's key as a string: entry id,
 * trust domain name, agent SPIFFE ID, identity number, node id, endpoint IP,
 * policy "namespace/name".
 */
export interface Change {
  revision: number;
  kind: ChangeKind;
  id: string;
  op: ChangeOp;
  at: UnixSeconds;
  /**
   * Entry changes: the parent IDs the change concerns (the new parent, and the
   * old one when it moved or was deleted), so a Sync stream can tell whether its
   * agent is concerned without reading the entry. Stored in the change log
   * (absent only on changes written before schema version 4).
   */
  parents?: readonly string[];
}

export type ChangeListener = (changes: readonly Change[]) => void;
