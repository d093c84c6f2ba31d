/** `GET /v1/servers`: the servers that share this datastore, their authorities, heartbeats and leases. */
import type { Route, RouteContext } from './route.js';
import { Query } from './input.js';

export function serverRoutes(ctx: RouteContext): Route[] {
  const { store } = ctx;
  return [
    {
      method: 'get', path: '/v1/servers',
      async handle(req) {
        new Query(req.query, []);
        const [servers, leases] = await Promise.all([store.listServers(), store.listLeases()]);
        const now = store.nowSeconds();
        return {
          json: {
            servers: servers.map((s) => ({
              server_id: s.serverId,
              self: s.serverId === ctx.serverId,
              agent_address: s.agentAddress,
              started_at: s.startedAt,
              heartbeat_at: s.heartbeatAt,
              heartbeat_age_seconds: Math.max(0, now - s.heartbeatAt),
              ca_ttl: s.caTtl,
              leases: leases.filter((l) => l.holder === s.serverId && l.expiresAt > now).map((l) => l.name),
              authorities: s.authorities.map((a) => ({
                type: a.jwk.use === 'x509-svid' ? 'x509' : 'jwt',
                ...(a.jwk.use === 'jwt-svid' ? { kid: a.jwk.kid } : {}),
                expires_at: a.expiresAt,
                expired: a.expiresAt !== 0 && a.expiresAt <= now,
              })),
            })),
          },
        };
      },
    },
  ];
}
