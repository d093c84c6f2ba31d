/** The stall of slowsignworker.ts: `workerData.stallMs` before each message the thread reads. */
import { parentPort, workerData } from 'node:worker_threads';

const { stallMs } = workerData as { stallMs: number };
const stall = new Int32Array(new SharedArrayBuffer(4));
parentPort!.on('message', () => { Atomics.wait(stall, 0, 0, stallMs); });
