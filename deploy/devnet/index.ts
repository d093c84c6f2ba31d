/** The devnet: a whole cluster's network in network namespaces on one machine (see README.md). */
export { Devnet, DevnetCommandFailed, DEFAULT_STATE_DIR, type DevnetOptions, type ExecOptions, type ExecResult } from './devnet.js';
export { OwnedProcess, type ProcessExit, type SpawnOptions } from './process.js';
export type { DevnetSpec, DevnetState, DevnetNode, DevnetPod } from './spec.js';
export { DemoCluster, type DemoOptions } from './demo.js';
