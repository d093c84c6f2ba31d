import { status as Status } from '@grpc/grpc-js';
import { statusName } from './status.js';

export interface CallCount { method: string; code: string; count: number }

/** Counters the agent's /metrics reads: calls by method and final status, and open streams. */
export class WorkloadApiMetrics {
  private readonly calls = new Map<string, CallCount>();
  /** Server streams (FetchX509SVID, FetchX509Bundles, FetchJWTBundles) open right now. */
  openStreams = 0;
  /** Connections accepted on the socket and still open. */
  openConnections = 0;

  countCall(method: string, code: Status): void {
    const name = statusName(code);
    const key = `${method} ${name}`;
    const c = this.calls.get(key);
    if (c) c.count++;
    else this.calls.set(key, { method, code: name, count: 1 });
  }

  /** Every (method, code) seen so far, sorted. */
  callCounts(): CallCount[] {
    return [...this.calls.values()].map((c) => ({ ...c })).sort((a, b) => a.method.localeCompare(b.method) || a.code.localeCompare(b.code));
  }

  /** The count for one method and code name ("OK", "PERMISSION_DENIED"); 0 if never seen. */
  count(method: string, code: string): number {
    return this.calls.get(`${method} ${code}`)?.count ?? 0;
  }
}
