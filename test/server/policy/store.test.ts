import t from 'tap';
import { applyParsedPolicies, applyPolicies, deletePolicy, deletePolicyDocuments, parsePolicyDocuments, type ParsedPolicy } from '../../../server/policy/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { openTemp } from '../datastore/fixtures/tempdb.js';

const doc = (name: string, app: string, extra = ''): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ${name}, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: ${app}}}
  ingress: [{fromEndpoints: [{}]${extra}}]
---
`;
const ccnp = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: mtls}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoints: [{}], authentication: {mode: required}}]
`;

async function codeOf(fn: () => unknown): Promise<string> {
  try { await fn(); } catch (err) { if (err instanceof MeshidError) return `${err.code}:${err.field}`; throw err; }
  throw new Error('expected an error');
}

t.test('apply stores normalised policies and says created, updated or unchanged', async (t) => {
  const { ds } = await openTemp(t, 'pol-apply');
  const first = await applyPolicies(ds, doc('a', 'pay') + ccnp);
  t.same(first.map((r) => [r.kind, r.namespace, r.name, r.result]), [
    ['CiliumNetworkPolicy', 'prod', 'a', 'created'], ['CiliumClusterwideNetworkPolicy', '', 'mtls', 'created'],
  ]);
  const stored = await ds.getPolicy('prod', 'a');
  t.equal(stored.kind, 'CiliumNetworkPolicy');
  t.match(stored.spec, { format: 'meshid.policy/v1', rules: [{ subject: { requirements: [{ key: 'app', values: ['pay'] }, { key: 'io.kubernetes.pod.namespace', values: ['prod'] }] } }] });
  t.equal((await ds.getPolicy('', 'mtls')).kind, 'CiliumClusterwideNetworkPolicy', 'cluster-wide policies live in namespace ""');

  const again = await applyPolicies(ds, doc('a', 'pay') + ccnp);
  t.same(again.map((r) => r.result), ['unchanged', 'unchanged']);
  t.same(again.map((r) => r.revision), first.map((r) => r.revision), 'no new revision, so agents see nothing');

  const changed = await applyPolicies(ds, doc('a', 'pay', ', authentication: {mode: required}'));
  t.equal(changed[0]!.result, 'updated');
  t.ok(changed[0]!.revision > first[1]!.revision);
  t.match((await ds.getPolicy('prod', 'a')).spec, { rules: [{ ingress: [{ auth: true }] }] });
});

t.test('nothing is written when any document is bad, or would replace a policy of another kind', async (t) => {
  const { ds } = await openTemp(t, 'pol-atomic');
  t.equal(await codeOf(() => applyPolicies(ds, doc('a', 'pay') + doc('b', 'web').replace('fromEndpoints', 'fromCIDR'))), 'invalid_argument:spec.ingress[0].fromCIDR');
  t.same(await ds.listPolicies(), [], 'the good first document was not stored either');

  await applyPolicies(ds, doc('a', 'pay'));
  const authPolicy = `apiVersion: meshid.io/v1alpha1\nkind: AuthPolicy\nmetadata: {name: a, namespace: prod}\nspec: {endpointSelector: {}}\n`;
  t.equal(await codeOf(() => applyPolicies(ds, doc('b', 'web') + authPolicy)), 'failed_precondition:kind');
  t.same((await ds.listPolicies()).map((p) => p.name), ['a'], 'b was not stored');
  t.equal((await ds.getPolicy('prod', 'a')).kind, 'CiliumNetworkPolicy');
});

t.test('delete removes one policy and returns it; absent or of another kind is NotFound', async (t) => {
  const { ds } = await openTemp(t, 'pol-delete');
  await applyPolicies(ds, doc('a', 'pay') + ccnp);
  t.equal(await codeOf(() => deletePolicy(ds, { namespace: 'prod', name: 'a', kind: 'AuthPolicy' })), 'not_found:name');
  t.equal(await codeOf(() => deletePolicy(ds, { namespace: 'prod', name: 'nope' })), 'not_found:name');
  const gone = await deletePolicy(ds, { namespace: 'prod', name: 'a', kind: 'CiliumNetworkPolicy' });
  t.equal(gone.name, 'a');
  t.same((await ds.listPolicies()).map((p) => p.name), ['mtls']);
  const revisionBefore = (await ds.getPolicy('', 'mtls')).revision;
  t.same(await deletePolicyDocuments(ds, doc('a', 'pay') + ccnp), [
    { namespace: 'prod', name: 'a', kind: 'CiliumNetworkPolicy', deleted: false },
    { namespace: '', name: 'mtls', kind: 'CiliumClusterwideNetworkPolicy', deleted: true },
  ]);
  t.same(await ds.listPolicies(), []);
  t.ok(revisionBefore > 0);
});

t.test('a spec that does not fit the shared schema (what agents decode) is refused before anything is written', async (t) => {
  const { ds } = await openTemp(t, 'pol-schema');
  const [good] = parsePolicyDocuments(doc('good', 'pay'));
  const bad = { ...good!, name: 'bad', spec: { ...good!.spec, rules: [{ ...good!.spec.rules[0]!, defaultDeny: { ingress: 'yes' } }] } } as unknown as ParsedPolicy;
  const err = await applyParsedPolicies(ds, [good!, bad]).then(() => undefined, (e: unknown) => e as MeshidError);
  t.equal(err?.code, 'invalid_argument');
  t.match(err?.message, /policy prod\/bad: spec\.rules\.0\.defaultDeny\.ingress/, 'names the policy and the field');
  t.same(await ds.listPolicies(), [], 'the good policy of the same call was not written either');
});
