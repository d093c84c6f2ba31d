import { endianness } from 'node:os';
import { join } from 'node:path';
import { decodeEvent, decodeSignal, type AuthPair, type FlowEvent } from './layouts.js';
import { MapName } from './maps.js';
import { loadNative, type NativeBpf, type RingHandle } from './native.js';

export interface RingReaderOptions {
  /** Where the datapath's maps are pinned (Datapath.pinDir). */
  readonly pinDir: string;
  /** Gets what a handler threw, or a record that did not decode; default: a process warning. */
  readonly onError?: (err: Error) => void;
  /** The kernel calls; default the addon in bpf/native. */
  readonly native?: Pick<NativeBpf, 'ringOpen' | 'ringClose'>;
}

/**
 * The records of one batch the addon hands over: each a u32 length (native
 * order), its bytes, and padding to 4 bytes (see meshid_bpf.c, ringOpen).
 */
export function* ringRecords(batch: Buffer): Generator<Buffer> {
  let off = 0;
  while (off + 4 <= batch.length) {
    const len = LE ? batch.readUInt32LE(off) : batch.readUInt32BE(off);
    if (off + 4 + len > batch.length) throw new Error(`ring batch: a record of ${len} bytes runs past the batch`);
    yield batch.subarray(off + 4, off + 4 + len);
    off += 4 + ((len + 3) & ~3);
  }
}

/** Packs records as the addon hands them over (for tests that inject the ring calls). */
export function ringBatch(records: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const head = Buffer.alloc(4);
    if (LE) head.writeUInt32LE(r.length); else head.writeUInt32BE(r.length);
    parts.push(head, r, Buffer.alloc((4 - (r.length % 4)) % 4));
  }
  return Buffer.concat(parts);
}

const LE = endianness() === 'LE';

/** Delivers each record of a pinned ring buffer, on the event loop (no polling timer, no thread). */
class RingReader<T> {
  readonly #path: string;
  readonly #decode: (record: Buffer) => T;
  readonly #handler: (value: T) => void;
  readonly #onError: (err: Error) => void;
  readonly #native: Pick<NativeBpf, 'ringOpen' | 'ringClose'>;
  #ring: RingHandle | undefined;

  readonly #pollMs: number;

  /** `pollMs`: also read this often (a ring whose writer wakes its reader only for a batch); 0: on wakeups only. */
  constructor(path: string, decode: (record: Buffer) => T, handler: (value: T) => void, options: RingReaderOptions, pollMs = 0) {
    this.#path = path;
    this.#pollMs = pollMs;
    this.#native = options.native ?? loadNative();
    this.#decode = decode;
    this.#handler = handler;
    this.#onError = options.onError ?? ((err) => process.emitWarning(err));
  }

  get running(): boolean { return this.#ring !== undefined; }

  start(): void {
    if (this.#ring) return;
    this.#ring = this.#native.ringOpen(this.#path, (batch) => {
      for (const record of ringRecords(batch)) {
        try {
          this.#handler(this.#decode(record));
        } catch (err) {
          this.#onError(err instanceof Error ? err : new Error(String(err)));
        }
      }
    }, this.#pollMs);
  }

  /** No record is delivered after this returns; records not read yet stay in the ring. */
  stop(): void {
    if (!this.#ring) return;
    this.#native.ringClose(this.#ring);
    this.#ring = undefined;
  }
}

/**
 * Reads `meshid_signals`: each pair that a packet needed authentication for and
 * had no valid auth entry (at most one per pair per second).
 */
export class SignalReader {
  readonly #reader: RingReader<AuthPair>;

  constructor(options: RingReaderOptions, onSignal: (pair: AuthPair) => void) {
    this.#reader = new RingReader(join(options.pinDir, MapName.signals), decodeSignal, onSignal, options);
  }

  get running(): boolean { return this.#reader.running; }
  start(): void { this.#reader.start(); }
  stop(): void { this.#reader.stop(); }
}

/**
 * How often `meshid_events` is read besides its wakeups: the datapath wakes the
 * reader only once 64 KiB wait (bpf/lib/events.h), so a lone event is read
 * within this time.
 */
export const EVENTS_POLL_MS = 25;

/** Reads `meshid_events`: every drop, and each new forwarded flow when tracing is on. */
export class EventReader {
  readonly #reader: RingReader<FlowEvent>;

  constructor(options: RingReaderOptions, onEvent: (event: FlowEvent) => void) {
    this.#reader = new RingReader(join(options.pinDir, MapName.events), decodeEvent, onEvent, options, EVENTS_POLL_MS);
  }

  get running(): boolean { return this.#reader.running; }
  start(): void { this.#reader.start(); }
  stop(): void { this.#reader.stop(); }
}
