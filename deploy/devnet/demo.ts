/**
 * The demo: a whole meshid cluster on one machine. A server in the root
 * namespace, two nodes (network namespaces) each with an agent, its WireGuard
 * device and the tc programs, and three pods: frontend and legacy on node 1,
 * backend on node 2. A CiliumNetworkPolicy says that frontend → backend:8080
 * requires authentication; legacy carries the frontend label but its
 * ServiceAccount has no registration entry, so its pair can never be
 * authenticated.
 *
 * The processes are detached (they outlive `meshid demo up`); the state file
 * records them so `meshid demo down` removes everything, from any process.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../api/assets.js';
import { unixRequest } from '../../common/unixhttp.js';
import { FailedPrecondition, InvalidArgument } from '../../spiffe/index.js';
import { Datapath } from '../../bpf/index.js';
import { MUTUAL_AUTH_PORT } from '../../agent/mutualauth/index.js';
import { Devnet } from './devnet.js';
import { preparePostgres } from './postgres.js';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import type { DevnetPod, DevnetState } from './spec.js';

export interface DemoOptions {
  prefix?: string;
  underlayCidr?: string;
  podCidrPool?: string;
  adminPort?: number;
  agentApiPort?: number;
  /** Where the demo keeps its state, data and logs. */
  stateDir?: string;
  trustDomain?: string;
  /** meshid-servers; more than one run on one PostgreSQL the demo starts. Default 1 (SQLite). */
  servers?: number;
  /** Where the demo's PostgreSQL listens (servers > 1). Default 5433. */
  postgresPort?: number;
  /** Narration for a person; each call is one line. */
  say?: (line: string) => void;
}

interface DemoServer { name: string; agentAddress: string; adminUrl: string; pid: number }

interface DemoState {
  prefix: string;
  devnet: DevnetState;
  adminUrl: string;
  tokenFile: string;
  pids: { name: string; pid: number }[];
  agentSockets: Record<string, { workload: string; admin: string }>;
  pinDirs: string[];
  runDirs: string[];
  /** Every meshid-server (one, or several on PostgreSQL). */
  servers?: DemoServer[];
  /** The demo's PostgreSQL cluster directory, when it has one. */
  postgresDir?: string;
}

export const POLICY_YAML = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-requires-auth
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
    - fromEndpoints:
        - matchLabels:
            app: frontend
      authentication:
        mode: required
      toPorts:
        - ports:
            - port: "8080"
              protocol: TCP
`;

const BACKEND_SERVER = `
const http = require('node:http');
http.createServer((req, res) => res.end('hello from backend, ' + req.socket.remoteAddress + ' was let in\\n')).listen(8080, '0.0.0.0');
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One HTTP GET from inside a network namespace (node's own http client in the pod). */
/** A node script that GETs process.argv[1] and prints {ok, body, ms} as one JSON line. */
const HTTP_GET_SCRIPT = (timeoutMs: number): string => `const t=Date.now();require('node:http').get(process.argv[1],{timeout:${timeoutMs}},r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>{console.log(JSON.stringify({ok:true,body:b,ms:Date.now()-t}))})}).on('timeout',function(){this.destroy(new Error('timed out'))}).on('error',e=>{console.log(JSON.stringify({ok:false,body:e.message,ms:Date.now()-t}))})`;

export function httpFromNamespace(namespace: string, url: string, timeoutMs = 3000): { ok: boolean; body: string; ms: number } {
  const script = HTTP_GET_SCRIPT(timeoutMs);
  const r = spawnSync('nsenter', [`--net=/run/netns/${namespace}`, process.execPath, '-e', script, url], { encoding: 'utf8', timeout: timeoutMs + 5000 });
  try { return JSON.parse(r.stdout.trim().split('\n').pop() ?? ''); } catch { return { ok: false, body: r.stderr || 'no answer', ms: timeoutMs }; }
}

/**
 * A node script started in a namespace and waiting; fire() runs it at once (as a
 * pod's app starts the moment it is told) and resolves with the line it printed.
 */
export async function armedScript(namespace: string, script: string, args: readonly string[] = []): Promise<{ fire(): Promise<string> }> {
  const waiting = `process.stdout.write('armed\\n');process.stdin.once('data',()=>{${script}})`;
  const child = spawn('nsenter', [`--net=/run/netns/${namespace}`, process.execPath, '-e', waiting, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  for (const end = Date.now() + 10_000; !out.includes('armed\n');) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`the client in ${namespace} did not start`);
    await sleep(2);
  }
  return {
    async fire() {
      child.stdin!.end('go\n');
      await exited;
      return out.split('\n')[1] ?? '';
    },
  };
}

/** An HTTP GET from a namespace, armed (armedScript); fire() answers as httpFromNamespace does. */
export async function armedRequest(namespace: string, url: string, timeoutMs = 3000): Promise<{ fire(): Promise<{ ok: boolean; body: string; ms: number }> }> {
  const armed = await armedScript(namespace, HTTP_GET_SCRIPT(timeoutMs), [url]);
  return {
    async fire() {
      try { return JSON.parse(await armed.fire()); } catch { return { ok: false, body: 'no answer', ms: timeoutMs }; }
    },
  };
}

/** TCP segments this namespace retransmitted so far (/proc/net/snmp, per namespace). */
export function tcpRetransmits(namespace: string): number {
  const r = spawnSync('nsenter', [`--net=/run/netns/${namespace}`, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  return Number(values[names.indexOf('RetransSegs')] ?? NaN);
}

/** A JSON request to an agent's admin socket: the status and the parsed answer. */
export async function agentCall<T>(socket: string, method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<{ status: number; body: T }> {
  const r = await unixRequest(socket, method, path, body, timeoutMs);
  return { status: r.status, body: JSON.parse(r.text) as T };
}

const agentGet = async <T>(socket: string, path: string): Promise<T> => (await agentCall<T>(socket, 'GET', path)).body;

export class DemoCluster {
  readonly prefix: string;
  readonly stateDir: string;
  private readonly statePath: string;
  private readonly devnet: Devnet;
  private readonly say: (line: string) => void;

  constructor(private readonly opts: DemoOptions = {}) {
    this.prefix = opts.prefix ?? 'md';
    this.stateDir = opts.stateDir ?? `/var/lib/meshid/demo-${this.prefix}`;
    this.statePath = join(this.stateDir, 'demo.json');
    this.devnet = new Devnet(this.prefix);
    this.say = opts.say ?? (() => {});
  }

  get isUp(): boolean { return existsSync(this.statePath); }

  state(): DemoState {
    if (!this.isUp) throw new FailedPrecondition(`no demo "${this.prefix}" is up (no ${this.statePath})`, 'demo');
    return JSON.parse(readFileSync(this.statePath, 'utf8')) as DemoState;
  }

  private save(s: DemoState): void { writeFileSync(this.statePath, JSON.stringify(s, null, 2)); }

  /** Starts a detached process whose output goes to a log file; recorded for down(). */
  private daemon(s: DemoState, name: string, argv: string[]): number {
    const log = openSync(join(this.stateDir, `${name}.log`), 'a');
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' } });
    closeSync(log);
    child.unref();
    s.pids.push({ name, pid: child.pid! });
    this.save(s);
    return child.pid!;
  }

  /** An admin API call to the first server that answers (several servers share one datastore). */
  private async admin<T>(s: DemoState, method: string, path: string, body?: unknown): Promise<T> {
    const token = readFileSync(s.tokenFile, 'utf8').trim();
    const urls = s.servers?.map((x) => x.adminUrl) ?? [s.adminUrl];
    let res: Response | undefined;
    let lastErr: unknown;
    for (const url of urls) {
      try {
        res = await fetch(new URL(path, url), {
          method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
        break;
      } catch (err) { lastErr = err; }
    }
    if (!res) throw lastErr;
    const json = await res.json() as T & { error?: { message: string } };
    if (!res.ok) throw new Error(`${method} ${path}: ${json.error?.message ?? res.status}`);
    return json;
  }

  private async waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<number> {
    const start = Date.now();
    for (;;) {
      try { if (await check()) return Date.now() - start; } catch { /* not yet */ }
      if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}; logs are in ${this.stateDir}`);
      await sleep(100);
    }
  }

  /**
   * A new pod on a running demo: a registration entry for its ServiceAccount
   * (selected by its network namespace) and its namespace and veth on the node.
   * The agent is not told: that is the CNI's part (`meshid-agent endpoint add`).
   */
  async addPod(name: string, node: string, serviceAccount: string): Promise<DevnetPod> {
    const s = this.state();
    const td = this.opts.trustDomain ?? 'example.org';
    const pod = await this.devnet.addPod(name, node);
    s.devnet = this.devnet.describe();
    this.save(s);
    await this.admin(s, 'POST', '/v1/entries', {
      spiffe_id: `spiffe://${td}/ns/default/sa/${serviceAccount}`, parent_id: `spiffe://${td}/meshid/agent/join_token/${node}`, selectors: [`netns:name:${pod.namespace}`],
    });
    return pod;
  }

  /**
   * `meshid demo add-pod`: a pod that appears while the policy is in force. Its
   * namespace, veth and registration entry (addPod), then what a CNI plugin's ADD
   * does: the endpoint goes to its node's agent, held (unless `wait` is false)
   * until it is ready; then its first request to backend, with the SYNs it
   * retransmitted.
   */
  async joinPod(name: string, opts: { node?: string; serviceAccount?: string; labels?: Record<string, string>; wait?: boolean } = {}): Promise<{ pod: DevnetPod; readyMs: number | null; first: { ok: boolean; body: string; ms: number }; retransmits: number }> {
    const s = this.state();
    const node = opts.node ?? 'n1';
    const socket = s.agentSockets[node]?.admin;
    if (!socket) throw new InvalidArgument(`the demo has no node "${node}"`, 'node');
    const serviceAccount = opts.serviceAccount ?? name;
    const pod = await this.addPod(name, node, serviceAccount);
    this.say(`1. Pod ${name} on ${node} at ${pod.ip} (ServiceAccount ${serviceAccount}, labels ${JSON.stringify(opts.labels ?? {})}): namespace ${pod.namespace}, veth ${pod.hostVeth}, and a registration entry`);
    const wait = opts.wait ?? true;
    const backend = s.devnet.pods.find((p) => p.name === 'backend')!;
    // the client is up in the pod before the agent hears of it, and asks the moment it is told: a pod's app starting
    const client = await armedRequest(pod.namespace, `http://${backend.ip}:8080/`);
    const t0 = performance.now();
    const added = await agentCall<{ ready?: boolean; waiting_for?: string[]; error?: { message: string } }>(socket, 'POST', `/v1/endpoints${wait ? '?wait=30' : ''}`, {
      name, service_account: serviceAccount, labels: opts.labels ?? {}, ip: pod.ip, interface: pod.hostVeth,
    }, 60_000);
    if (added.body.error) throw new Error(`the agent refused the endpoint: ${added.body.error.message}`);
    const readyMs = wait ? Math.round(performance.now() - t0) : null;
    if (wait && !added.body.ready) throw new Error(`${name} was not ready after 30 s: ${(added.body.waiting_for ?? []).join('; ')}`);
    this.say(wait
      ? `2. The agent on ${node} held the pod ${readyMs} ms, until it was ready: identity registered, tc programs on ${pod.hostVeth}, every pair a policy requires for it authenticated`
      : `2. The agent on ${node} took the endpoint; not waiting for it to be ready`);
    const before = tcpRetransmits(pod.namespace);
    const first = await client.fire();
    const retransmits = tcpRetransmits(pod.namespace) - before;
    this.say(`3. ${name} → backend: ${first.ok ? `answered in ${first.ms} ms` : `FAILED (${first.body})`}, ${retransmits} SYN${retransmits === 1 ? '' : 's'} retransmitted`);
    return { pod, readyMs, first, retransmits };
  }

  async authEntries(node: string): Promise<{ local_spiffe_id: string | null; remote_spiffe_id: string | null; remote_node: string | null; expires_at: string }[]> {
    const s = this.state();
    return (await agentGet<{ entries: never[] }>(s.agentSockets[node]!.admin, '/v1/auth')).entries;
  }

  /** Several servers: the demo's own PostgreSQL, then `count` servers on it sharing one admin token. */
  private async startServers(s: DemoState, count: number, hostIp: string, td: string, adminPort: number, agentApiPort: number): Promise<void> {
    const pgPort = this.opts.postgresPort ?? 5433;
    // in the postgres user's home: the demo's own state dir is private to root
    const pgDir = `/var/lib/postgresql/meshid-demo-${this.prefix}`;
    rmSync(pgDir, { recursive: true, force: true });
    s.postgresDir = pgDir;
    this.say(`2. PostgreSQL (Debian's, a cluster of its own in ${pgDir}, as the postgres user) on 127.0.0.1:${pgPort}, and ${count} meshid-servers on it`);
    this.daemon(s, 'postgres', preparePostgres(pgDir, pgPort));
    const pgUrl = (db: string) => `postgres://meshid@127.0.0.1:${pgPort}/${db}`;
    await this.waitFor('PostgreSQL', async () => {
      const c = new pg.Client({ connectionString: pgUrl('postgres') });
      await c.connect();
      try { await c.query('CREATE DATABASE meshid'); } catch (err) { if ((err as { code?: string }).code !== '42P04') throw err; } finally { await c.end(); }
      return true;
    });
    // where `meshid` looks for the demo's token, as with one server
    mkdirSync(join(this.stateDir, 'server'), { recursive: true, mode: 0o700 });
    const tokenFile = join(this.stateDir, 'server', 'admin.token');
    writeFileSync(tokenFile, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
    s.tokenFile = tokenFile;
    s.servers = [];
    for (let i = 0; i < count; i++) {
      const name = `server${i + 1}`;
      const agentAddress = `${hostIp}:${agentApiPort + 10 * i}`;
      const adminUrl = `http://127.0.0.1:${adminPort + 10 * i}`;
      const config = join(this.stateDir, `${name}.json`);
      writeFileSync(config, JSON.stringify({
        data_dir: join(this.stateDir, name), trust_domain: td, bind: agentAddress, admin: adminUrl.slice('http://'.length),
        admin_token_file: tokenFile, datastore: { url: pgUrl('meshid') },
      }, null, 2));
      const pid = this.daemon(s, name, [process.execPath, join(packageRoot, 'bin', 'meshid-server.js'), 'run', '--config', config]);
      s.servers.push({ name, agentAddress, adminUrl, pid });
      this.say(`   ${name}: agent API ${agentAddress}, admin API ${adminUrl}`);
    }
    s.adminUrl = s.servers[0]!.adminUrl;
    for (const x of s.servers) await this.waitFor(x.name, async () => (await fetch(`${x.adminUrl}/ready`)).ok);
  }

  /**
   * With several servers: SIGKILL the one n1's agent is synced to, watch the agent
   * move to another, traffic go on, and a pod whose entry is written through a
   * surviving server get its identity.
   */
  async failover(): Promise<{ killed: string; movedTo: string; moveMs: number; traffic: { ok: boolean; body: string; ms: number }; late: { readyMs: number | null; first: { ok: boolean } } }> {
    const s = this.state();
    if (!s.servers || s.servers.length < 2) throw new FailedPrecondition('the demo runs one server; `meshid demo up --servers 3` for the failover', 'servers');
    const status = async () => agentGet<{ server?: string; sync: string }>(s.agentSockets['n1']!.admin, '/v1/status');
    const before = (await status()).server;
    const victim = s.servers.find((x) => x.agentAddress === before) ?? s.servers[0]!;
    this.say(`10. Agent n1 is synced to ${victim.name} (${victim.agentAddress}); SIGKILL it`);
    process.kill(victim.pid, 'SIGKILL');
    s.servers = s.servers.filter((x) => x !== victim);
    s.pids = s.pids.filter((p) => p.pid !== victim.pid);
    s.adminUrl = s.servers[0]!.adminUrl;
    this.save(s);
    let now = before;
    const moveMs = await this.waitFor('n1 to sync with another server', async () => {
      const st = await status();
      now = st.server;
      return st.sync === 'synced' && now !== before;
    });
    const movedTo = s.servers.find((x) => x.agentAddress === now)?.name ?? String(now);
    this.say(`11. n1 moved to ${movedTo} in ${moveMs} ms (its Workload API served the SVIDs it had meanwhile)`);
    const backend = s.devnet.pods.find((p) => p.name === 'backend')!;
    const frontend = s.devnet.pods.find((p) => p.name === 'frontend')!;
    const traffic = httpFromNamespace(frontend.namespace, `http://${backend.ip}:8080/`);
    this.say(`12. frontend → backend: ${traffic.ok ? `answered in ${traffic.ms} ms` : `FAILED (${traffic.body})`}`);
    this.say(`13. A new pod whose entry is written through ${s.servers[0]!.name}:`);
    const late = await this.joinPod('late', { node: 'n1', labels: { app: 'frontend' } });
    return { killed: victim.name, movedTo, moveMs, traffic, late };
  }

  async up(): Promise<void> {
    if (this.isUp) throw new FailedPrecondition(`the demo "${this.prefix}" is already up; \`meshid demo down\` removes it`, 'demo');
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const td = this.opts.trustDomain ?? 'example.org';
    const adminPort = this.opts.adminPort ?? 8080;
    const agentApiPort = this.opts.agentApiPort ?? 8081;
    this.say(`1. Network: an underlay bridge, nodes n1 and n2, pods frontend + legacy on n1 and backend on n2 (namespaces ${this.prefix}-*)`);
    const devnet = await this.devnet.create({
      ...(this.opts.underlayCidr ? { underlayCidr: this.opts.underlayCidr } : {}),
      ...(this.opts.podCidrPool ? { podCidrPool: this.opts.podCidrPool } : {}),
      nodes: [{ name: 'n1' }, { name: 'n2' }],
      pods: [{ name: 'frontend', node: 'n1' }, { name: 'legacy', node: 'n1' }, { name: 'backend', node: 'n2' }],
    });
    const s: DemoState = {
      prefix: this.prefix, devnet, adminUrl: `http://127.0.0.1:${adminPort}`, tokenFile: join(this.stateDir, 'server', 'admin.token'),
      pids: [], agentSockets: {}, pinDirs: [], runDirs: [],
    };
    this.save(s);
    const hostIp = devnet.host!.address;
    const node = (process.execPath);
    const count = this.opts.servers ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 5) throw new InvalidArgument('--servers must be 1 to 5', 'servers');
    if (count === 1) {
      this.say(`2. meshid-server on ${hostIp}:${agentApiPort} (agent API) and 127.0.0.1:${adminPort} (admin API)`);
      this.daemon(s, 'server', [node, join(packageRoot, 'bin', 'meshid-server.js'), 'run', '--data-dir', join(this.stateDir, 'server'),
        '--trust-domain', td, '--bind', `${hostIp}:${agentApiPort}`, '--admin', `127.0.0.1:${adminPort}`]);
      await this.waitFor('the server', async () => (await fetch(`${s.adminUrl}/ready`)).ok);
      s.servers = [{ name: 'server', agentAddress: `${hostIp}:${agentApiPort}`, adminUrl: s.adminUrl, pid: s.pids[s.pids.length - 1]!.pid }];
    } else {
      await this.startServers(s, count, hostIp, td, adminPort, agentApiPort);
    }
    this.save(s);

    this.say('3. Registration entries, one per ServiceAccount; legacy\'s ServiceAccount gets none');
    const agentId = (n: string): string => `spiffe://${td}/meshid/agent/join_token/${n}`;
    for (const pod of devnet.pods) {
      if (pod.name === 'legacy') continue;
      await this.admin(s, 'POST', '/v1/entries', { spiffe_id: `spiffe://${td}/ns/default/sa/${pod.name}`, parent_id: agentId(pod.node), selectors: [`netns:name:${pod.namespace}`] });
    }
    // with several servers, the bundle holds every server's CA
    let pem = '';
    await this.waitFor('every server\'s CA in the bundle', async () => {
      const bundle = await fetch(`${s.adminUrl}/v1/bundle?format=pem`, { headers: { authorization: `Bearer ${readFileSync(s.tokenFile, 'utf8').trim()}` } });
      pem = await bundle.text();
      return (pem.match(/BEGIN CERTIFICATE/g) ?? []).length >= count;
    });
    writeFileSync(join(this.stateDir, 'bundle.pem'), pem);

    this.say('4. One agent per node, each attesting with a join token; WireGuard, tc programs and mutual auth on');
    for (const n of devnet.nodes) {
      const { token } = await this.admin<{ token: string }>(s, 'POST', '/v1/tokens', { ttl: 600, agent_id: agentId(n.name) });
      const runDir = `/run/meshid/${this.prefix}-${n.name}`;
      const pinDir = `/sys/fs/bpf/meshid-${this.prefix}-${n.name}`;
      s.runDirs.push(runDir);
      s.pinDirs.push(pinDir);
      s.agentSockets[n.name] = { workload: join(runDir, 'agent.sock'), admin: join(runDir, 'admin.sock') };
      const config = {
        server: s.servers!.map((x) => x.agentAddress).join(','), trust_domain: td, trust_bundle: join(this.stateDir, 'bundle.pem'), join_token: token,
        socket: join(runDir, 'agent.sock'), admin_socket: join(runDir, 'admin.sock'), health: '127.0.0.1:8082',
        data_dir: join(this.stateDir, `agent-${n.name}`), node_name: n.name,
        node: { address: n.underlayIp, pod_cidr: n.podCidr },
        endpoints: devnet.pods.filter((p) => p.node === n.name).map((p) => ({
          name: p.name, namespace: 'default', service_account: p.name, labels: { app: p.name === 'legacy' ? 'frontend' : p.name }, ip: p.ip, interface: p.hostVeth,
        })),
        datapath: { enabled: true, pin_dir: pinDir },
        wireguard: { enabled: true, device: n.wgDevice, address: `${n.gatewayIp}/32` },
        mutual_auth: { enabled: true },
      };
      const configFile = join(this.stateDir, `agent-${n.name}.json`);
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      // nsenter, not `ip netns exec`: the latter mounts a new /sys and hides the bpf filesystem.
      this.daemon(s, `agent-${n.name}`, ['nsenter', `--net=/run/netns/${n.namespace}`, node, join(packageRoot, 'bin', 'meshid-agent.js'), 'run', '--config', configFile]);
    }
    for (const n of devnet.nodes) {
      await this.waitFor(`agent ${n.name}`, async () => (await agentGet<{ sync: string; node_id: number }>(s.agentSockets[n.name]!.admin, '/v1/status')).node_id > 0);
    }

    const backend = devnet.pods.find((p) => p.name === 'backend')!;
    this.daemon(s, 'backend', ['nsenter', `--net=/run/netns/${backend.namespace}`, node, '-e', BACKEND_SERVER]);
    this.say(`5. Policy (CiliumNetworkPolicy, also in ${join(this.stateDir, 'policy.yaml')}): frontend → backend:8080 requires authentication`);
    writeFileSync(join(this.stateDir, 'policy.yaml'), POLICY_YAML);
    await this.admin(s, 'POST', '/v1/policies:apply', { yaml: POLICY_YAML });
    const ms = await this.waitFor('the pair frontend → backend to be authenticated on both nodes', async () => {
      const a = await this.authEntries('n1');
      const b = await this.authEntries('n2');
      return a.some((e) => e.local_spiffe_id?.endsWith('/sa/frontend') && e.remote_spiffe_id?.endsWith('/sa/backend')) &&
        b.some((e) => e.local_spiffe_id?.endsWith('/sa/backend') && e.remote_spiffe_id?.endsWith('/sa/frontend'));
    });
    this.say(`6. Mutual authentication: the agents authenticated frontend ↔ backend before any packet (${ms} ms after the policy); \`meshid auth list\`:`);
    for (const n of devnet.nodes) {
      for (const e of await this.authEntries(n.name)) this.say(`     ${n.name}: ${e.local_spiffe_id} ↔ ${e.remote_spiffe_id} (node ${e.remote_node}) until ${e.expires_at}`);
    }
    this.say('The demo is up.');
  }

  /** The walkthrough after up(): a request that passes, an underlay capture, a refused pod. */
  async show(): Promise<{ allowed: { ok: boolean; body: string; ms: number }; refused: { ok: boolean; body: string }; capture: { total: number; wireguard: number; mutualAuth: number; other: string[] } }> {
    const s = this.state();
    const pod = (name: string) => s.devnet.pods.find((p) => p.name === name)!;
    const backendUrl = `http://${pod('backend').ip}:8080/`;
    const pcap = join(this.stateDir, 'underlay.pcap');
    const dump = spawn('nsenter', [`--net=/run/netns/${s.devnet.underlay.namespace}`, 'tcpdump', '-i', s.devnet.underlay.bridge, '-n', '-U', '--immediate-mode', '-w', pcap, `ip and not host ${s.devnet.host!.address}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    // tcpdump says "listening on" once its capture is open; only then does the request start.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 10_000);
      let err = '';
      dump.stderr!.on('data', (d: Buffer) => { err += d; if (err.includes('listening on')) { clearTimeout(timer); resolve(); } });
    });
    const allowed = httpFromNamespace(pod('frontend').namespace, backendUrl);
    this.say(`7. frontend → backend: ${allowed.ok ? `answered in ${allowed.ms} ms: ${allowed.body.trim()}` : `FAILED: ${allowed.body}`}`);
    await sleep(500);
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
    const read = spawnSync('tcpdump', ['-n', '-r', pcap], { encoding: 'utf8' });
    const lines = read.stdout.split('\n').filter(Boolean);
    const wg = lines.filter((l) => /\.51871[ :]/.test(l) && / UDP,/.test(l));
    // the agents' own TLS sessions (mutual auth, TCP 4250, node address to node address) are control traffic too
    const nodeIps = s.devnet.nodes.map((n) => n.underlayIp.replace(/\./g, '\\.')).join('|');
    const agentTls = new RegExp(`IP (${nodeIps})\\.(\\d+) > (${nodeIps})\\.(\\d+): Flags`);
    const mutualAuth = lines.filter((l) => { const m = agentTls.exec(l); return m !== null && (m[2] === String(MUTUAL_AUTH_PORT) || m[4] === String(MUTUAL_AUTH_PORT)); });
    const other = lines.filter((l) => !wg.includes(l) && !mutualAuth.includes(l));
    this.say(`8. Underlay capture between the nodes during that request (agent ↔ server control traffic left out): ${lines.length} packets, ${wg.length} of them WireGuard (UDP 51871)${mutualAuth.length ? `, ${mutualAuth.length} the agents' mutual-auth TLS (TCP ${MUTUAL_AUTH_PORT})` : ''}${other.length ? `, others: ${other.slice(0, 3).join(' | ')}` : ', nothing else: the pods\' traffic is encrypted'}`);
    const refused = httpFromNamespace(pod('legacy').namespace, backendUrl, 2000);
    this.say(`9. legacy → backend (labelled app=frontend, but its ServiceAccount has no SPIFFE identity): ${refused.ok ? 'ANSWERED (unexpected)' : `refused (${refused.body})`}`);
    this.say('   From any machine that reaches the server (its admin API, no agent socket needed):');
    this.say('   `meshid observe --verdict DROPPED --last 10` shows the drop on n2, AUTH_REQUIRED, and the policy that asked for it;');
    this.say('   `meshid auth list` shows every node\'s authenticated pairs; `meshid explain --from legacy --to backend --port 8080` says why;');
    this.say('   `meshid ui` prints a link to the web UI: its identity map shows frontend → backend authenticated and legacy → backend dropped.');
    return { allowed, refused, capture: { total: lines.length, wireguard: wg.length, mutualAuth: mutualAuth.length, other } };
  }

  async status(): Promise<Record<string, unknown>> {
    const s = this.state();
    const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };
    const agents: Record<string, unknown> = {};
    for (const [n, sock] of Object.entries(s.agentSockets)) {
      try { agents[n] = await agentGet(sock.admin, '/v1/status'); } catch (err) { agents[n] = { error: (err as Error).message }; }
    }
    return {
      prefix: s.prefix, admin_url: s.adminUrl,
      processes: s.pids.map((p) => ({ ...p, running: alive(p.pid) })),
      nodes: s.devnet.nodes.map((n) => ({ name: n.name, namespace: n.namespace, underlay_ip: n.underlayIp, pod_cidr: n.podCidr })),
      pods: s.devnet.pods.map((p) => ({ name: p.name, node: p.node, namespace: p.namespace, ip: p.ip })),
      agents,
    };
  }

  /** Removes everything up() made: processes, namespaces and links, pinned maps, sockets, state. Safe to call twice. */
  async down(): Promise<void> {
    let s: DemoState | undefined;
    try { s = this.state(); } catch { s = undefined; }
    for (const p of [...(s?.pids ?? [])].reverse()) {
      try { process.kill(-p.pid, 'SIGTERM'); } catch { try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ } }
    }
    const deadline = Date.now() + 5000;
    const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };
    while (s && s.pids.some((p) => alive(p.pid)) && Date.now() < deadline) await sleep(100);
    for (const p of s?.pids ?? []) if (alive(p.pid)) { try { process.kill(-p.pid, 'SIGKILL'); } catch { /* gone */ } }
    await this.devnet.destroy();
    // By the recorded names, and by the names the demo gives, in case the state file is gone.
    const ours = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((d) => d.startsWith(`meshid-${this.prefix}-`) || d.startsWith(`${this.prefix}-`)).map((d) => join(dir, d)) : []);
    for (const d of new Set([...(s?.pinDirs ?? []), ...ours('/sys/fs/bpf')])) Datapath.removePins(d);
    for (const d of new Set([...(s?.runDirs ?? []), ...ours('/run/meshid')])) rmSync(d, { recursive: true, force: true });
    rmSync(this.stateDir, { recursive: true, force: true });
    rmSync(s?.postgresDir ?? `/var/lib/postgresql/meshid-demo-${this.prefix}`, { recursive: true, force: true });
  }
}
