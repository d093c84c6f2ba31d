/** `meshid agent list|show|evict|ban`: the agents that attested to the server. */
import type { Command } from 'commander';
import { cliContext, wholeNumberFlag } from './context.js';
import { UsageError } from './errors.js';
import { formatFields, formatTable, formatTime } from './output.js';
import type { AgentJson } from '../api/admin.js';


const agentPath = (id: string) => `/v1/agents/${encodeURIComponent(id)}`;

function agentFields(a: AgentJson): [string, string][] {
  return [
    ['SPIFFE ID', a.spiffe_id], ['Attestation type', a.attestation_type], ['SVID serial', a.x509_svid_serial_number],
    ['SVID expires', formatTime(a.x509_svid_expires_at)], ['Banned', String(a.banned)], ['Can re-attest', String(a.can_reattest)],
    ['Selectors', a.selectors.join(', ')], ['Attested', formatTime(a.created_at)], ['Updated', formatTime(a.updated_at)],
  ];
}

export function registerAgentCommands(program: Command): void {
  const agent = program.command('agent').description('attested agents');

  agent.command('list')
    .description('list agents')
    .option('--banned', 'only banned agents')
    .option('--not-banned', 'only agents that are not banned')
    .option('--attestation-type <type>', 'only agents attested this way (join_token, k8s_psat)')
    .option('--page-size <n>', 'agents per page (default: all)', wholeNumberFlag('--page-size', 'page_size'))
    .option('--page-token <token>', 'the page after the one that printed this token')
    .action(async (flags: { banned?: boolean; notBanned?: boolean; attestationType?: string; pageSize?: number; pageToken?: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      if (flags.banned && flags.notBanned) throw new UsageError('give --banned or --not-banned, not both');
      const page = await ctx.client.get<{ agents: AgentJson[]; next_page_token: string }>('/v1/agents', {
        banned: flags.banned ? 'true' : flags.notBanned ? 'false' : undefined,
        attestation_type: flags.attestationType, page_size: flags.pageSize, page_token: flags.pageToken,
      });
      ctx.out.result(page, () => formatTable(
        ['SPIFFE ID', 'ATTESTATION', 'SVID EXPIRES', 'BANNED'],
        page.agents.map((a) => [a.spiffe_id, a.attestation_type, formatTime(a.x509_svid_expires_at), a.banned ? 'yes' : 'no']),
      ) + (page.next_page_token ? `\nnext page: --page-token ${page.next_page_token}\n` : ''));
    });

  agent.command('show')
    .description('show one agent')
    .argument('<spiffe-id>', 'the agent SPIFFE ID')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const a = await ctx.client.get<AgentJson>(agentPath(id));
      ctx.out.result(a, () => formatFields(agentFields(a)));
    });

  agent.command('evict')
    .description('forget an agent: it must attest again to get an SVID')
    .argument('<spiffe-id>', 'the agent SPIFFE ID')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const a = await ctx.client.post<AgentJson>(`${agentPath(id)}:evict`);
      ctx.out.result(a, () => `evicted agent ${a.spiffe_id}\n`);
    });

  agent.command('ban')
    .description('ban an agent: it can neither renew its SVID nor attest again until evicted')
    .argument('<spiffe-id>', 'the agent SPIFFE ID')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const ctx = cliContext(cmd);
      const a = await ctx.client.post<AgentJson>(`${agentPath(id)}:ban`);
      ctx.out.result(a, () => `banned agent ${a.spiffe_id}\n`);
    });
}
