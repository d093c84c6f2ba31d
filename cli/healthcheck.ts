/** `meshid healthcheck`: exit 0 when the server answers /ready with 200, else 1. */
import type { Command } from 'commander';
import { cliContext } from './context.js';
import { CliError } from './errors.js';

export function registerHealthcheckCommand(program: Command): void {
  program.command('healthcheck')
    .description("check that meshid-server is ready (GET /ready; exit 0 when it is)")
    .action(async (_flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.request<unknown>('GET', '/ready', { auth: false });
      if (res.status !== 200) throw new CliError(`meshid-server at ${ctx.client.server} is not ready (HTTP ${res.status})`);
      ctx.out.result(res.body, () => `meshid-server at ${ctx.client.server} is ready\n`);
    });
}
