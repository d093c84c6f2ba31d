import t from 'tap';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../../common/log.js';
import { MeshidAgent } from '../../../agent/agent.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { loadWorkloadProto, workloadCallMetadata, type X509SVIDResponseMessage } from '../../../agent/workloadapi/index.js';
import { kubernetesAgentConfigSchema, kubernetesAgentParts } from '../../../agent/workloadattestor/k8s.js';
import { AgentApiServer } from '../../../server/agentapi/server.js';
import { AttestorRegistry } from '../../../server/attestation/index.js';
import { IdentityAllocator } from '../../../server/identity/index.js';
import { kubernetesConfigSchema, KubernetesIntegration } from '../../../server/k8s/index.js';
import { splitConcatenatedDer, verifyX509Svid } from '../../../spiffe/index.js';
import { BUILTIN_RESOURCES, namespaceObject, nodeObject, podObject, serviceAccountObject } from '../../helpers/fakek8s.js';
import { startServerParts } from '../../helpers/server.js';
import { kubeConfigFor, startFake, until } from './helpers.js';

const SA = BUILTIN_RESOURCES.find((r) => r.kind === 'ServiceAccount')!;
const CM = BUILTIN_RESOURCES.find((r) => r.kind === 'ConfigMap')!;
const NODE_UID = '5e0c7a1d-0000-4000-8000-00000000a001';
const AGENT_POD_UID = '5e0c7a1d-0000-4000-8000-00000000b001';
const WEB_POD_UID = '5e0c7a1d-0000-4000-8000-00000000c001';
const WEB_CID = 'f'.repeat(8) + '0123456789abcdef'.repeat(3) + 'e'.repeat(8);

function next<T>(s: NodeJS.EventEmitter, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
    s.once('data', (m: T) => { clearTimeout(timer); resolve(m); });
    s.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

t.test('a ServiceAccount becomes an entry that a PSAT-attested agent serves to its pod\'s process, and goes away with it, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  fake.put(namespaceObject('meshid'));
  fake.put(namespaceObject('shop'));
  fake.put(serviceAccountObject('meshid', 'meshid-agent'));
  fake.put(nodeObject('node-a', { uid: NODE_UID, address: '192.168.7.10', podCidr: '10.244.7.0/24' }));
  fake.put(podObject('meshid', 'meshid-agent-7xk2p', { uid: AGENT_POD_UID, node: 'node-a', serviceAccount: 'meshid-agent', hostNetwork: true }));
  fake.put(podObject('shop', 'web-1', {
    uid: WEB_POD_UID, node: 'node-a', serviceAccount: 'web', ip: '10.244.7.5', labels: { app: 'web' },
    containers: [{ name: 'app', image: 'registry.example/web:1', id: WEB_CID }],
  }));

  // the server: real datastore, CA and agent API, with the Kubernetes integration
  const parts = await startServerParts();
  t.teardown(() => parts.stop());
  const serverLogs = new MemoryLogSink();
  const k8s = new KubernetesIntegration({
    config: kubernetesConfigSchema.parse({
      enabled: true, cluster: 'test-cluster',
      leader_election: { namespace: 'meshid', identity: 'meshid-server-0', lease_duration: '2s', renew_deadline: '1s', retry_period: '200ms' },
    }),
    store: parts.store, trustDomain: parts.td, clock: systemClock, logger: new JsonLogger(serverLogs, 'debug'), kubeConfig: kubeConfigFor(fake, 'server-token'),
    reflectorTiming: { initialBackoffMs: 20 },
  });
  await k8s.start();
  t.teardown(() => k8s.stop());
  const api = new AgentApiServer({
    bind: '127.0.0.1:0', ca: parts.ca, store: parts.store, attestors: new AttestorRegistry([k8s.attestor]), clock: systemClock,
    logger: new JsonLogger(serverLogs), metrics: parts.metrics, agentSvidTtlSeconds: 3600, endpoints: new IdentityAllocator(parts.store),
  });
  const port = await api.start();
  t.teardown(() => api.stop());
  await until(() => k8s.status().writing, 'the controller to lead and catch up');
  t.ok((await parts.store.listEntries()).items.some((e) => e.spiffeId.toString() === 'spiffe://example.org/ns/meshid/sa/meshid-agent'), 'ServiceAccount entries exist');

  // the agent: projected token on disk, PSAT attestation, the k8s workload attestor over a fake /proc
  const dir = mkdtempSync(join(tmpdir(), `meshid-k8s-agent-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tokenPath = join(dir, 'meshid-agent-token');
  writeFileSync(tokenPath, fake.issueToken({
    namespace: 'meshid', serviceAccount: 'meshid-agent', audiences: ['meshid-server'],
    podName: 'meshid-agent-7xk2p', podUid: AGENT_POD_UID, nodeName: 'node-a', nodeUid: NODE_UID,
  }));
  const proc = join(dir, 'proc');
  mkdirSync(join(proc, String(process.pid)), { recursive: true });
  // this test process plays web-1's container
  writeFileSync(join(proc, String(process.pid), 'cgroup'),
    `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${WEB_POD_UID.replaceAll('-', '_')}.slice/cri-containerd-${WEB_CID}.scope\n`);
  // the bootstrap bundle comes from the ConfigMap the server publishes (as the DaemonSet mounts it)
  await until(() => fake.get(CM, 'meshid', 'meshid-bundle') !== undefined, 'the bundle ConfigMap');
  writeFileSync(join(dir, 'bundle.spiffe'), (fake.get(CM, 'meshid', 'meshid-bundle') as unknown as { data: Record<string, string> }).data['bundle.spiffe']!);
  fake.put(serviceAccountObject('shop', 'web'));
  await until(async () => (await parts.store.listEntries()).items.some((e) => e.spiffeId.toString() === 'spiffe://example.org/ns/shop/sa/web'), 'the new ServiceAccount\'s entry');

  const k8sAgent = await kubernetesAgentParts(kubernetesAgentConfigSchema.parse({
    enabled: true, cluster: 'test-cluster', token_path: tokenPath, kubeconfig: fake.writeKubeconfig(join(dir, 'kubeconfig'), 'agent-token'),
  }), 'node-a', proc);
  const agent = new MeshidAgent(agentConfigSchema.parse({
    server: `127.0.0.1:${port}`, trust_bundle: join(dir, 'bundle.spiffe'), socket: join(dir, 'agent.sock'), data_dir: join(dir, 'data'),
    health: '127.0.0.1:0', node_name: 'node-a',
  }), {
    clock: systemClock, logger: new JsonLogger(new MemoryLogSink(), 'debug'),
    attestor: k8sAgent.attestor,
    workloadAttestors: [k8sAgent.workloadAttestor],
  });
  await agent.start();
  t.teardown(() => agent.stop());
  t.equal(agent.identity.current().spiffeId.toString(), `spiffe://example.org/meshid/agent/k8s_psat/test-cluster/${NODE_UID}`, 'the agent is named by its node\'s UID');
  const attested = await parts.store.getAttestedNode(agent.identity.current().spiffeId);
  t.equal(attested.attestationType, 'k8s_psat');
  t.ok(attested.selectors.has('k8s_psat:agent_node_name:node-a'));
  await agent.sync.synced();
  await agent.cache.settled();
  t.ok(agent.state.entries.has('k8s:test-cluster:sa:shop:web'), 'the agent holds the ServiceAccount entries through the node alias');

  const proto = loadWorkloadProto();
  const client = new proto.Client(`unix:${join(dir, 'agent.sock')}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void };
  t.teardown(() => client.close());
  const stream = client['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
  t.teardown(() => { stream.removeAllListeners(); stream.on('error', () => {}); stream.cancel(); });
  const first = await next<X509SVIDResponseMessage>(stream);
  t.same(first.svids.map((s) => s.spiffe_id), ['spiffe://example.org/ns/shop/sa/web'], 'web-1\'s process gets its ServiceAccount\'s SVID');
  const v = verifyX509Svid(splitConcatenatedDer(first.svids[0]!.x509_svid), () => splitConcatenatedDer(first.svids[0]!.bundle), new Date());
  t.equal(v.spiffeId.toString(), 'spiffe://example.org/ns/shop/sa/web');
  t.ok(fake.requestsTo(/^\/api\/v1\/pods$/, (r) => r.bearer === 'agent-token' && r.query.fieldSelector === 'spec.nodeName=node-a').length >= 1,
    'the agent looked its node\'s pods up with its own credentials');
  // the controller also made web-1 an endpoint on node-a
  const ep = await parts.store.getEndpoint('10.244.7.5');
  t.equal((await parts.store.getNode(ep.nodeId)).name, 'node-a');

  // the ServiceAccount is deleted: the entry goes, and the process's SVID with it
  const gone = next<X509SVIDResponseMessage>(stream).then(() => 'message', (e: ServiceError) => e);
  fake.remove(SA, 'shop', 'web');
  await until(() => !agent.state.entries.has('k8s:test-cluster:sa:shop:web'), 'the agent to drop the entry');
  const outcome = await gone;
  t.ok(outcome === 'message' || (outcome as ServiceError).code === status.PERMISSION_DENIED, 'the open stream is told');
  const again = client['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
  const err = await next(again).catch((e: ServiceError) => e);
  t.equal((err as ServiceError).code, status.PERMISSION_DENIED, 'a new request gets no identity');
});
