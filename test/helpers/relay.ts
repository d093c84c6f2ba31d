/**
 * A relay over real sockets for tests: the agent API (TLS gRPC) with a RelayHub,
 * the admin API (HTTP) reading it, and agents that attest, publish their node
 * and relay through their own SVIDs (agent/observe's FlowRelay).
 */
import { randomBytes } from 'node:crypto';
import { FlowHistory, FlowRelay } from '../../agent/observe/index.js';
import { ServerConnection } from '../../agent/serverapi/index.js';
import type { Flow } from '../../api/flow.js';
import { JsonLogger, MemoryLogSink, silentLogger } from '../../common/log.js';
import { AdminApi } from '../../server/adminapi/index.js';
import { RelayHub } from '../../server/observe/index.js';
import { Registration } from '../../server/registration/index.js';
import { attestAgent, call, startServerParts, type ServerParts } from './server.js';

export const RELAY_TOKEN = 'relay-test-admin-token-0123456789';

export interface RelayAgent { relay: FlowRelay; history: FlowHistory; conn: ServerConnection; node: string; stop(): void }

export interface RelayFixture {
  parts: ServerParts;
  hub: RelayHub;
  /** The admin API's base URL. */
  url: string;
  /** An attested agent that published its node `name` (pod CIDR `cidr`), relaying `history` first. */
  agent(name: string, cidr: string, history: string[], explain?: (q: URLSearchParams) => Record<string, unknown>): Promise<RelayAgent>;
  stop(): Promise<void>;
}

export async function startRelay(): Promise<RelayFixture> {
  const hub = new RelayHub({ logger: silentLogger, historyPerNode: 64, explainTimeoutMs: 2000 });
  const parts = await startServerParts({ agentApi: { relay: hub } });
  const admin = new AdminApi({
    bind: '127.0.0.1:0', store: parts.store, ca: parts.ca, metrics: parts.metrics, clock: parts.clock,
    registration: new Registration({ datastore: parts.store, trustDomain: parts.td, now: () => Date.now() }),
    logger: new JsonLogger(new MemoryLogSink(), 'debug'), authToken: RELAY_TOKEN, ready: () => true, relay: hub,
  });
  const url = `http://127.0.0.1:${await admin.start()}`;
  const agent: RelayFixture['agent'] = async (name, cidr, history, explain = () => ({ applies: false })) => {
    const a = await attestAgent(parts);
    await call(a.client, 'PublishNode', { name, address: `192.0.2.${cidr.split('.')[1]}`, wireguard_public_key: randomBytes(32).toString('base64'), pod_cidr: cidr });
    const conn = new ServerConnection(`127.0.0.1:${parts.port}`, parts.td);
    conn.configure(parts.ca.bundle().x509Authorities, { chain: a.chain, key: a.key.privateKey });
    const h = new FlowHistory(32);
    for (const l of history) h.add(l);
    const relay = new FlowRelay({
      connection: conn, history: h, logger: silentLogger, flushMs: 10, observationMs: 200,
      observation: () => ({
        auth_entries_json: JSON.stringify([{ local_identity: 1002, local_spiffe_id: 'spiffe://example.org/ns/demo/sa/backend', remote_identity: 1001, remote_spiffe_id: 'spiffe://example.org/ns/demo/sa/frontend', remote_node_id: 1, remote_node: 'other', auth_type: 'mutual', expires_at: '2026-12-05T13:00:00.000Z' }]),
        counters: [{ reason: 'auth required', direction: 'ingress', packets: 3, bytes: 180 }], lost_in_ring: 2,
      }),
      explain,
    });
    relay.start();
    return { relay, history: h, conn, node: name, stop: () => { relay.stop(); conn.close(); a.client.close(); } };
  };
  return { parts, hub, url, agent, async stop() { await admin.stop(); await parts.stop(); } };
}

let flowSeq = 0;
/** A flow as an agent writes it (time first), `ms` after a fixed start. */
export function testFlow(node: string, opts: { ms: number; verdict?: 'FORWARDED' | 'DROPPED'; ns?: string; pod?: string; dstPod?: string; port?: number }): string {
  const f: Flow = {
    time: new Date(Date.UTC(2026, 11, 5, 12, 0, 0) + opts.ms).toISOString(),
    uuid: `00000000-0000-4000-8000-${String(++flowSeq).padStart(12, '0')}`,
    verdict: opts.verdict ?? 'FORWARDED',
    ...(opts.verdict === 'DROPPED' ? { drop_reason: 189, drop_reason_desc: 'AUTH_REQUIRED', auth_required_by: [{ name: 'backend-mtls', namespace: opts.ns ?? 'demo', kind: 'CiliumNetworkPolicy' }] } : {}),
    auth_type: 'SPIRE',
    IP: { source: '10.1.0.2', destination: '10.2.0.3', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 40000 + flowSeq, destination_port: opts.port ?? 8080 } },
    source: { identity: 1001, namespace: opts.ns ?? 'demo', labels: ['k8s:app=frontend'], pod_name: opts.pod ?? 'frontend' },
    destination: { identity: 1002, namespace: opts.ns ?? 'demo', labels: ['k8s:app=backend'], pod_name: opts.dstPod ?? 'backend' },
    Type: 'L3_L4', node_name: node, event_type: { type: opts.verdict === 'DROPPED' ? 1 : 4 }, traffic_direction: 'INGRESS', is_reply: false, Summary: 'TCP',
  };
  return JSON.stringify(f);
}

export async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
