import { InvalidSpiffeId, InvalidTrustDomain } from './errors.js';

/** SPIFFE ID standard §2: at most 2048 bytes for the whole URI, 255 for the trust domain. */
export const MAX_SPIFFE_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_BYTES = 255;
const SCHEME = 'spiffe://';

function isTrustDomainChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f;
}
function isPathChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x2e || c === 0x2d || c === 0x5f;
}

function trustDomainError(name: string, field?: string): InvalidTrustDomain | undefined {
  if (name.length === 0) return new InvalidTrustDomain('trust domain is empty', field);
  if (Buffer.byteLength(name) > MAX_TRUST_DOMAIN_BYTES) {
    return new InvalidTrustDomain(`trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`, field);
  }
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (isTrustDomainChar(c)) continue;
    const ch = name[i];
    if (ch === ':') return new InvalidTrustDomain(`trust domain "${name}" has a port; ports are not allowed`, field);
    if (ch === '@') return new InvalidTrustDomain(`trust domain "${name}" has userinfo; userinfo is not allowed`, field);
    if (c >= 0x41 && c <= 0x5a) {
      return new InvalidTrustDomain(`trust domain "${name}" has an uppercase letter; only lowercase letters, digits, ".", "-" and "_" are allowed`, field);
    }
    return new InvalidTrustDomain(`trust domain "${name}" has the character ${JSON.stringify(ch)}; only lowercase letters, digits, ".", "-" and "_" are allowed`, field);
  }
  return undefined;
}

/** Checks one path (starting with "/") and returns the error for the first rule it breaks. */
function pathError(path: string, field?: string): InvalidSpiffeId | undefined {
  if (path === '') return undefined;
  if (path[0] !== '/') return new InvalidSpiffeId(`path "${path}" must start with "/"`, field);
  let segStart = 1;
  for (let i = 1; i <= path.length; i++) {
    if (i < path.length && path[i] !== '/') {
      const c = path.charCodeAt(i);
      if (!isPathChar(c)) {
        const ch = path[i];
        if (ch === '?') return new InvalidSpiffeId('SPIFFE ID has a query; queries are not allowed', field);
        if (ch === '#') return new InvalidSpiffeId('SPIFFE ID has a fragment; fragments are not allowed', field);
        if (ch === '%') return new InvalidSpiffeId('path has a percent-encoded character; only letters, digits, ".", "-" and "_" are allowed in segments', field);
        return new InvalidSpiffeId(`path has the character ${JSON.stringify(ch)}; only letters, digits, ".", "-" and "_" are allowed in segments`, field);
      }
      continue;
    }
    const seg = path.slice(segStart, i);
    if (seg.length === 0) {
      return i === path.length
        ? new InvalidSpiffeId('path has a trailing slash', field)
        : new InvalidSpiffeId('path has an empty segment', field);
    }
    if (seg === '.' || seg === '..') return new InvalidSpiffeId(`path has a "${seg}" segment; dot segments are not allowed`, field);
    segStart = i + 1;
  }
  return undefined;
}

/** A trust domain name, parsed and valid. Compare with `equals` or by `name`. */
export class TrustDomain {
  private constructor(readonly name: string) { Object.freeze(this); }

  /** Parses a bare trust domain name ("example.org"), or the trust domain of a SPIFFE ID URI. */
  static parse(input: string, field?: string): TrustDomain {
    if (input.startsWith(SCHEME) || input.includes(':/')) return SpiffeId.parse(input, field).trustDomain;
    const err = trustDomainError(input, field);
    if (err) throw err;
    return new TrustDomain(input);
  }

  /** The trust domain's own ID, spiffe://<td>. */
  id(): SpiffeId { return SpiffeId.fromParts(this, ''); }
  /** A SPIFFE ID in this trust domain; each argument is exactly one segment, and each is checked. */
  child(...segments: string[]): SpiffeId {
    // A "/" inside an argument would split it into several segments, so two different argument
    // lists could name the same ID (serviceAccountId('a/sa/b', 'c') = serviceAccountId('a', 'b/sa/c')).
    for (const s of segments) {
      if (s.includes('/')) throw new InvalidSpiffeId(`path segment ${JSON.stringify(s)} has the character "/"; only letters, digits, ".", "-" and "_" are allowed in segments`);
    }
    return SpiffeId.fromParts(this, segments.map((s) => '/' + s).join(''));
  }
  equals(other: TrustDomain): boolean { return this.name === other.name; }
  toString(): string { return this.name; }
  toJSON(): string { return this.name; }
}

/** A SPIFFE ID, parsed and valid per the SPIFFE ID standard. Immutable. */
export class SpiffeId {
  private constructor(readonly trustDomain: TrustDomain, readonly path: string) { Object.freeze(this); }

  static parse(input: string, field?: string): SpiffeId {
    if (typeof input !== 'string' || input.length === 0) throw new InvalidSpiffeId('SPIFFE ID is empty', field);
    if (Buffer.byteLength(input) > MAX_SPIFFE_ID_BYTES) {
      throw new InvalidSpiffeId(`SPIFFE ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`, field);
    }
    if (!input.startsWith(SCHEME)) {
      const colon = input.indexOf(':');
      if (colon > 0 && input.slice(0, colon).toLowerCase() === 'spiffe') {
        throw new InvalidSpiffeId(`scheme must be "spiffe" in lowercase followed by "://"`, field);
      }
      throw new InvalidSpiffeId(`scheme must be "spiffe": "${input.slice(0, 40)}" does not start with "spiffe://"`, field);
    }
    const rest = input.slice(SCHEME.length);
    let end = rest.length;
    for (const stop of ['/', '?', '#']) {
      const at = rest.indexOf(stop);
      if (at >= 0 && at < end) end = at;
    }
    const tdName = rest.slice(0, end);
    if (tdName.length === 0) throw new InvalidSpiffeId('trust domain is missing', field);
    const tdErr = trustDomainError(tdName, field);
    if (tdErr) throw new InvalidSpiffeId(tdErr.message, field);
    const path = rest.slice(end);
    if (path.startsWith('?')) throw new InvalidSpiffeId('SPIFFE ID has a query; queries are not allowed', field);
    if (path.startsWith('#')) throw new InvalidSpiffeId('SPIFFE ID has a fragment; fragments are not allowed', field);
    const err = pathError(path, field);
    if (err) throw err;
    return new SpiffeId(TrustDomain.parse(tdName, field), path);
  }

  /** Builds an ID from a trust domain and a path ("" or "/a/b"); the path is checked. */
  static fromParts(td: TrustDomain, path: string): SpiffeId {
    const err = pathError(path);
    if (err) throw err;
    const id = new SpiffeId(td, path);
    if (Buffer.byteLength(id.toString()) > MAX_SPIFFE_ID_BYTES) {
      throw new InvalidSpiffeId(`SPIFFE ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
    }
    return id;
  }

  /** Returns undefined instead of throwing; for filters and optional input. */
  static tryParse(input: string): SpiffeId | undefined {
    try { return SpiffeId.parse(input); } catch { return undefined; }
  }

  get segments(): string[] { return this.path === '' ? [] : this.path.slice(1).split('/'); }
  memberOf(td: TrustDomain): boolean { return this.trustDomain.equals(td); }
  equals(other: SpiffeId): boolean { return this.trustDomain.name === other.trustDomain.name && this.path === other.path; }
  toString(): string { return SCHEME + this.trustDomain.name + this.path; }
  toJSON(): string { return this.toString(); }
}

/** The workload SPIFFE ID of a Kubernetes ServiceAccount: spiffe://<td>/ns/<namespace>/sa/<name>. */
export function serviceAccountId(td: TrustDomain, namespace: string, serviceAccount: string): SpiffeId {
  return td.child('ns', namespace, 'sa', serviceAccount);
}

/** The SPIFFE ID of an agent: spiffe://<td>/meshid/agent/<attestor>/<node...>. */
export function agentId(td: TrustDomain, attestor: string, ...node: string[]): SpiffeId {
  return td.child('meshid', 'agent', attestor, ...node);
}

/** The ID that all server-side issuers use, spiffe://<td>/meshid/server. */
export function serverId(td: TrustDomain): SpiffeId { return td.child('meshid', 'server'); }

/** IDs under /meshid/ belong to meshid itself (the server's and the agents' own); no workload SVID may carry one. */
export const isReservedId = (id: SpiffeId): boolean => id.segments[0] === 'meshid';

export function isAgentId(id: SpiffeId): boolean {
  const s = id.segments;
  return s.length >= 4 && s[0] === 'meshid' && s[1] === 'agent';
}
