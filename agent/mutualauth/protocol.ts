/**
 * The mutual-auth wire protocol between two agents, inside one TLS 1.3
 * session authenticated with the agents' X509-SVIDs.
 *
 * Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 * The client sends `authenticate` batches; the server answers each with a
 * `result` (or ends the session with `refused`).
 *
 * Pairs travel in one orientation, [client identity, server identity]. Each
 * side proves possession of the workload SVID key of every identity of its
 * side in the batch with one signature per (identity, batch) over
 *
 *   "meshid-mutual-auth-v1" 0x00 ‖ EKM(32) ‖ side (1 client, 2 server) ‖ batch u32 ‖ identity u32
 *     ‖ n u32 ‖ the n pairs that identity takes part in, sorted, each client u32 ‖ server u32
 *
 * where EKM is the session's exported keying material (RFC 8446 §7.5, label
 * EXPORTER-meshid-mutual-auth). The EKM binds the key to this TLS session (so
 * to both agent SVIDs), the side byte stops a client proof being reflected as
 * a server proof, the batch id (strictly increasing per session) stops a replay
 * within the session, and the pair list binds the key to exactly those pairs.
 */
import { sign, verify, type KeyObject } from 'node:crypto';
import { signatureAlgorithmFor } from '../../spiffe/index.js';

export const EKM_LABEL = 'EXPORTER-meshid-mutual-auth';
export const EKM_BYTES = 32;
export const DEFAULT_PORT = 4250;
/** Largest frame either side accepts; a longer length prefix ends the session. */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
export const MAX_BATCH_PAIRS = 4096;
export const MAX_CHAIN_CERTS = 4;
export const MAX_CERT_BYTES = 8 * 1024;
export const MAX_SIGNATURE_BYTES = 1024;
export const MAX_REASON_CHARS = 200;

const DOMAIN = Buffer.from('meshid-mutual-auth-v1\0', 'latin1');

export type Side = 'client' | 'server';
/** [client identity, server identity] */
export type WirePair = [number, number];

export interface WireProof { identity: number; chain: string[]; signature: string }
export interface AuthenticateMsg { type: 'authenticate'; batch: number; pairs: WirePair[]; proofs: WireProof[] }
/** `verdicts[i]` answers `pairs[i]` of the batch: 0 accepted, else the reason it was refused. */
export interface ResultMsg { type: 'result'; batch: number; verdicts: (0 | string)[]; proofs: WireProof[] }
/** The server ends the session: the client's agent is not (or no longer) one it talks to, or the client broke the protocol. */
export interface RefusedMsg { type: 'refused'; reason: string }
export type ServerMsg = ResultMsg | RefusedMsg;

/** A proof decoded from the wire. */
export interface Proof { identity: number; chain: Buffer[]; signature: Buffer }

export class ProtocolError extends Error {
  constructor(message: string) { super(message); this.name = 'ProtocolError'; }
}

export const isU32 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
export const isU16 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff;

export const pairKey = (p: WirePair): string => `${p[0]}:${p[1]}`;
const comparePairs = (a: WirePair, b: WirePair): number => a[0] - b[0] || a[1] - b[1];

/** The pairs of `side`'s `identity`, sorted: what that identity's proof signs. */
export function pairsOf(side: Side, identity: number, pairs: readonly WirePair[]): WirePair[] {
  const i = side === 'client' ? 0 : 1;
  return pairs.filter((p) => p[i] === identity).sort(comparePairs);
}

/** The signed bytes of one proof (see the construction at the top of this file). */
export function proofInput(ekm: Buffer, side: Side, batch: number, identity: number, sortedPairs: readonly WirePair[]): Buffer {
  if (ekm.length !== EKM_BYTES) throw new ProtocolError(`EKM must be ${EKM_BYTES} bytes`);
  const head = Buffer.alloc(1 + 4 + 4 + 4);
  head.writeUInt8(side === 'client' ? 1 : 2, 0);
  head.writeUInt32BE(batch, 1);
  head.writeUInt32BE(identity, 5);
  head.writeUInt32BE(sortedPairs.length, 9);
  const body = Buffer.alloc(sortedPairs.length * 8);
  sortedPairs.forEach((p, k) => { body.writeUInt32BE(p[0], k * 8); body.writeUInt32BE(p[1], k * 8 + 4); });
  return Buffer.concat([DOMAIN, ekm, head, body]);
}

export function signProof(key: KeyObject, input: Buffer): Buffer {
  return sign(signatureAlgorithmFor(key).hash, input, key);
}

export function verifyProof(publicKey: KeyObject, input: Buffer, signature: Buffer): boolean {
  try {
    return verify(signatureAlgorithmFor(publicKey).hash, input, publicKey, signature);
  } catch {
    return false;
  }
}

export function encodeProof(identity: number, chain: readonly Buffer[], signature: Buffer): WireProof {
  return { identity, chain: chain.map((c) => c.toString('base64')), signature: signature.toString('base64') };
}

// ---- decoding: every field checked, every list bounded ----

function pairList(v: unknown, what: string, max: number): WirePair[] {
  if (!Array.isArray(v)) throw new ProtocolError(`${what} is not a list`);
  if (v.length > max) throw new ProtocolError(`${what} has ${v.length} pairs, at most ${max} are allowed`);
  for (const p of v) {
    if (!Array.isArray(p) || p.length !== 2 || !isU32(p[0]) || !isU32(p[1])) throw new ProtocolError(`${what} holds a malformed pair`);
  }
  return v as WirePair[];
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function proofList(v: unknown, max: number): Proof[] {
  if (!Array.isArray(v)) throw new ProtocolError('proofs is not a list');
  if (v.length > max) throw new ProtocolError(`${v.length} proofs for at most ${max} identities`);
  const seen = new Set<number>();
  return v.map((p: unknown) => {
    const o = p as Partial<WireProof> | null;
    if (!o || typeof o !== 'object' || !isU32(o.identity)) throw new ProtocolError('a proof has no identity');
    if (seen.has(o.identity)) throw new ProtocolError(`two proofs for identity ${o.identity}`);
    seen.add(o.identity);
    if (!Array.isArray(o.chain) || o.chain.length === 0 || o.chain.length > MAX_CHAIN_CERTS) throw new ProtocolError(`proof for identity ${o.identity} needs 1 to ${MAX_CHAIN_CERTS} certificates`);
    const chain = o.chain.map((c) => {
      if (typeof c !== 'string' || c.length > Math.ceil(MAX_CERT_BYTES / 3) * 4 || !BASE64.test(c)) throw new ProtocolError(`proof for identity ${o.identity} has a malformed certificate`);
      return Buffer.from(c, 'base64');
    });
    if (typeof o.signature !== 'string' || o.signature.length > Math.ceil(MAX_SIGNATURE_BYTES / 3) * 4 || !BASE64.test(o.signature)) {
      throw new ProtocolError(`proof for identity ${o.identity} has a malformed signature`);
    }
    return { identity: o.identity, chain, signature: Buffer.from(o.signature, 'base64') };
  });
}

export interface DecodedAuthenticate { batch: number; pairs: WirePair[]; proofs: Proof[] }
export interface DecodedResult { batch: number; verdicts: (0 | string)[]; proofs: Proof[] }

export function decodeAuthenticate(msg: unknown): DecodedAuthenticate {
  const m = msg as Partial<AuthenticateMsg> | null;
  if (!m || typeof m !== 'object' || m.type !== 'authenticate') throw new ProtocolError('expected an authenticate message');
  if (!isU32(m.batch)) throw new ProtocolError('batch id is not a u32');
  const pairs = pairList(m.pairs, 'pairs', MAX_BATCH_PAIRS);
  return { batch: m.batch, pairs, proofs: proofList(m.proofs, pairs.length) };
}

export function decodeServerMsg(msg: unknown): { sessionRefused: string } | DecodedResult {
  const m = msg as { type?: unknown; reason?: unknown; batch?: unknown; verdicts?: unknown; proofs?: unknown } | null;
  if (!m || typeof m !== 'object') throw new ProtocolError('message is not an object');
  if (m.type === 'refused') return { sessionRefused: typeof m.reason === 'string' ? m.reason.slice(0, MAX_REASON_CHARS) : 'unspecified' };
  if (m.type !== 'result') throw new ProtocolError(`unexpected message type ${JSON.stringify(m.type)}`);
  if (!isU32(m.batch)) throw new ProtocolError('batch id is not a u32');
  if (!Array.isArray(m.verdicts) || m.verdicts.length > MAX_BATCH_PAIRS) throw new ProtocolError('verdicts is not a bounded list');
  let accepted = 0;
  const verdicts = m.verdicts.map((v: unknown) => {
    if (v === 0) { accepted++; return 0 as const; }
    if (typeof v !== 'string' || v === '') throw new ProtocolError('a verdict is neither 0 nor a reason');
    return v.slice(0, MAX_REASON_CHARS);
  });
  return { batch: m.batch, verdicts, proofs: proofList(m.proofs, accepted) };
}

// ---- framing ----

export function encodeFrame(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  if (body.length > MAX_FRAME_BYTES) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into frames; throws ProtocolError on an oversized length or a body that is not JSON. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1;

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const all = this.take(4);
        this.need = all.readUInt32BE(0);
        if (this.need > this.maxFrameBytes) throw new ProtocolError(`frame of ${this.need} bytes exceeds ${this.maxFrameBytes}`);
      }
      if (this.buffered < this.need) break;
      const body = this.take(this.need);
      this.need = -1;
      try { out.push(JSON.parse(body.toString('utf8'))); } catch { throw new ProtocolError('frame is not JSON'); }
    }
    return out;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return head;
  }
}
