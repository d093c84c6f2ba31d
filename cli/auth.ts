/** `meshid auth list`: the authenticated identity pairs in each agent's auth map; `meshid observe`; `meshid explain`. */
import { Option, type Command } from 'commander';
import { agentGet, agentSockets, agentStream } from './agents.js';
import { collect } from './context.js';
import { CliError } from './errors.js';
import { formatTable, Output, type OutputFormat } from './output.js';

interface AuthEntry {
  local_identity: number; local_spiffe_id: string | null; remote_identity: number; remote_spiffe_id: string | null;
  remote_node_id: number; remote_node: string | null; auth_type: string; expires_at: string;
}

const outputOf = (cmd: Command): Output => new Output(cmd.optsWithGlobals<{ output: OutputFormat }>().output);
const agentOption = (): Option => new Option('--agent <socket>', 'an agent admin socket (repeatable; default: every one under /run/meshid)').argParser(collect);

export function registerAuthCommands(program: Command): void {
  const auth = program.command('auth').description('mutual authentication state of the agents');
  auth.command('list')
    .description('list authenticated identity pairs (read from the agents\' auth maps)')
    .addOption(agentOption())
    .action(async (flags: { agent?: string[] }, cmd: Command) => {
      const out = outputOf(cmd);
      const answers = await Promise.all(agentSockets(flags.agent).map((s) => agentGet<{ node: string; entries: AuthEntry[] }>(s, '/v1/auth')));
      out.result(answers, () => formatTable(['NODE', 'LOCAL', 'REMOTE', 'REMOTE NODE', 'TYPE', 'EXPIRES'],
        answers.flatMap((a) => a.entries.map((e) => [
          a.node, `${e.local_identity} ${e.local_spiffe_id ?? ''}`.trim(), `${e.remote_identity} ${e.remote_spiffe_id ?? ''}`.trim(),
          e.remote_node ?? String(e.remote_node_id), e.auth_type, e.expires_at,
        ]))));
    });

  program.command('observe')
    .description('watch datapath flow events live (drops with their reason), like hubble observe')
    .addOption(agentOption())
    .addOption(new Option('--verdict <verdict>', 'DROPPED or FORWARDED').choices(['DROPPED', 'FORWARDED', 'dropped', 'forwarded']))
    .option('--identity <id>', 'only flows from or to this security identity')
    .option('--namespace <ns>', 'only flows from or to this namespace')
    .option('--last <n>', 'stop after this many flows')
    .option('--timeout <seconds>', 'stop after this long')
    .action(async (flags: { agent?: string[]; verdict?: string; identity?: string; namespace?: string; last?: string; timeout?: string }, cmd: Command) => {
      const out = outputOf(cmd);
      if (flags.identity !== undefined && !/^\d+$/.test(flags.identity)) throw new CliError(`--identity "${flags.identity}" must be a number (see meshid identity list)`);
      const limit = flags.last !== undefined ? Number(flags.last) : Infinity;
      if (!(limit > 0)) throw new CliError('--last must be a positive number');
      const q = new URLSearchParams();
      if (flags.verdict) q.set('verdict', flags.verdict.toUpperCase());
      if (flags.identity) q.set('identity', flags.identity);
      if (flags.namespace) q.set('namespace', flags.namespace);
      let seen = 0;
      await new Promise<void>((resolve, reject) => {
        const sockets = agentSockets(flags.agent);
        const stops: (() => void)[] = [];
        let open = sockets.length;
        const finish = (err?: Error): void => { for (const s of stops) s(); if (err) reject(err); else resolve(); };
        if (flags.timeout) setTimeout(() => finish(), Number(flags.timeout) * 1000).unref();
        for (const s of sockets) {
          stops.push(agentStream(s, `/v1/observe?${q}`, (line) => {
            if (seen >= limit) return;
            seen++;
            out.write(out.json ? line + '\n' : formatFlow(JSON.parse(line)));
            if (seen >= limit) finish();
          }, (err) => { if (err) finish(err); else if (--open === 0) finish(); }));
        }
      });
    });

  program.command('explain')
    .description('which policy and which auth entry decide a flow')
    .requiredOption('--from <pod|ip>', 'source endpoint (pod name, namespace/pod, or IP)')
    .requiredOption('--to <pod|ip>', 'destination endpoint')
    .requiredOption('--port <n>', 'destination port')
    .addOption(new Option('--protocol <p>', 'TCP, UDP or SCTP').default('TCP'))
    .addOption(agentOption())
    .action(async (flags: { from: string; to: string; port: string; protocol: string; agent?: string[] }, cmd: Command) => {
      const out = outputOf(cmd);
      const q = new URLSearchParams({ from: flags.from, to: flags.to, port: flags.port, protocol: flags.protocol.toUpperCase() });
      const answers = (await Promise.allSettled(agentSockets(flags.agent).map((s) => agentGet<Record<string, unknown>>(s, `/v1/explain?${q}`))))
        .flatMap((r) => (r.status === 'fulfilled' && r.value['applies'] !== false ? [r.value] : []));
      if (answers.length === 0) throw new CliError(`no agent hosts ${flags.from} or ${flags.to}`);
      out.result(answers, () => answers.map((a) => String(a['text'] ?? JSON.stringify(a, null, 2))).join('\n') + '\n');
    });
}

interface Flow { time: string; verdict: string; drop_reason_desc?: string; direction: string; node: string; protocol: string; auth_type: string;
  source: { ip: string; port: number; identity: number; namespace?: string; pod?: string }; destination: Flow['source'] }

function formatFlow(f: Flow): string {
  const side = (s: Flow['source']): string => `${s.namespace && s.pod ? `${s.namespace}/${s.pod}` : s.ip}:${s.port} (ID:${s.identity})`;
  const verdict = f.verdict === 'DROPPED' ? `DROPPED (${(f.drop_reason_desc ?? '').replace(/_/g, ' ').toLowerCase()})` : 'FORWARDED';
  return `${f.time}  ${f.node}  ${side(f.source)} -> ${side(f.destination)} ${f.protocol} ${f.direction.toLowerCase()} ${verdict}${f.auth_type !== 'DISABLED' ? ` auth=${f.auth_type}` : ''}\n`;
}
