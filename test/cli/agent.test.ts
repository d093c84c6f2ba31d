import t from 'tap';
import { agentId } from '../../spiffe/index.js';
import { startAdminApi, td } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

t.test('agent list prints an empty table, then agents; show, ban and evict act on one', async (t) => {
  const f = await startAdminApi(t, 'cli-agent');
  const run = against(f);
  const empty = await run(['agent', 'list']);
  t.equal(empty.code, 0, empty.stderr);
  t.match(empty.stdout, /^SPIFFE ID\s+ATTESTATION\s+SVID EXPIRES\s+BANNED\n$/);
  const id = agentId(td, 'join_token', 'node-1');
  await f.store.createAttestedNode({ spiffeId: id, attestationType: 'join_token', certSerial: '01', certNotAfter: 2_000_000_000 });
  const list = await run(['agent', 'list']);
  t.match(list.stdout, /spiffe:\/\/example\.org\/meshid\/agent\/join_token\/node-1\s+join_token\s+2033-05-18T03:33:20Z\s+no/);
  const show = await run(['agent', 'show', id.toString()]);
  t.match(show.stdout, /^Attestation type\s+: join_token$/m);
  t.equal((await run(['agent', 'ban', id.toString()])).code, 0);
  t.equal((await f.store.getAttestedNode(id)).banned, true);
  t.match((await run(['agent', 'list', '--banned'])).stdout, /node-1.*yes/);
  t.equal((await run(['-o', 'json', 'agent', 'list', '--not-banned'])).stdout.includes('node-1'), false);
  const evict = await run(['agent', 'evict', id.toString()]);
  t.equal(evict.code, 0);
  t.equal(await f.store.findAttestedNode(id), undefined);
  const gone = await run(['agent', 'show', id.toString()]);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /not found/);
});
