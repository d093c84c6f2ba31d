import t from 'tap';
import { MeshidError } from '../../../spiffe/errors.js';
import { TrustDomain, agentId } from '../../../spiffe/id.js';
import { SelectorSet } from '../../../spiffe/selector.js';
import { openTemp, td } from './fixtures/tempdb.js';

const partner = TrustDomain.parse('partner.example');
const other = TrustDomain.parse('other.example');
const doc = (kid: string) => ({ keys: [{ kty: 'EC', crv: 'P-256', use: 'x509-svid', kid }], spiffe_sequence: 1, spiffe_refresh_hint: 300 });

function codeOf(fn: () => unknown): { code: string; field: string | undefined } {
  try { fn(); } catch (err) { if (err instanceof MeshidError) return { code: err.code, field: err.field }; throw err; }
  throw new Error('expected an error');
}

t.test('bundles are stored per trust domain as SPIFFE bundle documents and replaced by set', async (t) => {
  const { ds, clock } = openTemp(t, 'bundles');
  ds.setBundle(td, doc('own-1'));
  ds.setBundle(partner, doc('p-1'));
  clock.advance(60);
  const replaced = ds.setBundle(partner, doc('p-2'));
  t.same(replaced.document, doc('p-2'));
  t.equal(replaced.updatedAt, clock.seconds());
  t.same(ds.getBundle(td).document, doc('own-1'));
  t.same(ds.listBundles().map((b) => b.trustDomain.name), ['example.org', 'partner.example']);
  t.same(ds.listFederatedBundles().map((b) => b.trustDomain.name), ['partner.example'], 'the own trust domain is not federated');
  t.same(codeOf(() => ds.getBundle(other)), { code: 'not_found', field: 'trust_domain' });
});

t.test('a document that is not a JWK Set is refused naming the field', async (t) => {
  const { ds } = openTemp(t, 'baddoc');
  t.same(codeOf(() => ds.setBundle(td, { nope: true } as never)), { code: 'invalid_argument', field: 'bundle' });
  t.same(codeOf(() => ds.setBundle(td, { keys: [{ kty: 'EC' }, 'x'] } as never)), { code: 'invalid_argument', field: 'bundle.keys[1]' });
});

t.test('deleting a federated bundle: own refused, in-use refused, unused deleted, missing NotFound', async (t) => {
  const { ds } = openTemp(t, 'delbundle');
  ds.setBundle(td, doc('own'));
  ds.setBundle(partner, doc('p'));
  ds.setBundle(other, doc('o'));
  const e = ds.createEntry({ spiffeId: td.child('w'), parentId: agentId(td, 'x', 'n'), selectors: SelectorSet.parse(['a:b']), federatesWith: [partner] });
  t.same(codeOf(() => ds.deleteFederatedBundle(td)), { code: 'failed_precondition', field: 'trust_domain' });
  t.same(codeOf(() => ds.deleteFederatedBundle(partner)), { code: 'failed_precondition', field: 'trust_domain' });
  ds.deleteFederatedBundle(other);
  t.same(ds.listFederatedBundles().map((b) => b.trustDomain.name), ['partner.example']);
  t.same(codeOf(() => ds.deleteFederatedBundle(other)), { code: 'not_found', field: 'trust_domain' });
  ds.updateEntry(e.id, { federatesWith: [] });
  ds.deleteFederatedBundle(partner);
  t.same(ds.listFederatedBundles(), []);
  t.same(ds.changesSince(ds.currentRevision() - 1).map((c) => [c.kind, c.id, c.op]), [['bundle', 'partner.example', 'delete']]);
});
