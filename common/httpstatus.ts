/** The one place where errors become HTTP statuses and JSON error bodies: the server's admin API and the agent's admin socket. */
import { INPUT_ERROR_CODES, MeshidError, type ErrorCode } from '../spiffe/index.js';

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; field?: string };
}

export function httpStatus(code: ErrorCode): number {
  if (INPUT_ERROR_CODES.has(code)) return 400;
  switch (code) {
    case 'unauthenticated': return 401;
    case 'untrusted':
    case 'permission_denied':
      return 403;
    case 'not_found': return 404;
    case 'already_exists': return 409;
    // A state conflict (a bundle that entries still federate with): 409, as for a duplicate;
    // the body's code tells the two apart.
    case 'failed_precondition': return 409;
    // The admin API has no rate limits; what runs out is the size of one request.
    case 'resource_exhausted': return 413;
    case 'unavailable': return 503;
    case 'storage_exhausted': return 507;
    case 'data_loss': return 500;
    case 'internal': return 500;
    default: return 500;
  }
}

/**
 * The status and body for any thrown value. MeshidErrors keep their message and
 * field; anything else is an internal error whose details stay in the server's log.
 */
export function errorResponse(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof MeshidError) {
    const body: ErrorBody = { error: { code: err.code, message: err.message } };
    if (err.field !== undefined) body.error.field = err.field;
    return { status: httpStatus(err.code), body };
  }
  return { status: 500, body: { error: { code: 'internal', message: 'internal error' } } };
}
