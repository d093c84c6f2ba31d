import t from 'tap';
import { SvidCache } from '../../../agent/cache/index.js';
import type { ServerConnection } from '../../../agent/serverapi/connection.js';
import { AgentState } from '../../../agent/sync/state.js';
import { systemClock } from '../../../common/clock.js';
import { silentLogger } from '../../../common/log.js';
import { TrustDomain } from '../../../spiffe/index.js';
import { delta } from '../mutualauth/fixtures.js';

/** A server connection whose every call fails as an unreachable server's would, counting the calls. */
function downServer(): { connection: ServerConnection; calls: () => number } {
  let calls = 0;
  const connection = {
    unary: async () => { calls++; throw Object.assign(new Error('server down'), { code: 14, details: 'connect ECONNREFUSED' }); },
  } as unknown as ServerConnection;
  return { connection, calls: () => calls };
}

const entry = (id: string) => ({
  id, spiffe_id: `spiffe://example.org/ns/default/sa/${id}`, parent_id: 'spiffe://example.org/meshid/agent/join_token/n1/x',
  selectors: ['unix:uid:0'], x509_svid_ttl: 30, jwt_svid_ttl: 30, dns_names: [], hint: '', federates_with: [], revision: 1,
});

t.test('a stopped cache signs nothing, not even the retry that was waiting out its back-off', async (t) => {
  const state = new AgentState(TrustDomain.parse('example.org'));
  const server = downServer();
  const cache = new SvidCache({ state, connection: server.connection, clock: systemClock, logger: silentLogger, tickMs: 60_000 });
  cache.start();
  state.apply(delta({ entries: [entry('web')] as never }));
  const until = Date.now() + 5000;
  while (server.calls() === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  t.equal(server.calls(), 1, 'the first call was made and failed');
  cache.stop();
  await new Promise((r) => setTimeout(r, 2600)); // past the 2 s back-off
  t.equal(server.calls(), 1, 'no retry after stop()');
  state.apply(delta({ revision: 3, entries: [entry('db')] as never }));
  await new Promise((r) => setTimeout(r, 100));
  t.equal(server.calls(), 1, 'a new entry after stop() is not signed either');
});

t.test('a running cache does retry after its back-off (the test above can fail)', async (t) => {
  const state = new AgentState(TrustDomain.parse('example.org'));
  const server = downServer();
  const cache = new SvidCache({ state, connection: server.connection, clock: systemClock, logger: silentLogger, tickMs: 60_000 });
  t.teardown(() => cache.stop());
  cache.start();
  state.apply(delta({ entries: [entry('web')] as never }));
  const until = Date.now() + 8000;
  while (server.calls() < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.equal(server.calls(), 2, 'retried once the back-off was over');
});
