/** Ethernet frames for BPF_PROG_TEST_RUN: the differential test and the datapath benchmark. */
import { isIPv4 } from 'node:net';
import { parseIp } from '../../bpf/address.js';
import { Protocol } from '../../bpf/index.js';

export interface FrameSpec {
  readonly src: string;
  readonly dst: string;
  readonly proto: number;
  readonly sport: number;
  readonly dport: number;
  /** Bytes after the transport header (default 64). */
  readonly payload?: number;
}

/** Ethernet + IPv4 or IPv6 (by the addresses) + a TCP or UDP header + payload. */
export function frame(spec: FrameSpec): Buffer {
  const v4 = isIPv4(spec.src);
  const ipLen = v4 ? 20 : 40;
  const l4Len = spec.proto === Protocol.tcp ? 20 : 8;
  const payload = spec.payload ?? 64;
  const pkt = Buffer.alloc(14 + ipLen + l4Len + payload);
  pkt.writeUInt16BE(v4 ? 0x0800 : 0x86dd, 12);
  const src = Buffer.from(parseIp(spec.src).bytes);
  const dst = Buffer.from(parseIp(spec.dst).bytes);
  if (v4) {
    pkt[14] = 0x45;
    pkt.writeUInt16BE(ipLen + l4Len + payload, 16);
    pkt[22] = 64;
    pkt[23] = spec.proto;
    src.copy(pkt, 26, 0, 4);
    dst.copy(pkt, 30, 0, 4);
  } else {
    pkt[14] = 0x60;
    pkt.writeUInt16BE(l4Len + payload, 18);
    pkt[20] = spec.proto;
    pkt[21] = 64;
    src.copy(pkt, 22, 0, 16);
    dst.copy(pkt, 38, 0, 16);
  }
  const l4 = 14 + ipLen;
  pkt.writeUInt16BE(spec.sport, l4);
  pkt.writeUInt16BE(spec.dport, l4 + 2);
  if (spec.proto === Protocol.tcp) pkt[l4 + 12] = 0x50;
  else pkt.writeUInt16BE(l4Len + payload, l4 + 4);
  return pkt;
}
