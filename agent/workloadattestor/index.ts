export type { WorkloadAttestor, PeerProcess } from './attestor.js';
export { UnixAttestor, type UnixAttestorOptions } from './unix.js';
export { NetnsAttestor, type NetnsAttestorOptions } from './netns.js';
export { peerCredentials, peerPidfd, pidfdAlive, type PeerCredentials } from './peercred.js';
export { WorkloadAttestation, type WorkloadAttestationOptions } from './attestation.js';
export { parseStartTime, processStartTimeSync } from './proc.js';
