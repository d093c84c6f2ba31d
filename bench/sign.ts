/**
 * npm run bench:sign — X509-SVIDs per second on one core through the signing
 * path of BatchNewX509SVID (CSR parse + signature check + certificate
 * encoding + ECDSA signature), with the native P-256 addon as meshid-server
 * runs it and with node:crypto alone, and `openssl speed ecdsap256` of the same
 * machine printed beside it as the limit: each SVID costs one verify and one
 * sign, so the limit is 1 / (1/sign_rate + 1/verify_rate).
 */
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { systemClock } from '../common/clock.js';
import { silentLogger } from '../common/log.js';
import { CertificateAuthority, MemoryCaJournal, MemoryKeyManager, P256 } from '../server/ca/index.js';
import { createCsr, generateKeyPair, SelectorSet, SpiffeId, TrustDomain } from '../spiffe/index.js';
import { agentClient, attestAgent, call, startServerParts } from '../test/helpers/server.js';
import type { BatchNewX509SvidResponseMsg } from '../api/agentproto.js';
import { median } from './stats.js';


function opensslLimit(): { sign: number; verify: number } | undefined {
  try {
    const out = execFileSync('openssl', ['speed', '-seconds', '2', 'ecdsap256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const m = /256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/.exec(out);
    return m ? { sign: Number(m[1]), verify: Number(m[2]) } : undefined;
  } catch { return undefined; }
}

async function main(): Promise<void> {
  const N = Number(process.env.BENCH_N ?? 3000);
  const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
  console.log(`bench:sign — ${N} CSRs a round, ${ROUNDS} rounds, median reported (machine: ${process.arch}, node ${process.version})`);
  const csrs = Array.from({ length: N }, () => { const k = generateKeyPair(); return createCsr(k.privateKey, k.publicKey); });
  const td = TrustDomain.parse('example.org');
  const id = SpiffeId.parse('spiffe://example.org/ns/default/sa/web');
  const p256 = P256.load();
  if (!p256) console.log('  the native P-256 addon is not built (make native): only the node:crypto path is measured');

  // 1. the signing path itself, as each BatchNewX509SVID item runs it: with the native
  //    P-256 addon (as meshid-server runs), and with node:crypto alone for comparison
  const signingPath = async (accelerator: P256 | undefined): Promise<number[]> => {
    const ca = new CertificateAuthority({
      trustDomain: td, keys: new MemoryKeyManager(), journal: new MemoryCaJournal(), clock: systemClock, logger: silentLogger,
      caTtlSeconds: 86400, x509SvidTtlSeconds: 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256', caSubject: [['O', 'bench']],
      ...(accelerator ? { p256: accelerator } : {}),
    });
    await ca.start();
    const rates: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      for (const csr of csrs) ca.signX509Svid(id, ca.parseCsr(csr).publicKeySpki);
      rates.push(N / ((performance.now() - t0) / 1000));
    }
    ca.stop();
    return rates;
  };
  const core = await signingPath(p256);
  const nodeCrypto = p256 ? await signingPath(undefined) : core;

  // 2. the whole RPC: TLS gRPC on loopback, batches of 500, client in the same process (one core for both)
  const parts = await startServerParts();
  const agent = await attestAgent(parts);
  const entry = await parts.store.createEntry({ spiffeId: id, parentId: agent.agentId, selectors: SelectorSet.parse(['unix:uid:0']) });
  const rpc: number[] = [];
  const batch = 500;
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

  const limit = opensslLimit();
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(`signing path (parse+verify CSR, encode, sign), one core:  ${fmt(median(core))} SVIDs/s  (rounds: ${core.map(fmt).join(', ')})${p256 ? ', native P-256' : ', node:crypto'}`);
  if (p256) console.log(`  the same with node:crypto alone:                          ${fmt(median(nodeCrypto))} SVIDs/s  (rounds: ${nodeCrypto.map(fmt).join(', ')}); native / node:crypto ${(median(core) / median(nodeCrypto)).toFixed(2)}`);
  console.log(`BatchNewX509SVID over TLS gRPC, server+client on one core: ${fmt(median(rpc))} SVIDs/s  (rounds: ${rpc.map(fmt).join(', ')})`);
  if (limit) {
    const bound = 1 / (1 / limit.sign + 1 / limit.verify);
    console.log(`limit: openssl speed ecdsap256 here: ${fmt(limit.sign)} signs/s, ${fmt(limit.verify)} verifies/s → ${fmt(bound)} SVIDs/s (one sign + one verify each)`);
    console.log(`ratio signing path / openssl limit: ${(median(core) / bound).toFixed(2)}; target ≥ 5,000 SVIDs/s: ${median(core) >= 5000 ? 'met' : 'NOT met'}`);
  } else {
    console.log('limit: openssl speed unavailable');
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
