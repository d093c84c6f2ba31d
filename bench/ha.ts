/**
 * npm run bench:server -- --datastore postgres --servers N
 *
 * Several meshid-servers on one PostgreSQL (a real cluster started here, with
 * its default durability), beside one server on SQLite, measured the same way
 * in the same run: AGENTS agents (real AttestAgent over TLS gRPC, one Sync
 * stream each, spread round-robin over the servers) and entries created then
 * deleted one per transaction through the first server's write path. Reported:
 * changes delivered per second, and write → agent latency (commit to the Sync
 * message's arrival) for agents on the same server and on another one. The
 * reference beside it: PostgreSQL's own single-row commit rate here.
 *
 * Everything runs in this process (servers and agents share its event loop and
 * the machine's 2 cores), so the figures are for comparing the two datastores
 * and the cross-server path, not the scale target (5,000 agents), which needs
 * the agents in processes of their own (bench:server does that for SQLite).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { ClientReadableStream } from '@grpc/grpc-js';
import pg from 'pg';
import type { SyncUpdateMsg } from '../api/agentproto.js';
import { systemClock } from '../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../common/log.js';
import { serverConfigSchema } from '../server/config.js';
import { MeshidServer } from '../server/server.js';
import { generateKeyPair, TrustDomain } from '../spiffe/index.js';
import { agentClient, call, csrFor } from '../test/helpers/server.js';
import { PostgresCluster } from '../test/helpers/postgres.js';
import { median, percentile } from './stats.js';

const env = (name: string, dflt: number): number => Number(process.env[name] ?? dflt);
const AGENTS = env('BENCH_AGENTS', 60);
const WRITES = env('BENCH_UPDATES', 600);
const ROUNDS = env('BENCH_ROUNDS', 3);
const td = TrustDomain.parse('example.org');
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

interface Agent { id: string; server: number; got: Map<string, number>; stream: ClientReadableStream<SyncUpdateMsg>; close(): void }
interface Figures { rate: number; same: number[]; other: number[] }

async function startServers(dir: string, n: number, url: string | undefined): Promise<MeshidServer[]> {
  const out: MeshidServer[] = [];
  for (let i = 0; i < n; i++) {
    const config = serverConfigSchema.parse({
      data_dir: join(dir, `s${i}`), trust_domain: td.name, bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory',
      agent_api_limits: { connections_per_source: 1_000_000, attest_per_source_per_minute: 1_000_000 },
      ...(url ? { datastore: { url } } : {}),
    });
    const s = new MeshidServer(config, { clock: systemClock, logger: new JsonLogger(new MemoryLogSink(), 'warn') });
    await s.start();
    out.push(s);
  }
  for (let i = 0; i < 200; i++) {
    await Promise.all(out.map((s) => s.authorities.refresh()));
    if (out.every((s) => s.authorities.bundle().x509Authorities.length === n)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return out;
}

async function connectAgents(servers: MeshidServer[]): Promise<Agent[]> {
  const agents: Agent[] = [];
  const trust = (s: MeshidServer) => ({ port: s.agentPort, td, ca: { bundle: () => s.authorities.bundle() } }) as never;
  for (let i = 0; i < AGENTS; i++) {
    const s = servers[i % servers.length]!;
    const token = `bench-ha-${i}-${Math.random().toString(36).slice(2, 10)}`;
    await servers[0]!.store.createJoinToken({ token, expiresAt: servers[0]!.store.nowSeconds() + 600 });
    const key = generateKeyPair();
    const anon = agentClient(trust(s));
    const res = await call<{ svid: { spiffe_id: string; cert_chain: Buffer[] } }>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(token) }, csr: csrFor(key) });
    anon.close();
    const client = agentClient(trust(s), { chain: res.svid.cert_chain, key });
    const got = new Map<string, number>();
    const stream = (client as unknown as { Sync(req: unknown): ClientReadableStream<SyncUpdateMsg> }).Sync({});
    let first!: () => void;
    const synced = new Promise<void>((r) => { first = r; });
    stream.on('data', (m: SyncUpdateMsg) => {
      const at = performance.now();
      for (const e of m.entries) got.set(`+${e.id}`, at);
      for (const id of m.removed_entries) got.set(`-${id}`, at);
      first();
    });
    stream.on('error', () => undefined);
    await synced;
    agents.push({ id: res.svid.spiffe_id, server: i % servers.length, got, stream, close: () => { stream.cancel(); client.close(); } });
  }
  return agents;
}

/** One round: WRITES creates, then as many deletes, through server 0; waits for every delivery. */
async function round(servers: MeshidServer[], agents: Agent[], r: number): Promise<Figures> {
  const written = new Map<string, { at: number; agent: Agent }>();
  const t0 = performance.now();
  const ids: string[] = [];
  for (let j = 0; j < WRITES; j++) {
    const agent = agents[j % agents.length]!;
    const e = await servers[0]!.registration.createEntry({ spiffe_id: `spiffe://example.org/bench/r${r}/w${j}`, parent_id: agent.id, selectors: [`unix:uid:${j}`] });
    written.set(`+${e.id}`, { at: performance.now(), agent });
    ids.push(e.id);
    await nextTurn();
  }
  for (const [j, id] of ids.entries()) {
    await servers[0]!.registration.deleteEntry(id);
    written.set(`-${id}`, { at: performance.now(), agent: agents[j % agents.length]! });
    await nextTurn();
  }
  const deadline = performance.now() + 60_000;
  while ([...written].some(([k, w]) => !w.agent.got.has(k))) {
    if (performance.now() > deadline) throw new Error('some changes never reached their agent');
    await new Promise((res) => setTimeout(res, 5));
  }
  const last = Math.max(...[...written].map(([k, w]) => w.agent.got.get(k)!));
  const same: number[] = [];
  const other: number[] = [];
  for (const [k, w] of written) (w.agent.server === 0 ? same : other).push(w.agent.got.get(k)! - w.at);
  return { rate: written.size / ((last - t0) / 1000), same: same.sort((a, b) => a - b), other: other.sort((a, b) => a - b) };
}

async function measure(label: string, servers: MeshidServer[]): Promise<void> {
  const agents = await connectAgents(servers);
  try {
    const rounds: Figures[] = [];
    for (let r = 0; r < ROUNDS; r++) rounds.push(await round(servers, agents, r));
    const p = (xs: number[][], q: number) => median(xs.filter((x) => x.length > 0).map((x) => percentile(x, q)));
    const rate = median(rounds.map((x) => x.rate));
    const same = rounds.map((x) => x.same);
    const other = rounds.map((x) => x.other);
    console.log(`  ${label}: ${fmt(rate)} changes/s delivered; write → agent on the writing server p50 ${p(same, 50).toFixed(1)} ms, p99 ${p(same, 99).toFixed(1)} ms` +
      (other.some((x) => x.length) ? `; on another server p50 ${p(other, 50).toFixed(1)} ms, p99 ${p(other, 99).toFixed(1)} ms (target p99 < 100 ms)` : ''));
  } finally {
    for (const a of agents) a.close();
  }
}

/** Single-row INSERT commits per second on PostgreSQL: the reference beside the servers' figures. */
export async function postgresCommitRate(url: string, n: number): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('CREATE TABLE bench_commits (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await c.query('INSERT INTO bench_commits (id, v) VALUES ($1, $2)', [i, `row-${i}`]);
    return n / ((performance.now() - t0) / 1000);
  } finally {
    await c.query('DROP TABLE IF EXISTS bench_commits').catch(() => undefined);
    await c.end();
  }
}

export async function main(serverCount: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bench-ha-'));
  const cluster = await PostgresCluster.start({ fast: false });
  const stop: (() => Promise<void>)[] = [];
  try {
    console.log(`bench:server --datastore postgres --servers ${serverCount}: ${AGENTS} agents (Sync streams, round-robin over the servers), ${WRITES} creates then ${WRITES} deletes a round through server 1, ${ROUNDS} rounds, medians`);
    console.log(`  node ${process.version}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${availableParallelism()} CPUs; servers and agents share this process`);
    const commits = median(await Promise.all([0].map(async () => postgresCommitRate(await cluster.createDatabase('commits'), 2000))));
    console.log(`  reference: PostgreSQL single-row commits (fsync on) ${fmt(commits)}/s`);
    const sqlite = await startServers(join(dir, 'sqlite'), 1, undefined);
    stop.push(async () => { for (const s of sqlite) await s.stop(); });
    await measure('1 server, SQLite', sqlite);
    for (const s of sqlite) await s.stop();
    stop.pop();
    const url = await cluster.createDatabase('meshid');
    const ha = await startServers(join(dir, 'pg'), serverCount, url);
    stop.push(async () => { for (const s of ha) await s.stop(); });
    await measure(`${serverCount} servers, PostgreSQL`, ha);
  } finally {
    for (const f of stop) await f().catch(() => undefined);
    await cluster.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
