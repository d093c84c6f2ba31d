/** Where authenticated pairs go: the kernel's `meshid_auth` map (bpf AuthMap), or memory in tests and benchmarks. */
import type { AuthPair } from '../../bpf/index.js';

/** The part of bpf's AuthMap that mutual auth uses; AuthMap satisfies it as it is. */
export interface AuthMapWriter {
  upsert(pair: AuthPair, expiresAtBootNs: bigint): void;
  /** False when the pair had no entry. */
  delete(pair: AuthPair): boolean;
  entries(): Iterable<{ pair: AuthPair; expiresAtBootNs: bigint }>;
}

export const authPairKey = (p: AuthPair): string => `${p.localIdentity}/${p.remoteIdentity}/${p.remoteNodeId}/${p.authType}`;

/** An auth map in memory, with the kernel map's semantics (one value per 12-byte key). */
export class MemoryAuthMap implements AuthMapWriter {
  private readonly map = new Map<string, { pair: AuthPair; expiresAtBootNs: bigint }>();

  upsert(pair: AuthPair, expiresAtBootNs: bigint): void {
    const p: AuthPair = { localIdentity: pair.localIdentity, remoteIdentity: pair.remoteIdentity, remoteNodeId: pair.remoteNodeId, authType: pair.authType };
    this.map.set(authPairKey(p), { pair: p, expiresAtBootNs });
  }

  delete(pair: AuthPair): boolean { return this.map.delete(authPairKey(pair)); }
  get(pair: AuthPair): bigint | undefined { return this.map.get(authPairKey(pair))?.expiresAtBootNs; }
  entries(): Array<{ pair: AuthPair; expiresAtBootNs: bigint }> { return [...this.map.values()]; }
  get size(): number { return this.map.size; }
  clear(): void { this.map.clear(); }
}
