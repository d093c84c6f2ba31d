import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_PSAT_TOKEN_PATH, K8sPsatPlugin } from '../../../agent/attestation/k8spsat.js';
import { MeshidError } from '../../../spiffe/index.js';

t.test('k8s_psat plugin sends the cluster and the projected token, reading the file again on each attestation (the kubelet rotates it)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `meshid-psat-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tokenPath = join(dir, 'token');
  writeFileSync(tokenPath, 'first.token.value\n');
  const plugin = new K8sPsatPlugin({ cluster: 'prod-eu', tokenPath });
  t.equal(plugin.type, 'k8s_psat');
  t.same(JSON.parse((await plugin.payload()).toString()), { cluster: 'prod-eu', token: 'first.token.value' });
  writeFileSync(tokenPath, 'rotated.token.value');
  t.same(JSON.parse((await plugin.payload()).toString()), { cluster: 'prod-eu', token: 'rotated.token.value' });
  t.equal(new K8sPsatPlugin({ cluster: 'c' }).tokenPath, DEFAULT_PSAT_TOKEN_PATH);
  t.equal(DEFAULT_PSAT_TOKEN_PATH, '/var/run/secrets/tokens/meshid-agent');
});

t.test('k8s_psat plugin fails with the file named when the token is missing or empty', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `meshid-psat-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = new K8sPsatPlugin({ cluster: 'c', tokenPath: join(dir, 'absent') });
  const e1 = await missing.payload().catch((e: MeshidError) => e);
  t.equal((e1 as MeshidError).code, 'failed_precondition');
  t.match((e1 as Error).message, /absent: ENOENT/);
  writeFileSync(join(dir, 'empty'), '\n');
  const e2 = await new K8sPsatPlugin({ cluster: 'c', tokenPath: join(dir, 'empty') }).payload().catch((e: MeshidError) => e);
  t.match((e2 as Error).message, /is empty/);
  t.throws(() => new K8sPsatPlugin({ cluster: '' }), /cluster name/);
});
