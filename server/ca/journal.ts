import type { Datastore } from '../datastore/index.js';
import type { CaJournal, CaSlot } from './manager.js';

/** The CA journal in the server's datastore: one record per slot, `data` is the slot. */
export class DatastoreCaJournal implements CaJournal {
  constructor(private readonly store: Datastore) {}
  load(): CaSlot[] { return this.store.loadCaJournal().map((r) => ({ ...(r.data as CaSlot), kind: r.kind, id: r.id, state: r.state })); }
  save(slots: readonly CaSlot[]): void {
    this.store.saveCaJournal(slots.map((s) => ({ kind: s.kind, id: s.id, state: s.state, data: s })));
  }
}
