/**
 * At most `slots` pieces of async work at a time; the rest wait their turn, first
 * come first served, without a deadline of their own. For work that must not
 * crowd out everything else on a shared resource (a Sync stream's snapshot on
 * the datastore's connections, when thousands of agents connect at once).
 */
export class Gate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`a gate needs at least one slot, not ${slots}`);
  }

  /** Work waiting for a slot. */
  get queued(): number { return this.waiting.length; }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.slots) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes on
      else this.running--;
    }
  }
}
