/** How commands print: aligned tables and key/value blocks for people, the API's JSON for scripts (-o json). */

/** json and jsonpb are the same for every command (jsonpb is Hubble's name, for `observe`); compact and dict are `observe`'s, tables elsewhere. */
export type OutputFormat = 'table' | 'json' | 'jsonpb' | 'compact' | 'dict';

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** "Label : value" lines with the labels aligned, as `spire-server entry show` prints. */
export function formatFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${k.padEnd(width)} : ${v}`.trimEnd()).join('\n') + '\n';
}

/** Seconds as "1h", "90s", "2d3h"; 0 as "default" (the server's). */
export function formatTtl(seconds: number): string {
  if (seconds === 0) return 'default';
  const parts: string[] = [];
  let rest = seconds;
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join('');
}

/** Unix seconds as an ISO time; 0 as "never". */
export function formatTime(unixSeconds: number): string {
  return unixSeconds === 0 ? 'never' : new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z');
}

export class Output {
  constructor(readonly format: OutputFormat, private readonly stdout: { write(s: string): unknown } = process.stdout) {}

  get json(): boolean { return this.format === 'json' || this.format === 'jsonpb'; }

  /** The API's JSON as is with -o json; otherwise what `human` renders. */
  result(json: unknown, human: () => string): void {
    this.write(this.json ? JSON.stringify(json, null, 2) + '\n' : human());
  }

  write(text: string): void {
    this.stdout.write(text);
  }
}
