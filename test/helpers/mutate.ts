/** Seeded mutations of valid inputs for the bad-input suites: the same seed, the same cases, in CI and here. */

/** mulberry32: a small seeded PRNG, [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rnd: () => number, n: number): number => Math.floor(rnd() * n);
const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x0a, 0x12, 0x1a, 0x22, 0x2a];

/** One mutation of `input`: bit flips, byte changes, truncation, insertion, duplication, deletion, or random bytes. */
export function mutateBytes(input: Buffer, rnd: () => number): Buffer {
  const b = Buffer.from(input);
  switch (int(rnd, 8)) {
    case 0: { if (b.length) { const i = int(rnd, b.length); b[i] = b[i]! ^ (1 << int(rnd, 8)); } return b; }
    case 1: { if (b.length) b[int(rnd, b.length)] = INTERESTING[int(rnd, INTERESTING.length)]!; return b; }
    case 2: return b.subarray(0, int(rnd, b.length + 1));
    case 3: { const at = int(rnd, b.length + 1); const extra = Buffer.from(Array.from({ length: 1 + int(rnd, 16) }, () => int(rnd, 256))); return Buffer.concat([b.subarray(0, at), extra, b.subarray(at)]); }
    case 4: { const at = int(rnd, b.length + 1); const len = int(rnd, Math.max(1, b.length - at) + 1); return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]); }
    case 5: { const at = int(rnd, b.length + 1); return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + int(rnd, 8))]); }
    case 6: return Buffer.from(Array.from({ length: int(rnd, 64) }, () => int(rnd, 256)));
    default: { for (let k = 0; k < 1 + int(rnd, 4); k++) if (b.length) b[int(rnd, b.length)] = int(rnd, 256); return b; }
  }
}

const ODD_VALUES: unknown[] = [null, true, false, 0, -1, 1e308, -0, '', ' ', 'x'.repeat(5000), '\u0000', '%ff', '../../etc', 'spiffe://', [], [null], {}, { a: 1 }, [[[]]], '\ud800', 2 ** 53 + 1];

/** One mutation of a JSON value: a field dropped, retyped, set to an odd value, added, or the document truncated. */
export function mutateJson(value: unknown, rnd: () => number): unknown | string {
  const copy = JSON.parse(JSON.stringify(value)) as unknown;
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]): void => {
    paths.push(path);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else if (v && typeof v === 'object') for (const k of Object.keys(v)) walk((v as Record<string, unknown>)[k], [...path, k]);
  };
  walk(copy, []);
  const kind = int(rnd, 5);
  if (kind === 4) { const text = JSON.stringify(copy); return text.slice(0, int(rnd, text.length)); }
  const path = paths[int(rnd, paths.length)]!;
  if (path.length === 0) return kind === 0 ? ODD_VALUES[int(rnd, ODD_VALUES.length)] : copy;
  let parent = copy as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) parent = parent[p] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (kind === 0) parent[last] = ODD_VALUES[int(rnd, ODD_VALUES.length)];
  else if (kind === 1) { if (Array.isArray(parent)) parent.splice(Number(last), 1); else delete parent[last]; }
  else if (kind === 2) parent[last] = typeof parent[last] === 'string' ? 7 : String(parent[last]);
  else (parent as Record<string, unknown>)[`unknown_${int(rnd, 100)}`] = ODD_VALUES[int(rnd, ODD_VALUES.length)];
  return copy;
}
