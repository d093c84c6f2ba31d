/**
 * `meshid observe`, `meshid auth list` and `meshid explain`: the whole cluster
 * through the server's admin API (what every agent relays), from any machine
 * that reaches it; `--agent SOCKET` reads one local agent's admin socket instead.
 * `observe` takes Hubble's flags and prints Hubble's formats.
 */
import { Option, type Command } from 'commander';
import { compactFlow, filterToQuery, flowDecision, parseSince, FlowFilterError, type Flow, type FlowFilter, type FlowResponse, type NodeStatusResponse } from '../api/flow.js';
import type { AuthEntryJson, ClusterAuthJson } from '../api/observe.js';
import { agentGet, agentSockets, agentStream } from './agents.js';
import { cliContext, collect } from './context.js';
import { CliError, UsageError } from './errors.js';
import { formatFields, formatTable, Output, type OutputFormat } from './output.js';

const outputOf = (cmd: Command): Output => new Output(cmd.optsWithGlobals<{ output: OutputFormat }>().output);
const agentOption = (): Option => new Option('--agent <socket>', 'read this local agent admin socket instead of the server (repeatable)').argParser(collect);

interface ObserveFlags {
  agent?: string[]; follow?: boolean; last?: string; since?: string; verdict?: string; namespace?: string; pod?: string;
  fromPod?: string; toPod?: string; identity?: string; node?: string; port?: string; type?: string; timeout?: string;
}

function wholeNumber(v: string | undefined, flag: string, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) > max) throw new UsageError(`${flag} "${v}" must be a whole number up to ${max}`);
  return Number(v);
}

function filterOf(f: ObserveFlags): FlowFilter {
  const filter: FlowFilter = {};
  if (f.verdict) filter.verdict = f.verdict.toUpperCase() as 'FORWARDED' | 'DROPPED';
  if (f.type) filter.type = f.type as 'drop' | 'trace';
  if (f.namespace) filter.namespace = f.namespace;
  if (f.pod) filter.pod = f.pod;
  if (f.fromPod) filter.fromPod = f.fromPod;
  if (f.toPod) filter.toPod = f.toPod;
  if (f.node) filter.node = f.node;
  const identity = wholeNumber(f.identity, '--identity', 0xffffffff);
  if (identity !== undefined) filter.identity = identity;
  const port = wholeNumber(f.port, '--port', 65535);
  if (port !== undefined) filter.port = port;
  if (f.since) {
    try { filter.sinceMs = parseSince(f.since, Date.now()); } catch (err) { throw new UsageError(`--since: ${(err as FlowFilterError).message}`); }
  }
  return filter;
}

/** One flow in the chosen format (json/jsonpb: Hubble's GetFlowsResponse line). */
function render(format: OutputFormat, r: FlowResponse): string {
  const f = r.flow;
  switch (format) {
    case 'json':
    case 'jsonpb':
      return JSON.stringify(r) + '\n';
    case 'dict': {
      const p = f.l4.TCP ?? f.l4.UDP ?? f.l4.SCTP;
      const end = (ep: Flow['source'], ip: string, port?: number): string =>
        `${ep.namespace && ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip}${port !== undefined ? `:${port}` : ''} (ID:${ep.identity})`;
      return formatFields([
        ['  TIMESTAMP', f.time], ['     SOURCE', end(f.source, f.IP.source, p?.source_port)],
        ['DESTINATION', end(f.destination, f.IP.destination, p?.destination_port)], ['       NODE', f.node_name],
        ['       TYPE', f.verdict === 'FORWARDED' ? 'trace' : flowDecision(f).replace(/ DROPPED$/, '')], ['    VERDICT', f.verdict],
        ['  DIRECTION', f.traffic_direction], ['       AUTH', f.auth_type], ['    SUMMARY', f.Summary],
      ]).replace(/ : /g, ': ') + '------------\n';
    }
    default:
      return compactFlow(f) + '\n';
  }
}

function tableRow(f: Flow): string[] {
  const p = f.l4.TCP ?? f.l4.UDP ?? f.l4.SCTP;
  const end = (ep: Flow['source'], ip: string, port?: number): string =>
    `${ep.namespace && ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip}${port !== undefined ? `:${port}` : ''}`;
  const why = flowDecision(f).replace(/ (DROPPED|FORWARDED)$/, '');
  return [f.time, f.node_name, end(f.source, f.IP.source, p?.source_port), end(f.destination, f.IP.destination, p?.destination_port),
    why === 'FORWARDED' ? 'trace' : why, f.verdict, f.Summary];
}

function statusLine(format: OutputFormat, s: NodeStatusResponse): string {
  if (format === 'json' || format === 'jsonpb') return JSON.stringify(s) + '\n';
  return `${s.node_status.state_change}: ${s.node_status.message}\n`;
}

export function registerAuthCommands(program: Command): void {
  const auth = program.command('auth').description('mutual authentication state of the agents');
  auth.command('list')
    .description('list every node\'s authenticated identity pairs (through the server; --agent for a local agent)')
    .addOption(agentOption())
    .action(async (flags: { agent?: string[] }, cmd: Command) => {
      const out = outputOf(cmd);
      let answer: ClusterAuthJson;
      if (flags.agent) {
        const nodes = await Promise.all(agentSockets(flags.agent).map((s) => agentGet<{ node: string; entries: AuthEntryJson[] }>(s, '/v1/auth')));
        answer = { nodes: nodes.map((n) => ({ node: n.node, state: 'connected', since: '', entries: n.entries })), unavailable: [] };
      } else {
        answer = await cliContext(cmd).client.get<ClusterAuthJson>('/v1/auth');
      }
      out.result(answer, () => formatTable(['NODE', 'LOCAL', 'REMOTE', 'REMOTE NODE', 'TYPE', 'EXPIRES'],
        answer.nodes.flatMap((a) => a.entries.map((e) => [
          a.node, `${e.local_identity} ${e.local_spiffe_id ?? ''}`.trim(), `${e.remote_identity} ${e.remote_spiffe_id ?? ''}`.trim(),
          e.remote_node ?? String(e.remote_node_id), e.auth_type, e.expires_at,
        ]))) + (answer.unavailable.length ? `unavailable (no current answer): ${answer.unavailable.join(', ')}\n` : ''));
    });

  program.command('observe')
    .description('flows of the whole cluster, as hubble observe prints them (through the server; --agent for a local agent)')
    .addOption(agentOption())
    .option('-f, --follow', 'keep printing new flows')
    .option('--last <n>', 'the newest N flows first (default 20 without --follow)')
    .option('--since <when>', 'flows since a duration ago (5m, 1h) or an RFC 3339 time')
    .addOption(new Option('--verdict <verdict>', 'FORWARDED or DROPPED').choices(['DROPPED', 'FORWARDED', 'dropped', 'forwarded']))
    .addOption(new Option('--type <type>', 'drop or trace (a new forwarded flow)').choices(['drop', 'trace']))
    .option('--namespace <ns>', 'either end in this namespace')
    .option('--pod <pod>', 'either end is this pod ([namespace/]name prefix)')
    .option('--from-pod <pod>', 'the source is this pod')
    .option('--to-pod <pod>', 'the destination is this pod')
    .option('--identity <id>', 'either end has this security identity')
    .option('--node <name>', 'flows seen on this node')
    .option('--port <port>', 'either port')
    .option('--timeout <seconds>', 'stop following after this long')
    .action(async (flags: ObserveFlags, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ output: OutputFormat }>();
      // observe prints Hubble's compact lines unless -o was given
      const format: OutputFormat = cmd.getOptionValueSourceWithGlobals('output') === 'default' ? 'compact' : opts.output;
      const out = new Output(format);
      const filter = filterOf(flags);
      const last = wholeNumber(flags.last, '--last', 1_000_000);
      const timeout = wholeNumber(flags.timeout, '--timeout', 86_400);
      // -o table: Hubble's columns, aligned over what was printed (so it waits for the end; not with --follow)
      const rows: string[][] = [];
      const print = (line: string): void => {
        const obj = JSON.parse(line) as FlowResponse | NodeStatusResponse;
        if (format === 'table' && !flags.follow && !('node_status' in obj)) { rows.push(tableRow(obj.flow)); return; }
        out.write('node_status' in obj ? statusLine(format, obj) : render(format, obj));
      };
      const ac = new AbortController();
      const stopOnSignal = (): void => ac.abort();
      process.once('SIGINT', stopOnSignal);
      if (timeout !== undefined) setTimeout(() => ac.abort(), timeout * 1000).unref();
      try {
        if (flags.agent) await observeAgents(flags, filter, last, (flow) => print(JSON.stringify({ flow, node_name: flow.node_name, time: flow.time })), ac.signal);
        else {
          const q = Object.fromEntries(filterToQuery(filter));
          await cliContext(cmd).client.stream('/v1/flows', { ...q, ...(last !== undefined ? { last } : {}), ...(flags.follow ? { follow: true } : {}) }, print, ac.signal);
        }
      } finally {
        process.removeListener('SIGINT', stopOnSignal);
      }
      if (rows.length) out.write(formatTable(['TIMESTAMP', 'NODE', 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'], rows));
    });

  program.command('explain')
    .description('which policy and which auth entry decide a flow (asked of the agents through the server; --agent for a local agent)')
    .requiredOption('--from <pod|ip>', 'source endpoint (pod name, namespace/pod, or IP)')
    .requiredOption('--to <pod|ip>', 'destination endpoint')
    .requiredOption('--port <n>', 'destination port')
    .addOption(new Option('--protocol <p>', 'TCP, UDP or SCTP').default('TCP'))
    .addOption(agentOption())
    .action(async (flags: { from: string; to: string; port: string; protocol: string; agent?: string[] }, cmd: Command) => {
      const out = outputOf(cmd);
      const query = { from: flags.from, to: flags.to, port: flags.port, protocol: flags.protocol.toUpperCase() };
      if (!flags.agent) {
        const answer = await cliContext(cmd).client.get<{ explanations: unknown[]; unavailable: string[]; text: string }>('/v1/explain', query);
        out.result(answer, () => answer.text + '\n' + (answer.unavailable.length ? `not asked (unavailable): ${answer.unavailable.join(', ')}\n` : ''));
        return;
      }
      const answers = (await Promise.allSettled(agentSockets(flags.agent).map((s) => agentGet<Record<string, unknown>>(s, `/v1/explain?${new URLSearchParams(query)}`))))
        .flatMap((r) => (r.status === 'fulfilled' && r.value['applies'] !== false ? [r.value] : []));
      if (answers.length === 0) throw new CliError(`no agent hosts ${flags.from} or ${flags.to}`);
      out.result(answers, () => answers.map((a) => String(a['text'] ?? JSON.stringify(a, null, 2))).join('\n') + '\n');
    });
}

/** `observe --agent`: the local agents' admin sockets, with the same filters. */
function observeAgents(flags: ObserveFlags, filter: FlowFilter, last: number | undefined, onFlow: (f: Flow) => void, signal: AbortSignal): Promise<void> {
  const q = filterToQuery(filter);
  if (last !== undefined) q.set('last', String(last));
  else if (!flags.follow) q.set('last', '20');
  if (flags.follow) q.set('follow', 'true');
  return new Promise<void>((resolve, reject) => {
    const sockets = agentSockets(flags.agent);
    const stops: Array<() => void> = [];
    let open = sockets.length;
    const finish = (err?: Error): void => { for (const s of stops) s(); if (err) reject(err); else resolve(); };
    signal.addEventListener('abort', () => finish());
    for (const s of sockets) {
      stops.push(agentStream(s, `/v1/observe?${q}`, (line) => onFlow(JSON.parse(line) as Flow), (err) => { if (err) finish(err); else if (--open === 0) finish(); }));
    }
  });
}
