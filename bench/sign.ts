/**
 * npm run bench:sign — X509-SVIDs per second through the signing path of
 * BatchNewX509SVID (CSR parse + signature check + certificate encoding +
 * ECDSA signature):
 *  1. on one core (the event loop), with the native P-256 addon as
 *     meshid-server runs it and with node:crypto alone;
 *  2. on the signing pool with 1, 2, … N worker threads (N: the machine's
 *     cores), batches of 500 kept in flight, against N × the one-core figure
 *     (target: >= 0.9 × N × one core);
 *  3. over TLS gRPC (BatchNewX509SVID), client and server in one process.
 * `openssl speed -multi K ecdsap256` of the same machine is printed beside each
 * as the limit: each SVID costs one verify and one sign, so the limit is
 * 1 / (1/sign_rate + 1/verify_rate). Beside the pool: how well this machine
 * scales the same code with no pool at all (K worker threads each signing in a
 * loop of their own, bench/signloop.ts), and how well it scales openssl.
 */
import { execFileSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { systemClock } from '../common/clock.js';
import { silentLogger } from '../common/log.js';
import { CertificateAuthority, MemoryCaJournal, MemoryKeyManager, P256, SigningPool } from '../server/ca/index.js';
import { availableParallelism } from 'node:os';
import { createCsr, generateKeyPair, SelectorSet, SpiffeId, TrustDomain } from '../spiffe/index.js';
import { agentClient, attestAgent, call, startServerParts } from '../test/helpers/server.js';
import type { BatchNewX509SvidResponseMsg } from '../api/agentproto.js';
import { median } from './stats.js';


function opensslLimit(processes = 1): { sign: number; verify: number } | undefined {
  try {
    const multi = processes > 1 ? ['-multi', String(processes)] : [];
    const out = execFileSync('openssl', ['speed', ...multi, '-seconds', '2', 'ecdsap256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const m = /256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/.exec(out);
    return m ? { sign: Number(m[1]), verify: Number(m[2]) } : undefined;
  } catch { return undefined; }
}

/** SVIDs/s of `workers` threads signing in loops of their own (bench/signloop.ts), summed. */
async function freeRunning(workers: number, csrs: Buffer[], seconds: number): Promise<number> {
  const rates = await Promise.all(Array.from({ length: workers }, () => new Promise<number>((resolve, reject) => {
    const w = new Worker(new URL('./signloop.js', import.meta.url), { workerData: { csrs: csrs.slice(0, 100), seconds } });
    w.once('message', (rate: number) => { resolve(rate); void w.terminate(); });
    w.once('error', reject);
  })));
  return rates.reduce((a, b) => a + b, 0);
}

async function main(): Promise<void> {
  const N = Number(process.env.BENCH_N ?? 3000);
  // a round takes about 2 s; two threads feel this shared machine's other tenants more
  // than one does (a round of 2 workers ranges +-15%), so the median needs many rounds
  const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 21);
  console.log(`bench:sign — ${N} CSRs a round, ${ROUNDS} rounds, median reported (machine: ${process.arch}, node ${process.version})`);
  const csrs = Array.from({ length: N }, () => { const k = generateKeyPair(); return createCsr(k.privateKey, k.publicKey); });
  const td = TrustDomain.parse('example.org');
  const id = SpiffeId.parse('spiffe://example.org/ns/default/sa/web');
  const p256 = P256.load();
  if (!p256) console.log('  the native P-256 addon is not built (make native): only the node:crypto path is measured');

  // The configurations, measured in interleaved rounds (each round runs every one of
  // them once, in a rotating order), so a drift of this shared machine's speed falls
  // on all of them alike; ratios are taken within a round, then their median.
  //  - one core: the signing path on the event loop, as each BatchNewX509SVID item ran
  //    it before the pool, with the native P-256 addon (as meshid-server runs) and with
  //    node:crypto alone;
  //  - the signing pool with 1..N workers (signing.workers), batches of 500 in flight.
  const newCa = async (extra: { p256?: P256; signingPool?: SigningPool }): Promise<CertificateAuthority> => {
    const ca = new CertificateAuthority({
      trustDomain: td, keys: new MemoryKeyManager(), journal: new MemoryCaJournal(), clock: systemClock, logger: silentLogger,
      caTtlSeconds: 86400, x509SvidTtlSeconds: 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256', caSubject: [['O', 'bench']], ...extra,
    });
    await ca.start();
    return ca;
  };
  const requests = csrs.map((csr) => ({ spiffeId: id, csr }));
  const batch = 500;
  interface Config { label: string; workers: number; run: () => Promise<void>; rates: number[]; busy: number[]; close: () => Promise<void> }
  const configs: Config[] = [];
  const oneCore = (label: string, ca: CertificateAuthority): Config => ({
    label, workers: 0, rates: [], busy: [], close: async () => ca.stop(),
    run: async () => { for (const csr of csrs) ca.signX509Svid(id, ca.parseCsr(csr).publicKeySpki); },
  });
  configs.push(oneCore('one core', await newCa(p256 ? { p256 } : {})));
  if (p256) configs.push(oneCore('one core, node:crypto', await newCa({})));
  const cores = availableParallelism();
  for (let workers = 1; workers <= cores; workers++) {
    const pool = new SigningPool({ workers, logger: silentLogger, nativeP256: !!p256 });
    pool.start();
    const ca = await newCa({ ...(p256 ? { p256 } : {}), signingPool: pool });
    const run = async (): Promise<void> => {
      const out = await Promise.all(Array.from({ length: Math.ceil(N / batch) }, (_, i) => ca.signX509Svids(requests.slice(i * batch, (i + 1) * batch))));
      if (out.flat().some((o) => o instanceof Error)) throw new Error('a CSR was refused on the pool');
    };
    for (let i = 0; i < 3; i++) await run(); // not counted: the workers import the key and their code is optimised
    configs.push({ label: `${workers} worker${workers > 1 ? 's' : ''}`, workers, run, rates: [], busy: [], close: async () => { ca.stop(); await pool.stop(); } });
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < configs.length; k++) {
      const c = configs[(k + r) % configs.length]!;
      const elu0 = performance.eventLoopUtilization();
      const t0 = performance.now();
      await c.run();
      c.rates.push(N / ((performance.now() - t0) / 1000));
      c.busy.push(performance.eventLoopUtilization(elu0).utilization);
    }
  }
  for (const c of configs) await c.close();
  const core = configs[0]!.rates;
  const nodeCrypto = p256 ? configs[1]!.rates : core;
  const pooled = configs.filter((c) => c.workers > 0);

  // 2. the whole RPC: TLS gRPC on loopback, batches of 500, client in the same process (one core for both)
  const parts = await startServerParts();
  const agent = await attestAgent(parts);
  const entry = await parts.store.createEntry({ spiffeId: id, parentId: agent.agentId, selectors: SelectorSet.parse(['unix:uid:0']) });
  const rpc: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < N; i += batch) {
      const res = await call<BatchNewX509SvidResponseMsg>(agent.client, 'BatchNewX509SVID', { params: csrs.slice(i, i + batch).map((csr) => ({ entry_id: entry.id, csr })) });
      if (res.results.some((x) => x.status?.code !== 0)) throw new Error('a CSR was refused: ' + JSON.stringify(res.results.find((x) => x.status?.code !== 0)?.status));
    }
    rpc.push(N / ((performance.now() - t0) / 1000));
  }
  agent.client.close();
  void agentClient;
  await parts.stop();

  // the code's own scaling: K free-running threads against one, in interleaved rounds
  const free: number[][] = Array.from({ length: cores + 1 }, () => []);
  for (let r = 0; r < 3; r++) {
    for (let k = 1; k <= cores; k++) free[k]!.push(await freeRunning(k, csrs, 3));
  }

  const limit = opensslLimit();
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  const svidLimit = (l: { sign: number; verify: number }): number => 1 / (1 / l.sign + 1 / l.verify);
  console.log(`signing path (parse+verify CSR, encode, sign), one core:  ${fmt(median(core))} SVIDs/s  (rounds: ${core.map(fmt).join(', ')})${p256 ? ', native P-256' : ', node:crypto'}`);
  if (p256) console.log(`  the same with node:crypto alone:                          ${fmt(median(nodeCrypto))} SVIDs/s  (rounds: ${nodeCrypto.map(fmt).join(', ')}); native / node:crypto ${(median(core) / median(nodeCrypto)).toFixed(2)}`);
  if (limit) {
    console.log(`  limit: openssl speed ecdsap256: ${fmt(limit.sign)} signs/s, ${fmt(limit.verify)} verifies/s → ${fmt(svidLimit(limit))} SVIDs/s; ratio ${(median(core) / svidLimit(limit)).toFixed(2)}`);
  }
  console.log(`signing pool (signing.workers), batches of 500 in flight, ${cores} cores here (x one core: the median over rounds of the ratio within each round):`);
  for (const c of pooled) {
    const ratios = c.rates.map((rate, r) => rate / (c.workers * core[r]!));
    const ratio = median(ratios);
    const multi = c.workers === 1 ? limit : opensslLimit(c.workers);
    const target = c.workers === cores ? `  target >= 0.90: ${ratio >= 0.9 ? 'met' : 'NOT met'}` : '';
    // how well the machine itself scales to this many processes, beside how well the pool does
    const codeScaling = `; this code free-running on ${c.workers} thread${c.workers > 1 ? 's' : ''} (no pool): ${(median(free[c.workers]!) / median(free[1]!) / c.workers).toFixed(2)} x ${c.workers}`;
    const machineScaling = (multi && limit ? `; openssl's own scaling ${(svidLimit(multi) / svidLimit(limit) / c.workers).toFixed(2)} x ${c.workers}` : '') + (c.workers > 1 ? codeScaling : '');
    console.log(`  ${c.label.padEnd(9)}: ${fmt(median(c.rates)).padStart(6)} SVIDs/s  (rounds: ${c.rates.map(fmt).join(', ')}); ` +
      `${ratio.toFixed(3)} x ${c.workers} x one core` +
      (multi ? `; openssl speed -multi ${c.workers}: ${fmt(svidLimit(multi))} SVIDs/s, ratio ${(median(c.rates) / svidLimit(multi)).toFixed(2)}${machineScaling}` : '') +
      `; event loop busy ${(median(c.busy) * 100).toFixed(0)}% (one core: ${(median(configs[0]!.busy) * 100).toFixed(0)}%)` + target);
  }
  console.log(`BatchNewX509SVID over TLS gRPC, server+client on one core: ${fmt(median(rpc))} SVIDs/s  (rounds: ${rpc.map(fmt).join(', ')})`);
  if (!limit) console.log('limit: openssl speed unavailable');
}

main().catch((err) => { console.error(err); process.exit(1); });
