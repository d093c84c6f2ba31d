import t from 'tap';
import {
  agentId, matchAgentOf, matchAny, matchId, matchMemberOf, matchOneOf, matchUriSans, serverId, serviceAccountId, SpiffeId, TrustDomain,
} from '../../spiffe/index.js';

const td = TrustDomain.parse('example.org');
const other = TrustDomain.parse('other.org');
const web = serviceAccountId(td, 'default', 'web');
const db = serviceAccountId(td, 'default', 'db');
const agent = agentId(td, 'k8s_psat', 'cluster', 'node-1');

t.test('matchId accepts exactly the expected ID and names both otherwise', async (tt) => {
  tt.equal(matchId(web)(SpiffeId.parse(web.toString())), undefined, 'an equal ID parsed afresh');
  tt.equal(matchId(web)(db), `${db} is not ${web}`);
  tt.match(matchId(web)(serviceAccountId(other, 'default', 'web')), /is not spiffe:\/\/example\.org/, 'same path, other trust domain');
});

t.test('matchOneOf accepts any listed ID and lists them otherwise', async (tt) => {
  const m = matchOneOf(web, db);
  tt.equal(m(db), undefined);
  tt.equal(m(web), undefined);
  tt.equal(m(agent), `${agent} is not one of ${web}, ${db}`);
});

t.test('matchMemberOf and matchAgentOf look at the trust domain and, for agents, the reserved path', async (tt) => {
  tt.equal(matchMemberOf(td)(web), undefined);
  tt.equal(matchMemberOf(td)(serviceAccountId(other, 'a', 'b')), 'spiffe://other.org/ns/a/sa/b is not a member of trust domain example.org');
  tt.equal(matchAgentOf(td)(agent), undefined);
  tt.match(matchAgentOf(td)(web), /is not an agent of trust domain example\.org/, 'a workload is not an agent');
  tt.match(matchAgentOf(td)(serverId(td)), /is not an agent/, 'the server is not an agent');
  tt.match(matchAgentOf(td)(agentId(other, 'k8s_psat', 'cluster', 'node-1')), /is not an agent of trust domain example\.org/, 'an agent of another trust domain');
  tt.equal(matchAny()(agentId(other, 'x', 'y', 'z')), undefined);
});

t.test('matchUriSans wants exactly one URI SAN that is a SPIFFE ID the matcher accepts', async (tt) => {
  const m = matchId(serverId(td));
  tt.equal(matchUriSans([serverId(td).toString()], m), undefined);
  tt.match(matchUriSans([], m), /no URI SAN/);
  tt.match(matchUriSans([serverId(td).toString(), web.toString()], m), /2 URI SANs/, 'two SANs, even if one matches');
  tt.match(matchUriSans(['https://example.org/meshid/server'], m), /not a SPIFFE ID/);
  tt.match(matchUriSans([web.toString()], m), /is not spiffe:\/\/example\.org\/meshid\/server/);
});
