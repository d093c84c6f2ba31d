/** `meshid identity list`: the security identities the datapath sees, and whose they are. */
import type { Command } from 'commander';
import { cliContext } from './context.js';
import { formatTable } from './output.js';

interface IdentityJson { id: number; labels: Record<string, string>; namespace: string; service_account: string; spiffe_id: string }

export function registerIdentityCommands(program: Command): void {
  const identity = program.command('identity').description('security identities');
  identity.command('list')
    .description('list security identities with their ServiceAccount and SPIFFE ID')
    .action(async (_flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.get<{ identities: IdentityJson[] }>('/v1/identities');
      ctx.out.result(res, () => formatTable(
        ['ID', 'NAMESPACE', 'SERVICE ACCOUNT', 'SPIFFE ID', 'LABELS'],
        res.identities.map((i) => [
          String(i.id), i.namespace, i.service_account, i.spiffe_id,
          Object.entries(i.labels).map(([k, v]) => `${k}=${v}`).join(','),
        ]),
      ));
    });
}
