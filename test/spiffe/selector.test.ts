import t from 'tap';
import fc from 'fast-check';
import { InvalidSelector, MAX_SELECTOR_BYTES, MeshidError, Selector, SelectorSet } from '../../spiffe/index.js';

function errorOf(fn: () => unknown): MeshidError {
  try { fn(); } catch (err) { if (err instanceof MeshidError) return err; throw err; }
  throw new Error('did not throw');
}

t.test('a selector parses as type:value', async (tt) => {
  const s = Selector.parse('unix:uid:0');
  tt.equal(s.type, 'unix');
  tt.equal(s.value, 'uid:0');
  tt.equal(s.toString(), 'unix:uid:0');
  tt.equal(JSON.stringify(s), '"unix:uid:0"');
  tt.ok(Object.isFrozen(s));
});

t.test('the type ends at the first colon and the value keeps every later colon', async (tt) => {
  const s = Selector.parse('k8s:pod-label:app:web:v1');
  tt.equal(s.type, 'k8s');
  tt.equal(s.value, 'pod-label:app:web:v1');
  tt.equal(Selector.parse('docker:label:').value, 'label:', 'a trailing colon is part of the value');
  tt.equal(Selector.parse('docker:image_id:sha256:abc').value, 'image_id:sha256:abc');
});

t.test('bad selectors are rejected with a message that says why', async (tt) => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['unix', /must be "type:value"/],
    [':uid:0', /type "" must be/],
    ['un ix:uid:0', /type "un ix" must be/],
    ['-unix:uid', /type "-unix" must be/],
    ['unix:', /empty value/],
    ['unix:uid\n0', /control character/],
    ['unix:uid\u00000', /control character/],
    ['unix:uid\u007f', /control character/],
    ['k8s:' + 'a'.repeat(MAX_SELECTOR_BYTES), /longer than 1024 bytes/],
  ];
  for (const [input, why] of cases) {
    const err = errorOf(() => Selector.parse(input));
    tt.ok(err instanceof InvalidSelector, `${JSON.stringify(input.slice(0, 20))} is an InvalidSelector`);
    tt.equal(err.code, 'invalid_selector');
    tt.match(err.message, why, `${JSON.stringify(input.slice(0, 20))}: ${why}`);
    tt.equal(err.field, 'selector');
  }
  tt.equal(Selector.parse('k8s:' + 'a'.repeat(MAX_SELECTOR_BYTES - 4)).value.length, MAX_SELECTOR_BYTES - 4, '1024 bytes are accepted');
});

t.test('Selector.of checks the parts it is given', async (tt) => {
  tt.equal(Selector.of('k8s', 'sa:web').toString(), 'k8s:sa:web');
  tt.equal(Selector.of('k8s_x.y-z', 'v').type, 'k8s_x.y-z');
  tt.throws(() => Selector.of('K8s', 'ns:default'), { code: 'invalid_selector', message: /must be lowercase/ }, 'types are lowercase');
  tt.throws(() => Selector.of('k8s:x', 'v'), { code: 'invalid_selector' });
  tt.throws(() => Selector.of('k8s', ''), { code: 'invalid_selector', message: /empty value/ });
});

t.test('a bad selector in a set is named by its index', async (tt) => {
  const err = errorOf(() => SelectorSet.parse(['unix:uid:0', 'k8s:ns:default', 'bogus', 'unix:gid:0']));
  tt.equal(err.field, 'selectors[2]');
  tt.match(err.message, /bogus/);
  tt.equal(errorOf(() => SelectorSet.parse(['k8s:ns:a', ''], 'entry.selectors')).field, 'entry.selectors[1]');
});

t.test('a selector set is sorted and de-duplicated', async (tt) => {
  const set = SelectorSet.parse(['unix:uid:0', 'k8s:ns:default', 'unix:uid:0', 'k8s:sa:web']);
  tt.equal(set.size, 3);
  tt.same(set.toStrings(), ['k8s:ns:default', 'k8s:sa:web', 'unix:uid:0']);
  tt.same(set.items.map((s) => s.toString()), set.toStrings());
  tt.same(set.toJSON(), set.toStrings());
  tt.ok(Object.isFrozen(set) && Object.isFrozen(set.items));
  const other = SelectorSet.parse(['k8s:sa:web', 'unix:uid:0', 'k8s:ns:default']);
  tt.equal(set.key(), other.key(), 'equal sets have equal keys whatever the input order');
  tt.not(set.key(), SelectorSet.parse(['k8s:sa:web']).key());
  tt.equal(SelectorSet.empty.size, 0);
  tt.equal(SelectorSet.of([Selector.parse('a:1'), Selector.parse('a:1')]).size, 1);
});

t.test('has() takes a Selector or its string form', async (tt) => {
  const set = SelectorSet.parse(['unix:uid:0']);
  tt.ok(set.has('unix:uid:0'));
  tt.ok(set.has(Selector.parse('unix:uid:0')));
  tt.notOk(set.has('unix:uid:1'));
});

t.test('subsetOf holds exactly when every selector is in the other set', async (tt) => {
  const entry = SelectorSet.parse(['k8s:ns:default', 'k8s:sa:web']);
  const workload = SelectorSet.parse(['k8s:ns:default', 'k8s:sa:web', 'k8s:pod-name:web-1', 'unix:uid:1000']);
  tt.ok(entry.subsetOf(workload), 'entry matches a workload with more selectors');
  tt.notOk(workload.subsetOf(entry), 'a larger set is not a subset');
  tt.notOk(SelectorSet.parse(['k8s:ns:default', 'k8s:sa:db']).subsetOf(workload), 'one missing selector breaks the match');
  tt.ok(entry.subsetOf(entry), 'a set is a subset of itself');
  tt.ok(SelectorSet.empty.subsetOf(workload), 'the empty set is a subset of anything');
  tt.notOk(SelectorSet.parse(['k8s:ns:default']).subsetOf(SelectorSet.parse(['k8s:ns:defaults'])), 'values compare exactly');
});

t.test('union merges and de-duplicates', async (tt) => {
  const u = SelectorSet.parse(['a:1', 'b:2']).union(SelectorSet.parse(['b:2', 'c:3']));
  tt.same(u.toStrings(), ['a:1', 'b:2', 'c:3']);
});

t.test('subsetOf agrees with a naive check on random sets', async (tt) => {
  const sel = fc.tuple(fc.constantFrom('k8s', 'unix', 'docker'), fc.constantFrom('ns:a', 'ns:b', 'sa:x', 'uid:0', 'a:b:c'));
  const setArb = fc.array(sel, { maxLength: 6 }).map((xs) => xs.map(([ty, v]) => `${ty}:${v}`));
  fc.assert(fc.property(setArb, setArb, (a, b) => {
    const naive = a.every((x) => b.includes(x));
    return SelectorSet.parse(a).subsetOf(SelectorSet.parse(b)) === naive;
  }), { numRuns: 2000 });
  tt.pass('2000 random pairs agreed');
});

t.test('values are checked per type: unix ids are numbers, k8s namespaces and ServiceAccounts follow Kubernetes name rules', async (tt) => {
  for (const ok of ['unix:uid:0', 'unix:gid:4294967295', 'unix:supplementary_gid:27', 'unix:user:any name', 'unix:path:/usr/bin/x',
    `unix:sha256:${'a'.repeat(64)}`, 'k8s:ns:kube-system', 'k8s:sa:web.v1', 'k8s:pod-label:App:Web', 'k8s:ns-other:Whatever']) {
    tt.equal(Selector.parse(ok).toString(), ok, `${ok} is taken`);
  }
  const refused: [string, RegExp][] = [
    ['unix:uid:root', /uid must be a numeric uid/], ['unix:uid:4294967296', /numeric uid/], ['unix:gid:1.5', /numeric gid/],
    ['unix:path:bin/x', /absolute path/], [`unix:sha256:${'A'.repeat(64)}`, /64 lowercase hex/],
    ['k8s:ns:Default', /namespace name/], ['k8s:ns:a_b', /namespace name/], [`k8s:ns:${'a'.repeat(64)}`, /namespace name/],
    ['k8s:ns:', /namespace name/], ['k8s:sa:web_app', /ServiceAccount name/], ['k8s:sa:.web', /ServiceAccount name/],
  ];
  for (const [bad, why] of refused) tt.throws(() => Selector.parse(bad, 'selectors[0]'), { code: 'invalid_selector', field: 'selectors[0]', message: why }, bad);
});
