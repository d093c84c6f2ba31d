import t from 'tap';
import { Datastore, type CaJournalRecord } from '../../../server/datastore/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { openTemp, td } from './fixtures/tempdb.js';

t.test('the CA journal saves and loads records in order, across a reopen', async (t) => {
  const { ds, url } = await openTemp(t, 'journal');
  t.same(await ds.loadCaJournal(), []);
  const records: CaJournalRecord[] = [
    { kind: 'x509', id: 'x-old', state: 'old', data: { pem: 'A', notAfter: 1 } },
    { kind: 'x509', id: 'x-cur', state: 'active', data: { pem: 'B' } },
    { kind: 'x509', id: 'x-next', state: 'prepared', data: { pem: 'C' } },
    { kind: 'jwt', id: 'j-cur', state: 'active', data: { kid: 'k1', jwk: { kty: 'EC' } } },
  ];
  await ds.saveCaJournal(records);
  await ds.close();
  const again = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => again.close());
  t.same(await again.loadCaJournal(), records);
  await again.saveCaJournal([records[1]!]);
  t.same(await again.loadCaJournal(), [records[1]], 'save replaces the whole journal');
});

t.test('a journal with two active or two prepared records of one kind is refused and the old journal kept', async (t) => {
  const { ds } = await openTemp(t, 'journalbad');
  const good: CaJournalRecord[] = [{ kind: 'jwt', id: 'a', state: 'active', data: {} }];
  await ds.saveCaJournal(good);
  const twoActive = await t.rejects(() => ds.saveCaJournal([
    { kind: 'x509', id: 'a', state: 'active', data: {} },
    { kind: 'x509', id: 'b', state: 'active', data: {} },
  ])) as MeshidError;
  t.equal(twoActive.code, 'failed_precondition');
  t.equal(twoActive.field, 'records[1]');
  t.same(await ds.loadCaJournal(), good, 'the failed save changed nothing');
  t.equal((await t.rejects(() => ds.saveCaJournal([{ kind: 'rsa' as 'x509', id: 'a', state: 'active', data: {} }])) as MeshidError).field, 'records[0].kind');
  t.equal((await t.rejects(() => ds.saveCaJournal([{ kind: 'jwt', id: 'a', state: 'current' as 'active', data: {} }])) as MeshidError).field, 'records[0].state');
  // one active and one prepared per kind, in each kind, is fine
  await ds.saveCaJournal([
    { kind: 'x509', id: 'a', state: 'active', data: {} }, { kind: 'x509', id: 'b', state: 'prepared', data: {} },
    { kind: 'jwt', id: 'a', state: 'active', data: {} }, { kind: 'jwt', id: 'b', state: 'prepared', data: {} },
  ]);
  t.equal((await ds.loadCaJournal()).length, 4);
});
