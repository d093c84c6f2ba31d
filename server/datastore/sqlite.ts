/**
 * The embedded engine: one SQLite file in WAL mode through better-sqlite3, on one
 * connection. better-sqlite3 is synchronous, so the async port is a thin layer:
 * a lock keeps one transaction (or snapshot read) on the connection at a time,
 * and statements inside it run as they are awaited.
 */
import Database from 'better-sqlite3';
import { DataLoss, FailedPrecondition, MeshidError, StorageExhausted, Unavailable } from '../../spiffe/index.js';
import type { ConstraintKind, Dialect, Engine, EngineTx, Queryable, SqlParam } from './engine.js';
import { AsyncLock } from './lock.js';
import { migrateSqlite, type Migration } from './migrate.js';

export const sqliteDialect: Dialect = {
  name: 'sqlite',
  jsonArray: (expr, orderBy) => `json_group_array(${expr}${orderBy ? ` ORDER BY ${orderBy}` : ''})`,
  pairsFromJson: () => 'SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) j',
};

/** better-sqlite3's error: a message plus SQLite's extended result code name. */
function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

/** SQLite found damage in the file: a page that is not what it must be, or not a database at all. */
export function isSqliteCorruption(err: unknown): boolean {
  const code = sqliteCode(err);
  return !!code && (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB'));
}

/** A raw SqliteError as the MeshidError the datastore's callers see; undefined for anything else. */
export function sqliteToMeshidError(err: unknown): MeshidError | undefined {
  const code = sqliteCode(err);
  if (!code) return undefined;
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new Unavailable(`datastore is busy: ${(err as Error).message}`);
  }
  if (code.startsWith('SQLITE_FULL')) {
    return new StorageExhausted(`datastore: the disk is full (${code}); nothing was written: free space on the datastore's file system`);
  }
  if (isSqliteCorruption(err)) {
    return new DataLoss(`datastore is corrupt (${code}: ${(err as Error).message}); restore it from a backup (meshid-server datastore backup)`);
  }
  return new MeshidError('internal', `datastore: ${(err as Error).message}`, undefined, { cause: err });
}

export interface SqliteEngineOptions {
  path: string;
  /** How long a writer waits for the write lock (another process's, or this one's). */
  busyTimeoutMs: number;
}

export class SqliteEngine implements Engine {
  readonly dialect = sqliteDialect;
  readonly location: string;
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly lock: AsyncLock;
  private readonly q: Queryable;
  /** What a write transaction's statements go through: one connection, so one object for every transaction. */
  private readonly tx: EngineTx;
  private savepoints = 0;

  constructor(opts: SqliteEngineOptions) {
    this.location = opts.path;
    this.lock = new AsyncLock(opts.busyTimeoutMs, `datastore ${opts.path}`);
    let db: Database.Database;
    try {
      db = new Database(opts.path, { timeout: opts.busyTimeoutMs });
    } catch (err) {
      throw new Unavailable(`cannot open datastore ${opts.path}: ${(err as Error).message}`);
    }
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs))}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (String(mode).toLowerCase() !== 'wal') throw new FailedPrecondition(`datastore ${opts.path} cannot use WAL mode (got ${mode})`);
      // FULL, not NORMAL: with NORMAL a commit in WAL mode survives the process being
      // killed (the OS holds the written pages) but not a power loss or kernel crash,
      // which may roll back the last commits. Here a lost commit can mean a consumed
      // join token that is usable again or a CA key that signed SVIDs and is then
      // forgotten; writes are rare (admin, attestation, rotation), so one fsync of the
      // WAL per commit is cheap insurance.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
    this.q = this.queryable();
    this.tx = { ...this.q, savepoint: (f) => this.savepoint(f) };
  }

  /** Prepared statements are cached by their SQL text; `pluck` ones return their first column. */
  stmt(sql: string, pluck = false): Database.Statement {
    const key = pluck ? `pluck:${sql}` : sql;
    let s = this.statements.get(key);
    if (!s) {
      s = this.db.prepare(sql);
      if (pluck) s.pluck();
      this.statements.set(key, s);
    }
    return s;
  }

  private queryable(): Queryable {
    return {
      get: async <T>(sql: string, ...params: SqlParam[]) => this.stmt(sql).get(...params) as T | undefined,
      all: async <T>(sql: string, ...params: SqlParam[]) => this.stmt(sql).all(...params) as T[],
      run: async (sql: string, ...params: SqlParam[]) => this.stmt(sql).run(...params).changes,
      value: async <T>(sql: string, ...params: SqlParam[]) => this.stmt(sql, true).get(...params) as T | undefined,
      column: async <T>(sql: string, ...params: SqlParam[]) => this.stmt(sql, true).all(...params) as T[],
    };
  }

  read<T>(fn: (q: Queryable) => Promise<T>, snapshot: boolean): Promise<T> {
    return this.lock.run(async () => {
      if (!snapshot) return fn(this.q);
      this.stmt('BEGIN DEFERRED').run();
      try {
        return await fn(this.q);
      } finally {
        if (this.db.inTransaction) this.stmt('COMMIT').run();
      }
    });
  }

  /**
   * BEGIN IMMEDIATE: the write lock is taken at BEGIN, so two writers (also in other
   * processes) queue on busy_timeout instead of failing when a read turns out stale.
   */
  write<T>(fn: (tx: EngineTx) => Promise<T>): Promise<T> {
    return this.lock.run(async () => {
      // prepared once, as better-sqlite3's own transaction() does: exec() would parse the SQL on every write
      this.stmt('BEGIN IMMEDIATE').run();
      try {
        const result = await fn(this.tx);
        this.stmt('COMMIT').run();
        return result;
      } catch (err) {
        if (this.db.inTransaction) this.stmt('ROLLBACK').run();
        throw err;
      }
    });
  }

  private async savepoint<T>(fn: () => Promise<T>): Promise<T> {
    const name = `sp${++this.savepoints}`;
    this.db.exec(`SAVEPOINT ${name}`);
    try {
      const result = await fn();
      this.db.exec(`RELEASE ${name}`);
      return result;
    } catch (err) {
      this.db.exec(`ROLLBACK TO ${name}`);
      this.db.exec(`RELEASE ${name}`);
      throw err;
    }
  }

  migrate(migrations: readonly Migration[], now: () => number): Promise<number> {
    return this.lock.run(async () => migrateSqlite(this.db, migrations, this.location, now));
  }

  isConstraint(err: unknown, kind: ConstraintKind): boolean {
    return sqliteCode(err) === `SQLITE_CONSTRAINT_${kind}`;
  }

  isCorruption(err: unknown): boolean {
    return err instanceof DataLoss || isSqliteCorruption(err);
  }

  toMeshidError(err: unknown): MeshidError {
    if (err instanceof MeshidError) return err;
    return sqliteToMeshidError(err) ?? new MeshidError('internal', `datastore: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
  }

  /** SQLite's online backup of the open file. */
  async backup(file: string): Promise<void> { await this.db.backup(file); }

  async close(): Promise<void> {
    this.statements.clear();
    if (this.db.open) this.db.close();
  }
}
