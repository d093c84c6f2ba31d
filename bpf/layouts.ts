/**
 * Byte layouts of the datapath's maps and ring-buffer records: the TypeScript
 * side of bpf/lib/*.h and DESIGN.md "Shared layouts". Native byte order.
 */
import { endianness } from 'node:os';
import { InvalidArgument } from '../spiffe/index.js';
import { formatIp, type Prefix } from './address.js';

const LE = endianness() === 'LE';

/** Direction from the endpoint's point of view: ingress enters it, egress leaves it. */
export type Direction = 'ingress' | 'egress';
const DIRECTION_CODES: Record<Direction, number> = { ingress: 0, egress: 1 };

export type Verdict = 'allow' | 'deny';
const VERDICT_CODES: Record<Verdict, number> = { allow: 1, deny: 2 };

/** Authentication types of a policy entry and an auth pair. */
export const AuthType = { none: 0, mutual: 1 } as const;

/** IP protocol numbers that policy keys use (0 is any protocol). */
export const Protocol = { any: 0, icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 } as const;

/** Why the datapath forwarded (0) or dropped a packet: metrics keys and event records. */
export const Reason = {
  forwarded: 0,
  policyDenied: 1,
  authRequired: 2,
  wireguardRequired: 3,
  invalidPacket: 4,
} as const;
export type ReasonCode = (typeof Reason)[keyof typeof Reason];
const REASON_NAMES: Record<number, string> = {
  0: 'forwarded',
  1: 'policy denied',
  2: 'auth required',
  3: 'wireguard required',
  4: 'invalid packet',
};
/** `policy denied`, `auth required`, ... (`reason N` for a code this build does not know). */
export function reasonName(code: number): string {
  return REASON_NAMES[code] ?? `reason ${code}`;
}

const FAMILY_IPV4 = 2; // AF_INET
const FAMILY_IPV6 = 10; // AF_INET6
/** prefixlen of an ipcache key counts the 32 bits of family and pad before the address. */
const IPCACHE_PREFIX_HEADER_BITS = 32;

export const CONFIG_TRACE_FORWARDED = 1 << 0;

export const AUTH_KEY_SIZE = 12;
export const AUTH_VALUE_SIZE = 8;
export const IPCACHE_KEY_SIZE = 24;
export const IPCACHE_VALUE_SIZE = 8;
export const POLICY_KEY_SIZE = 12;
export const POLICY_VALUE_SIZE = 4;
export const METRICS_KEY_SIZE = 4;
export const METRICS_VALUE_SIZE = 16;
export const METRICS_ENTRIES = 512;
export const CONFIG_VALUE_SIZE = 8;
export const GENERATION_VALUE_SIZE = 8;
/** `struct ct_key` and `struct ct_entry` of bpf/lib/conntrack.h (the entry: last_seen, fast_until, generation, u64 each; flags, pad). */
export const CT_KEY_SIZE = 40;
export const CT_VALUE_SIZE = 32;
export const SIGNAL_SIZE = 12;
export const EVENT_SIZE = 72;

function checkUint(value: number, bits: 8 | 16 | 32, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new InvalidArgument(`${field} must be an integer in [0, 2^${bits})`, field);
  }
  return value;
}

const U64_MAX = 2n ** 64n - 1n;

function writeU32(buf: Buffer, offset: number, value: number): void {
  if (LE) buf.writeUInt32LE(value, offset);
  else buf.writeUInt32BE(value, offset);
}

function writeU16(buf: Buffer, offset: number, value: number): void {
  if (LE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}

function view(buf: Buffer): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** (local identity, remote identity, remote node id, auth type): the key of `meshid_auth`. */
export interface AuthPair {
  readonly localIdentity: number;
  readonly remoteIdentity: number;
  /** 0: the remote endpoint is on this node. */
  readonly remoteNodeId: number;
  readonly authType: number;
}

/** `out`: a 12-byte buffer to reuse (the map wrappers keep one, so the hot path allocates nothing). */
export function encodeAuthKey(pair: AuthPair, out: Buffer = Buffer.alloc(AUTH_KEY_SIZE)): Buffer {
  writeU32(out, 0, checkUint(pair.localIdentity, 32, 'localIdentity'));
  writeU32(out, 4, checkUint(pair.remoteIdentity, 32, 'remoteIdentity'));
  writeU16(out, 8, checkUint(pair.remoteNodeId, 16, 'remoteNodeId'));
  out[10] = checkUint(pair.authType, 8, 'authType');
  out[11] = 0;
  return out;
}

export function decodeAuthKey(buf: Buffer): AuthPair {
  const v = view(buf);
  return {
    localIdentity: v.getUint32(0, LE),
    remoteIdentity: v.getUint32(4, LE),
    remoteNodeId: v.getUint16(8, LE),
    authType: v.getUint8(10),
  };
}

export function encodeAuthValue(expiresAtBootNs: bigint, out: Buffer = Buffer.alloc(AUTH_VALUE_SIZE)): Buffer {
  if (typeof expiresAtBootNs !== 'bigint' || expiresAtBootNs < 0n || expiresAtBootNs > U64_MAX) {
    throw new InvalidArgument('expiresAtBootNs must be a bigint that fits in a u64', 'expiresAtBootNs');
  }
  if (LE) out.writeBigUInt64LE(expiresAtBootNs, 0);
  else out.writeBigUInt64BE(expiresAtBootNs, 0);
  return out;
}

export function decodeAuthValue(buf: Buffer): bigint {
  return view(buf).getBigUint64(0, LE);
}

/** The value of `meshid_ipcache`. */
export interface IpcacheEntry {
  readonly identity: number;
  /** 0: this node. */
  readonly nodeId: number;
  /** Reserved for the agent; the datapath does not read it. */
  readonly flags?: number;
}

export function encodeIpcacheKey(prefix: Prefix): Buffer {
  const buf = Buffer.alloc(IPCACHE_KEY_SIZE);
  const v = view(buf);
  v.setUint32(0, IPCACHE_PREFIX_HEADER_BITS + prefix.length, LE);
  v.setUint8(4, prefix.family === 4 ? FAMILY_IPV4 : FAMILY_IPV6);
  buf.set(prefix.bytes.subarray(0, prefix.family === 4 ? 4 : 16), 8);
  return buf;
}

export function decodeIpcacheKey(buf: Buffer): Prefix {
  const v = view(buf);
  const family = v.getUint8(4) === FAMILY_IPV4 ? 4 : 6;
  return {
    family,
    length: v.getUint32(0, LE) - IPCACHE_PREFIX_HEADER_BITS,
    bytes: Uint8Array.from(buf.subarray(8, family === 4 ? 12 : 24)),
  };
}

export function encodeIpcacheValue(entry: IpcacheEntry): Buffer {
  const buf = Buffer.alloc(IPCACHE_VALUE_SIZE);
  const v = view(buf);
  v.setUint32(0, checkUint(entry.identity, 32, 'identity'), LE);
  v.setUint16(4, checkUint(entry.nodeId, 16, 'nodeId'), LE);
  v.setUint16(6, checkUint(entry.flags ?? 0, 16, 'flags'), LE);
  return buf;
}

export function decodeIpcacheValue(buf: Buffer): Required<IpcacheEntry> {
  const v = view(buf);
  return { identity: v.getUint32(0, LE), nodeId: v.getUint16(4, LE), flags: v.getUint16(6, LE) };
}

/** The key of `meshid_policy`; 0 is "any" for remoteIdentity, port and proto. */
export interface PolicyKey {
  readonly localIdentity: number;
  readonly remoteIdentity: number;
  readonly port: number;
  readonly proto: number;
  readonly direction: Direction;
}

export interface PolicyEntry {
  readonly verdict: Verdict;
  readonly authType: number;
}

export function encodePolicyKey(key: PolicyKey): Buffer {
  const buf = Buffer.alloc(POLICY_KEY_SIZE);
  const v = view(buf);
  const direction = DIRECTION_CODES[key.direction];
  if (direction === undefined) throw new InvalidArgument('direction must be ingress or egress', 'direction');
  if (key.port !== 0 && key.proto === 0) {
    throw new InvalidArgument('a port needs a protocol (proto 0 means any port too)', 'proto');
  }
  v.setUint32(0, checkUint(key.localIdentity, 32, 'localIdentity'), LE);
  v.setUint32(4, checkUint(key.remoteIdentity, 32, 'remoteIdentity'), LE);
  v.setUint16(8, checkUint(key.port, 16, 'port'), LE);
  v.setUint8(10, checkUint(key.proto, 8, 'proto'));
  v.setUint8(11, direction);
  return buf;
}

export function decodePolicyKey(buf: Buffer): PolicyKey {
  const v = view(buf);
  return {
    localIdentity: v.getUint32(0, LE),
    remoteIdentity: v.getUint32(4, LE),
    port: v.getUint16(8, LE),
    proto: v.getUint8(10),
    direction: v.getUint8(11) === 0 ? 'ingress' : 'egress',
  };
}

export function encodePolicyValue(entry: PolicyEntry): Buffer {
  const verdict = VERDICT_CODES[entry.verdict];
  if (verdict === undefined) throw new InvalidArgument('verdict must be allow or deny', 'verdict');
  return Buffer.from([verdict, checkUint(entry.authType, 8, 'authType'), 0, 0]);
}

/** Anything but allow is a deny to the datapath, so it decodes as one. */
export function decodePolicyValue(buf: Buffer): PolicyEntry {
  return { verdict: buf[0] === VERDICT_CODES.allow ? 'allow' : 'deny', authType: buf[1]! };
}

export interface MetricsKey {
  readonly reason: number;
  readonly direction: Direction;
}

/** The per-CPU array's index: reason | direction << 8, a native u32. */
export function encodeMetricsKey(key: MetricsKey): Buffer {
  const buf = Buffer.alloc(METRICS_KEY_SIZE);
  const index = checkUint(key.reason, 8, 'reason') | DIRECTION_CODES[key.direction] << 8;
  view(buf).setUint32(0, index, LE);
  return buf;
}

export function decodeMetricsKey(buf: Buffer): MetricsKey {
  const index = view(buf).getUint32(0, LE);
  return { reason: index & 0xff, direction: (index >> 8) === 0 ? 'ingress' : 'egress' };
}

/** Sums the per-CPU values of one `meshid_metrics` entry (each CPU's slot is 16 bytes). */
export function sumPerCpuMetrics(buf: Buffer): { packets: bigint; bytes: bigint } {
  const v = view(buf);
  let packets = 0n, bytes = 0n;
  for (let off = 0; off + METRICS_VALUE_SIZE <= buf.length; off += METRICS_VALUE_SIZE) {
    packets += v.getBigUint64(off, LE);
    bytes += v.getBigUint64(off + 8, LE);
  }
  return { packets, bytes };
}

export interface DatapathConfig {
  /** ifindex of the WireGuard device in the endpoints' namespace; 0: none. */
  readonly wireguardIfindex: number;
  /** Emit a `meshid_events` record for every new forwarded flow, not only for drops. */
  readonly traceForwarded: boolean;
}

export function encodeConfig(config: DatapathConfig): Buffer {
  const buf = Buffer.alloc(CONFIG_VALUE_SIZE);
  const v = view(buf);
  v.setUint32(0, checkUint(config.wireguardIfindex, 32, 'wireguardIfindex'), LE);
  v.setUint32(4, config.traceForwarded ? CONFIG_TRACE_FORWARDED : 0, LE);
  return buf;
}

export function decodeConfig(buf: Buffer): DatapathConfig {
  const v = view(buf);
  return {
    wireguardIfindex: v.getUint32(0, LE),
    traceForwarded: (v.getUint32(4, LE) & CONFIG_TRACE_FORWARDED) !== 0,
  };
}

/** A `meshid_signals` record: the pair that needs authentication. */
export function decodeSignal(buf: Buffer): AuthPair {
  if (buf.length < SIGNAL_SIZE) throw new InvalidArgument(`signal record of ${buf.length} bytes`, 'signal');
  return decodeAuthKey(buf);
}

/** A `meshid_events` record: one drop, or one new forwarded flow. */
export interface FlowEvent {
  /** When, on the boot-time clock. */
  readonly timestampBootNs: bigint;
  readonly localIdentity: number;
  readonly remoteIdentity: number;
  readonly remoteNodeId: number;
  readonly direction: Direction;
  readonly reasonCode: number;
  /** `forwarded`, `policy denied`, `auth required`, ... */
  readonly reason: string;
  readonly dropped: boolean;
  readonly family: 4 | 6;
  readonly proto: number;
  readonly authType: number;
  readonly srcIp: string;
  readonly dstIp: string;
  readonly srcPort: number;
  readonly dstPort: number;
  /** The endpoint's node-side interface. */
  readonly ifindex: number;
  readonly length: number;
}

export function decodeEvent(buf: Buffer): FlowEvent {
  if (buf.length < EVENT_SIZE) throw new InvalidArgument(`event record of ${buf.length} bytes`, 'event');
  const v = view(buf);
  const family = v.getUint8(20) === FAMILY_IPV4 ? 4 : 6;
  const reasonCode = v.getUint8(19);
  return {
    timestampBootNs: v.getBigUint64(0, LE),
    localIdentity: v.getUint32(8, LE),
    remoteIdentity: v.getUint32(12, LE),
    remoteNodeId: v.getUint16(16, LE),
    direction: v.getUint8(18) === 0 ? 'ingress' : 'egress',
    reasonCode,
    reason: reasonName(reasonCode),
    dropped: reasonCode !== Reason.forwarded,
    family,
    proto: v.getUint8(21),
    authType: v.getUint8(22),
    srcPort: v.getUint16(24, LE),
    dstPort: v.getUint16(26, LE),
    ifindex: v.getUint32(28, LE),
    srcIp: formatIp(family, buf.subarray(32, 48)),
    dstIp: formatIp(family, buf.subarray(48, 64)),
    length: v.getUint32(64, LE),
  };
}
