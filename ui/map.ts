/**
 * The identity map: a node per security identity (grouped by namespace,
 * labelled with its ServiceAccount and SPIFFE ID), an edge per pair of
 * identities that flows were observed between, coloured by verdict and marked
 * where the pair is authenticated (from every node's auth map) or where
 * authentication is required and missing. It follows the flows live. An edge
 * opens the explanation of its flow (policy, rule, auth entry) and its last flows.
 */
import cytoscape, { type Core, type EdgeSingular } from 'cytoscape';
import { compactFlow, type Flow, type FlowResponse } from '../api/flow.js';
import type { AuthEntryJson, ClusterAuthJson } from '../api/observe.js';
import { el, fields, getJson, panel, status, streamLines } from './api.js';

interface IdentityJson { id: number; namespace: string; service_account: string; spiffe_id: string; labels: Record<string, string> }

/** What the map knows of one directed pair of identities. */
export interface PairView {
  id: string;
  source: number;
  destination: number;
  forwarded: number;
  dropped: number;
  lastVerdict: 'FORWARDED' | 'DROPPED';
  lastDropReason: string;
  flows: Flow[];
  /** Auth entries that hold this pair (on either end's node). */
  auth: Array<AuthEntryJson & { node: string }>;
}

export type EdgeState = 'authenticated' | 'auth-missing' | 'dropped' | 'forwarded';

export function edgeState(p: PairView): EdgeState {
  if (p.lastVerdict === 'DROPPED') return p.lastDropReason === 'AUTH_REQUIRED' ? 'auth-missing' : 'dropped';
  return p.auth.length ? 'authenticated' : 'forwarded';
}

export function edgeLabel(p: PairView): string {
  switch (edgeState(p)) {
    case 'authenticated': return 'authenticated';
    case 'auth-missing': return 'dropped: auth required';
    case 'dropped': return `dropped: ${p.lastDropReason.toLowerCase().replace(/_/g, ' ')}`;
    default: return 'forwarded';
  }
}

const MAX_FLOWS_PER_PAIR = 20;

export class IdentityMap {
  readonly #pairs = new Map<string, PairView>();
  readonly #identities = new Map<number, IdentityJson>();
  #auth: ClusterAuthJson = { nodes: [], unavailable: [] };
  #cy: Core | undefined;
  readonly #abort = new AbortController();
  #authTimer: number | undefined;
  #table: HTMLTableSectionElement | undefined;

  async mount(root: HTMLElement): Promise<void> {
    const legend = el('div', { class: 'legend' },
      el('span', { class: 'ok' }, '━ authenticated'), el('span', {}, '━ forwarded'),
      el('span', { class: 'bad' }, '┅ dropped: auth required'), el('span', { class: 'warn' }, '━ dropped'));
    const container = el('div', { id: 'cy' });
    this.#table = el('tbody');
    root.replaceChildren(el('div', { class: 'toolbar' }, legend), container,
      el('h3', {}, 'Pairs'), el('table', { id: 'pairs' }, el('thead', {}, el('tr', {}, el('th', {}, 'from'), el('th', {}, 'to'), el('th', {}, 'state'), el('th', {}, 'forwarded'), el('th', {}, 'dropped'))), this.#table));
    const identities = await getJson<{ identities: IdentityJson[] }>('/v1/identities');
    for (const i of identities.identities) this.#identities.set(i.id, i);
    this.#cy = cytoscape({
      // a few identities fill the view at a readable size, not at the zoom that would fit them edge to edge
      container, wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 1.2,
      style: [
        { selector: 'node[kind = "namespace"]', style: { label: 'data(label)', 'text-valign': 'top', 'background-color': '#eef2fb', 'border-color': '#c5cde0', 'border-width': 1, color: '#5b6475', 'font-size': 12 } },
        { selector: 'node[kind = "identity"]', style: { label: 'data(label)', 'text-wrap': 'wrap', 'text-max-width': '220px', 'text-valign': 'bottom', 'text-margin-y': 4, 'font-size': 11, 'background-color': '#3b5bdb', width: 28, height: 28 } },
        { selector: 'edge', style: { width: 2.5, 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', label: 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate', 'text-background-color': '#fff', 'text-background-opacity': 0.9, 'line-color': '#8a94a6', 'target-arrow-color': '#8a94a6' } },
        { selector: 'edge[state = "authenticated"]', style: { 'line-color': '#1f8a4c', 'target-arrow-color': '#1f8a4c', width: 3.5 } },
        { selector: 'edge[state = "auth-missing"]', style: { 'line-color': '#c62d2d', 'target-arrow-color': '#c62d2d', 'line-style': 'dashed' } },
        { selector: 'edge[state = "dropped"]', style: { 'line-color': '#b8741a', 'target-arrow-color': '#b8741a' } },
        { selector: ':selected', style: { 'overlay-color': '#3b5bdb', 'overlay-opacity': 0.15 } },
      ],
    });
    this.#cy.on('tap', 'edge', (evt) => { void this.open(String((evt.target as EdgeSingular).id())); });
    // the tests reach the map through this (where an edge is drawn, what each pair holds)
    (window as unknown as { meshidMap: IdentityMap }).meshidMap = this;
    await this.#refreshAuth();
    this.#authTimer = window.setInterval(() => { void this.#refreshAuth(); }, 5000);
    void streamLines('/v1/flows', { follow: 'true', last: 5000 }, (line) => this.#onLine(line), this.#abort.signal).catch((err: Error) => status(err.message));
  }

  unmount(): void {
    this.#abort.abort();
    if (this.#authTimer !== undefined) clearInterval(this.#authTimer);
    this.#cy?.destroy();
  }

  /** The pairs as drawn, for the table and the tests. */
  pairs(): PairView[] { return [...this.#pairs.values()]; }

  /** Where an edge is drawn, in page coordinates (the tests click there). */
  edgePoint(id: string): { x: number; y: number } | undefined {
    const e = this.#cy?.getElementById(id);
    if (!e || e.empty()) return undefined;
    const p = (e as EdgeSingular).renderedMidpoint();
    const box = this.#cy!.container()!.getBoundingClientRect();
    return { x: box.left + p.x, y: box.top + p.y };
  }

  #name(identity: number): string {
    const i = this.#identities.get(identity);
    return i ? `${i.namespace}/${i.service_account}` : identity === 0 ? 'world (unknown address)' : `identity ${identity}`;
  }

  #onLine(line: string): void {
    const r = JSON.parse(line) as FlowResponse | { node_status: { message: string } };
    if ('node_status' in r) { status(r.node_status.message); return; }
    const f = r.flow;
    const id = `${f.source.identity}->${f.destination.identity}`;
    let p = this.#pairs.get(id);
    if (!p) {
      p = { id, source: f.source.identity, destination: f.destination.identity, forwarded: 0, dropped: 0, lastVerdict: f.verdict, lastDropReason: '', flows: [], auth: [] };
      this.#pairs.set(id, p);
    }
    if (f.verdict === 'DROPPED') p.dropped++; else p.forwarded++;
    p.lastVerdict = f.verdict;
    p.lastDropReason = f.drop_reason_desc ?? '';
    p.flows.push(f);
    if (p.flows.length > MAX_FLOWS_PER_PAIR) p.flows.shift();
    for (const side of [f.source, f.destination]) {
      if (!this.#identities.has(side.identity) && side.identity !== 0 && side.namespace) {
        this.#identities.set(side.identity, { id: side.identity, namespace: side.namespace, service_account: side.pod_name ?? String(side.identity), spiffe_id: side.spiffe_id ?? '', labels: {} });
      }
    }
    this.#scheduleDraw();
  }

  async #refreshAuth(): Promise<void> {
    try {
      this.#auth = await getJson<ClusterAuthJson>('/v1/auth');
      status(this.#auth.unavailable.length ? `unavailable: ${this.#auth.unavailable.join(', ')}` : `${this.#auth.nodes.length} nodes relaying`);
    } catch (err) {
      status((err as Error).message);
    }
    this.#scheduleDraw();
  }

  #drawPending = false;
  #scheduleDraw(): void {
    if (this.#drawPending) return;
    this.#drawPending = true;
    setTimeout(() => { this.#drawPending = false; this.#draw(); }, 150);
  }

  #draw(): void {
    const cy = this.#cy;
    if (!cy) return;
    for (const p of this.#pairs.values()) {
      p.auth = this.#auth.nodes.flatMap((n) => n.entries
        .filter((e) => (e.local_identity === p.destination && e.remote_identity === p.source) || (e.local_identity === p.source && e.remote_identity === p.destination))
        .map((e) => ({ ...e, node: n.node })));
    }
    let added = false;
    const ensureIdentity = (identity: number): void => {
      const nodeId = `id-${identity}`;
      if (!cy.getElementById(nodeId).empty()) return;
      const i = this.#identities.get(identity);
      const ns = i?.namespace ?? 'outside the mesh';
      if (cy.getElementById(`ns-${ns}`).empty()) cy.add({ group: 'nodes', data: { id: `ns-${ns}`, kind: 'namespace', label: ns } });
      cy.add({ group: 'nodes', data: { id: nodeId, parent: `ns-${ns}`, kind: 'identity', label: i ? `${i.service_account}\n${i.spiffe_id}` : this.#name(identity) } });
      added = true;
    };
    for (const p of this.#pairs.values()) {
      ensureIdentity(p.source);
      ensureIdentity(p.destination);
      const data = { id: p.id, source: `id-${p.source}`, target: `id-${p.destination}`, state: edgeState(p), label: edgeLabel(p) };
      const e = cy.getElementById(p.id);
      if (e.empty()) { cy.add({ group: 'edges', data }); added = true; } else e.data(data);
    }
    if (added) {
      // who talks to whom reads top down: sources above the identities they reach
      cy.layout({ name: 'breadthfirst', directed: true, animate: false, padding: 40, spacingFactor: 1.6, avoidOverlap: true } as cytoscape.LayoutOptions).run();
      cy.fit(undefined, 50);
    }
    this.#table!.replaceChildren(...[...this.#pairs.values()].map((p) => {
      const row = el('tr', { class: 'clickable', 'data-pair': p.id, 'data-state': edgeState(p) },
        el('td', {}, this.#name(p.source)), el('td', {}, this.#name(p.destination)),
        el('td', { class: edgeState(p) === 'authenticated' ? 'ok' : edgeState(p) === 'forwarded' ? '' : 'bad' }, edgeLabel(p)),
        el('td', {}, String(p.forwarded)), el('td', {}, String(p.dropped)));
      row.addEventListener('click', () => { void this.open(p.id); });
      return row;
    }));
  }

  /** The side panel of one pair: its state, its auth entries, the explanation of its last flow, its last flows. */
  async open(id: string): Promise<void> {
    const p = this.#pairs.get(id);
    if (!p) return;
    this.#cy?.elements().unselect();
    this.#cy?.getElementById(id).select();
    const last = p.flows[p.flows.length - 1]!;
    const port = (last.l4.TCP ?? last.l4.UDP ?? last.l4.SCTP)?.destination_port ?? 0;
    const proto = last.l4.UDP ? 'UDP' : last.l4.SCTP ? 'SCTP' : 'TCP';
    const end = (ep: Flow['source'], ip: string): string => (ep.namespace && ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip);
    const explainBox = el('pre', { id: 'explain' }, 'asking the agents…');
    panel(
      el('h3', {}, `${this.#name(p.source)} → ${this.#name(p.destination)}`),
      fields([
        ['state', edgeLabel(p)], ['forwarded', String(p.forwarded)], ['dropped', String(p.dropped)],
        ['authenticated on', p.auth.map((a) => `${a.node} until ${a.expires_at}`).join('; ') || 'no node'],
      ]),
      el('h4', {}, `Explain ${end(last.source, last.IP.source)} → ${end(last.destination, last.IP.destination)}:${port}/${proto}`),
      explainBox,
      el('h4', {}, 'Last flows'),
      el('pre', {}, p.flows.slice().reverse().map((f) => compactFlow(f)).join('\n')),
    );
    // the panel took room from the map: fit it to what is left
    this.#cy?.resize();
    this.#cy?.fit(undefined, 50);
    try {
      const answer = await getJson<{ text: string; unavailable: string[] }>('/v1/explain', {
        from: end(last.source, last.IP.source), to: end(last.destination, last.IP.destination), port, protocol: proto,
      });
      explainBox.textContent = answer.text + (answer.unavailable.length ? `\n(not asked, unavailable: ${answer.unavailable.join(', ')})` : '');
    } catch (err) {
      explainBox.textContent = `no explanation: ${(err as Error).message}`;
    }
  }
}
