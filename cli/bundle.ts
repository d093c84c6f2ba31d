/** `meshid bundle show|list|set|delete`: the server's trust bundle and the federated ones. */
import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { Bundle, MeshidError, TrustDomain } from '../spiffe/index.js';
import { cliContext } from './context.js';
import { CliError } from './errors.js';
import { formatTable, formatTime } from './output.js';

interface FederatedBundle { trust_domain: string; bundle: { keys: { use?: string }[]; spiffe_sequence?: number }; updated_at: number }

function trustDomainFlag(value: string): TrustDomain {
  try { return TrustDomain.parse(value, 'trust_domain'); } catch (err) { throw new CliError(`invalid trust_domain (--id): ${(err as Error).message}`); }
}

function readInput(file: string): string {
  try { return readFileSync(file === '-' ? 0 : file, 'utf8'); } catch (err) {
    throw new CliError(`cannot read bundle file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function registerBundleCommands(program: Command): void {
  const bundle = program.command('bundle').description('trust bundles');

  bundle.command('show')
    .description("print the server's own trust bundle")
    .addOption(new Option('--format <format>', 'pem (X.509 authorities) or spiffe (the SPIFFE bundle document); default pem, or spiffe with -o json').choices(['pem', 'spiffe']))
    .action(async (flags: { format?: 'pem' | 'spiffe' }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const format = flags.format ?? (ctx.out.json ? 'spiffe' : 'pem');
      if (format === 'pem') {
        ctx.out.write(await ctx.client.get<string>('/v1/bundle', { format: 'pem' }));
        return;
      }
      ctx.out.write(JSON.stringify(await ctx.client.get<unknown>('/v1/bundle', { format: 'spiffe' }), null, 2) + '\n');
    });

  bundle.command('list')
    .description('list the federated trust bundles')
    .action(async (_flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.get<{ bundles: FederatedBundle[] }>('/v1/bundles');
      ctx.out.result(res, () => formatTable(
        ['TRUST DOMAIN', 'X509 AUTHORITIES', 'JWT AUTHORITIES', 'SEQUENCE', 'UPDATED'],
        res.bundles.map((b) => [
          b.trust_domain, String(b.bundle.keys.filter((k) => k.use === 'x509-svid').length),
          String(b.bundle.keys.filter((k) => k.use === 'jwt-svid').length), String(b.bundle.spiffe_sequence ?? 0), formatTime(b.updated_at),
        ]),
      ));
    });

  bundle.command('set')
    .description("set a federated trust domain's bundle")
    .requiredOption('--id <trust-domain>', 'the federated trust domain')
    .requiredOption('-f, --file <file>', 'the bundle ("-" reads stdin)')
    .addOption(new Option('--format <format>', 'the file holds a SPIFFE bundle document or PEM certificates').choices(['spiffe', 'pem']).default('spiffe'))
    .action(async (flags: { id: string; file: string; format: 'pem' | 'spiffe' }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const td = trustDomainFlag(flags.id);
      const text = readInput(flags.file);
      let doc: unknown;
      try {
        doc = flags.format === 'pem' ? Bundle.fromPem(td, text).toJwks() : JSON.parse(text);
      } catch (err) {
        const where = err instanceof MeshidError && err.field ? ` (${err.field})` : '';
        throw new CliError(`${flags.file} is not a ${flags.format === 'pem' ? 'PEM' : 'SPIFFE bundle JSON'} file${where}: ${(err as Error).message}`);
      }
      const res = await ctx.client.put<FederatedBundle>(`/v1/bundles/${encodeURIComponent(td.name)}`, doc);
      ctx.out.result(res, () => `set the bundle of ${res.trust_domain} (${res.bundle.keys.length} keys)\n`);
    });

  bundle.command('delete')
    .description("delete a federated trust domain's bundle")
    .requiredOption('--id <trust-domain>', 'the federated trust domain')
    .action(async (flags: { id: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const td = trustDomainFlag(flags.id);
      const res = await ctx.client.delete<{ trust_domain: string }>(`/v1/bundles/${encodeURIComponent(td.name)}`);
      ctx.out.result(res, () => `deleted the bundle of ${res.trust_domain}\n`);
    });
}
