/** Time, passed in through constructors so tests can drive it. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** A clock that only moves when told to. */
export class FakeClock implements Clock {
  private t: number;
  constructor(start: Date | number = Date.UTC(2026, 0, 1)) { this.t = typeof start === 'number' ? start : start.getTime(); }
  now(): Date { return new Date(this.t); }
  advance(ms: number): void { this.t += ms; }
  set(d: Date): void { this.t = d.getTime(); }
}
