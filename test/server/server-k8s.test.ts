import { join } from 'node:path';
import t from 'tap';
import { systemClock } from '../../common/clock.js';
import { JsonLogger } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { MeshidServer } from '../../server/server.js';
import { namespaceObject, serviceAccountObject } from '../helpers/fakek8s.js';
import { tempDir } from './adminapi/fixtures/adminapi.js';
import { startFake, until } from './k8s/helpers.js';

t.test('a whole meshid-server with kubernetes.enabled loads its Kubernetes integration at start and registers ServiceAccounts, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  fake.put(namespaceObject('shop'));
  fake.put(serviceAccountObject('shop', 'web'));
  const dir = tempDir(t, 'server-k8s');
  const config = serverConfigSchema.parse({
    data_dir: dir, trust_domain: 'mesh.test', bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory',
    kubernetes: {
      enabled: true, cluster: 'test-cluster', kubeconfig: fake.writeKubeconfig(join(dir, 'kubeconfig')),
      leader_election: { namespace: 'shop', identity: 'meshid-server-0', lease_duration: '2s', renew_deadline: '1s', retry_period: '200ms' },
    },
  });
  const server = new MeshidServer(config, { clock: systemClock, logger: new JsonLogger({ write: () => {} }, 'error') });
  t.teardown(() => server.stop());
  await server.start();
  t.ok(server.kubernetes, 'the integration was loaded and started');
  await until(async () => (await server.store.listEntries()).items.some((e) => e.spiffeId.toString() === 'spiffe://mesh.test/ns/shop/sa/web'), 'the ServiceAccount entry');
  await server.stop();
  t.notOk(server.kubernetes?.status().writing, 'stopped: no longer writing');
});

t.test('a meshid-server without kubernetes has no Kubernetes integration', async (t) => {
  const dir = tempDir(t, 'server-no-k8s');
  const server = new MeshidServer(serverConfigSchema.parse({ data_dir: dir, trust_domain: 'mesh.test', bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory' }),
    { clock: systemClock, logger: new JsonLogger({ write: () => {} }, 'error') });
  t.teardown(() => server.stop());
  await server.start();
  t.equal(server.kubernetes, undefined);
});
