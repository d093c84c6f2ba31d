/** Probes and metrics: the routes that answer without the bearer token. */
import type { Route, RouteContext } from './route.js';

export function healthRoutes(ctx: RouteContext): Route[] {
  return [
    { method: 'get', path: '/live', public: true, handle: () => ({ json: { status: 'live' } }) },
    {
      method: 'get', path: '/ready', public: true,
      handle: () => (ctx.ready() ? { json: { status: 'ready' } } : { status: 503, json: { status: 'not_ready' } }),
    },
    {
      method: 'get', path: '/metrics', public: true,
      handle: async () => ({ text: await ctx.metrics.render(), contentType: 'text/plain; version=0.0.4; charset=utf-8' }),
    },
  ];
}
