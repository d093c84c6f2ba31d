/** `meshid policy apply|list|delete`: CiliumNetworkPolicy-shaped policies, stored by the server. */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { cliContext } from './context.js';
import { CliError, UsageError } from './errors.js';
import { formatTable } from './output.js';

interface Applied { namespace: string; name: string; kind: string; revision: number; result: string }
interface Stored { namespace: string; name: string; kind: string; revision: number; spec: { rules?: unknown[] } & Record<string, unknown> }

function readPolicyFile(file: string): string {
  try { return readFileSync(file === '-' ? 0 : file, 'utf8'); } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

const qualified = (p: { namespace: string; name: string }): string => (p.namespace ? `${p.namespace}/${p.name}` : p.name);

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('network and authentication policies (CiliumNetworkPolicy syntax)');
  policy.command('apply')
    .description('apply the policies of a YAML file (one or many documents; - reads stdin)')
    .requiredOption('-f, --file <file>', 'YAML file with CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or AuthPolicy documents')
    .action(async (flags: { file: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.post<{ applied: Applied[] }>('/v1/policies:apply', { yaml: readPolicyFile(flags.file) });
      ctx.out.result(res, () => res.applied.map((p) => `${p.kind.toLowerCase()}/${qualified(p)} ${p.result}\n`).join(''));
    });
  policy.command('list')
    .description('list stored policies')
    .option('-n, --namespace <ns>', 'only this namespace')
    .action(async (flags: { namespace?: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const res = await ctx.client.get<{ policies: Stored[] }>('/v1/policies', { namespace: flags.namespace });
      ctx.out.result(res, () => formatTable(['NAMESPACE', 'NAME', 'KIND', 'REVISION'],
        res.policies.map((p) => [p.namespace || '(cluster)', p.name, p.kind, String(p.revision)])));
    });
  policy.command('delete')
    .description('delete a policy by name, or the policies a YAML file names')
    .argument('[name]', 'policy name (with --namespace; cluster-wide policies have none)')
    .option('-n, --namespace <ns>', 'namespace of the policy')
    .option('-f, --file <file>', 'delete what this YAML file defines')
    .action(async (name: string | undefined, flags: { namespace?: string; file?: string }, cmd: Command) => {
      if (!name === !flags.file) throw new UsageError('give a policy name or --file, not both');
      const ctx = cliContext(cmd);
      const body = flags.file ? { yaml: readPolicyFile(flags.file) } : { name, ...(flags.namespace !== undefined ? { namespace: flags.namespace } : {}) };
      const res = await ctx.client.post<{ deleted: { namespace: string; name: string; deleted: boolean }[] }>('/v1/policies:delete', body);
      ctx.out.result(res, () => res.deleted.map((p) => `${qualified(p)} ${p.deleted ? 'deleted' : 'not found'}\n`).join(''));
    });
}
