import t from 'tap';
import { MAX_NODE_ID } from '../../../server/datastore/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { openTemp, rawQuery } from './fixtures/tempdb.js';

const sa = { namespace: 'default', name: 'web' };

async function codeOf(fn: () => unknown): Promise<{ code: string; field: string | undefined }> {
  try { await fn(); } catch (err) { if (err instanceof MeshidError) return { code: err.code, field: err.field }; throw err; }
  throw new Error('expected an error');
}

t.test('identity allocation is stable for the same labels key and distinct for different ones, from 256 up', async (t) => {
  const { ds } = await openTemp(t, 'ident');
  const a = await ds.allocateIdentity('ns=default;sa=web', { ns: 'default', sa: 'web' }, sa);
  const b = await ds.allocateIdentity('ns=default;sa=web;tier=db', { ns: 'default', sa: 'web', tier: 'db' }, sa);
  const a2 = await ds.allocateIdentity('ns=default;sa=web', { ns: 'default', sa: 'web' }, sa);
  t.equal(a.id, 256, 'numbers below 256 are reserved');
  t.equal(b.id, 257);
  t.same(a2, a);
  t.same((await ds.getIdentity(a.id)).labels, { ns: 'default', sa: 'web' });
  t.same((await ds.listIdentities()).map((i) => i.id), [256, 257]);
  t.equal((await ds.findIdentityByLabelsKey('ns=default;sa=web;tier=db'))?.id, 257);
  t.same(await codeOf(() => ds.allocateIdentity('ns=default;sa=web', {}, { namespace: 'default', name: 'other' })),
    { code: 'failed_precondition', field: 'service_account' });
  t.same(await codeOf(() => ds.allocateIdentity('', {}, sa)), { code: 'invalid_argument', field: 'labels_key' });
  t.same(await codeOf(() => ds.getIdentity(9999)), { code: 'not_found', field: 'identity' });
});

t.test('a freed identity number is not handed out again at once', async (t) => {
  const { ds } = await openTemp(t, 'identreuse');
  const a = await ds.allocateIdentity('a', {}, sa);
  const b = await ds.allocateIdentity('b', {}, sa);
  await ds.deleteIdentity(b.id);
  const c = await ds.allocateIdentity('c', {}, sa);
  t.equal(a.id, 256);
  t.equal(c.id, 258, 'not 257, which agents may still have in their maps');
  t.same((await ds.listIdentities()).map((i) => i.id), [256, 258]);
});

t.test('node ids start at 1, are stable per name, and wrap to the lowest free id when the cursor hits 65535', async (t) => {
  const { ds, url } = await openTemp(t, 'nodeid');
  t.equal(await ds.allocateNodeId('a'), 1);
  t.equal(await ds.allocateNodeId('b'), 2);
  t.equal(await ds.allocateNodeId('a'), 1);
  t.equal((await ds.findNodeByName('b'))?.id, 2);
  // move the cursor to the top, as after many allocations
  await rawQuery(url, `UPDATE meta SET value = ${MAX_NODE_ID} WHERE key = 'node_cursor'`);
  t.equal(await ds.allocateNodeId('top'), MAX_NODE_ID);
  t.equal(await ds.allocateNodeId('wrapped'), 3, 'wraps past the taken 1 and 2');
  t.same(await codeOf(() => ds.allocateNodeId('')), { code: 'invalid_argument', field: 'name' });
});

t.test('running out of node ids is ResourceExhausted', async (t) => {
  const { ds, url } = await openTemp(t, 'nodefull');
  await rawQuery(url, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${MAX_NODE_ID})
    INSERT INTO nodes (id, name, created_at, revision) SELECT i, 'n' || i, 0, 0 FROM n`);
  t.same(await codeOf(() => ds.allocateNodeId('one-too-many')), { code: 'resource_exhausted', field: 'node_id' });
  await ds.deleteNode(700);
  t.equal(await ds.allocateNodeId('one-too-many'), 700);
});

t.test('nodes upsert their address, WireGuard key and pod CIDR by name', async (t) => {
  const { ds } = await openTemp(t, 'nodes');
  const n = await ds.upsertNode({ name: 'node-1', address: '192.168.0.1', wireguardPublicKey: 'pub1', podCidr: '10.1.1.0/24' });
  t.equal(n.id, 1);
  const moved = await ds.upsertNode({ name: 'node-1', address: '192.168.0.9' });
  t.same([moved.id, moved.address, moved.wireguardPublicKey, moved.podCidr], [1, '192.168.0.9', 'pub1', '10.1.1.0/24']);
  t.same((await ds.listNodes()).map((x) => x.name), ['node-1']);
  t.equal(moved.agentId, '', 'no agent until one publishes itself');
  const rev = await ds.currentRevision();
  const claimed = await ds.upsertNode({ name: 'node-1', agentId: 'spiffe://example.org/meshid/agent/join_token/node-1' });
  t.equal(claimed.agentId, 'spiffe://example.org/meshid/agent/join_token/node-1');
  t.equal(claimed.address, '192.168.0.9');
  t.equal(await ds.currentRevision(), rev + 1, 'setting the agent is a visible change');
  t.same(await codeOf(() => ds.upsertNode({ name: 'node-2', address: 'not-an-ip' })), { code: 'invalid_argument', field: 'address' });
  await ds.deleteNode(1);
  t.same(await codeOf(() => ds.getNode(1)), { code: 'not_found', field: 'node_id' });
});

t.test('endpoints reference an existing identity and node; in-use identities and nodes cannot be deleted', async (t) => {
  const { ds } = await openTemp(t, 'endpoints');
  const id = (await ds.allocateIdentity('web', { app: 'web' }, sa)).id;
  const node = await ds.allocateNodeId('node-1');
  const ep = await ds.upsertEndpoint({ ip: '10.1.1.5', identity: id, nodeId: node, namespace: 'default', name: 'web-0', labels: { app: 'web' } });
  t.same(await ds.getEndpoint('10.1.1.5'), ep);
  await ds.upsertEndpoint({ ip: 'fd00::5', identity: id, nodeId: node, namespace: 'default', name: 'web-0', labels: { app: 'web' } });
  t.same((await ds.listEndpoints({ nodeId: node })).map((e) => e.ip), ['10.1.1.5', 'fd00::5']);
  t.same(await ds.listEndpoints({ identity: 999 }), []);
  t.same(await codeOf(() => ds.upsertEndpoint({ ...ep, identity: 999 })), { code: 'failed_precondition', field: 'identity' });
  t.same(await codeOf(() => ds.upsertEndpoint({ ...ep, nodeId: 99 })), { code: 'failed_precondition', field: 'node_id' });
  t.same(await codeOf(() => ds.upsertEndpoint({ ...ep, ip: '10.1.1' })), { code: 'invalid_argument', field: 'ip' });
  t.same(await codeOf(() => ds.deleteIdentity(id)), { code: 'failed_precondition', field: 'identity' });
  t.same(await codeOf(() => ds.deleteNode(node)), { code: 'failed_precondition', field: 'node_id' });
  await ds.deleteEndpoint('10.1.1.5');
  await ds.deleteEndpoint('fd00::5');
  await ds.deleteIdentity(id);
  await ds.deleteNode(node);
  t.same(await codeOf(() => ds.getEndpoint('10.1.1.5')), { code: 'not_found', field: 'ip' });
});

t.test('policies upsert, list by namespace and delete by (namespace, name)', async (t) => {
  const { ds } = await openTemp(t, 'policies');
  await ds.upsertPolicy({ namespace: 'default', name: 'allow-web', kind: 'MeshPolicy', spec: { from: ['a'] } });
  await ds.upsertPolicy({ namespace: 'prod', name: 'allow-web', kind: 'MeshPolicy', spec: { from: ['b'] } });
  const updated = await ds.upsertPolicy({ namespace: 'default', name: 'allow-web', kind: 'MeshPolicy', spec: { from: ['c'] } });
  t.same(updated.spec, { from: ['c'] });
  t.same((await ds.listPolicies({ namespace: 'default' })).map((p) => p.spec), [{ from: ['c'] }]);
  t.equal((await ds.listPolicies()).length, 2);
  await ds.deletePolicy('prod', 'allow-web');
  t.same(await codeOf(() => ds.getPolicy('prod', 'allow-web')), { code: 'not_found', field: 'name' });
  t.same(await codeOf(() => ds.deletePolicy('prod', 'allow-web')), { code: 'not_found', field: 'name' });
});
