/**
 * The datastore's port to a SQL database. The table modules write their SQL once
 * against this interface (with `?` placeholders and the few fragments a Dialect
 * supplies); an Engine runs it on SQLite (sqlite.ts) or PostgreSQL (postgres.ts).
 *
 * Every write transaction of an engine is serialized with every other one, also
 * across processes and servers: SQLite's IMMEDIATE lock, PostgreSQL's advisory
 * transaction lock. So a check and the write it guards see one state of the
 * database, and revisions are handed out and committed in the same order (the
 * change log has no gaps that fill in later).
 */
import type { MeshidError } from '../../spiffe/index.js';
import type { Migration } from './migrate.js';

export type SqlParam = string | number | null;
export type Row = Record<string, unknown>;

/** Statements with `?` placeholders. */
export interface Queryable {
  get<T = Row>(sql: string, ...params: SqlParam[]): Promise<T | undefined>;
  all<T = Row>(sql: string, ...params: SqlParam[]): Promise<T[]>;
  /** Returns how many rows the statement changed. */
  run(sql: string, ...params: SqlParam[]): Promise<number>;
  /** The first column of the first row. */
  value<T>(sql: string, ...params: SqlParam[]): Promise<T | undefined>;
  /** The first column of every row. */
  column<T>(sql: string, ...params: SqlParam[]): Promise<T[]>;
}

export interface EngineTx extends Queryable {
  /** Runs `fn` in a savepoint: when it throws, only its own statements are undone. */
  savepoint<T>(fn: () => Promise<T>): Promise<T>;
}

/** The SQL that differs between the engines. */
export interface Dialect {
  readonly name: 'sqlite' | 'postgres';
  /** An aggregate: the JSON array text of `expr` over the rows, `[]` for none. */
  jsonArray(expr: string, orderBy?: string): string;
  /** A subquery of (type, value) rows from one parameter: a JSON array of [type, value] pairs. */
  pairsFromJson(): string;
}

export type ConstraintKind = 'UNIQUE' | 'PRIMARYKEY' | 'FOREIGNKEY' | 'CHECK';

export interface Engine {
  readonly dialect: Dialect;
  /** Where the data is, for messages: a file path, or a PostgreSQL URL without its password. */
  readonly location: string;
  /** Plain reads; `snapshot` runs them all in one consistent read transaction. */
  read<T>(fn: (q: Queryable) => Promise<T>, snapshot: boolean): Promise<T>;
  /** One write transaction, serialized with every other write to this database. */
  write<T>(fn: (tx: EngineTx) => Promise<T>): Promise<T>;
  /** Brings the schema up to the newest migration; refuses a newer schema. Returns the version. */
  migrate(migrations: readonly Migration[], now: () => number): Promise<number>;
  /** Called after a write transaction that recorded changes commits (PostgreSQL notifies other servers). */
  notifyInTx?(tx: EngineTx, revision: number): Promise<void>;
  /** Calls `wake` when another process or server may have committed changes (a hint, never the data). */
  subscribe?(wake: () => void): Promise<() => Promise<void>>;
  isConstraint(err: unknown, kind: ConstraintKind): boolean;
  isCorruption(err: unknown): boolean;
  toMeshidError(err: unknown): MeshidError;
  close(): Promise<void>;
}

/** `?` → `$1`, `$2`, … (PostgreSQL). The table modules' SQL has no `?` inside literals. */
export function numberPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}
