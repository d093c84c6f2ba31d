/**
 * The relay end to end on loopback: real agent-side FlowRelays (TLS gRPC with
 * their agent SVIDs) streaming to a real agent API whose RelayHub the admin API
 * reads over HTTP. History, follow, filters, the node a stream speaks for, a
 * node that goes away, /v1/auth, /v1/explain, and callers without the token.
 */
import t from 'tap';
import { FlowRelay } from '../../../agent/observe/index.js';
import type { FlowResponse } from '../../../api/flow.js';
import { silentLogger } from '../../../common/log.js';
import { NotFound } from '../../../spiffe/index.js';
import { RELAY_TOKEN as TOKEN, startRelay, testFlow as flow, until, type RelayFixture } from '../../helpers/relay.js';

let fx: RelayFixture;
let url: string;
t.before(async () => { fx = await startRelay(); url = fx.url; });
t.teardown(() => fx.stop());
const agent: RelayFixture['agent'] = (...args) => fx.agent(...args);

async function get(path: string, token: string | null = TOKEN): Promise<{ status: number; text: string; lines: any[] }> {
  const res = await fetch(url + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  return { status: res.status, text, lines: text.split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

/** Reads a follow stream's lines as they come, until closed. */
function follow(path: string): { lines: any[]; close(): void } {
  const ac = new AbortController();
  const lines: any[] = [];
  void (async () => {
    try {
      const res = await fetch(url + path, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += Buffer.from(chunk).toString('utf8');
        let i;
        while ((i = buf.indexOf("\n")) >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); if (l) lines.push(JSON.parse(l)); }
      }
    } catch { /* aborted */ }
  })();
  return { lines, close: () => ac.abort() };
}

t.test('flows of two nodes reach /v1/flows through the server: history in time order as Hubble\'s GetFlowsResponse, filters, follow, and a node that goes away is named', async (t) => {
  const n1 = await agent('node-a', '10.1.0.0/24', [flow('node-a', { ms: 0 }), flow('node-a', { ms: 20, verdict: 'DROPPED', pod: 'legacy' })], () => ({ applies: false }));
  const n2 = await agent('node-b', '10.2.0.0/24', [flow('node-b', { ms: 10, ns: 'other', pod: 'x', dstPod: 'y', port: 53 })], () => ({ applies: false }));
  t.teardown(() => { n1.stop(); n2.stop(); });
  await until('both histories', () => fx.hub.history({}, 100).length === 3);

  const all = await get('/v1/flows?last=10');
  t.equal(all.status, 200);
  t.same(all.lines.map((l: FlowResponse) => [l.node_name, l.flow.time.slice(17, 23)]), [['node-a', '00.000'], ['node-b', '00.010'], ['node-a', '00.020']], 'oldest first across nodes');
  t.same(Object.keys(all.lines[0]).sort(), ['flow', 'node_name', 'time'], 'each line is {flow, node_name, time}');
  t.equal(all.lines[0].time, all.lines[0].flow.time);

  t.same((await get('/v1/flows?verdict=DROPPED')).lines.map((l: FlowResponse) => l.flow.source.pod_name), ['legacy'], 'verdict');
  t.same((await get('/v1/flows?namespace=other')).lines.map((l: FlowResponse) => l.node_name), ['node-b'], 'namespace');
  t.same((await get('/v1/flows?pod=demo/leg')).lines.length, 1, 'pod by namespace/prefix');
  t.same((await get('/v1/flows?to_pod=other/y&port=53')).lines.length, 1, 'to_pod and port');
  t.same((await get('/v1/flows?from_pod=y')).lines.length, 0, 'from_pod is the source only');
  t.same((await get('/v1/flows?node=node-b&last=5')).lines.length, 1, 'node');
  t.same((await get('/v1/flows?last=1')).lines.map((l: FlowResponse) => l.flow.time.slice(17, 23)), ['00.020'], 'last is the newest');

  const live = follow('/v1/flows?follow=true&verdict=DROPPED');
  t.teardown(() => live.close());
  await new Promise((r) => setTimeout(r, 200));
  n1.relay.push(flow('node-a', { ms: 30 }));
  n1.relay.push(flow('node-a', { ms: 40, verdict: 'DROPPED', pod: 'legacy2' }));
  await until('the new drop on the follow stream', () => live.lines.some((l) => l.flow?.source.pod_name === 'legacy2'));
  t.notOk(live.lines.some((l) => l.flow?.verdict === 'FORWARDED'), 'the filter holds on the follow stream');

  n2.stop();
  await until('node-b unavailable', () => fx.hub.unavailable().includes('node-b'));
  await until('the node_status line', () => live.lines.some((l) => l.node_status?.state_change === 'NODE_UNAVAILABLE'));
  const after = await get('/v1/flows?last=10');
  t.same(after.lines[0].node_status.node_names, ['node-b'], 'an answer without a node says so first');
  t.match(after.lines[0].node_status.message, /node-b/);
  t.ok(after.lines.some((l: FlowResponse) => l.node_name === 'node-b'), 'its flows from before stay in the history');

  const nodes = (await get('/v1/relay/nodes')).lines[0].nodes as Array<{ node: string; state: string; flows_lost: number; counters: unknown[] }>;
  t.same(nodes.map((n) => [n.node, n.state]), [['node-a', 'connected'], ['node-b', 'unavailable']]);
  t.equal(nodes[0]!.flows_lost, 2, 'the ring\'s losses the agent reported');
  t.same(nodes[0]!.counters, [{ reason: 'auth required', direction: 'ingress', packets: 3, bytes: 180 }]);
});

t.test('a restarted relay stream sends the node\'s history again: it replaces, never doubles, what the server holds', async (t) => {
  const n = await agent('node-c', '10.3.0.0/24', [flow('node-c', { ms: 100 }), flow('node-c', { ms: 110 })], () => ({ applies: false }));
  t.teardown(() => n.stop());
  await until('node-c history', () => fx.hub.history({ node: 'node-c' }, 100).length === 2);
  n.history.add(flow('node-c', { ms: 120 })); // kept while the stream is down
  n.relay.stop();
  await until('node-c unavailable', () => fx.hub.unavailable().includes('node-c'));
  const watching = follow('/v1/flows?follow=true&node=node-c');
  t.teardown(() => watching.close());
  await new Promise((r) => setTimeout(r, 100));
  const again = new FlowRelay({ connection: n.conn, history: n.history, logger: silentLogger, flushMs: 10, observation: () => ({ auth_entries_json: '[]', counters: [], lost_in_ring: 0 }), explain: () => ({}) });
  again.start();
  t.teardown(() => again.stop());
  await until('node-c connected again', () => !fx.hub.unavailable().includes('node-c'));
  await until('the replayed history', () => fx.hub.history({ node: 'node-c' }, 100).length === 3);
  t.same(fx.hub.history({ node: 'node-c' }, 100).map((h) => h.time.slice(17, 23)), ['00.100', '00.110', '00.120'], 'each flow once, the one made while away included');
  t.same(watching.lines.filter((l) => l.flow), [], 'a replayed history is no news to a follower');
});

t.test('/v1/auth has every node\'s pairs from its relay; /v1/explain is answered by the agents that host the pods', async (t) => {
  const asked: string[] = [];
  const n1 = await agent('node-d', '10.4.0.0/24', [], (q) => {
    asked.push(q.toString());
    if (q.get('to') !== 'demo/backend') throw new NotFound(`no endpoint "${q.get('to')}"`, 'to');
    return { applies: true, node: 'node-d', explanations: [{ verdict: 'allow', authRequired: true }], text: 'ingress of backend: ALLOW (allowed-by-rule)' };
  });
  const n2 = await agent('node-e', '10.5.0.0/24', [], () => ({ applies: false }));
  t.teardown(() => { n1.stop(); n2.stop(); });
  await until('observations', () => fx.hub.auth().nodes.filter((n) => ['node-d', 'node-e'].includes(n.node) && n.entries.length > 0).length === 2);
  const auth = (await get('/v1/auth')).lines[0];
  const d = auth.nodes.find((n: { node: string }) => n.node === 'node-d');
  t.equal(d.entries[0].remote_spiffe_id, 'spiffe://example.org/ns/demo/sa/frontend');
  t.equal(d.state, 'connected');

  const ex = await get('/v1/explain?from=demo/frontend&to=demo/backend&port=8080&protocol=TCP');
  t.equal(ex.status, 200);
  t.same(ex.lines[0].explanations.map((e: { node: string }) => e.node), ['node-d'], 'the node that hosts the pod answers; the other has nothing to say');
  t.match(ex.lines[0].text, /\[node-d\]\ningress of backend: ALLOW/);
  t.match(asked[0], /from=demo%2Ffrontend&to=demo%2Fbackend&port=8080&protocol=TCP/);
  const none = await get('/v1/explain?from=demo/frontend&to=demo/nobody&port=80');
  // no connected agent hosts it, and nodes of the earlier tests are away: it may be on one of them
  t.equal(none.status, 503, 'a pod no connected agent hosts, while nodes are unavailable');
  t.match(none.lines[0].error.message, /unavailable: .*node-b/, 'the answer names the nodes that could not be asked');
  const bad = await get('/v1/explain?from=a&to=b&port=99999');
  t.same([bad.status, bad.lines[0].error.field], [400, 'port']);
});

t.test('callers without the admin token get 401 and no flow; a bad filter is refused naming it', async (t) => {
  for (const path of ['/v1/flows?last=5', '/v1/auth', '/v1/explain?from=a&to=b', '/v1/relay/nodes']) {
    const anon = await get(path, null);
    t.equal(anon.status, 401, `${path} without a token`);
    t.notMatch(anon.text, /node-a|spiffe:/, 'and nothing of the cluster');
    t.equal((await get(path, 'not-the-token-at-all-0123456789')).status, 401, `${path} with a wrong token`);
  }
  for (const [q, field] of [['verdict=MAYBE', 'verdict'], ['port=70000', 'port'], ['since=yesterday', 'since'], ['type=l7', 'type'], ['last=-1', 'last'], ['color=red', 'color']] as const) {
    const r = await get(`/v1/flows?${q}`);
    t.same([r.status, r.lines[0]?.error?.field], [400, field], `${q} is refused naming ${field}`);
  }
});

t.test('the node a relay stream speaks for is the one the registry binds to its SVID, not anything the agent says', async (t) => {
  // the flows claim node-a, but this agent's SVID is bound to node-f
  const n = await agent('node-f', '10.6.0.0/24', [flow('node-a', { ms: 500, pod: 'spoofed' })], () => ({ applies: false }));
  t.teardown(() => n.stop());
  await until('node-f history', () => fx.hub.history({ node: 'node-f' }, 10).length === 1);
  const lines = ((await get('/v1/flows?pod=spoofed')).lines as FlowResponse[]).filter((l) => l.flow);
  t.same(lines.map((l) => [l.node_name, l.flow.node_name]), [['node-f', 'node-f']], 'the answer and the flow name the node the stream is bound to');
});

t.test('an agent that has published no node is refused (it has no node to speak for) and relays once it has', async (t) => {
  const { attestAgent, call } = await import('../../helpers/server.js');
  const { ServerConnection } = await import('../../../agent/serverapi/index.js');
  const { FlowHistory } = await import('../../../agent/observe/index.js');
  const { randomBytes } = await import('node:crypto');
  const a = await attestAgent(fx.parts);
  const conn = new ServerConnection(`127.0.0.1:${fx.parts.port}`, fx.parts.td);
  conn.configure(fx.parts.ca.bundle().x509Authorities, { chain: a.chain, key: a.key.privateKey });
  const h = new FlowHistory(8);
  h.add(flow('node-g', { ms: 900, pod: 'early' }));
  const relay = new FlowRelay({ connection: conn, history: h, logger: silentLogger, flushMs: 10, minBackoffMs: 50, maxBackoffMs: 200, observation: () => ({ auth_entries_json: '[]', counters: [], lost_in_ring: 0 }), explain: () => ({}) });
  relay.start();
  t.teardown(() => { relay.stop(); conn.close(); a.client.close(); });
  await until('a refusal', () => relay.reconnects >= 2);
  t.notOk(fx.hub.nodes().some((n) => n.agent_id === a.agentId.toString()), 'nothing is kept for it');
  await call(a.client, 'PublishNode', { name: 'node-g', address: '192.0.2.77', wireguard_public_key: randomBytes(32).toString('base64'), pod_cidr: '10.77.0.0/24' });
  await until('node-g relaying', () => fx.hub.history({ node: 'node-g' }, 10).length === 1);
  t.equal(fx.hub.nodes().find((n) => n.node === 'node-g')?.agent_id, a.agentId.toString());
});
