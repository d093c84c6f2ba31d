/** `meshid entry create|list|show|update|delete`: registration entries, with spire-server's flags. */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { EntryJson } from '../api/admin.js';
import { type CliContext, cliContext, collect, ttlSeconds, wholeNumberFlag } from './context.js';
import { CliError, UsageError, describeField } from './errors.js';
import { formatFields, formatTable, formatTime, formatTtl } from './output.js';

interface BatchResult { status: { code: string; message: string; field?: string }; entry?: EntryJson; id?: string }

interface EntryFlags {
  spiffeId?: string;
  parentId?: string;
  selector?: string[];
  x509SvidTtl?: string;
  jwtSvidTtl?: string;
  dns?: string[];
  hint?: string;
  admin?: boolean;
  downstream?: boolean;
  federatesWith?: string[];
  expiresAt?: number;
  k8sSa?: string;
  entryId?: string;
  data?: string;
}

/** The flags that describe an entry, shared by create and update. */
function entryFieldOptions(cmd: Command, forUpdate: boolean): Command {
  cmd
    .option('--spiffe-id <id>', 'the SPIFFE ID of the workload')
    .option('--parent-id <id>', 'the agent (or node alias) SPIFFE ID the entry belongs to')
    .option('--selector <type:value>', 'a selector the workload must have (repeatable)', collect)
    .option('--x509-svid-ttl <duration>', 'X509-SVID lifetime, e.g. 1h (0: the server default)')
    .option('--jwt-svid-ttl <duration>', 'JWT-SVID lifetime, e.g. 5m (0: the server default)')
    .option('--dns <name>', 'a DNS SAN for the X509-SVID (repeatable)', collect)
    .option('--hint <hint>', 'a hint for workloads that get several SVIDs')
    .option('--admin', 'the workload may call the admin API with its SVID')
    .option('--downstream', 'the workload is a downstream server')
    .option('--federates-with <trust-domain>', 'a federated trust domain whose bundle the workload gets (repeatable)', collect)
    .option('--expires-at <unix-seconds>', 'when the entry expires (0: never)', wholeNumberFlag('--expires-at', 'expires_at'));
  if (forUpdate) {
    cmd.option('--no-admin', 'the workload may not call the admin API').option('--no-downstream', 'the workload is not a downstream server');
  }
  return cmd;
}

/** The API body for the flags that were given; nothing for those that were not. */
async function entryBody(flags: EntryFlags): Promise<Record<string, unknown>> {
  const x509SvidTtl = await ttlSeconds(flags.x509SvidTtl, '--x509-svid-ttl', 'x509_svid_ttl');
  const jwtSvidTtl = await ttlSeconds(flags.jwtSvidTtl, '--jwt-svid-ttl', 'jwt_svid_ttl');
  const body: Record<string, unknown> = {};
  if (flags.entryId !== undefined) body.id = flags.entryId;
  if (flags.spiffeId !== undefined) body.spiffe_id = flags.spiffeId;
  if (flags.parentId !== undefined) body.parent_id = flags.parentId;
  if (flags.selector !== undefined) body.selectors = flags.selector;
  if (x509SvidTtl !== undefined) body.x509_svid_ttl = x509SvidTtl;
  if (jwtSvidTtl !== undefined) body.jwt_svid_ttl = jwtSvidTtl;
  if (flags.dns !== undefined) body.dns_names = flags.dns;
  if (flags.hint !== undefined) body.hint = flags.hint;
  if (flags.admin !== undefined) body.admin = flags.admin;
  if (flags.downstream !== undefined) body.downstream = flags.downstream;
  if (flags.federatesWith !== undefined) body.federates_with = flags.federatesWith;
  if (flags.expiresAt !== undefined) body.expires_at = flags.expiresAt;
  if (flags.k8sSa !== undefined) body.k8s_sa = flags.k8sSa;
  return body;
}

/**
 * One item of a --data file, in spire-server's format or ours: selectors may be
 * {type, value} objects and SPIFFE IDs {trust_domain, path} objects.
 */
function dataItem(item: unknown): unknown {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) return item;
  const out: Record<string, unknown> = { ...(item as Record<string, unknown>) };
  for (const key of ['spiffe_id', 'parent_id']) {
    const v = out[key] as { trust_domain?: unknown; path?: unknown } | undefined;
    if (v && typeof v === 'object' && typeof v.trust_domain === 'string' && typeof v.path === 'string') out[key] = `spiffe://${v.trust_domain}${v.path}`;
  }
  if (Array.isArray(out.selectors)) {
    out.selectors = out.selectors.map((s: unknown) => {
      const o = s as { type?: unknown; value?: unknown };
      return o && typeof o === 'object' && typeof o.type === 'string' && typeof o.value === 'string' ? `${o.type}:${o.value}` : s;
    });
  }
  return out;
}

/** A file (or "-" for stdin) holding `{"entries": [...]}` or a bare array. */
function readDataFile(file: string): unknown[] {
  let text: string;
  try { text = readFileSync(file === '-' ? 0 : file, 'utf8'); } catch (err) {
    throw new CliError(`cannot read --data ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try { doc = JSON.parse(text); } catch (err) { throw new CliError(`--data ${file} is not valid JSON: ${(err as Error).message}`); }
  const entries = Array.isArray(doc) ? doc : (doc as { entries?: unknown } | null)?.entries;
  if (!Array.isArray(entries) || entries.length === 0) throw new CliError(`--data ${file} must hold {"entries": [...]} with at least one entry`);
  return entries.map(dataItem);
}

export function entryFields(e: EntryJson): [string, string][] {
  const fields: [string, string][] = [
    ['Entry ID', e.id], ['SPIFFE ID', e.spiffe_id], ['Parent ID', e.parent_id], ['Revision', String(e.revision)],
    ['X509-SVID TTL', formatTtl(e.x509_svid_ttl)], ['JWT-SVID TTL', formatTtl(e.jwt_svid_ttl)],
    ['Selectors', e.selectors.join(', ')],
  ];
  if (e.dns_names.length > 0) fields.push(['DNS names', e.dns_names.join(', ')]);
  if (e.federates_with.length > 0) fields.push(['Federates with', e.federates_with.join(', ')]);
  if (e.hint) fields.push(['Hint', e.hint]);
  if (e.admin) fields.push(['Admin', 'true']);
  if (e.downstream) fields.push(['Downstream', 'true']);
  fields.push(['Expires', formatTime(e.expires_at)], ['Created', formatTime(e.created_at)]);
  return fields;
}

export function entryTable(entries: readonly EntryJson[]): string {
  return formatTable(
    ['ENTRY ID', 'SPIFFE ID', 'PARENT ID', 'SELECTORS', 'X509 TTL', 'JWT TTL'],
    entries.map((e) => [e.id, e.spiffe_id, e.parent_id, e.selectors.join(','), formatTtl(e.x509_svid_ttl), formatTtl(e.jwt_svid_ttl)]),
  );
}

/** Prints per-item results; fails (exit 1) when any item failed, after printing all of them. */
function printBatch(ctx: CliContext, results: BatchResult[], verb: 'created' | 'deleted'): void {
  ctx.out.result({ results }, () => results.map((r, i) => {
    if (r.status.code === 'ok') return verb === 'created' && r.entry ? formatFields(entryFields(r.entry)) + '\n' : `deleted entry ${r.id}\n`;
    const where = r.status.field ? `invalid ${describeField(r.status.field)}: ` : '';
    return `item ${i}${r.id ? ` (${r.id})` : ''}: ${r.status.code}: ${where}${r.status.message}\n\n`;
  }).join(''));
  const failed = results.filter((r) => r.status.code !== 'ok').length;
  if (failed > 0) throw new CliError(`${failed} of ${results.length} items failed`);
}

export function registerEntryCommands(program: Command): void {
  const entry = program.command('entry').description('registration entries: which workloads get which SPIFFE IDs');

  entryFieldOptions(entry.command('create'), false)
    .description('create an entry (or a batch with --data)')
    .option('--k8s-sa <namespace/name>', 'a Kubernetes ServiceAccount: sets --spiffe-id spiffe://<td>/ns/NS/sa/NAME and its k8s selectors')
    .option('--entry-id <id>', 'choose the entry id (default: a UUID)')
    .option('--data <file>', 'create every entry of a JSON file ({"entries": [...]}, spire-server -data format; "-" reads stdin)')
    .action(async (flags: EntryFlags, cmd: Command) => {
      const ctx = cliContext(cmd);
      if (flags.data !== undefined) {
        const given = Object.keys(await entryBody(flags));
        if (given.length > 0) throw new UsageError('--data takes the entries from the file; give no other entry flags');
        const { results } = await ctx.client.post<{ results: BatchResult[] }>('/v1/entries:batchCreate', { entries: readDataFile(flags.data) });
        printBatch(ctx, results, 'created');
        return;
      }
      if (flags.k8sSa !== undefined && (flags.spiffeId !== undefined || flags.selector !== undefined)) {
        throw new UsageError('--k8s-sa sets the SPIFFE ID and the selectors; give --k8s-sa or --spiffe-id and --selector');
      }
      if (flags.parentId === undefined) throw new UsageError('--parent-id is required');
      if (flags.k8sSa === undefined) {
        if (flags.spiffeId === undefined) throw new UsageError('--spiffe-id (or --k8s-sa) is required');
        if (flags.selector === undefined) throw new UsageError('at least one --selector (or --k8s-sa) is required');
      }
      const created = await ctx.client.post<EntryJson>('/v1/entries', await entryBody(flags));
      ctx.out.result(created, () => formatFields(entryFields(created)));
    });

  entry.command('list')
    .description('list entries')
    .option('--spiffe-id <id>', 'only entries with this SPIFFE ID')
    .option('--parent-id <id>', 'only entries with this parent ID')
    .option('--selector <type:value>', 'filter by selectors (repeatable; see --match)', collect)
    .addOption(new Option('--match <how>', 'how entry selectors relate to --selector').choices(['exact', 'subset', 'superset', 'any']))
    .option('--hint <hint>', 'only entries with this hint')
    .option('--page-size <n>', 'entries per page (default: all in one page)', wholeNumberFlag('--page-size', 'page_size'))
    .option('--page-token <token>', 'the page after the one that printed this token')
    .action(async (flags: { spiffeId?: string; parentId?: string; selector?: string[]; match?: string; hint?: string; pageSize?: number; pageToken?: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      if (flags.match !== undefined && flags.selector === undefined) throw new UsageError('--match needs at least one --selector');
      const page = await ctx.client.get<{ entries: EntryJson[]; next_page_token: string }>('/v1/entries', {
        spiffe_id: flags.spiffeId, parent_id: flags.parentId, selector: flags.selector, match: flags.match, hint: flags.hint,
        page_size: flags.pageSize, page_token: flags.pageToken,
      });
      ctx.out.result(page, () => entryTable(page.entries) + (page.next_page_token ? `\nnext page: --page-token ${page.next_page_token}\n` : ''));
    });

  entry.command('show')
    .description('show one entry')
    .argument('<id>', 'the entry id')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const e = await ctx.client.get<EntryJson>(`/v1/entries/${encodeURIComponent(id)}`);
      ctx.out.result(e, () => formatFields(entryFields(e)));
    });

  entryFieldOptions(entry.command('update'), true)
    .description('change some fields of an entry; fields not given keep their value')
    .argument('<id>', 'the entry id')
    .action(async (id: string, flags: EntryFlags, cmd: Command) => {
      const ctx = cliContext(cmd);
      const body = await entryBody(flags);
      if (Object.keys(body).length === 0) throw new UsageError('give at least one field to change (see meshid entry update --help)');
      const e = await ctx.client.patch<EntryJson>(`/v1/entries/${encodeURIComponent(id)}`, body);
      ctx.out.result(e, () => formatFields(entryFields(e)));
    });

  entry.command('delete')
    .description('delete entries by id')
    .argument('<id...>', 'entry ids')
    .action(async (ids: string[], _flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      if (ids.length === 1) {
        const e = await ctx.client.delete<EntryJson>(`/v1/entries/${encodeURIComponent(ids[0]!)}`);
        ctx.out.result(e, () => `deleted entry ${e.id} (${e.spiffe_id})\n`);
        return;
      }
      const { results } = await ctx.client.post<{ results: BatchResult[] }>('/v1/entries:batchDelete', { ids });
      printBatch(ctx, results, 'deleted');
    });
}
