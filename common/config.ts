/** Config files (YAML or JSON) checked against a zod schema at the door; errors name the key and the file. */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { InvalidArgument } from '../spiffe/index.js';

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (err) {
    throw new InvalidArgument(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'config');
  }
  let doc: unknown;
  try { doc = parseYaml(text); } catch (err) { throw new InvalidArgument(`config file ${path} is not valid YAML: ${(err as Error).message}`, 'config'); }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidArgument(`config file ${path} must hold a mapping`, 'config');
  return doc as Record<string, unknown>;
}

/** Parses `input` with `schema`; the error names every bad key (`ca_ttl: …`) and where it came from. */
export function validateConfig<S extends z.ZodType>(schema: S, input: unknown, source: string): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`);
  const first = r.error.issues[0]?.path.join('.') || 'config';
  throw new InvalidArgument(`invalid config (${source}): ${problems.join('; ')}`, first);
}

/** "1h", "30m", "45s", "2d" or a number of seconds → seconds. */
export function parseDuration(v: string | number, field: string): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new InvalidArgument(`${field} must be a non-negative number of seconds`, field);
    return v;
  }
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new InvalidArgument(`${field} "${v}" is not a duration like 90s, 15m, 1h or 2d`, field);
  const n = Number(m[1]);
  const mult = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] ?? 's']!;
  return n * mult;
}

/**
 * A config field holding a duration ("90s", "15m", a number of seconds),
 * validated to seconds; `positive` also refuses 0.
 */
export function durationField(field: string, dflt: string, options: { positive?: boolean } = {}) {
  return z.union([z.string(), z.number()]).default(dflt).transform((v, ctx) => {
    try {
      const s = parseDuration(v, field);
      if (options.positive && s <= 0) throw new Error(`${field} must be longer than 0`);
      return s;
    } catch (err) { ctx.addIssue({ code: 'custom', message: (err as Error).message }); return z.NEVER; }
  });
}
