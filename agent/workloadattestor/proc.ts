import { readFileSync } from 'node:fs';
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

/**
 * Synchronous: /proc reads are in-memory work, cheaper than a trip through
 * libuv's thread pool, and the accept path must pin the peer before serving.
 */
export function processStartTimeSync(procRoot: string, pid: number): string | undefined {
  try {
    return parseStartTime(readFileSync(join(procRoot, String(pid), 'stat'), 'latin1'));
  } catch {
    return undefined;
  }
}
