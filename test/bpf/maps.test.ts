import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MapType } from 'bpf';
import { AuthType, Datapath, Protocol, Reason } from '../../bpf/index.js';
import { PerLoadMapName, openPinnedMap, possibleCpus } from '../../bpf/maps.js';
import { runAll, testPinDir } from './netns.js';

interface Dumped { key: string[]; value?: string[]; formatted: { key: unknown; value?: unknown; values?: unknown[] } }

function bpftool(...args: string[]): string {
  return execFileSync('bpftool', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function dump(pinDir: string, map: string): Dumped[] {
  return JSON.parse(bpftool('-j', 'map', 'dump', 'pinned', join(pinDir, map))) as Dumped[];
}
function bytes(hex: string[]): Buffer {
  return Buffer.from(hex.map((h) => parseInt(h, 16)));
}
function hexArgs(buf: Buffer): string[] {
  return [...buf].map((b) => b.toString(16).padStart(2, '0'));
}

const pinDir = testPinDir('maps');
const dp = new Datapath({ pinDir });
t.before(() => dp.start());
t.teardown(() => runAll([() => dp.stop(), () => Datapath.removePins(pinDir)]));

t.test('auth entries written from TypeScript are what bpftool shows through the BTF of the C key', async (t) => {
  const pair = { localIdentity: 70000, remoteIdentity: 2, remoteNodeId: 513, authType: AuthType.mutual };
  dp.auth.upsert(pair, 0x1122334455667788n);
  const [entry] = dump(pinDir, 'meshid_auth');
  t.same(entry!.formatted.key, { local_identity: 70000, remote_identity: 2, remote_node_id: 513, auth_type: 1, pad: 0 });
  t.equal(bytes(entry!.value!).readBigUInt64LE(0), 0x1122334455667788n, 'u64 expiration, native order');
  t.equal(entry!.key.length, 12, '12-byte key');
  t.same(dp.auth.entries(), [{ pair, expiresAtBootNs: 0x1122334455667788n }]);
  t.equal(dp.auth.delete(pair), true);
  t.equal(dp.auth.delete(pair), false, 'deleting a missing pair says so');
  t.equal(dp.auth.get(pair), undefined);
});

t.test('auth entries written by bpftool decode in TypeScript', async (t) => {
  // local 5, remote 6, node 7, type 1; expires at 42
  bpftool('map', 'update', 'pinned', join(pinDir, 'meshid_auth'),
    'key', 'hex', '05', '00', '00', '00', '06', '00', '00', '00', '07', '00', '01', '00',
    'value', 'hex', '2a', '00', '00', '00', '00', '00', '00', '00');
  t.equal(dp.auth.get({ localIdentity: 5, remoteIdentity: 6, remoteNodeId: 7, authType: 1 }), 42n);
  dp.auth.delete({ localIdentity: 5, remoteIdentity: 6, remoteNodeId: 7, authType: 1 });
});

t.test('ipcache prefixes are stored as BTF says: prefixlen counts family and pad, addresses in network order', async (t) => {
  dp.ipcache.upsert('10.1.0.0/16', { identity: 5, nodeId: 3, flags: 9 });
  dp.ipcache.upsert('fd00:1::/32', { identity: 6, nodeId: 2 });
  const shown = dump(pinDir, 'meshid_ipcache').map((e) => e.formatted);
  t.same(shown.find((e) => (e.key as { family: number }).family === 2), {
    key: { prefixlen: 48, family: 2, pad: [0, 0, 0], addr: [10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
    value: { identity: 5, node_id: 3, flags: 9 },
  });
  t.same(shown.find((e) => (e.key as { family: number }).family === 10), {
    key: { prefixlen: 64, family: 10, pad: [0, 0, 0], addr: [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
    value: { identity: 6, node_id: 2, flags: 0 },
  });
  t.same(dp.ipcache.lookup('10.1.200.7'), { identity: 5, nodeId: 3, flags: 9 }, 'longest-prefix lookup');
  t.same(dp.ipcache.lookup('fd00:1:2::9'), { identity: 6, nodeId: 2, flags: 0 });
  t.equal(dp.ipcache.lookup('10.2.0.1'), undefined);
  dp.ipcache.upsert('10.1.2.3', { identity: 77, nodeId: 0 });
  t.same(dp.ipcache.lookup('10.1.2.3'), { identity: 77, nodeId: 0, flags: 0 }, 'a host entry outranks its /16');
  t.same(dp.ipcache.get('10.1.0.0/16'), { identity: 5, nodeId: 3, flags: 9 });
  t.same(dp.ipcache.entries().map((e) => e.cidr).sort(), ['10.1.0.0/16', '10.1.2.3/32', 'fd00:1::/32']);

  bpftool('map', 'update', 'pinned', join(pinDir, 'meshid_ipcache'),
    'key', 'hex', ...hexArgs(Buffer.from([32 + 24, 0, 0, 0, 2, 0, 0, 0, 192, 0, 2, 0, ...Array(12).fill(0)])),
    'value', 'hex', '2c', '01', '00', '00', '04', '00', '00', '00');
  t.same(dp.ipcache.lookup('192.0.2.99'), { identity: 300, nodeId: 4, flags: 0 }, 'an entry bpftool wrote decodes');
  for (const c of ['10.1.0.0/16', '10.1.2.3', 'fd00:1::/32', '192.0.2.0/24']) t.equal(dp.ipcache.delete(c), true, c);
  t.same(dp.ipcache.entries(), []);
  t.throws(() => dp.ipcache.upsert('10.1.0.1/16', { identity: 1, nodeId: 0 }), { code: 'invalid_argument', field: 'cidr' });
});

t.test('policy keys and values match the C layout, and the marker is the all-wildcard key', async (t) => {
  dp.policy.upsert({ localIdentity: 7, remoteIdentity: 8, port: 443, proto: Protocol.tcp, direction: 'egress' },
    { verdict: 'allow', authType: AuthType.mutual });
  dp.policy.select(7, 'ingress');
  const shown = dump(pinDir, 'meshid_policy').map((e) => e.formatted);
  t.same(shown.find((e) => (e.key as { port: number }).port === 443), {
    key: { local_identity: 7, remote_identity: 8, port: 443, proto: 6, direction: 1 },
    value: { verdict: 1, auth_type: 1, pad: 0 },
  });
  t.same(shown.find((e) => (e.key as { port: number }).port === 0), {
    key: { local_identity: 7, remote_identity: 0, port: 0, proto: 0, direction: 0 },
    value: { verdict: 2, auth_type: 0, pad: 0 },
  }, 'select() writes the default-deny marker');
  t.same(dp.policy.get({ localIdentity: 7, remoteIdentity: 0, port: 0, proto: 0, direction: 'ingress' }), { verdict: 'deny', authType: 0 });
  t.equal(dp.policy.deselect(7, 'ingress'), true);
  t.equal(dp.policy.entries().length, 1);
  dp.policy.delete({ localIdentity: 7, remoteIdentity: 8, port: 443, proto: Protocol.tcp, direction: 'egress' });
  t.throws(() => dp.policy.upsert({ localIdentity: 7, remoteIdentity: 0, port: 80, proto: 0, direction: 'ingress' },
    { verdict: 'allow', authType: 0 }), { code: 'invalid_argument', field: 'proto' }, 'a port without a protocol is refused');
});

t.test('metrics are summed over every possible CPU', async (t) => {
  // bpftool writes the same value into each CPU's slot
  bpftool('map', 'update', 'pinned', join(pinDir, 'meshid_metrics'), 'key', 'hex', '02', '01', '00', '00',
    'value', 'hex', '03', '00', '00', '00', '00', '00', '00', '00', '64', '00', '00', '00', '00', '00', '00', '00');
  const cpus = BigInt(possibleCpus());
  t.same(dp.metrics.get(Reason.authRequired, 'egress'), { packets: 3n * cpus, bytes: 100n * cpus });
  t.same(dp.metrics.get(Reason.authRequired, 'ingress'), { packets: 0n, bytes: 0n }, 'never counted: zero');
  t.same(dp.metrics.read(), [{ reasonCode: 2, reason: 'auth required', direction: 'egress', packets: 3n * cpus, bytes: 100n * cpus }]);
});

t.test('the config entry holds the WireGuard ifindex and the trace flag', async (t) => {
  t.same(dp.config(), { wireguardIfindex: 0, traceForwarded: false });
  const lo = dp.setWireguardDevice('lo');
  t.equal(lo, 1, 'lo is ifindex 1');
  dp.setTraceForwarded(true);
  t.same(dump(pinDir, 'meshid_config')[0]!.formatted.value, { wireguard_ifindex: 1, flags: 1 });
  dp.setTraceForwarded(false);
  dp.setWireguardDevice(null);
  t.same(dump(pinDir, 'meshid_config')[0]!.formatted.value, { wireguard_ifindex: 0, flags: 0 });
});

t.test('every map but the flow cache\'s is pinned, keyed maps with BTF, and a restart re-uses the pinned maps with their entries and starts a new flow cache', async (t) => {
  const pair = { localIdentity: 1, remoteIdentity: 2, remoteNodeId: 0, authType: AuthType.mutual };
  dp.auth.upsert(pair, 99n);
  const all = dp.mapIds();
  const perLoad = Object.values(PerLoadMapName) as string[];
  const ids = Object.fromEntries(Object.entries(all).filter(([name]) => !perLoad.includes(name)));
  t.same(Object.keys(all).sort(), ['meshid_auth', 'meshid_config', 'meshid_ct', 'meshid_events', 'meshid_events_lost', 'meshid_flowcache', 'meshid_flowcache_epoch',
    'meshid_gen', 'meshid_ipcache', 'meshid_metrics', 'meshid_policy', 'meshid_signals', 'meshid_sigrate']);
  for (const name of perLoad) t.notOk(existsSync(join(pinDir, name)), `${name} is not pinned`);
  for (const name of Object.keys(ids)) {
    const info = JSON.parse(bpftool('-j', 'map', 'show', 'pinned', join(pinDir, name))) as { id: number; btf_id?: number };
    t.equal(info.id, ids[name], `${name} is pinned`);
    // ring buffers have neither key nor value, so nothing to describe
    if (!['meshid_signals', 'meshid_events'].includes(name)) t.ok(info.btf_id, `${name} carries BTF`);
  }
  dp.stop();
  t.throws(() => dp.auth, { code: 'failed_precondition' }, 'maps are closed after stop()');
  dp.start();
  const again = dp.mapIds();
  t.same(Object.fromEntries(Object.entries(again).filter(([name]) => !perLoad.includes(name))), ids, 'the same pinned maps after a restart');
  for (const name of perLoad) t.not(again[name], all[name], `a new ${name}`);
  t.equal(dp.auth.get(pair), 99n);
  dp.auth.delete(pair);
});

t.test('a pinned map of another layout is refused rather than replaced', async (t) => {
  const dir = testPinDir('maps-old');
  mkdirSync(dir);
  t.teardown(() => Datapath.removePins(dir));
  bpftool('map', 'create', join(dir, 'meshid_auth'), 'type', 'hash', 'key', '12', 'value', '4', 'entries', '16', 'name', 'meshid_auth');
  const old = new Datapath({ pinDir: dir });
  t.throws(() => old.start(), /meshid_auth|reuse|Invalid argument/);
  t.equal(old.running, false);
  t.throws(() => openPinnedMap(dir, 'meshid_auth', { type: MapType.HASH, keySize: 12, valueSize: 8 }), { code: 'failed_precondition' });
});

t.test('start() needs a bpf filesystem and the compiled object', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-notbpffs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.throws(() => new Datapath({ pinDir: join(dir, 'pins') }).start(), { code: 'failed_precondition', field: 'pinDir' });
  t.throws(() => new Datapath({ pinDir: testPinDir('maps-noobj'), objectPath: join(dir, 'none.o') }).start(),
    { code: 'failed_precondition', field: 'objectPath' });
});

t.test('every write that can change a verdict moves the generation the fast path checks; reads and misses do not', async (t) => {
  const gen = dp.generation;
  const step = (what: string, fn: () => unknown, moves = true): void => {
    const before = gen.current();
    fn();
    if (moves) t.ok(gen.current() > before, `${what} bumps the generation`);
    else t.equal(gen.current(), before, `${what} leaves it`);
  };
  const pair = { localIdentity: 11, remoteIdentity: 12, remoteNodeId: 0, authType: AuthType.mutual };
  const key = { localIdentity: 11, remoteIdentity: 12, port: 80, proto: Protocol.tcp, direction: 'ingress' as const };
  step('an auth upsert', () => dp.auth.upsert(pair, 5n));
  step('an auth read', () => dp.auth.get(pair), false);
  step('an auth delete', () => dp.auth.delete(pair));
  step('deleting a missing auth pair', () => dp.auth.delete(pair), false);
  step('an ipcache upsert', () => dp.ipcache.upsert('10.9.0.0/16', { identity: 3, nodeId: 1 }));
  step('an ipcache delete', () => dp.ipcache.delete('10.9.0.0/16'));
  step('a policy upsert', () => dp.policy.upsert(key, { verdict: 'allow', authType: 0 }));
  step('a policy select', () => dp.policy.select(11, 'ingress'));
  step('a policy deselect', () => dp.policy.deselect(11, 'ingress'));
  step('a policy delete', () => dp.policy.delete(key));
  step('a config change', () => dp.setTraceForwarded(false));
  const shown = dump(pinDir, 'meshid_gen')[0]!;
  t.equal(bytes(shown.value!).readBigUInt64LE(0), gen.current(), 'bpftool reads the same u64');
});

t.test('the conntrack and metrics maps pinned by an older build (another layout) are replaced at start; those of this layout are kept', async (t) => {
  const dir = testPinDir('maps-old');
  mkdirSync(dir, { recursive: true });
  bpftool('map', 'create', join(dir, 'meshid_ct'), 'type', 'lru_hash', 'key', '40', 'value', '16', 'entries', '65536', 'name', 'meshid_ct');
  bpftool('map', 'create', join(dir, 'meshid_metrics'), 'type', 'percpu_hash', 'key', '4', 'value', '16', 'entries', '256', 'name', 'meshid_metrics');
  bpftool('map', 'create', join(dir, 'meshid_auth'), 'type', 'hash', 'key', '12', 'value', '8', 'entries', '65536', 'name', 'meshid_auth');
  const idOf = (name: string): number => (JSON.parse(bpftool('-j', 'map', 'show', 'pinned', join(dir, name))) as { id: number }).id;
  const old = { ct: idOf('meshid_ct'), metrics: idOf('meshid_metrics'), auth: idOf('meshid_auth') };
  const other = new Datapath({ pinDir: dir });
  t.teardown(() => runAll([() => other.stop(), () => Datapath.removePins(dir)]));
  other.start();
  const ids = other.mapIds();
  t.not(ids['meshid_ct'], old.ct, 'a new conntrack map');
  t.not(ids['meshid_metrics'], old.metrics, 'a new metrics map');
  t.equal(ids['meshid_auth'], old.auth, 'the auth map (same layout) is re-used, never replaced');
  const shown = JSON.parse(bpftool('-j', 'map', 'show', 'pinned', join(dir, 'meshid_ct'))) as { id: number; bytes_value: number };
  t.same([shown.id, shown.bytes_value], [ids['meshid_ct'], 32], 'pinned in its place, with the 32-byte entry');
  const metrics = JSON.parse(bpftool('-j', 'map', 'show', 'pinned', join(dir, 'meshid_metrics'))) as { type: string };
  t.equal(metrics.type, 'percpu_array', 'the counters are a per-CPU array now');
  other.stop();
  other.start();
  t.same([other.mapIds()['meshid_ct'], other.mapIds()['meshid_metrics']], [ids['meshid_ct'], ids['meshid_metrics']], 'and kept across a restart');
});
