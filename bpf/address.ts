import { isIPv4, isIPv6 } from 'node:net';
import { InvalidArgument } from '../spiffe/index.js';

/** An IP prefix: address bytes (4 or 16) and how many leading bits count. */
export interface Prefix {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly length: number;
}

function ipv4Bytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.').map((p) => Number(p)));
}

function ipv6Bytes(ip: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = ip;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // an embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = ipv4Bytes(tail);
    text = text.slice(0, lastColon + 1) +
      ((v4[0]! << 8) | v4[1]!).toString(16) + ':' + ((v4[2]! << 8) | v4[3]!).toString(16);
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = rest === undefined
    ? headGroups
    : [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** The bytes of an IPv4 or IPv6 address; throws InvalidArgument naming `field`. */
export function parseIp(ip: string, field = 'ip'): { family: 4 | 6; bytes: Uint8Array } {
  if (isIPv4(ip)) return { family: 4, bytes: ipv4Bytes(ip) };
  if (isIPv6(ip)) return { family: 6, bytes: ipv6Bytes(ip) };
  throw new InvalidArgument(`not an IP address: ${JSON.stringify(ip)}`, field);
}

/**
 * `10.0.0.0/8`, `fd00::/64`, or a bare address (a host prefix). Bits beyond
 * the prefix length must be zero, as in a routing table.
 */
export function parsePrefix(cidr: string, field = 'cidr'): Prefix {
  const slash = cidr.indexOf('/');
  const { family, bytes } = parseIp(slash < 0 ? cidr : cidr.slice(0, slash), field);
  const max = family === 4 ? 32 : 128;
  let length = max;
  if (slash >= 0) {
    const text = cidr.slice(slash + 1);
    length = /^\d{1,3}$/.test(text) ? Number(text) : NaN;
    if (!(length >= 0 && length <= max)) {
      throw new InvalidArgument(`bad prefix length in ${JSON.stringify(cidr)}`, field);
    }
  }
  for (let bit = length; bit < max; bit++) {
    if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) {
      throw new InvalidArgument(`${JSON.stringify(cidr)} has host bits set beyond /${length}`, field);
    }
  }
  return { family, bytes, length };
}

/** Canonical text of an address (RFC 5952 for IPv6: lowercase, longest zero run as ::). */
export function formatIp(family: 4 | 6, bytes: Uint8Array): string {
  if (family === 4) return Array.from(bytes.subarray(0, 4)).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return hex.slice(0, bestStart).join(':') + '::' + hex.slice(bestStart + bestLen).join(':');
}

export function formatPrefix(p: Prefix): string {
  return `${formatIp(p.family, p.bytes)}/${p.length}`;
}
