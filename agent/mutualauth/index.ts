/**
 * The agent's mutual-authentication service (DESIGN.md, data flow 5): agents
 * authenticate identity pairs with each other in batches over TLS 1.3
 * sessions keyed by their agent SVIDs, and write each authenticated pair into
 * the datapath's auth map.
 */
export { MutualAuth, type MutualAuthOptions, type PairRequest, type AuthResult } from './service.js';
export { FailureReason, type MutualAuthStats, type SvidMaterial } from './core.js';
export { MemoryAuthMap, authPairKey, type AuthMapWriter } from './authmap.js';
export { DEFAULT_PORT as MUTUAL_AUTH_PORT } from './protocol.js';
