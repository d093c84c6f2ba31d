import t from 'tap';
import { status, type ServiceError } from '@grpc/grpc-js';
import { attestAgent, call, startServerParts, type ServerParts } from '../../helpers/server.js';
import { authorizeNodeClaim, isWireGuardKey } from '../../../server/agentapi/nodeclaims.js';
import { Selector, SelectorSet, SpiffeId } from '../../../spiffe/index.js';
import type { PublishNodeResponseMsg, RegisterEndpointsResponseMsg } from '../../../api/agentproto.js';

// An attacker holding one node's agent SVID and key, against the real agent API over TLS on loopback.
const code = (err: unknown): number => (err as ServiceError).code;
const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('base64');
const ep = (ip: string, name = 'p') => ({ ip, namespace: 'default', name, service_account: 'default', labels: {} });

async function twoNodes(parts: ServerParts) {
  const a = await attestAgent(parts);
  const b = await attestAgent(parts);
  await call<PublishNodeResponseMsg>(a.client, 'PublishNode', { name: 'node-a', address: '10.99.0.1', pod_cidr: '10.201.1.0/24', wireguard_public_key: KEY_A });
  await call<RegisterEndpointsResponseMsg>(a.client, 'RegisterEndpoints', { endpoints: [ep('10.201.1.5', 'victim')] });
  await call<PublishNodeResponseMsg>(b.client, 'PublishNode', { name: 'node-b', address: '10.99.0.2', pod_cidr: '10.201.2.0/24', wireguard_public_key: KEY_B });
  return { a, b };
}

t.test('an agent cannot take another node\'s pods, CIDR, address, key or name, nor publish a second node', async (tt) => {
  const parts = await startServerParts();
  tt.teardown(() => parts.stop());
  const { a, b } = await twoNodes(parts);
  tt.teardown(() => { a.client.close(); b.client.close(); });
  const nodesBefore = JSON.stringify(await parts.store.listNodes());
  const endpointsBefore = JSON.stringify(await parts.store.listEndpoints());

  const refusals: [string, string, unknown, number, RegExp][] = [
    ['RegisterEndpoints', 'another node\'s pod IP', { endpoints: [ep('10.201.1.5')] }, status.PERMISSION_DENIED, /outside node "node-b"'s pod CIDR/],
    ['RegisterEndpoints', 'an IP outside its pod CIDR', { endpoints: [ep('10.99.9.9')] }, status.PERMISSION_DENIED, /outside node "node-b"'s pod CIDR 10.201.2.0\/24/],
    ['RegisterEndpoints', 'one good and one stolen IP', { endpoints: [ep('10.201.2.7'), ep('10.201.1.5')] }, status.PERMISSION_DENIED, /10.201.1.5 is outside/],
    ['RegisterEndpoints', 'an IP twice', { endpoints: [ep('10.201.2.7'), ep('10.201.2.7')] }, status.INVALID_ARGUMENT, /listed twice/],
    ['RegisterEndpoints', 'a non-address', { endpoints: [ep('10.201.2.999')] }, status.INVALID_ARGUMENT, /not an IP address/],
    ['PublishNode', 'the other node by name', { name: 'node-a', address: '10.99.0.2', pod_cidr: '10.201.2.0/24', wireguard_public_key: KEY_B }, status.PERMISSION_DENIED, /node-b/],
    ['PublishNode', 'a second node', { name: 'node-c', address: '10.99.0.3', pod_cidr: '10.201.3.0/24' }, status.PERMISSION_DENIED, /publishes one node, its own/],
    ['PublishNode', 'an overlapping pod CIDR', { name: 'node-b', pod_cidr: '10.201.0.0/16' }, status.PERMISSION_DENIED, /overlaps node "node-a"'s 10.201.1.0\/24/],
    ['PublishNode', 'the other node\'s address', { name: 'node-b', address: '10.99.0.1' }, status.PERMISSION_DENIED, /address 10.99.0.1 is node "node-a"'s/],
    ['PublishNode', 'the other node\'s WireGuard key', { name: 'node-b', wireguard_public_key: KEY_A }, status.PERMISSION_DENIED, /WireGuard public key is node "node-a"'s/],
    ['PublishNode', 'a malformed pod CIDR', { name: 'node-b', pod_cidr: '999.1.1.1/99' }, status.INVALID_ARGUMENT, /pod_cidr "999.1.1.1\/99" is not a CIDR/],
    ['PublishNode', 'a pod CIDR wider than /8', { name: 'node-b', pod_cidr: '0.0.0.0/0' }, status.INVALID_ARGUMENT, /wider than \/8/],
    ['PublishNode', 'a malformed WireGuard key', { name: 'node-b', wireguard_public_key: 'zzz' }, status.INVALID_ARGUMENT, /not a WireGuard public key/],
    ['PublishNode', 'a malformed address', { name: 'node-b', address: '10.99.0' }, status.INVALID_ARGUMENT, /not an IP address/],
  ];
  for (const [method, what, req, want, message] of refusals) {
    const err = await call(b.client, method, req).then(() => undefined, (e: unknown) => e);
    tt.equal(code(err), want, `${method} with ${what}: ${status[want]}`);
    tt.match((err as ServiceError | undefined)?.details, message, `${method} with ${what}: the message says why`);
  }
  tt.equal(JSON.stringify(await parts.store.listNodes()), nodesBefore, 'no node record changed or appeared');
  tt.equal(JSON.stringify(await parts.store.listEndpoints()), endpointsBefore, 'no endpoint moved or appeared');
  tt.equal((await parts.store.findEndpoint('10.201.1.5'))?.nodeId, (await parts.store.findNodeByName('node-a'))!.id, 'the victim pod stays on node-a');

  const audits = parts.logs.lines.filter((l) => l['audit'] === true && l['msg'] === 'agent refused');
  tt.equal(audits.length, 8, 'each of the 8 PermissionDenied left an audit line');
  tt.ok(audits.every((l) => l['agent_id'] === b.agentId.toString()), 'naming the agent that tried');
  tt.match(parts.metrics.registry.render(), /meshid_server_agent_refusals_total\{method="PublishNode"\} \d+/);

  // what is its own still works
  const own = await call<RegisterEndpointsResponseMsg>(b.client, 'RegisterEndpoints', { endpoints: [ep('10.201.2.7', 'mine')] });
  tt.same(own.endpoints.map((e) => e.ip), ['10.201.2.7']);
  const moved = await call<PublishNodeResponseMsg>(b.client, 'PublishNode', { name: 'node-b', address: '10.99.0.22', pod_cidr: '10.201.2.0/24', wireguard_public_key: KEY_B });
  tt.equal(moved.node?.address, '10.99.0.22', 'an agent may move its own node\'s address');
});

t.test('where Kubernetes is the source, the API\'s address and pod CIDR win and an agent registers no endpoints', async (tt) => {
  const parts = await startServerParts({ kubernetesOwnsNodes: true });
  tt.teardown(() => parts.stop());
  // the controller's view of the Node
  const node = await parts.store.upsertNode({ name: 'node-k', address: '10.99.0.9', podCidr: '10.201.9.0/24' });
  const pod = await parts.store.allocateIdentity('k=v', { k: 'v' }, { namespace: 'default', name: 'default' });
  await parts.store.upsertEndpoint({ ip: '10.201.9.4', identity: pod.id, nodeId: node.id, namespace: 'default', name: 'pod', labels: { k: 'v' } });
  const a = await attestAgent(parts);
  tt.teardown(() => a.client.close());
  const res = await call<PublishNodeResponseMsg>(a.client, 'PublishNode', { name: 'node-k', address: '10.99.0.66', pod_cidr: '10.201.66.0/24', wireguard_public_key: KEY_A });
  tt.equal(res.node?.address, '10.99.0.9', 'the Node object\'s address stays');
  tt.equal(res.node?.pod_cidr, '10.201.9.0/24', 'the Node object\'s pod CIDR stays');
  tt.equal(res.node?.wireguard_public_key, KEY_A, 'the agent\'s WireGuard key is taken');
  tt.equal(res.node?.agent_id, a.agentId.toString());
  const warned = parts.logs.lines.filter((l) => l['msg'] === 'agent claim disagrees with the Kubernetes API, which wins');
  tt.same(warned.map((l) => l['field']).sort(), ['address', 'pod_cidr'], 'each disagreement is logged');
  tt.match(parts.metrics.registry.render(), /meshid_server_agent_claims_overridden_total\{field="pod_cidr"\} 1/, 'and counted');
  const empty = await call<RegisterEndpointsResponseMsg>(a.client, 'RegisterEndpoints', { endpoints: [] });
  tt.same(empty.endpoints.map((e) => e.ip), ['10.201.9.4'], 'an empty list removes none of the API\'s pods');
  const err = await call(a.client, 'RegisterEndpoints', { endpoints: [ep('10.201.9.5')] }).catch((e: unknown) => e);
  tt.equal(code(err), status.PERMISSION_DENIED);
  tt.same((await parts.store.listEndpoints()).map((e) => e.ip), ['10.201.9.4']);
});

t.test('a k8s_psat agent publishes only the node it was attested on', async (tt) => {
  const caller = { agentId: SpiffeId.parse('spiffe://example.org/meshid/agent/k8s_psat/c1/uid-1'), selectors: SelectorSet.of([Selector.of('k8s_psat', 'agent_node_name:worker-1')]) };
  tt.equal(authorizeNodeClaim({ name: 'worker-1', address: '', pod_cidr: '', wireguard_public_key: KEY_A }, caller, [], true).update.name, 'worker-1');
  tt.throws(() => authorizeNodeClaim({ name: 'worker-2', address: '', pod_cidr: '', wireguard_public_key: '' }, caller, [], true), { code: 'permission_denied', message: /attested on node "worker-1"/ });
});

t.test('isWireGuardKey takes 32 bytes in canonical base64 only', async (tt) => {
  tt.ok(isWireGuardKey(KEY_A));
  tt.notOk(isWireGuardKey('zzz'));
  tt.notOk(isWireGuardKey(Buffer.alloc(31).toString('base64')));
  tt.notOk(isWireGuardKey(KEY_A.replace('=', '')), 'no padding is not canonical');
});
