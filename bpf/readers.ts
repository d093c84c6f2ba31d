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

/** Delivers each record of a pinned ring buffer, on the event loop (no polling timer, no thread). */
class RingReader<T> {
  readonly #path: string;
  readonly #decode: (record: Buffer) => T;
  readonly #handler: (value: T) => void;
  readonly #onError: (err: Error) => void;
  readonly #native: Pick<NativeBpf, 'ringOpen' | 'ringClose'>;
  #ring: RingHandle | undefined;

  constructor(path: string, decode: (record: Buffer) => T, handler: (value: T) => void, options: RingReaderOptions) {
    this.#path = path;
    this.#native = options.native ?? loadNative();
    this.#decode = decode;
    this.#handler = handler;
    this.#onError = options.onError ?? ((err) => process.emitWarning(err));
  }

  get running(): boolean { return this.#ring !== undefined; }

  start(): void {
    if (this.#ring) return;
    this.#ring = this.#native.ringOpen(this.#path, (record) => {
      try {
        this.#handler(this.#decode(record));
      } catch (err) {
        this.#onError(err instanceof Error ? err : new Error(String(err)));
      }
    });
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

/** Reads `meshid_events`: every drop, and each new forwarded flow when tracing is on. */
export class EventReader {
  readonly #reader: RingReader<FlowEvent>;

  constructor(options: RingReaderOptions, onEvent: (event: FlowEvent) => void) {
    this.#reader = new RingReader(join(options.pinDir, MapName.events), decodeEvent, onEvent, options);
  }

  get running(): boolean { return this.#reader.running; }
  start(): void { this.#reader.start(); }
  stop(): void { this.#reader.stop(); }
}
