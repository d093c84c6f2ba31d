/**
 * One error class per kind, each with a stable `code`. Transports map codes to
 * gRPC and HTTP statuses in one place each (server/agentapi/status.ts,
 * server/adminapi/status.ts); nothing else inspects messages.
 */
export type ErrorCode =
  | 'invalid_argument'
  | 'invalid_spiffe_id'
  | 'invalid_trust_domain'
  | 'invalid_selector'
  | 'invalid_svid'
  | 'invalid_csr'
  | 'invalid_jwt'
  | 'jwt_expired'
  | 'jwt_signature'
  | 'jwt_audience'
  | 'untrusted'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'unauthenticated'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'unavailable'
  | 'storage_exhausted'
  | 'data_loss'
  | 'internal';

/** The codes that mean "the caller's input was bad" on every transport (400, InvalidArgument). */
export const INPUT_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'invalid_argument', 'invalid_spiffe_id', 'invalid_trust_domain', 'invalid_selector', 'invalid_svid', 'invalid_csr',
  'invalid_jwt', 'jwt_expired', 'jwt_signature', 'jwt_audience',
]);

export class MeshidError extends Error {
  readonly code: ErrorCode;
  /** The input field that was wrong, where there is one (e.g. `spiffe_id`, `selectors[2]`). */
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, field?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.field = field;
  }
}

export class InvalidArgument extends MeshidError {
  constructor(message: string, field?: string) { super('invalid_argument', message, field); }
}
export class InvalidSpiffeId extends MeshidError {
  constructor(message: string, field?: string) { super('invalid_spiffe_id', message, field); }
}
export class InvalidTrustDomain extends MeshidError {
  constructor(message: string, field?: string) { super('invalid_trust_domain', message, field); }
}
export class InvalidSelector extends MeshidError {
  constructor(message: string, field?: string) { super('invalid_selector', message, field); }
}
export class InvalidSvid extends MeshidError {
  constructor(message: string) { super('invalid_svid', message); }
}
export class InvalidCsr extends MeshidError {
  constructor(message: string) { super('invalid_csr', message, 'csr'); }
}
export class InvalidJwt extends MeshidError {
  constructor(message: string) { super('invalid_jwt', message); }
}
export class JwtExpired extends MeshidError {
  constructor(message: string) { super('jwt_expired', message); }
}
export class JwtSignatureInvalid extends MeshidError {
  constructor(message: string) { super('jwt_signature', message); }
}
export class JwtAudienceMismatch extends MeshidError {
  constructor(message: string) { super('jwt_audience', message); }
}
export class Untrusted extends MeshidError {
  constructor(message: string) { super('untrusted', message); }
}
export class NotFound extends MeshidError {
  constructor(message: string, field?: string) { super('not_found', message, field); }
}
export class AlreadyExists extends MeshidError {
  constructor(message: string, field?: string) { super('already_exists', message, field); }
}
export class PermissionDenied extends MeshidError {
  constructor(message: string) { super('permission_denied', message); }
}
export class Unauthenticated extends MeshidError {
  constructor(message: string) { super('unauthenticated', message); }
}
export class FailedPrecondition extends MeshidError {
  constructor(message: string, field?: string) { super('failed_precondition', message, field); }
}
export class ResourceExhausted extends MeshidError {
  constructor(message: string, field?: string) { super('resource_exhausted', message, field); }
}
export class Unavailable extends MeshidError {
  constructor(message: string) { super('unavailable', message); }
}
/** The disk under the datastore is full: nothing was written. */
export class StorageExhausted extends MeshidError {
  constructor(message: string) { super('storage_exhausted', message); }
}
/** Stored data is damaged (a corrupt datastore file). */
export class DataLoss extends MeshidError {
  constructor(message: string) { super('data_loss', message); }
}
