/**
 * The cluster-wide view that agents relay (api/proto/agent.proto, Relay): per
 * node, the newest flows (a bounded ring, as Hubble Relay's peers keep), the
 * auth map, the datapath counters and whether its stream is open; and the
 * explain questions that go down to the agents. Read by the admin API's
 * /v1/flows, /v1/auth, /v1/explain and /v1/relay/nodes.
 */
import type { Logger } from '../../common/log.js';
import type { ExplainAnswerMsg, NodeObservationMsg, RelayDownMsg, RelayUpMsg } from '../../api/agentproto.js';
import { flowMatches, type Flow, type FlowFilter } from '../../api/flow.js';
import type { AuthEntryJson, ClusterAuthJson, RelayNodeJson } from '../../api/observe.js';
import { MeshidError, Unavailable } from '../../spiffe/index.js';

/** One flow held: its JSON line as the agent sent it, its node and time, and its parsed form once a filter needed it. */
export interface HeldFlow { line: string; node: string; time: string; timeMs: number; flow?: Flow }

class FlowRing {
  readonly #items: Array<HeldFlow | undefined>;
  #next = 0;
  #size = 0;
  constructor(readonly capacity: number) { this.#items = new Array(capacity); }
  clear(): void { this.#items.fill(undefined); this.#next = 0; this.#size = 0; }
  add(item: HeldFlow): void {
    this.#items[this.#next] = item;
    this.#next = (this.#next + 1) % this.capacity;
    if (this.#size < this.capacity) this.#size++;
  }
  /** Oldest first. */
  all(): HeldFlow[] {
    const out: HeldFlow[] = new Array(this.#size);
    for (let i = 0; i < this.#size; i++) out[i] = this.#items[(this.#next - this.#size + i + this.capacity) % this.capacity]!;
    return out;
  }
}

/** The sending side of a node's Relay stream: how questions go down. */
export interface RelayLink { write(msg: RelayDownMsg): unknown }

interface NodeView {
  node: string;
  /** The next history message of the stream replaces the ring (a new stream sends its history first). */
  replaceOnReplay: boolean;
  agentId: string;
  ring: FlowRing;
  link: RelayLink | undefined;
  since: Date;
  lastSeen: Date;
  received: number;
  lost: number;
  observation: NodeObservationMsg | undefined;
}

/** New flows, as a subscriber gets them: those of one message from one node, oldest first. */
export type FlowListener = (flows: readonly HeldFlow[]) => void;
/** A node whose stream opened or closed. */
export type NodeListener = (node: string, state: 'connected' | 'unavailable') => void;

export interface RelayHubOptions {
  logger: Logger;
  /** Flows kept per node (default 4,096). */
  historyPerNode?: number;
  /** How long an explain question waits for the agents (default 5 s). */
  explainTimeoutMs?: number;
  now?: () => Date;
}

const FLOW_TIME_PREFIX = '{"time":"';

/** The time of a flow line: the agents write `time` first (api/flow.ts), so it is read without parsing the rest. */
function timeOf(line: string): { time: string; timeMs: number; flow?: Flow } {
  if (line.startsWith(FLOW_TIME_PREFIX)) {
    const end = line.indexOf('"', FLOW_TIME_PREFIX.length);
    const time = line.slice(FLOW_TIME_PREFIX.length, end);
    const t = Date.parse(time);
    if (!Number.isNaN(t)) return { time, timeMs: t };
  }
  const flow = JSON.parse(line) as Flow;
  const t = Date.parse(flow.time);
  if (Number.isNaN(t)) throw new Error('a flow without a time');
  return { time: flow.time, timeMs: t, flow };
}

/** The flow of a held line, parsed once. */
export function parsed(h: HeldFlow): Flow {
  h.flow ??= JSON.parse(h.line) as Flow;
  return h.flow;
}

export class RelayHub {
  readonly #nodes = new Map<string, NodeView>();
  readonly #listeners = new Set<FlowListener>();
  readonly #nodeListeners = new Set<NodeListener>();
  readonly #pending = new Map<number, { node: string; resolve: (a: ExplainAnswerMsg) => void }>();
  #nextQuestion = 1;
  /** Flows received from every node. */
  received = 0;

  constructor(private readonly opts: RelayHubOptions) {}

  #now(): Date { return (this.opts.now ?? (() => new Date()))(); }

  /**
   * A node's Relay stream opened. Returns what to call with each message from it
   * and when it closes. A second stream of the same node replaces the first.
   */
  attach(node: string, agentId: string, link: RelayLink): { receive(msg: RelayUpMsg): void; close(): void } {
    const now = this.#now();
    let view = this.#nodes.get(node);
    if (!view) {
      view = { node, agentId, replaceOnReplay: true, ring: new FlowRing(this.opts.historyPerNode ?? 4096), link, since: now, lastSeen: now, received: 0, lost: 0, observation: undefined };
      this.#nodes.set(node, view);
    }
    Object.assign(view, { agentId, link, since: now, lastSeen: now, replaceOnReplay: true });
    this.opts.logger.info('relay stream open', { node, agent_id: agentId });
    for (const l of this.#nodeListeners) l(node, 'connected');
    const v = view;
    return {
      receive: (msg) => {
        if (v.link !== link) return; // replaced by a newer stream
        v.lastSeen = this.#now();
        if (msg.flows) this.#receiveFlows(v, msg.flows.flows, Number(msg.flows.lost), msg.flows.replay);
        if (msg.observation) v.observation = msg.observation;
        if (msg.explain) this.#answer(v, msg.explain);
      },
      close: () => {
        if (v.link !== link) return;
        v.link = undefined;
        v.since = this.#now();
        this.opts.logger.warn('relay stream closed', { node, agent_id: agentId });
        for (const l of this.#nodeListeners) l(node, 'unavailable');
        for (const [id, q] of this.#pending) {
          if (q.node === node) { this.#pending.delete(id); q.resolve({ id, error: { code: 14, message: `node ${node} went away` }, json: '' }); }
        }
      },
    };
  }

  /**
   * Flows of one message. `replay`: the node's history, sent first on a new
   * stream, in one or more messages: the first replaces what the ring holds,
   * and none of it is news to subscribers.
   */
  #receiveFlows(v: NodeView, lines: string[], lost: number, replay: boolean): void {
    if (replay && v.replaceOnReplay) v.ring.clear();
    v.replaceOnReplay = false;
    v.lost += lost;
    const fresh: HeldFlow[] = [];
    const ownNode = `"node_name":${JSON.stringify(v.node)}`;
    for (let line of lines) {
      let held: HeldFlow;
      try {
        // a flow names the node its stream is bound to, whatever the agent wrote (checked
        // without a parse; rewritten on the rare line that says otherwise)
        if (!line.includes(ownNode)) {
          const f = JSON.parse(line) as Flow;
          f.node_name = v.node;
          line = JSON.stringify(f);
        }
        held = { line, node: v.node, ...timeOf(line) };
      } catch {
        continue; // not a flow: nothing to keep (the agent API's peer is authenticated, so this is a bug, not an attack)
      }
      v.ring.add(held);
      if (!replay) fresh.push(held);
    }
    v.received += fresh.length;
    this.received += fresh.length;
    if (fresh.length) for (const l of this.#listeners) l(fresh);
  }

  /** Whether a held flow passes the filter; node and time are read without parsing the flow. */
  static matches(h: HeldFlow, filter: FlowFilter): boolean {
    if (filter.node !== undefined && h.node !== filter.node) return false;
    if (filter.sinceMs !== undefined && h.timeMs < filter.sinceMs) return false;
    const { node: _node, sinceMs: _since, ...rest } = filter;
    return Object.keys(rest).length === 0 || flowMatches(parsed(h), rest);
  }

  /** The newest `last` flows that match, of every node, oldest first. */
  history(filter: FlowFilter, last: number): HeldFlow[] {
    const all: HeldFlow[] = [];
    for (const v of this.#nodes.values()) {
      if (filter.node && v.node !== filter.node) continue;
      for (const h of v.ring.all()) if (filter.sinceMs === undefined || h.timeMs >= filter.sinceMs) all.push(h);
    }
    all.sort((a, b) => a.timeMs - b.timeMs);
    const picked: HeldFlow[] = [];
    for (let i = all.length - 1; i >= 0 && picked.length < last; i--) {
      if (RelayHub.matches(all[i]!, filter)) picked.push(all[i]!);
    }
    return picked.reverse();
  }

  /** Calls `listener` with each new flow until the returned function is called. */
  subscribe(listener: FlowListener): () => void {
    this.#listeners.add(listener);
    return () => { this.#listeners.delete(listener); };
  }

  /** Calls `listener` whenever a node's stream opens or closes, until the returned function is called. */
  onNodeChange(listener: NodeListener): () => void {
    this.#nodeListeners.add(listener);
    return () => { this.#nodeListeners.delete(listener); };
  }

  nodes(): RelayNodeJson[] {
    return [...this.#nodes.values()].sort((a, b) => a.node.localeCompare(b.node)).map((v) => ({
      node: v.node, agent_id: v.agentId, state: v.link ? 'connected' : 'unavailable',
      since: v.since.toISOString(), last_seen: v.lastSeen.toISOString(), flows_received: v.received,
      flows_lost: v.lost + Number(v.observation?.lost_in_ring ?? 0),
      counters: (v.observation?.counters ?? []).map((c) => ({ reason: c.reason, direction: c.direction, packets: Number(c.packets), bytes: Number(c.bytes) })),
    }));
  }

  /** Names of the nodes whose stream is not open now. */
  unavailable(): string[] {
    return [...this.#nodes.values()].filter((v) => !v.link).map((v) => v.node).sort();
  }

  auth(): ClusterAuthJson {
    const nodes = [...this.#nodes.values()].sort((a, b) => a.node.localeCompare(b.node)).map((v) => ({
      node: v.node, state: v.link ? 'connected' as const : 'unavailable' as const, since: v.since.toISOString(),
      entries: v.observation ? JSON.parse(v.observation.auth_entries_json) as AuthEntryJson[] : [],
    }));
    return { nodes, unavailable: this.unavailable() };
  }

  /**
   * Asks every connected node to explain the flow (each explains the directions
   * whose local end it hosts). Nodes that do not answer in time are named.
   */
  async explain(query: Record<string, string>): Promise<{ explanations: Record<string, unknown>[]; unavailable: string[]; errors: Array<{ node: string; code: number; message: string }> }> {
    const asked = [...this.#nodes.values()].filter((v) => v.link);
    const answers = await Promise.all(asked.map((v) => this.#ask(v, query)));
    const explanations: Record<string, unknown>[] = [];
    const errors: Array<{ node: string; code: number; message: string }> = [];
    const unavailable = this.unavailable();
    answers.forEach((a, i) => {
      const node = asked[i]!.node;
      if (a.error && a.error.code !== 0) {
        if (a.error.code === 4 /* DEADLINE_EXCEEDED */ || a.error.code === 14 /* UNAVAILABLE */) unavailable.push(node);
        // a pod the node does not host is no answer from it; anything else is reported
        else if (a.error.code !== 5 /* NOT_FOUND */) errors.push({ node, code: a.error.code, message: a.error.message });
        return;
      }
      const body = JSON.parse(a.json) as Record<string, unknown>;
      if (body['applies'] !== false) explanations.push(body);
    });
    return { explanations, unavailable: [...new Set(unavailable)].sort(), errors };
  }

  #ask(v: NodeView, query: Record<string, string>): Promise<ExplainAnswerMsg> {
    const id = this.#nextQuestion++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve({ id, error: { code: 4, message: `node ${v.node} did not answer in time` }, json: '' });
      }, this.opts.explainTimeoutMs ?? 5000);
      timer.unref();
      this.#pending.set(id, { node: v.node, resolve: (a) => { clearTimeout(timer); resolve(a); } });
      try {
        v.link!.write({ explain: { id, query } });
      } catch (err) {
        this.#pending.delete(id);
        clearTimeout(timer);
        resolve({ id, error: { code: 14, message: (err as Error).message }, json: '' });
      }
    });
  }

  #answer(v: NodeView, a: ExplainAnswerMsg): void {
    const q = this.#pending.get(Number(a.id));
    if (!q || q.node !== v.node) return; // not a question this node was asked
    this.#pending.delete(Number(a.id));
    q.resolve(a);
  }
}

/** For the admin API: a question no node could answer. */
export function noAnswer(unavailable: string[]): MeshidError {
  return new Unavailable(`no agent could explain the flow${unavailable.length ? `; unavailable: ${unavailable.join(', ')}` : ''}`);
}
