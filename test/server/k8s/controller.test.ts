import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { systemClock } from '../../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../../common/log.js';
import { Datastore } from '../../../server/datastore/index.js';
import { kubernetesConfigSchema, KubernetesIntegration } from '../../../server/k8s/index.js';
import { parsePolicyDocuments } from '../../../server/policy/index.js';
import { SelectorSet, SpiffeId, TrustDomain } from '../../../spiffe/index.js';
import {
  AUTHPOLICY_CRD, BUILTIN_RESOURCES, CCNP_CRD, CNP_CRD, namespaceObject, nodeObject, podObject, serviceAccountObject,
  type FakeKubeApiServer, type KubeObject,
} from '../../helpers/fakek8s.js';
import { kubeConfigFor, sleep, startFake, until } from './helpers.js';

const td = TrustDomain.parse('example.org');
const resource = (kind: string) => BUILTIN_RESOURCES.find((r) => r.kind === kind)!;
const [POD, SA, NODE] = [resource('Pod'), resource('ServiceAccount'), resource('Node')];

async function openStore(t: Test): Promise<Datastore> {
  const dir = mkdtempSync(join(tmpdir(), `meshid-k8s-${process.pid}-`));
  const store = await Datastore.open({ path: join(dir, 'ds.sqlite3'), trustDomain: td });
  t.teardown(async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); });
  return store;
}

async function startIntegration(t: Test, fake: FakeKubeApiServer, store: Datastore, config: Record<string, unknown> = {}, token?: string) {
  const logs = new MemoryLogSink();
  const k8s = new KubernetesIntegration({
    config: kubernetesConfigSchema.parse({ enabled: true, cluster: 'c1', leader_election: { enabled: false }, ...config }),
    store, trustDomain: td, clock: systemClock, logger: new JsonLogger(logs, 'debug'), kubeConfig: kubeConfigFor(fake, token),
    reflectorTiming: { initialBackoffMs: 20, maxBackoffMs: 200 },
  });
  await k8s.start();
  t.teardown(() => k8s.stop());
  return { k8s, logs };
}

const saIds = async (store: Datastore): Promise<string[]> =>
  (await store.listEntries()).items.filter((e) => e.spiffeId.segments[0] === 'ns').map((e) => e.spiffeId.toString()).sort();

t.test('controller keeps one entry per ServiceAccount under the cluster\'s node alias, honours opt-outs, and deletes entries with their ServiceAccounts, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const store = await openStore(t);
  fake.put(namespaceObject('default'));
  fake.put(namespaceObject('shop'));
  fake.put(namespaceObject('kube-system', {}, { 'meshid.io/auto-register': 'false' }));
  fake.put(namespaceObject('private', { 'meshid.io/auto-register': 'false' }));
  for (const [ns, name] of [['default', 'default'], ['shop', 'web'], ['kube-system', 'coredns'], ['private', 'x']]) fake.put(serviceAccountObject(ns!, name!));
  fake.put(serviceAccountObject('shop', 'batch', { 'meshid.io/auto-register': 'false' }));
  const alias = SpiffeId.parse('spiffe://example.org/meshid/k8s/c1/nodes');
  // left from an earlier run: a ServiceAccount that no longer exists, and an operator's own entry under the alias
  await store.createEntry({ id: 'k8s:c1:sa:gone:old', spiffeId: td.child('ns', 'gone', 'sa', 'old'), parentId: alias, selectors: SelectorSet.parse(['k8s:ns:gone', 'k8s:sa:old']) });
  await store.createEntry({ id: 'by-hand', spiffeId: td.child('ns', 'gone', 'sa', 'manual'), parentId: alias, selectors: SelectorSet.parse(['k8s:ns:gone', 'k8s:sa:manual']) });

  const { k8s } = await startIntegration(t, fake, store, { endpoints: false, policies: false });
  await until(() => k8s.status().writing, 'the first resync');

  const aliasEntry = await store.getEntry('k8s:c1:nodes');
  t.equal(aliasEntry.spiffeId.toString(), alias.toString());
  t.equal(aliasEntry.parentId.toString(), 'spiffe://example.org/meshid/server');
  t.same(aliasEntry.selectors.toStrings(), ['k8s_psat:cluster:c1']);
  t.same(await saIds(store), [
    'spiffe://example.org/ns/default/sa/default', 'spiffe://example.org/ns/gone/sa/manual', 'spiffe://example.org/ns/shop/sa/web',
  ], 'entries for the ServiceAccounts that did not opt out; the stale one is gone, the operator\'s stays');
  const web = await store.getEntry('k8s:c1:sa:shop:web');
  t.equal(web.parentId.toString(), alias.toString());
  t.same(web.selectors.toStrings(), ['k8s:ns:shop', 'k8s:sa:web']);

  // every PSAT agent of the cluster gets them through the alias
  const agent = SpiffeId.parse('spiffe://example.org/meshid/agent/k8s_psat/c1/node-uid-1');
  const forAgent = (await store.entriesForAgent(agent, SelectorSet.parse(['k8s_psat:cluster:c1', 'k8s_psat:agent_node_name:n1']))).map((e) => e.id);
  t.ok(forAgent.includes('k8s:c1:sa:shop:web') && forAgent.includes('k8s:c1:sa:default:default'), 'an agent of the cluster receives the entries');
  t.same((await store.entriesForAgent(agent, SelectorSet.parse(['k8s_psat:cluster:other']))).map((e) => e.id).filter((id) => id.startsWith('k8s:')), [], 'an agent of another cluster does not');

  fake.put(serviceAccountObject('shop', 'api'));
  await until(async () => (await saIds(store)).includes('spiffe://example.org/ns/shop/sa/api'), 'the new ServiceAccount\'s entry');
  fake.remove(SA, 'shop', 'web');
  await until(async () => !(await saIds(store)).includes('spiffe://example.org/ns/shop/sa/web'), 'the deleted ServiceAccount\'s entry to go');

  fake.put(namespaceObject('shop', { 'meshid.io/auto-register': 'false' }));
  await until(async () => !(await saIds(store)).some((id) => id.includes('/ns/shop/')), 'the opted-out namespace\'s entries to go');
  fake.put(namespaceObject('shop'));
  await until(async () => (await saIds(store)).includes('spiffe://example.org/ns/shop/sa/api'), 'entries back after opting in');
  fake.put(serviceAccountObject('shop', 'batch'));
  await until(async () => (await saIds(store)).includes('spiffe://example.org/ns/shop/sa/batch'), 'a ServiceAccount that drops its opt-out annotation');
});

t.test('controller catches up after a 410 Gone: entries of ServiceAccounts deleted while its watch was down are deleted, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const store = await openStore(t);
  fake.put(namespaceObject('shop'));
  fake.put(serviceAccountObject('shop', 'web'));
  fake.put(serviceAccountObject('shop', 'db'));
  const { k8s } = await startIntegration(t, fake, store, { endpoints: false, policies: false });
  await until(async () => k8s.status().writing && (await saIds(store)).length === 2, 'the first resync');
  fake.closeWatches();
  fake.remove(SA, 'shop', 'web');
  fake.put(serviceAccountObject('shop', 'cache'));
  fake.compact();
  await until(async () => (await saIds(store)).join() === 'spiffe://example.org/ns/shop/sa/cache,spiffe://example.org/ns/shop/sa/db', 'the relist to be reconciled');
  t.equal(k8s.controller!.serviceAccounts!.stats.relistsAfterGone, 1);
});

t.test('controller registers Nodes, turns Pods into endpoints with label identities, and frees identities and endpoints that go away, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const store = await openStore(t);
  fake.put(nodeObject('node-a', { address: '192.168.1.10', podCidr: '10.244.1.0/24' }));
  fake.put(podObject('shop', 'web-1', { node: 'node-a', serviceAccount: 'web', ip: '10.244.1.5', labels: { app: 'web', 'pod-template-hash': 'abc' } }));
  fake.put(podObject('shop', 'web-2', { node: 'node-a', serviceAccount: 'web', ip: '10.244.1.6', labels: { app: 'web', 'pod-template-hash': 'def' } }));
  fake.put(podObject('kube-system', 'proxy', { node: 'node-a', serviceAccount: 'proxy', ip: '192.168.1.10', hostNetwork: true }));
  fake.put(podObject('shop', 'pending', { node: 'node-a', serviceAccount: 'web' }));
  // an endpoint left from before on this Kubernetes node, with no pod any more
  const nodeA = await store.upsertNode({ name: 'node-a' });
  const staleId = await store.allocateIdentity('stale', { stale: 'yes' }, { namespace: 'old', name: 'old' });
  await store.upsertEndpoint({ ip: '10.244.1.99', identity: staleId.id, nodeId: nodeA.id, namespace: 'old', name: 'old', labels: {} });

  const { k8s } = await startIntegration(t, fake, store, { auto_register: false, policies: false });
  await until(() => k8s.status().writing, 'the first resync');
  const node = (await store.findNodeByName('node-a'))!;
  t.equal(node.address, '192.168.1.10');
  t.equal(node.podCidr, '10.244.1.0/24');
  const eps = await store.listEndpoints();
  t.same(eps.map((e) => e.ip), ['10.244.1.5', '10.244.1.6'], 'running pods with IPs are endpoints; host-network and IP-less pods are not; the stale one is gone');
  t.equal(eps[0]!.identity, eps[1]!.identity, 'pods with the same security labels share an identity (pod-template-hash is ignored)');
  t.equal(eps[0]!.nodeId, node.id);
  t.equal(eps[0]!.name, 'web-1');
  const id = await store.getIdentity(eps[0]!.identity);
  t.same(id.serviceAccount, { namespace: 'shop', name: 'web' });
  t.same(id.labels, { app: 'web', 'io.kubernetes.pod.namespace': 'shop', 'io.cilium.k8s.policy.serviceaccount': 'web' });
  t.notOk((await store.listIdentities()).some((i) => i.id === staleId.id), 'the stale identity is freed');

  // a label change moves web-2 to a new identity; both stay in use
  fake.put(podObject('shop', 'web-2', { node: 'node-a', serviceAccount: 'web', ip: '10.244.1.6', labels: { app: 'web', track: 'canary' } }));
  await until(async () => (await store.getEndpoint('10.244.1.6')).identity !== id.id, 'the new identity');
  t.equal((await store.listIdentities()).length, 2);
  // web-1 goes: its identity is no longer used by anyone
  fake.remove(POD, 'shop', 'web-1');
  await until(async () => (await store.listEndpoints()).length === 1, 'web-1\'s endpoint to go');
  t.notOk((await store.listIdentities()).some((i) => i.id === id.id), 'the identity nobody uses is freed');
  // the pending pod gets an IP
  fake.put(podObject('shop', 'pending', { node: 'node-a', serviceAccount: 'web', ip: '10.244.1.7', labels: { app: 'web', track: 'canary' } }));
  await until(async () => (await store.listEndpoints()).length === 2, 'the pod that got an IP');
  // a pod that completes is no endpoint
  fake.put(podObject('shop', 'pending', { node: 'node-a', serviceAccount: 'web', ip: '10.244.1.7', phase: 'Succeeded' }));
  await until(async () => (await store.listEndpoints()).length === 1, 'the completed pod to go');
  // the node's address changes; then it leaves the cluster with its pods
  fake.put(nodeObject('node-a', { address: '192.168.1.11', podCidr: '10.244.1.0/24' }));
  await until(async () => (await store.findNodeByName('node-a'))!.address === '192.168.1.11', 'the new address');
  fake.remove(POD, 'shop', 'web-2');
  fake.remove(NODE, undefined, 'node-a');
  await until(async () => (await store.findNodeByName('node-a')) === undefined, 'the node to leave the registry');
  t.same(await store.listEndpoints(), []);
  t.same(await store.listIdentities(), []);
});

const cnp = (namespace: string, name: string, ingress: unknown[]): KubeObject => ({
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace },
  spec: { endpointSelector: { matchLabels: { app: 'db' } }, ingress },
});

t.test('controller stores policy CRD objects (AuthPolicy, CNP, CCNP) in server/policy\'s form, deletes them with their objects, refuses invalid ones, and follows CRDs that appear and vanish, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const store = await openStore(t);
  fake.installCrd(CNP_CRD);
  fake.installCrd(CCNP_CRD);
  const required = cnp('shop', 'db-mutual', [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }], authentication: { mode: 'required' } }]);
  fake.put(required);
  fake.put({
    apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'all-mutual' },
    spec: { endpointSelector: {}, ingress: [{ fromEndpoints: [{}], authentication: { mode: 'required' } }] },
  });
  // an operator's AuthPolicy applied through the admin API while the AuthPolicy CRD is not installed: left alone
  await store.upsertPolicy({ namespace: 'ops', name: 'by-hand', kind: 'AuthPolicy', spec: parsePolicyDocuments('apiVersion: meshid.io/v1alpha1\nkind: AuthPolicy\nmetadata: {name: by-hand, namespace: ops}\nspec: {endpointSelector: {}}\n')[0]!.spec });
  // a CNP stored earlier whose object is gone
  await store.upsertPolicy({ namespace: 'shop', name: 'stale', kind: 'CiliumNetworkPolicy', spec: parsePolicyDocuments(stringify(cnp('shop', 'stale', [])))[0]!.spec });

  const { k8s, logs } = await startIntegration(t, fake, store, { auto_register: false, endpoints: false, crd_discovery_interval: '100ms' });
  await until(() => k8s.status().writing, 'the first resync');
  const stored = await store.getPolicy('shop', 'db-mutual');
  t.equal(stored.kind, 'CiliumNetworkPolicy');
  const expected = parsePolicyDocuments(stringify(required))[0]!;
  t.same(stored.spec, expected.spec, 'the stored form is exactly what server/policy makes of the same YAML');
  t.same((stored.spec as { rules: { ingress: { auth: boolean }[] }[] }).rules[0]!.ingress[0]!.auth, true, 'authentication: mode: required is kept');
  t.equal((await store.getPolicy('', 'all-mutual')).kind, 'CiliumClusterwideNetworkPolicy', 'cluster-wide policies have namespace ""');
  t.same((await store.listPolicies()).map((p) => `${p.namespace}/${p.name}`), ['/all-mutual', 'ops/by-hand', 'shop/db-mutual'], 'the stale CNP is gone, the AuthPolicy of an absent CRD stays');

  // invalid: refused by path, the stored version stays
  fake.put(cnp('shop', 'db-mutual', [{ toFQDNs: [{ matchName: 'example.com' }] }]));
  await until(() => k8s.controller!.stats.refusedPolicies === 1, 'the refusal');
  t.ok(logs.lines.some((l) => l.msg === 'kubernetes: policy refused; the stored version (if any) stays' && l.field === 'spec.ingress[0].toFQDNs'), 'the log names the field');
  t.equal((await store.getPolicy('shop', 'db-mutual')).revision, stored.revision, 'the stored policy is unchanged');
  fake.remove(CNP_CRD, 'shop', 'db-mutual');
  await until(async () => !(await store.listPolicies()).some((p) => p.name === 'db-mutual'), 'the deleted object\'s policy to go');

  // the AuthPolicy CRD is installed later: discovered, and the cluster becomes the source of truth for AuthPolicies
  fake.installCrd(AUTHPOLICY_CRD);
  fake.put({
    apiVersion: 'meshid.io/v1alpha1', kind: 'AuthPolicy', metadata: { name: 'pay', namespace: 'shop' },
    spec: { endpointSelector: { matchLabels: { app: 'pay' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], authentication: { mode: 'required' } }] },
  });
  await until(async () => (await store.listPolicies()).some((p) => p.name === 'pay'), 'the AuthPolicy', 5000);
  t.equal((await store.getPolicy('shop', 'pay')).kind, 'AuthPolicy');
  t.notOk((await store.listPolicies()).some((p) => p.name === 'by-hand'), 'AuthPolicies not in the cluster are removed once the CRD is served');

  // the CCNP CRD goes away while its watch is down, so no deletion event arrives: discovery notices
  fake.fault = (r) => (r.path.endsWith('/ciliumclusterwidenetworkpolicies') ? 503 : undefined);
  fake.closeWatches();
  fake.removeCrd(CCNP_CRD);
  await until(() => !k8s.controller!.policyReflectors.has('ciliumclusterwidenetworkpolicies'), 'the watch of the vanished CRD to stop', 5000);
  await until(async () => !(await store.listPolicies()).some((p) => p.kind === 'CiliumClusterwideNetworkPolicy'), 'the CCNP policies to go');
  fake.fault = undefined;
  t.ok((await store.listPolicies()).some((p) => p.name === 'pay'));
});

t.test('controller: only the leader writes; the follower takes over when the leader stops and catches up with changes made meanwhile, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  fake.put(namespaceObject('shop'));
  fake.put(serviceAccountObject('shop', 'web'));
  const le = { enabled: true, namespace: 'meshid', lease_name: 'ctl', lease_duration: '1s', renew_deadline: '600ms', retry_period: '100ms' };
  const storeA = await openStore(t);
  const storeB = await openStore(t);
  const a = await startIntegration(t, fake, storeA, { endpoints: false, policies: false, leader_election: { ...le, identity: 'server-a' } }, 'token-a');
  await until(() => a.k8s.status().writing, 'server-a to lead and write');
  const b = await startIntegration(t, fake, storeB, { endpoints: false, policies: false, leader_election: { ...le, identity: 'server-b' } }, 'token-b');
  await until(() => b.k8s.status().synced, 'server-b\'s watches');
  fake.put(serviceAccountObject('shop', 'api'));
  await until(async () => (await saIds(storeA)).length === 2, 'the leader to write the new entry');
  await sleep(300);
  t.same(await saIds(storeB), [], 'the follower wrote nothing');
  t.equal(b.k8s.status().leader, false);

  await a.k8s.stop();
  fake.put(serviceAccountObject('shop', 'late'));
  await until(() => b.k8s.status().writing, 'server-b to take over', 5000);
  await until(async () => (await saIds(storeB)).length === 3, 'server-b to reconcile everything');
  t.same(await saIds(storeB), ['spiffe://example.org/ns/shop/sa/api', 'spiffe://example.org/ns/shop/sa/late', 'spiffe://example.org/ns/shop/sa/web']);
  t.same(await saIds(storeA), ['spiffe://example.org/ns/shop/sa/api', 'spiffe://example.org/ns/shop/sa/web'], 'the stopped leader wrote nothing more');
  t.equal(fake.openWatchCount, 2, 'only server-b\'s two watches (namespaces, serviceaccounts) are open');
});
