/**
 * The engine for several servers: PostgreSQL through `pg`, with a pool.
 *
 * Writes are serialized across every server on the database by one advisory
 * transaction lock taken first in each write transaction (SQLite's IMMEDIATE
 * lock, cluster-wide), so check-then-write code is correct across servers and
 * revisions commit in the order they were handed out. Reads do not take it.
 * A committed write that recorded changes NOTIFYs `meshid_changes`; servers use
 * that only to wake up and then read the change log.
 */
import pg from 'pg';
import { DataLoss, FailedPrecondition, InvalidArgument, MeshidError, StorageExhausted, Unavailable } from '../../spiffe/index.js';
import { numberPlaceholders, type ConstraintKind, type Dialect, type Engine, type EngineTx, type Queryable, type SqlParam } from './engine.js';
import { refuseNewerSchema, type Migration } from './migrate.js';
import { Gate } from '../../common/gate.js';

export const postgresDialect: Dialect = {
  name: 'postgres',
  jsonArray: (expr, orderBy) => `COALESCE(json_agg(${expr}${orderBy ? ` ORDER BY ${orderBy}` : ''}), '[]'::json)::text`,
  pairsFromJson: () => 'SELECT j ->> 0, j ->> 1 FROM json_array_elements(?::json) j',
};

/** Advisory lock keys (one 64-bit space per database): "meshid" in ASCII plus a role byte (0x6d6573686964_0001, _0002). */
const WRITE_LOCK = '7882833615063875585';
const MIGRATE_LOCK = '7882833615063875586';
export const CHANGES_CHANNEL = 'meshid_changes';

export interface PostgresEngineOptions {
  url: string;
  /** The password, when it is not in the URL or the PG* environment (config `datastore.password_file`). */
  password?: string;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  /** How long a writer waits for the write lock, and a caller for a connection. */
  busyTimeoutMs: number;
  /** Where errors of idle connections go (the database restarted); they are not fatal. */
  onIdleError?: (err: Error) => void;
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

function checkUrl(url: string): void {
  let u: URL;
  try { u = new URL(url); } catch { throw new InvalidArgument('datastore URL is not a URL: expected postgres://user@host:port/database', 'datastore.url'); }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new InvalidArgument(`datastore URL scheme ${u.protocol} is not postgres: or postgresql:`, 'datastore.url');
  }
}

/** int8 (COUNT, BIGINT columns) as a JS number: every meshid integer fits in 2^53. */
function types(): pg.CustomTypesConfig {
  const t = new pg.TypeOverrides();
  t.setTypeParser(20, (v: string) => Number(v));
  return t;
}

function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof pg.DatabaseError && typeof code === 'string' ? code : undefined;
}

const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'EPIPE', 'ENOENT']);

export class PostgresEngine implements Engine {
  readonly dialect = postgresDialect;
  readonly location: string;
  readonly pool: pg.Pool;
  private readonly sqlCache = new Map<string, string>();
  private readonly connectOptions: pg.ClientConfig;
  private readonly busyTimeoutMs: number;
  private readonly poolSize: number;
  /** Turns on the pool's connections (see connect()). */
  private readonly turns: Gate;
  private readonly queueTimeoutMs: number;
  private closed = false;

  constructor(opts: PostgresEngineOptions) {
    checkUrl(opts.url);
    this.location = redactUrl(opts.url);
    this.busyTimeoutMs = opts.busyTimeoutMs;
    this.connectOptions = {
      connectionString: opts.url,
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      types: types(),
      application_name: 'meshid-server',
      // opening a connection only (waiting for a free one is connect()'s queue): a process whose event loop is
      // busy for a while (thousands of streams starting) must not take its own delay for an unreachable database
      connectionTimeoutMillis: Math.max(10_000, 2 * opts.busyTimeoutMs),
      keepAlive: true,
    };
    this.poolSize = opts.poolSize ?? 10;
    this.turns = new Gate(this.poolSize);
    this.queueTimeoutMs = Math.max(30_000, 6 * opts.busyTimeoutMs);
    this.pool = new pg.Pool({ ...this.connectOptions, max: this.poolSize, idleTimeoutMillis: 300_000 });
    // an idle connection that the server closes (restart, failover) must not crash the process
    this.pool.on('error', (err) => opts.onIdleError?.(err));
  }

  private sql(sql: string): string {
    let out = this.sqlCache.get(sql);
    if (out === undefined) {
      out = numberPlaceholders(sql);
      this.sqlCache.set(sql, out);
    }
    return out;
  }

  /** The pool as one queryable: each statement takes its turn on a connection of its own (see connect()). */
  private readonly pooled = {
    query: (config: string | pg.QueryArrayConfig, values?: unknown[]): Promise<pg.QueryResult> => this.withTurn(() => this.pool.query(config as string, values)),
  };

  private async withTurn<T>(fn: () => Promise<T>): Promise<T> {
    await this.turns.acquire(this.queueTimeoutMs, () => this.busy());
    try { return await fn(); } finally { this.turns.release(); }
  }

  private busy(): Unavailable {
    return new Unavailable(`datastore ${this.location} is busy: waited ${this.queueTimeoutMs} ms for a connection (pool_size ${this.poolSize})`);
  }

  private queryable(client: { query(config: string | pg.QueryArrayConfig, values?: unknown[]): Promise<pg.QueryResult> }): Queryable {
    const rows = async <T>(sql: string, params: SqlParam[]): Promise<T[]> => (await client.query(this.sql(sql), params)).rows as T[];
    const firstColumn = async <T>(sql: string, params: SqlParam[]): Promise<T[]> => {
      const r = await client.query({ text: this.sql(sql), values: params, rowMode: 'array' });
      return (r.rows as unknown[][]).map((row) => row[0] as T);
    };
    return {
      get: async <T>(sql: string, ...params: SqlParam[]) => (await rows<T>(sql, params))[0],
      all: (sql, ...params) => rows(sql, params),
      run: async (sql, ...params) => (await client.query(this.sql(sql), params)).rowCount ?? 0,
      value: async <T>(sql: string, ...params: SqlParam[]) => (await firstColumn<T>(sql, params))[0],
      column: (sql, ...params) => firstColumn(sql, params),
    };
  }

  /**
   * A connection of the pool, after waiting our turn for one. pg's own queue
   * bounds a wait by connectionTimeoutMillis, the time allowed to open a
   * connection; a burst of work (every agent reconnecting after a failover)
   * waits longer than that for a free one without anything being wrong, so the
   * turns are taken here, with a bound of their own.
   */
  private async connect(): Promise<pg.PoolClient> {
    if (this.closed) throw new Unavailable(`datastore ${this.location} is closed`);
    await this.turns.acquire(this.queueTimeoutMs, () => this.busy());
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      this.turns.release();
      throw err;
    }
    const release = client.release.bind(client);
    let released = false;
    client.release = (err?: Error | boolean) => {
      if (!released) { released = true; this.turns.release(); }
      release(err);
    };
    return client;
  }

  /** Runs `fn` on one connection inside BEGIN … COMMIT; a broken connection is discarded, not reused. */
  private async inTransaction<T>(begin: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.connect();
    let broken: Error | undefined;
    try {
      await client.query(begin);
      try {
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try { await client.query('ROLLBACK'); } catch (e) { broken = e as Error; }
        throw err;
      }
    } catch (err) {
      if (!pgCode(err)) broken ??= err as Error;
      throw err;
    } finally {
      client.release(broken);
    }
  }

  async read<T>(fn: (q: Queryable) => Promise<T>, snapshot: boolean): Promise<T> {
    if (!snapshot) return fn(this.queryable(this.pooled));
    return this.inTransaction('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', (c) => fn(this.queryable(c)));
  }

  write<T>(fn: (tx: EngineTx) => Promise<T>): Promise<T> {
    return this.inTransaction('BEGIN', async (client) => {
      await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(this.busyTimeoutMs))}`);
      await client.query(`SELECT pg_advisory_xact_lock(${WRITE_LOCK})`);
      let savepoints = 0;
      const q = this.queryable(client);
      return fn({
        ...q,
        savepoint: async <S>(f: () => Promise<S>): Promise<S> => {
          const name = `sp${++savepoints}`;
          await client.query(`SAVEPOINT ${name}`);
          try {
            const result = await f();
            await client.query(`RELEASE SAVEPOINT ${name}`);
            return result;
          } catch (err) {
            await client.query(`ROLLBACK TO SAVEPOINT ${name}`);
            await client.query(`RELEASE SAVEPOINT ${name}`);
            throw err;
          }
        },
      });
    });
  }

  async notifyInTx(tx: EngineTx, revision: number): Promise<void> {
    await tx.run(`SELECT pg_notify('${CHANGES_CHANNEL}', ?)`, String(revision));
  }

  /**
   * LISTEN on a connection of its own. When that connection breaks, it is made
   * again (with back-off) and `wake` is called once it is back: notifications
   * sent meanwhile are lost, the change log is not.
   */
  async subscribe(wake: () => void): Promise<() => Promise<void>> {
    let client: pg.Client | undefined;
    let stopped = false;
    let delay = 100;
    let timer: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      if (stopped) return;
      const c = new pg.Client(this.connectOptions);
      c.on('notification', () => wake());
      c.on('error', () => { /* 'end' follows */ });
      c.on('end', () => {
        if (client === c) client = undefined;
        retry();
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${CHANGES_CHANNEL}`);
        if (stopped) { await c.end().catch(() => undefined); return; }
        client = c;
        delay = 100;
        wake();
      } catch {
        await c.end().catch(() => undefined);
      }
    };
    const retry = (): void => {
      if (stopped || timer) return;
      timer = setTimeout(() => { timer = undefined; void connect(); }, delay);
      timer.unref();
      delay = Math.min(delay * 2, 5000);
    };
    await connect();
    if (!client) retry();
    return async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await client?.end().catch(() => undefined);
    };
  }

  async migrate(migrations: readonly Migration[], now: () => number): Promise<number> {
    const client = await this.connect();
    try {
      await client.query(`SELECT pg_advisory_lock(${MIGRATE_LOCK})`);
      try {
        await client.query(`CREATE TABLE IF NOT EXISTS schema_version (
          version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`);
        const version = async (): Promise<number> => Number((await client.query('SELECT MAX(version) AS v FROM schema_version')).rows[0]?.v ?? 0);
        refuseNewerSchema(await version(), migrations.length, this.location);
        for (const mig of migrations) {
          if (await version() >= mig.version) continue;
          await client.query('BEGIN');
          try {
            await client.query(mig.sql);
            await client.query('INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)', [mig.version, mig.name, Math.floor(now() / 1000)]);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK').catch(() => undefined);
            throw new MeshidError('internal', `migration ${mig.name} failed on ${this.location}: ${(err as Error).message}`, undefined, { cause: err });
          }
        }
        return await version();
      } finally {
        await client.query(`SELECT pg_advisory_unlock(${MIGRATE_LOCK})`).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }

  isConstraint(err: unknown, kind: ConstraintKind): boolean {
    const code = pgCode(err);
    switch (kind) {
      case 'UNIQUE': case 'PRIMARYKEY': return code === '23505';
      case 'FOREIGNKEY': return code === '23503';
      case 'CHECK': return code === '23514';
    }
  }

  isCorruption(err: unknown): boolean {
    const code = pgCode(err);
    return err instanceof DataLoss || code === 'XX001' || code === 'XX002';
  }

  toMeshidError(err: unknown): MeshidError {
    if (err instanceof MeshidError) return err;
    const message = err instanceof Error ? err.message : String(err);
    const code = pgCode(err);
    if (code === undefined) {
      const sys = (err as { code?: unknown } | null)?.code;
      if ((typeof sys === 'string' && CONNECTION_ERRORS.has(sys)) || /timeout|terminated|Connection/i.test(message)) {
        return new Unavailable(`datastore ${this.location} is unreachable: ${message}`);
      }
      return new MeshidError('internal', `datastore: ${message}`, undefined, { cause: err });
    }
    if (code === '53100') return new StorageExhausted(`datastore ${this.location}: the database's disk is full (${code}); nothing was written`);
    if (code === 'XX001' || code === 'XX002') return new DataLoss(`datastore ${this.location} is corrupt (${code}: ${message}); restore it from a backup`);
    if (['55P03', '57014', '40001', '40P01', '53300', '57P01', '57P02', '57P03'].includes(code) || code.startsWith('08')) {
      return new Unavailable(`datastore ${this.location} is busy or unavailable (${code}: ${message})`);
    }
    if (code === '42P01' || code === '42703') {
      return new FailedPrecondition(`datastore ${this.location} lacks a table or column meshid needs (${message}): its schema is not meshid's`, 'datastore.url');
    }
    return new MeshidError('internal', `datastore: ${message} (${code})`, undefined, { cause: err });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
