/** Worker of integrity.ts: runs the check on a read-only connection and posts SQLite's answer lines. */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

const { path, check } = workerData as { path: string; check: 'integrity_check' | 'quick_check' };
let problems: string[];
try {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    problems = (db.pragma(`${check}(20)`) as Record<string, string>[]).map((r) => String(Object.values(r)[0]));
  } finally { db.close(); }
} catch (err) {
  problems = [`${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`];
}
parentPort!.postMessage({ problems });
