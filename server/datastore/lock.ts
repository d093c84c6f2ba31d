import { Unavailable } from '../../spiffe/index.js';

/**
 * A mutex for async work, first come first served, that a waiter gives up on
 * after `timeoutMs` (Unavailable, like SQLite's busy timeout), so a caller that
 * waits on work it holds itself fails instead of hanging.
 */
export class AsyncLock {
  private held = false;
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly timeoutMs: number, private readonly what: string) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held) await this.wait();
    else this.held = true;
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next(); // the lock passes on held
      else this.held = false;
    }
  }

  private wait(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(go);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Unavailable(`${this.what} is busy: waited ${this.timeoutMs} ms for the connection`));
      }, this.timeoutMs);
      const go = (): void => { clearTimeout(timer); resolve(); };
      this.waiters.push(go);
    });
  }
}
