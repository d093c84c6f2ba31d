import type { status as Status } from '@grpc/grpc-js';
import type { Counter, MetricsRegistry } from '../../common/metrics.js';
import { statusName } from './status.js';

export interface CallCount { method: string; code: string; count: number }

/**
 * Counters of the Workload API: calls by method and final status, open streams
 * and connections. Read directly (callCounts(), openStreams), or rendered by
 * the agent's /metrics when a registry is given.
 */
export class WorkloadApiMetrics {
  private readonly calls = new Map<string, CallCount>();
  private readonly callsTotal: Counter | undefined;
  /** Server streams (FetchX509SVID, FetchX509Bundles, FetchJWTBundles) open right now. */
  openStreams = 0;
  /** Connections accepted on the socket and still open. */
  openConnections = 0;
  /** Connections closed at accept: the process, or the socket, holds too many. */
  connectionsRefused = 0;
  /** Streams reset because their client stopped reading for longer than the deadline. */
  slowReadersClosed = 0;
  /** Reads the bytes held for stream clients now (set by the server). */
  bufferedBytes: () => number = () => 0;

  constructor(registry?: MetricsRegistry) {
    if (!registry) return;
    this.callsTotal = registry.counter('meshid_workload_api_calls_total', 'Workload API calls by method and final gRPC status.');
    const streams = registry.gauge('meshid_workload_api_streams', 'Workload API server streams open now.');
    streams.collect(() => streams.set(this.openStreams));
    const connections = registry.gauge('meshid_workload_api_connections', 'Connections to the Workload API socket open now.');
    connections.collect(() => connections.set(this.openConnections));
    const refused = registry.gauge('meshid_workload_api_connections_refused', 'Workload API connections closed at accept since start because their process (64) or the socket (8192) held too many.');
    refused.collect(() => refused.set(this.connectionsRefused));
    const slow = registry.gauge('meshid_workload_api_slow_readers_closed', 'Workload API streams reset since start because their client stopped reading past the deadline.');
    slow.collect(() => slow.set(this.slowReadersClosed));
    const buffered = registry.gauge('meshid_workload_api_buffered_bytes', 'Bytes of stream answers held for clients that have not read them yet (at most two answers a stream).');
    buffered.collect(() => buffered.set(this.bufferedBytes()));
  }

  countCall(method: string, code: Status): void {
    const name = statusName(code);
    const key = `${method} ${name}`;
    const c = this.calls.get(key);
    if (c) c.count++;
    else this.calls.set(key, { method, code: name, count: 1 });
    this.callsTotal?.inc({ method, code: name });
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
