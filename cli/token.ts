/** `meshid token generate`: one-time join tokens for new agents. */
import type { Command } from 'commander';
import { cliContext, ttlSeconds } from './context.js';
import { formatFields, formatTime } from './output.js';

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('join tokens for agent attestation');
  token.command('generate')
    .description('make a one-time join token (meshid-agent run --join-token TOKEN)')
    .option('--ttl <duration>', 'how long the token is valid, e.g. 10m (default 600s)')
    .option('--spiffe-id <id>', 'the agent SPIFFE ID the token yields (default spiffe://<td>/meshid/agent/join_token/<token>)')
    .option('--reattest', 'allow a token for an agent that is attested already (its holder becomes that agent)')
    .action(async (flags: { ttl?: string; spiffeId?: string; reattest?: boolean }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const body: Record<string, unknown> = {};
      const ttl = await ttlSeconds(flags.ttl, '--ttl', 'ttl');
      if (ttl !== undefined) body.ttl = ttl;
      if (flags.spiffeId !== undefined) body.agent_id = flags.spiffeId;
      if (flags.reattest) body.reattest = true;
      const res = await ctx.client.post<{ token: string; expires_at: number; agent_id: string }>('/v1/tokens', body);
      ctx.out.result(res, () => formatFields([['Token', res.token], ['Agent ID', res.agent_id], ['Expires', formatTime(res.expires_at)]]));
    });
}
