import { isIPv4, isIPv6 } from 'node:net';

/**
 * The canonical form of a CIDR (host bits cleared, IPv6 compressed), the same form
 * that `wg show … dump` and `ip -j route` print, so desired and actual state compare
 * as strings. A bare address is a /32 or /128. Null when the text is not a CIDR.
 */
export function canonicalCidr(text: string): string | null {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? undefined : text.slice(slash + 1);
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0;
  if (family === 0) return null;
  const bits = family === 4 ? 32 : 128;
  if (lenText !== undefined && !/^\d{1,3}$/.test(lenText)) return null;
  const prefixLen = lenText === undefined ? bits : Number(lenText);
  if (prefixLen > bits) return null;
  const bytes = family === 4 ? ipv4Bytes(addr) : ipv6Bytes(addr);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLen - i * 8));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return `${family === 4 ? bytes.join('.') : formatIPv6(bytes)}/${prefixLen}`;
}

function ipv4Bytes(addr: string): number[] {
  return addr.split('.').map(Number);
}

function ipv6Bytes(addr: string): number[] {
  let text = addr;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = ipv4Bytes(v4[1]!);
    text = text.slice(0, v4.index) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = [...headGroups, ...(tail === undefined ? [] : zeros), ...tailGroups].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/** RFC 5952 text: lowercase, longest run (≥2) of zero groups compressed. */
function formatIPv6(bytes: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The addresses a CIDR covers, as numbers: the family and the first and last address. */
export interface CidrRange { family: 4 | 6; first: bigint; last: bigint; prefixLen: number; text: string }

/** The range of a CIDR (a bare address is a /32 or /128); null when the text is not a CIDR. */
export function cidrRange(text: string): CidrRange | null {
  const canonical = canonicalCidr(text);
  if (canonical === null) return null;
  const slash = canonical.indexOf('/');
  const addr = canonical.slice(0, slash);
  const prefixLen = Number(canonical.slice(slash + 1));
  const family = isIPv4(addr) ? 4 : 6;
  const bytes = family === 4 ? ipv4Bytes(addr) : ipv6Bytes(addr);
  const first = bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
  const hostBits = BigInt((family === 4 ? 32 : 128) - prefixLen);
  return { family, first, last: first | ((1n << hostBits) - 1n), prefixLen, text: canonical };
}

/** Whether two ranges share an address. */
export const rangesOverlap = (a: CidrRange, b: CidrRange): boolean => a.family === b.family && a.first <= b.last && b.first <= a.last;

/** Whether `ip` (an address) lies in `range`. */
export function rangeContains(range: CidrRange, ip: string): boolean {
  const r = cidrRange(ip);
  return r !== null && r.family === range.family && r.first >= range.first && r.last <= range.last;
}
