/**
 * The admin REST API: SPIRE's server API as JSON over HTTP, for the `meshid` CLI and
 * operators. Every /v1 route needs the bearer token; /live, /ready and /metrics do not.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseBind } from '../../common/bind.js';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { type Bundle, InvalidArgument, MeshidError, PermissionDenied, ResourceExhausted, Unauthenticated } from '../../spiffe/index.js';
import { join } from 'node:path';
import type { CertificateAuthority } from '../ca/index.js';
import type { Datastore } from '../datastore/index.js';
import type { ServerMetrics } from '../metrics.js';
import type { Registration } from '../registration/index.js';
import { agentRoutes } from './agents.js';
import { bundleRoutes } from './bundles.js';
import { entryRoutes } from './entries.js';
import { healthRoutes } from './health.js';
import { meshRoutes } from './mesh.js';
import { policyRoutes } from './policies.js';
import type { AdminRequest, AuditOutcome, Method, Route } from './route.js';
import { errorResponse } from '../../common/httpstatus.js';
import { serverRoutes } from './servers.js';
import { observeRoutes } from './observe.js';
import { uiRouter, uiRoutes, UiSessions } from './ui.js';
import { packageRoot } from '../../api/assets.js';
import type { RelayHub } from '../observe/index.js';
import { svidRoutes } from './svids.js';

export interface AdminApiOptions {
  /** HOST:PORT; port 0 picks a free one. */
  bind: string;
  store: Datastore;
  ca: CertificateAuthority;
  registration: Registration;
  metrics: ServerMetrics;
  logger: Logger;
  clock: Clock;
  authToken: string;
  ready: () => boolean;
  /** The trust domain's bundle: every server's authorities. Default: the CA's own. */
  trustBundle?: () => Bundle;
  serverId?: string;
  relay?: RelayHub;
}

/** The largest JSON body accepted; a batch of a few thousand entries fits. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** How long stop() lets in-flight requests finish before it closes their connections. */
const STOP_GRACE_MS = 2000;

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Express paths from OpenAPI templates: `{id}` → `:id`, a literal `:` (custom verbs) escaped. */
function expressPath(template: string): string {
  return template.replace(/:/g, '\\:').replace(/\{(\w+)\}/g, ':$1');
}

/** How long an idle admin connection is kept open: longer than clients keep one (undici, which fetch and the CLI use, keeps it 4 s). */
export const ADMIN_KEEP_ALIVE_MS = 65_000;

export class AdminApi {
  private readonly app = express();
  private readonly routes: Route[];
  private readonly tokenDigest: Buffer;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Browser sessions of the web UI (read-only). */
  readonly uiSessions: UiSessions;

  constructor(private readonly opts: AdminApiOptions) {
    this.uiSessions = new UiSessions(opts.clock);
    if (opts.authToken.length < 16) throw new InvalidArgument('the admin token must be at least 16 characters', 'admin_token_file');
    this.tokenDigest = sha256(opts.authToken);
    const ctx = {
      trustDomain: opts.store.trustDomain, store: opts.store, ca: opts.ca, registration: opts.registration,
      metrics: opts.metrics, clock: opts.clock, logger: opts.logger, ready: opts.ready,
      trustBundle: opts.trustBundle ?? (() => opts.ca.bundle()), serverId: opts.serverId ?? '',
      ...(opts.relay ? { relay: opts.relay } : {}),
    };
    this.routes = [
      ...healthRoutes(ctx), ...entryRoutes(ctx), ...agentRoutes(ctx), ...bundleRoutes(ctx), ...svidRoutes(ctx), ...meshRoutes(ctx), ...policyRoutes(ctx), ...serverRoutes(ctx), ...observeRoutes(ctx), ...uiRoutes(this.uiSessions),
    ];
    this.build();
  }

  /** Method and OpenAPI path of every route served, for the API document's test. */
  routeList(): { method: Method; path: string; public: boolean }[] {
    return this.routes.map((r) => ({ method: r.method, path: r.path, public: r.public === true }));
  }

  async start(): Promise<number> {
    if (this.server) throw new Error('AdminApi already started');
    const { host, port } = parseBind(this.opts.bind);
    const server = this.app.listen(port, host ?? '::');
    // Node closes an idle keep-alive connection after 5 s, as a client may pick it for its next
    // request (undici keeps them 4 s): the request then meets a closed socket. The server keeps
    // them longer than any client does, and waits for headers longer still.
    server.keepAliveTimeout = ADMIN_KEEP_ALIVE_MS;
    server.headersTimeout = ADMIN_KEEP_ALIVE_MS + 5000;
    this.server = server;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('listening', resolve);
        server.once('error', reject);
      });
    } catch (err) {
      this.server = undefined;
      throw err;
    }
    const bound = (server.address() as AddressInfo).port;
    this.opts.logger.info('admin API listening', { address: host ?? '::', port: bound });
    return bound;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const force = setTimeout(() => { for (const s of this.sockets) s.destroy(); }, STOP_GRACE_MS);
    force.unref();
    await closed;
    clearTimeout(force);
  }

  private build(): void {
    const app = this.app;
    app.disable('x-powered-by');
    app.disable('etag');
    app.set('query parser', 'simple');
    app.use(this.countRequests);
    // Every body is read as JSON whatever its Content-Type (curl -d sends form encoding), and only after
    // the caller has been authenticated: unauthenticated callers cannot make the server parse anything.
    const parseJson = express.json({ limit: MAX_BODY_BYTES, type: () => true, strict: false });
    for (const route of this.routes) {
      const chain: RequestHandler[] = [this.label(route)];
      if (!route.public) chain.push(this.authenticate, parseJson);
      chain.push(this.handler(route));
      app[route.method](expressPath(route.path), ...chain);
    }
    // The web UI: its files behind a browser session (see ui.ts)
    app.use('/ui', uiRouter(join(packageRoot, 'dist', 'ui'), this.uiSessions));
    // Unknown /v1 paths look the same as known ones to a caller without the token.
    app.use('/v1', this.authenticate, (_req, res) => this.sendError(res, new MeshidError('not_found', 'no such route')));
    app.use((_req: Request, res: Response) => this.sendError(res, new MeshidError('not_found', 'no such route')));
    app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => this.fail(err, req, res));
  }

  private readonly countRequests: RequestHandler = (req, res, next) => {
    res.on('finish', () => {
      const route = (res.locals.route as string | undefined) ?? 'unmatched';
      this.opts.metrics.adminRequests.inc({ method: req.method, route, status: res.statusCode });
    });
    next();
  };

  private label(route: Route): RequestHandler {
    return (_req, res, next) => { res.locals.route = route.path; next(); };
  }

  private readonly authenticate: RequestHandler = (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const m = /^Bearer +(\S+) *$/i.exec(header);
    // Digests of equal length, compared in constant time: the comparison tells nothing about the token.
    if (m && timingSafeEqual(sha256(m[1]!), this.tokenDigest)) { next(); return; }
    // a web UI session reads, and only reads
    if (!m && this.uiSessions.holds(req)) {
      if (req.method === 'GET') { next(); return; }
      this.sendError(res, new PermissionDenied('a web UI session only reads; use the admin token to change anything'));
      return;
    }
    this.opts.logger.warn('admin request refused: bad or missing bearer token', { method: req.method, path: req.path, caller: req.socket.remoteAddress });
    res.set('WWW-Authenticate', 'Bearer realm="meshid"');
    this.sendError(res, new Unauthenticated('a valid bearer token is required'));
  };

  private handler(route: Route): RequestHandler {
    return async (req, res) => {
      const areq: AdminRequest = { params: req.params as Record<string, string>, query: req.query as Record<string, unknown>, body: req.body };
      let reply;
      try {
        reply = await route.handle(areq);
      } catch (err) {
        if (route.action) this.audit(req, route.action, [{ target: route.target?.(areq) ?? '', error: err }]);
        throw err;
      }
      if (route.action) this.audit(req, route.action, reply.audit ?? [{ target: route.target?.(areq) ?? '' }]);
      res.status(reply.status ?? 200);
      if (reply.stream) {
        res.type('application/x-ndjson');
        res.flushHeaders();
        reply.stream({
          write: (line) => { res.write(line + '\n'); },
          end: () => { res.end(); },
          onClose: (fn) => { res.on('close', fn); },
        });
        return;
      }
      if (reply.text !== undefined) res.type(reply.contentType ?? 'text/plain').send(reply.text);
      else res.json(reply.json ?? {});
    };
  }

  /** One structured line per change (a batch writes one per item), for the operator's audit trail. */
  private audit(req: Request, action: string, outcomes: AuditOutcome[]): void {
    const caller = req.socket.remoteAddress ?? '';
    for (const o of outcomes) {
      const line: Record<string, unknown> = { audit: true, action, target: o.target, result: o.error === undefined ? 'ok' : 'error', caller };
      if (o.error !== undefined) line.error = o.error instanceof Error ? o.error.message : String(o.error);
      this.opts.logger.info('admin change', line);
    }
  }

  private fail(err: unknown, req: Request, res: Response): void {
    // body-parser's errors carry a `type`: a malformed or oversized body is the caller's fault.
    const type = (err as { type?: unknown }).type;
    // express decodes path parameters with decodeURIComponent: "%ff" is the caller's bad input
    if (err instanceof URIError) err = new InvalidArgument(`the request path ${JSON.stringify(req.path)} is not valid percent-encoded UTF-8`, 'path');
    else if (typeof type === 'string' && !(err instanceof MeshidError)) {
      if (type === 'entity.too.large') err = new ResourceExhausted(`the request body is larger than ${MAX_BODY_BYTES} bytes`, 'body');
      else if (type === 'entity.parse.failed') err = new InvalidArgument(`the request body is not valid JSON: ${(err as Error).message}`, 'body');
      else err = new InvalidArgument(`the request body cannot be read: ${(err as Error).message}`, 'body');
    }
    if (!(err instanceof MeshidError)) this.opts.logger.error('admin request failed', { method: req.method, path: req.path, err });
    this.sendError(res, err);
  }

  private sendError(res: Response, err: unknown): void {
    const { status, body } = errorResponse(err);
    if (res.headersSent) { res.end(); return; }
    res.status(status).json(body);
  }
}
