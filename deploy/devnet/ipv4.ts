import { isIPv4 } from 'node:net';

/** An IPv4 network: the devnet's underlay, pod CIDR pool and node pod CIDRs. */
export interface Ipv4Cidr {
  readonly network: number;
  readonly prefixLen: number;
}

export function parseIpv4(text: string): number | null {
  if (!isIPv4(text)) return null;
  return text.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** Parses `a.b.c.d/len`; host bits must be zero so the text means one thing. */
export function parseIpv4Cidr(text: string): Ipv4Cidr | null {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m) return null;
  const addr = parseIpv4(m[1]!);
  const prefixLen = Number(m[2]);
  if (addr === null || prefixLen > 32) return null;
  if ((addr & ~maskOf(prefixLen)) >>> 0 !== 0) return null;
  return { network: addr, prefixLen };
}

export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.network)}/${cidr.prefixLen}`;
}

export function maskOf(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

export function contains(cidr: Ipv4Cidr, addr: number): boolean {
  return ((addr & maskOf(cidr.prefixLen)) >>> 0) === cidr.network;
}

/** A usable host address: inside the network, neither its network nor its broadcast address. */
export function isHostOf(cidr: Ipv4Cidr, addr: number): boolean {
  if (!contains(cidr, addr)) return false;
  if (cidr.prefixLen >= 31) return true;
  const broadcast = (cidr.network | ~maskOf(cidr.prefixLen)) >>> 0;
  return addr !== cidr.network && addr !== broadcast;
}

export function overlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const len = Math.min(a.prefixLen, b.prefixLen);
  return ((a.network & maskOf(len)) >>> 0) === ((b.network & maskOf(len)) >>> 0);
}
