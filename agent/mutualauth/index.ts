/**
 * The agent's mutual-authentication service (DESIGN.md, data flow 5): agents
 * authenticate identity pairs with each other in batches over TLS 1.3
 * sessions keyed by their agent SVIDs, and write each authenticated pair into
 * the datapath's auth map.
 *
 * Wiring (agent.ts):
 *   const auth = new MutualAuth({
 *     state, clock, logger, authMap: datapath.auth,           // bpf AuthMap satisfies AuthMapWriter
 *     agentSvid: () => identity.current(),                     // AgentSvid has chain and key
 *     workloadSvid: (id) => { const h = cache.svidFor(id); return h && { chain: h.svid.certChainDer, key: h.key }; },
 *     listen: { host: <this node's address>, port: MUTUAL_AUTH_PORT },
 *     tunnel: membership,                                      // with WireGuard: pairs wait for the peer to be configured
 *   });
 *   await auth.start();   // reconciles the pinned map once the first Sync snapshot is in
 *   auth.authenticate([{ localIdentity, remoteIdentity, remoteNodeId }]) // on policy/identity/endpoint changes and signals
 *   const planner = new AuthPlanner({ state, ownPairs: () => policy.authPairs() });  // which pairs to hold
 *   auth.removeWhere((pair) => planner.neededByPolicy()(pair) ? undefined : 'no_policy') // through the one collector (gc.ts)
 *   await auth.stop();
 */
export { MutualAuth, type MutualAuthOptions, type PairRequest, type AuthResult } from './service.js';
export { AuthPlanner, type AuthPlannerOptions } from './planner.js';
export { AuthGc, REMOVAL_REASONS, type RemovalReason } from './gc.js';
export { FailureReason, type MutualAuthStats, type SvidMaterial, type TunnelReadiness } from './core.js';
export { MemoryAuthMap, authPairKey, type AuthMapWriter } from './authmap.js';
export { DEFAULT_PORT as MUTUAL_AUTH_PORT } from './protocol.js';
