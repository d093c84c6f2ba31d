export { CertificateAuthority, MemoryCaJournal, PREPARE_AT, ACTIVATE_AT, BACKDATE_MS, type CaOptions, type CaJournal, type CaSlot, type SignedX509Svid, type SignedJwtSvid, type X509SvidRequest } from './manager.js';
export { SigningPool, type SigningPoolOptions } from './signing.js';
export { DiskKeyManager, MemoryKeyManager, type KeyManager } from './keymanager.js';
export { DatastoreCaJournal } from './journal.js';
export { loadUpstreamAuthority, type UpstreamAuthority } from './upstream.js';
export { P256 } from './p256.js';
export { ClusterAuthorities } from './cluster.js';
