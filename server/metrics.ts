/** The server's Prometheus metrics, in one place so /metrics and the code agree on names. */
import { MetricsRegistry, type Counter, type Gauge, type Histogram } from '../common/metrics.js';

export class ServerMetrics {
  readonly registry = new MetricsRegistry();
  readonly svidsSigned: Counter = this.registry.counter('meshid_server_svids_signed_total', 'SVIDs signed, by type (x509, jwt, agent).');
  readonly signingLatency: Histogram = this.registry.histogram('meshid_server_x509_svid_signing_seconds', 'Time to verify one CSR and sign its X509-SVID.', [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05]);
  readonly agentApiCalls: Counter = this.registry.counter('meshid_server_agent_api_calls_total', 'Agent API calls by method and gRPC status.');
  readonly agentApiLatency: Histogram = this.registry.histogram('meshid_server_agent_api_call_seconds', 'Agent API unary call latency by method.');
  readonly syncStreams: Gauge = this.registry.gauge('meshid_server_sync_streams', 'Open agent Sync streams.');
  readonly entries: Gauge = this.registry.gauge('meshid_server_entries', 'Registration entries.');
  readonly agents: Gauge = this.registry.gauge('meshid_server_agents', 'Attested agents, by state (active, banned).');
  readonly caRotations: Counter = this.registry.counter('meshid_server_ca_rotations_total', 'CA slot events by kind (x509, jwt) and event (prepared, activated, pruned).');
  readonly agentApiConnectionsRefused: Counter = this.registry.counter('meshid_server_agent_api_connections_refused_total', 'Agent API connections closed before TLS, by reason (source_limit, hello_timeout).');
  readonly agentRefusals: Counter = this.registry.counter('meshid_server_agent_refusals_total', 'Authenticated agent API calls refused with PermissionDenied (a claim on what is not the caller\'s), by method.');
  readonly agentClaimsOverridden: Counter = this.registry.counter('meshid_server_agent_claims_overridden_total', 'Node claims of agents that disagreed with the Kubernetes API, which won, by field.');
  readonly datastoreCorruption: Counter = this.registry.counter('meshid_server_datastore_corruption_total', 'Times the datastore was found corrupt, at start or by a call at run time (when).');
  readonly adminRequests: Counter = this.registry.counter('meshid_server_admin_requests_total', 'Admin API requests by route and HTTP status.');

  private readonly refreshers: (() => Promise<void>)[] = [];

  /** Runs before each scrape: gauges read from the datastore, which answers asynchronously. */
  onRefresh(fn: () => Promise<void>): void { this.refreshers.push(fn); }

  /** The exposition text, after every refresher ran (one that fails leaves its gauges as they were). */
  async render(): Promise<string> {
    await Promise.all(this.refreshers.map((fn) => fn().catch(() => undefined)));
    return this.registry.render();
  }
}
