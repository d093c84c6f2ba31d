/** The live flow table, with the CLI's filters (they become /v1/flows's query). */
import { compactFlow, type FlowResponse } from '../api/flow.js';
import { el, status, streamLines } from './api.js';

const FILTERS: Array<[string, string]> = [['verdict', 'verdict'], ['namespace', 'namespace'], ['pod', 'pod'], ['from_pod', 'from pod'], ['to_pod', 'to pod'], ['node', 'node'], ['port', 'port'], ['identity', 'identity']];
const MAX_ROWS = 500;

export class FlowTable {
  #abort = new AbortController();
  #body = el('tbody');

  mount(root: HTMLElement): void {
    const form = el('form', { class: 'toolbar' });
    const inputs = new Map<string, HTMLInputElement | HTMLSelectElement>();
    for (const [name, label] of FILTERS) {
      const input = name === 'verdict'
        ? el('select', { name }, el('option', { value: '' }, 'any verdict'), el('option', { value: 'DROPPED' }, 'DROPPED'), el('option', { value: 'FORWARDED' }, 'FORWARDED'))
        : el('input', { name, placeholder: label, size: '12' });
      inputs.set(name, input);
      form.append(input);
    }
    form.append(el('button', { type: 'submit' }, 'Apply'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const q: Record<string, string> = {};
      for (const [name, input] of inputs) if (input.value) q[name] = input.value;
      this.#follow(q);
    });
    root.replaceChildren(form, el('table', { id: 'flows' },
      el('thead', {}, el('tr', {}, ...['time', 'node', 'source', 'destination', 'verdict', 'why'].map((h) => el('th', {}, h)))), this.#body));
    this.#follow({});
  }

  unmount(): void { this.#abort.abort(); }

  #follow(filter: Record<string, string>): void {
    this.#abort.abort();
    this.#abort = new AbortController();
    this.#body.replaceChildren();
    void streamLines('/v1/flows', { ...filter, follow: 'true', last: 100 }, (line) => {
      const r = JSON.parse(line) as FlowResponse | { node_status: { message: string } };
      if ('node_status' in r) { status(r.node_status.message); return; }
      const f = r.flow;
      const side = (ep: typeof f.source, ip: string): string => (ep.namespace && ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip);
      const ports = f.l4.TCP ?? f.l4.UDP ?? f.l4.SCTP;
      const why = compactFlow(f).replace(/^.*? (ingress|egress) /, '');
      this.#body.prepend(el('tr', {},
        el('td', {}, f.time.slice(11, 23)), el('td', {}, f.node_name),
        el('td', {}, `${side(f.source, f.IP.source)}${ports ? `:${ports.source_port}` : ''}`),
        el('td', {}, `${side(f.destination, f.IP.destination)}${ports ? `:${ports.destination_port}` : ''}`),
        el('td', { class: `verdict-${f.verdict}` }, f.verdict), el('td', {}, why)));
      while (this.#body.rows.length > MAX_ROWS) this.#body.deleteRow(-1);
    }, this.#abort.signal).catch((err: Error) => status(err.message));
  }
}
