/**
 * SQLite's own check of a datastore file (integrity_check on small files,
 * quick_check on large ones), run on a connection of its own in a worker
 * thread so that start-up can stop waiting after a time limit on a big file.
 */
import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** Files up to this size get the full check (also indexes against tables); larger ones the quick one. */
const FULL_CHECK_BYTES = 64 * 1024 * 1024;

export type IntegrityResult =
  | { state: 'ok'; check: string; ms: number }
  | { state: 'corrupt'; check: string; problems: string[] }
  | { state: 'unfinished'; check: string; ms: number };

export function checkIntegrity(path: string, timeoutMs: number): Promise<IntegrityResult> {
  const check = statSync(path).size <= FULL_CHECK_BYTES ? 'integrity_check' : 'quick_check';
  const started = Date.now();
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./integrity-worker.js', import.meta.url), { workerData: { path, check } });
    const timer = setTimeout(() => {
      // the worker goes on in native code until its statement returns; nobody waits for it
      worker.unref();
      resolve({ state: 'unfinished', check, ms: Date.now() - started });
    }, timeoutMs);
    worker.once('message', (m: { problems: string[] }) => {
      clearTimeout(timer);
      void worker.terminate();
      if (m.problems.length === 1 && m.problems[0] === 'ok') resolve({ state: 'ok', check, ms: Date.now() - started });
      else resolve({ state: 'corrupt', check, problems: m.problems });
    });
    worker.once('error', (err) => {
      clearTimeout(timer);
      resolve({ state: 'corrupt', check, problems: [err.message] });
    });
  });
}
