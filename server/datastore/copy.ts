/**
 * `meshid-server datastore migrate --from URL --to URL`: every table of one
 * datastore copied into another (SQLite → PostgreSQL, to go from one server to
 * several; or back), read from one snapshot and written in one transaction, so
 * the copy is whole or absent. The target must be empty. CA keys are not in the
 * datastore: a server started on the copy with the same data dir (its
 * server_id and keys/) is the same server, and its agents need not attest again.
 */
import { FailedPrecondition, type TrustDomain } from '../../spiffe/index.js';
import { Datastore } from './datastore.js';
import type { Queryable, SqlParam } from './engine.js';

/** Tables in an order that satisfies their foreign keys. */
const TABLES = [
  'installation', 'changes', 'registered_entries', 'entry_selectors', 'entry_dns_names', 'entry_federates_with', 'bundles',
  'attested_nodes', 'attested_node_selectors', 'join_tokens', 'servers', 'ca_journal', 'identities', 'nodes', 'endpoints', 'policies',
] as const;

export interface CopySummary { from: string; to: string; rows: Record<string, number>; revision: number }

export async function copyDatastore(from: string, to: string, trustDomain: TrustDomain, log: (line: string) => void = () => undefined): Promise<CopySummary> {
  const source = await Datastore.open({ url: from, trustDomain });
  try {
    const target = await Datastore.open({ url: to, trustDomain });
    try {
      if (source.schemaVersion !== target.schemaVersion) {
        throw new FailedPrecondition(`source schema ${source.schemaVersion} and target schema ${target.schemaVersion} differ`, 'to');
      }
      if (await target.hasData() || await target.installation() || (await target.listServers()).length > 0) {
        throw new FailedPrecondition(`target ${target.location} is not empty; migrate into a new, empty database`, 'to');
      }
      const snapshot = await source.readRows(async (q) => {
        const rows: Record<string, Record<string, unknown>[]> = {};
        for (const table of TABLES) rows[table] = await q.all(`SELECT * FROM ${table}`);
        rows['meta'] = await q.all('SELECT key, value FROM meta');
        return rows;
      });
      await target.writeRows(async (tx) => {
        for (const table of TABLES) {
          for (const row of snapshot[table]!) await insert(tx, table, row);
          log(`copied ${table}: ${snapshot[table]!.length} rows`);
        }
        for (const m of snapshot['meta']!) {
          await tx.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', String(m.key), Number(m.value));
        }
        if (target.engine === 'postgres') {
          // registered_entries.pk is an identity column: its sequence goes on after the copied keys
          await tx.run("SELECT setval(pg_get_serial_sequence('registered_entries', 'pk'), GREATEST((SELECT MAX(pk) FROM registered_entries), 1))");
        }
      });
      const rows = Object.fromEntries(TABLES.map((t) => [t, snapshot[t]!.length]));
      return { from: source.location, to: target.location, rows, revision: await target.currentRevision() };
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

async function insert(tx: Queryable, table: string, row: Record<string, unknown>): Promise<void> {
  const cols = Object.keys(row);
  const values = cols.map((c) => row[c] as SqlParam);
  await tx.run(`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`, ...values);
}
