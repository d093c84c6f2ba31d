import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FailedPrecondition } from '../../spiffe/index.js';
import type { NetnsCommands } from './command.js';

/** wireguard-go's UAPI sockets live here whatever the network namespace: device names must be unique machine-wide. */
export const UAPI_SOCKET_DIR = '/var/run/wireguard';

export function uapiSocketPath(device: string): string {
  return `${UAPI_SOCKET_DIR}/${device}.sock`;
}

/** How a wireguard-go process ended. */
export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * One wireguard-go process in the foreground (`-f`) serving one device. The owner
 * waits for `ready()`, watches `exited`, and ends it with `stop()`, which also
 * removes what a killed process could not clean up (socket file, TUN link).
 */
export class WireGuardGoProcess {
  readonly exited: Promise<ProcessExit>;
  private readonly child: ChildProcess;
  private output = '';
  private exit: ProcessExit | null = null;

  constructor(
    binary: string,
    private readonly device: string,
    private readonly commands: NetnsCommands,
  ) {
    const argv = commands.wrap([binary, '-f', device]);
    this.child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      // wireguard-go refuses to run on Linux without this acknowledgement.
      env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' },
    });
    const keepTail = (chunk: Buffer): void => { this.output = (this.output + chunk.toString()).slice(-4096); };
    this.child.stdout!.on('data', keepTail);
    this.child.stderr!.on('data', keepTail);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.output += `\n${err.message}`;
        if (this.exit === null) { this.exit = { code: null, signal: null }; resolve(this.exit); }
      });
      this.child.on('exit', (code, signal) => {
        if (this.exit === null) { this.exit = { code, signal }; resolve(this.exit); }
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.exit !== null || this.child.pid === undefined || !isAlive(this.child.pid);
  }

  /** The last few KiB that the process printed, for error messages. */
  get recentOutput(): string {
    return this.output.trim();
  }

  /** Resolves once the UAPI socket answers and the link exists; rejects if the process exits first. */
  async ready(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exit !== null) {
        throw new Error(`wireguard-go for ${this.device} exited (${describeExit(this.exit)}): ${this.recentOutput || 'no output'}`);
      }
      if (existsSync(uapiSocketPath(this.device)) && await this.commands.succeeds(['ip', 'link', 'show', 'dev', this.device])) {
        return;
      }
      await sleep(25);
    }
    throw new Error(`wireguard-go for ${this.device} did not come up within ${timeoutMs} ms: ${this.recentOutput || 'no output'}`);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 3_000): Promise<ProcessExit> {
    if (this.exit === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      try { await this.exited; } finally { clearTimeout(timer); }
    }
    removeStaleSocket(this.device);
    return this.exit!;
  }
}

export function describeExit(exit: ProcessExit): string {
  return exit.signal !== null ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

export function removeStaleSocket(device: string): void {
  try { unlinkSync(uapiSocketPath(device)); } catch { /* absent */ }
}

/**
 * Finds wireguard-go processes serving `device` (there is at most one per name in a
 * healthy system), with the inode of the network namespace that each runs in.
 */
export function findWireGuardGo(device: string): { pid: number; netnsInode: number }[] {
  const found: { pid: number; netnsInode: number }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter((a) => a.length > 0);
      const at = argv.findIndex((a) => basename(a) === 'wireguard-go');
      if (at < 0 || argv[argv.length - 1] !== device) continue;
      // `ip netns exec NS wireguard-go …` execs in place, so argv[0] is wireguard-go once it runs.
      if (at !== 0) continue;
      found.push({ pid: Number(entry), netnsInode: statSync(`/proc/${entry}/ns/net`).ino });
    } catch { /* the process went away while we looked */ }
  }
  return found;
}

/** The inode of the network namespace that `commands` run in. */
export function netnsInode(netns: string | undefined): number {
  try {
    return statSync(netns === undefined ? '/proc/self/ns/net' : `/run/netns/${netns}`).ino;
  } catch (err) {
    throw new FailedPrecondition(`network namespace ${netns} does not exist (${(err as Error).message})`, 'wireguard.netns');
  }
}

/**
 * Ends a wireguard-go left behind for `device` in our namespace (an agent that was
 * killed cannot stop its child), and refuses a device name that a wireguard-go in
 * another namespace serves: the UAPI socket path would collide.
 */
export async function takeOverOrphans(device: string, netns: string | undefined): Promise<number[]> {
  const ours = netnsInode(netns);
  const taken: number[] = [];
  for (const proc of findWireGuardGo(device)) {
    if (proc.netnsInode !== ours) {
      throw new FailedPrecondition(
        `WireGuard device name ${device} is served by wireguard-go pid ${proc.pid} in another network namespace; ` +
        `userspace sockets (${uapiSocketPath(device)}) are machine-wide, so pick a unique device name`, 'wireguard.device');
    }
    try { process.kill(proc.pid, 'SIGTERM'); } catch { continue; }
    taken.push(proc.pid);
  }
  for (const pid of taken) {
    const deadline = Date.now() + 3_000;
    while (isAlive(pid) && Date.now() < deadline) await sleep(20);
    if (isAlive(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    while (isAlive(pid)) await sleep(20);
  }
  return taken;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is gone for our purposes.
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
