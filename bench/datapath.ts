/**
 * Datapath benchmark (npm run bench:datapath), as root:
 *  1. iperf3 TCP throughput between two pod namespaces through a node namespace,
 *     with the meshid programs attached (policy requiring mutual auth, auth
 *     entries present) against the same path with no programs, alternating
 *     short runs, as the ratio of the medians (target >= 0.95);
 *  2. what one packet costs each program, from the kernel's own test runner
 *     (BPF_PROG_TEST_RUN via bpftool), which other load on the machine does not skew;
 *  3. the rate of auth-map updates from TypeScript (median of several rounds).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthType, Datapath, Protocol, Reason, bootTimeNs } from '../bpf/index.js';
import { Topology, sleep } from '../test/bpf/netns.js';

const ROUNDS = 5;
const SECONDS = 3;
const OMIT_SECONDS = 1;
const PORT = 5201;
const ID_CLIENT = 4001;
const ID_SERVER = 4002;
const UPDATE_ROUNDS = 5;
const UPDATES_PER_ROUND = 50_000; // distinct pairs; the map holds 65536

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function iperf(clientNs: string, server: string): number {
  const out = execFileSync('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', server, '-p', String(PORT),
    '-t', String(SECONDS), '-O', String(OMIT_SECONDS), '-J'], { encoding: 'utf8' });
  const result = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
  return result.end.sum_received.bits_per_second;
}

const gbps = (bps: number): string => (bps / 1e9).toFixed(2) + ' Gbit/s';

async function throughput(topo: Topology, dp: Datapath): Promise<void> {
  const [client, server] = [topo.pods[0]!, topo.pods[1]!];
  const iperfServer = spawn('ip', ['netns', 'exec', server.ns, 'iperf3', '-s', '-p', String(PORT)], { stdio: 'ignore' });
  try {
    await sleep(500);
    const expiry = bootTimeNs() + 3_600_000_000_000n;
    for (const [local, remote, direction] of [[ID_CLIENT, ID_SERVER, 'egress'], [ID_SERVER, ID_CLIENT, 'ingress']] as const) {
      dp.policy.select(local, direction);
      dp.policy.upsert({ localIdentity: local, remoteIdentity: remote, port: PORT, proto: Protocol.tcp, direction },
        { verdict: 'allow', authType: AuthType.mutual });
      dp.auth.upsert({ localIdentity: local, remoteIdentity: remote, remoteNodeId: 0, authType: AuthType.mutual }, expiry);
    }
    const bare: number[] = [];
    const attached: number[] = [];
    const forwardedBefore = dp.metrics.get(Reason.forwarded, 'ingress').packets;
    const dropsBefore = dp.metrics.get(Reason.authRequired, 'ingress').packets + dp.metrics.get(Reason.policyDenied, 'ingress').packets;
    for (let round = 1; round <= ROUNDS; round++) {
      for (const pod of [client, server]) dp.detachEndpoint(pod.nodeIf);
      bare.push(iperf(client.ns, server.ipv4));
      for (const pod of [client, server]) dp.attachEndpoint(pod.nodeIf);
      attached.push(iperf(client.ns, server.ipv4));
      console.log(`  round ${round}/${ROUNDS}: no programs ${gbps(bare.at(-1)!)}, meshid attached ${gbps(attached.at(-1)!)}`);
    }
    const cost = programCost(dp);
    const forwarded = dp.metrics.get(Reason.forwarded, 'ingress').packets - forwardedBefore;
    const drops = dp.metrics.get(Reason.authRequired, 'ingress').packets + dp.metrics.get(Reason.policyDenied, 'ingress').packets - dropsBefore;
    const ratio = median(attached) / median(bare);
    console.log(`  packets policed on entering the server: ${forwarded} forwarded, ${drops} dropped`);
    console.log(`throughput, median of ${ROUNDS} x ${SECONDS}s iperf3 TCP runs:`);
    console.log(`  no programs:      ${gbps(median(bare))}`);
    console.log(`  meshid attached:  ${gbps(median(attached))}  (auth required by policy, auth entry present)`);
    console.log(`  ratio:            ${ratio.toFixed(3)}  (target >= 0.95: ${ratio >= 0.95 ? 'met' : 'NOT met'})`);
    if (cost) {
      console.log(`  cost per packet (kernel bpf stats): leaving the endpoint ${cost.fromEndpoint.toFixed(0)} ns, ` +
        `entering it ${cost.toEndpoint.toFixed(0)} ns`);
    }
  } finally {
    iperfServer.kill('SIGTERM');
  }
}

/** Average run time of each program over the runs so far (needs kernel.bpf_stats_enabled). */
function programCost(dp: Datapath): { fromEndpoint: number; toEndpoint: number } | undefined {
  const ids = dp.programIds();
  const avg = (id: number): number => {
    const info = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' })) as
      { run_time_ns?: number; run_cnt?: number };
    return info.run_cnt ? info.run_time_ns! / info.run_cnt : NaN;
  };
  const cost = { fromEndpoint: avg(ids.fromEndpoint), toEndpoint: avg(ids.toEndpoint) };
  return Number.isNaN(cost.fromEndpoint) ? undefined : cost;
}

/** Turns on the kernel's per-program run-time stats for the duration of fn, then restores the setting. */
async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const path = '/proc/sys/kernel/bpf_stats_enabled';
  const previous = readFileSync(path, 'utf8').trim();
  writeFileSync(path, '1');
  try {
    return await fn();
  } finally {
    writeFileSync(path, previous);
  }
}

/** An Ethernet + IPv4 + TCP packet from `src` to `dst`:`dport` with 64 bytes of payload. */
function tcpPacket(src: string, dst: string, dport: number): Buffer {
  const pkt = Buffer.alloc(14 + 20 + 20 + 64);
  pkt.writeUInt16BE(0x0800, 12);
  pkt[14] = 0x45;
  pkt.writeUInt16BE(pkt.length - 14, 16);
  pkt[22] = 64;
  pkt[23] = Protocol.tcp;
  Buffer.from(src.split('.').map(Number)).copy(pkt, 26);
  Buffer.from(dst.split('.').map(Number)).copy(pkt, 30);
  pkt.writeUInt16BE(40000, 34);
  pkt.writeUInt16BE(dport, 36);
  pkt[46] = 0x50;
  return pkt;
}

/**
 * ns per run of each program for the full check of an original-direction packet
 * (ipcache x2, policy, auth, conntrack, metrics), with 2,000 prefixes in the ipcache.
 */
function testRunCost(dp: Datapath, topo: Topology): void {
  for (let i = 0; i < 2000; i++) dp.ipcache.upsert(`10.${100 + (i >> 8)}.${i & 255}.0/24`, { identity: 5000 + i, nodeId: 1 });
  const [client, server] = [topo.pods[0]!, topo.pods[1]!];
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bench-'));
  try {
    const ids = dp.programIds();
    const run = (id: number, pkt: Buffer): number => {
      const file = join(dir, `pkt-${id}`);
      writeFileSync(file, pkt);
      const out = execFileSync('bpftool', ['-j', 'prog', 'run', 'id', String(id), 'data_in', file, 'repeat', '1000000'], { encoding: 'utf8' });
      return (JSON.parse(out) as { duration: number }).duration;
    };
    const packet = tcpPacket(client.ipv4, server.ipv4, PORT);
    console.log('cost per packet, BPF_PROG_TEST_RUN x 1,000,000 (policy with auth, auth entry present):');
    console.log(`  leaving the client:    ${run(ids.fromEndpoint, packet)} ns`);
    console.log(`  entering the server:   ${run(ids.toEndpoint, packet)} ns`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function authUpdateRate(dp: Datapath): void {
  const rates: number[] = [];
  const expiry = bootTimeNs() + 3_600_000_000_000n;
  for (let round = 0; round < UPDATE_ROUNDS; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < UPDATES_PER_ROUND; i++) {
      dp.auth.upsert({ localIdentity: 10_000 + (i % 1000), remoteIdentity: 20_000 + Math.floor(i / 1000), remoteNodeId: 1, authType: AuthType.mutual }, expiry);
    }
    const ns = Number(process.hrtime.bigint() - start);
    rates.push(UPDATES_PER_ROUND / (ns / 1e9));
  }
  for (const { pair } of dp.auth.entries()) dp.auth.delete(pair);
  const rate = median(rates);
  console.log(`auth map updates from TypeScript, median of ${UPDATE_ROUNDS} rounds of ${UPDATES_PER_ROUND}:`);
  console.log(`  ${Math.round(rate).toLocaleString('en-US')} updates/s  (${(1e6 / rate).toFixed(2)} us per update)`);
}

async function main(): Promise<void> {
  const topo = new Topology('bench', 74);
  const pinDir = `/sys/fs/bpf/meshid-bench-${process.pid}`;
  const dp = new Datapath({ pinDir, netns: `/run/netns/${topo.nodeNs}` });
  try {
    topo.create(2);
    dp.start();
    topo.pods.forEach((pod, i) => dp.ipcache.upsert(pod.ipv4, { identity: i === 0 ? ID_CLIENT : ID_SERVER, nodeId: 0 }));
    console.log('meshid datapath benchmark');
    await withBpfStats(() => throughput(topo, dp));
    testRunCost(dp, topo);
    authUpdateRate(dp);
  } finally {
    dp.stop();
    topo.destroy();
    Datapath.removePins(pinDir);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
