import { InvalidSelector } from './errors.js';
import { isK8sName, k8sNameRule } from './k8sname.js';

const TYPE_RE = /^[a-z0-9][a-z0-9_.-]*$/;

/** What a selector's value must look like, for the types whose values have a form: `key` (before the next colon) → check. */
const VALUE_RULES: Record<string, Record<string, [(v: string) => boolean, string]>> = {
  unix: {
    uid: [(v) => /^\d{1,10}$/.test(v) && Number(v) <= 0xffffffff, 'a numeric uid'],
    gid: [(v) => /^\d{1,10}$/.test(v) && Number(v) <= 0xffffffff, 'a numeric gid'],
    supplementary_gid: [(v) => /^\d{1,10}$/.test(v) && Number(v) <= 0xffffffff, 'a numeric gid'],
    sha256: [(v) => /^[0-9a-f]{64}$/.test(v), '64 lowercase hex digits'],
    path: [(v) => v.startsWith('/'), 'an absolute path'],
  },
  k8s: {
    ns: [(v) => isK8sName('namespace', v), `a Kubernetes namespace name (${k8sNameRule('namespace')})`],
    sa: [(v) => isK8sName('serviceaccount', v), `a Kubernetes ServiceAccount name (${k8sNameRule('serviceaccount')})`],
  },
};

function checkValue(type: string, value: string, field: string): void {
  const rules = VALUE_RULES[type];
  if (!rules) return;
  const colon = value.indexOf(':');
  if (colon < 0) return;
  const rule = rules[value.slice(0, colon)];
  if (rule && !rule[0](value.slice(colon + 1))) throw new InvalidSelector(`selector "${type}:${value}": ${value.slice(0, colon)} must be ${rule[1]}`, field);
}
export const MAX_SELECTOR_BYTES = 1024;

/** A selector `type:value` (e.g. `k8s:ns:default`, `unix:uid:0`): the type is up to the first colon. */
export class Selector {
  private constructor(readonly type: string, readonly value: string) { Object.freeze(this); }

  static parse(input: string, field = 'selector'): Selector {
    if (typeof input !== 'string' || input.length === 0) throw new InvalidSelector('selector is empty', field);
    if (Buffer.byteLength(input) > MAX_SELECTOR_BYTES) throw new InvalidSelector(`selector is longer than ${MAX_SELECTOR_BYTES} bytes`, field);
    const colon = input.indexOf(':');
    if (colon < 0) throw new InvalidSelector(`selector "${input}" must be "type:value"`, field);
    return Selector.of(input.slice(0, colon), input.slice(colon + 1), field);
  }

  static of(type: string, value: string, field = 'selector'): Selector {
    if (!TYPE_RE.test(type)) throw new InvalidSelector(`selector type "${type}" must be lowercase letters, digits, "_", "." or "-"`, field);
    if (value.length === 0) throw new InvalidSelector(`selector "${type}:" has an empty value`, field);
    if (/[\u0000-\u001f\u007f]/.test(value)) throw new InvalidSelector(`selector "${type}:…" has a control character`, field);
    checkValue(type, value, field);
    return new Selector(type, value);
  }

  equals(o: Selector): boolean { return this.type === o.type && this.value === o.value; }
  toString(): string { return `${this.type}:${this.value}`; }
  toJSON(): string { return this.toString(); }
}

/** An immutable, sorted, de-duplicated set of selectors. */
export class SelectorSet {
  private readonly keys: ReadonlySet<string>;
  readonly items: readonly Selector[];

  private constructor(items: Selector[]) {
    const byKey = new Map<string, Selector>();
    for (const s of items) byKey.set(s.toString(), s);
    const sorted = [...byKey.keys()].sort();
    this.items = Object.freeze(sorted.map((k) => byKey.get(k)!));
    this.keys = new Set(sorted);
    Object.freeze(this);
  }

  static of(items: Iterable<Selector>): SelectorSet { return new SelectorSet([...items]); }
  /** Parses each string; the error names the index of the bad one (`selectors[2]`). */
  static parse(inputs: readonly string[], field = 'selectors'): SelectorSet {
    return new SelectorSet(inputs.map((s, i) => Selector.parse(s, `${field}[${i}]`)));
  }
  static readonly empty = new SelectorSet([]);

  get size(): number { return this.items.length; }
  has(s: Selector | string): boolean { return this.keys.has(s.toString()); }
  /** Every selector of this set is in `other`: a workload with `other` matches an entry with this set. */
  subsetOf(other: SelectorSet): boolean {
    if (this.size > other.size) return false;
    for (const k of this.keys) if (!other.keys.has(k)) return false;
    return true;
  }
  union(other: SelectorSet): SelectorSet { return new SelectorSet([...this.items, ...other.items]); }
  /** A canonical string: equal sets have equal keys. */
  key(): string { return [...this.keys].join('\n'); }
  toStrings(): string[] { return [...this.keys]; }
  toJSON(): string[] { return this.toStrings(); }
}
