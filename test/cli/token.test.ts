import t from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

const web = 'spiffe://example.org/ns/default/sa/web';

t.test('token generate prints a join token the datastore accepts', async (t) => {
  const f = await startAdminApi(t, 'cli-token');
  const res = await against(f)(['token', 'generate', '--ttl', '5m']);
  t.equal(res.code, 0, res.stderr);
  const token = /^Token\s+: (\S+)$/m.exec(res.stdout)?.[1];
  t.match(token, /^[A-Za-z0-9_-]{43}$/);
  t.match(res.stdout, new RegExp(`^Agent ID\\s+: spiffe://example\\.org/meshid/agent/join_token/${token}$`, 'm'));
  await t.resolves(() => f.store.consumeJoinToken(token!));
  const json = await against(f)(['-o', 'json', 'token', 'generate', '--spiffe-id', 'spiffe://example.org/meshid/agent/join_token/node-9']);
  t.equal(JSON.parse(json.stdout).agent_id, 'spiffe://example.org/meshid/agent/join_token/node-9');
  const bad = await against(f)(['token', 'generate', '--spiffe-id', web]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /invalid agent_id \(--spiffe-id\)/);
});
