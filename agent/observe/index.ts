/** The agent's flows: decoded from datapath events, kept in a bounded history, relayed to the server. */
export { FlowDecoder } from './decode.js';
export { FlowHistory } from './history.js';
export { FlowRelay, type FlowRelayOptions, type RelayStatus } from './relay.js';
export { authEntriesJson } from './authentries.js';
