import t from 'tap';
import fc from 'fast-check';
import type { SelectorMatch } from '../../../server/datastore/index.js';
import { agentId, Selector, SelectorSet } from '../../../spiffe/index.js';
import { openTemp, td } from './fixtures/tempdb.js';

/** A small alphabet so that random sets overlap often. */
const selectorArb = fc.constantFrom(
  ...['k8s:ns:a', 'k8s:ns:b', 'k8s:sa:x', 'k8s:sa:y', 'unix:uid:0', 'unix:uid:1000', 'k8s:pod-label:app:web'],
).map((s) => Selector.parse(s));
const setArb = (min: number) => fc.uniqueArray(selectorArb, { minLength: min, maxLength: 5, selector: (s) => s.toString() })
  .map((items) => SelectorSet.of(items));
const matchArb = fc.constantFrom<SelectorMatch>('exact', 'subset', 'superset', 'any');

/** The in-memory model of each match mode, straight from the definitions. */
function modelMatches(entry: SelectorSet, filter: SelectorSet, match: SelectorMatch): boolean {
  switch (match) {
    case 'exact': return entry.key() === filter.key();
    case 'subset': return entry.subsetOf(filter);
    case 'superset': return filter.subsetOf(entry);
    case 'any': return entry.items.some((s) => filter.has(s));
  }
}

t.test('selector queries (exact, subset, superset, any) return what the in-memory model says, in any page size', async (t) => {
  const { ds } = await openTemp(t, 'prop');
  const parent = agentId(td, 'test', 'prop');
  await fc.assert(fc.asyncProperty(
    fc.array(setArb(1), { maxLength: 14 }),
    fc.array(fc.tuple(setArb(0), matchArb), { minLength: 1, maxLength: 6 }),
    fc.integer({ min: 0, max: 4 }),
    async (entrySets, queries, pageSize) => {
      const created = (await ds.batchCreateEntries(entrySets.map((selectors, i) => ({ spiffeId: td.child('w', String(i)), parentId: parent, selectors }))))
        .map((r) => { if (!r.ok) throw r.error; return r.value; });
      try {
        for (const [filter, match] of queries) {
          const want = created.filter((e) => modelMatches(e.selectors, filter, match)).map((e) => e.id);
          const got: string[] = [];
          let pageToken = '';
          do {
            const page = await ds.listEntries({ bySelectors: { selectors: filter, match }, pageSize, pageToken });
            got.push(...page.items.map((e) => e.id));
            pageToken = page.nextPageToken;
          } while (pageToken);
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            throw new Error(`${match} ${JSON.stringify(filter.toStrings())}: got ${got.length} entries, model says ${want.length}`);
          }
        }
      } finally {
        await ds.batchDeleteEntries(created.map((e) => e.id));
      }
    },
  ), { numRuns: 150 });
  t.equal((await ds.listEntries()).items.length, 0, 'every run cleaned up after itself');
});
