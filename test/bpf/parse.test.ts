/**
 * Packet parsing (bpf/lib/parse.h) in the object the agent loads, through
 * BPF_PROG_TEST_RUN: the ports are found behind IPv4 options and IPv6 extension
 * headers, fragments and neighbour discovery are handled as bpf/README.md says,
 * and a truncated packet is dropped as invalid, never read past its end.
 */
import t from 'tap';
import { Datapath, Protocol, Reason } from '../../bpf/index.js';
import { frame } from './frames.js';
import { runAll, testPinDir } from './netns.js';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const LOCAL = 100;
const pinDir = testPinDir('parse');
const dp = new Datapath({ pinDir });

t.before(() => {
  dp.start();
  dp.ipcache.upsert('10.0.0.1', { identity: LOCAL, nodeId: 0 });
  dp.ipcache.upsert('fd00::1', { identity: LOCAL, nodeId: 0 });
  // entering the endpoint: only TCP port 80 is allowed, the rest is denied
  dp.policy.select(LOCAL, 'ingress');
  dp.policy.upsert({ localIdentity: LOCAL, remoteIdentity: 0, port: 80, proto: Protocol.tcp, direction: 'ingress' }, { verdict: 'allow', authType: 0 });
});
t.teardown(() => runAll([() => dp.stop(), () => Datapath.removePins(pinDir)]));

/** The verdict entering the endpoint, and the reason counter it moved (null: none, the packet was not policed). */
function verdict(packet: Buffer): { retval: number; reason: string | null } {
  const names = Object.entries(Reason) as Array<[string, number]>;
  const before = names.map(([, code]) => dp.metrics.get(code, 'ingress').packets);
  const { retval } = dp.testRun('toEndpoint', packet);
  const moved = names.filter(([, code], i) => dp.metrics.get(code, 'ingress').packets !== before[i]).map(([name]) => name);
  return { retval, reason: moved.length ? moved.join(',') : null };
}

const forwarded = { retval: TC_ACT_OK, reason: 'forwarded' };
const denied = { retval: TC_ACT_SHOT, reason: 'policyDenied' };
const invalid = { retval: TC_ACT_SHOT, reason: 'invalidPacket' };

/** An IPv4 frame with `optionWords` 4-byte words of options before the TCP header. */
function ipv4WithOptions(dport: number, optionWords: number): Buffer {
  const base = frame({ src: '10.0.0.2', dst: '10.0.0.1', proto: Protocol.tcp, sport: 40000, dport });
  const out = Buffer.concat([base.subarray(0, 34), Buffer.alloc(optionWords * 4, 1), base.subarray(34)]);
  out[14] = 0x40 | (5 + optionWords);
  out.writeUInt16BE(out.length - 14, 16);
  return out;
}

/** An IPv6 frame whose next headers are `chain` (each 8 bytes long), then TCP to `dport`. */
function ipv6WithExtensions(dport: number, chain: number[], fragmentOffset = 0): Buffer {
  const base = frame({ src: 'fd00::2', dst: 'fd00::1', proto: Protocol.tcp, sport: 40000, dport });
  const headers = chain.map((kind, i) => {
    const h = Buffer.alloc(8);
    h[0] = chain[i + 1] ?? Protocol.tcp;
    if (kind === 44) h.writeUInt16BE(fragmentOffset << 3, 2); // fragment header: offset in 8-byte units
    return h;
  });
  const out = Buffer.concat([base.subarray(0, 54), ...headers, base.subarray(54)]);
  out[20] = chain[0] ?? Protocol.tcp;
  out.writeUInt16BE(out.length - 54, 18);
  return out;
}

t.test('IPv4: the ports are read behind the options, and a short packet is invalid', async (t) => {
  t.same(verdict(frame({ src: '10.0.0.2', dst: '10.0.0.1', proto: Protocol.tcp, sport: 40001, dport: 80 })), forwarded, 'port 80 allowed');
  t.same(verdict(frame({ src: '10.0.0.2', dst: '10.0.0.1', proto: Protocol.tcp, sport: 40001, dport: 81 })), denied, 'port 81 denied');
  t.same(verdict(ipv4WithOptions(80, 3)), forwarded, 'port 80 behind 12 bytes of options');
  t.same(verdict(ipv4WithOptions(81, 10)), denied, 'port 81 behind 40 bytes of options');
  const whole = frame({ src: '10.0.0.2', dst: '10.0.0.1', proto: Protocol.tcp, sport: 40002, dport: 80, payload: 0 });
  // (the kernel's test runner itself refuses a frame shorter than an IPv4 header)
  const longHeader = Buffer.from(whole);
  longHeader[14] = 0x4f; // 60 bytes of header claimed, the frame ends after 40
  t.same(verdict(longHeader), invalid, 'a header length that points past the end');
  t.same(verdict(whole.subarray(0, 14 + 20 + 2)), invalid, 'ports cut short');
  const badVersion = Buffer.from(whole);
  badVersion[14] = 0x65;
  t.same(verdict(badVersion), invalid, 'version 6 in an IPv4 frame');
});

t.test('IPv6: the ports are read behind extension headers; a non-first fragment has none; neighbour discovery is not policed', async (t) => {
  t.same(verdict(frame({ src: 'fd00::2', dst: 'fd00::1', proto: Protocol.tcp, sport: 40003, dport: 80 })), forwarded, 'port 80 allowed');
  t.same(verdict(ipv6WithExtensions(80, [0, 60])), forwarded, 'behind hop-by-hop and destination options');
  t.same(verdict(ipv6WithExtensions(81, [0, 60])), denied, 'port 81 there is denied');
  t.same(verdict(ipv6WithExtensions(80, [44])), forwarded, 'a first fragment has its ports');
  t.same(verdict(ipv6WithExtensions(80, [44], 100)), denied, 'a later fragment has port 0, which only any-port entries match');
  t.same(verdict(ipv6WithExtensions(80, [0, 0, 0, 0, 0, 0, 0, 0, 0])), invalid, 'more extension headers than are walked');
  const cut = ipv6WithExtensions(80, [0, 60]);
  t.same(verdict(cut.subarray(0, 54 + 8 + 4)), invalid, 'an extension header cut short');

  const nd = frame({ src: 'fd00::2', dst: 'fd00::1', proto: Protocol.icmpv6, sport: 0, dport: 0 });
  nd[54] = 135; // neighbour solicitation
  t.same(verdict(nd), { retval: TC_ACT_OK, reason: null }, 'neighbour solicitation passes unpoliced');
  nd[54] = 128; // echo request
  t.same(verdict(nd), denied, 'an echo request is policed (and denied here)');
});

t.test('not IP: ARP passes unpoliced', async (t) => {
  const arp = Buffer.alloc(42);
  arp.writeUInt16BE(0x0806, 12);
  t.same(verdict(arp), { retval: TC_ACT_OK, reason: null });
});
