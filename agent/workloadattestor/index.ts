export type { WorkloadAttestor, PeerProcess } from './attestor.js';
export { UnixAttestor, type UnixAttestorOptions } from './unix.js';
export { NetnsAttestor, type NetnsAttestorOptions } from './netns.js';
export { loadPeercredAddon, peerCredentials, peerPidfd, pidfdAlive, type PeerCredentials } from './peercred.js';
export { kubernetesAgentConfigSchema, kubernetesAgentParts, type KubernetesAgentConfig } from './k8s.js';
export { WorkloadAttestation, type WorkloadAttestationOptions } from './attestation.js';
export { parseStartTime, processStartTimeSync } from './proc.js';
