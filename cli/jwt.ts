/** `meshid jwt mint`: a JWT-SVID signed by the server (like `spire-server jwt mint`). */
import type { Command } from 'commander';
import { cliContext, collect, ttlSeconds } from './context.js';

export function registerJwtCommands(program: Command): void {
  const jwt = program.command('jwt').description('JWT-SVIDs');
  jwt.command('mint')
    .description('mint a JWT-SVID and print it')
    .requiredOption('--spiffe-id <id>', 'the SPIFFE ID (the sub claim)')
    .requiredOption('--audience <aud>', 'an audience (repeatable)', collect)
    .option('--ttl <duration>', 'lifetime, e.g. 5m (default: the server default)')
    .action(async (flags: { spiffeId: string; audience: string[]; ttl?: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const body: Record<string, unknown> = { spiffe_id: flags.spiffeId, audience: flags.audience };
      const ttl = await ttlSeconds(flags.ttl, '--ttl', 'ttl');
      if (ttl !== undefined) body.ttl = ttl;
      const res = await ctx.client.post<{ spiffe_id: string; token: string; expires_at: number }>('/v1/svids/jwt', body);
      ctx.out.result(res, () => res.token + '\n');
    });
}
