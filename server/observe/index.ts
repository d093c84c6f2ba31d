/** The cluster-wide view that agents relay: flows, auth maps, counters, and explain questions down to them. */
export { noAnswer, parsed, RelayHub, type FlowListener, type HeldFlow, type NodeListener, type RelayHubOptions, type RelayLink } from './hub.js';
