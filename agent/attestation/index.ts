/**
 * The agent's own identity: attest the node once, keep the agent SVID and
 * key on disk (0600) so a restart reuses them while valid, renew at half
 * life, attest again when the server has evicted the agent, and stop when it
 * has banned it.
 */
export {
  AgentBanned, AgentIdentity, JoinTokenPlugin, type AgentIdentityOptions, type AgentSvid, type NodeAttestorPlugin,
} from './attestor.js';
export { DEFAULT_PSAT_TOKEN_PATH, K8sPsatPlugin } from './k8spsat.js';
