import Database from 'better-sqlite3';
import { DataLoss, FailedPrecondition, InvalidArgument, MeshidError, StorageExhausted, Unavailable } from '../../spiffe/errors.js';
import { migrate, type Migration } from './migrate.js';
import type { Change, ChangeKind, ChangeListener, ChangeOp } from './types.js';

export interface CoreOptions {
  path: string;
  migrations: readonly Migration[];
  /** Milliseconds since the epoch. */
  now: () => number;
  busyTimeoutMs: number;
  onListenerError: (err: unknown) => void;
  onOpenError?: (err: unknown) => void;
}

/** better-sqlite3's error: a message plus SQLite's extended result code name. */
function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

export function isConstraint(err: unknown, kind: 'UNIQUE' | 'PRIMARYKEY' | 'FOREIGNKEY' | 'CHECK'): boolean {
  return sqliteCode(err) === `SQLITE_CONSTRAINT_${kind}`;
}

/** SQLite found damage in the file: a page that is not what it must be, or not a database at all. */
export function isCorruption(err: unknown): boolean {
  const code = err instanceof DataLoss ? 'SQLITE_CORRUPT' : sqliteCode(err);
  return !!code && (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB'));
}

/** Every error leaving the datastore is a MeshidError. */
export function toMeshidError(err: unknown): MeshidError {
  if (err instanceof MeshidError) return err;
  const code = sqliteCode(err);
  if (code?.startsWith('SQLITE_BUSY') || code?.startsWith('SQLITE_LOCKED')) {
    return new Unavailable(`datastore is busy: ${(err as Error).message}`);
  }
  if (code?.startsWith('SQLITE_FULL')) {
    return new StorageExhausted(`datastore: the disk is full (${code}); nothing was written: free space on the datastore's file system`);
  }
  if (isCorruption(err)) {
    return new DataLoss(`datastore is corrupt (${code}: ${(err as Error).message}); restore it from a backup (meshid-server datastore backup)`);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new MeshidError('internal', `datastore: ${message}`, undefined, { cause: err });
}

/**
 * The connection and what every table module shares: transactions, the revision
 * counter with its change log, and the in-process change notification.
 */
export class Core {
  readonly db: Database.Database;
  readonly schemaVersion: number;
  readonly path: string;
  private readonly now: () => number;
  private readonly onListenerError: (err: unknown) => void;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly listeners = new Set<ChangeListener>();
  /** Changes of the write transaction in progress; published after it commits. */
  private pending: Change[] | undefined;

  constructor(opts: CoreOptions) {
    this.now = opts.now;
    this.path = opts.path;
    this.onListenerError = opts.onListenerError;
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
      this.schemaVersion = migrate(db, opts.migrations, opts.path, opts.now);
    } catch (err) {
      db.close();
      opts.onOpenError?.(err);
      throw toMeshidError(err);
    }
    this.db = db;
  }

  nowSeconds(): number { return Math.floor(this.now() / 1000); }

  /** Prepared statements are cached by their SQL text. */
  stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /**
   * Runs `fn` in one IMMEDIATE transaction: the write lock is taken at BEGIN, so two
   * writers (also in other processes) queue on busy_timeout instead of failing when
   * a read snapshot turns out stale. Nested calls join the outer transaction.
   * Listeners hear about the changes only after the commit.
   */
  write<T>(fn: () => T): T {
    if (this.pending) return fn();
    const changes: Change[] = [];
    this.pending = changes;
    let result: T;
    try {
      result = this.db.transaction(fn).immediate();
    } catch (err) {
      throw toMeshidError(err);
    } finally {
      this.pending = undefined;
    }
    if (changes.length > 0) this.publish(changes);
    return result;
  }

  /** Inside write(): runs `fn` in a savepoint; on failure only its own work (and changes) are undone. */
  savepoint<T>(fn: () => T): T {
    const pending = this.pending;
    if (!pending) throw new MeshidError('internal', 'savepoint outside a write transaction');
    const mark = pending.length;
    try {
      return this.db.transaction(fn)();
    } catch (err) {
      pending.length = mark;
      throw toMeshidError(err);
    }
  }

  /** Runs `fn` in one read transaction: everything it reads is from one snapshot. */
  read<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    try {
      return this.db.transaction(fn).deferred();
    } catch (err) {
      throw toMeshidError(err);
    }
  }

  /** Bumps the global revision and logs the change; call inside write(). Returns the new revision. */
  recordChange(kind: ChangeKind, id: string, op: ChangeOp, parents?: readonly string[]): number {
    if (!this.pending) throw new MeshidError('internal', 'recordChange outside a write transaction');
    const { value: revision } = this.stmt("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value").get() as { value: number };
    const at = this.nowSeconds();
    this.stmt('INSERT INTO changes (revision, kind, object_id, op, at) VALUES (?, ?, ?, ?, ?)').run(revision, kind, id, op, at);
    this.pending.push(parents ? { revision, kind, id, op, at, parents } : { revision, kind, id, op, at });
    return revision;
  }

  meta(key: string): number {
    return (this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: number }).value;
  }

  setMeta(key: string, value: number): void {
    this.stmt('UPDATE meta SET value = ? WHERE key = ?').run(value, key);
  }

  currentRevision(): number { return this.meta('revision'); }

  changesSince(revision: number, limit: number): Change[] {
    if (!Number.isSafeInteger(revision) || revision < 0) throw new InvalidArgument('revision must be a non-negative integer', 'revision');
    if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidArgument('limit must be a positive integer', 'limit');
    return this.read(() => {
      const compacted = this.meta('changes_compacted_through');
      if (revision < compacted) {
        throw new FailedPrecondition(`changes up to revision ${compacted} were compacted; revision ${revision} is too old, start from a snapshot`, 'revision');
      }
      const rows = this.stmt('SELECT revision, kind, object_id, op, at FROM changes WHERE revision > ? ORDER BY revision LIMIT ?')
        .all(revision, limit) as { revision: number; kind: ChangeKind; object_id: string; op: ChangeOp; at: number }[];
      return rows.map((r) => ({ revision: r.revision, kind: r.kind, id: r.object_id, op: r.op, at: r.at }));
    });
  }

  /** Deletes the change log up to `throughRevision`; readers behind it must resync from a snapshot. */
  compactChanges(throughRevision: number): number {
    return this.write(() => {
      const through = Math.min(throughRevision, this.currentRevision());
      if (through <= this.meta('changes_compacted_through')) return 0;
      const { changes } = this.stmt('DELETE FROM changes WHERE revision <= ?').run(through);
      this.setMeta('changes_compacted_through', through);
      return changes;
    });
  }

  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  private publish(changes: readonly Change[]): void {
    const frozen = Object.freeze(changes.map((c) => Object.freeze(c)));
    for (const listener of [...this.listeners]) {
      try {
        listener(frozen);
      } catch (err) {
        this.onListenerError(err);
      }
    }
  }

  close(): void {
    this.listeners.clear();
    this.statements.clear();
    if (this.db.open) this.db.close();
  }
}

/** Opaque page tokens: base64url of "<scope>:<cursor>". */
export function encodePageToken(scope: string, cursor: string | number): string {
  return Buffer.from(`${scope}:${cursor}`).toString('base64url');
}

export function decodePageToken(scope: string, token: string | undefined): string | undefined {
  if (token === undefined || token === '') return undefined;
  const text = Buffer.from(token, 'base64url').toString();
  if (!text.startsWith(scope + ':') || Buffer.from(text).toString('base64url') !== token) {
    throw new InvalidArgument('page token is not one this list returned', 'page_token');
  }
  return text.slice(scope.length + 1);
}

export function checkPageSize(pageSize: number | undefined): number {
  if (pageSize === undefined || pageSize === 0) return 0;
  if (!Number.isSafeInteger(pageSize) || pageSize < 0) throw new InvalidArgument('page size must be a non-negative integer', 'page_size');
  return pageSize;
}
