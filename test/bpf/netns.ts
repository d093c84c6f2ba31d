/**
 * Test topology for the datapath: one "node" network namespace with a veth to
 * each pod namespace (the node side carries the tc programs), optionally a
 * "remote" namespace that stands for another node, and a PodShell per pod to
 * open and use TCP connections from inside it. Names carry the pid and a tag,
 * so concurrent test runs do not collide; destroy() removes everything.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function inNetns(ns: string, cmd: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface Pod {
  readonly ns: string;
  /** The node-side interface, in the node namespace. */
  readonly nodeIf: string;
  readonly ipv4: string;
  readonly ipv6: string;
}

/** One node namespace, pods attached to it by veths, and a remote-node namespace on demand. */
export class Topology {
  readonly prefix: string;
  readonly nodeNs: string;
  readonly pods: Pod[] = [];
  remote: Pod | undefined;
  readonly #namespaces: string[] = [];

  /** `subnet`: the second octet of 10.x (and fdxx::) so that topologies of one run differ. */
  constructor(tag: string, readonly subnet: number) {
    this.prefix = `mshid-${process.pid}-${tag}`;
    this.nodeNs = `${this.prefix}-node`;
  }

  get nodeNsPath(): string { return `/run/netns/${this.nodeNs}`; }

  create(podCount: number): void {
    this.#addNs(this.nodeNs);
    inNetns(this.nodeNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1');
    for (let i = 1; i <= podCount; i++) this.pods.push(this.#addPeer(`pod${i}`, `lxc${i}`, i));
  }

  /** A namespace behind the node-side interface `uplink`, standing for traffic from another node. */
  addRemote(): Pod {
    this.remote = this.#addPeer('remote', 'uplink', 99);
    return this.remote;
  }

  destroy(): void {
    for (const ns of this.#namespaces.reverse()) {
      try { ip('netns', 'del', ns); } catch { /* already gone */ }
    }
    this.#namespaces.length = 0;
  }

  #addNs(ns: string): void {
    ip('netns', 'add', ns);
    this.#namespaces.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  #addPeer(name: string, nodeIf: string, index: number): Pod {
    const ns = `${this.prefix}-${name}`;
    const v4 = `10.${this.subnet}.${index}`;
    const v6 = `fd${this.subnet.toString(16).padStart(2, '0')}:${index}:`;
    this.#addNs(ns);
    ip('-n', this.nodeNs, 'link', 'add', nodeIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('-n', this.nodeNs, 'addr', 'add', `${v4}.1/24`, 'dev', nodeIf);
    ip('-n', this.nodeNs, '-6', 'addr', 'add', `${v6}:1/64`, 'dev', nodeIf, 'nodad');
    ip('-n', this.nodeNs, 'link', 'set', nodeIf, 'up');
    ip('-n', ns, 'addr', 'add', `${v4}.2/24`, 'dev', 'eth0');
    ip('-n', ns, '-6', 'addr', 'add', `${v6}:2/64`, 'dev', 'eth0', 'nodad');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'route', 'add', 'default', 'via', `${v4}.1`);
    ip('-n', ns, '-6', 'route', 'add', 'default', 'via', `${v6}:1`);
    return { ns, nodeIf, ipv4: `${v4}.2`, ipv6: `${v6}:2` };
  }
}

export interface PodReply { ok: boolean; error?: string; data?: string; localPort?: number }

/** A helper process inside a pod namespace that opens and uses TCP connections on request. */
export class PodShell {
  #child: ChildProcessWithoutNullStreams | undefined;
  #seq = 0;
  readonly #pending = new Map<number, (reply: PodReply) => void>();

  constructor(readonly ns: string) {}

  start(): void {
    const script = join(dirname(fileURLToPath(import.meta.url)), 'pod-process.js');
    const child = spawn('ip', ['netns', 'exec', this.ns, process.execPath, script], { stdio: 'pipe' });
    child.stderr.on('data', (d) => process.stderr.write(`[${this.ns}] ${d}`));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const { seq, ...reply } = JSON.parse(line) as PodReply & { seq: number };
      this.#pending.get(seq)?.(reply);
      this.#pending.delete(seq);
    });
    this.#child = child;
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }
  }

  request(req: Record<string, unknown>): Promise<PodReply> {
    const child = this.#child;
    if (!child) return Promise.reject(new Error('PodShell not started'));
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      this.#pending.set(seq, resolve);
      child.stdin.write(JSON.stringify({ seq, ...req }) + '\n');
    });
  }

  listen(port: number): Promise<PodReply> { return this.request({ op: 'listen', port }); }
  connect(id: string, host: string, port: number, timeoutMs = 1000): Promise<PodReply> {
    return this.request({ op: 'connect', id, host, port, timeoutMs });
  }
  echo(id: string, data: string, timeoutMs = 1000): Promise<PodReply> {
    return this.request({ op: 'echo', id, data, timeoutMs });
  }
  close(id: string): Promise<PodReply> { return this.request({ op: 'close', id }); }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A pin folder of its own for one test run. */
export function testPinDir(tag: string): string {
  return `/sys/fs/bpf/meshid-test-${process.pid}-${tag}`;
}

/** Runs every step even when some throw (teardown must not stop halfway), then throws the first error. */
export async function runAll(steps: Array<() => unknown>): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try { await step(); } catch (err) { first ??= err; }
  }
  if (first !== undefined) throw first;
}
