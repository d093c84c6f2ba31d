/**
 * Talking to the agents' admin sockets (HTTP on a Unix socket): `auth list`,
 * `observe` and `explain` read the agents, not the server. With no --agent,
 * every socket under /run/meshid/ (and /run/meshid/<node>/) is used.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { unixRequest } from '../common/unixhttp.js';
import { CliError } from './errors.js';

export const DEFAULT_AGENT_SOCKET = '/run/meshid/admin.sock';

/** The admin sockets to ask: the flags, else /run/meshid/admin.sock and /run/meshid/<node>/admin.sock. */
export function agentSockets(flags: string[] | undefined, root = '/run/meshid'): string[] {
  if (flags && flags.length > 0) return flags;
  const found: string[] = [];
  if (existsSync(join(root, 'admin.sock'))) found.push(join(root, 'admin.sock'));
  if (existsSync(root)) {
    for (const d of readdirSync(root).sort()) {
      const p = join(root, d, 'admin.sock');
      try { if (statSync(join(root, d)).isDirectory() && existsSync(p)) found.push(p); } catch { /* raced away */ }
    }
  }
  if (found.length === 0) throw new CliError(`no agent admin socket found under ${root}; give --agent SOCKET`);
  return found;
}

export async function agentGet<T>(socket: string, path: string): Promise<T> {
  let r: { status: number; text: string };
  try { r = await unixRequest(socket, 'GET', path, undefined, 10_000); } catch (err) {
    throw new CliError(`cannot reach the agent at ${socket}: ${(err as Error).message}`);
  }
  let json: unknown;
  try { json = JSON.parse(r.text); } catch { throw new CliError(`agent at ${socket} answered ${r.status} with non-JSON`); }
  if (r.status >= 300) {
    const e = (json as { error?: { message?: string; field?: string } }).error;
    throw new CliError(`agent at ${socket}: ${e?.message ?? `HTTP ${r.status}`}${e?.field ? ` (${e.field})` : ''}`);
  }
  return json as T;
}

/** Streams NDJSON lines from an agent until the connection ends or the returned function is called. */
export function agentStream(socket: string, path: string, onLine: (line: string) => void, onEnd: (err?: Error) => void): () => void {
  const req = request({ socketPath: socket, path, method: 'GET', agent: false }, (res) => {
    if ((res.statusCode ?? 500) >= 300) {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => onEnd(new CliError(`agent at ${socket}: ${body.trim()}`)));
      return;
    }
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) { const line = buf.slice(0, nl); buf = buf.slice(nl + 1); if (line) onLine(line); }
    });
    res.on('end', () => onEnd());
  });
  req.on('error', (err) => onEnd(new CliError(`cannot reach the agent at ${socket}: ${err.message}`)));
  req.end();
  return () => req.destroy();
}
