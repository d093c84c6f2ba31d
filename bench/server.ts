/**
 * npm run bench:server — how much agent-facing work one meshid-server does:
 * the Sync fan-out of registration entries to many agents.
 *
 * The server's real parts (SQLite datastore, CA, agent API over TLS gRPC on
 * loopback; test/helpers/server.ts) run in this process, so its CPU is read
 * with process.cpuUsage(). The agents run in BENCH_CLIENT_PROCS forked child
 * processes: each agent makes its own key, attests with a join token through
 * the real AttestAgent RPC, connects with its SVID as the TLS client
 * certificate and holds one open Sync stream.
 *  1. Snapshot: BENCH_ENTRIES entries, spread evenly over BENCH_AGENTS agents
 *     (an entry's parent is one agent's ID), are in the datastore before the
 *     agents open their Sync streams; measured from the first stream opened
 *     until every agent holds its full snapshot.
 *  2. Churn: BENCH_UPDATES entries are created, then deleted, one write at a
 *     time through Registration (the admin API's path, without the HTTP), each
 *     write its own transaction, by one writer in this process that issues the
 *     next write on the next turn of the event loop (as one admin client
 *     sending one request after another would get served). Measured from the
 *     first write to the last delivery: changes delivered per second, write →
 *     arrival latency per entry (from the write's commit to the agent's receipt
 *     of the Sync message), and server CPU per change (the write included). Median of
 *     BENCH_ROUNDS rounds; a round is one create phase and one delete phase,
 *     each stopping after BENCH_PHASE_SECONDS (120) of writes if the server is
 *     too slow for BENCH_UPDATES writes by then (the line says how many).
 * Reference in the same run: single-row insert commits per second of this
 * machine's SQLite with the datastore's settings (WAL, synchronous=FULL,
 * BEGIN IMMEDIATE): when each admin write is one transaction, churn cannot
 * go faster than that.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { AttestAgentResponseMsg, SyncUpdateMsg } from '../api/agentproto.js';
import { Datastore } from '../server/datastore/index.js';
import { Registration } from '../server/registration/index.js';
import { generateKeyPair, SelectorSet, SpiffeId, TrustDomain } from '../spiffe/index.js';
import { agentClient, call, csrFor, startServerParts, type ServerParts } from '../test/helpers/server.js';
import { median, percentile } from './stats.js';

const AGENTS = Number(process.env['BENCH_AGENTS'] ?? 200);
const ENTRIES = Number(process.env['BENCH_ENTRIES'] ?? 20_000);
const UPDATES = Number(process.env['BENCH_UPDATES'] ?? 5000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const PROCS = Math.max(1, Math.min(AGENTS, Number(process.env['BENCH_CLIENT_PROCS'] ?? 1)));
const SQLITE_COMMITS = Number(process.env['BENCH_SQLITE_COMMITS'] ?? 2000);
/** No phase may take longer than this. */
const PHASE_TIMEOUT_MS = Number(process.env['BENCH_TIMEOUT_MS'] ?? 1_800_000);
/** A churn phase stops writing after this long even if fewer than BENCH_UPDATES writes were made; the figures are over the writes made. */
const PHASE_WRITE_SECONDS = Number(process.env['BENCH_PHASE_SECONDS'] ?? 120);
const SELECTORS = ['unix:uid:1000'];

/** Milliseconds on the wall clock with sub-ms resolution, comparable between this process and its children. */
const now = (): number => performance.timeOrigin + performance.now();
const cpuUs = (u: NodeJS.CpuUsage): number => u.user + u.system;
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

type ToClient =
  | { type: 'attest'; port: number; rootPem: string; trustDomain: string; tokens: string[] }
  | { type: 'sync'; expected: Record<string, number> }
  /** A churn phase starts: its changes are the entries (created) or removed entries (removed) whose ids start with prefix. */
  | { type: 'phase'; kind: 'created' | 'removed'; prefix: string }
  /** The writes are done: report once this many of the phase's changes have arrived. */
  | { type: 'expect'; count: number };
type FromClient =
  | { type: 'attested'; agents: string[] }
  | { type: 'synced'; firstOpen: number; lastSnapshot: number; entries: number; cpuUs: number }
  | { type: 'arrived'; arrivals: [string, number][]; duplicates: number; others: number; cpuUs: number }
  | { type: 'failed'; message: string }
  | { type: 'misrouted'; message: string };

// ───────────────────────────── client process ─────────────────────────────

async function runClient(): Promise<void> {
  type AgentClient = ReturnType<typeof agentClient>;
  const agents: { id: string; client: AgentClient; stream?: ClientReadableStream<SyncUpdateMsg> }[] = [];
  const send = (m: FromClient): void => { process.send!(m); };
  let closing = false;
  let cpuMark = process.cpuUsage();
  const cpuSinceMark = (): number => { const d = cpuUs(process.cpuUsage(cpuMark)); cpuMark = process.cpuUsage(); return d; };

  // snapshot state
  let expected: Record<string, number> = {};
  let firstOpen = 0, lastSnapshot = 0, snapshots = 0, snapshotEntries = 0;
  // churn state: first arrival of each id in this phase
  let phase: Extract<ToClient, { type: 'phase' }> | undefined;
  let expectedCount: number | undefined;
  const arrivals = { created: new Map<string, number>(), removed: new Map<string, number>() };
  let duplicates = 0, others = 0;

  const checkPhase = (): void => {
    if (!phase || expectedCount === undefined || arrivals[phase.kind].size < expectedCount) return;
    const got = arrivals[phase.kind];
    send({ type: 'arrived', arrivals: [...got], duplicates, others, cpuUs: cpuSinceMark() });
    got.clear();
    duplicates = 0;
    others = 0;
    phase = undefined;
    expectedCount = undefined;
  };
  const record = (kind: 'created' | 'removed', id: string, t: number): void => {
    const map = arrivals[kind];
    if (!phase || phase.kind !== kind || !id.startsWith(phase.prefix)) others++;
    else if (map.has(id)) duplicates++;
    else map.set(id, t);
  };

  const onUpdate = (agentId: string, msg: SyncUpdateMsg): void => {
    const t = now();
    for (const e of msg.entries) {
      if (e.parent_id !== agentId) send({ type: 'misrouted', message: `entry ${e.id} (parent ${e.parent_id}) was sent to ${agentId}` });
    }
    if (msg.snapshot) {
      if (msg.entries.length !== expected[agentId]) {
        send({ type: 'failed', message: `${agentId} got a snapshot of ${msg.entries.length} entries, not ${expected[agentId]}` });
        return;
      }
      snapshotEntries += msg.entries.length;
      lastSnapshot = t;
      if (++snapshots === agents.length) send({ type: 'synced', firstOpen, lastSnapshot, entries: snapshotEntries, cpuUs: cpuSinceMark() });
      return;
    }
    for (const e of msg.entries) record('created', e.id, t);
    for (const id of msg.removed_entries) record('removed', id, t);
    checkPhase();
  };

  const handle = async (m: ToClient): Promise<void> => {
    switch (m.type) {
      case 'attest': {
        // agentClient() reads the trust bundle from parts.ca; this process has only its PEM
        const parts = { port: m.port, td: TrustDomain.parse(m.trustDomain), ca: { bundle: () => ({ x509Pem: () => m.rootPem }) } } as unknown as Pick<ServerParts, 'port' | 'ca' | 'td'>;
        const anon = agentClient(parts);
        try {
          // a few at a time, as agents booting together would
          let next = 0;
          await Promise.all(Array.from({ length: 8 }, async () => {
            while (next < m.tokens.length) {
              const token = m.tokens[next++]!;
              const key = generateKeyPair();
              const res = await call<AttestAgentResponseMsg>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(token) }, csr: csrFor(key) });
              const client = agentClient(parts, { chain: res.svid!.cert_chain, key });
              // the TLS connection (with the agent's certificate) is set up here, not during the measurement
              await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 30_000, (err?: Error) => (err ? reject(err) : resolve())));
              agents.push({ id: res.svid!.spiffe_id, client });
            }
          }));
        } finally {
          anon.close();
        }
        send({ type: 'attested', agents: agents.map((a) => a.id) });
        break;
      }
      case 'sync':
        expected = m.expected;
        cpuSinceMark();
        firstOpen = now();
        for (const a of agents) {
          const stream = (a.client['Sync'] as (req: object, md: Metadata) => ClientReadableStream<SyncUpdateMsg>)({}, new Metadata());
          a.stream = stream;
          stream.on('data', (msg: SyncUpdateMsg) => onUpdate(a.id, msg));
          stream.on('error', (err: ServiceError) => { if (!closing) send({ type: 'failed', message: `Sync of ${a.id} ended: ${err.message}` }); });
        }
        break;
      case 'phase':
        cpuSinceMark();
        phase = m;
        break;
      case 'expect':
        expectedCount = m.count;
        checkPhase();
        break;
    }
  };

  process.on('message', (m: ToClient) => { handle(m).catch((err: Error) => send({ type: 'failed', message: err.stack ?? err.message })); });
  process.once('disconnect', () => {
    closing = true;
    for (const a of agents) { a.stream?.cancel(); a.client.close(); }
  });
}

// ───────────────────────────── server process ─────────────────────────────

/** The next message of `type` from a client process; a 'failed' or 'misrouted' message, or its exit, is an error. */
function receive<T extends FromClient['type']>(c: ChildProcess, type: T, timeoutMs = PHASE_TIMEOUT_MS): Promise<Extract<FromClient, { type: T }>> {
  return new Promise((resolve, reject) => {
    const done = (): void => { clearTimeout(timer); c.off('message', onMessage); c.off('exit', onExit); };
    const timer = setTimeout(() => { done(); reject(new Error(`no "${type}" from client process ${c.pid} within ${timeoutMs} ms`)); }, timeoutMs);
    const onMessage = (m: FromClient): void => {
      if (m.type === 'failed' || m.type === 'misrouted') { done(); reject(new Error(`client process ${c.pid}: ${m.message}`)); }
      else if (m.type === type) { done(); resolve(m as Extract<FromClient, { type: T }>); }
    };
    const onExit = (code: number | null): void => { done(); reject(new Error(`client process ${c.pid} exited (${code})`)); };
    c.on('message', onMessage);
    c.on('exit', onExit);
  });
}

/** Single-row INSERT commits per second with the datastore's settings (server/datastore/core.ts): the limit of one-write-per-transaction churn. */
function sqliteCommitRate(dir: string, n: number): number {
  const db = new Database(join(dir, `commits-${Math.random().toString(36).slice(2)}.sqlite3`));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.exec('CREATE TABLE t (pk INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, parent TEXT NOT NULL)');
    const insert = db.prepare('INSERT INTO t (id, parent) VALUES (?, ?)');
    const tx = db.transaction((i: number) => insert.run(`entry-${i}`, 'spiffe://example.org/meshid/agent/join_token/x'));
    const t0 = performance.now();
    for (let i = 0; i < n; i++) tx.immediate(i);
    return n / ((performance.now() - t0) / 1000);
  } finally {
    db.close();
  }
}

/** Registration.createEntry then deleteEntry, one per transaction, with no agent connected: the write path alone. */
async function writePathRate(dir: string, td: TrustDomain, n: number): Promise<{ create: number; remove: number; cpuUsPerWrite: number }> {
  const store = await Datastore.open({ path: join(dir, 'writepath.sqlite3'), trustDomain: td });
  try {
    const registration = new Registration({ datastore: store, trustDomain: td });
    const parent = `spiffe://${td.name}/meshid/agent/join_token/writepath`;
    const cpu0 = process.cpuUsage();
    let t0 = performance.now();
    for (let i = 0; i < n; i++) {
      await registration.createEntry({ id: `wp-${i}`, spiffe_id: `spiffe://${td.name}/bench/wp/${i}`, parent_id: parent, selectors: SELECTORS });
      await nextTurn();
    }
    const create = n / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (let i = 0; i < n; i++) { await registration.deleteEntry(`wp-${i}`); await nextTurn(); }
    const remove = n / ((performance.now() - t0) / 1000);
    return { create, remove, cpuUsPerWrite: cpuUs(process.cpuUsage(cpu0)) / (2 * n) };
  } finally {
    await store.close();
  }
}

interface PhaseResult { changes: number; rate: number; writeRate: number; p50: number; p99: number; max: number; cpuUsPerChange: number; clientCpuShare: number; duplicates: number; others: number }

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `meshid-bench-server-${process.pid}-`));
  const children: ChildProcess[] = [];
  let parts: ServerParts | undefined;
  let cleaning: Promise<void> | undefined;
  /** Stops the client processes (their Sync streams end with the IPC channel), the server parts, and removes the temp dirs. */
  const cleanup = (): Promise<void> => (cleaning ??= (async () => {
    await Promise.all(children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (child.connected) child.disconnect();
      const timer = setTimeout(() => child.kill(), 5000);
      await exited;
      clearTimeout(timer);
    }));
    await parts?.stop();
    rmSync(dir, { recursive: true, force: true });
  })());
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`bench:server: ${signal}, stopping`);
    void cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    console.log(`bench:server — one meshid-server's agent API (this process: SQLite datastore, CA, TLS gRPC on loopback) serving Sync to ${AGENTS} agents`);
    console.log(`  in ${PROCS} client process(es); ${fmt(ENTRIES)} entries in the snapshot; a churn round creates then deletes ${fmt(UPDATES)} entries, each phase stopping after ${PHASE_WRITE_SECONDS} s of writes; ${ROUNDS} rounds`);
    console.log(`  node ${process.version}, ${process.arch}; load average now: ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${availableParallelism()} CPUs (server and clients share them)`);

    // the references first, on an otherwise idle process
    const commitRounds = Array.from({ length: 3 }, () => sqliteCommitRate(dir, SQLITE_COMMITS));
    const commitLimit = median(commitRounds);
    const writePath = await writePathRate(dir, TrustDomain.parse('example.org'), Math.min(1000, UPDATES));

    // every simulated agent connects from 127.0.0.1: the per-source limits are for real networks
    parts = await startServerParts({ agentApi: { maxConnectionsPerSource: 1_000_000, attestPerSourcePerMinute: 1_000_000 } });
    const registration = new Registration({ datastore: parts.store, trustDomain: parts.td });
    const rootPem = parts.ca.bundle().x509Pem();
    const tokens = Array.from({ length: AGENTS }, (_, i) => `bench-agent-${String(i).padStart(5, '0')}-${Math.random().toString(36).slice(2, 10)}`);
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    for (const token of tokens) await parts.store.createJoinToken({ token, expiresAt });

    for (let c = 0; c < PROCS; c++) {
      children.push(fork(fileURLToPath(import.meta.url), ['--client'], { execArgv: ['--enable-source-maps'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    }
    const owner = new Map<string, number>(); // agent ID → client process index
    const attestStart = now();
    const attested = await Promise.all(children.map((child, c) => {
      const reply = receive(child, 'attested');
      child.send({ type: 'attest', port: parts!.port, rootPem, trustDomain: parts!.td.name, tokens: tokens.filter((_, i) => i % PROCS === c) } satisfies ToClient);
      return reply;
    }));
    const attestMs = now() - attestStart;
    attested.forEach((m, c) => { for (const id of m.agents) owner.set(id, c); });
    const agentIds = [...owner.keys()].sort();
    if (agentIds.length !== AGENTS) throw new Error(`${agentIds.length} agents attested, not ${AGENTS}`);
    console.log(`attested ${AGENTS} agents (join token, AttestAgent over TLS) and connected them with their SVIDs in ${(attestMs / 1000).toFixed(1)} s`);

    // 1. snapshot
    const perAgent: Record<string, number> = Object.fromEntries(agentIds.map((id) => [id, 0]));
    for (let i = 0; i < ENTRIES; i += 1000) {
      const specs = [];
      for (let j = i; j < Math.min(ENTRIES, i + 1000); j++) {
        const parent = agentIds[j % AGENTS]!;
        perAgent[parent]!++;
        specs.push({ spiffeId: SpiffeId.parse(`spiffe://${parts.td.name}/bench/load/w${j}`), parentId: SpiffeId.parse(parent), selectors: SelectorSet.parse(SELECTORS) });
      }
      const failed = (await parts.store.batchCreateEntries(specs)).find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
    }
    const snapCpu0 = process.cpuUsage();
    const synced = await Promise.all(children.map((child, c) => {
      const reply = receive(child, 'synced');
      child.send({ type: 'sync', expected: Object.fromEntries(agentIds.filter((id) => owner.get(id) === c).map((id) => [id, perAgent[id]!])) } satisfies ToClient);
      return reply;
    }));
    const snapCpu = cpuUs(process.cpuUsage(snapCpu0));
    const delivered = synced.reduce((n, s) => n + s.entries, 0);
    if (delivered !== ENTRIES) throw new Error(`${delivered} entries arrived in snapshots, not ${ENTRIES}`);
    const snapMs = Math.max(...synced.map((s) => s.lastSnapshot)) - Math.min(...synced.map((s) => s.firstOpen));
    const snapshot = {
      agents: AGENTS, entries: ENTRIES, seconds: snapMs / 1000, entries_per_s: ENTRIES / (snapMs / 1000),
      server_cpu_us_per_entry: snapCpu / ENTRIES, server_cpu_share: snapCpu / 1000 / snapMs,
      client_cpu_share: synced.reduce((n, s) => n + s.cpuUs, 0) / 1000 / snapMs,
    };

    console.log(`snapshot, first Sync opened → last snapshot received: ${fmt(ENTRIES)} entries to ${AGENTS} agents (${fmt(ENTRIES / AGENTS)} each) in ${snapshot.seconds.toFixed(2)} s: ${fmt(snapshot.entries_per_s)} entries/s delivered, server CPU ${snapshot.server_cpu_us_per_entry.toFixed(1)} µs/entry (server busy ${(snapshot.server_cpu_share * 100).toFixed(0)}% of a core, clients ${(snapshot.client_cpu_share * 100).toFixed(0)}%)`);

    // 2. churn
    /** Writes up to `max` changes (ids prefix0 … prefix(max-1)) in at most PHASE_WRITE_SECONDS, then waits for all of them to arrive. */
    const phase = async (round: number, kind: 'created' | 'removed', max: number): Promise<PhaseResult> => {
      const prefix = `bench-r${round}-`;
      const parentOf = (j: number): string => agentIds[j % AGENTS]!;
      const reports = Promise.all(children.map((child) => receive(child, 'arrived')));
      reports.catch(() => undefined); // awaited below; a failure during the writes must not go unhandled
      for (const child of children) child.send({ type: 'phase', kind, prefix } satisfies ToClient);
      await nextTurn();
      const written = new Map<string, number>();
      const cpu0 = process.cpuUsage();
      const t0 = now();
      const stopAt = t0 + PHASE_WRITE_SECONDS * 1000;
      for (let j = 0; j < max && now() < stopAt; j++) {
        const id = `${prefix}${j}`;
        if (kind === 'created') await registration.createEntry({ id, spiffe_id: `spiffe://${parts!.td.name}/bench/churn/r${round}/w${j}`, parent_id: parentOf(j), selectors: SELECTORS });
        else await registration.deleteEntry(id);
        written.set(id, now());
        await nextTurn(); // the next admin request is another turn of the event loop
      }
      const writeMs = now() - t0;
      const n = written.size;
      const counts = children.map(() => 0);
      for (let j = 0; j < n; j++) counts[owner.get(parentOf(j))!]!++;
      children.forEach((child, c) => child.send({ type: 'expect', count: counts[c]! } satisfies ToClient));
      const got = await reports;
      const cpu = cpuUs(process.cpuUsage(cpu0));
      const latencies: number[] = [];
      let last = 0;
      for (const r of got) {
        for (const [id, t] of r.arrivals) {
          const w = written.get(id);
          if (w === undefined) throw new Error(`an entry ${id} that was not written in this phase arrived`);
          latencies.push(t - w);
          last = Math.max(last, t);
        }
      }
      if (latencies.length !== n) throw new Error(`${latencies.length} of ${n} changes arrived`);
      latencies.sort((a, b) => a - b);
      const spanMs = last - t0;
      return {
        changes: n, rate: n / (spanMs / 1000), writeRate: n / (writeMs / 1000),
        p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies[latencies.length - 1]!,
        cpuUsPerChange: cpu / n, clientCpuShare: got.reduce((x, r) => x + r.cpuUs, 0) / 1000 / spanMs,
        duplicates: got.reduce((x, r) => x + r.duplicates, 0), others: got.reduce((x, r) => x + r.others, 0),
      };
    };
    const rounds: { created: PhaseResult; removed: PhaseResult }[] = [];
    let leftOver = 0;
    for (let r = 1; r <= ROUNDS; r++) {
      const created = await phase(r, 'created', UPDATES);
      const removed = await phase(r, 'removed', created.changes);
      leftOver += created.changes - removed.changes;
      rounds.push({ created, removed });
      const line = (p: PhaseResult): string => `${fmt(p.changes)} in ${(p.changes / p.writeRate).toFixed(1)} s, ${fmt(p.rate)} changes/s (p50 ${p.p50.toFixed(1)} ms, p99 ${p.p99.toFixed(1)} ms)`;
      console.log(`  round ${r}: create ${line(created)}; delete ${line(removed)}`);
    }
    if (leftOver > 0) console.log(`  note: ${leftOver} churn entries were not deleted within ${PHASE_WRITE_SECONDS} s and stayed in the datastore`);
    const summary = (kind: 'created' | 'removed') => {
      const rs = rounds.map((r) => r[kind]);
      const m = (f: (p: PhaseResult) => number): number => median(rs.map(f));
      return {
        changes_per_phase: rs.map((p) => p.changes), changes_per_s: m((p) => p.rate), writes_per_s: m((p) => p.writeRate),
        p50_ms: m((p) => p.p50), p99_ms: m((p) => p.p99), max_ms: m((p) => p.max), server_cpu_us_per_change: m((p) => p.cpuUsPerChange),
        client_cpu_share: m((p) => p.clientCpuShare), rounds_changes_per_s: rs.map((p) => p.rate),
        duplicates: rs.reduce((n, p) => n + p.duplicates, 0), others: rs.reduce((n, p) => n + p.others, 0),
      };
    };
    const churn = { created: summary('created'), removed: summary('removed') };

    for (const [kind, s] of Object.entries(churn)) {
      const verb = kind === 'created' ? 'create' : 'delete';
      console.log(`churn, ${verb} one entry per transaction while ${AGENTS} agents stay connected: ${fmt(s.changes_per_s)} changes/s delivered (writer managed ${fmt(s.writes_per_s)} writes/s), write→agent p50 ${s.p50_ms.toFixed(1)} ms p99 ${s.p99_ms.toFixed(1)} ms, server CPU ${fmt(s.server_cpu_us_per_change)} µs/change, clients ${(s.client_cpu_share * 100).toFixed(0)}% of a core  (median of ${ROUNDS} phases; rounds: ${s.rounds_changes_per_s.map(fmt).join(', ')} changes/s)`);
      if (s.duplicates || s.others) console.log(`  note: ${s.duplicates} entries arrived twice, ${s.others} deliveries outside the phase`);
    }
    console.log(`limit: this machine's SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) commits ${fmt(commitLimit)} single-row inserts/s (rounds: ${commitRounds.map(fmt).join(', ')}); churn / limit: create ${(churn.created.changes_per_s / commitLimit).toFixed(3)}, delete ${(churn.removed.changes_per_s / commitLimit).toFixed(3)}`);
    console.log(`reference: the admin write path alone (Registration.createEntry / deleteEntry, no agent connected): ${fmt(writePath.create)} creates/s, ${fmt(writePath.remove)} deletes/s, ${fmt(writePath.cpuUsPerWrite)} µs CPU/write`);
    console.log(JSON.stringify({
      bench: 'server', agents: AGENTS, client_processes: PROCS, snapshot, churn,
      reference: { sqlite_single_row_commits_per_s: commitLimit, write_path_creates_per_s: writePath.create, write_path_deletes_per_s: writePath.remove, write_path_cpu_us_per_write: writePath.cpuUsPerWrite },
    }));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

const flag = (name: string): string | undefined => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : undefined; };
if (process.argv[2] === '--client') {
  runClient().catch((err: Error) => { console.error(err); process.exitCode = 1; });
} else if (flag('datastore') === 'postgres' && process.argv.includes('--scale')) {
  // the scale target: thousands of agents in client processes, N server processes: bench/scale.ts
  import('./scale.js').then((m) => m.main(Number(flag('servers') ?? 3))).catch((err: Error) => { console.error(err); process.exitCode = 1; });
} else if (flag('datastore') === 'postgres') {
  // several servers on one PostgreSQL beside one on SQLite: bench/ha.ts
  import('./ha.js').then((m) => m.main(Number(flag('servers') ?? 3))).catch((err: Error) => { console.error(err); process.exitCode = 1; });
} else if (flag('datastore') !== undefined && flag('datastore') !== 'sqlite') {
  console.error(`bench:server: --datastore must be sqlite or postgres, not ${flag('datastore')}`);
  process.exitCode = 2;
} else {
  main().catch((err: Error) => { console.error(err); process.exitCode = 1; });
}
