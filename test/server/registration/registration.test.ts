import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Datastore } from '../../../server/datastore/index.js';
import {
  DEFAULT_LIMITS, type EntryInput, Registration, entryForServiceAccount, entryToJson,
} from '../../../server/registration/index.js';
import { agentId, MeshidError, serverId, TrustDomain } from '../../../spiffe/index.js';

const td = TrustDomain.parse('example.org');
const NOW_MS = Date.UTC(2030, 0, 1);
const NOW = NOW_MS / 1000;

async function setup(t: { teardown(fn: () => void): void }, limits?: { maxX509SvidTtl?: number; maxJwtSvidTtl?: number }): Promise<{ reg: Registration; ds: Datastore }> {
  const dir = mkdtempSync(join(tmpdir(), `meshid-reg-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ds = await Datastore.open({ path: join(dir, 'meshid.db'), trustDomain: td, now: () => NOW_MS });
  t.teardown(() => ds.close());
  return { reg: new Registration({ datastore: ds, trustDomain: td, now: () => NOW_MS, ...(limits ? { limits } : {}) }), ds };
}

const valid: EntryInput = {
  spiffe_id: 'spiffe://example.org/ns/default/sa/web',
  parent_id: 'spiffe://example.org/meshid/agent/join_token/node-1',
  selectors: ['k8s:ns:default', 'k8s:sa:web'],
};

async function failure(fn: () => unknown): Promise<{ code: string; field: string | undefined; message: string }> {
  try { await fn(); } catch (err) {
    if (err instanceof MeshidError) return { code: err.code, field: err.field, message: err.message };
    throw err;
  }
  throw new Error('expected a validation error');
}

t.test('a valid entry with every field is created and rendered back with snake_case fields', async (t) => {
  const { reg } = await setup(t);
  const input: EntryInput = {
    ...valid, x509_svid_ttl: 3600, jwt_svid_ttl: 300, dns_names: ['web.default.svc', '*.web.example.org'], hint: 'web',
    admin: true, downstream: false, federates_with: ['partner.example'], expires_at: NOW + 3600, id: 'web-entry',
  };
  const entry = await reg.createEntry(input);
  const json = entryToJson(entry);
  t.same(json, {
    id: 'web-entry', spiffe_id: valid.spiffe_id, parent_id: valid.parent_id, selectors: ['k8s:ns:default', 'k8s:sa:web'],
    x509_svid_ttl: 3600, jwt_svid_ttl: 300, dns_names: ['web.default.svc', '*.web.example.org'], hint: 'web', admin: true,
    downstream: false, federates_with: ['partner.example'], expires_at: NOW + 3600, created_at: NOW, revision: 1,
  });
  t.same(JSON.parse(JSON.stringify(json)), json, 'plain JSON');
  const minimal = entryToJson(await reg.createEntry({ ...valid, parent_id: serverId(td).toString() }));
  t.same([minimal.x509_svid_ttl, minimal.jwt_svid_ttl, minimal.dns_names, minimal.hint, minimal.admin, minimal.federates_with, minimal.expires_at],
    [0, 0, [], '', false, [], 0], 'absent optional fields take their zero values');
});

t.test('parents may be the server ID, an agent ID or any ID in the trust domain', async (t) => {
  const { reg } = await setup(t);
  for (const parent of [serverId(td), agentId(td, 'k8s_psat', 'c1', 'n1'), td.child('cluster', 'prod')]) {
    t.ok((await reg.createEntry({ ...valid, parent_id: parent.toString() })).parentId.equals(parent), parent.toString());
  }
});

// One failing case per rule: [rule, input, expected field, expected code]
const failing: [string, unknown, string | undefined, string][] = [
  ['input must be an object', ['not', 'an', 'object'], undefined, 'invalid_argument'],
  ['unknown fields are refused', { ...valid, spiffeId: 'x' }, 'spiffeId', 'invalid_argument'],
  ['spiffe_id is required', { ...valid, spiffe_id: undefined }, 'spiffe_id', 'invalid_argument'],
  ['spiffe_id must be a string', { ...valid, spiffe_id: 42 }, 'spiffe_id', 'invalid_argument'],
  ['spiffe_id must parse', { ...valid, spiffe_id: 'http://example.org/web' }, 'spiffe_id', 'invalid_spiffe_id'],
  ['spiffe_id must be in the trust domain', { ...valid, spiffe_id: 'spiffe://other.org/web' }, 'spiffe_id', 'invalid_spiffe_id'],
  ['spiffe_id must have a path', { ...valid, spiffe_id: 'spiffe://example.org' }, 'spiffe_id', 'invalid_spiffe_id'],
  ['spiffe_id may not be under /meshid/', { ...valid, spiffe_id: 'spiffe://example.org/meshid/agent/x/y' }, 'spiffe_id', 'invalid_spiffe_id'],
  ['parent_id is required', { ...valid, parent_id: undefined }, 'parent_id', 'invalid_argument'],
  ['parent_id must parse', { ...valid, parent_id: 'spiffe://example.org/a//b' }, 'parent_id', 'invalid_spiffe_id'],
  ['parent_id must be in the trust domain', { ...valid, parent_id: 'spiffe://other.org/meshid/server' }, 'parent_id', 'invalid_spiffe_id'],
  ['parent_id may not equal spiffe_id', { ...valid, parent_id: valid.spiffe_id }, 'parent_id', 'invalid_spiffe_id'],
  ['selectors are required', { ...valid, selectors: undefined }, 'selectors', 'invalid_argument'],
  ['selectors must be an array', { ...valid, selectors: 'k8s:ns:default' }, 'selectors', 'invalid_argument'],
  ['at least one selector', { ...valid, selectors: [] }, 'selectors', 'invalid_argument'],
  ['each selector is a string', { ...valid, selectors: ['k8s:ns:a', 7] }, 'selectors[1]', 'invalid_argument'],
  ['each selector is type:value', { ...valid, selectors: ['k8s:ns:a', 'no-colon'] }, 'selectors[1]', 'invalid_selector'],
  ['selector value not empty', { ...valid, selectors: ['k8s:'] }, 'selectors[0]', 'invalid_selector'],
  ['x509_svid_ttl is a number', { ...valid, x509_svid_ttl: '3600' }, 'x509_svid_ttl', 'invalid_argument'],
  ['x509_svid_ttl is whole', { ...valid, x509_svid_ttl: 1.5 }, 'x509_svid_ttl', 'invalid_argument'],
  ['x509_svid_ttl not negative', { ...valid, x509_svid_ttl: -1 }, 'x509_svid_ttl', 'invalid_argument'],
  ['x509_svid_ttl at most the max', { ...valid, x509_svid_ttl: DEFAULT_LIMITS.maxX509SvidTtl + 1 }, 'x509_svid_ttl', 'invalid_argument'],
  ['jwt_svid_ttl at most the max', { ...valid, jwt_svid_ttl: DEFAULT_LIMITS.maxJwtSvidTtl + 1 }, 'jwt_svid_ttl', 'invalid_argument'],
  ['dns_names is an array', { ...valid, dns_names: 'web' }, 'dns_names', 'invalid_argument'],
  ['dns_names are host names', { ...valid, dns_names: ['ok.example', 'under_score.example'] }, 'dns_names[1]', 'invalid_argument'],
  ['dns_names labels at most 63', { ...valid, dns_names: [`${'a'.repeat(64)}.example`] }, 'dns_names[0]', 'invalid_argument'],
  ['dns_names at most 253 long', { ...valid, dns_names: [Array(64).fill('abc').join('.')] }, 'dns_names[0]', 'invalid_argument'],
  ['dns_names no empty label', { ...valid, dns_names: ['a..b'] }, 'dns_names[0]', 'invalid_argument'],
  ['dns_names no leading hyphen', { ...valid, dns_names: ['-a.b'] }, 'dns_names[0]', 'invalid_argument'],
  ['dns_names wildcard only first', { ...valid, dns_names: ['a.*.b'] }, 'dns_names[0]', 'invalid_argument'],
  ['dns_names no duplicates', { ...valid, dns_names: ['Web.example', 'web.example'] }, 'dns_names[1]', 'invalid_argument'],
  ['hint is a string', { ...valid, hint: 5 }, 'hint', 'invalid_argument'],
  ['hint at most 1024', { ...valid, hint: 'h'.repeat(1025) }, 'hint', 'invalid_argument'],
  ['admin is a boolean', { ...valid, admin: 'yes' }, 'admin', 'invalid_argument'],
  ['downstream is a boolean', { ...valid, downstream: 1 }, 'downstream', 'invalid_argument'],
  ['federates_with are trust domains', { ...valid, federates_with: ['ok.example', 'Bad.Example'] }, 'federates_with[1]', 'invalid_trust_domain'],
  ['federates_with not the own trust domain', { ...valid, federates_with: ['example.org'] }, 'federates_with[0]', 'invalid_trust_domain'],
  ['expires_at is whole', { ...valid, expires_at: NOW + 0.5 }, 'expires_at', 'invalid_argument'],
  ['expires_at not in the past', { ...valid, expires_at: NOW - 1 }, 'expires_at', 'invalid_argument'],
  ['id is path-safe', { ...valid, id: 'a/b' }, 'id', 'invalid_argument'],
  ['id at most 255', { ...valid, id: 'x'.repeat(256) }, 'id', 'invalid_argument'],
];

t.test('each validation rule refuses its bad input, naming the JSON field', async (t) => {
  const { reg, ds } = await setup(t);
  for (const [rule, input, field, code] of failing) {
    const got = await failure(() => reg.createEntry(input));
    t.same({ field: got.field, code: got.code }, { field, code }, `${rule}: ${got.message}`);
  }
  t.equal((await ds.listEntries()).items.length, 0, 'nothing was written');
});

t.test('TTL limits are configurable and 0 always means the server default', async (t) => {
  const { reg } = await setup(t, { maxX509SvidTtl: 600 });
  t.equal(reg.limits.maxX509SvidTtl, 600);
  t.equal(reg.limits.maxJwtSvidTtl, DEFAULT_LIMITS.maxJwtSvidTtl);
  t.equal((await failure(() => reg.parseEntry({ ...valid, x509_svid_ttl: 601 }))).field, 'x509_svid_ttl');
  t.equal(reg.parseEntry({ ...valid, x509_svid_ttl: 600 }).x509SvidTtl, 600);
  t.equal(reg.parseEntry({ ...valid, x509_svid_ttl: 0 }).x509SvidTtl, 0);
  t.equal(reg.parseEntry({ ...valid, x509_svid_ttl: 1 }).x509SvidTtl, 1);
  t.equal((await failure(() => new Registration({ datastore: {} as Datastore, trustDomain: td, limits: { maxJwtSvidTtl: 0 } }))).field, 'maxJwtSvidTtl');
});

t.test('a duplicate entry is AlreadyExists', async (t) => {
  const { reg } = await setup(t);
  await reg.createEntry(valid);
  t.same((await failure(() => reg.createEntry({ ...valid, selectors: ['k8s:sa:web', 'k8s:ns:default'] }))).code, 'already_exists');
});

t.test('update checks only the fields it is given and keeps the rest', async (t) => {
  const { reg } = await setup(t);
  const e = await reg.createEntry({ ...valid, hint: 'a', dns_names: ['web'] });
  const u = await reg.updateEntry(e.id, { hint: 'b', x509_svid_ttl: 60 });
  t.same([u.hint, u.x509SvidTtl, u.dnsNames], ['b', 60, ['web']]);
  t.equal((await failure(() => reg.updateEntry(e.id, { selectors: [] }))).field, 'selectors');
  t.equal((await failure(() => reg.updateEntry(e.id, { parent_id: valid.spiffe_id }))).field, 'parent_id', 'merged spiffe_id == parent_id refused');
  t.equal((await failure(() => reg.updateEntry(e.id, { id: 'other' }))).field, 'id');
  t.equal((await failure(() => reg.updateEntry(e.id, { bogus: 1 }))).field, 'bogus');
  t.same((await failure(() => reg.updateEntry('missing', { hint: 'x' }))).code, 'not_found');
  t.equal((await reg.getEntry(e.id)).hint, 'b', 'failed updates changed nothing');
});

t.test('batch create gives each item its own status; valid items are created', async (t) => {
  const { reg, ds } = await setup(t);
  const results = await reg.batchCreateEntries([
    valid,
    { ...valid, selectors: ['bad'] },
    { ...valid, spiffe_id: 'spiffe://example.org/ns/default/sa/db' },
    valid, // duplicate of the first
  ]);
  t.same(results.map((r) => r.status.code), ['ok', 'invalid_selector', 'ok', 'already_exists']);
  t.equal(results[1]!.status.field, 'selectors[0]');
  t.equal(results[0]!.entry?.spiffe_id, valid.spiffe_id);
  t.equal(results[1]!.entry, undefined);
  t.equal((await ds.listEntries()).items.length, 2);
  t.equal((await failure(() => reg.batchCreateEntries({ not: 'an array' }))).field, 'entries');
});

t.test('batch delete gives each id its own status', async (t) => {
  const { reg, ds } = await setup(t);
  const e = await reg.createEntry(valid);
  const results = await reg.batchDeleteEntries([e.id, 'missing', 7, e.id]);
  t.same(results.map((r) => r.status.code), ['ok', 'not_found', 'invalid_argument', 'not_found']);
  t.same(results.map((r) => r.id), [e.id, 'missing', undefined, e.id]);
  t.equal(results[2]!.status.field, 'ids[2]');
  t.equal(results[0]!.entry?.id, e.id);
  t.equal((await ds.listEntries()).items.length, 0);
});

t.test('list filters arrive as JSON and are checked, naming the field', async (t) => {
  const { reg } = await setup(t);
  const a = await reg.createEntry(valid);
  await reg.createEntry({ ...valid, spiffe_id: 'spiffe://example.org/ns/default/sa/db', selectors: ['k8s:ns:default', 'k8s:sa:db'], hint: 'db' });
  t.same((await reg.listEntries({ by_selectors: { selectors: ['k8s:sa:web', 'k8s:ns:default'] } })).items.map((e) => e.id), [a.id], 'match defaults to exact');
  t.equal((await reg.listEntries({ by_selectors: { selectors: ['k8s:ns:default'], match: 'superset' } })).items.length, 2);
  t.equal((await reg.listEntries({ by_hint: 'db' })).items.length, 1);
  t.equal((await reg.listEntries({ by_spiffe_id: valid.spiffe_id, by_parent_id: valid.parent_id })).items.length, 1);
  const page = await reg.listEntries({ page_size: '1' });
  t.equal(page.items.length, 1);
  t.equal((await reg.listEntries({ page_size: 1, page_token: page.nextPageToken })).items.length, 1);
  t.equal((await reg.listEntries(undefined)).items.length, 2);
  t.equal((await failure(() => reg.listEntries({ by_selectors: { selectors: ['x'] } }))).field, 'by_selectors.selectors[0]');
  t.equal((await failure(() => reg.listEntries({ by_selectors: { selectors: [] } }))).field, 'by_selectors.selectors');
  t.equal((await failure(() => reg.listEntries({ by_selectors: { selectors: ['a:b'], match: 'most' } }))).field, 'by_selectors.match');
  t.equal((await failure(() => reg.listEntries({ by_spiffe_id: 'nope' }))).field, 'by_spiffe_id');
  t.equal((await failure(() => reg.listEntries({ page_size: '-1' }))).field, 'page_size');
  t.equal((await failure(() => reg.listEntries({ page_token: 'garbage' }))).field, 'page_token');
  t.equal((await failure(() => reg.listEntries({ bySpiffeId: 'x' }))).field, 'bySpiffeId');
});

t.test('entryForServiceAccount builds spiffe://<td>/ns/NS/sa/NAME with k8s:ns and k8s:sa selectors', async (t) => {
  const { ds } = await setup(t);
  const parent = agentId(td, 'k8s_psat', 'c1', 'node-1');
  const spec = entryForServiceAccount(td, 'payments', 'api.v2', parent);
  t.equal(spec.spiffeId.toString(), 'spiffe://example.org/ns/payments/sa/api.v2');
  t.ok(spec.parentId.equals(parent));
  t.same(spec.selectors.toStrings(), ['k8s:ns:payments', 'k8s:sa:api.v2']);
  t.equal((await ds.createEntry(spec)).spiffeId.toString(), 'spiffe://example.org/ns/payments/sa/api.v2');
  t.equal((await failure(() => entryForServiceAccount(td, 'Payments', 'api', parent))).field, 'namespace');
  t.equal((await failure(() => entryForServiceAccount(td, 'payments', 'api_v2', parent))).field, 'name');
  t.equal((await failure(() => entryForServiceAccount(td, 'payments', 'api', agentId(TrustDomain.parse('other.org'), 'x', 'y')))).field, 'parent_id');
});
