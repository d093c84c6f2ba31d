import { FailedPrecondition, InvalidArgument } from '../../spiffe/index.js';
import type { Core, Queryable, Tx } from './core.js';
import type { CaJournalRecord } from './types.js';

const KINDS = new Set(['x509', 'jwt']);
const STATES = new Set(['prepared', 'active', 'old']);

/** The CA's key and authority records, loaded in the order they were saved. The CA module owns what `data` means. */
export class CaJournalStore {
  constructor(private readonly core: Core) {}

  /** One server's records ('' : those of a single server from before servers had ids). */
  async load(q: Queryable, serverId: string): Promise<CaJournalRecord[]> {
    const rows = await q.all<{ kind: CaJournalRecord['kind']; id: string; state: CaJournalRecord['state']; data: string }>(
      'SELECT kind, id, state, data FROM ca_journal WHERE server_id = ? ORDER BY position', serverId);
    return rows.map((r) => ({ kind: r.kind, id: r.id, state: r.state, data: JSON.parse(r.data) as unknown }));
  }

  static check(records: readonly CaJournalRecord[]): void {
    records.forEach((r, i) => {
      if (!KINDS.has(r.kind)) throw new InvalidArgument('kind must be x509 or jwt', `records[${i}].kind`);
      if (!STATES.has(r.state)) throw new InvalidArgument('state must be prepared, active or old', `records[${i}].state`);
      if (typeof r.id !== 'string' || r.id === '') throw new InvalidArgument('id is empty', `records[${i}].id`);
      if (r.data === undefined) throw new InvalidArgument('data is missing', `records[${i}].data`);
    });
  }

  /** Replaces one server's whole journal in one transaction: a crash leaves either the old or the new one. */
  async save(tx: Tx, serverId: string, records: readonly CaJournalRecord[]): Promise<void> {
    CaJournalStore.check(records);
    await tx.run('DELETE FROM ca_journal WHERE server_id = ?', serverId);
    const now = this.core.nowSeconds();
    for (const [i, r] of records.entries()) {
      try {
        await tx.run('INSERT INTO ca_journal (kind, id, state, data, position, updated_at, server_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
          r.kind, r.id, r.state, JSON.stringify(r.data), i, now, serverId);
      } catch (err) {
        if (this.core.isConstraint(err, 'UNIQUE') || this.core.isConstraint(err, 'PRIMARYKEY')) {
          throw new FailedPrecondition(`journal holds two ${r.kind} records with id ${r.id} or two in state ${r.state}`, `records[${i}]`);
        }
        throw err;
      }
    }
  }
}
