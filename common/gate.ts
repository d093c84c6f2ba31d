/**
 * At most `slots` pieces of async work at a time; the rest wait their turn, first
 * come first served. For work that must not crowd out everything else on a
 * shared resource: a Sync stream's snapshot on the datastore, a query on the
 * PostgreSQL pool, when thousands of agents connect at once.
 */
export class Gate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`a gate needs at least one slot, not ${slots}`);
  }

  /** Work waiting for a slot. */
  get queued(): number { return this.waiting.length; }

  /**
   * Takes a slot, waiting for one if need be; with `timeoutMs`, a wait that long
   * gives up with `timeoutError()`. Every acquire that resolves needs one release().
   */
  acquire(timeoutMs?: number, timeoutError?: () => Error): Promise<void> {
    if (this.running < this.slots) { this.running++; return Promise.resolve(); }
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const go = (): void => { if (timer) clearTimeout(timer); resolve(); };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const i = this.waiting.indexOf(go);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(timeoutError?.() ?? new Error(`waited ${timeoutMs} ms for a slot`));
        }, timeoutMs);
      }
      this.waiting.push(go);
    });
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes on
    else this.running--;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
