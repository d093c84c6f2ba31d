import t, { type Test } from 'tap';
import { AuthenticationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { K8sPsatAttestor } from '../../../server/k8s/index.js';
import { MeshidError, TrustDomain } from '../../../spiffe/index.js';
import { namespaceObject, nodeObject, podObject, serviceAccountObject, type IssuedToken } from '../../helpers/fakek8s.js';
import { startFake } from './helpers.js';

const td = TrustDomain.parse('example.org');
const NODE_A = '0b6c1f52-5b0c-4a3e-9d0e-0000000000aa';
const NODE_B = '0b6c1f52-5b0c-4a3e-9d0e-0000000000bb';
const AGENT_POD = '7d3f2c1e-1111-4222-8333-944455556666';

async function setup(t: Test) {
  const { fake, kc } = await startFake(t);
  fake.put(namespaceObject('meshid'));
  fake.put(serviceAccountObject('meshid', 'meshid-agent'));
  fake.put(nodeObject('node-a', { uid: NODE_A, address: '10.0.0.1', labels: { 'topology.kubernetes.io/zone': 'z1' } }));
  fake.put(nodeObject('node-b', { uid: NODE_B, address: '10.0.0.2' }));
  fake.put(podObject('meshid', 'meshid-agent-x1', { uid: AGENT_POD, node: 'node-a', serviceAccount: 'meshid-agent' }));
  fake.put(podObject('default', 'intruder', { uid: '7d3f2c1e-2222-4222-8333-944455556666', node: 'node-a', serviceAccount: 'default' }));
  const attestor = new K8sPsatAttestor({
    trustDomain: td, cluster: 'prod-eu', audience: 'meshid-server', allowedServiceAccounts: ['meshid:meshid-agent'],
    authentication: kc.makeApiClient(AuthenticationV1Api), core: kc.makeApiClient(CoreV1Api),
  });
  const good: IssuedToken = {
    namespace: 'meshid', serviceAccount: 'meshid-agent', audiences: ['meshid-server'],
    podName: 'meshid-agent-x1', podUid: AGENT_POD, nodeName: 'node-a', nodeUid: NODE_A,
  };
  const payload = (token: string, cluster = 'prod-eu') => Buffer.from(JSON.stringify({ cluster, token }));
  return { fake, attestor, good, payload };
}

async function refusal(t: Test, p: Promise<unknown>, code: string, message: RegExp, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: attestation succeeded`);
  } catch (err) {
    t.ok(err instanceof MeshidError, `${what}: a MeshidError`);
    t.equal((err as MeshidError).code, code, `${what}: code ${code}`);
    t.match((err as Error).message, message, `${what}: says why`);
  }
}

t.test('k8s_psat attests an agent by its projected token: TokenReview with the audience, pod and node checks, agent ID by node UID, node selectors, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, good, payload } = await setup(t);
  const res = await attestor.attest(payload(fake.issueToken(good)));
  t.equal(res.agentId.toString(), `spiffe://example.org/meshid/agent/k8s_psat/prod-eu/${NODE_A}`);
  t.equal(res.canReattest, true);
  const sel = res.selectors.toStrings();
  for (const s of [
    'k8s_psat:cluster:prod-eu', 'k8s_psat:agent_node_name:node-a', `k8s_psat:agent_node_uid:${NODE_A}`, 'k8s_psat:agent_ns:meshid',
    'k8s_psat:agent_sa:meshid-agent', 'k8s_psat:agent_pod_name:meshid-agent-x1', `k8s_psat:agent_pod_uid:${AGENT_POD}`,
    'k8s_psat:agent_node_label:topology.kubernetes.io/zone:z1', 'k8s_psat:agent_node_label:kubernetes.io/hostname:node-a',
  ]) t.ok(sel.includes(s), s);
  const review = fake.requestsTo(/tokenreviews$/)[0]!;
  t.equal(review.method, 'POST');

  // Kubernetes before 1.30 puts no node into the token: the pod's node is used
  const { nodeName: _n, nodeUid: _u, ...noNode } = good;
  const older = await attestor.attest(payload(fake.issueToken(noNode)));
  t.equal(older.agentId.toString(), `spiffe://example.org/meshid/agent/k8s_psat/prod-eu/${NODE_A}`, 'works without node-name in the token');
});

t.test('k8s_psat refuses every token that does not prove an allowed agent pod on its node, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, good, payload } = await setup(t);
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, audiences: ['other-service'] }))), 'permission_denied', /token review denied.*audiences/, 'wrong audience');
  fake.tokenReviewIgnoresAudiences = true;
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, audiences: ['other-service'] }))), 'permission_denied', /not valid for audience "meshid-server"/,
    'wrong audience where TokenReview does not check audiences');
  fake.tokenReviewIgnoresAudiences = false;
  const revoked = fake.issueToken(good);
  fake.revokeToken(revoked);
  await refusal(t, attestor.attest(payload(revoked)), 'permission_denied', /token review denied/, 'token review denied');
  await refusal(t, attestor.attest(payload('not-a-token')), 'permission_denied', /token review denied/, 'unknown token');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, namespace: 'default', serviceAccount: 'default', podName: 'intruder', podUid: '7d3f2c1e-2222-4222-8333-944455556666' }))),
    'permission_denied', /ServiceAccount default:default is not allowed/, 'disallowed ServiceAccount');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, serviceAccount: 'unknown-sa' }))), 'permission_denied', /meshid:unknown-sa is not allowed/, 'unknown ServiceAccount');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, nodeName: 'node-b', nodeUid: NODE_B }))), 'permission_denied',
    /runs on node node-a, not on the token's node node-b/, 'pod on another node');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, podUid: '7d3f2c1e-9999-4222-8333-944455556666' }))), 'permission_denied',
    /has UID .* not the token's/, 'pod UID mismatch (pod recreated under the same name)');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, podName: 'gone-pod' }))), 'permission_denied', /pod meshid\/gone-pod .* does not exist/, 'pod missing');
  await refusal(t, attestor.attest(payload(fake.issueToken({ ...good, nodeUid: NODE_B }))), 'permission_denied', /node node-a has UID/, 'node UID mismatch');
  const { podName: _p, podUid: _q, ...unbound } = good;
  await refusal(t, attestor.attest(payload(fake.issueToken(unbound))), 'permission_denied', /not bound to a pod/, 'token not bound to a pod');
  await refusal(t, attestor.attest(payload(fake.issueToken(good), 'other-cluster')), 'permission_denied', /cluster "other-cluster"/, 'another cluster');
  await refusal(t, attestor.attest(Buffer.from('{"cluster":"prod-eu"}')), 'invalid_argument', /needs "token"/, 'no token');
  await refusal(t, attestor.attest(Buffer.from('garbage')), 'invalid_argument', /must be JSON/, 'not JSON');
});

t.test('k8s_psat answers Unavailable, not a refusal, when the API server cannot be asked, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, good, payload } = await setup(t);
  const token = fake.issueToken(good);
  fake.fault = (r) => (r.path.endsWith('/tokenreviews') ? 503 : undefined);
  await refusal(t, attestor.attest(payload(token)), 'unavailable', /token review failed/, 'token review unavailable');
  fake.fault = (r) => (r.path.startsWith('/api/v1/nodes/') ? 500 : undefined);
  await refusal(t, attestor.attest(payload(token)), 'unavailable', /reading node node-a failed/, 'node read failed');
  fake.fault = undefined;
  t.ok(await attestor.attest(payload(token)), 'the same token works once the API answers');
});
