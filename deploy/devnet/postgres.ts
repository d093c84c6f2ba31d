/**
 * The devnet's PostgreSQL for `meshid demo up --servers N`: Debian's server
 * binaries, a cluster of its own in a directory the unprivileged `postgres`
 * user owns, on a loopback port. Started as one of the demo's processes, so
 * `demo down` stops it; the directory goes with the demo's state.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FailedPrecondition } from '../../spiffe/index.js';

export function postgresBin(): string {
  const base = '/usr/lib/postgresql';
  const v = existsSync(base) ? readdirSync(base).filter((d) => existsSync(join(base, d, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a))[0] : undefined;
  if (!v) throw new FailedPrecondition('PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres): apt-get install postgresql', 'servers');
  return join(base, v, 'bin');
}

const ids = (user: string): { uid: number; gid: number } => ({
  uid: Number(execFileSync('id', ['-u', user]).toString()), gid: Number(execFileSync('id', ['-g', user]).toString()),
});

/** initdb in `dir` (made, owned by postgres); returns the command line that runs the server on `port`. */
export function preparePostgres(dir: string, port: number): string[] {
  const bin = postgresBin();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { uid, gid } = ids('postgres');
  chownSync(dir, uid, gid);
  execFileSync('runuser', ['-u', 'postgres', '--', join(bin, 'initdb'), '-D', join(dir, 'data'), '-U', 'meshid', '--auth=trust', '--no-locale', '-E', 'UTF8'],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  return ['runuser', '-u', 'postgres', '--', join(bin, 'postgres'), '-D', join(dir, 'data'), '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1'];
}
