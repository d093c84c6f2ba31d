import { type ErrorCode, InvalidArgument, MeshidError, type TrustDomain } from '../../spiffe/index.js';
import type { Datastore, EntrySpec, ListEntriesOptions, Page, RegistrationEntry } from '../datastore/index.js';
import { type EntryJson, entryToJson } from './json.js';
import {
  DEFAULT_LIMITS, type RegistrationLimits, type ValidationContext, entryId, parseEntryInput, parseEntryPatch,
  parseListEntriesInput, refuseSelfParent,
} from './validate.js';

export interface RegistrationOptions {
  datastore: Datastore;
  trustDomain: TrustDomain;
  limits?: Partial<RegistrationLimits>;
  /** Milliseconds since the epoch. */
  now?: () => number;
}

/** The outcome of one item of a batch, ready to be sent as JSON (SPIRE's BatchCreateEntry shape). */
export interface BatchEntryResult {
  status: { code: 'ok' | ErrorCode; message: string; field?: string };
  /** The created entry, or the deleted one. */
  entry?: EntryJson;
  /** For deletes: the id the item asked for. */
  id?: string;
}

function failed(err: unknown): BatchEntryResult['status'] {
  const e = err instanceof MeshidError ? err : new MeshidError('internal', String(err));
  return e.field === undefined ? { code: e.code, message: e.message } : { code: e.code, message: e.message, field: e.field };
}

const OK = { code: 'ok' as const, message: 'OK' };

/**
 * Turns admin input (JSON from the REST API or the CLI) into registration entries:
 * checks every rule, naming the JSON field that breaks it, then writes through the
 * datastore.
 */
export class Registration {
  readonly limits: RegistrationLimits;
  private readonly datastore: Datastore;
  private readonly trustDomain: TrustDomain;
  private readonly now: () => number;

  constructor(opts: RegistrationOptions) {
    this.datastore = opts.datastore;
    this.trustDomain = opts.trustDomain;
    this.now = opts.now ?? Date.now;
    this.limits = Object.freeze({ ...DEFAULT_LIMITS, ...definedOnly(opts.limits ?? {}) });
    for (const [key, value] of Object.entries(this.limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgument(`${key} must be a whole number of seconds >= 1`, key);
    }
  }

  private context(): ValidationContext {
    return { trustDomain: this.trustDomain, limits: this.limits, now: Math.floor(this.now() / 1000) };
  }

  /** Validates a create request without writing. */
  parseEntry(input: unknown): EntrySpec {
    return parseEntryInput(input, this.context());
  }

  createEntry(input: unknown): Promise<RegistrationEntry> {
    return this.datastore.createEntry(this.parseEntry(input));
  }

  /** Partial update: fields left out keep their value. */
  async updateEntry(id: unknown, input: unknown): Promise<RegistrationEntry> {
    const entryIdValue = entryId(id);
    const patch = parseEntryPatch(input, entryIdValue, this.context());
    if (patch.spiffeId || patch.parentId) {
      const current = await this.datastore.getEntry(entryIdValue);
      refuseSelfParent(patch.spiffeId ?? current.spiffeId, patch.parentId ?? current.parentId);
    }
    return this.datastore.updateEntry(entryIdValue, patch);
  }

  getEntry(id: unknown): Promise<RegistrationEntry> {
    return this.datastore.getEntry(entryId(id));
  }

  deleteEntry(id: unknown): Promise<RegistrationEntry> {
    return this.datastore.deleteEntry(entryId(id));
  }

  listEntries(filter: unknown): Promise<Page<RegistrationEntry>> {
    return this.datastore.listEntries(this.parseListFilter(filter));
  }

  parseListFilter(filter: unknown): ListEntriesOptions {
    return parseListEntriesInput(filter);
  }

  /** Each item gets its own status; the valid ones are created (in one transaction). */
  async batchCreateEntries(inputs: unknown): Promise<BatchEntryResult[]> {
    if (!Array.isArray(inputs)) throw new InvalidArgument('entries must be an array', 'entries');
    const results: BatchEntryResult[] = new Array(inputs.length);
    const valid: { index: number; spec: EntrySpec }[] = [];
    inputs.forEach((input, index) => {
      try {
        valid.push({ index, spec: this.parseEntry(input) });
      } catch (err) {
        results[index] = { status: failed(err) };
      }
    });
    const created = await this.datastore.batchCreateEntries(valid.map((v) => v.spec));
    created.forEach((r, i) => {
      results[valid[i]!.index] = r.ok ? { status: OK, entry: entryToJson(r.value) } : { status: failed(r.error) };
    });
    return results;
  }

  /** Each id gets its own status; the ones that exist are deleted (in one transaction). */
  async batchDeleteEntries(ids: unknown): Promise<BatchEntryResult[]> {
    if (!Array.isArray(ids)) throw new InvalidArgument('ids must be an array', 'ids');
    const results: BatchEntryResult[] = new Array(ids.length);
    const valid: { index: number; id: string }[] = [];
    ids.forEach((raw, index) => {
      try {
        valid.push({ index, id: entryId(raw, `ids[${index}]`) });
      } catch (err) {
        results[index] = { status: failed(err), ...(typeof raw === 'string' ? { id: raw } : {}) };
      }
    });
    const deleted = await this.datastore.batchDeleteEntries(valid.map((v) => v.id));
    deleted.forEach((r, i) => {
      const { index, id } = valid[i]!;
      results[index] = r.ok ? { status: OK, id, entry: entryToJson(r.value) } : { status: failed(r.error), id };
    });
    return results;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
