/**
 * `meshid-server datastore backup`: SQLite's online backup of the datastore
 * file, consistent while a server writes to it (WAL readers see one snapshot),
 * checked and then moved into place, so FILE is whole or absent.
 */
import Database from 'better-sqlite3';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { DataLoss, FailedPrecondition } from '../../spiffe/index.js';
import { toMeshidError } from './core.js';

export interface BackupSummary { file: string; schemaVersion: number; revision: number; entries: number; agents: number; installationId: string }

export async function backupDatastore(source: string, file: string): Promise<BackupSummary> {
  if (!existsSync(source)) throw new FailedPrecondition(`no datastore at ${source}`, 'data_dir');
  if (existsSync(file)) throw new FailedPrecondition(`${file} exists; name a new file for the backup`, 'file');
  const tmp = `${file}.partial-${process.pid}`;
  let src: Database.Database | undefined;
  try {
    src = new Database(source, { readonly: true, fileMustExist: true });
    await src.backup(tmp);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw toMeshidError(err);
  } finally { src?.close(); }
  const copy = new Database(tmp, { readonly: true });
  try {
    const check = (copy.pragma('integrity_check(5)') as Record<string, string>[]).map((r) => String(Object.values(r)[0]));
    if (check.length !== 1 || check[0] !== 'ok') throw new DataLoss(`the backup of ${source} does not pass integrity_check (${check.join('; ')}): the datastore itself is damaged`);
    const one = <T>(sql: string): T => copy.prepare(sql).pluck().get() as T;
    const summary: BackupSummary = {
      file,
      schemaVersion: one<number>('SELECT MAX(version) FROM schema_version'),
      revision: one<number>("SELECT value FROM meta WHERE key = 'revision'"),
      entries: one<number>('SELECT COUNT(*) FROM registered_entries'),
      agents: one<number>('SELECT COUNT(*) FROM attested_nodes'),
      installationId: one<string | undefined>('SELECT installation_id FROM installation') ?? '',
    };
    copy.close();
    renameSync(tmp, file);
    return summary;
  } catch (err) {
    if (copy.open) copy.close();
    rmSync(tmp, { force: true });
    throw err;
  }
}
