import t from 'tap';
import { startAdminApi } from './fixtures/adminapi.js';

t.test('GET /v1/identities, /v1/nodes and /v1/endpoints show the mesh state with SPIFFE IDs', async (t) => {
  const f = await startAdminApi(t, 'mesh');
  t.same((await f.call('GET', '/v1/identities')).json, { identities: [] });
  t.same((await f.call('GET', '/v1/nodes')).json, { nodes: [] });
  t.same((await f.call('GET', '/v1/endpoints')).json, { endpoints: [] });

  const identity = await f.store.allocateIdentity('app=web;ns=shop;sa=web', { app: 'web' }, { namespace: 'shop', name: 'web' });
  const node = await f.store.upsertNode({ name: 'node-1', address: '10.99.0.1', wireguardPublicKey: 'k'.repeat(43) + '=', podCidr: '10.200.1.0/24' });
  await f.store.upsertEndpoint({ ip: '10.200.1.5', identity: identity.id, nodeId: node.id, namespace: 'shop', name: 'web-0', labels: { app: 'web' } });

  const ids = await f.call('GET', '/v1/identities');
  t.same(ids.json.identities, [{
    id: identity.id, labels: { app: 'web' }, namespace: 'shop', service_account: 'web', spiffe_id: 'spiffe://example.org/ns/shop/sa/web',
    created_at: identity.createdAt,
  }]);
  const nodes = await f.call('GET', '/v1/nodes');
  t.match(nodes.json.nodes, [{ id: node.id, name: 'node-1', address: '10.99.0.1', pod_cidr: '10.200.1.0/24', wireguard_public_key: 'k'.repeat(43) + '=' }]);
  const eps = await f.call('GET', '/v1/endpoints');
  t.same(eps.json.endpoints, [{ ip: '10.200.1.5', identity: identity.id, node_id: node.id, namespace: 'shop', name: 'web-0', labels: { app: 'web' } }]);
  t.equal((await f.call('GET', `/v1/endpoints?node_id=${node.id + 1}`)).json.endpoints.length, 0);
  t.equal((await f.call('GET', `/v1/endpoints?identity=${identity.id}`)).json.endpoints.length, 1);
  const bad = await f.call('GET', '/v1/endpoints?node_id=x');
  t.equal(bad.status, 400);
  t.equal(bad.json.error.field, 'node_id');
});
