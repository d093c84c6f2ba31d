import t from 'tap';
import { DuplicateEntry, type EntrySpec, type RegistrationEntry } from '../../../server/datastore/index.js';
import { agentId, MeshidError, SelectorSet, serverId, TrustDomain } from '../../../spiffe/index.js';
import { openTemp, td } from './fixtures/tempdb.js';

const agent1 = agentId(td, 'join_token', 'node-1');
const agent2 = agentId(td, 'join_token', 'node-2');
const sel = (...s: string[]): SelectorSet => SelectorSet.parse(s);
const ids = (entries: RegistrationEntry[]): string[] => entries.map((e) => e.id).sort();

function spec(path: string, parent = agent1, selectors = sel('k8s:ns:default', `k8s:sa:${path}`)): EntrySpec {
  return { spiffeId: td.child('ns', 'default', 'sa', path), parentId: parent, selectors };
}

async function codeOf(fn: () => unknown): Promise<{ code: string; field: string | undefined }> {
  try { await fn(); } catch (err) { if (err instanceof MeshidError) return { code: err.code, field: err.field }; throw err; }
  throw new Error('expected an error');
}

t.test('create stores every field and get returns it as value types', async (t) => {
  const { ds, clock } = await openTemp(t, 'crud');
  const partner = TrustDomain.parse('partner.example');
  const created = await ds.createEntry({
    ...spec('web'),
    x509SvidTtl: 3600, jwtSvidTtl: 300, dnsNames: ['web.default.svc', 'web'], hint: 'web-hint', admin: true,
    downstream: true, federatesWith: [partner], expiresAt: clock.seconds() + 86400,
  });
  t.match(created.id, /^[0-9a-f-]{36}$/);
  const got = await ds.getEntry(created.id);
  t.same(got, created);
  t.ok(got.spiffeId.equals(td.child('ns', 'default', 'sa', 'web')));
  t.ok(got.parentId.equals(agent1));
  t.same(got.selectors.toStrings(), ['k8s:ns:default', 'k8s:sa:web']);
  t.equal(got.x509SvidTtl, 3600);
  t.equal(got.jwtSvidTtl, 300);
  t.same(got.dnsNames, ['web.default.svc', 'web'], 'DNS names keep their order');
  t.equal(got.hint, 'web-hint');
  t.equal(got.admin, true);
  t.equal(got.downstream, true);
  t.same(got.federatesWith.map((f) => f.name), ['partner.example']);
  t.equal(got.expiresAt, clock.seconds() + 86400);
  t.equal(got.createdAt, clock.seconds());
  t.equal(got.revision, 1);
});

t.test('an admin-chosen id is kept, and a second entry with that id is AlreadyExists on field id', async (t) => {
  const { ds } = await openTemp(t, 'customid');
  t.equal((await ds.createEntry({ ...spec('a'), id: 'my-entry' })).id, 'my-entry');
  t.same(await codeOf(() => ds.createEntry({ ...spec('b'), id: 'my-entry' })), { code: 'already_exists', field: 'id' });
});

t.test('the same SPIFFE ID, parent ID and selector set twice is refused as AlreadyExists naming the first entry', async (t) => {
  const { ds } = await openTemp(t, 'dup');
  const first = await ds.createEntry(spec('web'));
  const err = await t.rejects(() => ds.createEntry({ ...spec('web'), dnsNames: ['other'], x509SvidTtl: 60 })) as unknown;
  t.type(err, DuplicateEntry);
  t.equal((err as DuplicateEntry).code, 'already_exists');
  t.equal((err as DuplicateEntry).existingEntryId, first.id);
  // selector order does not make a set different
  await t.rejects(() => ds.createEntry({ ...spec('web'), selectors: sel('k8s:sa:web', 'k8s:ns:default') }), DuplicateEntry);
  // a different parent or selector set is a different entry
  await ds.createEntry(spec('web', agent2));
  await ds.createEntry(spec('web', agent1, sel('k8s:ns:default')));
  t.equal((await ds.listEntries()).items.length, 3);
  t.equal(await ds.currentRevision(), 3, 'the refused creates bumped nothing');
});

t.test('an entry without selectors or with a negative TTL is refused naming the field', async (t) => {
  const { ds } = await openTemp(t, 'bad');
  t.same(await codeOf(() => ds.createEntry({ ...spec('x'), selectors: SelectorSet.empty })), { code: 'invalid_argument', field: 'selectors' });
  t.same(await codeOf(() => ds.createEntry({ ...spec('x'), x509SvidTtl: -1 })), { code: 'invalid_argument', field: 'x509_svid_ttl' });
  t.same(await codeOf(() => ds.createEntry({ ...spec('x'), jwtSvidTtl: 1.5 })), { code: 'invalid_argument', field: 'jwt_svid_ttl' });
  t.same(await codeOf(() => ds.createEntry({ ...spec('x'), dnsNames: ['a', 'a'] })), { code: 'invalid_argument', field: 'dns_names[1]' });
  t.equal((await ds.listEntries()).items.length, 0);
});

t.test('update changes only the given fields, replaces child rows and bumps the revision', async (t) => {
  const { ds } = await openTemp(t, 'update');
  const e = await ds.createEntry({ ...spec('web'), dnsNames: ['a'], federatesWith: [TrustDomain.parse('p.example')] });
  const u = await ds.updateEntry(e.id, { selectors: sel('k8s:ns:prod', 'k8s:sa:web'), dnsNames: ['b', 'c'], hint: 'h' });
  t.same(u.selectors.toStrings(), ['k8s:ns:prod', 'k8s:sa:web']);
  t.same(u.dnsNames, ['b', 'c']);
  t.equal(u.hint, 'h');
  t.same(u.federatesWith.map((f) => f.name), ['p.example'], 'untouched field kept');
  t.ok(u.spiffeId.equals(e.spiffeId));
  t.equal(u.createdAt, e.createdAt);
  t.ok(u.revision > e.revision);
  t.same(ids((await ds.listEntries({ bySelectors: { selectors: sel('k8s:ns:default'), match: 'any' } })).items), [], 'old selectors gone');
  t.same(ids((await ds.listEntries({ bySelectors: { selectors: sel('k8s:ns:prod'), match: 'any' } })).items), [e.id]);
});

t.test('an update that would duplicate another entry is refused and changes nothing', async (t) => {
  const { ds } = await openTemp(t, 'updup');
  const a = await ds.createEntry(spec('a'));
  const b = await ds.createEntry(spec('b'));
  await t.rejects(() => ds.updateEntry(b.id, { spiffeId: a.spiffeId, selectors: a.selectors }), DuplicateEntry);
  t.same(await ds.getEntry(b.id), b);
  // updating an entry to its own current values is not a duplicate of itself
  t.equal((await ds.updateEntry(a.id, { selectors: a.selectors })).id, a.id);
});

t.test('get, update and delete of a missing entry are NotFound on field id', async (t) => {
  const { ds } = await openTemp(t, 'missing');
  t.same(await codeOf(() => ds.getEntry('nope')), { code: 'not_found', field: 'id' });
  t.same(await codeOf(() => ds.updateEntry('nope', { hint: 'x' })), { code: 'not_found', field: 'id' });
  t.same(await codeOf(() => ds.deleteEntry('nope')), { code: 'not_found', field: 'id' });
});

t.test('delete removes the entry with its selectors, DNS names and federations and returns it', async (t) => {
  const { ds } = await openTemp(t, 'delete');
  const e = await ds.createEntry({ ...spec('web'), dnsNames: ['x'], federatesWith: [TrustDomain.parse('p.example')] });
  const deleted = await ds.deleteEntry(e.id);
  t.equal(deleted.id, e.id);
  t.same(await codeOf(() => ds.getEntry(e.id)), { code: 'not_found', field: 'id' });
  t.same((await ds.listEntries({ bySelectors: { selectors: e.selectors, match: 'any' } })).items, []);
  // the same triple may be created again after the delete
  t.not((await ds.createEntry(spec('web'))).id, e.id);
});

t.test('batch create gives each item its own result and keeps the valid ones', async (t) => {
  const { ds } = await openTemp(t, 'batch');
  const existing = await ds.createEntry(spec('old'));
  const results = await ds.batchCreateEntries([spec('a'), spec('old'), { ...spec('b'), selectors: SelectorSet.empty }, spec('c'), spec('a')]);
  t.same(results.map((r) => r.ok), [true, false, false, true, false]);
  t.equal(!results[1]!.ok && results[1]!.error instanceof DuplicateEntry && results[1]!.error.existingEntryId, existing.id);
  t.equal(!results[2]!.ok && results[2]!.error.field, 'selectors');
  t.equal(!results[4]!.ok && results[4]!.error.code, 'already_exists', 'duplicate within the batch');
  t.equal((await ds.listEntries()).items.length, 3);
  const changes = await ds.changesSince(existing.revision);
  t.equal(changes.length, 2, 'one change per created entry, none for the failed items');
  t.same(changes.map((c) => c.revision), [existing.revision + 1, existing.revision + 2], 'no gaps from rolled-back items');
});

t.test('batch delete gives each id its own result', async (t) => {
  const { ds } = await openTemp(t, 'bdel');
  const a = await ds.createEntry(spec('a'));
  const b = await ds.createEntry(spec('b'));
  const results = await ds.batchDeleteEntries([a.id, 'missing', b.id, a.id]);
  t.same(results.map((r) => r.ok), [true, false, true, false]);
  t.equal(!results[1]!.ok && results[1]!.error.code, 'not_found');
  t.equal((await ds.listEntries()).items.length, 0);
});

t.test('list filters by SPIFFE ID, parent ID and hint, alone and combined', async (t) => {
  const { ds } = await openTemp(t, 'filters');
  const a = await ds.createEntry({ ...spec('a'), hint: 'x' });
  const a2 = await ds.createEntry({ ...spec('a', agent2), hint: 'y' });
  const b = await ds.createEntry({ ...spec('b'), hint: 'x' });
  t.same(ids((await ds.listEntries({ bySpiffeId: a.spiffeId })).items), ids([a, a2]));
  t.same(ids((await ds.listEntries({ byParentId: agent1 })).items), ids([a, b]));
  t.same(ids((await ds.listEntries({ byHint: 'x' })).items), ids([a, b]));
  t.same(ids((await ds.listEntries({ byHint: 'x', bySpiffeId: a.spiffeId })).items), [a.id]);
  t.same(ids((await ds.listEntries({ byParentId: agent2, byHint: 'x' })).items), []);
  t.same(ids((await ds.listEntries({ byHint: '' })).items), []);
});

t.test('list selector filters: exact, subset, superset and any', async (t) => {
  const { ds } = await openTemp(t, 'selectors');
  const ab = await ds.createEntry(spec('ab', agent1, sel('t:a', 't:b')));
  const a = await ds.createEntry(spec('a', agent1, sel('t:a')));
  const abc = await ds.createEntry(spec('abc', agent1, sel('t:a', 't:b', 't:c')));
  const d = await ds.createEntry(spec('d', agent1, sel('t:d')));
  const q = async (match: 'exact' | 'subset' | 'superset' | 'any', ...s: string[]): Promise<string[]> =>
    ids((await ds.listEntries({ bySelectors: { selectors: sel(...s), match } })).items);
  t.same(await q('exact', 't:a', 't:b'), [ab.id]);
  t.same(await q('exact', 't:b'), []);
  t.same(await q('subset', 't:a', 't:b'), ids([ab, a]), 'entries whose selectors are all in the filter');
  t.same(await q('subset', 't:a', 't:b', 't:c', 't:d'), ids([ab, a, abc, d]));
  t.same(await q('superset', 't:a', 't:b'), ids([ab, abc]), 'entries that have every filter selector');
  t.same(await q('superset', 't:a'), ids([ab, a, abc]));
  t.same(await q('any', 't:c', 't:d'), ids([abc, d]));
  t.same(await q('any', 't:zzz'), []);
  t.same(await codeOf(() => ds.listEntries({ bySelectors: { selectors: sel('t:a'), match: 'most' as 'any' } })),
    { code: 'invalid_argument', field: 'by_selectors.match' });
});

t.test('pagination returns every matching row exactly once, in creation order, and an empty token at the end', async (t) => {
  const { ds } = await openTemp(t, 'pages');
  const specs = Array.from({ length: 23 }, (_, i) => spec(`w${i}`, i % 2 === 0 ? agent1 : agent2));
  const created = (await ds.batchCreateEntries(specs)).map((r) => { if (!r.ok) throw r.error; return r.value; });
  for (const pageSize of [1, 5, 7, 23, 50]) {
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await ds.listEntries({ pageSize, pageToken: token });
      t.ok(page.items.length <= pageSize);
      seen.push(...page.items.map((e) => e.id));
      token = page.nextPageToken;
      pages++;
    } while (token !== '');
    t.same(seen, created.map((e) => e.id), `page size ${pageSize}: all rows once, in order`);
    t.equal(pages, Math.max(1, Math.ceil(23 / pageSize)), `page size ${pageSize}: no empty trailing page`);
  }
  // filters and pages combine
  const parent2: string[] = [];
  let token = '';
  do {
    const page = await ds.listEntries({ byParentId: agent2, pageSize: 4, pageToken: token });
    parent2.push(...page.items.map((e) => e.id));
    token = page.nextPageToken;
  } while (token);
  t.same(parent2, created.filter((e) => e.parentId.equals(agent2)).map((e) => e.id));
});

t.test('a page token that this list did not return is refused on field page_token', async (t) => {
  const { ds } = await openTemp(t, 'token');
  t.same(await codeOf(() => ds.listEntries({ pageSize: 1, pageToken: 'garbage!' })), { code: 'invalid_argument', field: 'page_token' });
  t.same(await codeOf(() => ds.listEntries({ pageSize: 1, pageToken: Buffer.from('agents:x').toString('base64url') })),
    { code: 'invalid_argument', field: 'page_token' });
  t.same(await codeOf(() => ds.listEntries({ pageSize: -1 })), { code: 'invalid_argument', field: 'page_size' });
});

t.test('entriesForAgent returns entries parented by the agent and by the node aliases its selectors match', async (t) => {
  const { ds } = await openTemp(t, 'agent');
  const server = serverId(td);
  const clusterAlias = td.child('cluster', 'prod');
  const zoneAlias = td.child('zone', 'a');
  await ds.createEntry({ spiffeId: clusterAlias, parentId: server, selectors: sel('k8s_psat:cluster:prod') });
  await ds.createEntry({ spiffeId: zoneAlias, parentId: server, selectors: sel('k8s_psat:cluster:prod', 'k8s_psat:zone:a') });
  const direct = await ds.createEntry(spec('direct', agent1));
  const viaCluster = await ds.createEntry(spec('cluster-wide', clusterAlias));
  const viaZone = await ds.createEntry(spec('zonal', zoneAlias));
  const other = await ds.createEntry(spec('other-agent', agent2));
  // an alias parented by something other than the server does not count
  const fakeAlias = td.child('fake');
  await ds.createEntry({ spiffeId: fakeAlias, parentId: agent2, selectors: sel('k8s_psat:cluster:prod') });
  const viaFake = await ds.createEntry(spec('via-fake', fakeAlias));

  const clusterOnly = await ds.entriesForAgent(agent1, sel('k8s_psat:cluster:prod', 'k8s_psat:node:n1'));
  t.same(ids(clusterOnly), ids([direct, viaCluster]), 'zone alias needs both selectors');
  const both = await ds.entriesForAgent(agent1, sel('k8s_psat:cluster:prod', 'k8s_psat:zone:a'));
  t.same(ids(both), ids([direct, viaCluster, viaZone]));
  const none = await ds.entriesForAgent(agent1, SelectorSet.empty);
  t.same(ids(none), [direct.id]);
  t.notOk(ids(both).includes(other.id));
  t.notOk(ids(both).includes(viaFake.id));
  t.same(ids(await ds.entriesForAgent(agent2, SelectorSet.empty)), ids([other, (await ds.listEntries({ bySpiffeId: fakeAlias })).items[0]!]));
});

t.test('entriesForAgent leaves out expired entries, and pruneExpiredEntries deletes them', async (t) => {
  const { ds, clock } = await openTemp(t, 'expiry');
  const soon = await ds.createEntry({ ...spec('soon'), expiresAt: clock.seconds() + 10 });
  const never = await ds.createEntry(spec('never'));
  t.same(ids(await ds.entriesForAgent(agent1, SelectorSet.empty)), ids([soon, never]));
  clock.advance(10);
  t.same(ids(await ds.entriesForAgent(agent1, SelectorSet.empty)), [never.id]);
  t.equal(await ds.pruneExpiredEntries(), 1);
  t.same(ids((await ds.listEntries()).items), [never.id]);
  t.same((await ds.changesSince((await ds.currentRevision()) - 1)).map((c) => [c.kind, c.id, c.op]), [['entry', soon.id, 'delete']]);
});
