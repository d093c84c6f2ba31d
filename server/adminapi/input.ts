/** Reading request bodies and query strings at the door: each helper names the field it refuses. */
import { InvalidArgument, InvalidSpiffeId, isReservedId, MeshidError, SpiffeId, type TrustDomain } from '../../spiffe/index.js';

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A JSON object body with only `known` members; an absent body is `{}`. */
export function bodyObject(body: unknown, known: readonly string[]): Record<string, unknown> {
  if (body === undefined) return {};
  if (!isObject(body)) throw new InvalidArgument('the request body must be a JSON object', 'body');
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) throw new InvalidArgument(`unknown field "${key}"`, key);
  }
  return body;
}

export function present(o: Record<string, unknown>, key: string): boolean {
  return o[key] !== undefined && o[key] !== null;
}

export function requiredString(o: Record<string, unknown>, key: string): string {
  if (!present(o, key)) throw new InvalidArgument(`${key} is required`, key);
  const v = o[key];
  if (typeof v !== 'string') throw new InvalidArgument(`${key} must be a string`, key);
  return v;
}

export function stringList(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw new InvalidArgument(`${field} must be an array of strings`, field);
  v.forEach((item, i) => {
    if (typeof item !== 'string') throw new InvalidArgument(`${field}[${i}] must be a string`, `${field}[${i}]`);
  });
  return v as string[];
}

/** A whole number of seconds in [min, max]. */
export function seconds(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new InvalidArgument(`${field} must be a whole number of seconds from ${min} to ${max}`, field);
  }
  return v;
}

/** A SPIFFE ID of `td` below the trust domain's own ID. */
export function spiffeIdIn(td: TrustDomain, v: unknown, field: string): SpiffeId {
  if (typeof v !== 'string') throw new InvalidArgument(`${field} must be a string`, field);
  const id = SpiffeId.parse(v, field);
  if (!id.memberOf(td)) throw new InvalidSpiffeId(`${field} ${id.toString()} is not in the trust domain ${td.name}`, field);
  if (id.path === '') throw new InvalidSpiffeId(`${field} must have a path, not be the trust domain's own ID`, field);
  return id;
}

/** A workload's SPIFFE ID: in the trust domain, and not under /meshid/ (the server's and agents' own IDs). */
export function workloadIdIn(td: TrustDomain, v: unknown, field: string): SpiffeId {
  const id = spiffeIdIn(td, v, field);
  if (isReservedId(id)) throw new InvalidSpiffeId(`${field} ${id.toString()} is under /meshid/, which is reserved for the server and agents`, field);
  return id;
}

/**
 * The query string of one request, checked: unknown parameters are refused (a typo
 * must not silently widen a filter), and single-valued ones may appear once.
 */
export class Query {
  constructor(private readonly q: Record<string, unknown>, allowed: readonly string[]) {
    for (const key of Object.keys(q)) {
      if (!allowed.includes(key)) throw new InvalidArgument(`unknown query parameter "${key}"`, key);
    }
  }

  one(name: string): string | undefined {
    const v = this.q[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new InvalidArgument(`query parameter ${name} may be given once`, name);
    return v;
  }

  many(name: string): string[] {
    const v = this.q[name];
    if (v === undefined) return [];
    return Array.isArray(v) ? v.map(String) : [String(v)];
  }

  bool(name: string): boolean | undefined {
    const v = this.one(name);
    if (v === undefined) return undefined;
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new InvalidArgument(`${name} must be true or false`, name);
  }

  wholeNumber(name: string): number | undefined {
    const v = this.one(name);
    if (v === undefined) return undefined;
    if (!/^\d{1,9}$/.test(v)) throw new InvalidArgument(`${name} must be a whole number >= 0`, name);
    return Number(v);
  }
}

/**
 * Re-labels an error's field from the name an inner layer uses to the name the
 * caller sent (`by_spiffe_id` → `spiffe_id`); a prefix match keeps the suffix
 * (`by_selectors.selectors[1]` → `selector[1]`).
 */
export function renameField(err: unknown, names: Readonly<Record<string, string>>): unknown {
  if (!(err instanceof MeshidError) || err.field === undefined) return err;
  for (const [inner, outer] of Object.entries(names)) {
    if (err.field === inner || err.field.startsWith(inner + '[') || err.field.startsWith(inner + '.')) {
      return new MeshidError(err.code, err.message.split(inner).join(outer), outer + err.field.slice(inner.length), { cause: err });
    }
  }
  return err;
}
