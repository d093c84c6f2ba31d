import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { FailedPrecondition, MeshidError } from '../../spiffe/index.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const FILE_RE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/** Reads `NNNN_name.sql` files; versions must run 1, 2, 3, … without gaps. */
export function loadMigrations(dir: string): Migration[] {
  const migrations: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    const m = FILE_RE.exec(file);
    if (!m) continue;
    migrations.push({ version: Number(m[1]), name: file, sql: readFileSync(join(dir, file), 'utf8') });
  }
  migrations.forEach((mig, i) => {
    if (mig.version !== i + 1) {
      throw new MeshidError('internal', `migrations in ${dir} must be numbered 0001, 0002, … without gaps; found ${mig.name} at position ${i + 1}`);
    }
  });
  if (migrations.length === 0) throw new MeshidError('internal', `no migrations found in ${dir}`);
  return migrations;
}

export function refuseNewerSchema(version: number, known: number, where: string): void {
  if (version > known) {
    throw new FailedPrecondition(
      `database ${where} has schema version ${version}, newer than the ${known} this meshid-server knows; ` +
      'run a meshid-server at least as new as the one that last wrote it, or point --datastore elsewhere',
      'schema_version');
  }
}

export function schemaVersion(db: Database.Database): number {
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null };
  return row.v ?? 0;
}

/**
 * Brings the database to the newest known version. Each migration runs in its own
 * IMMEDIATE transaction together with its schema_version row, so a failing
 * migration leaves the database at the previous version, and two processes opening
 * the same file at once apply each migration once.
 */
export function migrateSqlite(db: Database.Database, migrations: readonly Migration[], path: string, now: () => number): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  )`);
  const refuseNewer = (v: number): void => refuseNewerSchema(v, migrations.length, path);
  refuseNewer(schemaVersion(db));
  const record = db.prepare('INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)');
  for (const mig of migrations) {
    db.transaction(() => {
      const current = schemaVersion(db);
      refuseNewer(current);
      if (current >= mig.version) return; // another process applied it meanwhile
      try {
        db.exec(mig.sql);
      } catch (err) {
        throw new MeshidError('internal', `migration ${mig.name} failed: ${(err as Error).message}`, undefined, { cause: err });
      }
      record.run(mig.version, mig.name, Math.floor(now() / 1000));
    }).immediate();
  }
  return schemaVersion(db);
}
