/**
 * Entries, agents, policies and identities: searchable, paginated lists, a
 * row opening its detail (an agent's SVID expiry and relay state, an entry's
 * selectors and SVID TTLs).
 */
import { el, fields, getJson, panel } from './api.js';

type Row = Record<string, unknown>;

export interface ListSpec {
  title: string;
  load(): Promise<Row[]>;
  columns: Array<[string, (r: Row) => string]>;
  detail(r: Row): Array<[string, string]>;
}

const PAGE = 25;
const ttl = (s: unknown): string => (Number(s) ? `${Number(s)}s` : 'default');
const time = (s: unknown): string => (Number(s) ? new Date(Number(s) * 1000).toISOString() : 'never');

/** Every page of a paginated list route. */
async function all(path: string, key: string): Promise<Row[]> {
  const rows: Row[] = [];
  let token: string | undefined;
  do {
    const page = await getJson<Record<string, unknown>>(path, { page_token: token });
    rows.push(...(page[key] as Row[]));
    token = (page['next_page_token'] as string | undefined) || undefined;
  } while (token);
  return rows;
}

export const LISTS: Record<string, ListSpec> = {
  entries: {
    title: 'Registration entries',
    load: () => all('/v1/entries', 'entries'),
    columns: [['SPIFFE ID', (r) => String(r['spiffe_id'])], ['parent', (r) => String(r['parent_id'])], ['selectors', (r) => (r['selectors'] as string[]).join(' ')]],
    detail: (r) => [['id', String(r['id'])], ['SPIFFE ID', String(r['spiffe_id'])], ['parent', String(r['parent_id'])],
      ['selectors', (r['selectors'] as string[]).join('\n')], ['X509-SVID TTL', ttl(r['x509_svid_ttl'])], ['JWT-SVID TTL', ttl(r['jwt_svid_ttl'])],
      ['DNS names', (r['dns_names'] as string[]).join(', ') || '—'], ['expires', time(r['expires_at'])], ['revision', String(r['revision'])]],
  },
  agents: {
    title: 'Agents',
    load: async () => {
      const [agents, relay] = await Promise.all([all('/v1/agents', 'agents'), getJson<{ nodes: Row[] }>('/v1/relay/nodes').catch(() => ({ nodes: [] }))]);
      return agents.map((a) => ({ ...a, relay: relay.nodes.find((n) => n['agent_id'] === a['spiffe_id']) ?? null }));
    },
    columns: [['SPIFFE ID', (r) => String(r['spiffe_id'])], ['attestation', (r) => String(r['attestation_type'])],
      ['SVID expires', (r) => time(r['x509_svid_expires_at'])], ['relay', (r) => String((r['relay'] as Row | null)?.['state'] ?? '—')]],
    detail: (r) => {
      const relay = r['relay'] as Row | null;
      return [['SPIFFE ID', String(r['spiffe_id'])], ['attestation', String(r['attestation_type'])], ['banned', String(r['banned'])],
        ['SVID serial', String(r['x509_svid_serial_number'])], ['SVID expires', time(r['x509_svid_expires_at'])],
        ['node', String(relay?.['node'] ?? '—')], ['relay', relay ? `${String(relay['state'])} since ${String(relay['since'])}` : 'never connected'],
        ['last heard of', String(relay?.['last_seen'] ?? '—')], ['flows relayed', String(relay?.['flows_received'] ?? 0)], ['flows lost', String(relay?.['flows_lost'] ?? 0)],
        ['selectors', (r['selectors'] as string[]).join('\n')]];
    },
  },
  policies: {
    title: 'Policies',
    load: async () => (await getJson<{ policies: Row[] }>('/v1/policies')).policies,
    columns: [['name', (r) => `${r['namespace'] ? `${String(r['namespace'])}/` : ''}${String(r['name'])}`], ['kind', (r) => String(r['kind'])]],
    detail: (r) => [['name', String(r['name'])], ['namespace', String(r['namespace'] || '(cluster-wide)')], ['kind', String(r['kind'])], ['spec', JSON.stringify(r['spec'], null, 2)]],
  },
  identities: {
    title: 'Security identities',
    load: async () => (await getJson<{ identities: Row[] }>('/v1/identities')).identities,
    columns: [['id', (r) => String(r['id'])], ['ServiceAccount', (r) => `${String(r['namespace'])}/${String(r['service_account'])}`], ['SPIFFE ID', (r) => String(r['spiffe_id'])]],
    detail: (r) => [['id', String(r['id'])], ['SPIFFE ID', String(r['spiffe_id'])], ['labels', Object.entries(r['labels'] as Record<string, string>).map(([k, v]) => `${k}=${v}`).join('\n')]],
  },
};

export async function showList(root: HTMLElement, spec: ListSpec): Promise<void> {
  const rows = await spec.load();
  const search = el('input', { type: 'search', placeholder: 'search', id: 'search' });
  const body = el('tbody');
  const pager = el('div', { class: 'pager' });
  let page = 0;
  const render = (): void => {
    const needle = search.value.toLowerCase();
    const shown = rows.filter((r) => !needle || JSON.stringify(r).toLowerCase().includes(needle));
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    body.replaceChildren(...shown.slice(page * PAGE, (page + 1) * PAGE).map((r) => {
      const tr = el('tr', { class: 'clickable' }, ...spec.columns.map(([, f]) => el('td', {}, f(r))));
      tr.addEventListener('click', () => panel(el('h3', {}, spec.title), fields(spec.detail(r))));
      return tr;
    }));
    const prev = el('button', {}, '‹ previous');
    const next = el('button', {}, 'next ›');
    prev.addEventListener('click', () => { page = Math.max(0, page - 1); render(); });
    next.addEventListener('click', () => { page++; render(); });
    pager.replaceChildren(prev, `page ${page + 1} of ${pages} (${shown.length} of ${rows.length})`, next);
  };
  search.addEventListener('input', () => { page = 0; render(); });
  root.replaceChildren(el('h2', {}, spec.title), el('div', { class: 'toolbar' }, search), el('table', { id: 'list' },
    el('thead', {}, el('tr', {}, ...spec.columns.map(([h]) => el('th', {}, h)))), body), pager);
  render();
}
