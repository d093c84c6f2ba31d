import t from 'tap';
import { AgentState } from '../../../agent/sync/index.js';
import { SpiffeId } from '../../../spiffe/index.js';
import { delta, makeCa, snapshot } from '../mutualauth/fixtures.js';

const policy = (name: string, specJson: string) => ({ namespace: 'a', name, kind: 'CiliumNetworkPolicy', spec_json: specJson });
const GOOD = '{"format":"meshid.policy/v1","rules":[]}';

t.test('Sync messages become values: parsed SPIFFE IDs, renamed fields, policies decoded with the shared schema', async (t) => {
  const ca = makeCa();
  const state = new AgentState(ca.td);
  state.apply(snapshot(1, ca, { policies: [policy('good', GOOD), policy('bad', '{"format":"other"}')] }));
  const web = state.identities.get(101)!;
  t.ok(web.spiffeId instanceof SpiffeId, 'an identity carries a SpiffeId');
  t.equal(web.spiffeId.toString(), `spiffe://${ca.td.name}/ns/a/sa/web`);
  t.equal(web.serviceAccount, 'web');
  const node2 = state.nodes.get(2)!;
  t.ok(node2.agentId instanceof SpiffeId);
  t.equal(node2.podCidr, '10.0.2.0/24');
  t.equal(state.endpoints.get('10.0.2.1')!.nodeId, 2);
  t.same(state.policies.get('a/good')!.spec, { format: 'meshid.policy/v1', rules: [] });
  t.match(state.policies.get('a/bad')!.error, /policy a\/bad: spec\.format/, 'a bad policy is kept with why');
  t.throws(() => state.apply(delta({ identities: [{ id: 9, labels: {}, namespace: 'a', service_account: 'x', spiffe_id: 'not an id' }] })), /scheme must be "spiffe"/, 'an identity without a SPIFFE ID is refused at the edge');
});

t.test('a policy whose JSON is unchanged is not decoded again; a changed one is', async (t) => {
  const ca = makeCa();
  const state = new AgentState(ca.td);
  state.apply(snapshot(1, ca, { policies: [policy('p', GOOD)] }));
  const first = state.policies.get('a/p');
  state.apply(snapshot(1, ca, { revision: 2, policies: [policy('p', GOOD)] }));
  t.equal(state.policies.get('a/p'), first, 'a snapshot resending the same policy keeps its decoded value');
  state.apply(delta({ revision: 3, policies: [policy('p', '{"format":"meshid.policy/v1","rules":[],"x":1}')] }));
  t.not(state.policies.get('a/p'), first);
  t.ok(state.policies.get('a/p')!.error, 'the new JSON was decoded (and refused)');
});

t.test('the derived indexes: built once per applied message, rebuilt after the next', async (t) => {
  const ca = makeCa();
  const state = new AgentState(ca.td);
  state.apply(snapshot(1, ca));
  const idx = state.index();
  t.equal(state.index(), idx, 'the same object until something is applied');
  t.same([...idx.nodesHosting.get(101)!], [0], 'a local identity is hosted on node 0, as the auth map names this node');
  t.same([...idx.nodesHosting.get(201)!], [2]);
  t.same([...idx.identitiesOnNode.get(2)!].sort(), [201, 202]);
  t.same(idx.endpointsOnNode.get(1)!.map((e) => e.ip).sort(), ['10.0.1.1', '10.0.1.2']);
  t.same([...idx.localIdentities.keys()].sort(), [101, 102]);
  t.equal(idx.nodeByAgent.get(state.nodes.get(3)!.agentId!.toString())!.id, 3);
  state.apply(delta({ removed_endpoints: ['10.0.2.1'] }));
  const next = state.index();
  t.not(next, idx, 'rebuilt after a change');
  t.notOk(next.nodesHosting.has(201), 'the identity whose only endpoint left is hosted nowhere');
});
