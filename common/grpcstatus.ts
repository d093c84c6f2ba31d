import { status as Status, type ServerErrorResponse } from '@grpc/grpc-js';
import { INPUT_ERROR_CODES, MeshidError, type ErrorCode } from '../spiffe/index.js';

/** The gRPC status of each error kind: the one map for every gRPC service of meshid. */
export function grpcCode(code: ErrorCode): Status {
  // The Workload API standard answers every bad input, including a JWT-SVID
  // that fails validation for any reason, with InvalidArgument.
  if (INPUT_ERROR_CODES.has(code)) return Status.INVALID_ARGUMENT;
  switch (code) {
    case 'untrusted': return Status.PERMISSION_DENIED;
    case 'not_found': return Status.NOT_FOUND;
    case 'already_exists': return Status.ALREADY_EXISTS;
    case 'permission_denied': return Status.PERMISSION_DENIED;
    case 'unauthenticated': return Status.UNAUTHENTICATED;
    case 'failed_precondition': return Status.FAILED_PRECONDITION;
    case 'resource_exhausted': return Status.RESOURCE_EXHAUSTED;
    case 'unavailable': return Status.UNAVAILABLE;
    case 'storage_exhausted': return Status.RESOURCE_EXHAUSTED;
    case 'data_loss': return Status.DATA_LOSS;
    case 'internal': return Status.INTERNAL;
    default: return Status.INTERNAL;
  }
}

/**
 * Turns an error into a gRPC status error. MeshidErrors keep their message;
 * anything else is an internal error whose message is not shown to the caller.
 * `override` remaps codes per service (the Workload API answers untrusted
 * tokens with InvalidArgument).
 */
export function toServiceError(err: unknown, override?: Partial<Record<ErrorCode, Status>>): ServerErrorResponse & { code: Status; details: string } {
  const code = err instanceof MeshidError ? (override?.[err.code] ?? grpcCode(err.code)) : Status.INTERNAL;
  const details = err instanceof MeshidError ? err.message : 'internal error';
  return Object.assign(new Error(details), { code, details });
}

/** Name of a status code for metrics and logs ("PERMISSION_DENIED"). */
export function statusName(code: Status): string {
  return Status[code] ?? String(code);
}
