/**
 * A watchdog for the main event loop. The main thread stamps a shared clock
 * every beat; a worker thread, which keeps running when the main thread is
 * stuck (a deadlock in native code, an endless loop), checks the stamp. Past
 * the limit it writes one log line straight to stderr and kills the process
 * with SIGKILL, so the supervisor (systemd, the kubelet) restarts it: a hung
 * main thread ignores SIGTERM, and the pinned maps keep the datapath while the
 * process is down.
 */
import { Worker } from 'node:worker_threads';

export interface WatchdogOptions {
  /** How long the event loop may go without a turn before the process is killed; 0 turns the watchdog off. */
  stallLimitMs: number;
  /** Named in the log line. */
  service: string;
}

// CommonJS, run by the worker with eval. It never touches process.stderr (a
// worker's stream is pumped by the main thread, which is the one that is stuck).
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const beat = new BigInt64Array(workerData.shared);
const limitNs = BigInt(workerData.stallLimitMs) * 1000000n;
setInterval(() => {
  const stalledNs = process.hrtime.bigint() - Atomics.load(beat, 0);
  if (stalledNs <= limitNs) return;
  const line = { time: new Date().toISOString(), level: 'error', msg: 'event loop stalled past the watchdog limit; killing the process so that its supervisor restarts it',
    service: workerData.service, stalled_ms: Number(stalledNs / 1000000n), limit_ms: workerData.stallLimitMs, pid: process.pid };
  try { writeSync(2, JSON.stringify(line) + '\\n'); } finally { process.kill(process.pid, 'SIGKILL'); }
}, workerData.checkMs);
`;

export class EventLoopWatchdog {
  private worker: Worker | undefined;
  private beatTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: WatchdogOptions) {}

  start(): void {
    if (this.worker || this.opts.stallLimitMs <= 0) return;
    const shared = new SharedArrayBuffer(8);
    const beat = new BigInt64Array(shared);
    const stamp = (): void => { Atomics.store(beat, 0, process.hrtime.bigint()); };
    stamp();
    const beatMs = Math.max(10, Math.min(1000, Math.floor(this.opts.stallLimitMs / 4)));
    this.beatTimer = setInterval(stamp, beatMs);
    this.beatTimer.unref();
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { shared, stallLimitMs: this.opts.stallLimitMs, service: this.opts.service, checkMs: beatMs },
      // the watchdog must not be the thing that runs out of memory
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    this.worker.unref();
  }

  async stop(): Promise<void> {
    if (this.beatTimer) clearInterval(this.beatTimer);
    this.beatTimer = undefined;
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}
