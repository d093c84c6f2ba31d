import t from 'tap';
import { FakeClock } from '../../../common/clock.js';
import { agentId, SelectorSet } from '../../../spiffe/index.js';
import { auditLines, startAdminApi, td, type AdminFixture } from './fixtures/adminapi.js';

function attest(f: AdminFixture, node: string, type = 'join_token') {
  return f.store.createAttestedNode({
    spiffeId: agentId(td, type, node), attestationType: type, certSerial: 'abcd', certNotAfter: 2_000_000_000,
    selectors: SelectorSet.parse([`${type}:${node}`]),
  });
}
const path = (node: string, type = 'join_token') => `/v1/agents/${encodeURIComponent(agentId(td, type, node).toString())}`;

t.test('GET /v1/agents lists attested agents with filters and pages; GET /v1/agents/{id} shows one', async (t) => {
  const f = await startAdminApi(t, 'agents');
  const empty = await f.call('GET', '/v1/agents');
  t.same(empty.json, { agents: [], next_page_token: '' });
  await attest(f, 'n1');
  await attest(f, 'n2');
  await attest(f, 'n3', 'k8s_psat');
  const all = await f.call('GET', '/v1/agents');
  t.equal(all.json.agents.length, 3);
  const one = await f.call('GET', path('n1'));
  t.equal(one.status, 200);
  t.same(one.json, {
    spiffe_id: 'spiffe://example.org/meshid/agent/join_token/n1', attestation_type: 'join_token', x509_svid_serial_number: 'abcd',
    x509_svid_expires_at: 2_000_000_000, banned: false, can_reattest: false, selectors: ['join_token:n1'],
    created_at: one.json.created_at, updated_at: one.json.updated_at,
  });
  const psat = await f.call('GET', '/v1/agents?attestation_type=k8s_psat');
  t.same(psat.json.agents.map((a: { spiffe_id: string }) => a.spiffe_id), ['spiffe://example.org/meshid/agent/k8s_psat/n3']);
  const page = await f.call('GET', '/v1/agents?page_size=2');
  t.equal(page.json.agents.length, 2);
  t.not(page.json.next_page_token, '');
  const rest = await f.call('GET', `/v1/agents?page_size=2&page_token=${encodeURIComponent(page.json.next_page_token)}`);
  t.equal(rest.json.agents.length, 1);
  t.equal(rest.json.next_page_token, '');

  t.equal((await f.call('GET', path('missing'))).status, 404);
  const badId = await f.call('GET', '/v1/agents/not-a-spiffe-id');
  t.equal(badId.status, 400);
  t.equal(badId.json.error.field, 'id');
  const badFilter = await f.call('GET', '/v1/agents?banned=maybe');
  t.equal(badFilter.status, 400);
  t.equal(badFilter.json.error.field, 'banned');
});

t.test('ban marks an agent banned; evict (POST :evict or DELETE) removes it; each is audited', async (t) => {
  const f = await startAdminApi(t, 'ban');
  await attest(f, 'n1');
  await attest(f, 'n2');
  await attest(f, 'n3');
  const banned = await f.call('POST', `${path('n1')}:ban`);
  t.equal(banned.status, 200);
  t.equal(banned.json.banned, true);
  t.equal((await f.store.getAttestedNode(agentId(td, 'join_token', 'n1'))).banned, true);
  const onlyBanned = await f.call('GET', '/v1/agents?banned=true');
  t.same(onlyBanned.json.agents.map((a: { spiffe_id: string }) => a.spiffe_id), ['spiffe://example.org/meshid/agent/join_token/n1']);
  const notBanned = await f.call('GET', '/v1/agents?banned=false');
  t.equal(notBanned.json.agents.length, 2);

  const evicted = await f.call('POST', `${path('n2')}:evict`);
  t.equal(evicted.status, 200);
  t.equal(evicted.json.spiffe_id, 'spiffe://example.org/meshid/agent/join_token/n2');
  t.equal(await f.store.findAttestedNode(agentId(td, 'join_token', 'n2')), undefined);
  const deleted = await f.call('DELETE', path('n3'));
  t.equal(deleted.status, 200);
  t.equal(await f.store.findAttestedNode(agentId(td, 'join_token', 'n3')), undefined);
  const again = await f.call('POST', `${path('n3')}:evict`);
  t.equal(again.status, 404);
  t.same(auditLines(f).map((l) => [l.action, l.target, l.result]), [
    ['agent.ban', 'spiffe://example.org/meshid/agent/join_token/n1', 'ok'],
    ['agent.evict', 'spiffe://example.org/meshid/agent/join_token/n2', 'ok'],
    ['agent.evict', 'spiffe://example.org/meshid/agent/join_token/n3', 'ok'],
    ['agent.evict', 'spiffe://example.org/meshid/agent/join_token/n3', 'error'],
  ]);
});

t.test('POST /v1/tokens makes a one-time join token that the datastore accepts once', async (t) => {
  const clock = new FakeClock(Date.now());
  const f = await startAdminApi(t, 'tokens', { clock });
  const res = await f.call('POST', '/v1/tokens', {});
  t.equal(res.status, 201);
  t.match(res.json.token, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
  t.equal(res.json.expires_at, Math.floor(clock.now().getTime() / 1000) + 600, 'default TTL 600 s');
  t.equal(res.json.agent_id, `spiffe://example.org/meshid/agent/join_token/${res.json.token}`);
  const consumed = await f.store.consumeJoinToken(res.json.token);
  t.equal(consumed.agentId, undefined);
  await t.rejects(() => f.store.consumeJoinToken(res.json.token), 'a token works once');

  const fixed = await f.call('POST', '/v1/tokens', { ttl: 60, agent_id: 'spiffe://example.org/meshid/agent/join_token/node-7' });
  t.equal(fixed.status, 201);
  t.equal(fixed.json.agent_id, 'spiffe://example.org/meshid/agent/join_token/node-7');
  t.equal(fixed.json.expires_at, Math.floor(clock.now().getTime() / 1000) + 60);
  t.not(fixed.json.token, res.json.token);
  clock.advance(61_000);
  await t.rejects(() => f.store.consumeJoinToken(fixed.json.token), 'an expired token is refused');

  for (const [body, field] of [
    [{ ttl: 0 }, 'ttl'], [{ ttl: 'long' }, 'ttl'], [{ ttl: 8 * 86400 }, 'ttl'], [{ agent_id: 'spiffe://example.org/ns/default/sa/web' }, 'agent_id'],
    [{ agent_id: 'spiffe://other.org/meshid/agent/x/y' }, 'agent_id'], [{ agent_id: 'nope' }, 'agent_id'], [{ who: 1 }, 'who'],
  ] as const) {
    const bad = await f.call('POST', '/v1/tokens', body);
    t.equal(bad.status, 400, JSON.stringify(body));
    t.equal(bad.json.error.field, field);
  }
  const audits = auditLines(f);
  t.equal(audits.length, 9);
  t.match(audits[0]!.target, /^join_token [0-9a-f]{16}$/);
  t.match(audits[1]!.target, /^spiffe:\/\/example\.org\/meshid\/agent\/join_token\/node-7 \(join_token [0-9a-f]{16}\)$/);
  const logged = JSON.stringify(f.logs.lines);
  t.notMatch(logged, res.json.token, 'the token itself is never logged');
  t.notMatch(logged, fixed.json.token);
});
