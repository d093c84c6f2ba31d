import t from 'tap';
import { BundleSet, verifyJwtSvid } from '../../spiffe/index.js';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

const web = 'spiffe://example.org/ns/default/sa/web';

t.test('jwt mint prints a token whose sub is the SPIFFE ID and that verifies for the audience', async (t) => {
  const f = await startAdminApi(t, 'cli-jwt');
  const res = await against(f)(['jwt', 'mint', '--spiffe-id', web, '--audience', 'api', '--audience', 'db', '--ttl', '60']);
  t.equal(res.code, 0, res.stderr);
  const token = res.stdout.trim();
  const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
  t.equal(claims.sub, web);
  t.same(claims.aud, ['api', 'db']);
  t.equal(verifyJwtSvid(token, new BundleSet([f.ca.bundle()]).jwt, 'api', new Date()).spiffeId.toString(), web);
  const noAudience = await against(f)(['jwt', 'mint', '--spiffe-id', web]);
  t.equal(noAudience.code, 2);
  t.match(noAudience.stderr, /--audience/);
});
