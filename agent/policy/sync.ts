/**
 * Keeps `meshid_policy` equal to the compiled policy of this node's endpoints:
 * recompiles on every change of identities, endpoints or policies, and writes
 * only the keys whose value changed. Also owns the set of identity pairs that
 * need authentication, and tells mutual auth when it changes.
 */
import type { Logger } from '../../common/log.js';
import type { PolicyEntry, PolicyKey } from '../../bpf/index.js';
import type { StateChange } from '../sync/index.js';
import {
  compileState, lookupPolicy, policyKeyText,
  type AuthRequirement, type CompiledPolicies, type PolicyError, type PolicyInputs, type PolicyMapEntry,
} from './compile.js';

/** The part of bpf's PolicyMap the sync uses; PolicyMap satisfies it as it is. */
export interface PolicyMapWriter {
  upsert(key: PolicyKey, entry: PolicyEntry): void;
  /** False when the key had no entry. */
  delete(key: PolicyKey): boolean;
  entries(): Iterable<{ key: PolicyKey; entry: PolicyEntry }>;
}

const sameEntry = (a: PolicyEntry, b: PolicyEntry): boolean => a.verdict === b.verdict && a.authType === b.authType;

/** A policy map in memory, with the kernel map's semantics and the datapath's lookup. */
export class MemoryPolicyMap implements PolicyMapWriter {
  private readonly map = new Map<string, PolicyMapEntry>();

  upsert(key: PolicyKey, entry: PolicyEntry): void {
    if (key.port !== 0 && key.proto === 0) throw new Error('a port needs a protocol');
    const k: PolicyKey = { localIdentity: key.localIdentity, remoteIdentity: key.remoteIdentity, port: key.port, proto: key.proto, direction: key.direction };
    this.map.set(policyKeyText(k), { key: k, entry: { verdict: entry.verdict, authType: entry.authType } });
  }

  delete(key: PolicyKey): boolean { return this.map.delete(policyKeyText(key)); }
  get(key: PolicyKey): PolicyEntry | undefined { return this.map.get(policyKeyText(key))?.entry; }
  entries(): PolicyMapEntry[] { return [...this.map.values()]; }
  get size(): number { return this.map.size; }

  /** What the datapath would find for this flow; undefined: not selected, the flow passes. */
  lookup(local: number, remote: number, port: number, proto: number, direction: PolicyKey['direction']): PolicyMapEntry | undefined {
    return lookupPolicy((k) => this.get(k), local, remote, port, proto, direction);
  }
}

export interface AuthPairsChange {
  added: AuthRequirement[];
  removed: AuthRequirement[];
  current: AuthRequirement[];
}

export interface PolicySyncResult {
  upserted: number;
  deleted: number;
  entries: number;
  errors: PolicyError[];
}

/** AgentState, as the sync needs it. */
export interface PolicyStateSource extends PolicyInputs {
  onChange(fn: (c: StateChange) => void): () => void;
}

export interface PolicyMapSyncOptions {
  state: PolicyStateSource;
  map: PolicyMapWriter;
  logger?: Logger;
  /**
   * Make-before-break for flows that a policy allowed without authentication
   * and now allows only with it: their entries keep the old verdict until
   * `ready` says the pair is authenticated (with every node hosting the remote
   * identity), or for at most holdMs, so that applying an authentication
   * requirement to live traffic does not drop it while the handshakes run.
   * The map never allows more than it did before the change. Absent: such
   * entries are written at once.
   */
  authUpgrade?: { ready: (pair: AuthRequirement) => boolean; holdMs: number; now?: () => number };
}

const pairText = (p: AuthRequirement): string => `${p.localIdentity}/${p.remoteIdentity}/${p.authType}`;

/** Ordering of writes: stricter changes first, so that the map never allows more, on the way, than before or after. */
function writeRank(op: { del: boolean; entry: PolicyEntry; marker: boolean }): number {
  if (!op.del) {
    if (op.entry.verdict === 'deny') return op.marker ? 0 : 1;
    if (op.entry.authType !== 0) return 2;
    return 4;
  }
  if (op.entry.verdict === 'allow') return 3;
  return op.marker ? 6 : 5;
}

export class PolicyMapSync {
  private readonly written = new Map<string, PolicyMapEntry>();
  private pairs = new Map<string, AuthRequirement>();
  private readonly listeners = new Set<(c: AuthPairsChange) => void>();
  private unsubscribe: (() => void) | undefined;
  private lastErrors = new Set<string>();
  /** The last compile, for explain and status. */
  compiled: CompiledPolicies | undefined;
  /** Set when a write failed; the next change (or sync()) retries the whole diff. */
  lastError: Error | undefined;
  /** Entries held at their unauthenticated verdict (authUpgrade), by key text: since when. */
  private readonly held = new Map<string, number>();
  private holdTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: PolicyMapSyncOptions) {}

  /** Adopts what the map holds (an earlier agent's entries), brings it up to date and follows state changes. */
  start(): void {
    if (this.unsubscribe) return;
    this.written.clear();
    for (const { key, entry } of this.opts.map.entries()) this.written.set(policyKeyText(key), { key, entry });
    this.unsubscribe = this.opts.state.onChange((c) => {
      if (c.snapshot || touched(c)) this.syncSafely();
    });
    this.syncSafely();
  }

  /** Stops following changes. The entries stay, so the datapath keeps enforcing while the agent is away. */
  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
  }

  /** Entries still held at their unauthenticated verdict, waiting for their pairs (authUpgrade). */
  heldEntries(): number { return this.held.size; }

  /** Re-checks the held entries: call when pairs have been authenticated. */
  recheckHeld(): void {
    if (this.held.size > 0 && this.unsubscribe) this.syncSafely();
  }

  /** Called with the pairs that appeared and went away after each sync that changed them. */
  onAuthPairsChange(fn: (c: AuthPairsChange) => void): () => void {
    this.listeners.add(fn);
    return () => { this.listeners.delete(fn); };
  }

  /** The pairs that the current policy requires to be authenticated. */
  authPairs(): AuthRequirement[] {
    return [...this.pairs.values()];
  }

  /** Entries this sync wrote and believes the map holds. */
  writtenEntries(): PolicyMapEntry[] {
    return [...this.written.values()];
  }

  /** Recompiles and applies the difference to the map; throws when a write fails. */
  sync(): PolicySyncResult {
    const compiled = compileState(this.opts.state);
    this.compiled = compiled;
    this.reportErrors(compiled.errors);
    const desired = new Map(compiled.entries.map((e) => [policyKeyText(e.key), e]));
    const ops: Array<{ del: boolean; text: string; e: PolicyMapEntry; marker: boolean }> = [];
    const stillHeld = new Set<string>();
    for (const [text, e] of desired) {
      const old = this.written.get(text);
      if (old && sameEntry(old.entry, e.entry)) continue;
      if (old && this.holdsBack(text, old.entry, e)) { stillHeld.add(text); continue; }
      ops.push({ del: false, text, e, marker: isMarker(e.key) });
    }
    for (const text of this.held.keys()) if (!stillHeld.has(text)) this.held.delete(text);
    this.scheduleHoldEnd();
    for (const [text, e] of this.written) if (!desired.has(text)) ops.push({ del: true, text, e, marker: isMarker(e.key) });
    ops.sort((a, b) => writeRank({ ...a, entry: a.e.entry }) - writeRank({ ...b, entry: b.e.entry }));
    let upserted = 0;
    let deleted = 0;
    for (const op of ops) {
      if (op.del) {
        this.opts.map.delete(op.e.key);
        this.written.delete(op.text);
        deleted++;
      } else {
        this.opts.map.upsert(op.e.key, op.e.entry);
        this.written.set(op.text, op.e);
        upserted++;
      }
    }
    this.lastError = undefined;
    this.updatePairs(compiled.authPairs);
    if (upserted + deleted > 0) {
      this.opts.logger?.debug('policy map synced', { upserted, deleted, entries: this.written.size });
    }
    return { upserted, deleted, entries: this.written.size, errors: compiled.errors };
  }

  /** Whether an allow-without-auth entry stays as it is for now, while its new auth requirement's pair is not yet authenticated. */
  private holdsBack(text: string, old: PolicyEntry, next: PolicyMapEntry): boolean {
    const upgrade = this.opts.authUpgrade;
    if (!upgrade || old.verdict !== 'allow' || old.authType !== 0 || next.entry.verdict !== 'allow' || next.entry.authType === 0) return false;
    // a wildcard remote names no pair to authenticate first
    if (next.key.remoteIdentity === 0) return false;
    const now = (upgrade.now ?? Date.now)();
    const since = this.held.get(text) ?? now;
    const pair = { localIdentity: next.key.localIdentity, remoteIdentity: next.key.remoteIdentity, authType: next.entry.authType };
    if (now - since >= upgrade.holdMs || upgrade.ready(pair)) return false;
    if (!this.held.has(text)) this.opts.logger?.debug('auth requirement held until its pair is authenticated', { key: text, holdMs: upgrade.holdMs });
    this.held.set(text, since);
    return true;
  }

  /** A sync when the oldest hold runs out, so an entry whose pair never authenticates is enforced all the same. */
  private scheduleHoldEnd(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const upgrade = this.opts.authUpgrade;
    if (!upgrade || this.held.size === 0 || !this.unsubscribe) return;
    const now = (upgrade.now ?? Date.now)();
    const first = Math.min(...this.held.values());
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.syncSafely();
    }, Math.max(0, first + upgrade.holdMs - now) + 1);
    this.holdTimer.unref();
  }

  private syncSafely(): void {
    try {
      this.sync();
    } catch (err) {
      this.lastError = err as Error;
      this.opts.logger?.error('policy map sync failed', { err });
    }
  }

  private updatePairs(next: AuthRequirement[]): void {
    const map = new Map(next.map((p) => [pairText(p), p]));
    const added = next.filter((p) => !this.pairs.has(pairText(p)));
    const removed = [...this.pairs.entries()].filter(([k]) => !map.has(k)).map(([, p]) => p);
    this.pairs = map;
    if (added.length + removed.length === 0) return;
    const change: AuthPairsChange = { added, removed, current: next };
    for (const l of this.listeners) {
      try { l(change); } catch (err) { this.opts.logger?.error('auth pairs listener failed', { err }); }
    }
  }

  private reportErrors(errors: PolicyError[]): void {
    const now = new Set(errors.map((e) => `${e.policy}: ${e.message}`));
    for (const e of errors) {
      if (!this.lastErrors.has(`${e.policy}: ${e.message}`)) this.opts.logger?.error('policy left out: it does not decode', { policy: e.policy, message: e.message });
    }
    this.lastErrors = now;
  }
}

const isMarker = (k: PolicyKey): boolean => k.remoteIdentity === 0 && k.port === 0 && k.proto === 0;

function touched(c: StateChange): boolean {
  return c.identities.upserted.length + c.identities.removed.length + c.endpoints.upserted.length + c.endpoints.removed.length
    + c.policies.upserted.length + c.policies.removed.length > 0;
}
