import t from 'tap';
import { CoreV1Api } from '@kubernetes/client-node';
import { silentLogger } from '../../../common/log.js';
import { BundlePublisher } from '../../../server/k8s/bundle.js';
import { Bundle } from '../../../spiffe/index.js';
import { BUILTIN_RESOURCES } from '../../helpers/fakek8s.js';
import { startServerParts } from '../../helpers/server.js';
import { sleep, startFake, until } from './helpers.js';

const CM = BUILTIN_RESOURCES.find((r) => r.kind === 'ConfigMap')!;

t.test('the leader publishes the trust bundle into a ConfigMap and republishes it when it changes; a follower writes nothing, against the fake Kubernetes API server', async (t) => {
  const { fake, kc } = await startFake(t);
  const parts = await startServerParts();
  t.teardown(() => parts.stop());
  const publisher = new BundlePublisher({
    core: kc.makeApiClient(CoreV1Api), store: parts.store, trustDomain: parts.td, namespace: 'meshid', name: 'meshid-bundle', logger: silentLogger, retryMs: 50,
  });
  publisher.start();
  t.teardown(() => publisher.stop());
  publisher.kick();
  await sleep(200);
  t.equal(fake.get(CM, 'meshid', 'meshid-bundle'), undefined, 'not leading: nothing written');

  publisher.setActive(true);
  await until(() => fake.get(CM, 'meshid', 'meshid-bundle') !== undefined, 'the ConfigMap');
  const cm = fake.get(CM, 'meshid', 'meshid-bundle') as unknown as { data: Record<string, string>; metadata: { labels: Record<string, string> } };
  const bundle = Bundle.fromJwks(parts.td, cm.data['bundle.spiffe']!);
  t.equal(bundle.x509Pem(), parts.ca.bundle().x509Pem(), 'bundle.spiffe holds the CA\'s authorities');
  t.equal(cm.data['bundle.crt'], parts.ca.bundle().x509Pem(), 'bundle.crt holds them as PEM');
  t.equal(cm.metadata.labels['app.kubernetes.io/part-of'], 'meshid');

  // the bundle changes (e.g. a new sequence number after a rotation): the ConfigMap follows
  const doc = (await parts.store.getBundle(parts.td)).document;
  await parts.store.setBundle(parts.td, { ...doc, spiffe_sequence: (doc.spiffe_sequence ?? 0) + 7 });
  await until(() => JSON.parse((fake.get(CM, 'meshid', 'meshid-bundle') as unknown as { data: Record<string, string> }).data['bundle.spiffe']!).spiffe_sequence === (doc.spiffe_sequence ?? 0) + 7, 'the update');
  // the fake holds the update once the PUT arrives; the publisher counts it once the answer does
  await publisher.settled();
  const writes = publisher.writes;
  publisher.kick();
  await publisher.settled();
  t.equal(publisher.writes, writes, 'an unchanged bundle is not written again');

  // a failed write is retried
  fake.remove(CM, 'meshid', 'meshid-bundle');
  let failures = 0;
  fake.fault = (r) => (r.path.includes('/configmaps') && failures++ < 2 ? 503 : undefined);
  publisher.kick();
  await until(() => fake.get(CM, 'meshid', 'meshid-bundle') !== undefined, 'the retried write');
  t.ok(failures >= 2);

  publisher.setActive(false);
  fake.remove(CM, 'meshid', 'meshid-bundle');
  await parts.store.setBundle(parts.td, { ...doc, spiffe_sequence: (doc.spiffe_sequence ?? 0) + 8 });
  await sleep(200);
  t.equal(fake.get(CM, 'meshid', 'meshid-bundle'), undefined, 'after losing leadership nothing is written');
});
