import t from 'tap';
import * as errors from '../../spiffe/index.js';
import { MeshidError } from '../../spiffe/index.js';

const expected: Array<[string, string, unknown[]]> = [
  ['InvalidArgument', 'invalid_argument', ['m', 'f']],
  ['InvalidSpiffeId', 'invalid_spiffe_id', ['m', 'f']],
  ['InvalidTrustDomain', 'invalid_trust_domain', ['m', 'f']],
  ['InvalidSelector', 'invalid_selector', ['m', 'f']],
  ['InvalidSvid', 'invalid_svid', ['m']],
  ['InvalidCsr', 'invalid_csr', ['m']],
  ['InvalidJwt', 'invalid_jwt', ['m']],
  ['JwtExpired', 'jwt_expired', ['m']],
  ['JwtSignatureInvalid', 'jwt_signature', ['m']],
  ['JwtAudienceMismatch', 'jwt_audience', ['m']],
  ['Untrusted', 'untrusted', ['m']],
  ['NotFound', 'not_found', ['m', 'f']],
  ['AlreadyExists', 'already_exists', ['m', 'f']],
  ['PermissionDenied', 'permission_denied', ['m']],
  ['Unauthenticated', 'unauthenticated', ['m']],
  ['FailedPrecondition', 'failed_precondition', ['m', 'f']],
  ['ResourceExhausted', 'resource_exhausted', ['m', 'f']],
  ['Unavailable', 'unavailable', ['m']],
];

t.test('each error class has its stable code, its own name, and is a MeshidError', async (tt) => {
  const table = errors as unknown as Record<string, new (...a: unknown[]) => MeshidError>;
  for (const [name, code, args] of expected) {
    const Cls = table[name];
    tt.ok(Cls, `${name} is exported`);
    const e = new Cls!(...args);
    tt.equal(e.code, code, `${name}.code`);
    tt.equal(e.name, name, `${name}.name`);
    tt.equal(e.message, 'm');
    tt.ok(e instanceof MeshidError && e instanceof Error, `${name} is a MeshidError`);
    tt.equal(e.field, args.length > 1 ? 'f' : name === 'InvalidCsr' ? 'csr' : undefined, `${name}.field`);
    tt.match(String(e.stack), new RegExp(`^${name}: m`), `${name}: the stack starts with the class name`);
  }
  const codes = expected.map(([, c]) => c);
  tt.equal(new Set(codes).size, codes.length, 'codes are distinct');
});

t.test('MeshidError keeps a cause', async (tt) => {
  const cause = new Error('root cause');
  const e = new MeshidError('internal', 'wrapped', undefined, { cause });
  tt.equal(e.cause, cause);
  tt.equal(e.code, 'internal');
});
