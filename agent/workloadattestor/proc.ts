import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
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

export async function processStartTime(procRoot: string, pid: number): Promise<string | undefined> {
  try {
    return parseStartTime(await readFile(join(procRoot, String(pid), 'stat'), 'latin1'));
  } catch {
    return undefined;
  }
}

/** Synchronous, for the accept path, where the peer must be pinned before the connection is served. */
export function processStartTimeSync(procRoot: string, pid: number): string | undefined {
  try {
    return parseStartTime(readFileSync(join(procRoot, String(pid), 'stat'), 'latin1'));
  } catch {
    return undefined;
  }
}
