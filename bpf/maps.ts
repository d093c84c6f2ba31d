import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMapRef, MapType, objGet, RawMap, type MapRef } from 'bpf';
import { FailedPrecondition } from '../spiffe/index.js';
import { formatPrefix, parseIp, parsePrefix } from './address.js';
import {
  AUTH_KEY_SIZE, AUTH_VALUE_SIZE, CONFIG_VALUE_SIZE, GENERATION_VALUE_SIZE, IPCACHE_KEY_SIZE, IPCACHE_VALUE_SIZE,
  METRICS_KEY_SIZE, METRICS_VALUE_SIZE, POLICY_KEY_SIZE, POLICY_VALUE_SIZE,
  decodeAuthKey, decodeAuthValue, decodeConfig, decodeIpcacheKey, decodeIpcacheValue,
  decodeMetricsKey, decodePolicyKey, decodePolicyValue, encodeAuthKey, encodeAuthValue,
  encodeConfig, encodeIpcacheKey, encodeIpcacheValue, encodeMetricsKey, encodePolicyKey,
  encodePolicyValue, reasonName, sumPerCpuMetrics,
  type AuthPair, type DatapathConfig, type Direction, type IpcacheEntry, type PolicyEntry,
  type PolicyKey, type Verdict,
} from './layouts.js';

/** Pin names (also the maps' names in the kernel and in bpf/lib/*.h). */
export const MapName = {
  auth: 'meshid_auth',
  ipcache: 'meshid_ipcache',
  policy: 'meshid_policy',
  metrics: 'meshid_metrics',
  signals: 'meshid_signals',
  events: 'meshid_events',
  config: 'meshid_config',
  conntrack: 'meshid_ct',
  signalRate: 'meshid_sigrate',
  generation: 'meshid_gen',
  eventsLost: 'meshid_events_lost',
} as const;

/**
 * Maps of one load of the programs, never pinned: the fast path's per-CPU flow
 * cache and its slot epochs (bpf/lib/fastpath.h). A new load starts with them empty.
 */
export const PerLoadMapName = {
  flowCache: 'meshid_flowcache',
  flowCacheEpoch: 'meshid_flowcache_epoch',
} as const;

interface Layout { type: MapType; keySize: number; valueSize: number }

/**
 * Opens the map pinned at `pinDir/name` and checks that it has the layout this
 * code encodes; a map of another layout (an older build) is a failed precondition.
 */
export function openPinnedMap(pinDir: string, name: string, layout: Layout): MapRef {
  const path = join(pinDir, name);
  let fd: number;
  try {
    fd = objGet(path);
  } catch (err) {
    throw new FailedPrecondition(`cannot open pinned map ${path}: ${(err as Error).message}`, 'pinDir');
  }
  const ref = createMapRef(fd, { transfer: true });
  if (ref.type !== layout.type || ref.keySize !== layout.keySize || ref.valueSize !== layout.valueSize) {
    ref.close();
    throw new FailedPrecondition(
      `${path} has type ${ref.type}, key ${ref.keySize} B, value ${ref.valueSize} B; ` +
      `expected type ${layout.type}, key ${layout.keySize} B, value ${layout.valueSize} B`, 'pinDir');
  }
  return ref;
}

/** Type, key and value size of a pinned map. */
export function pinnedMapLayout(path: string): Layout {
  const ref = createMapRef(objGet(path), { transfer: true });
  try {
    return { type: ref.type, keySize: ref.keySize, valueSize: ref.valueSize };
  } finally {
    ref.close();
  }
}

/** Number of possible CPUs: the number of slots of a per-CPU map's value. */
export function possibleCpus(): number {
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let max = 0;
  for (const range of text.split(',')) {
    const end = Number(range.split('-').pop());
    if (end > max) max = end;
  }
  return max + 1;
}

/** A MapRef whose value size is that of a per-CPU map's whole value (all CPUs' slots). */
function perCpuRef(ref: MapRef, slotSize: number): MapRef {
  const valueSize = Math.ceil(slotSize / 8) * 8 * possibleCpus();
  return {
    type: ref.type, keySize: ref.keySize, valueSize, maxEntries: ref.maxEntries, flags: ref.flags,
    get fd() { return ref.fd; },
    close: () => ref.close(),
  };
}

/**
 * `meshid_gen`: the generation of everything a verdict depends on. The fast
 * path of an established flow (bpf/lib/fastpath.h) trusts the verdict cached in
 * its conntrack entry only while the generation is the one it was decided at,
 * so every write to the policy, ipcache, auth or config map is followed by
 * `bump()`. The maps below do that themselves after each write.
 */
export class GenerationMap {
  readonly #map: RawMap;
  static readonly #KEY = Buffer.alloc(4);
  readonly #value = Buffer.alloc(GENERATION_VALUE_SIZE);

  constructor(ref: MapRef) { this.#map = new RawMap(ref); }

  static open(pinDir: string): GenerationMap {
    return new GenerationMap(openPinnedMap(pinDir, MapName.generation,
      { type: MapType.ARRAY, keySize: 4, valueSize: GENERATION_VALUE_SIZE }));
  }

  current(): bigint {
    return this.#map.get(GenerationMap.#KEY, 0, this.#value)!.readBigUInt64LE(0);
  }

  /**
   * Moves to the next generation. It reads the kernel's value rather than a
   * counter of its own, so several handles (or processes) never write the same
   * number twice in a row.
   */
  bump(): void {
    this.#value.writeBigUInt64LE((this.current() + 1n) & 0xffff_ffff_ffff_ffffn, 0);
    this.#map.set(GenerationMap.#KEY, this.#value);
  }

  close(): void { this.#map.ref.close(); }
}

/** The generation a map bumps after its writes, and whether it owns (closes) it. */
function generationFor(pinDir: string, shared: GenerationMap | undefined): { generation: GenerationMap; owned: boolean } {
  return shared ? { generation: shared, owned: false } : { generation: GenerationMap.open(pinDir), owned: true };
}

/**
 * A pinned map that verdicts read: every write that can change one is
 * followed by a bump of the generation the fast path checks (bpf/lib/fastpath.h).
 */
abstract class VerdictMap {
  protected readonly map: RawMap;
  readonly #generation: GenerationMap;
  readonly #ownsGeneration: boolean;

  protected constructor(ref: MapRef, generation: GenerationMap, ownsGeneration: boolean) {
    this.map = new RawMap(ref);
    this.#generation = generation;
    this.#ownsGeneration = ownsGeneration;
  }

  /** After a write that can change a verdict. */
  protected bump(): void { this.#generation.bump(); }

  close(): void {
    this.map.ref.close();
    if (this.#ownsGeneration) this.#generation.close();
  }
}

/** `meshid_auth`: authenticated pairs and when they expire on the boot-time clock. */
export class AuthMap extends VerdictMap {
  // scratch buffers: every call encodes into them and the kernel copies them synchronously
  readonly #key = Buffer.alloc(AUTH_KEY_SIZE);
  readonly #value = Buffer.alloc(AUTH_VALUE_SIZE);

  constructor(ref: MapRef, generation: GenerationMap, ownsGeneration = false) { super(ref, generation, ownsGeneration); }

  /** `generation`: the handle to bump after writes (default: one of its own). */
  static open(pinDir: string, shared?: GenerationMap): AuthMap {
    const ref = openPinnedMap(pinDir, MapName.auth,
      { type: MapType.HASH, keySize: AUTH_KEY_SIZE, valueSize: AUTH_VALUE_SIZE });
    const { generation, owned } = generationFor(pinDir, shared);
    return new AuthMap(ref, generation, owned);
  }

  /**
   * Writes the pair, valid until `expiresAtBootNs` (see bootTimeNs / wallClockToBootNs).
   * A new expiry may be earlier than the one established flows were checked
   * against, so this bumps the generation too.
   */
  upsert(pair: AuthPair, expiresAtBootNs: bigint): void {
    this.map.set(encodeAuthKey(pair, this.#key), encodeAuthValue(expiresAtBootNs, this.#value));
    this.bump();
  }

  /** False when the pair had no entry. */
  delete(pair: AuthPair): boolean {
    const deleted = this.map.delete(encodeAuthKey(pair, this.#key));
    if (deleted) this.bump();
    return deleted;
  }

  /** The pair's expiry on the boot-time clock, or undefined. */
  get(pair: AuthPair): bigint | undefined {
    const value = this.map.get(encodeAuthKey(pair, this.#key), 0, this.#value);
    return value && decodeAuthValue(value);
  }

  entries(): Array<{ pair: AuthPair; expiresAtBootNs: bigint }> {
    return [...this.map.entries()].map(([k, v]) => ({ pair: decodeAuthKey(k), expiresAtBootNs: decodeAuthValue(v) }));
  }

}

/** `meshid_ipcache`: longest-prefix map from addresses to (identity, node id). */
export class IpcacheMap extends VerdictMap {
  constructor(ref: MapRef, generation: GenerationMap, ownsGeneration = false) { super(ref, generation, ownsGeneration); }

  /** `generation`: the handle to bump after writes (default: one of its own). */
  static open(pinDir: string, shared?: GenerationMap): IpcacheMap {
    const ref = openPinnedMap(pinDir, MapName.ipcache,
      { type: MapType.LPM_TRIE, keySize: IPCACHE_KEY_SIZE, valueSize: IPCACHE_VALUE_SIZE });
    const { generation, owned } = generationFor(pinDir, shared);
    return new IpcacheMap(ref, generation, owned);
  }

  /** `cidr`: `10.1.0.0/16`, `fd00::/64`, or one address. */
  upsert(cidr: string, entry: IpcacheEntry): void {
    this.map.set(encodeIpcacheKey(parsePrefix(cidr)), encodeIpcacheValue(entry));
    this.bump();
  }

  delete(cidr: string): boolean {
    const deleted = this.map.delete(encodeIpcacheKey(parsePrefix(cidr)));
    if (deleted) this.bump();
    return deleted;
  }

  /** The entry stored for exactly this prefix (a scan: for tools, not the hot path). */
  get(cidr: string): Required<IpcacheEntry> | undefined {
    const prefix = parsePrefix(cidr);
    for (const [k, v] of this.map.entries()) {
      const p = decodeIpcacheKey(k);
      if (p.family === prefix.family && p.length === prefix.length &&
          Buffer.compare(Buffer.from(p.bytes), Buffer.from(prefix.bytes)) === 0) {
        return decodeIpcacheValue(v);
      }
    }
    return undefined;
  }

  /** What the datapath finds for an address: the entry of the longest prefix that holds it. */
  lookup(ip: string): Required<IpcacheEntry> | undefined {
    const { family, bytes } = parseIp(ip);
    const value = this.map.get(encodeIpcacheKey({ family, bytes, length: family === 4 ? 32 : 128 }));
    return value && decodeIpcacheValue(value);
  }

  entries(): Array<{ cidr: string; entry: Required<IpcacheEntry> }> {
    return [...this.map.entries()].map(([k, v]) => ({ cidr: formatPrefix(decodeIpcacheKey(k)), entry: decodeIpcacheValue(v) }));
  }

}

/**
 * `meshid_policy`. The all-wildcard entry {local, 0, 0, 0, direction} marks an
 * endpoint identity as selected in a direction (see `select`): its verdict
 * applies to traffic that no more specific entry matches. Traffic that matches
 * nothing, not even a marker, passes (the direction is not selected).
 */
export class PolicyMap extends VerdictMap {
  constructor(ref: MapRef, generation: GenerationMap, ownsGeneration = false) { super(ref, generation, ownsGeneration); }

  /** `generation`: the handle to bump after writes (default: one of its own). */
  static open(pinDir: string, shared?: GenerationMap): PolicyMap {
    const ref = openPinnedMap(pinDir, MapName.policy,
      { type: MapType.HASH, keySize: POLICY_KEY_SIZE, valueSize: POLICY_VALUE_SIZE });
    const { generation, owned } = generationFor(pinDir, shared);
    return new PolicyMap(ref, generation, owned);
  }

  upsert(key: PolicyKey, entry: PolicyEntry): void {
    this.map.set(encodePolicyKey(key), encodePolicyValue(entry));
    this.bump();
  }

  delete(key: PolicyKey): boolean {
    const deleted = this.map.delete(encodePolicyKey(key));
    if (deleted) this.bump();
    return deleted;
  }

  get(key: PolicyKey): PolicyEntry | undefined {
    const value = this.map.get(encodePolicyKey(key));
    return value && decodePolicyValue(value);
  }

  /**
   * Marks the endpoint identity as selected in `direction`: traffic that no
   * more specific entry matches gets `fallback` (deny: Cilium's default deny).
   */
  select(localIdentity: number, direction: Direction, fallback: Verdict = 'deny', authType = 0): void {
    this.upsert({ localIdentity, remoteIdentity: 0, port: 0, proto: 0, direction }, { verdict: fallback, authType });
  }

  /** Removes the marker: traffic that no other entry matches passes again. */
  deselect(localIdentity: number, direction: Direction): boolean {
    return this.delete({ localIdentity, remoteIdentity: 0, port: 0, proto: 0, direction });
  }

  entries(): Array<{ key: PolicyKey; entry: PolicyEntry }> {
    return [...this.map.entries()].map(([k, v]) => ({ key: decodePolicyKey(k), entry: decodePolicyValue(v) }));
  }

}

export interface MetricsSample {
  readonly reasonCode: number;
  /** `forwarded`, `policy denied`, ... */
  readonly reason: string;
  readonly direction: Direction;
  readonly packets: bigint;
  readonly bytes: bigint;
}

/** `meshid_metrics`: per-CPU counters, read summed over the CPUs. */
export class MetricsMap {
  readonly #map: RawMap;

  /** `ref` as opened by `open` (its value size covers every CPU's slot). */
  constructor(ref: MapRef) { this.#map = new RawMap(ref); }

  static open(pinDir: string): MetricsMap {
    const ref = openPinnedMap(pinDir, MapName.metrics,
      { type: MapType.PERCPU_ARRAY, keySize: METRICS_KEY_SIZE, valueSize: METRICS_VALUE_SIZE });
    return new MetricsMap(perCpuRef(ref, METRICS_VALUE_SIZE));
  }

  /** Every reason and direction counted at least once (the array's other slots are zero). */
  read(): MetricsSample[] {
    const samples: MetricsSample[] = [];
    for (const [k, v] of this.#map.entries()) {
      const sums = sumPerCpuMetrics(v);
      if (sums.packets === 0n && sums.bytes === 0n) continue;
      const key = decodeMetricsKey(k);
      samples.push({ reasonCode: key.reason, reason: reasonName(key.reason), direction: key.direction, ...sums });
    }
    return samples;
  }

  /** The counters of one reason and direction (zero when never counted). */
  get(reasonCode: number, direction: Direction): { packets: bigint; bytes: bigint } {
    const value = this.#map.get(encodeMetricsKey({ reason: reasonCode, direction }));
    return value ? sumPerCpuMetrics(value) : { packets: 0n, bytes: 0n };
  }

  close(): void { this.#map.ref.close(); }
}

/** `meshid_events_lost`: event records that did not fit the ring, per CPU. */
export class EventsLostMap {
  readonly #map: RawMap;
  static readonly #KEY = Buffer.alloc(4);

  constructor(ref: MapRef) { this.#map = new RawMap(ref); }

  static open(pinDir: string): EventsLostMap {
    const ref = openPinnedMap(pinDir, MapName.eventsLost, { type: MapType.PERCPU_ARRAY, keySize: 4, valueSize: 8 });
    return new EventsLostMap(perCpuRef(ref, 8));
  }

  /** Summed over the CPUs. */
  total(): bigint {
    const v = this.#map.get(EventsLostMap.#KEY);
    let n = 0n;
    for (let off = 0; v && off + 8 <= v.length; off += 8) n += v.readBigUInt64LE(off);
    return n;
  }

  close(): void { this.#map.ref.close(); }
}

/** `meshid_config`: the node-wide settings of the datapath. */
export class ConfigMap {
  readonly #map: RawMap;
  readonly #generation: GenerationMap;
  static readonly #KEY = Buffer.alloc(4);

  /** `generation` is bumped after each write and stays its owner's to close. */
  constructor(ref: MapRef, generation: GenerationMap) {
    this.#map = new RawMap(ref);
    this.#generation = generation;
  }

  static open(pinDir: string, generation: GenerationMap): ConfigMap {
    return new ConfigMap(openPinnedMap(pinDir, MapName.config,
      { type: MapType.ARRAY, keySize: 4, valueSize: CONFIG_VALUE_SIZE }), generation);
  }

  get(): DatapathConfig {
    return decodeConfig(this.#map.get(ConfigMap.#KEY)!);
  }

  set(config: DatapathConfig): void {
    this.#map.set(ConfigMap.#KEY, encodeConfig(config));
    this.#generation.bump();
  }

  close(): void { this.#map.ref.close(); }
}
