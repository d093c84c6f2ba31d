import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The start time of a process: field 22 of /proc/<pid>/stat, in clock ticks
 * after boot. The comm field (2) may hold spaces and parentheses, so fields
 * are counted from the last ")". Undefined when the process does not exist.
 */
export function parseStartTime(stat: string): string | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  // after ") " come fields 3, 4, …; field 22 is the 20th of them
  const fields = stat.slice(close + 2).split(' ');
  const value = fields[19];
  return value !== undefined && /^\d+$/.test(value) ? value : undefined;
}

/** /proc/<pid>/stat is one line of 52 numbers and a comm of at most 64 bytes: well under this. */
const STAT_MAX_BYTES = 2048;

/**
 * Synchronous: /proc reads are in-memory work, cheaper than a trip through
 * libuv's thread pool, and the accept path must pin the peer before serving.
 * One open, read and close (readFileSync adds an fstat and a growing buffer,
 * about three times the cost on the accept path).
 */
export function processStartTimeSync(procRoot: string, pid: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(join(procRoot, String(pid), 'stat'), 'r');
  } catch {
    return undefined;
  }
  try {
    const buf = Buffer.allocUnsafe(STAT_MAX_BYTES);
    const n = readSync(fd, buf, 0, STAT_MAX_BYTES, 0);
    // a stat line that fills the buffer was cut: no start time rather than a wrong one
    return n < STAT_MAX_BYTES ? parseStartTime(buf.toString('latin1', 0, n)) : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
