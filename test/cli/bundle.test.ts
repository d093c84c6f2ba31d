import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { derFromPem } from '../../spiffe/index.js';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

t.test('bundle show, set, list and delete', async (t) => {
  const own = await startAdminApi(t, 'cli-bundle');
  const partner = await startAdminApi(t, 'cli-bundle-partner');
  const run = against(own);
  const pem = await run(['bundle', 'show']);
  t.equal(pem.code, 0);
  t.same(derFromPem(pem.stdout), own.ca.bundle().x509Authorities);
  const doc = await run(['bundle', 'show', '--format', 'spiffe']);
  t.same(JSON.parse(doc.stdout), own.ca.bundle().toJwks());

  const file = join(own.dir, 'partner.json');
  writeFileSync(file, JSON.stringify(partner.ca.bundle().toJwks()));
  const set = await run(['bundle', 'set', '--id', 'partner.example', '-f', file]);
  t.equal(set.code, 0, set.stderr);
  const pemFile = join(own.dir, 'other.pem');
  writeFileSync(pemFile, partner.ca.bundle().x509Pem());
  t.equal((await run(['bundle', 'set', '--id', 'other.example', '-f', pemFile, '--format', 'pem'])).code, 0);
  const list = await run(['bundle', 'list']);
  t.match(list.stdout, /^TRUST DOMAIN\s+X509 AUTHORITIES\s+JWT AUTHORITIES\s+SEQUENCE\s+UPDATED$/m);
  t.match(list.stdout, /^other\.example\s+1\s+0\s/m);
  t.match(list.stdout, /^partner\.example\s+1\s+1\s/m);
  const own409 = await run(['bundle', 'set', '--id', 'example.org', '-f', file]);
  t.equal(own409.code, 1);
  t.match(own409.stderr, /trust_domain \(--id\)/);
  t.equal((await run(['bundle', 'delete', '--id', 'other.example'])).code, 0);
  t.same((await own.store.listFederatedBundles()).map((b) => b.trustDomain.name), ['partner.example']);
});
