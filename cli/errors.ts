/** What can go wrong in a `meshid` command, and the exit code each gets. */

/** A failure the user can act on: printed as `meshid: <message>`, exit code 1. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

/** The command line itself is wrong (a missing or conflicting flag): exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/** The API refused a request; `field` names the input it refused. */
export class ApiError extends CliError {
  constructor(readonly status: number, readonly code: string, message: string, readonly field?: string) {
    super(message, 1);
    this.name = 'ApiError';
  }
}

/** The flag that sets each API field, for messages that tell the user what to change. */
const FLAG_OF_FIELD: Record<string, string> = {
  spiffe_id: '--spiffe-id',
  parent_id: '--parent-id',
  selectors: '--selector',
  x509_svid_ttl: '--x509-svid-ttl',
  jwt_svid_ttl: '--jwt-svid-ttl',
  dns_names: '--dns',
  hint: '--hint',
  federates_with: '--federates-with',
  expires_at: '--expires-at',
  k8s_sa: '--k8s-sa',
  ttl: '--ttl',
  audience: '--audience',
  agent_id: '--spiffe-id',
  trust_domain: '--id',
  match: '--match',
  page_size: '--page-size',
  page_token: '--page-token',
  attestation_type: '--attestation-type',
};

/** "spiffe_id (--spiffe-id)", "selectors[1] (--selector)", or the bare field. */
export function describeField(field: string): string {
  const base = field.replace(/[[.].*$/, '');
  const flag = FLAG_OF_FIELD[base];
  return flag ? `${field} (${flag})` : field;
}

/** The one line printed for an error: names the field when the API named one. */
export function errorLine(err: ApiError): string {
  return err.field ? `invalid ${describeField(err.field)}: ${err.message}` : err.message;
}
