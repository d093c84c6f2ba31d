/**
 * The agent's SVID cache: one key pair and X509-SVID per registration entry
 * the agent holds, signed in batches, renewed at half life, dropped with the
 * entry; JWT-SVIDs per (entry, audience set), renewed before expiry. It is
 * the Workload API's source of answers.
 */
export {
  SvidCache, renewalDueAt, type SvidCacheOptions,
} from './cache.js';
