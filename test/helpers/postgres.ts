/**
 * A throwaway PostgreSQL cluster for tests: Debian's server binaries, initdb in a
 * temporary folder, pg_ctl on a free loopback port, as the unprivileged
 * `postgres` user when the tests run as root (initdb refuses root). Each test
 * asks for a database of its own.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions.length === 0) throw new Error('PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql (scripts/setup.sh does)');
  return join(base, versions[0]!, 'bin');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface PostgresClusterOptions {
  /** Durability settings off (fsync, synchronous_commit): fine for tests that do not crash the host. Default true. */
  fast?: boolean;
}

export class PostgresCluster {
  private constructor(readonly dir: string, readonly port: number, private readonly bin: string, private readonly asUser: string | undefined, private readonly fast: boolean) {}

  static async start(opts: PostgresClusterOptions = {}): Promise<PostgresCluster> {
    const bin = postgresBinDir();
    const asUser = process.getuid?.() === 0 ? 'postgres' : undefined;
    const dir = mkdtempSync(join(tmpdir(), 'meshid-pg-'));
    if (asUser) {
      const uid = Number(execFileSync('id', ['-u', asUser]).toString().trim());
      const gid = Number(execFileSync('id', ['-g', asUser]).toString().trim());
      chownSync(dir, uid, gid);
    }
    const cluster = new PostgresCluster(dir, await freePort(), bin, asUser, opts.fast ?? true);
    cluster.run('initdb', ['-D', join(dir, 'data'), '-U', 'meshid', '--auth=trust', '--no-locale', '-E', 'UTF8', '--no-sync']);
    cluster.startServer();
    return cluster;
  }

  private run(tool: string, args: string[]): string {
    const cmd = join(this.bin, tool);
    const [file, argv] = this.asUser ? ['runuser', ['-u', this.asUser, '--', cmd, ...args]] : [cmd, args];
    try {
      return execFileSync(file, argv, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 }).toString();
    } catch (err) {
      const e = err as { stderr?: Buffer; stdout?: Buffer; message: string };
      throw new Error(`${tool} ${args.join(' ')} failed: ${e.stderr?.toString() || e.stdout?.toString() || e.message}`);
    }
  }

  /** pg_ctl start; also after stop() or kill(), on the same port and data. */
  startServer(): void {
    const settings = [`-p ${this.port}`, `-k ${this.dir}`, '-c listen_addresses=127.0.0.1', '-c max_connections=200'];
    if (this.fast) settings.push('-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off');
    this.run('pg_ctl', ['-D', join(this.dir, 'data'), '-w', '-t', '60', '-l', join(this.dir, 'server.log'), '-o', settings.join(' '), 'start']);
  }

  /** Stops the server: `fast` (clients are disconnected) or `immediate` (as a crash). */
  stopServer(mode: 'fast' | 'immediate' = 'fast'): void {
    this.run('pg_ctl', ['-D', join(this.dir, 'data'), '-w', '-m', mode, 'stop']);
  }

  url(database = 'postgres'): string {
    return `postgres://meshid@127.0.0.1:${this.port}/${database}`;
  }

  /** A new, empty database; returns its URL. */
  async createDatabase(name: string): Promise<string> {
    const c = new pg.Client({ connectionString: this.url('postgres') });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  async destroy(): Promise<void> {
    try { this.stopServer('immediate'); } catch { /* already stopped */ }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

let shared: Promise<PostgresCluster> | undefined;
let databases = 0;

/** One cluster per test process, started on first use and removed when the process exits. */
export function sharedCluster(): Promise<PostgresCluster> {
  if (!shared) {
    shared = PostgresCluster.start();
    shared.then((c) => {
      process.once('exit', () => {
        try { c.stopServer('immediate'); } catch { /* gone */ }
        rmSync(c.dir, { recursive: true, force: true });
      });
    }, () => undefined);
  }
  return shared;
}

/** A fresh database in the shared cluster. */
export async function freshDatabase(tag: string): Promise<string> {
  const c = await sharedCluster();
  return c.createDatabase(`t_${tag.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${process.pid}_${++databases}`);
}
