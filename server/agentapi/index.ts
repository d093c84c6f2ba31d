/** The agent API: the gRPC service agents call over mutual TLS (attestation, SVIDs, Sync, node and endpoint claims). */
export { AgentApiServer, type AgentApiOptions } from './server.js';
export type { EndpointRegistrar } from './endpoints.js';
