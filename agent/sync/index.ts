/**
 * The agent's view of the registry: the Sync stream from the server and the
 * state it builds. Wire messages (api/agentproto) stop here; what leaves is
 * decoded values and the indexes derived from them.
 */
export { SyncClient, type SyncClientOptions, type SyncStatus } from './client.js';
export {
  AgentState, decodeEndpoint, decodeIdentity, decodeNode, decodePolicyMsg, entryFromMsg,
  type AgentEntry, type Endpoint, type Identity, type MeshNode, type MeshPolicy, type StateChange, type StateIndex,
} from './state.js';
