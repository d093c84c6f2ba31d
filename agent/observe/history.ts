/**
 * The last N flows of this node (Hubble keeps 4,095 per node), as the JSON
 * lines they are sent as: a fixed-size ring, so its memory is bounded by N
 * times the size of one flow's JSON (about 0.7 KB).
 */
export class FlowHistory {
  readonly capacity: number;
  readonly #lines: Array<string | undefined>;
  #next = 0;
  #size = 0;
  /** Flows ever added. */
  added = 0;

  constructor(capacity = 4096) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`flow history capacity must be a positive integer, not ${capacity}`);
    this.capacity = capacity;
    this.#lines = new Array(capacity);
  }

  get size(): number { return this.#size; }

  add(line: string): void {
    this.#lines[this.#next] = line;
    this.#next = (this.#next + 1) % this.capacity;
    if (this.#size < this.capacity) this.#size++;
    this.added++;
  }

  /** Oldest first; at most `last` of the newest. */
  lines(last = this.#size): string[] {
    const n = Math.min(last, this.#size);
    const out: string[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.#lines[(this.#next - n + i + this.capacity) % this.capacity]!;
    return out;
  }

  /** The characters held (the ring's payload; a JS string takes 1 or 2 bytes a character). */
  chars(): number {
    let n = 0;
    for (const l of this.#lines) n += l?.length ?? 0;
    return n;
  }
}
