import t, { type Test } from 'tap';
import { CoreV1Api, Watch, type KubeConfig, type V1ServiceAccount } from '@kubernetes/client-node';
import { silentLogger } from '../../../common/log.js';
import { Reflector } from '../../../server/k8s/reflector.js';
import { BUILTIN_RESOURCES, serviceAccountObject, type FakeKubeApiServer } from '../../helpers/fakek8s.js';
import { sleep, startFake, until } from './helpers.js';

const SA = BUILTIN_RESOURCES.find((r) => r.kind === 'ServiceAccount')!;

interface Seen { type: 'upsert' | 'remove' | 'listed'; name: string; rv: string }

async function startReflector(t: Test, fake: FakeKubeApiServer, kc: KubeConfig) {
  const seen: Seen[] = [];
  const core = kc.makeApiClient(CoreV1Api);
  const r = new Reflector<V1ServiceAccount>({
    name: 'serviceaccounts', path: '/api/v1/serviceaccounts', watch: new Watch(kc), logger: silentLogger,
    list: () => core.listServiceAccountForAllNamespaces(), initialBackoffMs: 20, maxBackoffMs: 100,
    handler: {
      upsert: (o) => seen.push({ type: 'upsert', name: `${o.metadata!.namespace}/${o.metadata!.name}`, rv: o.metadata!.resourceVersion! }),
      remove: (o) => seen.push({ type: 'remove', name: `${o.metadata!.namespace}/${o.metadata!.name}`, rv: o.metadata!.resourceVersion! }),
      listed: () => seen.push({ type: 'listed', name: '', rv: '' }),
    },
  });
  r.start();
  t.teardown(() => r.stop());
  await r.whenSynced();
  await until(() => fake.openWatchCount === 1, 'the watch to open');
  return { r, seen };
}

const lists = (fake: FakeKubeApiServer) => fake.requestsTo(/^\/api\/v1\/serviceaccounts$/, (q) => q.query.watch === undefined).length;
const watches = (fake: FakeKubeApiServer) => fake.requestsTo(/^\/api\/v1\/serviceaccounts$/, (q) => q.query.watch === 'true');

t.test('reflector lists, streams changes, and resumes a closed watch from its last resourceVersion without listing again, against the fake Kubernetes API server', async (t) => {
  const { fake, kc } = await startFake(t);
  fake.put(serviceAccountObject('default', 'default'));
  fake.put(serviceAccountObject('shop', 'web'));
  const { r, seen } = await startReflector(t, fake, kc);
  t.same([...r.cache.keys()].sort(), ['default/default', 'shop/web'], 'the list fills the cache');
  t.equal(watches(fake)[0]!.query.resourceVersion, String(fake.resourceVersion), 'the watch starts at the list\'s resourceVersion');

  fake.put(serviceAccountObject('shop', 'api'));
  await until(() => r.cache.has('shop/api'), 'the watched ADDED');
  fake.remove(SA, 'shop', 'web');
  await until(() => !r.cache.has('shop/web'), 'the watched DELETED');
  t.same(seen.filter((s) => s.type === 'remove').map((s) => s.name), ['shop/web']);
  const lastSeen = r.resourceVersion;
  t.equal(lastSeen, String(fake.resourceVersion), 'resourceVersion follows the events');

  // the server ends the watch; a change made before the reflector is back must still arrive
  fake.closeWatches();
  fake.put(serviceAccountObject('shop', 'late'));
  await until(() => r.cache.has('shop/late'), 'the change made while disconnected');
  const resumed = watches(fake).at(-1)!;
  t.equal(resumed.query.resourceVersion, lastSeen, 'the new watch resumes from the last resourceVersion seen');
  t.equal(lists(fake), 1, 'no second list');
  t.equal(r.stats.resumes, 1);
  t.equal(r.stats.relistsAfterGone, 0);
});

for (const mode of ['status', 'event'] as const) {
  t.test(`reflector lists again after 410 Gone (${mode === 'status' ? 'HTTP 410' : 'ERROR event with code 410'}) and reports what vanished meanwhile as removals, against the fake Kubernetes API server`, async (t) => {
    const { fake, kc } = await startFake(t);
    fake.goneMode = mode;
    fake.put(serviceAccountObject('shop', 'web'));
    fake.put(serviceAccountObject('shop', 'db'));
    const { r, seen } = await startReflector(t, fake, kc);
    const before = r.resourceVersion;

    // all in one tick: the reflector cannot reconnect before the history is gone
    fake.closeWatches();
    fake.remove(SA, 'shop', 'web');
    fake.put(serviceAccountObject('shop', 'new'));
    fake.put(serviceAccountObject('shop', 'db', { changed: 'yes' }));
    fake.compact();

    await until(() => r.stats.relistsAfterGone === 1 && r.cache.has('shop/new'), 'the relist');
    const w = watches(fake);
    t.equal(w[1]!.query.resourceVersion, before, 'the reflector first tried to resume');
    t.equal(lists(fake), 2, 'then listed again');
    t.same([...r.cache.keys()].sort(), ['shop/db', 'shop/new']);
    t.ok(seen.some((s) => s.type === 'remove' && s.name === 'shop/web'), 'the object deleted during the outage is reported removed');
    t.ok(seen.some((s) => s.type === 'upsert' && s.name === 'shop/db' && s.rv !== before), 'the changed object is reported');
    await until(() => fake.openWatchCount === 1, 'the new watch');
    t.equal(watches(fake).at(-1)!.query.resourceVersion, String(fake.resourceVersion), 'watching resumes from the new list');
    fake.put(serviceAccountObject('shop', 'after'));
    await until(() => r.cache.has('shop/after'), 'events after the relist');
  });
}

t.test('reflector resumes from the resourceVersion of a BOOKMARK, against the fake Kubernetes API server', async (t) => {
  const { fake, kc } = await startFake(t);
  const { r } = await startReflector(t, fake, kc);
  // changes to other kinds move the global resourceVersion but send this watch nothing
  fake.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'elsewhere' } });
  fake.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'elsewhere2' } });
  const atBookmark = String(fake.resourceVersion);
  t.not(r.resourceVersion, atBookmark);
  fake.bookmark();
  await until(() => r.resourceVersion === atBookmark, 'the bookmark');
  fake.closeWatches();
  await until(() => watches(fake).length === 2, 'the resumed watch');
  t.equal(watches(fake)[1]!.query.resourceVersion, atBookmark);
  t.equal(watches(fake)[0]!.query.allowWatchBookmarks, 'true', 'bookmarks are asked for');
});

t.test('reflector retries a failing API server with backoff and recovers, against the fake Kubernetes API server', async (t) => {
  const { fake, kc } = await startFake(t);
  fake.put(serviceAccountObject('shop', 'web'));
  let failures = 0;
  fake.fault = (req) => (req.path === '/api/v1/serviceaccounts' && failures++ < 3 ? 503 : undefined);
  const { r } = await startReflector(t, fake, kc);
  t.equal(r.stats.failures, 3, 'three failed lists were retried');
  t.ok(r.cache.has('shop/web'));
});

t.test('reflector stop() ends its watch and sends nothing afterwards, against the fake Kubernetes API server', async (t) => {
  const { fake, kc } = await startFake(t);
  const { r } = await startReflector(t, fake, kc);
  await r.stop();
  await until(() => fake.openWatchCount === 0, 'the watch to close');
  const count = fake.requests.length;
  fake.put(serviceAccountObject('shop', 'ignored'));
  await sleep(300);
  t.equal(fake.requests.length, count, 'no requests after stop');
  t.notOk(r.cache.has('shop/ignored'));
});
