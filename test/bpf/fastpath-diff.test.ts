/**
 * The fast path of established flows (bpf/lib/fastpath.h), proved by difference.
 *
 * bpf/meshid.c is built twice, with MESHID_FASTPATH=1 and =0 (build/bpf/difftest),
 * both with MESHID_TEST_BUILD: the clock is a map the test sets, so time moves by
 * exact steps, and the fast path counts its hits. Each object is loaded on maps of
 * its own. Seeded random sequences of packets, interleaved with map changes
 * (policy selected, allowed, denied, removed; auth written, expiring, deleted;
 * ipcache entries moved and removed; the WireGuard device changed) and clock
 * steps, run through both with BPF_PROG_TEST_RUN: every packet must get the same
 * verdict and the same drop reason (the per-reason counter it moved) from both.
 * What the flow cache does when the LRU conntrack map evicts a live flow's
 * entry is checked on its own, below.
 *
 * MESHID_DIFF_SEQUENCES (default 2,000) and MESHID_DIFF_SEED replay or widen it;
 * a failure names the seed and the sequence, and prints the steps that led there.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { MapType, RawMap } from 'bpf';
import { bpfObjectDir } from '../../api/assets.js';
import { AuthType, Datapath, Protocol, type Direction } from '../../bpf/index.js';
import { parseIp } from '../../bpf/address.js';
import { AUTH_KEY_SIZE, AUTH_VALUE_SIZE, CT_KEY_SIZE, CT_VALUE_SIZE, encodeAuthKey } from '../../bpf/layouts.js';
import { ConfigMap, MapName, openPinnedMap } from '../../bpf/maps.js';
import { prng as rng } from '../helpers/mutate.js';
import { frame } from './frames.js';
import { runAll, testPinDir } from './netns.js';

const SEQUENCES = Number(process.env['MESHID_DIFF_SEQUENCES'] ?? 2000);
const SEED = Number(process.env['MESHID_DIFF_SEED'] ?? 0x6d657368);
const STEPS = 60;
const TC_ACT_OK = 0;
const REASONS = [0, 1, 2, 3, 4];
const SEC = 1_000_000_000n;
const WG_IFINDEX = 9;
const OTHER_IFINDEX = 4;

/** One of the two builds, loaded on its own pinned maps. */
class Build {
  readonly dp: Datapath;
  readonly pinDir: string;
  #clock!: RawMap;
  #hits!: RawMap;
  #conntrack!: RawMap;
  #config!: ConfigMap;
  readonly #u32 = Buffer.alloc(4);
  readonly #u64 = Buffer.alloc(8);

  constructor(readonly name: string, object: string) {
    this.pinDir = testPinDir(`diff-${name}`);
    this.dp = new Datapath({ pinDir: this.pinDir, objectPath: join(bpfObjectDir, 'difftest', object) });
  }

  start(): void {
    mkdirSync(this.pinDir, { recursive: true });
    this.dp.start();
    const array = { type: MapType.ARRAY, keySize: 4, valueSize: 8 };
    this.#clock = new RawMap(openPinnedMap(this.pinDir, 'meshid_test_clock', array));
    this.#hits = new RawMap(openPinnedMap(this.pinDir, 'meshid_test_fastpath', array));
    this.#conntrack = new RawMap(openPinnedMap(this.pinDir, MapName.conntrack, { type: MapType.LRU_HASH, keySize: CT_KEY_SIZE, valueSize: CT_VALUE_SIZE }));
    this.#config = ConfigMap.open(this.pinDir, this.dp.generation);
  }

  stop(): void {
    for (const m of [this.#clock, this.#hits, this.#conntrack]) m?.ref.close();
    this.#config?.close();
    this.dp.stop();
    Datapath.removePins(this.pinDir);
  }

  setClock(ns: bigint): void {
    this.#u64.writeBigUInt64LE(ns, 0);
    this.#clock.set(this.#u32, this.#u64);
  }

  /** Packets the fast path forwarded: all of them, or those it found in the flow cache. */
  fastPathHits(which: 'all' | 'flowcache' = 'all'): bigint {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(which === 'all' ? 0 : 1);
    return this.#hits.get(key)!.readBigUInt64LE(0);
  }

  /** Removes one conntrack entry, as the LRU map evicts one (no generation bump). */
  evict(key: Buffer): void {
    this.#conntrack.delete(key);
  }

  setWireguardIfindex(ifindex: number): void {
    this.#config.set({ ...this.#config.get(), wireguardIfindex: ifindex });
  }

  /** Empties every map a verdict reads, and conntrack. */
  reset(): void {
    for (const { key } of this.dp.policy.entries()) this.dp.policy.delete(key);
    for (const { pair } of this.dp.auth.entries()) this.dp.auth.delete(pair);
    for (const { cidr } of this.dp.ipcache.entries()) this.dp.ipcache.delete(cidr);
    this.#conntrack.clear();
    this.setWireguardIfindex(WG_IFINDEX);
  }

  /** The verdict of one packet: the program's return code and the reason counter it moved. */
  run(program: 'fromEndpoint' | 'toEndpoint', packet: Buffer, ingressIfindex: number): { retval: number; reason: number | null } {
    const direction: Direction = program === 'fromEndpoint' ? 'egress' : 'ingress';
    const before = REASONS.map((r) => this.dp.metrics.get(r, direction).packets);
    const { retval } = this.dp.testRun(program, packet, { ingressIfindex });
    const moved = REASONS.filter((r, i) => this.dp.metrics.get(r, direction).packets !== before[i]);
    return { retval, reason: moved.length === 1 ? moved[0]! : moved.length === 0 ? null : -1 };
  }
}

/** The world of one node: its endpoints, the addresses around it, the identities policies name. */
const LOCAL_ADDRESSES = ['10.0.0.1', '10.0.0.2', 'fd00::1'];
const OTHER_ADDRESSES = ['10.0.0.3', '10.1.0.1', '10.2.0.1', '192.0.2.9', 'fd01::1'];
const LOCAL_IDS = [100, 101, 102];
const REMOTE_IDS = [0, 100, 101, 102, 200, 201, 300];
const PORTS = [0, 80, 443];
const PROTOS = [0, Protocol.tcp, Protocol.udp];

interface Flow { src: string; dst: string; proto: number; sport: number; dport: number }

/** The `struct ct_key` a program of `direction` records for packets of `f`. */
function conntrackKey(f: Flow, direction: Direction): Buffer {
  const key = Buffer.alloc(CT_KEY_SIZE);
  const src = parseIp(f.src);
  Buffer.from(src.bytes).copy(key, 0);
  Buffer.from(parseIp(f.dst).bytes).copy(key, 16);
  key.writeUInt16LE(f.sport, 32);
  key.writeUInt16LE(f.dport, 34);
  key[36] = f.proto;
  key[37] = src.family === 4 ? 2 : 10;
  key[38] = direction === 'ingress' ? 0 : 1;
  return key;
}

const reversed = (f: Flow): Flow => ({ src: f.dst, dst: f.src, proto: f.proto, sport: f.dport, dport: f.sport });

class Sequence {
  readonly #r: () => number;
  now = 1000n * SEC;
  readonly log: string[] = [];
  readonly flows: Flow[] = [];

  constructor(seed: number) { this.#r = rng(seed); }

  int(n: number): number { return Math.floor(this.#r() * n); }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  chance(p: number): boolean { return this.#r() < p; }

  flow(): Flow {
    if (this.flows.length > 0 && this.chance(0.8)) return this.pick(this.flows);
    const v6 = this.chance(0.15);
    const local = v6 ? 'fd00::1' : this.pick(LOCAL_ADDRESSES.slice(0, 2));
    const other = v6 ? this.pick(['fd01::1', 'fd00::1']) : this.pick([...OTHER_ADDRESSES.slice(0, 4), ...LOCAL_ADDRESSES.slice(0, 2)]);
    const outward = this.chance(0.5);
    const f: Flow = {
      src: outward ? local : other, dst: outward ? other : local,
      proto: this.pick([Protocol.tcp, Protocol.tcp, Protocol.udp]),
      sport: 30000 + this.int(4), dport: this.pick([80, 443, 8080]),
    };
    this.flows.push(f);
    return f;
  }
}

const fast = new Build('fast', 'meshid-fastpath.o');
const full = new Build('full', 'meshid-fullpath.o');
const both = [fast, full];

t.before(() => { for (const b of both) b.start(); });
t.teardown(() => runAll(both.map((b) => () => b.stop())));

/** The starting state of every sequence: endpoints known, selected, mostly allowed with auth, pairs authenticated. */
function seedState(s: Sequence): void {
  const ipcache: Array<[string, number, number]> = [
    ['10.0.0.1', 100, 0], ['10.0.0.2', 101, 0], ['fd00::1', 100, 0], ['10.0.0.3', 102, 0],
    ['10.1.0.1', 200, 1], ['10.2.0.1', 201, 2], ['fd01::1', 200, 1],
  ];
  const authTypes = LOCAL_IDS.map(() => [s.chance(0.6), s.chance(0.6)].map((on) => on ? AuthType.mutual : 0));
  for (const b of both) {
    for (const [ip, identity, nodeId] of ipcache) b.dp.ipcache.upsert(ip, { identity, nodeId });
    for (const [i, local] of LOCAL_IDS.entries()) {
      for (const [j, direction] of (['ingress', 'egress'] as const).entries()) {
        b.dp.policy.select(local, direction, 'allow', authTypes[i]![j]!);
      }
      for (const remote of [100, 101, 102, 200, 201]) {
        for (const nodeId of [0, 1, 2]) {
          b.dp.auth.upsert({ localIdentity: local, remoteIdentity: remote, remoteNodeId: nodeId, authType: AuthType.mutual }, s.now + 3600n * SEC);
        }
      }
    }
  }
}

/** One random step: a packet (most of the time), a map change, or the clock moving on. */
function step(s: Sequence): { packet?: { program: 'fromEndpoint' | 'toEndpoint'; bytes: Buffer; ingressIfindex: number } } {
  const roll = s.int(100);
  if (roll < 75) {
    const f = s.flow();
    const reply = s.chance(0.3);
    const spec = reply ? reversed(f) : f;
    const program = s.chance(0.5) ? 'fromEndpoint' : 'toEndpoint';
    const ingressIfindex = s.pick([WG_IFINDEX, WG_IFINDEX, 0, OTHER_IFINDEX]);
    s.log.push(`packet ${program} ${spec.src}:${spec.sport} -> ${spec.dst}:${spec.dport}/${spec.proto} via ${ingressIfindex}`);
    return { packet: { program, bytes: frame(spec), ingressIfindex } };
  }
  if (roll < 83) {
    const dt = s.chance(0.1) ? s.pick([61n * SEC, 7n * 3600n * SEC]) : BigInt(s.int(1500)) * 1_000_000n;
    s.now += dt;
    s.log.push(`clock +${dt / 1_000_000n} ms`);
    return {};
  }
  if (roll < 89) {
    const key = {
      localIdentity: s.pick(LOCAL_IDS), remoteIdentity: s.pick(REMOTE_IDS), port: s.pick(PORTS),
      proto: s.pick(PROTOS), direction: s.pick(['ingress', 'egress'] as const),
    };
    if (key.port !== 0 && key.proto === 0) key.proto = Protocol.tcp; // a port without a protocol is never written
    if (s.chance(0.3)) {
      s.log.push(`policy delete ${JSON.stringify(key)}`);
      for (const b of both) b.dp.policy.delete(key);
    } else {
      const entry = { verdict: s.chance(0.75) ? 'allow' as const : 'deny' as const, authType: s.chance(0.5) ? AuthType.mutual : 0 };
      s.log.push(`policy upsert ${JSON.stringify(key)} ${JSON.stringify(entry)}`);
      for (const b of both) b.dp.policy.upsert(key, entry);
    }
    return {};
  }
  if (roll < 95) {
    const pair = { localIdentity: s.pick(LOCAL_IDS), remoteIdentity: s.pick([100, 101, 102, 200, 201, 300]), remoteNodeId: s.pick([0, 1, 2]), authType: AuthType.mutual };
    if (s.chance(0.35)) {
      s.log.push(`auth delete ${JSON.stringify(pair)}`);
      for (const b of both) b.dp.auth.delete(pair);
    } else {
      // expired already, expiring within the next clock steps, or far away
      const expiry = s.now + BigInt(s.int(4000) - 1000) * 1_000_000n + (s.chance(0.3) ? 3600n * SEC : 0n);
      s.log.push(`auth upsert ${JSON.stringify(pair)} expires now${expiry >= s.now ? '+' : ''}${(expiry - s.now) / 1_000_000n} ms`);
      for (const b of both) b.dp.auth.upsert(pair, expiry);
    }
    return {};
  }
  if (roll < 98) {
    const address = s.pick([...LOCAL_ADDRESSES, ...OTHER_ADDRESSES]);
    if (s.chance(0.25)) {
      s.log.push(`ipcache delete ${address}`);
      for (const b of both) b.dp.ipcache.delete(address);
    } else {
      const entry = { identity: s.pick([100, 101, 102, 200, 201, 300]), nodeId: s.pick([0, 1, 2]) };
      s.log.push(`ipcache upsert ${address} ${JSON.stringify(entry)}`);
      for (const b of both) b.dp.ipcache.upsert(address, entry);
    }
    return {};
  }
  const ifindex = s.pick([WG_IFINDEX, 0, OTHER_IFINDEX]);
  s.log.push(`wireguard device ifindex ${ifindex}`);
  for (const b of both) b.setWireguardIfindex(ifindex);
  return {};
}

t.test(`the fast path and the full check give every packet the same verdict and drop reason (${SEQUENCES} seeded sequences of ${STEPS} steps)`, async (t) => {
  let packets = 0;
  let forwarded = 0;
  const hitsBefore = fast.fastPathHits();
  const cachedBefore = fast.fastPathHits('flowcache');
  const hitsFullBefore = full.fastPathHits();
  const reasonsSeen = new Set<number | null>();
  let mismatch: string | undefined;
  for (let n = 0; n < SEQUENCES && !mismatch; n++) {
    const seed = (SEED + n * 0x9e3779b1) >>> 0;
    const s = new Sequence(seed);
    for (const b of both) { b.reset(); b.setClock(s.now); }
    seedState(s);
    for (let i = 0; i < STEPS; i++) {
      const { packet } = step(s);
      for (const b of both) b.setClock(s.now);
      if (!packet) continue;
      // packets of a flow come in runs, as they do on the wire
      const burst = s.chance(0.4) ? 2 + s.int(3) : 1;
      for (let k = 0; k < burst && !mismatch; k++) {
        const a = fast.run(packet.program, packet.bytes, packet.ingressIfindex);
        const b = full.run(packet.program, packet.bytes, packet.ingressIfindex);
        packets++;
        if (a.retval === TC_ACT_OK) forwarded++;
        reasonsSeen.add(b.reason);
        if (a.retval !== b.retval || a.reason !== b.reason) {
          mismatch = `sequence ${n} (MESHID_DIFF_SEED=${SEED}, seed ${seed}), step ${i}, packet ${k + 1} of ${burst}: ` +
            `fast path ${JSON.stringify(a)}, full check ${JSON.stringify(b)}\n  ${s.log.join('\n  ')}`;
        }
      }
      if (mismatch) break;
    }
  }
  t.equal(mismatch, undefined, 'no packet got another verdict or reason from the fast path');
  const hits = fast.fastPathHits() - hitsBefore;
  t.equal(full.fastPathHits() - hitsFullBefore, 0n, 'the build with the fast path off never takes it');
  const cached = fast.fastPathHits('flowcache') - cachedBefore;
  t.ok(hits > BigInt(packets) / 5n, `the fast path decided ${hits} of ${packets} packets (${forwarded} forwarded): the sequences exercise it`);
  t.ok(cached > hits / 5n && cached < hits, `${cached} of them from the flow cache, the rest from conntrack: both exercised`);
  t.ok(forwarded < packets, 'and the sequences also drop');
  t.same([...reasonsSeen].filter((r) => r !== null).sort(), [0, 1, 2, 3], 'drops of every policy reason occur (forwarded, policy denied, auth required, wireguard required)');
  t.notOk(reasonsSeen.has(-1), 'no packet moved two counters');
});

t.test('a change made behind the agent\'s back (an auth entry deleted without a generation bump) reaches an established flow within the 1 s revalidation', async (t) => {
  const b = fast;
  const s = new Sequence(1);
  b.reset();
  b.setClock(s.now);
  b.dp.ipcache.upsert('10.0.0.1', { identity: 100, nodeId: 0 });
  b.dp.ipcache.upsert('10.0.0.3', { identity: 102, nodeId: 0 });
  b.dp.policy.select(100, 'ingress', 'allow', AuthType.mutual);
  const pair = { localIdentity: 100, remoteIdentity: 102, remoteNodeId: 0, authType: AuthType.mutual };
  b.dp.auth.upsert(pair, s.now + 3600n * SEC);
  const packet = frame({ src: '10.0.0.3', dst: '10.0.0.1', proto: Protocol.tcp, sport: 40000, dport: 80 });
  const hits = (): bigint => b.fastPathHits();

  t.equal(b.run('toEndpoint', packet, 0).retval, TC_ACT_OK, 'the first packet is checked in full and forwarded');
  const before = hits();
  t.equal(b.run('toEndpoint', packet, 0).retval, TC_ACT_OK, 'the next one is forwarded');
  t.equal(hits(), before + 1n, 'on the fast path');

  const raw = new RawMap(openPinnedMap(b.pinDir, MapName.auth, { type: MapType.HASH, keySize: AUTH_KEY_SIZE, valueSize: AUTH_VALUE_SIZE }));
  t.teardown(() => raw.ref.close());
  t.equal(raw.delete(encodeAuthKey(pair)), true, 'deleted with no bump, as bpftool would');
  s.now += 900_000_000n;
  b.setClock(s.now);
  t.equal(b.run('toEndpoint', packet, 0).retval, TC_ACT_OK, 'still forwarded 0.9 s after the last full check (the documented bound)');
  s.now += 100_000_000n;
  b.setClock(s.now);
  t.same(b.run('toEndpoint', packet, 0), { retval: 2, reason: 2 }, 'dropped as auth required once that check is 1 s old');
});

/**
 * Runs fn with this thread (the one that calls BPF_PROG_TEST_RUN) on one CPU, so
 * that every packet meets the same CPU's flow cache, and restores its CPUs after.
 */
function onOneCpu<T>(fn: () => T): T {
  const pid = String(process.pid);
  const before = /: (\S+)$/.exec(execFileSync('taskset', ['-p', '-c', pid], { encoding: 'utf8' }).trim())![1]!;
  execFileSync('taskset', ['-p', '-c', '0', pid], { stdio: 'ignore' });
  try {
    return fn();
  } finally {
    execFileSync('taskset', ['-p', '-c', before, pid], { stdio: 'ignore' });
  }
}

/**
 * Empties a build's maps and gives it the endpoints `addresses` ([ip, identity,
 * node id]) and endpoint 100's default in each direction; returns the sequence
 * whose clock it runs on.
 */
function freshNode(b: Build, addresses: Array<[string, number, number]>,
  defaults: Array<[Direction, 'allow' | 'deny', number]>): Sequence {
  const s = new Sequence(1);
  b.reset();
  b.setClock(s.now);
  for (const [ip, identity, nodeId] of addresses) b.dp.ipcache.upsert(ip, { identity, nodeId });
  for (const [direction, verdict, authType] of defaults) b.dp.policy.select(100, direction, verdict, authType);
  return s;
}

t.test('a flow whose conntrack entry was evicted, once the flow the other way is recorded, is that flow\'s reply: its copy in the flow cache stops holding', async (t) => {
  // endpoint 100 here, 200 on node 1; 100's ingress allows without auth, its egress requires auth
  const inbound: Flow = { src: '10.1.0.1', dst: '10.0.0.1', proto: Protocol.tcp, sport: 443, dport: 40000 };
  const runs = 10;
  const verdicts = (b: Build, flow: Flow, program: 'fromEndpoint' | 'toEndpoint'): Array<{ retval: number; reason: number | null }> =>
    Array.from({ length: runs }, () => b.run(program, frame(flow), OTHER_IFINDEX));
  const seen = new Map<Build, Array<Array<{ retval: number; reason: number | null }>>>();
  for (const b of both) onOneCpu(() => {
    const s = freshNode(b, [['10.0.0.1', 100, 0], ['10.1.0.1', 200, 1]], [['ingress', 'allow', 0], ['egress', 'allow', AuthType.mutual]]);
    b.dp.auth.upsert({ localIdentity: 100, remoteIdentity: 200, remoteNodeId: 1, authType: AuthType.mutual }, s.now + 3600n * SEC);
    const cachedBefore = b.fastPathHits('flowcache');
    const before = verdicts(b, inbound, 'toEndpoint');
    if (b === fast) t.equal(b.fastPathHits('flowcache') - cachedBefore, BigInt(runs - 2), 'the inbound flow is forwarded from the flow cache from its third packet on');
    b.evict(conntrackKey(inbound, 'ingress'));
    const outbound = verdicts(b, reversed(inbound), 'fromEndpoint');
    const after = verdicts(b, inbound, 'toEndpoint');
    seen.set(b, [before, outbound, after]);
  });
  const [before, outbound, after] = seen.get(fast)!;
  t.same(before, Array(runs).fill({ retval: TC_ACT_OK, reason: 0 }), 'inbound packets pass: no auth needed to enter');
  t.same(outbound, Array(runs).fill({ retval: TC_ACT_OK, reason: 0 }), 'with its entry evicted, the flow the other way is checked as a flow of its own (auth present)');
  t.same(after, Array(runs).fill({ retval: 2, reason: 3 }), 'now the inbound packets are its replies, which must come through WireGuard: dropped');
  t.same(seen.get(fast), seen.get(full), 'the same verdicts as the full check\'s, packet by packet');
});

t.test('a flow whose conntrack entry the LRU map evicted while it was forwarded from the flow cache is recorded again within 10 ticks; until then its replies are checked as flows of their own', async (t) => {
  // endpoints 100 and 102 on this node; 100 takes anything in, sends nothing out but replies
  const inbound: Flow = { src: '10.0.0.3', dst: '10.0.0.1', proto: Protocol.udp, sport: 5353, dport: 53 };
  const run = (b: Build, flow: Flow, program: 'fromEndpoint' | 'toEndpoint'): { retval: number; reason: number | null } =>
    b.run(program, frame(flow), 0);
  const replies = new Map<Build, Array<{ retval: number; reason: number | null }>>();
  for (const b of both) onOneCpu(() => {
    const s = freshNode(b, [['10.0.0.1', 100, 0], ['10.0.0.3', 102, 0]], [['ingress', 'allow', 0], ['egress', 'deny', 0]]);
    for (let i = 0; i < 3; i++) t.same(run(b, inbound, 'toEndpoint'), { retval: TC_ACT_OK, reason: 0 }, `${b.name}: the flow passes`);
    const seen = [run(b, reversed(inbound), 'fromEndpoint')];
    b.evict(conntrackKey(inbound, 'ingress'));
    s.now += 50_000_000n; // 5 ticks
    b.setClock(s.now);
    t.same(run(b, inbound, 'toEndpoint'), { retval: TC_ACT_OK, reason: 0 }, `${b.name}: the flow still passes after the eviction`);
    seen.push(run(b, reversed(inbound), 'fromEndpoint'));
    s.now += 50_000_000n; // the copy, made 10 ticks ago, has lapsed
    b.setClock(s.now);
    t.same(run(b, inbound, 'toEndpoint'), { retval: TC_ACT_OK, reason: 0 }, `${b.name}: and 10 ticks after its copy was made`);
    seen.push(run(b, reversed(inbound), 'fromEndpoint'));
    replies.set(b, seen);
  });
  const pass = { retval: TC_ACT_OK, reason: 0 };
  t.same(replies.get(full), [pass, pass, pass], 'full check: the reply passes throughout (the flow\'s next packet recorded it again)');
  t.same(replies.get(fast), [pass, { retval: 2, reason: 1 }, pass],
    'fast path: a reply passes; with the entry evicted and the flow forwarded from its copy, the reply is checked as a flow of its own (100 may not send: denied); once the copy lapsed, the flow is recorded again and replies pass');
});
