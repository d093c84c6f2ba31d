import { FailedPrecondition, InvalidArgument } from '../../spiffe/errors.js';
import { type Core, isConstraint } from './core.js';
import type { CaJournalRecord } from './types.js';

const KINDS = new Set(['x509', 'jwt']);
const STATES = new Set(['prepared', 'active', 'old']);

/** The CA's key and authority records, loaded in the order they were saved. The CA module owns what `data` means. */
export class CaJournalStore {
  constructor(private readonly core: Core) {}

  load(): CaJournalRecord[] {
    const rows = this.core.stmt('SELECT kind, id, state, data FROM ca_journal ORDER BY position').all() as
      { kind: CaJournalRecord['kind']; id: string; state: CaJournalRecord['state']; data: string }[];
    return rows.map((r) => ({ kind: r.kind, id: r.id, state: r.state, data: JSON.parse(r.data) as unknown }));
  }

  /** Replaces the whole journal in one transaction: a crash leaves either the old or the new one. */
  save(records: readonly CaJournalRecord[]): void {
    records.forEach((r, i) => {
      if (!KINDS.has(r.kind)) throw new InvalidArgument('kind must be x509 or jwt', `records[${i}].kind`);
      if (!STATES.has(r.state)) throw new InvalidArgument('state must be prepared, active or old', `records[${i}].state`);
      if (typeof r.id !== 'string' || r.id === '') throw new InvalidArgument('id is empty', `records[${i}].id`);
      if (r.data === undefined) throw new InvalidArgument('data is missing', `records[${i}].data`);
    });
    this.core.write(() => {
      this.core.stmt('DELETE FROM ca_journal').run();
      const ins = this.core.stmt('INSERT INTO ca_journal (kind, id, state, data, position, updated_at) VALUES (?, ?, ?, ?, ?, ?)');
      const now = this.core.nowSeconds();
      records.forEach((r, i) => {
        try {
          ins.run(r.kind, r.id, r.state, JSON.stringify(r.data), i, now);
        } catch (err) {
          if (isConstraint(err, 'UNIQUE') || isConstraint(err, 'PRIMARYKEY')) {
            throw new FailedPrecondition(`journal holds two ${r.kind} records with id ${r.id} or two in state ${r.state}`, `records[${i}]`);
          }
          throw err;
        }
      });
    });
  }
}
