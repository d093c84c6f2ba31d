import { execFile } from 'node:child_process';

/** The outcome of a command that exited 0. */
export interface CommandOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/** A command that could not run or exited non-zero; the message holds the command line and its stderr. */
export class CommandFailed extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(`\`${argv.join(' ')}\` failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no output'}`, options);
    this.name = 'CommandFailed';
  }
}

/**
 * Runs networking commands (`ip`, `wg`) in one network namespace: the current one,
 * or a named one (`ip netns exec NAME …`) for tools and tests that run outside it.
 */
export class NetnsCommands {
  constructor(readonly netns: string | undefined, private readonly timeoutMs = 15_000) {}

  /** The argv that runs `argv` in this namespace. */
  wrap(argv: readonly string[]): string[] {
    if (this.netns === undefined) return [...argv];
    // `ip -n` switches only the network namespace; `ip netns exec` also makes a mount namespace, which costs more.
    if (argv[0] === 'ip' && argv[1] !== 'netns') return ['ip', '-n', this.netns, ...argv.slice(1)];
    return ['ip', 'netns', 'exec', this.netns, ...argv];
  }

  run(argv: readonly string[], input?: string): Promise<CommandOutput> {
    const full = this.wrap(argv);
    return new Promise((resolve, reject) => {
      const child = execFile(full[0]!, full.slice(1), { timeout: this.timeoutMs, maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err) {
            const code = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null;
            reject(new CommandFailed(full, code, stderr || err.message, { cause: err }));
          } else {
            resolve({ stdout, stderr });
          }
        });
      child.stdin?.on('error', () => { /* the command may exit before reading its input; its exit code tells */ });
      child.stdin?.end(input ?? '');
    });
  }

  /** Runs the command and reports only whether it exited 0. */
  async succeeds(argv: readonly string[]): Promise<boolean> {
    try {
      await this.run(argv);
      return true;
    } catch (err) {
      if (err instanceof CommandFailed) return false;
      throw err;
    }
  }
}
