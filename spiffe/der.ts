/**
 * The little DER that X.509 needs: an encoder that concatenates pre-built
 * parts (no object tree, so building a certificate is a few Buffer copies) and
 * a reader that walks TLVs in place without copying.
 */
import { InvalidArgument } from './errors.js';

export const TAG = {
  BOOLEAN: 0x01, INTEGER: 0x02, BIT_STRING: 0x03, OCTET_STRING: 0x04, NULL: 0x05, OID: 0x06,
  UTF8_STRING: 0x0c, PRINTABLE_STRING: 0x13, IA5_STRING: 0x16, UTC_TIME: 0x17, GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30, SET: 0x31,
} as const;

/** Bytes of a DER length field for a content of `len` bytes. */
function lengthSize(len: number): number {
  if (len < 0x80) return 1;
  if (len < 0x100) return 2;
  if (len < 0x10000) return 3;
  if (len < 0x1000000) return 4;
  throw new InvalidArgument('DER value too long');
}

/** Encodes one TLV whose content is the concatenation of `parts` (one allocation: it is on every SVID's path). */
export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const head = lengthSize(len);
  const out = Buffer.allocUnsafe(1 + head + len);
  out[0] = tag;
  if (head === 1) out[1] = len;
  else {
    out[1] = 0x80 | (head - 1);
    for (let i = head - 1, v = len; i >= 1; i--, v >>= 8) out[1 + i] = v & 0xff;
  }
  let off = 1 + head;
  for (const p of parts) { p.copy(out, off); off += p.length; }
  return out;
}

export const seq = (...parts: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: Buffer[]): Buffer => tlv(TAG.SET, ...parts);
export const octets = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer, unusedBits = 0): Buffer => tlv(TAG.BIT_STRING, Buffer.from([unusedBits]), b);
export const explicit = (n: number, ...parts: Buffer[]): Buffer => tlv(0xa0 | n, ...parts);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0]);

/** An INTEGER from unsigned big-endian bytes: leading zeros trimmed, a 0x00 added when the top bit is set. */
export function unsignedInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const b = bytes.subarray(i);
  return (b[0]! & 0x80) ? tlv(TAG.INTEGER, Buffer.from([0]), b) : tlv(TAG.INTEGER, b);
}
export function smallInteger(n: number): Buffer {
  if (n < 0 || n > 0x7fffffff || !Number.isInteger(n)) throw new InvalidArgument('integer out of range');
  const bytes: number[] = [];
  do { bytes.unshift(n & 0xff); n = Math.floor(n / 256); } while (n > 0);
  return unsignedInteger(Buffer.from(bytes));
}

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [];
  // The first two arcs share one subidentifier, which is base-128 like the rest (2.999 is 0x88 0x37).
  for (const arc of [40 * arcs[0]! + arcs[1]!, ...arcs.slice(2)]) {
    const stack: number[] = [arc & 0x7f];
    let v = Math.floor(arc / 128);
    while (v > 0) { stack.unshift((v & 0x7f) | 0x80); v = Math.floor(v / 128); }
    out.push(...stack);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

export function decodeOid(content: Buffer): string {
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < content.length; i++) {
    v = v * 128 + (content[i]! & 0x7f);
    if (!(content[i]! & 0x80)) {
      if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
    }
  }
  return arcs.join('.');
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Seconds precision. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = pad(d.getUTCMonth() + 1) + pad(d.getUTCDate()) + pad(d.getUTCHours()) + pad(d.getUTCMinutes()) + pad(d.getUTCSeconds()) + 'Z';
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(pad(y % 100) + rest, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(pad(y, 4) + rest, 'latin1'));
}

export function decodeTime(tag: number, content: Buffer): Date {
  const s = content.toString('latin1');
  const m = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new InvalidArgument(`bad DER time "${s}"`);
  let year = Number(m[1]);
  if (tag === TAG.UTC_TIME) { if (m[1]!.length !== 2) throw new InvalidArgument('bad UTCTime'); year += year >= 50 ? 1900 : 2000; }
  else if (m[1]!.length !== 4) throw new InvalidArgument('bad GeneralizedTime');
  const month = Number(m[2]), day = Number(m[3]), hour = Number(m[4]), minute = Number(m[5]), second = Number(m[6]);
  const d = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
  // Date.UTC reads years 0-99 as 1900-1999; a GeneralizedTime "0050..." means the year 50.
  if (year < 100) { d.setUTCFullYear(year, month - 1, day); d.setUTCHours(hour, minute, second, 0); }
  // Date.UTC rolls month 13 or February 30 over into a later date; a DER time must name a real instant.
  if (d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw new InvalidArgument(`bad DER time "${s}": a field is out of range`);
  }
  return d;
}

/** A TLV found in a buffer: `content` is a view, `whole` the full encoding (header included). */
export interface Tlv { tag: number; content: Buffer; whole: Buffer; end: number }

/** Reads the TLV at `offset`; strict DER lengths (minimal, definite), bounds-checked. */
export function readTlv(buf: Buffer, offset = 0, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new InvalidArgument('DER: truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new InvalidArgument('DER: multi-byte tags are not supported');
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new InvalidArgument('DER: indefinite length');
    if (n > 3) throw new InvalidArgument('DER: length too large');
    if (p + n > limit) throw new InvalidArgument('DER: truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (buf[p] === 0 || len < 0x80) throw new InvalidArgument('DER: non-minimal length');
    p += n;
  }
  const end = p + len;
  if (end > limit) throw new InvalidArgument('DER: value runs past its container');
  return { tag, content: buf.subarray(p, end), whole: buf.subarray(offset, end), end };
}

/** The TLVs directly inside a constructed value. */
export function children(content: Buffer): Tlv[] {
  const out: Tlv[] = [];
  let off = 0;
  while (off < content.length) {
    const t = readTlv(content, off);
    out.push(t);
    off = t.end;
  }
  return out;
}

/** Reads exactly one TLV that fills the whole buffer. */
export function readWhole(buf: Buffer, expectTag?: number, what = 'value'): Tlv {
  const t = readTlv(buf, 0);
  if (t.end !== buf.length) throw new InvalidArgument(`DER: trailing bytes after ${what}`);
  if (expectTag !== undefined && t.tag !== expectTag) throw new InvalidArgument(`DER: ${what} has tag 0x${t.tag.toString(16)}, want 0x${expectTag.toString(16)}`);
  return t;
}
