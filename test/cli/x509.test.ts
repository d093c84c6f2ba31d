import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { derFromPem } from '../../spiffe/index.js';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { against } from './fixtures/run.js';

const exec = promisify(execFile);
const web = 'spiffe://example.org/ns/default/sa/web';

t.test('x509 mint --write DIR writes an SVID that openssl verifies against bundle.pem, and key.pem with mode 0600', async (t) => {
  const f = await startAdminApi(t, 'cli-x509');
  const dir = join(f.dir, 'svid');
  const res = await against(f)(['x509', 'mint', '--spiffe-id', web, '--ttl', '10m', '--dns', 'web.default.svc', '--write', dir]);
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /wrote the X509-SVID of spiffe:\/\/example\.org\/ns\/default\/sa\/web/);
  const verify = await exec('openssl', ['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'svid.pem')]);
  t.match(verify.stdout, /svid\.pem: OK/);
  t.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
  const text = (await exec('openssl', ['x509', '-in', join(dir, 'svid.pem'), '-noout', '-text'])).stdout;
  t.match(text, /URI:spiffe:\/\/example\.org\/ns\/default\/sa\/web/);
  t.match(text, /DNS:web\.default\.svc/);
  const certKey = (await exec('openssl', ['x509', '-in', join(dir, 'svid.pem'), '-noout', '-pubkey'])).stdout;
  const ownKey = (await exec('openssl', ['pkey', '-in', join(dir, 'key.pem'), '-pubout'])).stdout;
  t.equal(certKey, ownKey, 'the certificate holds the key written beside it');
  t.same(derFromPem(readFileSync(join(dir, 'bundle.pem'), 'utf8')), f.ca.bundle().x509Authorities);

  const printed = await against(f)(['x509', 'mint', '--spiffe-id', web]);
  t.equal(printed.code, 0);
  t.match(printed.stdout, /^X509-SVID:\n-----BEGIN CERTIFICATE-----/);
  t.match(printed.stdout, /Private key:\n-----BEGIN PRIVATE KEY-----/);
  t.match(printed.stdout, /Root CAs:\n-----BEGIN CERTIFICATE-----/);

  const bad = await against(f)(['x509', 'mint', '--spiffe-id', 'spiffe://other.org/x', '--write', join(f.dir, 'never')]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /spiffe_id/);
  t.throws(() => statSync(join(f.dir, 'never')), 'nothing is written when the server refuses');
});
