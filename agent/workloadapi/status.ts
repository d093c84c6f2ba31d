import { status as Status } from '@grpc/grpc-js';
import type { ErrorCode } from '../../spiffe/index.js';
import { statusName, toServiceError as toGrpcServiceError } from '../../common/grpcstatus.js';

/**
 * The Workload API standard answers a JWT-SVID that fails validation for any
 * reason, an untrusted one included, with InvalidArgument; everything else
 * keeps meshid's common mapping (common/grpcstatus.ts).
 */
const WORKLOAD_API_CODES: Partial<Record<ErrorCode, Status>> = { untrusted: Status.INVALID_ARGUMENT };

/** The one place where the Workload API turns an error into a gRPC status. */
export function toServiceError(err: unknown): ReturnType<typeof toGrpcServiceError> {
  return toGrpcServiceError(err, WORKLOAD_API_CODES);
}

export { statusName };
