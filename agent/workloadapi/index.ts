export { WorkloadApiServer, type WorkloadApiServerOptions, type ReadinessAnswer } from './server.js';
export type { WorkloadSource, CachedX509Svid } from './source.js';
export { WorkloadApiMetrics, type CallCount } from './metrics.js';
export { toServiceError, statusName } from './status.js';
export { toStruct, fromStruct } from './struct.js';
export {
  loadReadinessProto,
  WAIT_READY_PATH,
  type WaitReadyRequestMessage,
  type WaitReadyResponseMessage,
  loadWorkloadProto,
  newWorkloadClient,
  workloadCallMetadata,
  SECURITY_HEADER,
  DEFAULT_SOCKET_PATH,
  type WorkloadProto,
  type X509SVIDMessage,
  type X509SVIDResponseMessage,
  type X509BundlesResponseMessage,
  type JWTSVIDRequestMessage,
  type JWTSVIDMessage,
  type JWTSVIDResponseMessage,
  type JWTBundlesResponseMessage,
  type ValidateJWTSVIDRequestMessage,
  type ValidateJWTSVIDResponseMessage,
  type StructMessage,
  type ValueMessage,
} from './proto.js';
