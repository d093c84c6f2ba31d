import { status as Status, type ServerErrorResponse } from '@grpc/grpc-js';
import { MeshidError, type ErrorCode } from '../../spiffe/errors.js';

/** The gRPC status of each error kind on the Workload API. */
function grpcCode(code: ErrorCode): Status {
  switch (code) {
    // the Workload API standard answers every bad input, including a JWT-SVID that
    // fails validation for any reason, with InvalidArgument
    case 'invalid_argument':
    case 'invalid_spiffe_id':
    case 'invalid_trust_domain':
    case 'invalid_selector':
    case 'invalid_svid':
    case 'invalid_csr':
    case 'invalid_jwt':
    case 'jwt_expired':
    case 'jwt_signature':
    case 'jwt_audience':
    case 'untrusted':
      return Status.INVALID_ARGUMENT;
    case 'not_found': return Status.NOT_FOUND;
    case 'already_exists': return Status.ALREADY_EXISTS;
    case 'permission_denied': return Status.PERMISSION_DENIED;
    case 'unauthenticated': return Status.UNAUTHENTICATED;
    case 'failed_precondition': return Status.FAILED_PRECONDITION;
    case 'resource_exhausted': return Status.RESOURCE_EXHAUSTED;
    case 'unavailable': return Status.UNAVAILABLE;
    case 'internal': return Status.INTERNAL;
  }
}

/**
 * The one place where the Workload API turns an error into a gRPC status.
 * MeshidErrors keep their message; anything else is an internal error whose
 * message is not shown to the workload.
 */
export function toServiceError(err: unknown): ServerErrorResponse & { code: Status; details: string } {
  const code = err instanceof MeshidError ? grpcCode(err.code) : Status.INTERNAL;
  const details = err instanceof MeshidError ? err.message : 'internal error';
  return Object.assign(new Error(details), { code, details });
}

/** Name of a status code for metrics and logs ("PERMISSION_DENIED"). */
export function statusName(code: Status): string {
  return Status[code] ?? String(code);
}
