/**
 * The agent's side of the kernel datapath: loads (or re-uses) the pinned maps
 * and programs, attaches them to the local endpoints' node-side interfaces,
 * keeps `meshid_ipcache` equal to the endpoints the server knows, reads the
 * signal and event ring buffers, and exposes the drop counters.
 *
 * Interfaces come from the config (the devnet names each endpoint's veth) and,
 * for local endpoints that the config does not name (Kubernetes pods, which the
 * server learns from the API and the primary CNI wires up), from the node's
 * routing table: the device the node routes the endpoint's IP to directly.
 */
export {
  DatapathManager, routeInterface, type DatapathManagerOptions,
} from './manager.js';
