/** `meshid server list`: the servers that share the datastore, with their authorities, heartbeats and leases. */
import type { Command } from 'commander';
import { cliContext } from './context.js';
import { formatTable, formatTime } from './output.js';

export interface ServerJson {
  server_id: string;
  self: boolean;
  agent_address: string;
  started_at: number;
  heartbeat_at: number;
  heartbeat_age_seconds: number;
  ca_ttl: number;
  leases: string[];
  authorities: { type: 'x509' | 'jwt'; kid?: string; expires_at: number; expired: boolean }[];
}

export function registerServerCommands(program: Command): void {
  const server = program.command('server').description('the meshid-servers that share one datastore');
  server.command('list')
    .description('list servers: last heartbeat, leader lease, and the authorities each one signs with')
    .action(async (_flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.get<{ servers: ServerJson[] }>('/v1/servers');
      ctx.out.result(res, () => formatTable(
        ['SERVER', 'AGENT API', 'HEARTBEAT', 'LEASES', 'AUTHORITIES'],
        res.servers.map((s) => {
          const live = s.authorities.filter((a) => !a.expired);
          const last = live.filter((a) => a.type === 'x509').map((a) => a.expires_at).sort().pop();
          return [
            s.server_id + (s.self ? ' (this one)' : ''), s.agent_address, `${s.heartbeat_age_seconds}s ago`, s.leases.join(',') || '-',
            `${live.filter((a) => a.type === 'x509').length} x509, ${live.filter((a) => a.type === 'jwt').length} jwt` + (last ? ` (until ${formatTime(last)})` : ''),
          ];
        }),
      ));
    });
}
