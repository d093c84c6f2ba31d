/**
 * X509-SVID chain validation with a cache: a batch names the same workload
 * SVIDs again and again, and a full validation costs a signature check per
 * link. A success is remembered per leaf (SHA-256 of its DER) until the
 * earliest notAfter on its path, or until the trust bundles change.
 */
import { createHash, type KeyObject } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import { type BundleSet, publicKeyFromSpki, type SpiffeId, verifyX509Svid } from '../../spiffe/index.js';

export interface ValidatedChain {
  spiffeId: SpiffeId;
  /** The earliest notAfter on the validated path. */
  expiresAt: Date;
  notBefore: Date;
  publicKey: KeyObject;
}

export class ChainValidator {
  private readonly cache = new Map<string, ValidatedChain>();
  private bundlesSeen: BundleSet | undefined;
  hits = 0;
  misses = 0;

  constructor(private readonly bundles: () => BundleSet, private readonly clock: Clock, private readonly maxEntries = 20_000) {}

  /** Validates `chain` (leaf first) at the clock's now; throws InvalidSvid / Untrusted. */
  validate(chain: readonly Buffer[]): ValidatedChain {
    const bundles = this.bundles();
    if (bundles !== this.bundlesSeen) { this.cache.clear(); this.bundlesSeen = bundles; }
    const now = this.clock.now();
    const key = createHash('sha256').update(chain[0] ?? Buffer.alloc(0)).digest('base64');
    const hit = this.cache.get(key);
    if (hit && now <= hit.expiresAt && now >= hit.notBefore) { this.hits++; return hit; }
    if (hit) this.cache.delete(key);
    this.misses++;
    const v = verifyX509Svid(chain, bundles.x509, now);
    const result: ValidatedChain = {
      spiffeId: v.spiffeId, expiresAt: v.expiresAt,
      notBefore: new Date(Math.max(...v.path.map((c) => c.notBefore.getTime()))),
      publicKey: publicKeyFromSpki(v.leaf.spki),
    };
    if (this.cache.size >= this.maxEntries) {
      // Drop the oldest tenth: insertion order is a fair enough proxy for age here.
      let drop = Math.ceil(this.maxEntries / 10);
      for (const k of this.cache.keys()) { this.cache.delete(k); if (--drop === 0) break; }
    }
    this.cache.set(key, result);
    return result;
  }

  get size(): number { return this.cache.size; }
  clear(): void { this.cache.clear(); }
}
