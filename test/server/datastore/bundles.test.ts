import t from 'tap';
import { agentId, MeshidError, SelectorSet, TrustDomain } from '../../../spiffe/index.js';
import { openTemp, td } from './fixtures/tempdb.js';

const partner = TrustDomain.parse('partner.example');
const other = TrustDomain.parse('other.example');
const doc = (kid: string) => ({ keys: [{ kty: 'EC', crv: 'P-256', use: 'x509-svid', kid }], spiffe_sequence: 1, spiffe_refresh_hint: 300 });

async function codeOf(fn: () => unknown): Promise<{ code: string; field: string | undefined }> {
  try { await fn(); } catch (err) { if (err instanceof MeshidError) return { code: err.code, field: err.field }; throw err; }
  throw new Error('expected an error');
}

t.test('bundles are stored per trust domain as SPIFFE bundle documents and replaced by set', async (t) => {
  const { ds, clock } = await openTemp(t, 'bundles');
  await ds.setBundle(td, doc('own-1'));
  await ds.setBundle(partner, doc('p-1'));
  clock.advance(60);
  const replaced = await ds.setBundle(partner, doc('p-2'));
  t.same(replaced.document, doc('p-2'));
  t.equal(replaced.updatedAt, clock.seconds());
  t.same((await ds.getBundle(td)).document, doc('own-1'));
  t.same((await ds.listBundles()).map((b) => b.trustDomain.name), ['example.org', 'partner.example']);
  t.same((await ds.listFederatedBundles()).map((b) => b.trustDomain.name), ['partner.example'], 'the own trust domain is not federated');
  t.same(await codeOf(() => ds.getBundle(other)), { code: 'not_found', field: 'trust_domain' });
});

t.test('a document that is not a JWK Set is refused naming the field', async (t) => {
  const { ds } = await openTemp(t, 'baddoc');
  t.same(await codeOf(() => ds.setBundle(td, { nope: true } as never)), { code: 'invalid_argument', field: 'bundle' });
  t.same(await codeOf(() => ds.setBundle(td, { keys: [{ kty: 'EC' }, 'x'] } as never)), { code: 'invalid_argument', field: 'bundle.keys[1]' });
});

t.test('deleting a federated bundle: own refused, in-use refused, unused deleted, missing NotFound', async (t) => {
  const { ds } = await openTemp(t, 'delbundle');
  await ds.setBundle(td, doc('own'));
  await ds.setBundle(partner, doc('p'));
  await ds.setBundle(other, doc('o'));
  const e = await ds.createEntry({ spiffeId: td.child('w'), parentId: agentId(td, 'x', 'n'), selectors: SelectorSet.parse(['a:b']), federatesWith: [partner] });
  t.same(await codeOf(() => ds.deleteFederatedBundle(td)), { code: 'failed_precondition', field: 'trust_domain' });
  t.same(await codeOf(() => ds.deleteFederatedBundle(partner)), { code: 'failed_precondition', field: 'trust_domain' });
  await ds.deleteFederatedBundle(other);
  t.same((await ds.listFederatedBundles()).map((b) => b.trustDomain.name), ['partner.example']);
  t.same(await codeOf(() => ds.deleteFederatedBundle(other)), { code: 'not_found', field: 'trust_domain' });
  await ds.updateEntry(e.id, { federatesWith: [] });
  await ds.deleteFederatedBundle(partner);
  t.same(await ds.listFederatedBundles(), []);
  t.same((await ds.changesSince((await ds.currentRevision()) - 1)).map((c) => [c.kind, c.id, c.op]), [['bundle', 'partner.example', 'delete']]);
});
