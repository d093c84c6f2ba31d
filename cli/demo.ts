/** `meshid demo up|down|status|add-pod`: the whole system on this machine, in network namespaces (root only). */
import type { Command } from 'commander';
import { labelCollector } from '../common/flags.js';
import { DemoCluster } from '../deploy/devnet/index.js';
import { CliError } from './errors.js';
import { Output, type OutputFormat } from './output.js';

function cluster(flags: { prefix?: string; stateDir?: string; servers?: number }, say: (l: string) => void): DemoCluster {
  if (process.getuid?.() !== 0) throw new CliError('the demo builds network namespaces, eBPF programs and WireGuard devices: run it as root');
  return new DemoCluster({
    ...(flags.prefix ? { prefix: flags.prefix } : {}), ...(flags.stateDir ? { stateDir: flags.stateDir } : {}), ...(flags.servers ? { servers: flags.servers } : {}), say,
  });
}

function serverCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new CliError(`--servers must be a whole number from 1 to 5, not "${value}"`);
  return n;
}

const collectLabel = labelCollector((message) => new CliError(`${message} (labels)`));

export function registerDemoCommands(program: Command): void {
  const demo = program.command('demo').description('bring up a two-node meshid cluster in network namespaces on this machine');
  demo.command('up')
    .description('build the devnet, start the server and agents, apply a policy that requires authentication, and show it working')
    .option('--prefix <p>', 'namespace prefix', 'md')
    .option('--servers <n>', 'meshid-servers: more than one run on a PostgreSQL the demo starts, and the demo kills one under traffic', serverCount, 1)
    .action(async (flags: { prefix: string; servers: number }) => {
      const say = (l: string): void => { process.stdout.write(l + '\n'); };
      const c = cluster(flags, say);
      try {
        await c.up();
        await c.show();
        if (flags.servers > 1) await c.failover();
      } catch (err) {
        process.stderr.write(`meshid: demo failed: ${(err as Error).message}\n(logs: ${c.stateDir}; \`meshid demo down\` cleans up)\n`);
        throw new CliError('demo up failed');
      }
      say('');
      say('Explore:');
      say('  meshid entry list                  registration entries (SPIRE-style)');
      say('  meshid auth list                   authenticated identity pairs, from the agents\' auth maps');
      say('  meshid observe --verdict DROPPED   live datapath drops, with reasons');
      say('  meshid explain --from legacy --to backend --port 8080');
      say('  meshid demo add-pod web2 --label app=frontend   a new pod, held until its pair is authenticated');
      if (flags.servers > 1) say('  meshid server list                 the servers, their heartbeats and the leader');
      say('  meshid demo status | meshid demo down');
    });
  demo.command('status')
    .description('show the demo\'s processes, nodes, pods and agents')
    .option('--prefix <p>', 'namespace prefix', 'md')
    .action(async (flags: { prefix: string }, cmd: Command) => {
      const out = new Output(cmd.optsWithGlobals<{ output: OutputFormat }>().output);
      const c = cluster(flags, () => {});
      if (!c.isUp) throw new CliError(`no demo "${flags.prefix}" is up; \`meshid demo up\` brings it up`);
      const st = await c.status();
      out.result(st, () => {
        const procs = (st['processes'] as { name: string; pid: number; running: boolean }[]).map((p) => `  ${p.name.padEnd(10)} pid ${p.pid} ${p.running ? 'running' : 'NOT RUNNING'}`);
        const pods = (st['pods'] as { name: string; node: string; ip: string }[]).map((p) => `  ${p.name.padEnd(10)} on ${p.node} ${p.ip}`);
        const agents = Object.entries(st['agents'] as Record<string, Record<string, unknown>>).map(([n, a]) => `  ${n}: ${a['error'] ? `unreachable (${a['error']})` : `sync ${a['sync']}, ${a['svids']} SVIDs, node id ${a['node_id']}`}`);
        return ['processes:', ...procs, 'pods:', ...pods, 'agents:', ...agents, ''].join('\n');
      });
    });
  demo.command('add-pod')
    .description('a pod that appears while the policy is in force: its namespace and entry, then its node\'s agent holds it until its pairs are authenticated, and its first request goes to backend')
    .argument('<name>', 'pod name (1-12 of [a-z0-9-])')
    .option('--node <node>', 'n1 or n2', 'n1')
    .option('--service-account <sa>', 'its ServiceAccount (default: the pod name)')
    .option('--label <key=value>', 'a label (repeatable); app=frontend makes the demo policy apply to it', collectLabel, {})
    .option('--no-wait', 'do not hold the pod until it is ready (its first SYN may be dropped, as in Cilium)')
    .option('--prefix <p>', 'namespace prefix', 'md')
    .option('--state-dir <dir>', 'where the demo keeps its state (default /var/lib/meshid/demo-<prefix>)')
    .action(async (name: string, flags: { node: string; serviceAccount?: string; label: Record<string, string>; wait: boolean; prefix: string; stateDir?: string }) => {
      const c = cluster(flags, (l) => { process.stdout.write(l + '\n'); });
      if (!c.isUp) throw new CliError(`no demo "${flags.prefix}" is up; \`meshid demo up\` brings it up`);
      const r = await c.joinPod(name, { node: flags.node, labels: flags.label, wait: flags.wait, ...(flags.serviceAccount ? { serviceAccount: flags.serviceAccount } : {}) });
      if (!r.first.ok) throw new CliError(`${name} did not reach backend: ${r.first.body}`);
    });
  demo.command('down')
    .description('remove everything the demo made (namespaces, links, pinned maps, processes, files)')
    .option('--prefix <p>', 'namespace prefix', 'md')
    .action(async (flags: { prefix: string }) => {
      await cluster(flags, () => {}).down();
      process.stdout.write(`demo "${flags.prefix}" is down\n`);
    });
}
