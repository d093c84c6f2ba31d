/** Registration entries: SPIRE's entry API as REST. Validation is Registration's; this file only maps HTTP to it. */
import { InvalidArgument, MeshidError, ResourceExhausted, SpiffeId, type TrustDomain } from '../../spiffe/index.js';
import { type BatchEntryResult, type ListEntriesInput, entryForServiceAccount, entryToJson } from '../registration/index.js';
import { Query, bodyObject, isObject, renameField } from './input.js';
import { type AdminRequest, type AuditOutcome, type Route, type RouteContext, bodyString } from './route.js';

/** More items than this in one batch is refused (the 1 MiB body limit comes first in practice). */
export const MAX_BATCH = 1000;

const LIST_QUERY = ['spiffe_id', 'parent_id', 'selector', 'match', 'hint', 'page_size', 'page_token'];
const MATCHES = ['exact', 'subset', 'superset', 'any'];
/** Registration's filter names → the query parameters the caller sent; longer names first. */
const LIST_FIELDS = {
  'by_selectors.selectors': 'selector',
  'by_selectors.match': 'match',
  by_spiffe_id: 'spiffe_id',
  by_parent_id: 'parent_id',
  by_hint: 'hint',
};

/**
 * The ServiceAccount shorthand `{"k8s_sa": "NAMESPACE/NAME", "parent_id": …}`: it stands
 * for spiffe://<td>/ns/NAMESPACE/sa/NAME with the selectors k8s:ns:NAMESPACE and
 * k8s:sa:NAME. Other entry fields pass through. Anything else is returned as is.
 */
export function expandServiceAccount(input: unknown, td: TrustDomain): unknown {
  if (!isObject(input) || input.k8s_sa === undefined) return input;
  const { k8s_sa: sa, ...rest } = input;
  if (rest.spiffe_id !== undefined || rest.selectors !== undefined) {
    throw new InvalidArgument('k8s_sa stands for spiffe_id and selectors; give either k8s_sa or those two', 'k8s_sa');
  }
  const parts = typeof sa === 'string' ? sa.split('/') : [];
  if (parts.length !== 2) throw new InvalidArgument('k8s_sa must be "NAMESPACE/NAME"', 'k8s_sa');
  if (rest.parent_id === undefined || rest.parent_id === null) throw new InvalidArgument('parent_id is required', 'parent_id');
  if (typeof rest.parent_id !== 'string') throw new InvalidArgument('parent_id must be a string', 'parent_id');
  const parent = SpiffeId.parse(rest.parent_id, 'parent_id');
  try {
    const spec = entryForServiceAccount(td, parts[0]!, parts[1]!, parent);
    return { ...rest, spiffe_id: spec.spiffeId.toString(), selectors: spec.selectors.toStrings() };
  } catch (err) {
    throw renameField(err, { namespace: 'k8s_sa', name: 'k8s_sa' });
  }
}

function statusOf(err: unknown): BatchEntryResult['status'] {
  const e = err instanceof MeshidError ? err : new MeshidError('internal', 'internal error');
  return e.field === undefined ? { code: e.code, message: e.message } : { code: e.code, message: e.message, field: e.field };
}

function batchItems(body: unknown, key: 'entries' | 'ids'): unknown[] {
  const o = bodyObject(body, [key]);
  const items = o[key];
  if (!Array.isArray(items)) throw new InvalidArgument(`${key} must be an array`, key);
  if (items.length === 0) throw new InvalidArgument(`${key} is empty`, key);
  if (items.length > MAX_BATCH) throw new ResourceExhausted(`${items.length} items in one batch; the limit is ${MAX_BATCH}`, key);
  return items;
}

/** The audit target of one batch item: the entry id when there is one, else the SPIFFE ID asked for. */
function itemTarget(result: BatchEntryResult, input: unknown): string {
  if (result.entry) return result.entry.id;
  if (result.id) return result.id;
  if (isObject(input)) {
    for (const key of ['id', 'spiffe_id', 'k8s_sa']) if (typeof input[key] === 'string') return input[key] as string;
  }
  return '';
}

function outcome(result: BatchEntryResult, input: unknown): AuditOutcome {
  const target = itemTarget(result, input);
  return result.status.code === 'ok' ? { target } : { target, error: result.status.message };
}

function listFilter(req: AdminRequest): ListEntriesInput {
  const q = new Query(req.query, LIST_QUERY);
  const filter: ListEntriesInput = {};
  const spiffeId = q.one('spiffe_id');
  const parentId = q.one('parent_id');
  const hint = q.one('hint');
  const match = q.one('match');
  const selectors = q.many('selector');
  const pageSize = q.one('page_size');
  const pageToken = q.one('page_token');
  if (spiffeId !== undefined) filter.by_spiffe_id = spiffeId;
  if (parentId !== undefined) filter.by_parent_id = parentId;
  if (hint !== undefined) filter.by_hint = hint;
  if (match !== undefined && !MATCHES.includes(match)) throw new InvalidArgument('match must be exact, subset, superset or any', 'match');
  if (match !== undefined && selectors.length === 0) throw new InvalidArgument('match needs at least one selector parameter', 'match');
  if (selectors.length > 0) filter.by_selectors = { selectors, match: (match ?? 'exact') as 'exact' };
  if (pageSize !== undefined) filter.page_size = pageSize;
  if (pageToken !== undefined) filter.page_token = pageToken;
  return filter;
}

export function entryRoutes(ctx: RouteContext): Route[] {
  const { registration, trustDomain } = ctx;
  return [
    {
      method: 'post', path: '/v1/entries', action: 'entry.create',
      target: (req) => bodyString(req, 'spiffe_id') || bodyString(req, 'k8s_sa'),
      async handle(req) {
        const entry = await registration.createEntry(expandServiceAccount(req.body, trustDomain));
        return { status: 201, json: entryToJson(entry), audit: [{ target: entry.id }] };
      },
    },
    {
      method: 'post', path: '/v1/entries:batchCreate', action: 'entry.create',
      async handle(req) {
        const inputs = batchItems(req.body, 'entries');
        const results: BatchEntryResult[] = new Array(inputs.length);
        const expanded: { index: number; input: unknown }[] = [];
        inputs.forEach((input, index) => {
          try {
            expanded.push({ index, input: expandServiceAccount(input, trustDomain) });
          } catch (err) {
            results[index] = { status: statusOf(err) };
          }
        });
        (await registration.batchCreateEntries(expanded.map((e) => e.input))).forEach((r, i) => { results[expanded[i]!.index] = r; });
        return { json: { results }, audit: results.map((r, i) => outcome(r, inputs[i])) };
      },
    },
    {
      method: 'post', path: '/v1/entries:batchDelete', action: 'entry.delete',
      async handle(req) {
        const ids = batchItems(req.body, 'ids');
        const results = await registration.batchDeleteEntries(ids);
        return { json: { results }, audit: results.map((r, i) => outcome(r, ids[i])) };
      },
    },
    {
      method: 'get', path: '/v1/entries',
      async handle(req) {
        let page;
        try {
          page = await registration.listEntries(listFilter(req));
        } catch (err) {
          throw renameField(err, LIST_FIELDS);
        }
        return { json: { entries: page.items.map(entryToJson), next_page_token: page.nextPageToken } };
      },
    },
    {
      method: 'get', path: '/v1/entries/{id}',
      handle: async (req) => ({ json: entryToJson(await registration.getEntry(req.params.id)) }),
    },
    {
      method: 'patch', path: '/v1/entries/{id}', action: 'entry.update', target: (req) => req.params.id ?? '',
      async handle(req) {
        const entry = await registration.updateEntry(req.params.id, req.body ?? {});
        return { json: entryToJson(entry), audit: [{ target: entry.id }] };
      },
    },
    {
      method: 'delete', path: '/v1/entries/{id}', action: 'entry.delete', target: (req) => req.params.id ?? '',
      async handle(req) {
        const entry = await registration.deleteEntry(req.params.id);
        return { json: entryToJson(entry), audit: [{ target: entry.id }] };
      },
    },
  ];
}
