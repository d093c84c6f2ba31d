/**
 * One agent's Sync stream: a snapshot of what the agent may see, then deltas
 * computed from the datastore's change log. A change after a quiet spell goes
 * out at once (after the writes of the same tick); changes while one went out
 * less than `coalesceMs` ago wait for the rest of that window, so a burst of
 * admin writes becomes few messages and a lone change is not held back.
 */
import type { Change, Datastore, RegistrationEntry } from '../datastore/index.js';
import type { SyncUpdateMsg } from '../../api/agentproto.js';
import { PermissionDenied, type SelectorSet, serverId, type SpiffeId, Unauthenticated } from '../../spiffe/index.js';
import type { Gate } from '../../common/gate.js';
import { endpointMsg, entryMsg, identityMsg, nodeMsg, policyMsg } from './convert.js';

export interface SyncSink {
  write(msg: SyncUpdateMsg): void;
  /** Ends the stream with an error (agent banned or evicted). */
  fail(err: Error): void;
}

const emptyUpdate = (revision: number, snapshot: boolean): SyncUpdateMsg => ({
  revision, snapshot, entries: [], removed_entries: [], bundles: [], identities: [], removed_identities: [],
  endpoints: [], removed_endpoints: [], nodes: [], removed_nodes: [], policies: [], removed_policies: [], local_node_id: 0,
});

/** Where a Sync stream hears of committed changes: the datastore (its own writes) or the change feed (every server's). */
export interface ChangeSource { onChange(listener: (changes: readonly Change[]) => void): () => void }

/** An agent further behind than this gets a snapshot instead of the changes. */
const MAX_RESUME_CHANGES = 10_000;

export class AgentSyncStream {
  /** entry id → revision last sent */
  private sent = new Map<string, number>();
  /** The parents whose entries this agent gets: its own ID and its node aliases' IDs (refreshed with every full recompute). */
  private parents = new Set<string>();
  private readonly serverIdText: string;
  private pending: Change[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlushAt = -Infinity;
  private unsubscribe: (() => void) | undefined;
  private nodeSelectors: SelectorSet;
  /** The revision the agent has everything up to; changes at or below it are not sent again. */
  private revision = 0;
  /** Snapshot and flushes run one at a time, in order. */
  private work: Promise<void> = Promise.resolve();
  private busy = false;
  private readonly coalesceMs: number;
  private readonly changes: ChangeSource;

  constructor(
    private readonly store: Datastore,
    private readonly agentId: SpiffeId,
    nodeSelectors: SelectorSet,
    private readonly sink: SyncSink,
    coalesceMs: number | undefined = undefined,
    changes: ChangeSource | undefined = undefined,
    /** Where snapshots wait their turn (several thousand agents reconnecting at once); default none. */
    private readonly snapshots: Gate | undefined = undefined,
  ) {
    this.coalesceMs = coalesceMs ?? 20;
    this.changes = changes ?? store;
    this.nodeSelectors = nodeSelectors;
    this.serverIdText = serverId(agentId.trustDomain).toString();
  }

  /**
   * Starts the stream: a snapshot, or, when the agent says it has everything up
   * to `resumeFrom` and the change log still holds what came after, only that.
   */
  start(resumeFrom = 0): void {
    this.unsubscribe = this.changes.onChange((changes) => {
      this.pending.push(...changes);
      this.schedule();
    });
    this.enqueue(async () => {
      const msg = await this.gated(async () => (resumeFrom > 0 ? await this.resume(resumeFrom) : undefined) ?? await this.readSnapshot());
      if (this.unsubscribe) this.sink.write(msg);
    });
  }

  /** What changed since `from`, as one delta; undefined when only a snapshot can tell (log compacted, too far behind, or ahead of this datastore). */
  private async resume(from: number): Promise<SyncUpdateMsg | undefined> {
    const current = await this.store.currentRevision();
    if (from > current) return undefined;
    let changes: Change[];
    try {
      changes = await this.store.changesSince(from, MAX_RESUME_CHANGES);
    } catch {
      return undefined;
    }
    if (changes.length >= MAX_RESUME_CHANGES) return undefined;
    // The agent holds the entries it was given up to `from`: today's, except that any entry
    // changed since may be one it holds in an older form, or one it must drop.
    const entries = await this.entries(this.store);
    this.sent = new Map(entries.map((e) => [e.id, e.revision]));
    for (const c of changes) {
      if (c.kind === 'entry' && (!c.parents || c.parents.some((p) => this.parents.has(p)))) this.sent.set(c.id, -1);
    }
    this.revision = from;
    const msg = changes.length > 0 ? await this.delta(changes) : undefined;
    const out = msg ?? emptyUpdate(changes.length > 0 ? changes[changes.length - 1]!.revision : current, false);
    this.revision = Math.max(from, Number(out.revision));
    return out;
  }

  /** Sends a whole snapshot again (the change feed lost its place in a compacted log). */
  resync(): void {
    this.pending = [];
    this.enqueue(async () => {
      const msg = await this.snapshot();
      if (this.unsubscribe) this.sink.write(msg);
    });
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  private schedule(): void {
    if (this.flushTimer || this.busy || !this.unsubscribe) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      // most changes concern other agents: those are passed over here, with no read and no async step
      if (!this.busy && !this.pending.some((c) => c.revision > this.revision && this.concerns(c))) {
        for (const c of this.pending) if (c.revision > this.revision) this.revision = c.revision;
        this.pending = [];
        return;
      }
      this.enqueue(() => this.flush());
    }, Math.max(0, this.lastFlushAt + this.coalesceMs - performance.now()));
  }

  /** Whether a change can alter what this agent is sent; false only when it surely cannot (delta() decides the rest). */
  private concerns(c: Change): boolean {
    if (c.kind === 'agent') return c.id === this.agentId.toString();
    if (c.kind !== 'entry') return true;
    if (!c.parents || c.parents.includes(this.serverIdText)) return true;
    return this.sent.has(c.id) || c.parents.some((p) => this.parents.has(p));
  }

  private enqueue(job: () => Promise<void>): void {
    this.work = this.work.then(async () => {
      if (!this.unsubscribe) return;
      this.busy = true;
      try {
        await job();
      } catch (err) {
        this.stop();
        this.sink.fail(err as Error);
      } finally {
        this.busy = false;
      }
      if (this.pending.length > 0) this.schedule();
    });
  }

  private async localNodeId(store: Datastore): Promise<number> {
    return (await store.listNodes()).find((n) => n.agentId === this.agentId.toString())?.id ?? 0;
  }

  private async allBundles(store: Datastore): Promise<SyncUpdateMsg['bundles']> {
    const own = store.trustDomain.name;
    return (await store.listBundles())
      .sort((a, b) => (a.trustDomain.name === own ? -1 : b.trustDomain.name === own ? 1 : a.trustDomain.name.localeCompare(b.trustDomain.name)))
      .map((b) => ({ trust_domain: b.trustDomain.name, document: Buffer.from(JSON.stringify(b.document)) }));
  }

  /** Every entry this agent gets, read afresh (and the parents that make it get them). */
  private async entries(store: Datastore): Promise<RegistrationEntry[]> {
    this.parents = new Set([this.agentId.toString(), ...await store.nodeAliasesOf(this.nodeSelectors)]);
    return store.entriesForAgent(this.agentId, this.nodeSelectors);
  }

  /**
   * Entry changes as a delta without re-reading every entry of the agent: a
   * change whose parents are not this agent's (nor of an entry it was sent)
   * costs nothing, and a relevant one is one lookup. False (nothing added to
   * msg) when only a full recompute can tell: a change read back without its
   * parents, or one to a node alias (parented by the server), which can change
   * which entries the agent gets.
   */
  private async entryDelta(changes: readonly Change[], msg: SyncUpdateMsg): Promise<boolean> {
    if (changes.some((c) => !c.parents || c.parents.includes(this.serverIdText))) return false;
    const now = this.store.nowSeconds();
    for (const c of changes) {
      if (!c.parents!.some((p) => this.parents.has(p)) && !this.sent.has(c.id)) continue;
      const entry = c.op === 'delete' ? undefined : await this.store.findEntry(c.id);
      const visible = entry && this.parents.has(entry.parentId.toString()) && (entry.expiresAt === 0 || entry.expiresAt > now);
      if (visible) {
        if (this.sent.get(c.id) !== entry.revision) {
          msg.entries.push(entryMsg(entry));
          this.sent.set(c.id, entry.revision);
        }
      } else if (this.sent.delete(c.id)) {
        msg.removed_entries.push(c.id);
      }
    }
    return true;
  }

  /** Everything the agent may see, read from one consistent snapshot, stamped with that snapshot's revision. */
  snapshot(): Promise<SyncUpdateMsg> {
    return this.gated(() => this.readSnapshot());
  }

  private gated<T>(fn: () => Promise<T>): Promise<T> {
    return this.snapshots ? this.snapshots.run(fn) : fn();
  }

  private readSnapshot(): Promise<SyncUpdateMsg> {
    return this.store.readSnapshot(async (store) => {
      const td = store.trustDomain;
      const revision = await store.currentRevision();
      const msg = emptyUpdate(revision, true);
      const entries = await this.entries(store);
      this.sent = new Map(entries.map((e) => [e.id, e.revision]));
      msg.entries = entries.map(entryMsg);
      msg.bundles = await this.allBundles(store);
      msg.identities = (await store.listIdentities()).map((i) => identityMsg(td, i));
      msg.endpoints = (await store.listEndpoints()).map(endpointMsg);
      msg.nodes = (await store.listNodes()).map((n) => nodeMsg(n));
      msg.policies = (await store.listPolicies()).map(policyMsg);
      msg.local_node_id = await this.localNodeId(store);
      this.revision = revision;
      return msg;
    });
  }

  private async flush(): Promise<void> {
    this.lastFlushAt = performance.now();
    // changes the snapshot (or an earlier flush) already covered are dropped
    const changes = this.pending.filter((c) => c.revision > this.revision);
    this.pending = [];
    if (changes.length === 0) return;
    const msg = await this.delta(changes);
    this.revision = Math.max(this.revision, ...changes.map((c) => c.revision));
    if (msg && this.unsubscribe) this.sink.write(msg);
  }

  /** What changed for this agent; undefined when nothing it sees did. */
  private async delta(changes: readonly Change[]): Promise<SyncUpdateMsg | undefined> {
    const store = this.store;
    const td = store.trustDomain;
    const msg = emptyUpdate(0, false);
    const kinds = new Set(changes.map((c) => c.kind));
    const latest = new Map<string, Change>();
    for (const c of changes) latest.set(`${c.kind}\0${c.id}`, c);
    if (changes.some((c) => c.kind === 'agent' && c.id === this.agentId.toString())) {
      const self = await store.findAttestedNode(this.agentId);
      if (!self) throw new Unauthenticated('agent was evicted: attest again');
      if (self.banned) throw new PermissionDenied('agent is banned');
      this.nodeSelectors = self.selectors;
    }
    const entryChanges = [...latest.values()].filter((c) => c.kind === 'entry');
    // this agent's own record (its node selectors, so its node aliases) decides which entries it gets; other agents' do not
    const selfChanged = changes.some((c) => c.kind === 'agent' && c.id === this.agentId.toString());
    if (selfChanged || (entryChanges.length > 0 && !await this.entryDelta(entryChanges, msg))) {
      const now = new Map<string, RegistrationEntry>((await this.entries(store)).map((e) => [e.id, e]));
      for (const [id, e] of now) if (this.sent.get(id) !== e.revision) msg.entries.push(entryMsg(e));
      for (const id of this.sent.keys()) if (!now.has(id)) msg.removed_entries.push(id);
      this.sent = new Map([...now].map(([id, e]) => [id, e.revision]));
    }
    if (kinds.has('bundle')) msg.bundles = await this.allBundles(store);
    for (const c of latest.values()) {
      try {
        switch (c.kind) {
          case 'identity':
            if (c.op === 'delete') msg.removed_identities.push(Number(c.id));
            else msg.identities.push(identityMsg(td, await store.getIdentity(Number(c.id))));
            break;
          case 'endpoint':
            if (c.op === 'delete') msg.removed_endpoints.push(c.id);
            else msg.endpoints.push(endpointMsg(await store.getEndpoint(c.id)));
            break;
          case 'node':
            if (c.op === 'delete') msg.removed_nodes.push(Number(c.id));
            else msg.nodes.push(nodeMsg(await store.getNode(Number(c.id))));
            break;
          case 'policy': {
            const [ns, name] = splitPolicyKey(c.id);
            if (c.op === 'delete') msg.removed_policies.push(c.id);
            else msg.policies.push(policyMsg(await store.getPolicy(ns, name)));
            break;
          }
          default:
            break;
        }
      } catch (err) {
        // Upserted then deleted within the window: the delete is in `latest` too
        // unless it came later than this read, in which case the next flush has it.
        if ((err as { code?: string }).code !== 'not_found') throw err;
      }
    }
    if (kinds.has('node')) msg.local_node_id = await this.localNodeId(store);
    const empty = msg.entries.length + msg.removed_entries.length + msg.bundles.length + msg.identities.length +
      msg.removed_identities.length + msg.endpoints.length + msg.removed_endpoints.length + msg.nodes.length +
      msg.removed_nodes.length + msg.policies.length + msg.removed_policies.length === 0;
    if (empty && !kinds.has('node')) return undefined;
    // The objects were read at their latest state, which may include later changes
    // (sent again when they arrive: upserts are idempotent); the revision is that of
    // the last change this message covers, so a resume from it misses nothing.
    msg.revision = Math.max(...changes.map((c) => c.revision));
    return msg;
  }
}

function splitPolicyKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return slash < 0 ? ['', key] : [key.slice(0, slash), key.slice(slash + 1)];
}
