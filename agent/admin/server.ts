/**
 * The agent's admin API: HTTP on a Unix socket (root-only, mode 0600), read by
 * `meshid auth list`, `meshid observe` and `meshid explain`.
 *   GET /v1/status     node, identity, sync state
 *   GET /v1/auth       the auth map, with the SPIFFE IDs of each pair
 *   GET /v1/observe    datapath events as NDJSON, live (filters: verdict, identity, namespace)
 *   GET /v1/explain    ?from=POD|IP&to=POD|IP&port=N&protocol=TCP
 *   GET    /v1/endpoints              this node's endpoints and their readiness
 *   POST   /v1/endpoints[?wait=S]     add one (a CNI's ADD): {name, namespace, service_account, labels, ip, interface};
 *                                     with wait, answers when it is ready (200) or after S seconds (504)
 *   DELETE /v1/endpoints/IP           remove one (a CNI's DEL)
 *   GET    /v1/endpoints/IP[?wait=S]  its readiness (200 ready, 503 not yet), waiting up to S seconds
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { AuthType, bootNsToWallClock, type AuthPair, type FlowEvent } from '../../bpf/index.js';
import { errorResponse } from '../../common/httpstatus.js';
import { FailedPrecondition, InvalidArgument, ResourceExhausted } from '../../spiffe/index.js';
import type { LocalEndpoints } from '../endpoints.js';
import type { AgentState } from '../sync/index.js';

/**
 * What the admin socket reads of the running agent: a narrow, read-only view,
 * declared here and handed over by the agent, so the admin server reaches into
 * none of the agent's parts.
 */
export interface AgentAdminView {
  readonly nodeName: string;
  /** The registry as synced; read, never written. */
  readonly state: Pick<AgentState, 'localNodeId' | 'revision' | 'entries' | 'identities' | 'endpoints' | 'nodes'>;
  /** The agent's own SPIFFE ID, the Sync state, the server in use and the X509-SVIDs held. */
  identity(): { spiffeId: string; sync: unknown; server: string; svids: number };
  wireguard(): { device: string; public_key: string } | null;
  discoveredInterfaces(): Record<string, unknown> | null;
  mutualAuthStats(): unknown;
  /** The auth map's entries; none without a datapath. */
  authEntries(): Iterable<{ pair: AuthPair; expiresAtBootNs: bigint }>;
  explain(q: URLSearchParams): Record<string, unknown>;
  /** This node's endpoints, where the agent manages them. */
  endpoints(): Pick<LocalEndpoints, 'list' | 'add' | 'remove' | 'waitReady'> | undefined;
  /** Calls `listener` with every datapath event until the returned function is called. */
  onFlowEvent(listener: (e: FlowEvent) => void): () => void;
}

export interface ObservedFlow {
  time: string;
  verdict: 'FORWARDED' | 'DROPPED';
  drop_reason_desc?: string;
  direction: 'INGRESS' | 'EGRESS';
  node: string;
  source: FlowPeer;
  destination: FlowPeer;
  protocol: string;
  auth_type: 'SPIRE' | 'DISABLED';
}
interface FlowPeer { ip: string; port: number; identity: number; namespace?: string; pod?: string; labels?: string[] }

/** The largest request body (one endpoint). */
const MAX_BODY_BYTES = 64 * 1024;
/** The longest ?wait= (seconds). */
const MAX_WAIT_SECONDS = 300;

function waitParam(url: URL): number {
  const v = url.searchParams.get('wait');
  if (v === null) return 0;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > MAX_WAIT_SECONDS) throw new InvalidArgument(`wait must be seconds from 0 to ${MAX_WAIT_SECONDS}, not "${v}"`, 'wait');
  return n * 1000;
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size <= MAX_BODY_BYTES) chunks.push(d); // past the limit the rest is read and dropped, so the answer can still be sent
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) { reject(new ResourceExhausted(`the request body is larger than ${MAX_BODY_BYTES} bytes`, 'body')); return; }
      try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))); } catch (err) { reject(new InvalidArgument(`the body is not JSON: ${(err as Error).message}`, 'body')); }
    });
    req.on('error', reject);
  });
}

const PROTO: Record<number, string> = { 1: 'ICMPv4', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };


export class AgentAdminServer {
  private server: Server | undefined;
  private readonly streams = new Set<ServerResponse>();

  constructor(private readonly agent: AgentAdminView, private readonly socketPath: string) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.socketPath), { recursive: true });
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
    const server = createServer((req, res) => this.route(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(this.socketPath, () => resolve()); });
    chmodSync(this.socketPath, 0o600);
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.end();
    this.streams.clear();
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://agent');
    try {
      if (url.pathname === '/v1/endpoints' || url.pathname.startsWith('/v1/endpoints/')) {
        this.endpointRoute(req, url, res).catch((err: unknown) => { const { status, body } = errorResponse(err); this.json(res, status, body); });
        return;
      }
      if (req.method !== 'GET') return this.json(res, 405, { error: { code: 'method_not_allowed', message: 'GET only' } });
      switch (url.pathname) {
        case '/v1/status': return this.json(res, 200, this.status());
        case '/v1/auth': return this.json(res, 200, { node: this.agent.nodeName, entries: this.authEntries() });
        case '/v1/observe': return this.observe(url, res);
        case '/v1/explain': return this.json(res, 200, this.agent.explain(url.searchParams));
        default: return this.json(res, 404, { error: { code: 'not_found', message: `no route ${url.pathname}` } });
      }
    } catch (err) {
      const { status, body } = errorResponse(err);
      this.json(res, status, body);
    }
  }

  private status(): Record<string, unknown> {
    const a = this.agent;
    const id = a.identity();
    const interfaces = a.discoveredInterfaces();
    return {
      node: a.nodeName, node_id: a.state.localNodeId, spiffe_id: id.spiffeId,
      sync: id.sync, server: id.server, revision: a.state.revision, svids: id.svids, entries: a.state.entries.size,
      identities: a.state.identities.size, endpoints: a.state.endpoints.size, nodes: a.state.nodes.size,
      wireguard: a.wireguard(),
      datapath: interfaces ? { discovered_interfaces: interfaces } : null,
      mutual_auth: a.mutualAuthStats() ?? null,
    };
  }

  private async endpointRoute(req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
    const endpoints = this.agent.endpoints();
    if (!endpoints) throw new FailedPrecondition('this agent manages no endpoints (no node section in its config)', 'endpoints');
    const waitMs = waitParam(url);
    const ip = url.pathname === '/v1/endpoints' ? undefined : decodeURIComponent(url.pathname.slice('/v1/endpoints/'.length));
    if (ip === undefined && req.method === 'GET') return this.json(res, 200, { endpoints: endpoints.list() });
    if (ip === undefined && req.method === 'POST') {
      const added = await endpoints.add(await readJson(req));
      if (waitMs === 0) return this.json(res, 201, added);
      const s = await endpoints.waitReady(added.ip, waitMs);
      return this.json(res, s.ready ? 200 : 504, s);
    }
    if (ip !== undefined && req.method === 'DELETE') {
      await endpoints.remove(ip);
      return this.json(res, 200, { removed: ip });
    }
    if (ip !== undefined && req.method === 'GET') {
      const s = await endpoints.waitReady(ip, waitMs);
      return this.json(res, s.ready ? 200 : 503, s);
    }
    res.setHeader('allow', ip === undefined ? 'GET, POST' : 'GET, DELETE');
    return this.json(res, 405, { error: { code: 'method_not_allowed', message: `${req.method} is not allowed on ${url.pathname}` } });
  }

  private authEntries(): Record<string, unknown>[] {
    const a = this.agent;
    const name = (id: number): string | null => a.state.identities.get(id)?.spiffeId.toString() ?? null;
    return [...a.authEntries()].map(({ pair, expiresAtBootNs: expiresBootNs }) => ({
      local_identity: pair.localIdentity, local_spiffe_id: name(pair.localIdentity),
      remote_identity: pair.remoteIdentity, remote_spiffe_id: name(pair.remoteIdentity),
      remote_node_id: pair.remoteNodeId, remote_node: pair.remoteNodeId === 0 ? a.nodeName : (a.state.nodes.get(pair.remoteNodeId)?.name ?? null),
      auth_type: pair.authType === AuthType.mutual ? 'mutual' : String(pair.authType),
      expires_at: bootNsToWallClock(expiresBootNs).toISOString(),
    }));
  }

  /** A Hubble-like flow record, each side named from the endpoints and identities the agent knows. */
  describe(e: FlowEvent): ObservedFlow {
    const a = this.agent;
    const side = (ip: string, port: number, identity: number): FlowPeer => {
      const ep = a.state.endpoints.get(ip);
      const labels = Object.entries(a.state.identities.get(identity)?.labels ?? {}).map(([k, v]) => `k8s:${k}=${v}`);
      return { ip, port, identity, ...(ep ? { namespace: ep.namespace, pod: ep.name } : {}), ...(labels.length ? { labels } : {}) };
    };
    const leaving = e.direction === 'egress';
    return {
      time: bootNsToWallClock(e.timestampBootNs).toISOString(),
      verdict: e.dropped ? 'DROPPED' : 'FORWARDED',
      ...(e.dropped ? { drop_reason_desc: e.reason.toUpperCase().replace(/ /g, '_') } : {}),
      direction: leaving ? 'EGRESS' : 'INGRESS',
      node: a.nodeName,
      source: side(e.srcIp, e.srcPort, leaving ? e.localIdentity : e.remoteIdentity),
      destination: side(e.dstIp, e.dstPort, leaving ? e.remoteIdentity : e.localIdentity),
      protocol: PROTO[e.proto] ?? String(e.proto),
      auth_type: e.authType === AuthType.mutual ? 'SPIRE' : 'DISABLED',
    };
  }

  private observe(url: URL, res: ServerResponse): void {
    const verdict = url.searchParams.get('verdict')?.toUpperCase();
    const identity = url.searchParams.get('identity');
    const namespace = url.searchParams.get('namespace');
    if (verdict && verdict !== 'DROPPED' && verdict !== 'FORWARDED') {
      return this.json(res, 400, { error: { code: 'invalid_argument', message: `verdict must be DROPPED or FORWARDED, not ${verdict}`, field: 'verdict' } });
    }
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.flushHeaders();
    this.streams.add(res);
    const listener = (e: FlowEvent): void => {
      const f = this.describe(e);
      if (verdict && f.verdict !== verdict) return;
      if (identity && String(f.source.identity) !== identity && String(f.destination.identity) !== identity) return;
      if (namespace && f.source.namespace !== namespace && f.destination.namespace !== namespace) return;
      res.write(JSON.stringify(f) + '\n');
    };
    const unsubscribe = this.agent.onFlowEvent(listener);
    res.on('close', () => { unsubscribe(); this.streams.delete(res); });
  }
}
