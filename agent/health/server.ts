/** The agent's /live, /ready and /metrics on a local port. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetricsRegistry } from '../../common/metrics.js';

export interface HealthServerOptions {
  bind: string;
  registry: MetricsRegistry;
  /** Ready: has an SVID, has synced once, serves the Workload API. The reason when not. */
  readiness: () => { ready: boolean; reason: string };
}

export class HealthServer {
  private server: Server | undefined;
  constructor(private readonly opts: HealthServerOptions) {}

  async start(): Promise<number> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET') { res.writeHead(405).end(); return; }
      if (path === '/live') { res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n'); return; }
      if (path === '/ready') {
        const r = this.opts.readiness();
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.ready ? 'ready' : 'not ready'}: ${r.reason}\n`);
        return;
      }
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.opts.registry.render());
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    });
    this.server = server;
    const i = this.opts.bind.lastIndexOf(':');
    const host = this.opts.bind.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1';
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(Number(this.opts.bind.slice(i + 1)), host, () => resolve()); });
    return (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
