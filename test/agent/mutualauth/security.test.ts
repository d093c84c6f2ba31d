/**
 * What must never get an auth entry. The honest side is always a real
 * MutualAuth; the dishonest side is either a real one with bad material or a
 * hand-driven protocol peer (rawClient / rawServer) that sends what a real
 * agent never would.
 */
import t, { type Test } from 'tap';
import { Bundle } from '../../../spiffe/index.js';
import {
  agentIdOf, clientMessage, cluster, delta, entryKeys, HOUR, makeCa, MIN, mintSvid, nodes, rawClient, rawServer, saId, serverResult,
  type Agent, type Ca, type Cluster, type Svid,
  until,
} from './fixtures.js';

const pair = (localIdentity: number, remoteIdentity: number, remoteNodeId: number) => ({ localIdentity, remoteIdentity, remoteNodeId });
const past = (ms: number): Date => new Date(Date.now() - ms);

function nothingWritten(t: Test, c: Cluster): void {
  t.same(entryKeys(c.a.map), [], 'agent A wrote no entry');
  t.same(entryKeys(c.b.map), [], 'agent B wrote no entry');
}
const wl = (ag: Agent, ns: string, sa: string): Svid => ag.workloads.get(saId(ns, sa))!;
type Reply = { type: string; reason?: string; verdicts?: (0 | string)[] };

// ---- another trust domain ----

t.test('the client refuses a server agent whose SVID is from another trust domain', async (t) => {
  const c = await cluster(t);
  const evilAgent = mintSvid(makeCa('evil.org'), 'spiffe://evil.org/meshid/agent/join_token/node-b');
  c.ports.set(2, await rawServer(t, evilAgent, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, wl(c.b, 'b', 'db')]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-agent-untrusted');
  t.equal(c.a.auth.stats().batches.sent, 0, 'no batch went to it');
  nothingWritten(t, c);
});

t.test('the client refuses a server agent SVID with the registered agent ID but signed by a CA outside the bundle', async (t) => {
  const c = await cluster(t);
  const rogueAgent = mintSvid(makeCa('example.org'), c.b.agent.id.toString());
  c.ports.set(2, await rawServer(t, rogueAgent, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, wl(c.b, 'b', 'db')]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-agent-untrusted');
  nothingWritten(t, c);
});

t.test('an agent whose own agent SVID its bundle does not trust serves no one', async (t) => {
  const c = await cluster(t, { prepare: (ag) => { if (ag.nodeId === 2) ag.agent = mintSvid(makeCa('example.org'), ag.agent.id.toString()); } });
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'unreachable');
  t.ok(c.b.logs.lines.some((l) => l['msg'] === 'mutual-auth cannot serve: no usable agent SVID'));
  nothingWritten(t, c);
});

t.test('the server refuses a client agent whose SVID is from another trust domain, before any batch', async (t) => {
  const c = await cluster(t);
  const evil = makeCa('evil.org');
  const raw = await rawClient(c.b.auth.port, mintSvid(evil, 'spiffe://evil.org/meshid/agent/join_token/node-a'));
  t.teardown(() => raw.close());
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply, { type: 'refused', reason: 'peer-agent-untrusted' });
  await raw.session.closed;
  t.equal(c.b.auth.stats().failures['peer-agent-untrusted'], 1, 'counted');
  t.ok(c.b.logs.lines.some((l) => l['msg'] === 'mutual-auth session refused' && l['reason'] === 'peer-agent-untrusted'), 'logged with the reason');
  t.equal(c.b.auth.stats().batches.served, 0);
  nothingWritten(t, c);
});

t.test('the server refuses a workload SVID from another trust domain or another CA, even with a valid signature', async (t) => {
  const c = await cluster(t);
  const evil = makeCa('evil.org');
  const rogue = makeCa('example.org');
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  for (const [batch, svid] of [[1, mintSvid(evil, 'spiffe://evil.org/ns/a/sa/web')], [2, mintSvid(rogue, saId('a', 'web'))]] as const) {
    const reply = await raw.request(clientMessage(raw.session.ekm, batch, [[101, 201]], new Map([[101, svid]]))) as Reply;
    t.same(reply.verdicts, ['peer-svid-invalid']);
  }
  nothingWritten(t, c);
});

t.test('the client refuses a server workload SVID from another CA, even with a valid signature', async (t) => {
  const c = await cluster(t);
  const rogue = makeCa('example.org');
  const fake = mintSvid(rogue, saId('b', 'db'));
  c.ports.set(2, await rawServer(t, c.b.agent, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, fake]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-svid-invalid');
  t.equal(c.a.auth.stats().failures['peer-svid-invalid'], 1);
  nothingWritten(t, c);
});

// ---- expired certificates ----

t.test('the server refuses a client agent SVID that has expired', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, mintSvid(c.ca, c.a.agent.id.toString(), { notBefore: past(2 * HOUR), notAfter: past(MIN) }));
  t.teardown(() => raw.close());
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply, { type: 'refused', reason: 'peer-agent-untrusted' });
  nothingWritten(t, c);
});

t.test('the client refuses a server agent SVID that has expired', async (t) => {
  const c = await cluster(t);
  const expired = mintSvid(c.ca, c.b.agent.id.toString(), { notBefore: past(2 * HOUR), notAfter: past(MIN) });
  c.ports.set(2, await rawServer(t, expired, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, wl(c.b, 'b', 'db')]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-agent-untrusted');
  nothingWritten(t, c);
});

t.test('an expired workload SVID is refused by the server and by the client', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  const old = (ag: Agent, ns: string, sa: string): Svid => {
    const fresh = wl(ag, ns, sa);
    const o = mintSvid(c.ca, saId(ns, sa), { notBefore: past(2 * HOUR), notAfter: past(MIN) });
    return { ...o, key: o.key, chain: o.chain, id: fresh.id };
  };
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, old(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply.verdicts, ['peer-svid-invalid'], 'server side');

  const expiredDb = old(c.b, 'b', 'db');
  c.ports.set(2, await rawServer(t, c.b.agent, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, expiredDb]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-svid-invalid', 'client side');
  nothingWritten(t, c);
});

t.test('an agent does not prove with its own expired workload SVID: the pair fails on its side, locally or as refused by the peer', async (t) => {
  const c = await cluster(t);
  c.b.workloads.set(saId('b', 'db'), mintSvid(c.ca, saId('b', 'db'), { notBefore: past(2 * HOUR), notAfter: past(MIN) }));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'refused-by-peer');
  t.equal(r!.detail, 'local-svid-invalid');
  c.a.workloads.set(saId('a', 'web'), mintSvid(c.ca, saId('a', 'web'), { notBefore: past(2 * HOUR), notAfter: past(MIN) }));
  const sent = c.a.auth.stats().batches.sent;
  const [r2] = await c.a.auth.authenticate([pair(101, 202, 2)]);
  t.equal(r2!.reason, 'local-svid-invalid');
  t.equal(c.a.auth.stats().batches.sent, sent, 'nothing was sent');
  nothingWritten(t, c);
});

// ---- an agent that is not the one registered for the node ----

t.test('the client refuses a peer whose valid agent SVID is registered for another node than the one it meant to reach', async (t) => {
  const c = await cluster(t, { prepare: (ag, ca) => { if (ag.nodeId === 2) ag.agent = mintSvid(ca, agentIdOf('node-c')); } });
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-agent-mismatch');
  t.match(r!.detail, /node 2 is registered to agent/);
  nothingWritten(t, c);
});

t.test('the server maps a client agent to its own node: node C\'s agent cannot authenticate identities of node A, even with their keys', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, mintSvid(c.ca, agentIdOf('node-c')));
  t.teardown(() => raw.close());
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply.verdicts, ['remote-not-hosted']);
  t.equal(c.b.auth.stats().failures['remote-not-hosted'], 1);
  nothingWritten(t, c);
});

t.test('the server refuses an agent that the node registry does not hold for any node', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, mintSvid(c.ca, agentIdOf('node-z')));
  t.teardown(() => raw.close());
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply, { type: 'refused', reason: 'unknown-agent' });
  nothingWritten(t, c);
});

// ---- evicted and banned agents ----

t.test('an evicted agent (its node gone from the registry) loses its entries and cannot authenticate again', async (t) => {
  const c = await cluster(t);
  const [ok] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.ok(ok!.ok);
  c.b.state.apply(delta({ removed_nodes: [1] }));
  t.same(entryKeys(c.b.map), [], 'B dropped node 1\'s entries');
  const [r] = await c.a.auth.authenticate([pair(102, 202, 2)]);
  t.equal(r!.ok, false);
  t.equal(r!.reason, 'session-refused');
  t.equal(r!.detail, 'unknown-agent');
  t.same(entryKeys(c.b.map), [], 'B wrote nothing for the evicted agent');
  t.same(entryKeys(c.a.map), ['101/201/2'], 'A wrote nothing new');
});

t.test('a banned agent (node re-registered to another agent) is cut off mid-session, and refused afterwards', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  const good = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(good.verdicts, [0], 'accepted while registered');
  c.b.map.clear();
  const reg = nodes().find((n) => n.id === 1)!;
  c.b.state.apply(delta({ nodes: [{ ...reg, agent_id: agentIdOf('node-a-reattested') }] }));
  await raw.session.closed;
  await until(() => c.b.auth.stats().sessions.server === 0);
  t.equal(c.b.auth.stats().sessions.server, 0, 'the server ended the session when the registry changed');
  const again = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => again.close());
  const reply = await again.request(clientMessage(again.session.ekm, 1, [[102, 202]], new Map([[102, wl(c.a, 'a', 'api')]]))) as Reply;
  t.same(reply, { type: 'refused', reason: 'unknown-agent' });
  nothingWritten(t, c);
});

t.test('an agent whose CA left the trust bundle is no longer trusted: the open session is refused at its next batch', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  const good = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(good.verdicts, [0]);
  c.b.map.clear();
  const next: Ca = makeCa('example.org');
  c.b.state.apply(delta({ bundles: [{ trust_domain: 'example.org', document: Buffer.from(new Bundle(next.td, [next.der], []).toJson()) }] }));
  const reply = await raw.request(clientMessage(raw.session.ekm, 2, [[102, 201]], new Map([[102, wl(c.a, 'a', 'api')]]))) as Reply;
  t.same(reply, { type: 'refused', reason: 'peer-agent-untrusted' });
  nothingWritten(t, c);
});

// ---- replay ----

t.test('a proof signed over session A\'s exported keying material is refused in session B (EKM ‖ side ‖ batch ‖ pairs binding)', async (t) => {
  const c = await cluster(t);
  const sessionA = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => sessionA.close());
  const captured = clientMessage(sessionA.session.ekm, 1, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]));
  const first = await sessionA.request(captured) as Reply;
  t.same(first.verdicts, [0], 'the proof is good in the session it was made for');
  c.b.map.clear();

  const sessionB = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => sessionB.close());
  t.notSame(sessionB.session.ekm, sessionA.session.ekm, 'each session exports different keying material');
  const replayed = await sessionB.request(captured) as Reply;
  t.same(replayed.verdicts, ['bad-signature']);
  t.equal(c.b.auth.stats().failures['bad-signature'], 1);

  const renumbered = await sessionA.request({ ...captured, batch: 2 }) as Reply;
  t.same(renumbered.verdicts, ['bad-signature'], 'under another batch id in the same session: the batch id is signed');
  const extended = clientMessage(sessionA.session.ekm, 3, [[101, 201]], new Map([[101, wl(c.a, 'a', 'web')]]));
  const widened = await sessionA.request({ ...extended, pairs: [[101, 201], [101, 202]] }) as Reply;
  t.same(widened.verdicts, ['bad-signature', 'bad-signature'], 'a proof over one pair does not cover another');
  const again = await sessionA.request(captured) as Reply;
  t.same(again, { type: 'refused', reason: 'replayed-batch' }, 'the same batch id twice in one session ends it');
  nothingWritten(t, c);
});

t.test('a proof signed by a key other than the workload SVID\'s is refused', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  const other = mintSvid(c.ca, saId('a', 'web'));
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, { ...wl(c.a, 'a', 'web'), key: other.key }]]))) as Reply;
  t.same(reply.verdicts, ['bad-signature']);
  const none = await raw.request({ type: 'authenticate', batch: 2, pairs: [[101, 201]], proofs: [] }) as Reply;
  t.same(none.verdicts, ['missing-proof']);
  nothingWritten(t, c);
});

// ---- identities the peer does not host ----

t.test('the server refuses a client identity its node does not host and a server identity this node does not host, even with genuine keys', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  // Agent A holds (say, stole) the SVID of 201, which runs on node 2, not on node 1.
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[201, 202]], new Map([[201, wl(c.b, 'b', 'db')]]))) as Reply;
  t.same(reply.verdicts, ['remote-not-hosted']);
  const reply2 = await raw.request(clientMessage(raw.session.ekm, 2, [[101, 301]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply2.verdicts, ['local-not-hosted']);
  const reply3 = await raw.request(clientMessage(raw.session.ekm, 3, [[101, 999]], new Map([[101, wl(c.a, 'a', 'web')]]))) as Reply;
  t.same(reply3.verdicts, ['unknown-identity']);
  nothingWritten(t, c);
});

t.test('the client does not ask a node for an identity it does not host, and refuses a server that answers for or signs pairs it did not ask', async (t) => {
  const c = await cluster(t);
  const [r] = await c.a.auth.authenticate([pair(101, 301, 2)]);
  t.equal(r!.reason, 'remote-not-hosted');
  t.equal(c.a.auth.stats().batches.sent, 0);
  // A server that answers with more verdicts than pairs asked, then one whose proof covers a pair not asked.
  let mode: 'extra verdict' | 'signs more' = 'extra verdict';
  const signer = new Map([[201, wl(c.b, 'b', 'db')]]);
  c.ports.set(2, await rawServer(t, c.b.agent, (req, s) => {
    if (mode === 'extra verdict') { const good = serverResult(s.ekm, req.batch, req.pairs, signer); return { ...good, verdicts: [...good.verdicts, 0] }; }
    return { ...serverResult(s.ekm, req.batch, [...req.pairs, [102, 201]], signer), verdicts: req.pairs.map(() => 0) };
  }));
  const [r2] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r2!.ok, false);
  t.equal(r2!.reason, 'malformed');
  mode = 'signs more';
  const [r3] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r3!.reason, 'bad-signature');
  nothingWritten(t, c);
});

// ---- a workload SVID of another ServiceAccount ----

t.test('a workload SVID whose SPIFFE ID is not the identity\'s ServiceAccount is refused by the server, with a valid chain and signature', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  t.teardown(() => raw.close());
  const reply = await raw.request(clientMessage(raw.session.ekm, 1, [[101, 201]], new Map([[101, mintSvid(c.ca, saId('a', 'other'))]]))) as Reply;
  t.same(reply.verdicts, ['peer-svid-mismatch']);
  nothingWritten(t, c);
});

t.test('a workload SVID whose SPIFFE ID is not the identity\'s ServiceAccount is refused by the client, with a valid chain and signature', async (t) => {
  const c = await cluster(t);
  const other = mintSvid(c.ca, saId('b', 'other'));
  c.ports.set(2, await rawServer(t, c.b.agent, (req, s) => serverResult(s.ekm, req.batch, req.pairs, new Map([[201, other]]))));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'peer-svid-mismatch');
  nothingWritten(t, c);
});

t.test('an agent whose SVID source hands out another ServiceAccount\'s SVID for an identity does not use it', async (t) => {
  const c = await cluster(t);
  c.b.workloads.set(saId('b', 'db'), mintSvid(c.ca, saId('b', 'other')));
  const [r] = await c.a.auth.authenticate([pair(101, 201, 2)]);
  t.equal(r!.reason, 'refused-by-peer');
  t.equal(r!.detail, 'local-svid-invalid');
  nothingWritten(t, c);
});

t.test('in a mixed batch only the good pairs are written, on both sides', async (t) => {
  const c = await cluster(t);
  c.b.workloads.delete(saId('b', 'cache'));
  const results = await c.a.auth.authenticate([pair(101, 201, 2), pair(101, 202, 2), pair(102, 201, 2), pair(102, 301, 2)]);
  t.same(results.map((r) => r.reason ?? 'ok'), ['ok', 'refused-by-peer', 'ok', 'remote-not-hosted']);
  t.same(entryKeys(c.a.map), ['101/201/2', '102/201/2']);
  t.same(entryKeys(c.b.map), ['201/101/1', '201/102/1']);
});
