export { Datastore, parseDatastoreUrl, type DatastoreLocation, type DatastoreOptions } from './datastore.js';
export { DuplicateEntry } from './entries.js';
export { MAX_IDENTITY, MAX_NODE_ID, MIN_IDENTITY, MIN_NODE_ID } from './mesh.js';
export type {
  AttestedNode, AttestedNodePatch, BatchResult, CaJournalRecord, CaKeyKind, CaSlotState, Change, ChangeKind,
  ChangeListener, ChangeOp, ConsumedJoinToken, Endpoint, EndpointUpdate, EntryPatch, EntrySpec, Identity,
  ListAttestedNodesOptions, ListEntriesOptions, MeshNode, MeshNodeUpdate, NewAttestedNode, NewJoinToken, Page, Policy,
  PolicyUpdate, RegistrationEntry, SelectorMatch, ServiceAccountRef, SpiffeBundleDocument, StoredBundle, UnixSeconds,
} from './types.js';
export type { LeaseRecord, ServerAuthority, ServerRecord } from './servers.js';
export { ChangeFeed } from './feed.js';
export { copyDatastore } from './copy.js';
export { redactUrl } from './postgres.js';
export { checkIntegrity } from './integrity.js';
export { backupDatastore } from './backup.js';
