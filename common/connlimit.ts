/** Connections held per key (a source address, a process): one place that counts them in and out. */
export class ConnectionsPerKey {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Counts `socket` for `key` until it closes; false, counting nothing, when `key` holds `max` already. */
  admit(key: string, socket: { once(event: 'close', listener: () => void): unknown }): boolean {
    const held = this.counts.get(key) ?? 0;
    if (held >= this.max) return false;
    this.counts.set(key, held + 1);
    socket.once('close', () => {
      const n = (this.counts.get(key) ?? 1) - 1;
      if (n <= 0) this.counts.delete(key); else this.counts.set(key, n);
    });
    return true;
  }

  held(key: string): number { return this.counts.get(key) ?? 0; }
}
