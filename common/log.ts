/** Structured JSON logs, one object a line. */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): Logger;
}

export interface LogSink { write(line: string): void }

function errorFields(v: unknown): unknown {
  if (v instanceof Error) {
    const code = (v as { code?: unknown }).code;
    return { message: v.message, name: v.name, ...(code !== undefined ? { code } : {}) };
  }
  return v;
}

export class JsonLogger implements Logger {
  constructor(
    private readonly sink: LogSink = process.stderr,
    private readonly level: Level = 'info',
    private readonly base: Record<string, unknown> = {},
  ) {}

  private log(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < ORDER[this.level]) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...this.base };
    if (fields) for (const [k, v] of Object.entries(fields)) line[k] = errorFields(v);
    this.sink.write(JSON.stringify(line) + '\n');
  }
  debug(msg: string, f?: Record<string, unknown>): void { this.log('debug', msg, f); }
  info(msg: string, f?: Record<string, unknown>): void { this.log('info', msg, f); }
  warn(msg: string, f?: Record<string, unknown>): void { this.log('warn', msg, f); }
  error(msg: string, f?: Record<string, unknown>): void { this.log('error', msg, f); }
  child(fields: Record<string, unknown>): Logger { return new JsonLogger(this.sink, this.level, { ...this.base, ...fields }); }
}

/** Keeps lines in memory: for tests that assert on logs (audit lines). */
export class MemoryLogSink implements LogSink {
  readonly lines: Record<string, unknown>[] = [];
  write(line: string): void { this.lines.push(JSON.parse(line)); }
}

export const silentLogger: Logger = new JsonLogger({ write: () => {} }, 'error');
