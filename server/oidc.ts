/**
 * OIDC discovery for JWT-SVIDs, as SPIRE's oidc-discovery-provider serves it:
 * `GET /.well-known/openid-configuration` and `GET /keys` (the trust domain's
 * JWT signing keys as a JWKS), unauthenticated, so that relying parties outside
 * the mesh (a cloud's OIDC federation, Vault's JWT auth) can validate JWT-SVIDs
 * by their issuer. Only public keys leave; TLS is left to the ingress or proxy
 * in front, so the scheme in the document is https unless allowInsecureScheme.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from '../common/log.js';
import { type Bundle, signatureAlgorithmFor } from '../spiffe/index.js';
import { parseBind } from '../common/bind.js';

export interface OidcDiscoveryOptions {
  /** HOST:PORT; port 0 picks a free one. */
  bind: string;
  /** The trust domain's current bundle (JWT authorities: active, prepared and old keys). */
  bundle: () => Bundle;
  /** The `iss` of the JWT-SVIDs; absent: the scheme and Host of each request, as SPIRE's provider does. */
  issuer?: string;
  /** Where relying parties fetch the keys; absent: /keys on the scheme and Host of the request. */
  jwksUri?: string;
  /** Host names the document may be asked for (the Host header); empty: any. */
  domains?: readonly string[];
  /** Say http:// in a document asked for over plain HTTP (behind no TLS proxy): for tests and labs only. */
  allowInsecureScheme?: boolean;
  logger: Logger;
}

const ALGS_SUPPORTED = ['RS256', 'ES256', 'ES384'];

export class OidcDiscoveryServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: OidcDiscoveryOptions) {}

  async start(): Promise<number> {
    const { host, port } = parseBind(this.opts.bind, 'oidc_discovery.bind');
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (s: Socket) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host ?? '::', () => { server.off('error', reject); resolve(); });
    });
    this.server = server;
    const bound = (server.address() as AddressInfo).port;
    this.opts.logger.info('OIDC discovery listening', { address: host ?? '::', port: bound, issuer: this.opts.issuer ?? '(from the Host header)' });
    return bound;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      const text = JSON.stringify(body, null, 2);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    if (path !== '/.well-known/openid-configuration' && path !== '/keys') { send(404, { error: `no such path: ${path}` }); return; }
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(405, { error: 'method not allowed: only GET' }, { allow: 'GET, HEAD' }); return; }
    const hostHeader = req.headers.host ?? '';
    const domain = hostHeader.startsWith('[') ? hostHeader.slice(0, hostHeader.indexOf(']') + 1) : hostHeader.split(':')[0]!;
    const domains = this.opts.domains ?? [];
    if (domains.length > 0 && !domains.includes(domain)) { send(400, { error: `domain "${domain}" is not allowed` }); return; }
    try {
      if (path === '/keys') {
        send(200, this.keys(), { 'cache-control': 'no-cache, no-store, must-revalidate' });
        return;
      }
      const here = `${this.opts.allowInsecureScheme ? 'http' : 'https'}://${hostHeader}`;
      send(200, {
        issuer: this.opts.issuer ?? here,
        jwks_uri: this.opts.jwksUri ?? `${here}/keys`,
        authorization_endpoint: '',
        response_types_supported: ['id_token'],
        subject_types_supported: [],
        id_token_signing_alg_values_supported: ALGS_SUPPORTED,
      });
    } catch (err) {
      this.opts.logger.error('OIDC discovery: no bundle to serve', { err });
      send(503, { error: 'the trust bundle is not available yet' });
    }
  }

  /** The JWT authorities as a plain JWKS: public keys with kid, use "sig" and alg, nothing of X.509. */
  private keys(): { keys: Record<string, unknown>[] } {
    return {
      keys: this.opts.bundle().jwtAuthorities.map((a) => ({
        ...a.publicKey.export({ format: 'jwk' }),
        kid: a.kid,
        use: 'sig',
        alg: signatureAlgorithmFor(a.publicKey).jwsAlg,
      })),
    };
  }
}
