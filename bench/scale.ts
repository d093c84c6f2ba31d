/**
 * npm run bench:server -- --datastore postgres --servers N --scale
 *
 * The scale target of issue 10 on this machine: BENCH_AGENTS (5,000) agents and
 * BENCH_WORKLOADS (10,000) registration entries, served by N meshid-server
 * processes (the real binary, `meshid-server run --config`) on one PostgreSQL
 * cluster started here with its default durability (fsync on).
 *
 * The agents live in BENCH_CLIENT_PROCS forked client processes: each agent makes
 * its own key, attests with a join token through AttestAgent over TLS gRPC to
 * its server (round-robin over the servers), connects with its SVID and holds
 * one Sync stream. Measured:
 *  1. attestation of every agent, and the snapshot (first Sync opened → last
 *     agent holding all of its entries);
 *  2. churn: BENCH_UPDATES entries created then deleted one at a time through
 *     server 1's admin API (POST /v1/entries, DELETE /v1/entries/{id}), each
 *     entry's parent a different agent, so most changes reach an agent on
 *     another server. write → agent is timed from the moment the admin request
 *     is sent (so it includes the HTTP round trip and the commit) to the Sync
 *     message's arrival in the agent's process; p50/p99 per phase, median of
 *     BENCH_ROUNDS rounds (target p99 < 250 ms);
 *  3. signing: for BENCH_SIGN_SECONDS, agents renew their entries' X509-SVIDs
 *     with BatchNewX509SVID (one call per agent, a CSR per entry, BENCH_SIGN_INFLIGHT
 *     calls in flight per client process): first only the agents of server 1
 *     (one server signing), then every agent on its own server (N servers). The
 *     whole machine's rate, with the clients on the same 2 cores.
 * Beside it in the same run: PostgreSQL's own single-row commit rate, and each
 * process's CPU (from /proc) during each phase.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { AttestAgentResponseMsg, BatchNewX509SvidResponseMsg, SyncUpdateMsg } from '../api/agentproto.js';
import { packageRoot } from '../api/assets.js';
import { generateKeyPair, TrustDomain } from '../spiffe/index.js';
import { agentClient, call, csrFor, type ServerParts } from '../test/helpers/server.js';
import { freePort, PostgresCluster } from '../test/helpers/postgres.js';
import { postgresCommitRate } from './ha.js';
import { median, percentile } from './stats.js';

const env = (name: string, dflt: number): number => Number(process.env[name] ?? dflt);
const AGENTS = env('BENCH_AGENTS', 5000);
const WORKLOADS = env('BENCH_WORKLOADS', 10_000);
const UPDATES = env('BENCH_UPDATES', 1000);
const ROUNDS = env('BENCH_ROUNDS', 3);
const PROCS = Math.max(1, env('BENCH_CLIENT_PROCS', 2));
const SIGN_SECONDS = env('BENCH_SIGN_SECONDS', 10);
const SIGN_INFLIGHT = env('BENCH_SIGN_INFLIGHT', 32);
const TD = 'example.org';
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
/** Milliseconds on the wall clock with sub-ms resolution, comparable between processes. */
const now = (): number => performance.timeOrigin + performance.now();

type ToClient =
  | { type: 'attest'; ports: number[]; rootPem: string; tokens: { token: string; server: number }[] }
  | { type: 'sync'; expected: Record<string, number> }
  | { type: 'phase'; kind: 'created' | 'removed'; prefix: string }
  | { type: 'expect'; count: number }
  | { type: 'sign'; servers: number[]; seconds: number; inflight: number };
type FromClient =
  | { type: 'attested'; agents: { id: string; server: number }[] }
  | { type: 'synced'; firstOpen: number; lastSnapshot: number; entries: number }
  | { type: 'arrived'; arrivals: [string, number][] }
  | { type: 'signed'; svids: number; calls: number; errors: number; ms: number }
  | { type: 'failed'; message: string };

// ───────────────────────────── client process ─────────────────────────────

async function runClient(): Promise<void> {
  type Client = ReturnType<typeof agentClient>;
  const agents: { id: string; server: number; client: Client; entries: string[]; stream?: ClientReadableStream<SyncUpdateMsg> }[] = [];
  const send = (m: FromClient): void => { process.send!(m); };
  let closing = false;
  let expected: Record<string, number> = {};
  let firstOpen = 0, lastSnapshot = 0, snapshots = 0, snapshotEntries = 0;
  let phase: Extract<ToClient, { type: 'phase' }> | undefined;
  let expectedCount: number | undefined;
  const arrivals = new Map<string, number>();
  const check = (): void => {
    if (!phase || expectedCount === undefined || arrivals.size < expectedCount) return;
    send({ type: 'arrived', arrivals: [...arrivals] });
    arrivals.clear();
    phase = undefined;
    expectedCount = undefined;
  };
  const onUpdate = (agent: (typeof agents)[number], msg: SyncUpdateMsg): void => {
    const t = now();
    if (msg.snapshot) {
      if (msg.entries.length !== expected[agent.id]) { send({ type: 'failed', message: `${agent.id} got a snapshot of ${msg.entries.length} entries, not ${expected[agent.id]}` }); return; }
      agent.entries = msg.entries.map((e) => e.id);
      snapshotEntries += msg.entries.length;
      lastSnapshot = t;
      if (++snapshots === agents.length) send({ type: 'synced', firstOpen, lastSnapshot, entries: snapshotEntries });
      return;
    }
    if (phase?.kind === 'created') for (const e of msg.entries) if (e.id.startsWith(phase.prefix) && !arrivals.has(e.id)) arrivals.set(e.id, t);
    if (phase?.kind === 'removed') for (const id of msg.removed_entries) if (id.startsWith(phase.prefix) && !arrivals.has(id)) arrivals.set(id, t);
    check();
  };

  const handle = async (m: ToClient): Promise<void> => {
    switch (m.type) {
      case 'attest': {
        const parts = (port: number) => ({ port, td: TrustDomain.parse(TD), ca: { bundle: () => ({ x509Pem: () => m.rootPem }) } }) as unknown as Pick<ServerParts, 'port' | 'ca' | 'td'>;
        const anon = m.ports.map((p) => agentClient(parts(p)));
        try {
          let next = 0;
          await Promise.all(Array.from({ length: 8 }, async () => {
            while (next < m.tokens.length) {
              const { token, server } = m.tokens[next++]!;
              const key = generateKeyPair();
              const res = await call<AttestAgentResponseMsg>(anon[server]!, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(token) }, csr: csrFor(key) });
              const client = agentClient(parts(m.ports[server]!), { chain: res.svid!.cert_chain, key });
              await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 60_000, (err?: Error) => (err ? reject(err) : resolve())));
              agents.push({ id: res.svid!.spiffe_id, server, client, entries: [] });
            }
          }));
        } finally {
          for (const a of anon) a.close();
        }
        send({ type: 'attested', agents: agents.map((a) => ({ id: a.id, server: a.server })) });
        break;
      }
      case 'sync':
        expected = m.expected;
        firstOpen = now();
        for (const a of agents) {
          const stream = (a.client['Sync'] as (req: object, md: Metadata) => ClientReadableStream<SyncUpdateMsg>)({}, new Metadata());
          a.stream = stream;
          stream.on('data', (msg: SyncUpdateMsg) => onUpdate(a, msg));
          stream.on('error', (err: ServiceError) => { if (!closing) send({ type: 'failed', message: `Sync of ${a.id} ended: ${err.message}` }); });
        }
        break;
      case 'phase':
        phase = m;
        break;
      case 'expect':
        expectedCount = m.count;
        check();
        break;
      case 'sign': {
        // one CSR (one key) for every request of this process: the server checks each CSR's signature all the same
        const csr = csrFor(generateKeyPair());
        const who = agents.filter((a) => m.servers.includes(a.server) && a.entries.length > 0);
        let svids = 0, calls = 0, errors = 0, k = 0;
        // every agent once first, untimed: a server keeps an agent's entries between changes, as it would between renewals
        let w = 0;
        await Promise.all(Array.from({ length: Math.min(m.inflight, who.length) }, async () => {
          while (w < who.length) {
            const a = who[w++]!;
            await call(a.client, 'BatchNewX509SVID', { params: a.entries.map((entry_id) => ({ entry_id, csr })) }).catch(() => { errors++; });
          }
        }));
        const t0 = now();
        const end = t0 + m.seconds * 1000;
        await Promise.all(Array.from({ length: Math.min(m.inflight, who.length) }, async () => {
          while (now() < end) {
            const a = who[k++ % who.length]!;
            try {
              const res = await call<BatchNewX509SvidResponseMsg>(a.client, 'BatchNewX509SVID', { params: a.entries.map((entry_id) => ({ entry_id, csr })) });
              svids += res.results.filter((r) => r.svid).length;
              calls++;
            } catch {
              errors++;
            }
          }
        }));
        send({ type: 'signed', svids, calls, errors, ms: now() - t0 });
        break;
      }
    }
  };
  process.on('message', (m: ToClient) => { handle(m).catch((err: Error) => send({ type: 'failed', message: err.stack ?? err.message })); });
  process.once('disconnect', () => {
    closing = true;
    for (const a of agents) { a.stream?.cancel(); a.client.close(); }
  });
}

// ───────────────────────────── bench process ─────────────────────────────

function receive<T extends FromClient['type']>(c: ChildProcess, type: T, timeoutMs = 1_800_000): Promise<Extract<FromClient, { type: T }>> {
  return new Promise((resolve, reject) => {
    const done = (): void => { clearTimeout(timer); c.off('message', onMessage); c.off('exit', onExit); };
    const timer = setTimeout(() => { done(); reject(new Error(`no "${type}" from client process ${c.pid} within ${timeoutMs} ms`)); }, timeoutMs);
    const onMessage = (m: FromClient): void => {
      if (m.type === 'failed') { done(); reject(new Error(`client process ${c.pid}: ${m.message}`)); }
      else if (m.type === type) { done(); resolve(m as Extract<FromClient, { type: T }>); }
    };
    const onExit = (code: number | null): void => { done(); reject(new Error(`client process ${c.pid} exited (${code})`)); };
    c.on('message', onMessage);
    c.on('exit', onExit);
  });
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** The postmaster and its children (the backends, which live as long as the pool's connections). */
function postgresPids(dataDir: string): number[] {
  const master = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try { const st = readFileSync(`/proc/${d}/stat`, 'utf8'); return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === master; } catch { return false; }
  }).map(Number);
  return [master, ...children];
}

/** CPU of each process (or group: PostgreSQL's) between mark() and report(). */
class CpuMeter {
  private marks = new Map<string, number>();
  private t = 0;
  constructor(private readonly procs: { name: string; pids: () => number[] }[]) { this.mark(); }
  private used(p: { pids: () => number[] }): number {
    return p.pids().reduce((n, pid) => { try { return n + cpuSeconds(pid); } catch { return n; } }, 0);
  }
  mark(): void { this.t = performance.now(); for (const p of this.procs) this.marks.set(p.name, this.used(p)); }
  /** Share of one core each used since mark(), as "name 43%" (a backend that exited meanwhile takes its CPU with it). */
  report(): string {
    const s = (performance.now() - this.t) / 1000;
    return this.procs.map((p) => `${p.name} ${Math.max(0, Math.round(((this.used(p) - this.marks.get(p.name)!) / s) * 100))}%`).join(', ');
  }
}

interface Server { name: string; pid: number; child: ChildProcess; agentPort: number; admin: string }

async function admin<T>(server: Server, token: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${server.admin}${path}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} on ${server.name}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : {}) as T;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function main(serverCount: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bench-scale-'));
  const cluster = await PostgresCluster.start({ fast: false });
  const servers: Server[] = [];
  const children: ChildProcess[] = [];
  try {
    console.log(`bench:server --datastore postgres --servers ${serverCount} --scale: ${fmt(AGENTS)} agents in ${PROCS} client processes, ${fmt(WORKLOADS)} entries, ${serverCount} meshid-server processes on one PostgreSQL (fsync on)`);
    console.log(`  node ${process.version}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${availableParallelism()} CPUs, shared by the servers, PostgreSQL and the agents`);
    const commits = await postgresCommitRate(await cluster.createDatabase('commits'), 2000);
    console.log(`  reference: PostgreSQL single-row commits ${fmt(commits)}/s`);
    const url = await cluster.createDatabase('meshid');
    const tokenFile = join(dir, 'admin.token');
    const token = randomBytes(32).toString('base64url');
    writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
    for (let i = 0; i < serverCount; i++) {
      const agentPort = await freePort();
      const adminPort = await freePort();
      const config = join(dir, `server${i + 1}.json`);
      writeFileSync(config, JSON.stringify({
        data_dir: join(dir, `server${i + 1}`), trust_domain: TD, bind: `127.0.0.1:${agentPort}`, admin: `127.0.0.1:${adminPort}`,
        admin_token_file: tokenFile, datastore: { url },
        // every simulated agent connects from 127.0.0.1: the per-source limits are for real networks
        agent_api_limits: { attest_per_source_per_minute: 1_000_000, connections_per_source: 1_000_000, connections: 20_000 },
      }));
      const child = spawn(process.execPath, [join(packageRoot, 'bin', 'meshid-server.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      let tail = '';
      child.stderr!.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-4000); });
      child.once('exit', (code, signal) => { if (!stopping) console.error(`server${i + 1} exited (${code ?? signal}): ${tail}`); });
      servers.push({ name: `server${i + 1}`, pid: child.pid!, child, agentPort, admin: `http://127.0.0.1:${adminPort}` });
    }
    for (const s of servers) await waitFor(s.name, async () => (await fetch(`${s.admin}/ready`)).ok);
    let rootPem = '';
    await waitFor('every server\'s CA in the bundle', async () => {
      rootPem = await (await fetch(`${servers[0]!.admin}/v1/bundle?format=pem`, { headers: { authorization: `Bearer ${token}` } })).text();
      return (rootPem.match(/BEGIN CERTIFICATE/g) ?? []).length >= serverCount;
    });

    // join tokens, a few requests at a time, each through a server in turn
    const tokens: { token: string; server: number }[] = new Array(AGENTS);
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < AGENTS) {
        const i = next++;
        const server = i % serverCount;
        const res = await admin<{ token: string }>(servers[server]!, token, 'POST', '/v1/tokens', { ttl: 3600 });
        tokens[i] = { token: res.token, server };
      }
    }));

    for (let c = 0; c < PROCS; c++) {
      children.push(fork(fileURLToPath(import.meta.url), ['--scale-client'], { execArgv: ['--enable-source-maps', '--max-old-space-size=4096'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    }
    const procs = [...servers.map((s) => ({ name: s.name, pids: () => [s.pid] })), ...children.map((c, i) => ({ name: `clients${i + 1}`, pids: () => [c.pid!] })),
      { name: 'postgres', pids: () => postgresPids(join(cluster.dir, 'data')) }];
    const cpu = new CpuMeter(procs);
    const t0 = performance.now();
    const attested = await Promise.all(children.map((child, c) => {
      const reply = receive(child, 'attested');
      child.send({ type: 'attest', ports: servers.map((s) => s.agentPort), rootPem, tokens: tokens.filter((_, i) => i % PROCS === c) } satisfies ToClient);
      return reply;
    }));
    const owner = new Map<string, { proc: number; server: number }>();
    attested.forEach((m, c) => { for (const a of m.agents) owner.set(a.id, { proc: c, server: a.server }); });
    if (owner.size !== AGENTS) throw new Error(`${owner.size} agents attested, not ${AGENTS}`);
    console.log(`attestation: ${fmt(AGENTS)} agents attested (join token, AttestAgent over TLS) and connected with their SVIDs in ${((performance.now() - t0) / 1000).toFixed(1)} s (CPU: ${cpu.report()})`);

    // the workloads' entries, in batches through server 1's admin API
    const agentIds = [...owner.keys()].sort();
    const perAgent: Record<string, number> = Object.fromEntries(agentIds.map((id) => [id, 0]));
    for (let i = 0; i < WORKLOADS; i += 500) {
      const entries = [];
      for (let j = i; j < Math.min(WORKLOADS, i + 500); j++) {
        const parent = agentIds[j % AGENTS]!;
        perAgent[parent]!++;
        entries.push({ spiffe_id: `spiffe://${TD}/ns/bench/sa/w${j}`, parent_id: parent, selectors: [`k8s:sa:w${j}`] });
      }
      const res = await admin<{ results: { status: { code: string } }[] }>(servers[0]!, token, 'POST', '/v1/entries:batchCreate', { entries });
      const bad = res.results.find((r) => r.status.code !== 'ok');
      if (bad) throw new Error(`an entry was not created: ${JSON.stringify(bad)}`);
    }
    cpu.mark();
    const synced = await Promise.all(children.map((child, c) => {
      const reply = receive(child, 'synced');
      child.send({ type: 'sync', expected: Object.fromEntries(agentIds.filter((id) => owner.get(id)!.proc === c).map((id) => [id, perAgent[id]!])) } satisfies ToClient);
      return reply;
    }));
    const snapMs = Math.max(...synced.map((s) => s.lastSnapshot)) - Math.min(...synced.map((s) => s.firstOpen));
    const delivered = synced.reduce((n, s) => n + s.entries, 0);
    if (delivered !== WORKLOADS) throw new Error(`${delivered} entries arrived in snapshots, not ${WORKLOADS}`);
    console.log(`snapshot: ${fmt(AGENTS)} Sync streams opened, every agent holding its ${fmt(WORKLOADS / AGENTS)} entries in ${(snapMs / 1000).toFixed(2)} s (CPU: ${cpu.report()})`);

    // churn through server 1
    const phase = async (r: number, kind: 'created' | 'removed'): Promise<{ same: number[]; other: number[]; rate: number; cpu: string }> => {
      const prefix = `churn-r${r}-`;
      const reports = Promise.all(children.map((child) => receive(child, 'arrived')));
      reports.catch(() => undefined);
      for (const child of children) child.send({ type: 'phase', kind, prefix } satisfies ToClient);
      await new Promise((res) => setTimeout(res, 50));
      cpu.mark();
      const sent = new Map<string, { at: number; parent: string }>();
      const start = now();
      for (let j = 0; j < UPDATES; j++) {
        const id = `${prefix}${j}`;
        // a stride through the agents: consecutive writes go to agents of different servers and client processes
        const parent = agentIds[(j * 7919) % AGENTS]!;
        const at = now();
        if (kind === 'created') await admin(servers[0]!, token, 'POST', '/v1/entries', { id, spiffe_id: `spiffe://${TD}/ns/churn/sa/r${r}w${j}`, parent_id: parent, selectors: [`k8s:sa:r${r}w${j}`] });
        else await admin(servers[0]!, token, 'DELETE', `/v1/entries/${id}`);
        sent.set(id, { at, parent });
      }
      const counts = children.map(() => 0);
      for (const { parent } of sent.values()) counts[owner.get(parent)!.proc]!++;
      children.forEach((child, c) => child.send({ type: 'expect', count: counts[c]! } satisfies ToClient));
      const got = await reports;
      const usage = cpu.report();
      const same: number[] = [];
      const other: number[] = [];
      let last = 0;
      for (const g of got) for (const [id, t] of g.arrivals) {
        const w = sent.get(id)!;
        (owner.get(w.parent)!.server === 0 ? same : other).push(t - w.at);
        last = Math.max(last, t);
      }
      if (same.length + other.length !== UPDATES) throw new Error(`${same.length + other.length} of ${UPDATES} changes arrived`);
      return { same: same.sort((a, b) => a - b), other: other.sort((a, b) => a - b), rate: UPDATES / ((last - start) / 1000), cpu: usage };
    };
    const results: { kind: string; same: number[]; other: number[]; rate: number; cpu: string }[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      for (const kind of ['created', 'removed'] as const) {
        const p = await phase(r, kind);
        results.push({ kind, ...p });
        const all = [...p.same, ...p.other].sort((a, b) => a - b);
        console.log(`  round ${r} ${kind === 'created' ? 'create' : 'delete'}: ${fmt(UPDATES)} writes, ${fmt(p.rate)} changes/s; write → agent p50 ${percentile(all, 50).toFixed(1)} ms, p99 ${percentile(all, 99).toFixed(1)} ms, max ${all[all.length - 1]!.toFixed(1)} ms (CPU: ${p.cpu})`);
      }
    }
    const q = (kind: string, side: 'same' | 'other' | 'all', pct: number): number => median(results.filter((x) => x.kind === kind).map((x) => {
      const xs = side === 'all' ? [...x.same, ...x.other].sort((a, b) => a - b) : x[side];
      return xs.length ? percentile(xs, pct) : NaN;
    }));
    for (const kind of ['created', 'removed']) {
      const p99 = q(kind, 'all', 99);
      console.log(`churn ${kind === 'created' ? 'create' : 'delete'} (median of ${ROUNDS}): write → agent p50 ${q(kind, 'all', 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (target < 250 ms: ${p99 < 250 ? 'met' : 'NOT met'}); agents on server 1 p99 ${q(kind, 'same', 99).toFixed(1)} ms, on the other servers p99 ${q(kind, 'other', 99).toFixed(1)} ms; ${fmt(median(results.filter((x) => x.kind === kind).map((x) => x.rate)))} changes/s with one admin client writing`);
    }

    // signing: one server, then all of them
    const sign = async (which: number[]): Promise<{ rate: number; errors: number; cpu: string }> => {
      cpu.mark();
      const got = await Promise.all(children.map((child) => {
        const reply = receive(child, 'signed');
        child.send({ type: 'sign', servers: which, seconds: SIGN_SECONDS, inflight: SIGN_INFLIGHT } satisfies ToClient);
        return reply;
      }));
      const ms = Math.max(...got.map((g) => g.ms));
      return { rate: got.reduce((n, g) => n + g.svids, 0) / (ms / 1000), errors: got.reduce((n, g) => n + g.errors, 0), cpu: cpu.report() };
    };
    const one = await sign([0]);
    console.log(`signing, server 1 alone: ${fmt(one.rate)} X509-SVIDs/s (BatchNewX509SVID, ${WORKLOADS / AGENTS} CSRs a call, ${SIGN_INFLIGHT} calls in flight per client process; ${one.errors} errors; CPU: ${one.cpu})`);
    if (serverCount > 1) {
      const all = await sign(servers.map((_, i) => i));
      console.log(`signing, all ${serverCount} servers: ${fmt(all.rate)} X509-SVIDs/s (${all.errors} errors; CPU: ${all.cpu}); ratio to one server ${(all.rate / one.rate).toFixed(2)} on ${availableParallelism()} CPUs`);
      console.log(JSON.stringify({ bench: 'server-scale', servers: serverCount, agents: AGENTS, workloads: WORKLOADS, snapshot_s: snapMs / 1000,
        churn: { create_p50_ms: q('created', 'all', 50), create_p99_ms: q('created', 'all', 99), delete_p50_ms: q('removed', 'all', 50), delete_p99_ms: q('removed', 'all', 99) },
        signing: { one_server_per_s: one.rate, all_servers_per_s: all.rate }, reference: { postgres_commits_per_s: commits } }));
    }
  } finally {
    stopping = true;
    for (const c of children) if (c.connected) c.disconnect();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      if (s.child.exitCode !== null || s.child.signalCode !== null) { resolve(); return; }
      const timer = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
      s.child.once('exit', () => { clearTimeout(timer); resolve(); });
      s.child.kill('SIGTERM');
    })));
    await cluster.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
let stopping = false;

if (process.argv[2] === '--scale-client') runClient().catch((err: Error) => { console.error(err); process.exitCode = 1; });
