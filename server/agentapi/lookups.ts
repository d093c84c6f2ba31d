/**
 * What the agent API looks up on every call an agent makes, kept per agent
 * between the changes that can alter it: the agent's attested-node record
 * (authenticate) and the entries it may have SVIDs for (BatchNewX509SVID,
 * NewJWTSVID). Without it, each signing call costs two or three datastore
 * queries, which on PostgreSQL cost more than the signatures.
 *
 * The cache follows the same change source as the Sync streams (the change
 * feed: every server's commits), so it is as fresh as what the agents are
 * sent: a deleted entry or a banned agent stops being served once the feed has
 * delivered the change (at once for this server's own writes; within the
 * feed's wake-up or poll for another server's). A change that arrives while a
 * lookup is reading the datastore keeps that lookup's result out of the cache.
 * Expiry is checked at use, not cached.
 */
import type { AttestedNode, Change, Datastore, RegistrationEntry } from '../datastore/index.js';
import { isAgentId, type SelectorSet, serverId, SpiffeId } from '../../spiffe/index.js';

function isAgentIdText(id: string): boolean {
  try { return isAgentId(SpiffeId.parse(id)); } catch { return false; }
}

interface Source { onChange(listener: (changes: readonly Change[]) => void): () => void; onReset?(listener: () => void): () => void }

interface Entries { parents: Set<string>; byId: Map<string, RegistrationEntry> }

/** A read in progress; `stale` once a change that may concern it arrived meanwhile. */
interface Fill { agentId: string; stale: boolean }

export interface AgentLookupsOptions {
  /** Agents whose lookups are kept; beyond that the oldest go (default 100,000). */
  maxAgents?: number;
}

export class AgentLookups {
  private readonly nodes = new Map<string, AttestedNode>();
  private readonly entries = new Map<string, Entries>();
  /** parent ID → the agents whose cached entries include that parent's (their own ID, their node aliases). */
  private readonly byParent = new Map<string, Set<string>>();
  private readonly fills = new Set<Fill>();
  private readonly serverIdText: string;
  private readonly maxAgents: number;
  private unsubscribe: (() => void) | undefined;
  hits = 0;
  misses = 0;

  constructor(private readonly store: Datastore, private readonly source: Source, opts: AgentLookupsOptions = {}) {
    this.serverIdText = serverId(store.trustDomain).toString();
    this.maxAgents = opts.maxAgents ?? 100_000;
  }

  start(): void {
    const off = this.source.onChange((changes) => this.apply(changes));
    const offReset = this.source.onReset?.(() => this.clear());
    this.unsubscribe = () => { off(); offReset?.(); };
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.clear();
  }

  /** The agent's attested-node record, or undefined when it has none (evicted, never attested). */
  async attestedNode(agentId: SpiffeId): Promise<AttestedNode | undefined> {
    const key = agentId.toString();
    const hit = this.nodes.get(key);
    if (hit) { this.hits++; return hit; }
    this.misses++;
    const fill = this.begin(key);
    try {
      const node = await this.store.findAttestedNode(agentId);
      if (node && this.keep(fill)) this.nodes.set(key, node);
      return node;
    } finally {
      this.fills.delete(fill);
    }
  }

  /** The entries the agent may have, by id, unexpired at `nowSeconds`. */
  async entriesFor(agentId: SpiffeId, nodeSelectors: SelectorSet, nowSeconds: number): Promise<Map<string, RegistrationEntry>> {
    const key = agentId.toString();
    let cached = this.entries.get(key);
    if (cached) this.hits++;
    else {
      this.misses++;
      const fill = this.begin(key);
      try {
        const [aliases, list] = await Promise.all([this.store.nodeAliasesOf(nodeSelectors), this.store.entriesForAgent(agentId, nodeSelectors)]);
        cached = { parents: new Set([key, ...aliases]), byId: new Map(list.map((e) => [e.id, e])) };
        if (this.keep(fill)) this.remember(key, cached);
      } finally {
        this.fills.delete(fill);
      }
    }
    if (![...cached.byId.values()].some((e) => e.expiresAt !== 0 && e.expiresAt <= nowSeconds)) return cached.byId;
    return new Map([...cached.byId].filter(([, e]) => e.expiresAt === 0 || e.expiresAt > nowSeconds));
  }

  private begin(agentId: string): Fill {
    const fill = { agentId, stale: false };
    this.fills.add(fill);
    return fill;
  }

  private keep(fill: Fill): boolean {
    return !fill.stale && this.unsubscribe !== undefined;
  }

  private remember(agentId: string, e: Entries): void {
    this.forgetEntries(agentId);
    if (this.entries.size >= this.maxAgents) this.forgetEntries(this.entries.keys().next().value!);
    this.entries.set(agentId, e);
    for (const p of e.parents) {
      let s = this.byParent.get(p);
      if (!s) { s = new Set(); this.byParent.set(p, s); }
      s.add(agentId);
    }
  }

  private forgetEntries(agentId: string): void {
    const e = this.entries.get(agentId);
    if (!e) return;
    this.entries.delete(agentId);
    for (const p of e.parents) {
      const s = this.byParent.get(p);
      s?.delete(agentId);
      if (s?.size === 0) this.byParent.delete(p);
    }
  }

  private forgetAgent(agentId: string): void {
    this.nodes.delete(agentId);
    this.forgetEntries(agentId); // its selectors (so its node aliases) may have changed
    for (const f of this.fills) if (f.agentId === agentId) f.stale = true;
  }

  private clear(): void {
    this.nodes.clear();
    this.entries.clear();
    this.byParent.clear();
    for (const f of this.fills) f.stale = true;
  }

  private apply(changes: readonly Change[]): void {
    for (const c of changes) {
      if (c.kind === 'agent') { this.forgetAgent(c.id); continue; }
      if (c.kind !== 'entry') continue;
      // read back without its parents, or an entry of the server's (a node alias): which agents get what may have changed
      if (!c.parents || c.parents.includes(this.serverIdText)) {
        this.entries.clear();
        this.byParent.clear();
        for (const f of this.fills) f.stale = true;
        continue;
      }
      for (const p of c.parents) {
        for (const agentId of [...(this.byParent.get(p) ?? [])]) this.forgetEntries(agentId);
        // a parent that is not an agent ID is a node alias, which any read in progress may include
        if (this.fills.size > 0) {
          const alias = !isAgentIdText(p);
          for (const f of this.fills) if (alias || f.agentId === p) f.stale = true;
        }
      }
    }
  }
}
