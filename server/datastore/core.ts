import { FailedPrecondition, InvalidArgument, MeshidError } from '../../spiffe/index.js';
import type { ConstraintKind, Dialect, Engine, EngineTx, Queryable } from './engine.js';
import type { Migration } from './migrate.js';
import { isSqliteCorruption, sqliteToMeshidError } from './sqlite.js';
import type { Change, ChangeKind, ChangeListener, ChangeOp } from './types.js';

export type { Queryable } from './engine.js';

/** A write transaction in progress: the engine's, plus the changes it recorded (published after the commit). */
export interface Tx extends EngineTx { readonly changes: Change[] }

export interface CoreOptions {
  engine: Engine;
  /** Milliseconds since the epoch. */
  now: () => number;
  onListenerError: (err: unknown) => void;
}

/** SQLite found damage in the file (or a DataLoss made from such an error). */
export function isCorruption(err: unknown): boolean {
  return err instanceof MeshidError ? err.code === 'data_loss' : isSqliteCorruption(err);
}

/** Every error leaving the datastore is a MeshidError (engines refine this with their own codes). */
export function toMeshidError(err: unknown): MeshidError {
  if (err instanceof MeshidError) return err;
  return sqliteToMeshidError(err) ??
    new MeshidError('internal', `datastore: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
}

/**
 * What every table module shares: the engine's transactions, the revision
 * counter with its change log, and the in-process change notification.
 */
export class Core {
  readonly engine: Engine;
  readonly dialect: Dialect;
  schemaVersion = 0;
  private readonly now: () => number;
  private readonly onListenerError: (err: unknown) => void;
  private readonly listeners = new Set<ChangeListener>();

  constructor(opts: CoreOptions) {
    this.engine = opts.engine;
    this.dialect = opts.engine.dialect;
    this.now = opts.now;
    this.onListenerError = opts.onListenerError;
  }

  async migrate(migrations: readonly Migration[]): Promise<void> {
    this.schemaVersion = await this.engine.migrate(migrations, this.now);
  }

  nowSeconds(): number { return Math.floor(this.now() / 1000); }

  isConstraint(err: unknown, kind: ConstraintKind): boolean { return this.engine.isConstraint(err, kind); }

  /**
   * Runs `fn` in one write transaction (serialized with every other writer of the
   * database, see engine.ts). Listeners hear about its changes only after the commit.
   */
  async write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const changes: Change[] = [];
    let result: T;
    try {
      result = await this.engine.write(async (etx) => {
        changes.length = 0;
        const tx: Tx = {
          ...etx,
          changes,
          savepoint: async (f) => {
            const mark = changes.length;
            try { return await etx.savepoint(f); } catch (err) { changes.length = mark; throw err; }
          },
        };
        const out = await fn(tx);
        if (changes.length > 0) await this.engine.notifyInTx?.(etx, changes[changes.length - 1]!.revision);
        return out;
      });
    } catch (err) {
      throw this.engine.toMeshidError(err);
    }
    if (changes.length > 0) this.publish(changes);
    return result;
  }

  /** Reads; with `snapshot`, all of them from one consistent state. */
  async read<T>(fn: (q: Queryable) => Promise<T>, snapshot = false): Promise<T> {
    try {
      return await this.engine.read(fn, snapshot);
    } catch (err) {
      throw this.engine.toMeshidError(err);
    }
  }

  /** Bumps the global revision and logs the change; returns the new revision. */
  async recordChange(tx: Tx, kind: ChangeKind, id: string, op: ChangeOp, parents?: readonly string[]): Promise<number> {
    const revision = (await tx.value<number>("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value"))!;
    const at = this.nowSeconds();
    await tx.run('INSERT INTO changes (revision, kind, object_id, op, at, parents) VALUES (?, ?, ?, ?, ?, ?)',
      revision, kind, id, op, at, parents ? JSON.stringify(parents) : null);
    tx.changes.push(parents ? { revision, kind, id, op, at, parents } : { revision, kind, id, op, at });
    return revision;
  }

  async meta(q: Queryable, key: string): Promise<number> {
    return (await q.value<number>('SELECT value FROM meta WHERE key = ?', key))!;
  }

  async setMeta(tx: Tx, key: string, value: number): Promise<void> {
    await tx.run('UPDATE meta SET value = ? WHERE key = ?', value, key);
  }

  currentRevision(q: Queryable): Promise<number> { return this.meta(q, 'revision'); }

  async changesSince(q: Queryable, revision: number, limit: number): Promise<Change[]> {
    if (!Number.isSafeInteger(revision) || revision < 0) throw new InvalidArgument('revision must be a non-negative integer', 'revision');
    if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidArgument('limit must be a positive integer', 'limit');
    const compacted = await this.meta(q, 'changes_compacted_through');
    if (revision < compacted) {
      throw new FailedPrecondition(`changes up to revision ${compacted} were compacted; revision ${revision} is too old, start from a snapshot`, 'revision');
    }
    const rows = await q.all<{ revision: number; kind: ChangeKind; object_id: string; op: ChangeOp; at: number; parents: string | null }>(
      'SELECT revision, kind, object_id, op, at, parents FROM changes WHERE revision > ? ORDER BY revision LIMIT ?', revision, limit);
    return rows.map((r) => {
      const c: Change = { revision: r.revision, kind: r.kind, id: r.object_id, op: r.op, at: r.at };
      if (r.parents !== null) c.parents = JSON.parse(r.parents) as string[];
      return c;
    });
  }

  /** Deletes the change log up to `throughRevision`; readers behind it must resync from a snapshot. */
  compactChanges(throughRevision: number): Promise<number> {
    return this.write(async (tx) => {
      const through = Math.min(throughRevision, await this.currentRevision(tx));
      if (through <= await this.meta(tx, 'changes_compacted_through')) return 0;
      const n = await tx.run('DELETE FROM changes WHERE revision <= ?', through);
      await this.setMeta(tx, 'changes_compacted_through', through);
      return n;
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

  async close(): Promise<void> {
    this.listeners.clear();
    await this.engine.close();
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
