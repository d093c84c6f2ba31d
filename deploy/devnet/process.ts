import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Default 'pipe' for all three. */
  readonly stdio?: StdioOptions;
}

/**
 * A child process that its creator owns: it is ended by `stop()` (SIGTERM, then
 * SIGKILL after a grace period), which resolves only once the process is gone.
 */
export class OwnedProcess {
  readonly exited: Promise<ProcessExit>;
  private readonly child: ChildProcess;
  private exit: ProcessExit | null = null;

  constructor(readonly argv: readonly string[], options: SpawnOptions = {}) {
    this.child = spawn(argv[0]!, argv.slice(1), { env: options.env ?? process.env, cwd: options.cwd, stdio: options.stdio ?? 'pipe' });
    this.exited = new Promise((resolve) => {
      const done = (exit: ProcessExit): void => {
        if (this.exit === null) { this.exit = exit; resolve(exit); }
      };
      this.child.on('error', () => done({ code: null, signal: null }));
      this.child.on('exit', (code, signal) => done({ code, signal }));
    });
  }

  get pid(): number | undefined { return this.child.pid; }
  get stdin(): Writable | null { return this.child.stdin; }
  get stdout(): Readable | null { return this.child.stdout; }
  get stderr(): Readable | null { return this.child.stderr; }
  get exitStatus(): ProcessExit | null { return this.exit; }

  /** Sends `signal` (default SIGTERM), escalates to SIGKILL after `graceMs`, and waits for the exit. */
  async stop(options: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<ProcessExit> {
    if (this.exit !== null) return this.exit;
    this.child.kill(options.signal ?? 'SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), options.graceMs ?? 3_000);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
