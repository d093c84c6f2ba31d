import t from 'tap';
import { ServerConnection, parseServerList } from '../../../agent/serverapi/connection.js';
import { renewalDueAt } from '../../../agent/cache/index.js';
import { freePort } from '../../helpers/postgres.js';
import { attestAgent, startServerParts } from '../../helpers/server.js';

t.test('server lists: HOST:PORT, several, checked', async (t) => {
  t.same(parseServerList('a:1'), ['a:1']);
  t.same(parseServerList('a:1, b:2,a:1'), ['a:1', 'b:2'], 'trimmed, duplicates once');
  t.same(parseServerList('[::1]:8081,10.0.0.1:8081'), ['[::1]:8081', '10.0.0.1:8081']);
  t.throws(() => parseServerList(''), /no server address/);
  t.throws(() => parseServerList('a:1,b'), /"b" is not HOST:PORT/);
});

t.test('a call to a server that is down is made again on the next one, which then stays current', async (t) => {
  const parts = await startServerParts();
  t.teardown(() => parts.stop());
  const agent = await attestAgent(parts);
  agent.client.close();
  const dead = `127.0.0.1:${await freePort()}`;
  const conn = new ServerConnection(`${dead},127.0.0.1:${parts.port}`, parts.td);
  t.teardown(() => conn.close());
  conn.configure(parts.ca.bundle().x509Authorities, { chain: agent.chain, key: agent.key.privateKey });
  t.equal(conn.address, dead, 'the first server listed is tried first');
  const res = await conn.unary<{ svid: { spiffe_id: string } }>('RenewAgent', { csr: (await import('../../helpers/server.js')).csrFor(agent.key) }, 5000);
  t.equal(res.svid.spiffe_id, agent.agentId.toString(), 'answered by the live server');
  t.equal(conn.failovers, 1, 'the dead one was set aside once');
  t.equal(conn.address, `127.0.0.1:${parts.port}`, 'and the live one is current now');
  // a refusal is an answer, not a server down: not repeated elsewhere
  const refused = await t.rejects(() => conn.unary('BatchNewX509SVID', { params: [] }, 5000)) as unknown as { code: number };
  t.equal(refused.code, 3, 'InvalidArgument comes back as it is');
  t.equal(conn.failovers, 1);
});

t.test('a server set aside comes back after its back-off; every one down: the call fails with the last error', async (t) => {
  let now = 1_000_000;
  const a = `127.0.0.1:${await freePort()}`;
  const b = `127.0.0.1:${await freePort()}`;
  const conn = new ServerConnection(`${a},${b}`, (await import('../../../spiffe/index.js')).TrustDomain.parse('example.org'), { now: () => now, random: () => 0.5 });
  t.teardown(() => conn.close());
  conn.configure([], undefined);
  const err = await t.rejects(() => conn.unary('RenewAgent', {}, 2000)) as unknown as { code: number };
  t.equal(err.code, 14, 'UNAVAILABLE once both were tried');
  t.equal(conn.failovers, 2);
  now += 999; // both still aside (1 s each, ±0 with random 0.5): the current one is used anyway
  t.equal(conn.address, a);
  now += 2; // a's second-long back-off is over
  conn.failed(); // a fails again: 2 s now
  t.equal(conn.address, b);
});

t.test('renewal time: half life, or availability_target before expiry when the SVID lives longer than it', async (t) => {
  const h = 3600_000;
  t.equal(renewalDueAt(0, h), h / 2, 'no target: half life');
  t.equal(renewalDueAt(0, 48 * h, 24 * h), 24 * h);
  t.equal(renewalDueAt(0, 72 * h, 24 * h), 48 * h, 'a longer life: renewed when 24 h remain');
  t.equal(renewalDueAt(0, 12 * h, 24 * h), 6 * h, 'a life shorter than the target: half life (never a renewal loop)');
});

t.test('a server that presents another ID than its trust domain\'s server ID is refused before any call reaches it', async (t) => {
  const parts = await startServerParts();
  t.teardown(() => parts.stop());
  const agent = await attestAgent(parts);
  agent.client.close();
  const { TrustDomain } = await import('../../../spiffe/index.js');
  const conn = new ServerConnection(`127.0.0.1:${parts.port}`, TrustDomain.parse('other.org'));
  t.teardown(() => conn.close());
  conn.configure(parts.ca.bundle().x509Authorities, { chain: agent.chain, key: agent.key.privateKey });
  const { csrFor } = await import('../../helpers/server.js');
  const err = await t.rejects(() => conn.unary('RenewAgent', { csr: csrFor(agent.key) }, 5000)) as unknown as { code: number; details: string };
  t.equal(err.code, 14, 'UNAVAILABLE: the TLS handshake failed');
  t.match(err.details, `server refused: spiffe://${parts.td.name}/meshid/server is not spiffe://other.org/meshid/server`);
});
