/**
 * npm run bench:auth — identity pairs authenticated per second between two
 * agents on loopback, each agent in its own process (so each has a core):
 * this process is agent A (node 1, the client side), a child process is
 * agent B (node 2, the server side). A authenticates every (A identity ×
 * B identity) pair with B in batches over one TLS session; both write their
 * in-memory auth maps. Median of several rounds; each round is a fresh
 * MutualAuth on A (new TLS session, empty chain cache on A).
 *
 * In the same run, the baseline "Cilium's way": one fresh mutual TLS 1.3
 * handshake per pair with the two workload SVIDs (the server picks the remote
 * identity's SVID by SNI), each side validating the other's chain and SPIFFE ID.
 *
 * Knobs: BENCH_IDS (identities per side, 200), BENCH_ROUNDS (5), BENCH_BATCH
 * (pairs per batch, 1024), BENCH_BASELINE_PAIRS (600), BENCH_BASELINE_CONCURRENCY (8).
 */
import { runDevnetBench } from './authdevnet.js';
import { fork, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { connect, createSecureContext, createServer as createTlsServer, type SecureContext, type TLSSocket } from 'node:tls';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { EndpointMsg, IdentityMsg, NodeMsg, SyncUpdateMsg } from '../api/agentproto.js';
import { systemClock } from '../common/clock.js';
import { silentLogger } from '../common/log.js';
import { MemoryAuthMap, MutualAuth, type MutualAuthStats, type PairRequest } from '../agent/mutualauth/index.js';
import { AgentState } from '../agent/sync/state.js';
import { Bundle, type CertificateIssuer, encodeName, generateKeyPair, issuerFromKey, keyIdentifier, mintCertificate, mintX509Svid, pemFromDer, pkcs8Der, privateKeyFromPkcs8, privateKeyPem, SpiffeId, spkiDer, TrustDomain, verifyX509Svid } from '../spiffe/index.js';
import type { KeyObject } from 'node:crypto';
import { median } from './stats.js';

const IDS = Number(process.env.BENCH_IDS ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BATCH = Number(process.env.BENCH_BATCH ?? 1024);
const BASELINE_PAIRS = Number(process.env.BENCH_BASELINE_PAIRS ?? 600);
const BASELINE_CONCURRENCY = Number(process.env.BENCH_BASELINE_CONCURRENCY ?? 8);
const TD = TrustDomain.parse('example.org');

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

// ---- the cluster both processes agree on ----

const clientIdentity = (i: number): number => 10_000 + i;
const serverIdentity = (i: number): number => 20_000 + i;
const agentIdOf = (node: number): string => `spiffe://${TD.name}/meshid/agent/join_token/bench-node-${node}`;
const spiffeOf = (identity: number): string => `spiffe://${TD.name}/ns/${identity < 20_000 ? 'a' : 'b'}/sa/sa-${identity}`;

function registry(caDer: Buffer, localNodeId: number): SyncUpdateMsg {
  const identities: IdentityMsg[] = [];
  const endpoints: EndpointMsg[] = [];
  for (let i = 0; i < IDS; i++) {
    for (const [id, node] of [[clientIdentity(i), 1], [serverIdentity(i), 2]] as const) {
      identities.push({ id, labels: {}, namespace: id < 20_000 ? 'a' : 'b', service_account: `sa-${id}`, spiffe_id: spiffeOf(id) });
      endpoints.push({ ip: `10.${node}.${i >> 8}.${i & 255}`, identity: id, node_id: node, namespace: 'n', name: `pod-${id}`, labels: {} });
    }
  }
  const nodes: NodeMsg[] = [1, 2].map((id) => ({ id, name: `bench-node-${id}`, address: '127.0.0.1', wireguard_public_key: '', pod_cidr: `10.${id}.0.0/16`, agent_id: agentIdOf(id) }));
  const bundle = new Bundle(TD, [caDer], []);
  return {
    revision: 1, snapshot: true, entries: [], removed_entries: [], bundles: [{ trust_domain: TD.name, document: Buffer.from(bundle.toJson()) }],
    identities, removed_identities: [], endpoints, removed_endpoints: [], nodes, removed_nodes: [], policies: [], removed_policies: [], local_node_id: localNodeId,
  };
}

interface Svid { chain: Buffer[]; key: KeyObject }
interface WireSvid { chain: string[]; key: string }
const toWire = (s: Svid): WireSvid => ({ chain: s.chain.map((c) => c.toString('base64')), key: pkcs8Der(s.key).toString('base64') });
const fromWire = (w: WireSvid): Svid => ({ chain: w.chain.map((c) => Buffer.from(c, 'base64')), key: privateKeyFromPkcs8(Buffer.from(w.key, 'base64')) });

function makeCa(): { der: Buffer; issuer: CertificateIssuer } {
  const keys = generateKeyPair();
  const spki = spkiDer(keys.publicKey);
  const subject = encodeName([['O', 'meshid bench'], ['CN', 'bench root']]);
  const issuer = issuerFromKey(subject, keyIdentifier(spki), keys.privateKey);
  const now = Date.now();
  return { der: mintCertificate({ subject, notBefore: new Date(now - 3600e3), notAfter: new Date(now + 86400e3), publicKeySpki: spki, ca: {} }, issuer), issuer };
}

function mint(issuer: CertificateIssuer, id: string): Svid {
  const keys = generateKeyPair();
  const now = Date.now();
  const der = mintX509Svid(issuer, { spiffeId: SpiffeId.parse(id), publicKeySpki: spkiDer(keys.publicKey), notBefore: new Date(now - 60e3), notAfter: new Date(now + 3600e3) });
  return { chain: [der], key: keys.privateKey };
}

const contextOf = (s: Svid): SecureContext =>
  createSecureContext({ key: privateKeyPem(s.key), cert: s.chain.map((c) => pemFromDer(c)).join(''), minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });

/** The baseline's chain check, as each side of a per-pair handshake does it: validate against the bundle, compare the SPIFFE ID. */
function checkPeer(socket: TLSSocket, bundle: Bundle, allowed: (id: string) => boolean): boolean {
  const chain: Buffer[] = [];
  let c = socket.getPeerCertificate(true);
  while (c?.raw && chain.length < 4) {
    chain.push(c.raw);
    const next = c.issuerCertificate;
    if (!next || next === c || next.raw?.equals(c.raw)) break;
    c = next;
  }
  try {
    const v = verifyX509Svid(chain, (td) => (td.name === bundle.trustDomain.name ? bundle.x509Authorities : undefined), new Date());
    return allowed(v.spiffeId.toString());
  } catch {
    return false;
  }
}

// ---- agent B: the child process ----

interface Setup { caDer: string; agent: WireSvid; workloads: [string, WireSvid][] }
type ToChild = { kind: 'setup'; setup: Setup } | { kind: 'stats' } | { kind: 'stop' };
type FromChild = { kind: 'ready'; port: number; baselinePort: number } | { kind: 'stats'; stats: MutualAuthStats; entries: number };

async function serverMain(): Promise<void> {
  const setup = await new Promise<Setup>((resolve) => process.once('message', (m: ToChild) => { if (m.kind === 'setup') resolve(m.setup); }));
  const caDer = Buffer.from(setup.caDer, 'base64');
  const state = new AgentState(TD);
  state.apply(registry(caDer, 2));
  const agent = fromWire(setup.agent);
  const workloads = new Map(setup.workloads.map(([id, w]) => [id, fromWire(w)]));
  const map = new MemoryAuthMap();
  const auth = new MutualAuth({
    state, agentSvid: () => agent, workloadSvid: (id) => workloads.get(id.toString()), authMap: map, clock: systemClock, logger: silentLogger,
    listen: { host: '127.0.0.1', port: 0 },
  });
  await auth.start();

  // Baseline server: one TLS server, the remote identity's SVID chosen by SNI "id-<identity>".
  const bundle = new Bundle(TD, [caDer], []);
  const contexts = new Map<string, SecureContext>();
  for (let i = 0; i < IDS; i++) contexts.set(`id-${serverIdentity(i)}`, contextOf(workloads.get(spiffeOf(serverIdentity(i)))!));
  const clientIds = new Set(Array.from({ length: IDS }, (_, i) => spiffeOf(clientIdentity(i))));
  const baseline = createTlsServer({
    SNICallback: (name, cb) => cb(null, contexts.get(name)), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3',
  }, (socket) => {
    if (!checkPeer(socket, bundle, (id) => clientIds.has(id))) { socket.destroy(); return; }
    socket.end();
  });
  baseline.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => baseline.listen(0, '127.0.0.1', resolve));

  process.on('message', async (m: ToChild) => {
    if (m.kind === 'stats') process.send!({ kind: 'stats', stats: auth.stats(), entries: map.size } satisfies FromChild);
    if (m.kind === 'stop') {
      await auth.stop();
      await new Promise((resolve) => baseline.close(resolve));
      process.disconnect();
    }
  });
  process.send!({ kind: 'ready', port: auth.port, baselinePort: (baseline.address() as { port: number }).port } satisfies FromChild);
}

// ---- agent A: this process ----

function ask<T extends FromChild['kind']>(child: ChildProcess, kind: T, msg?: ToChild): Promise<Extract<FromChild, { kind: T }>> {
  return new Promise((resolve) => {
    const on = (m: FromChild): void => { if (m.kind === kind) { child.off('message', on); resolve(m as Extract<FromChild, { kind: T }>); } };
    child.on('message', on);
    if (msg) child.send(msg);
  });
}

async function baselineRound(port: number, pairs: PairRequest[], clientContexts: Map<number, SecureContext>, bundle: Bundle): Promise<number> {
  let next = 0;
  let failed = 0;
  const one = (p: PairRequest): Promise<void> => new Promise((resolve) => {
    const socket = connect({
      host: '127.0.0.1', port, servername: `id-${p.remoteIdentity}`, secureContext: clientContexts.get(p.localIdentity)!,
      rejectUnauthorized: false, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
    });
    const expected = spiffeOf(p.remoteIdentity);
    socket.once('secureConnect', () => { if (!checkPeer(socket, bundle, (id) => id === expected)) { failed++; socket.destroy(); } });
    socket.on('data', () => {});
    socket.once('end', () => socket.end());
    socket.once('error', () => { failed++; });
    socket.once('close', () => resolve());
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: BASELINE_CONCURRENCY }, async () => {
    while (next < pairs.length) await one(pairs[next++]!);
  }));
  const seconds = (performance.now() - t0) / 1000;
  if (failed > 0) throw new Error(`baseline: ${failed} handshakes failed`);
  return pairs.length / seconds;
}

async function clientMain(): Promise<void> {
  const total = IDS * IDS;
  console.log(`bench:auth — ${IDS} × ${IDS} identities = ${fmt(total)} pairs a round, batches of ${BATCH}, ${ROUNDS} rounds, median reported`);
  console.log(`  (node ${process.version}, ${cpus().length} CPUs; agent A here, agent B in a child process; loopback TCP; ECDSA P-256 SVIDs)`);
  const ca = makeCa();
  const agentA = mint(ca.issuer, agentIdOf(1));
  const agentB = mint(ca.issuer, agentIdOf(2));
  const workloadsA = new Map<string, Svid>();
  const workloadsB = new Map<string, Svid>();
  for (let i = 0; i < IDS; i++) {
    workloadsA.set(spiffeOf(clientIdentity(i)), mint(ca.issuer, spiffeOf(clientIdentity(i))));
    workloadsB.set(spiffeOf(serverIdentity(i)), mint(ca.issuer, spiffeOf(serverIdentity(i))));
  }

  const child = fork(fileURLToPath(import.meta.url), ['server'], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const ready = ask(child, 'ready', { kind: 'setup', setup: { caDer: ca.der.toString('base64'), agent: toWire(agentB), workloads: [...workloadsB].map(([id, s]) => [id, toWire(s)]) } });
    const { port, baselinePort } = await ready;

    const state = new AgentState(TD);
    state.apply(registry(ca.der, 1));
    const pairs: PairRequest[] = [];
    for (let i = 0; i < IDS; i++) for (let j = 0; j < IDS; j++) pairs.push({ localIdentity: clientIdentity(i), remoteIdentity: serverIdentity(j), remoteNodeId: 2 });

    const rates: number[] = [];
    let lastStats: MutualAuthStats | undefined;
    for (let r = 0; r < ROUNDS; r++) {
      const map = new MemoryAuthMap();
      const auth = new MutualAuth({
        state, agentSvid: () => agentA, workloadSvid: (id) => workloadsA.get(id.toString()), authMap: map, clock: systemClock, logger: silentLogger,
        listen: { host: '127.0.0.1', port: 0 }, peerAddress: () => ({ host: '127.0.0.1', port }), maxBatchPairs: BATCH,
      });
      await auth.start();
      const t0 = performance.now();
      const results = await auth.authenticate(pairs);
      const seconds = (performance.now() - t0) / 1000;
      lastStats = auth.stats();
      await auth.stop();
      const bad = results.find((x) => !x.ok);
      if (bad) throw new Error(`round ${r + 1}: a pair failed: ${JSON.stringify(bad)}`);
      if (map.size !== total) throw new Error(`round ${r + 1}: ${map.size} entries on A, expected ${total}`);
      rates.push(total / seconds);
    }
    const b = await ask(child, 'stats', { kind: 'stats' });
    if (b.entries !== total) throw new Error(`B holds ${b.entries} entries, expected ${total}`);
    if (b.stats.pairsAuthenticated.server !== total * ROUNDS) throw new Error(`B authenticated ${b.stats.pairsAuthenticated.server} pairs, expected ${total * ROUNDS}`);

    // Baseline: a spread of pairs (every local and remote identity appears).
    if (BASELINE_PAIRS <= 0) { console.log(`batched: ${rates.map(fmt).join(', ')} pairs/s (baseline skipped)`); return; }
    const bundle = new Bundle(TD, [ca.der], []);
    const clientContexts = new Map<number, SecureContext>();
    for (let i = 0; i < IDS; i++) clientContexts.set(clientIdentity(i), contextOf(workloadsA.get(spiffeOf(clientIdentity(i)))!));
    const sample = Array.from({ length: Math.min(BASELINE_PAIRS, total) }, (_, k) => pairs[(k * 7919) % total]!);
    await baselineRound(baselinePort, sample.slice(0, 50), clientContexts, bundle); // warm-up
    const baseRates: number[] = [];
    for (let r = 0; r < 3; r++) baseRates.push(await baselineRound(baselinePort, sample, clientContexts, bundle));

    const batched = median(rates);
    const base = median(baseRates);
    const s = lastStats!;
    console.log(`batched mutual auth (one TLS 1.3 session, EKM-bound proofs per identity and batch):`);
    console.log(`  ${fmt(batched)} pairs/s median  (rounds: ${rates.map(fmt).join(', ')}; each round a new agent A: new TLS session, empty chain cache on A; round 1 also cold on B)`);
    console.log(`  last round on A: ${s.batches.sent} batches, ${s.handshakes.client} TLS handshake, chain cache ${s.chainCache.hits} hits / ${s.chainCache.misses} misses; B served ${b.stats.batches.served} batches in all`);
    console.log(`baseline, one mutual TLS 1.3 handshake per pair with the workload SVIDs (Cilium's way), ${BASELINE_CONCURRENCY} concurrent:`);
    console.log(`  ${fmt(base)} pairs/s median  (${sample.length} pairs a round, rounds: ${baseRates.map(fmt).join(', ')})`);
    console.log(`ratio batched / per-pair handshakes: ${(batched / base).toFixed(1)}×`);
    console.log(`target ≥ 5,000 pairs/s: ${batched >= 5000 ? 'met' : 'NOT met'}`);
  } finally {
    if (child.connected) child.send({ kind: 'stop' } satisfies ToChild);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

const main = process.argv[2] === 'server' ? serverMain : async (): Promise<void> => { await clientMain(); if (!process.env.BENCH_SKIP_DEVNET) await runDevnetBench(); };
main().catch((err) => { console.error(err); process.exit(1); });
