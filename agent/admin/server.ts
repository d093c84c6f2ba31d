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
import type { AuthPair } from '../../bpf/index.js';
import { filterFromQuery, FlowFilterError, flowMatches, type Flow, type FlowFilter } from '../../api/flow.js';
import { authEntriesJson } from '../observe/index.js';
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
  /** Calls `listener` with every flow of this node (its JSON line, and the flow parsed on demand) until the returned function is called. */
  onFlow(listener: (line: string, flow: () => Flow) => void): () => void;
  /** The newest flows of this node as JSON lines, oldest first. */
  flowHistory(last: number): string[];
}

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
        case '/v1/auth': return this.json(res, 200, { node: this.agent.nodeName, entries: authEntriesJson(this.agent.state, this.agent.nodeName, this.agent.authEntries()) });
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

  /**
   * This node's flows as NDJSON (api/flow.ts), filtered as /v1/flows filters:
   * `last=N` the newest N from the history first, then, with `follow=true` (or
   * with no `last`), each new one as it comes.
   */
  private observe(url: URL, res: ServerResponse): void {
    const q = url.searchParams;
    let filter: FlowFilter;
    let last: number | undefined;
    try {
      filter = filterFromQuery(q, Date.now());
      const l = q.get('last');
      if (l !== null) {
        if (!/^\d+$/.test(l)) throw new FlowFilterError(`last must be a whole number, not "${l}"`, 'last');
        last = Number(l);
      }
    } catch (err) {
      if (!(err instanceof FlowFilterError)) throw err;
      return this.json(res, 400, { error: { code: 'invalid_argument', message: err.message, field: err.field } });
    }
    const follow = q.get('follow') === 'true' || last === undefined;
    const matchAll = Object.keys(filter).length === 0;
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    if (last !== undefined) {
      // the newest `last` that match, oldest first
      const lines = this.agent.flowHistory(Number.MAX_SAFE_INTEGER);
      const picked: string[] = [];
      for (let i = lines.length - 1; i >= 0 && picked.length < last; i--) {
        if (matchAll || flowMatches(JSON.parse(lines[i]!) as Flow, filter)) picked.push(lines[i]!);
      }
      for (const line of picked.reverse()) res.write(line + '\n');
    }
    if (!follow) { res.end(); return; }
    res.flushHeaders();
    this.streams.add(res);
    const unsubscribe = this.agent.onFlow((line, flow) => {
      if (matchAll || flowMatches(flow(), filter)) res.write(line + '\n');
    });
    res.on('close', () => { unsubscribe(); this.streams.delete(res); });
  }
}
