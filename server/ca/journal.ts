import type { Datastore } from '../datastore/index.js';
import type { CaJournal, CaSlot } from './manager.js';

/** One server's CA journal in the datastore: one record per slot, `data` is the slot. */
export class DatastoreCaJournal implements CaJournal {
  /** `serverId` '': the journal of a single server from before servers had ids (tests, tools). */
  constructor(private readonly store: Datastore, private readonly serverId = '') {}
  async load(): Promise<CaSlot[]> {
    return (await this.store.loadCaJournal(this.serverId)).map((r) => ({ ...(r.data as CaSlot), kind: r.kind, id: r.id, state: r.state }));
  }
  save(slots: readonly CaSlot[]): Promise<void> {
    return this.store.saveCaJournal(slots.map((s) => ({ kind: s.kind, id: s.id, state: s.state, data: s })), this.serverId);
  }
}
