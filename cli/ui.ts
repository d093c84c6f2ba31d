/** `meshid ui`: a link that signs a browser in to the server's web UI (once, within a minute). */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { cliContext } from './context.js';

export function registerUiCommand(program: Command): void {
  program.command('ui')
    .description('print a link that signs a browser in to the web UI (valid once, for a minute), and open it where a browser is')
    .option('--print-url', 'only print the link')
    .action(async (flags: { printUrl?: boolean }, cmd: Command) => {
      const { client, out } = cliContext(cmd);
      const answer = await client.post<{ login_path: string; expires_at: string }>('/v1/ui/sessions');
      const url = new URL(answer.login_path, client.server.endsWith('/') ? client.server : client.server + '/').toString();
      out.result({ url, expires_at: answer.expires_at }, () => `${url}\n`);
      if (flags.printUrl || out.json) return;
      const opener = ['/usr/bin/xdg-open', '/usr/bin/open'].find((p) => existsSync(p));
      if (opener && (process.env['DISPLAY'] || process.env['WAYLAND_DISPLAY'] || process.platform === 'darwin')) {
        spawn(opener, [url], { stdio: 'ignore', detached: true }).unref();
      }
    });
}
