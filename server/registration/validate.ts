import { InvalidArgument, InvalidSpiffeId, InvalidTrustDomain, isReservedId, k8sNameProblem, SelectorSet, SpiffeId, TrustDomain } from '../../spiffe/index.js';
import type { EntryPatch, EntrySpec, ListEntriesOptions, SelectorMatch } from '../datastore/index.js';

export interface RegistrationLimits {
  /** Longest X509-SVID TTL an entry may ask for, in seconds. */
  maxX509SvidTtl: number;
  /** Longest JWT-SVID TTL an entry may ask for, in seconds. */
  maxJwtSvidTtl: number;
}

/**
 * A week for X509-SVIDs (agents renew at half-life, so a week still rotates
 * keys every few days; longer defeats short-lived credentials), a day for
 * JWT-SVIDs (bearer tokens: a stolen one is usable until it expires).
 */
export const DEFAULT_LIMITS: RegistrationLimits = Object.freeze({
  maxX509SvidTtl: 7 * 24 * 3600,
  maxJwtSvidTtl: 24 * 3600,
});

export const MAX_HINT_LENGTH = 1024;
const MAX_ENTRY_ID_LENGTH = 255;
const ENTRY_ID_RE = /^[A-Za-z0-9._:-]+$/;
const DNS_LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const ENTRY_FIELDS = new Set([
  'id', 'spiffe_id', 'parent_id', 'selectors', 'x509_svid_ttl', 'jwt_svid_ttl', 'dns_names', 'hint', 'admin',
  'downstream', 'federates_with', 'expires_at',
]);
const MATCHES = new Set<SelectorMatch>(['exact', 'subset', 'superset', 'any']);

export interface ValidationContext {
  trustDomain: TrustDomain;
  limits: RegistrationLimits;
  /** Unix seconds. */
  now: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string') throw new InvalidArgument(`${field} must be a string`, field);
  return v;
}

function strArray(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw new InvalidArgument(`${field} must be an array of strings`, field);
  v.forEach((item, i) => str(item, `${field}[${i}]`));
  return v as string[];
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new InvalidArgument(`${field} must be true or false`, field);
  return v;
}

function wholeNumber(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgument(`${field} must be a whole number >= 0`, field);
  }
  return v;
}

/** A SPIFFE ID of the server's trust domain with a non-empty path. */
function idInTrustDomain(v: unknown, field: string, ctx: ValidationContext): SpiffeId {
  const id = SpiffeId.parse(str(v, field), field);
  if (!id.memberOf(ctx.trustDomain)) {
    throw new InvalidSpiffeId(`${field} ${id.toString()} is not in the trust domain ${ctx.trustDomain.name}`, field);
  }
  if (id.path === '') throw new InvalidSpiffeId(`${field} must have a path, not be the trust domain's own ID`, field);
  return id;
}

function workloadId(v: unknown, ctx: ValidationContext): SpiffeId {
  const id = idInTrustDomain(v, 'spiffe_id', ctx);
  if (isReservedId(id)) {
    throw new InvalidSpiffeId(`spiffe_id ${id.toString()} is under /meshid/, which is reserved for the server and agents`, 'spiffe_id');
  }
  return id;
}

function selectors(v: unknown): SelectorSet {
  const list = strArray(v, 'selectors');
  if (list.length === 0) throw new InvalidArgument('selectors must hold at least one "type:value" selector', 'selectors');
  return SelectorSet.parse(list, 'selectors');
}

function ttl(v: unknown, field: string, max: number): number {
  const n = wholeNumber(v, field);
  if (n > max) throw new InvalidArgument(`${field} is ${n} seconds; at most ${max} is allowed (0 means the server default)`, field);
  return n;
}

/** RFC 1123 host names; a leading "*." wildcard label is allowed, as in X.509 SANs. */
export function dnsNameError(name: string): string | undefined {
  if (name.length === 0) return 'DNS name is empty';
  if (name.length > 253) return `DNS name is ${name.length} characters long; at most 253 are allowed`;
  const labels = name.split('.');
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (i === 0 && label === '*' && labels.length > 1) continue;
    if (!DNS_LABEL_RE.test(label)) {
      return label === ''
        ? `DNS name "${name}" has an empty label`
        : `DNS name "${name}" has the label "${label}"; labels are 1-63 letters, digits and inner "-"`;
    }
  }
  return undefined;
}

function dnsNames(v: unknown): string[] {
  const names = strArray(v, 'dns_names');
  const seen = new Set<string>();
  names.forEach((name, i) => {
    const field = `dns_names[${i}]`;
    const err = dnsNameError(name);
    if (err) throw new InvalidArgument(err, field);
    const lower = name.toLowerCase();
    if (seen.has(lower)) throw new InvalidArgument(`DNS name "${name}" is listed twice`, field);
    seen.add(lower);
  });
  return names;
}

function hint(v: unknown): string {
  const h = str(v, 'hint');
  if (h.length > MAX_HINT_LENGTH) throw new InvalidArgument(`hint is ${h.length} characters long; at most ${MAX_HINT_LENGTH} are allowed`, 'hint');
  return h;
}

function federatesWith(v: unknown, ctx: ValidationContext): TrustDomain[] {
  return strArray(v, 'federates_with').map((name, i) => {
    const field = `federates_with[${i}]`;
    const td = TrustDomain.parse(name, field);
    if (td.equals(ctx.trustDomain)) throw new InvalidTrustDomain(`${td.name} is the server's own trust domain; it is always trusted`, field);
    return td;
  });
}

function expiresAt(v: unknown, ctx: ValidationContext): number {
  const t = wholeNumber(v, 'expires_at');
  if (t !== 0 && t <= ctx.now) throw new InvalidArgument(`expires_at ${t} is in the past; use 0 for an entry that does not expire`, 'expires_at');
  return t;
}

export function entryId(v: unknown, field = 'id'): string {
  const id = str(v, field);
  if (id.length === 0 || id.length > MAX_ENTRY_ID_LENGTH || !ENTRY_ID_RE.test(id)) {
    throw new InvalidArgument(`${field} must be 1-${MAX_ENTRY_ID_LENGTH} letters, digits, ".", "_", ":" or "-"`, field);
  }
  return id;
}

function objectInput(input: unknown, what: string): Record<string, unknown> {
  if (!isObject(input)) throw new InvalidArgument(`${what} must be a JSON object`);
  for (const key of Object.keys(input)) {
    if (!ENTRY_FIELDS.has(key)) throw new InvalidArgument(`unknown field "${key}"`, key);
  }
  return input;
}

/** Fields present in `o` and not undefined; JSON null counts as absent for optional fields. */
function has(o: Record<string, unknown>, key: string): boolean {
  return o[key] !== undefined && o[key] !== null;
}

/** The optional fields common to create and update. */
function optionalFields(o: Record<string, unknown>, ctx: ValidationContext): EntryPatch {
  const out: EntryPatch = {};
  if (has(o, 'x509_svid_ttl')) out.x509SvidTtl = ttl(o.x509_svid_ttl, 'x509_svid_ttl', ctx.limits.maxX509SvidTtl);
  if (has(o, 'jwt_svid_ttl')) out.jwtSvidTtl = ttl(o.jwt_svid_ttl, 'jwt_svid_ttl', ctx.limits.maxJwtSvidTtl);
  if (has(o, 'dns_names')) out.dnsNames = dnsNames(o.dns_names);
  if (has(o, 'hint')) out.hint = hint(o.hint);
  if (has(o, 'admin')) out.admin = bool(o.admin, 'admin');
  if (has(o, 'downstream')) out.downstream = bool(o.downstream, 'downstream');
  if (has(o, 'federates_with')) out.federatesWith = federatesWith(o.federates_with, ctx);
  if (has(o, 'expires_at')) out.expiresAt = expiresAt(o.expires_at, ctx);
  return out;
}

export function refuseSelfParent(spiffeId: SpiffeId, parentId: SpiffeId): void {
  if (spiffeId.equals(parentId)) throw new InvalidSpiffeId('spiffe_id and parent_id must differ', 'parent_id');
}

/** Checks a create request; the first broken rule is thrown, naming its JSON field. */
export function parseEntryInput(input: unknown, ctx: ValidationContext): EntrySpec {
  const o = objectInput(input, 'an entry');
  for (const required of ['spiffe_id', 'parent_id', 'selectors']) {
    if (!has(o, required)) throw new InvalidArgument(`${required} is required`, required);
  }
  const spec: EntrySpec = {
    spiffeId: workloadId(o.spiffe_id, ctx),
    parentId: idInTrustDomain(o.parent_id, 'parent_id', ctx),
    selectors: selectors(o.selectors),
    ...optionalFields(o, ctx),
  };
  if (has(o, 'id')) spec.id = entryId(o.id);
  refuseSelfParent(spec.spiffeId, spec.parentId);
  return spec;
}

/**
 * Checks an update request: every field optional, each present one checked as on
 * create. `id`, if present, must be the id of the entry being updated.
 */
export function parseEntryPatch(input: unknown, id: string, ctx: ValidationContext): EntryPatch {
  const o = objectInput(input, 'an entry update');
  if (has(o, 'id') && o.id !== id) throw new InvalidArgument(`id ${JSON.stringify(o.id)} is not the entry being updated (${id})`, 'id');
  const patch: EntryPatch = optionalFields(o, ctx);
  if (has(o, 'spiffe_id')) patch.spiffeId = workloadId(o.spiffe_id, ctx);
  if (has(o, 'parent_id')) patch.parentId = idInTrustDomain(o.parent_id, 'parent_id', ctx);
  if (has(o, 'selectors')) patch.selectors = selectors(o.selectors);
  return patch;
}

/** Checks a list request's filter (see ListEntriesInput). */
export function parseListEntriesInput(input: unknown): ListEntriesOptions {
  if (input === undefined || input === null) return {};
  if (!isObject(input)) throw new InvalidArgument('a list filter must be a JSON object');
  const known = new Set(['by_spiffe_id', 'by_parent_id', 'by_selectors', 'by_hint', 'page_size', 'page_token']);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw new InvalidArgument(`unknown field "${key}"`, key);
  }
  const out: ListEntriesOptions = {};
  if (has(input, 'by_spiffe_id')) out.bySpiffeId = SpiffeId.parse(str(input.by_spiffe_id, 'by_spiffe_id'), 'by_spiffe_id');
  if (has(input, 'by_parent_id')) out.byParentId = SpiffeId.parse(str(input.by_parent_id, 'by_parent_id'), 'by_parent_id');
  if (has(input, 'by_hint')) out.byHint = str(input.by_hint, 'by_hint');
  if (has(input, 'by_selectors')) {
    const bs = input.by_selectors;
    if (!isObject(bs)) throw new InvalidArgument('by_selectors must be an object with "selectors" and "match"', 'by_selectors');
    const list = strArray(bs.selectors, 'by_selectors.selectors');
    if (list.length === 0) throw new InvalidArgument('by_selectors.selectors must hold at least one selector', 'by_selectors.selectors');
    const match = bs.match === undefined ? 'exact' : str(bs.match, 'by_selectors.match');
    if (!MATCHES.has(match as SelectorMatch)) {
      throw new InvalidArgument('by_selectors.match must be exact, subset, superset or any', 'by_selectors.match');
    }
    out.bySelectors = { selectors: SelectorSet.parse(list, 'by_selectors.selectors'), match: match as SelectorMatch };
  }
  if (has(input, 'page_size')) {
    const raw = input.page_size;
    const n = typeof raw === 'string' && /^\d{1,9}$/.test(raw) ? Number(raw) : raw;
    out.pageSize = wholeNumber(n, 'page_size');
  }
  if (has(input, 'page_token')) out.pageToken = str(input.page_token, 'page_token');
  return out;
}

/**
 * The entry of a Kubernetes ServiceAccount: spiffe://<td>/ns/NAMESPACE/sa/NAME with
 * selectors k8s:ns:NAMESPACE and k8s:sa:NAME, under `parentId` (an agent, or a node alias).
 */
export function entryForServiceAccount(td: TrustDomain, namespace: string, name: string, parentId: SpiffeId): EntrySpec {
  const badNamespace = k8sNameProblem('namespace', namespace);
  if (badNamespace) throw new InvalidArgument(`namespace ${badNamespace}`, 'namespace');
  const badName = k8sNameProblem('serviceaccount', name);
  if (badName) throw new InvalidArgument(`name ${badName}`, 'name');
  if (!parentId.memberOf(td)) throw new InvalidSpiffeId(`parent_id ${parentId.toString()} is not in the trust domain ${td.name}`, 'parent_id');
  return {
    spiffeId: td.child('ns', namespace, 'sa', name),
    parentId,
    selectors: SelectorSet.parse([`k8s:ns:${namespace}`, `k8s:sa:${name}`]),
  };
}
