import t from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

t.test('identity list shows identities with their SPIFFE IDs', async (t) => {
  const f = await startAdminApi(t, 'cli-identity');
  const identity = await f.store.allocateIdentity('k', { app: 'web' }, { namespace: 'shop', name: 'web' });
  const res = await against(f)(['identity', 'list']);
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /^ID\s+NAMESPACE\s+SERVICE ACCOUNT\s+SPIFFE ID\s+LABELS$/m);
  t.match(res.stdout, new RegExp(`^${identity.id}\\s+shop\\s+web\\s+spiffe://example\\.org/ns/shop/sa/web\\s+app=web$`, 'm'));
});
