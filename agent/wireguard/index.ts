/** The agent's WireGuard manager: the node's key, its device, one peer per remote node. */
export {
  WireGuardManager, DEFAULT_DEVICE, DEFAULT_LISTEN_PORT,
  type WireGuardManagerOptions, type WireGuardStatus, type WireGuardImplementation, type Logger,
} from './manager.js';
export type { WireGuardPeer, PeerStatus, PeerChanges } from './peers.js';
export { loadOrCreateKeyPair, publicKeyFromPrivate, generatePrivateKey, type WireGuardKeyPair } from './key.js';
export { uapiSocketPath } from './userspace.js';
