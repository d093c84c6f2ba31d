import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AlreadyExists, FailedPrecondition, InvalidArgument, MeshidError, NotFound } from '../../spiffe/index.js';
import { formatIpv4, isHostOf, parseIpv4Cidr } from './ipv4.js';
import { OwnedProcess, type SpawnOptions } from './process.js';
import { planDevnet, podNameSchema, PREFIX_PATTERN, type DevnetPod, type DevnetSpec, type DevnetState } from './spec.js';

export const DEFAULT_STATE_DIR = '/run/meshid/devnet';

export interface DevnetOptions {
  /** Where the state file `<prefix>.json` lives, so a later process can describe or destroy the devnet. */
  readonly stateDir?: string;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Throw when the command exits non-zero (default true). */
  readonly check?: boolean;
  readonly input?: string;
  readonly timeoutMs?: number;
  /** Default: this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
}

/** A devnet command that exited non-zero; the message holds the command line and its stderr. */
export class DevnetCommandFailed extends MeshidError {
  constructor(readonly argv: readonly string[], readonly result: ExecResult) {
    super('internal', `\`${argv.join(' ')}\` exited ${result.code}: ${result.stderr.trim() || result.stdout.trim() || 'no output'}`);
  }
}

/**
 * A cluster's network on one Linux machine, built from network namespaces (as root):
 * an underlay bridge, one namespace per node, one per pod. See README.md beside this
 * file for the layout. Every name is `<prefix>-…`, and the plan is written to the
 * state file before anything is made, so `destroy()` (from this or a later process)
 * removes everything, even after a create that failed or was killed half-way.
 */
export class Devnet {
  private state: DevnetState | undefined;
  private readonly owned = new Set<OwnedProcess>();
  private readonly stateDir: string;

  constructor(readonly prefix: string, options: DevnetOptions = {}) {
    if (!PREFIX_PATTERN.test(prefix)) {
      throw new InvalidArgument(`devnet prefix "${prefix}" must be 1-10 characters of [a-z0-9], starting with a letter`, 'prefix');
    }
    this.stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  }

  get statePath(): string {
    return join(this.stateDir, `${this.prefix}.json`);
  }

  /** The devnets whose state files are in `stateDir`. */
  static list(options: DevnetOptions = {}): DevnetState[] {
    const dir = options.stateDir ?? DEFAULT_STATE_DIR;
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((f) => f.endsWith('.json'))
      .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as DevnetState);
  }

  /**
   * Builds the devnet. Refuses (AlreadyExists) when the prefix is in use: a state
   * file or a namespace of that prefix exists. On failure, removes what it made.
   */
  async create(spec: DevnetSpec): Promise<DevnetState> {
    const state = planDevnet(this.prefix, spec);
    if (existsSync(this.statePath)) {
      throw new AlreadyExists(`devnet prefix ${this.prefix} is in use: state file ${this.statePath} exists (destroy it first)`, 'prefix');
    }
    const inUse = (await this.prefixNamespaces())[0];
    if (inUse !== undefined) {
      throw new AlreadyExists(`devnet prefix ${this.prefix} is in use: network namespace ${inUse} exists (destroy it first)`, 'prefix');
    }
    this.state = state;
    this.writeState();
    try {
      await this.build(state);
    } catch (err) {
      await this.destroy().catch(() => {});
      throw err;
    }
    state.status = 'ready';
    this.writeState();
    return this.describe();
  }

  /** The devnet's names and addresses, from memory or from the state file of an earlier process. */
  describe(): DevnetState {
    const state = this.state ?? this.readState();
    if (state === undefined) throw new NotFound(`no devnet with prefix ${this.prefix} (no state file ${this.statePath})`, 'prefix');
    return structuredClone(state);
  }

  /** Runs `argv` inside one of this devnet's namespaces and collects its output. */
  async exec(namespace: string, argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.checkNamespace(namespace);
    return run(['ip', 'netns', 'exec', namespace, ...argv], options);
  }

  /** Starts `argv` inside one of this devnet's namespaces; the devnet owns it and `destroy()` stops it. */
  spawnIn(namespace: string, argv: readonly string[], options: SpawnOptions = {}): OwnedProcess {
    this.checkNamespace(namespace);
    const proc = new OwnedProcess(['ip', 'netns', 'exec', namespace, ...argv], options);
    this.owned.add(proc);
    void proc.exited.then(() => this.owned.delete(proc));
    return proc;
  }

  /**
   * Starts a TCP echo server (node) on `port` in a namespace, resolved once it listens:
   * the far end of `probeTcp`, so reachability checks need nothing beyond node.
   */
  async serveEcho(namespace: string, port: number): Promise<OwnedProcess> {
    const proc = this.spawnIn(namespace, [process.execPath, '-e', ECHO_SERVER, String(port)], { stdio: ['ignore', 'pipe', 'pipe'], env: PROBE_ENV });
    let output = '';
    const listening = new Promise<boolean>((resolve) => {
      proc.stdout!.on('data', (c: Buffer) => { output += c.toString(); if (output.includes('listening')) resolve(true); });
      proc.stderr!.on('data', (c: Buffer) => { output += c.toString(); });
      void proc.exited.then(() => resolve(false));
    });
    if (!(await listening)) throw new Error(`echo server in ${namespace} on port ${port} did not start: ${output.trim()}`);
    return proc;
  }

  /** Whether a TCP connection from `namespace` to host:port carries a line there and back within `timeoutMs`. */
  async probeTcp(namespace: string, host: string, port: number, timeoutMs = 2_000): Promise<boolean> {
    const result = await this.exec(namespace, [process.execPath, '-e', ECHO_CLIENT, host, String(port), String(timeoutMs)],
      { check: false, timeoutMs: timeoutMs + 5_000, env: PROBE_ENV });
    return result.code === 0;
  }

  /**
   * Stops every process in the devnet's namespaces, deletes the namespaces (their
   * links go with them), the root-namespace links it made, stale WireGuard sockets of
   * its nodes' devices, and the state file. Safe to call again, or with no devnet.
   */
  async destroy(): Promise<void> {
    const state = this.state ?? this.readState();
    if (state !== undefined) {
      state.status = 'destroying';
      this.state = state;
      this.writeState();
    }
    await Promise.all([...this.owned].map((p) => p.stop()));
    const planned = state === undefined ? [] : [
      ...state.pods.map((p) => p.namespace), ...state.nodes.map((n) => n.namespace), state.underlay.namespace,
    ];
    // Namespaces of this prefix that the state does not list: left by a create whose state file was lost.
    const extra = (await this.prefixNamespaces()).filter((ns) => !planned.includes(ns));
    for (const ns of [...planned, ...extra]) await deleteNamespace(ns);
    for (const link of state?.rootLinks ?? []) {
      if ((await run(['ip', 'link', 'show', 'dev', link], { check: false })).code === 0) {
        await run(['ip', 'link', 'del', 'dev', link], { check: false });
      }
    }
    for (const node of state?.nodes ?? []) await removeDeadSocket(`/var/run/wireguard/${node.wgDevice}.sock`);
    rmSync(this.statePath, { force: true });
    this.state = undefined;
  }

  private checkNamespace(namespace: string): void {
    if (!namespace.startsWith(`${this.prefix}-`)) {
      throw new InvalidArgument(`namespace ${namespace} is not one of devnet ${this.prefix}'s`, 'namespace');
    }
  }

  private async prefixNamespaces(): Promise<string[]> {
    const listed = await run(['ip', 'netns', 'list']);
    return listed.stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${this.prefix}-`));
  }

  private readState(): DevnetState | undefined {
    try {
      return JSON.parse(readFileSync(this.statePath, 'utf8')) as DevnetState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  private writeState(): void {
    mkdirSync(this.stateDir, { recursive: true, mode: 0o755 });
    const tmp = `${this.statePath}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state, null, 2) + '\n');
    renameSync(tmp, this.statePath);
  }

  private async build(state: DevnetState): Promise<void> {
    const ul = state.underlay.namespace;
    const prefixLen = state.underlay.cidr.split('/')[1]!;
    await addNamespace(ul, ['net/ipv6/conf/all/disable_ipv6=1', 'net/ipv6/conf/default/disable_ipv6=1']);
    // A quiet underlay: no multicast on its links, so the kernel sends no IGMP reports when they come up
    // and everything that crosses the bridge is traffic between nodes (the e2e tests capture it).
    await ipBatch(ul, [['link', 'add', state.underlay.bridge, 'type', 'bridge', 'mcast_snooping', '0'], ['link', 'set', state.underlay.bridge, 'multicast', 'off', 'up']]);

    if (state.host !== null) {
      // Made in the root namespace with its peer moved straight into the underlay: a name clash fails before anything exists.
      await run(['ip', 'link', 'add', state.host.link, 'type', 'veth', 'peer', 'name', 'host', 'netns', ul]);
      state.rootLinks.push(state.host.link);
      this.writeState();
      try { writeFileSync(`/proc/sys/net/ipv6/conf/${state.host.link}/disable_ipv6`, '1'); } catch { /* IPv6 off already */ }
      await run(['ip', 'address', 'add', `${state.host.address}/${prefixLen}`, 'dev', state.host.link]);
      await run(['ip', 'link', 'set', state.host.link, 'multicast', 'off', 'up']);
      await ipBatch(ul, [['link', 'set', 'host', 'master', state.underlay.bridge, 'multicast', 'off', 'up']]);
    }

    for (const node of state.nodes) {
      await addNamespace(node.namespace, [
        'net/ipv6/conf/all/disable_ipv6=1', 'net/ipv6/conf/default/disable_ipv6=1', 'net/ipv4/ip_forward=1',
        // Pod replies and WireGuard traffic come in on other links than the routes out: no reverse-path filter.
        'net/ipv4/conf/all/rp_filter=0', 'net/ipv4/conf/default/rp_filter=0',
      ]);
      const port = `n-${node.name}`;
      await ipBatch(ul, [
        ['link', 'add', port, 'type', 'veth', 'peer', 'name', node.underlayLink, 'netns', node.namespace],
        ['link', 'set', port, 'master', state.underlay.bridge, 'multicast', 'off', 'up'],
      ]);
      await ipBatch(node.namespace, [
        ['address', 'add', `${node.underlayIp}/${prefixLen}`, 'dev', node.underlayLink],
        ['link', 'set', node.underlayLink, 'multicast', 'off', 'up'],
      ]);
    }

    for (const pod of state.pods) await this.buildPod(state, pod);
  }

  /** A pod's namespace, its veth to the node, and the routes both ways (what a CNI plugin's ADD does). */
  private async buildPod(state: DevnetState, pod: DevnetPod): Promise<void> {
    const node = state.nodes.find((n) => n.name === pod.node)!;
    await addNamespace(pod.namespace, ['net/ipv6/conf/all/disable_ipv6=1', 'net/ipv6/conf/default/disable_ipv6=1']);
    await ipBatch(node.namespace, [
      ['link', 'add', pod.hostVeth, 'type', 'veth', 'peer', 'name', pod.interface, 'netns', pod.namespace],
      // The gateway address on each pod veth answers the pod's ARP for its default gateway.
      ['address', 'add', `${node.gatewayIp}/32`, 'dev', pod.hostVeth],
      ['link', 'set', pod.hostVeth, 'up'],
      ['route', 'add', `${pod.ip}/32`, 'dev', pod.hostVeth, 'src', node.gatewayIp],
    ]);
    await ipBatch(pod.namespace, [
      ['address', 'add', `${pod.ip}/32`, 'dev', pod.interface],
      ['link', 'set', pod.interface, 'up'],
      ['route', 'add', `${node.gatewayIp}/32`, 'dev', pod.interface, 'scope', 'link'],
      ['route', 'add', 'default', 'via', node.gatewayIp, 'dev', pod.interface],
    ]);
  }

  /**
   * Adds a pod to a devnet that is up: the next free address of its node's pod
   * CIDR, its namespace and veth. The agent learns of it separately (as from a
   * CNI plugin: `meshid-agent endpoint add`).
   */
  async addPod(name: string, nodeName: string): Promise<DevnetPod> {
    const state = this.state ?? this.readState();
    if (state === undefined || state.status !== 'ready') throw new NotFound(`no ready devnet with prefix ${this.prefix}`, 'prefix');
    const parsed = podNameSchema.safeParse(name);
    if (!parsed.success) throw new InvalidArgument(`pod name "${name}": ${parsed.error.issues[0]!.message}`, 'name');
    if (state.pods.some((p) => p.name === name) || state.nodes.some((n) => n.name === name) || name === 'ul') {
      throw new AlreadyExists(`devnet name "${name}" is taken`, 'name');
    }
    const node = state.nodes.find((n) => n.name === nodeName);
    if (!node) throw new NotFound(`the devnet has no node "${nodeName}"`, 'node');
    const cidr = parseIpv4Cidr(node.podCidr)!;
    const taken = new Set([node.gatewayIp, ...state.pods.map((p) => p.ip)]);
    let ip: string | undefined;
    for (let addr = cidr.network + 2; isHostOf(cidr, addr) && ip === undefined; addr++) {
      if (!taken.has(formatIpv4(addr))) ip = formatIpv4(addr);
    }
    if (ip === undefined) throw new FailedPrecondition(`node ${nodeName}'s pod CIDR ${node.podCidr} is full`, 'node');
    const pod: DevnetPod = { name, node: nodeName, namespace: `${this.prefix}-${name}`, ip, interface: 'eth0', hostVeth: `v-${name}` };
    this.state = { ...state, pods: [...state.pods, pod] };
    this.writeState(); // before anything exists: destroy() finds it even if the build stops halfway
    await this.buildPod(this.state, pod);
    return structuredClone(pod);
  }

}

// The probes are plain node scripts: no NODE_OPTIONS preloads (a test runner's hooks) to slow their start.
const PROBE_ENV: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

const ECHO_SERVER = `
const server = require('node:net').createServer((c) => { c.on('error', () => {}); c.pipe(c); });
server.listen(Number(process.argv[1]), () => console.log('listening'));
process.on('SIGTERM', () => process.exit(0));`;

const ECHO_CLIENT = `
const [host, port, timeoutMs] = process.argv.slice(1);
setTimeout(() => process.exit(3), Number(timeoutMs)).unref();
const c = require('node:net').connect({ host, port: Number(port) }, () => c.write('meshid-probe\\n'));
let got = '';
c.on('data', (b) => { got += b; if (got === 'meshid-probe\\n') process.exit(0); });
c.on('error', () => process.exit(1));`;

async function run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  const result = await new Promise<ExecResult>((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 128), stdout, stderr });
    });
    child.stdin.on('error', () => { /* exited before reading its input */ });
    child.stdin.end(options.input ?? '');
  });
  if ((options.check ?? true) && result.code !== 0) throw new DevnetCommandFailed(argv, result);
  return result;
}

/** Runs `ip` commands in a namespace in one `ip -batch` process; it stops at the first command that fails. */
async function ipBatch(namespace: string, commands: readonly (readonly string[])[]): Promise<void> {
  const argv = ['ip', '-n', namespace, '-batch', '-'];
  const result = await run(argv, { input: commands.map((c) => c.join(' ')).join('\n') + '\n', check: false });
  if (result.code !== 0) {
    // `ip -batch` names the failing line by number; say which command it was.
    const line = /Command failed -:(\d+)/.exec(result.stderr)?.[1];
    const failed = line === undefined ? commands.map((c) => c.join(' ')).join('; ') : commands[Number(line) - 1]?.join(' ') ?? '';
    throw new DevnetCommandFailed(['ip', '-n', namespace, ...failed.split(' ')], result);
  }
}

/** Creates a namespace, brings its loopback up and sets its sysctls (`path=value` under /proc/sys). */
async function addNamespace(namespace: string, sysctls: readonly string[]): Promise<void> {
  await run(['ip', 'netns', 'add', namespace]);
  // /proc/sys/net shows the namespace of the process that reads it, so the writes run inside.
  const script = ['ip link set lo up', ...sysctls.map((s) => {
    const [path, value] = s.split('=');
    return `echo ${value} > /proc/sys/${path}`;
  })].join(' && ');
  await run(['ip', 'netns', 'exec', namespace, 'sh', '-c', script]);
}

async function deleteNamespace(namespace: string): Promise<void> {
  if (!existsSync(`/run/netns/${namespace}`)) return;
  const pids = (): number[] => pidsIn(namespace).filter((pid) => pid !== process.pid && isAlive(pid));
  let remaining = pids();
  for (const pid of remaining) signal(pid, 'SIGTERM');
  const deadline = Date.now() + 3_000;
  while (remaining.length > 0 && Date.now() < deadline) {
    await sleep(25);
    remaining = remaining.filter(isAlive);
  }
  for (const pid of remaining) signal(pid, 'SIGKILL');
  const killDeadline = Date.now() + 5_000;
  while ((remaining = remaining.filter(isAlive)).length > 0) {
    if (Date.now() > killDeadline) throw new Error(`processes ${remaining.join(', ')} in namespace ${namespace} survive SIGKILL`);
    await sleep(25);
  }
  const again = pids();
  if (again.length > 0) throw new Error(`processes ${again.join(', ')} appeared in namespace ${namespace} while it was being destroyed`);
  await run(['ip', 'netns', 'del', namespace]);
}

/** The processes whose network namespace is the named one (what `ip netns pids` prints, without a process per call). */
function pidsIn(namespace: string): number[] {
  let inode: number;
  try {
    inode = statSync(`/run/netns/${namespace}`).ino;
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (statSync(`/proc/${entry}/ns/net`).ino === inode) pids.push(Number(entry));
    } catch { /* exited meanwhile, or a kernel thread */ }
  }
  return pids;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try { process.kill(pid, sig); } catch { /* already gone */ }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie waits only for its parent to reap it: it holds no namespace resources.
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Removes a wireguard-go socket file whose process is gone (a SIGKILL leaves it behind). */
async function removeDeadSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const sock = connect(path);
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
  if (!alive) rmSync(path, { force: true });
}
