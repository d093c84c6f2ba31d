import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { readlinkSync } from 'node:fs';

export interface Teardown { teardown(fn: () => unknown): void }

/** A child process killed (and reaped) at teardown. */
export function spawnChild(t: Teardown, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  return child;
}

/** Waits until the process runs `exe` (after an exec), so that what it is and where it runs is settled. */
export async function waitForExec(pid: number, exe: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (readlinkSync(`/proc/${pid}/exe`) === exe) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`process ${pid} did not exec ${exe}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs a command to completion; resolves with its stdout, rejects on a non-zero exit or after `timeoutMs` (killed, with what it printed). */
export async function run(t: Teardown, command: string, args: string[], options: SpawnOptions = {}, timeoutMs = 60_000): Promise<string> {
  const child = spawnChild(t, command, args, options);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
  const [code] = await once(child, 'exit') as [number | null];
  clearTimeout(timer);
  if (timedOut) throw new Error(`${command} ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${out || '(none)'}; stderr: ${err || '(none)'}`);
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}: ${err}`);
  return out;
}
