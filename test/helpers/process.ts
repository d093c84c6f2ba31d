/** Runs meshid's real binaries (bin/*.js) as child processes for end-to-end tests. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { packageRoot } from '../../api/assets.js';

export const bin = (name: 'meshid' | 'meshid-server' | 'meshid-agent'): string => join(packageRoot, 'bin', `${name}.js`);

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command to completion. */
export function run(name: 'meshid' | 'meshid-server' | 'meshid-agent', args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
  const r = spawnSync(process.execPath, [bin(name), ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A long-running binary whose JSON log lines are kept and searchable. */
export class Daemon {
  readonly lines: Record<string, unknown>[] = [];
  private exited: Promise<number | null>;
  readonly child: ChildProcess;

  constructor(name: 'meshid-server' | 'meshid-agent', args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [bin(name), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try { this.lines.push(JSON.parse(line)); } catch { this.lines.push({ msg: line }); }
      }
    });
    this.child.stdout!.resume();
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }

  /** Waits for a log line whose msg matches. */
  async waitFor(msg: RegExp, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => typeof l['msg'] === 'string' && msg.test(l['msg'] as string));
      if (hit) return hit;
      if (this.child.exitCode !== null) throw new Error(`process exited (${this.child.exitCode}) before logging ${msg}: ${JSON.stringify(this.lines.slice(-5))}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${msg}; last lines: ${JSON.stringify(this.lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

/** A loopback TCP port that was free a moment ago (for a process that binds it next). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
