/**
 * One agent's Sync stream: a snapshot of what the agent may see, then deltas
 * computed from the datastore's change log. A change after a quiet spell goes
 * out at once (after the writes of the same tick); changes while one went out
 * less than `coalesceMs` ago wait for the rest of that window, so a burst of
 * admin writes becomes few messages and a lone change is not held back.
 */
import type { Change, Datastore, RegistrationEntry } from '../datastore/index.js';
import type { SyncUpdateMsg } from '../../api/agentproto.js';
import { PermissionDenied, Unauthenticated } from '../../spiffe/errors.js';
import { serverId, type SpiffeId } from '../../spiffe/id.js';
import type { SelectorSet } from '../../spiffe/selector.js';
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

  constructor(
    private readonly store: Datastore,
    private readonly agentId: SpiffeId,
    nodeSelectors: SelectorSet,
    private readonly sink: SyncSink,
    private readonly coalesceMs = 20,
  ) {
    this.nodeSelectors = nodeSelectors;
    this.serverIdText = serverId(agentId.trustDomain).toString();
  }

  start(): void {
    this.unsubscribe = this.store.onChange((changes) => {
      this.pending.push(...changes);
      if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), Math.max(0, this.lastFlushAt + this.coalesceMs - performance.now()));
    });
    this.sink.write(this.snapshot());
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  private localNodeId(): number {
    return this.store.listNodes().find((n) => n.agentId === this.agentId.toString())?.id ?? 0;
  }

  private allBundles(): SyncUpdateMsg['bundles'] {
    const own = this.store.trustDomain.name;
    return this.store.listBundles()
      .sort((a, b) => (a.trustDomain.name === own ? -1 : b.trustDomain.name === own ? 1 : a.trustDomain.name.localeCompare(b.trustDomain.name)))
      .map((b) => ({ trust_domain: b.trustDomain.name, document: Buffer.from(JSON.stringify(b.document)) }));
  }

  /** Every entry this agent gets, read afresh (and the parents that make it get them). */
  private entries(): RegistrationEntry[] {
    this.parents = new Set([this.agentId.toString(), ...this.store.nodeAliasesOf(this.nodeSelectors)]);
    return this.store.entriesForAgent(this.agentId, this.nodeSelectors);
  }

  /**
   * Entry changes as a delta without re-reading every entry of the agent: a
   * change whose parents are not this agent's (nor of an entry it was sent)
   * costs nothing, and a relevant one is one lookup. False (nothing added to
   * msg) when only a full recompute can tell: a change read back without its
   * parents, or one to a node alias (parented by the server), which can change
   * which entries the agent gets.
   */
  private entryDelta(changes: readonly Change[], msg: SyncUpdateMsg): boolean {
    if (changes.some((c) => !c.parents || c.parents.includes(this.serverIdText))) return false;
    const now = this.store.nowSeconds();
    for (const c of changes) {
      if (!c.parents!.some((p) => this.parents.has(p)) && !this.sent.has(c.id)) continue;
      const entry = c.op === 'delete' ? undefined : this.store.findEntry(c.id);
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

  snapshot(): SyncUpdateMsg {
    const td = this.store.trustDomain;
    const revision = this.store.currentRevision();
    const msg = emptyUpdate(revision, true);
    const entries = this.entries();
    this.sent = new Map(entries.map((e) => [e.id, e.revision]));
    msg.entries = entries.map(entryMsg);
    msg.bundles = this.allBundles();
    msg.identities = this.store.listIdentities().map((i) => identityMsg(td, i));
    msg.endpoints = this.store.listEndpoints().map(endpointMsg);
    msg.nodes = this.store.listNodes().map((n) => nodeMsg(n));
    msg.policies = this.store.listPolicies().map(policyMsg);
    msg.local_node_id = this.localNodeId();
    return msg;
  }

  private flush(): void {
    this.flushTimer = undefined;
    this.lastFlushAt = performance.now();
    const changes = this.pending;
    this.pending = [];
    if (changes.length === 0 || !this.unsubscribe) return;
    try {
      const msg = this.delta(changes);
      if (msg) this.sink.write(msg);
    } catch (err) {
      this.stop();
      this.sink.fail(err as Error);
    }
  }

  /** What changed for this agent; undefined when nothing it sees did. */
  private delta(changes: readonly Change[]): SyncUpdateMsg | undefined {
    const td = this.store.trustDomain;
    // the revision is read only for a message that is sent (below): most flushes send nothing
    const msg = emptyUpdate(0, false);
    const kinds = new Set(changes.map((c) => c.kind));
    const latest = new Map<string, Change>();
    for (const c of changes) latest.set(`${c.kind}\0${c.id}`, c);
    if (changes.some((c) => c.kind === 'agent' && c.id === this.agentId.toString())) {
      const self = this.store.findAttestedNode(this.agentId);
      if (!self) throw new Unauthenticated('agent was evicted: attest again');
      if (self.banned) throw new PermissionDenied('agent is banned');
      this.nodeSelectors = self.selectors;
    }
    const entryChanges = [...latest.values()].filter((c) => c.kind === 'entry');
    if (kinds.has('agent') || (entryChanges.length > 0 && !this.entryDelta(entryChanges, msg))) {
      const now = new Map<string, RegistrationEntry>(this.entries().map((e) => [e.id, e]));
      for (const [id, e] of now) if (this.sent.get(id) !== e.revision) msg.entries.push(entryMsg(e));
      for (const id of this.sent.keys()) if (!now.has(id)) msg.removed_entries.push(id);
      this.sent = new Map([...now].map(([id, e]) => [id, e.revision]));
    }
    if (kinds.has('bundle')) msg.bundles = this.allBundles();
    for (const c of latest.values()) {
      try {
        switch (c.kind) {
          case 'identity':
            if (c.op === 'delete') msg.removed_identities.push(Number(c.id));
            else msg.identities.push(identityMsg(td, this.store.getIdentity(Number(c.id))));
            break;
          case 'endpoint':
            if (c.op === 'delete') msg.removed_endpoints.push(c.id);
            else msg.endpoints.push(endpointMsg(this.store.getEndpoint(c.id)));
            break;
          case 'node':
            if (c.op === 'delete') msg.removed_nodes.push(Number(c.id));
            else msg.nodes.push(nodeMsg(this.store.getNode(Number(c.id))));
            break;
          case 'policy': {
            const [ns, name] = splitPolicyKey(c.id);
            if (c.op === 'delete') msg.removed_policies.push(c.id);
            else msg.policies.push(policyMsg(this.store.getPolicy(ns, name)));
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
    if (kinds.has('node')) msg.local_node_id = this.localNodeId();
    const empty = msg.entries.length + msg.removed_entries.length + msg.bundles.length + msg.identities.length +
      msg.removed_identities.length + msg.endpoints.length + msg.removed_endpoints.length + msg.nodes.length +
      msg.removed_nodes.length + msg.policies.length + msg.removed_policies.length === 0;
    if (empty && !kinds.has('node')) return undefined;
    // nothing can be written between the reads above and this one (the datastore is synchronous)
    msg.revision = this.store.currentRevision();
    return msg;
  }
}

function splitPolicyKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return slash < 0 ? ['', key] : [key.slice(0, slash), key.slice(slash + 1)];
}
