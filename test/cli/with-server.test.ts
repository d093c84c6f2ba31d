import { statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { systemClock } from '../../common/clock.js';
import { JsonLogger } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { MeshidServer } from '../../server/server.js';
import { tempDir } from '../server/adminapi/fixtures/adminapi.js';
import { meshid } from './fixtures/run.js';

t.test('meshid works against a whole meshid-server with the admin token file it made', async (t) => {
  const dir = tempDir(t, 'cli-server');
  const config = serverConfigSchema.parse({ data_dir: dir, trust_domain: 'mesh.test', bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory' });
  const server = new MeshidServer(config, { clock: systemClock, logger: new JsonLogger({ write: () => {} }, 'error') });
  t.teardown(() => server.stop());
  await server.start();
  const tokenFile = join(dir, 'admin.token');
  t.equal(statSync(tokenFile).mode & 0o777, 0o600);
  const env = { MESHID_SERVER: `http://127.0.0.1:${server.adminPort}`, MESHID_TOKEN_FILE: tokenFile };
  t.equal((await meshid(['healthcheck'], env)).code, 0);
  const created = await meshid(['-o', 'json', 'entry', 'create', '--k8s-sa', 'default/web', '--parent-id', 'spiffe://mesh.test/meshid/agent/join_token/n1'], env);
  t.equal(created.code, 0, created.stderr);
  t.equal(JSON.parse(created.stdout).spiffe_id, 'spiffe://mesh.test/ns/default/sa/web');
  t.equal((await server.store.listEntries()).items.length, 1);
  const noToken = await meshid(['entry', 'list'], { MESHID_SERVER: env.MESHID_SERVER, MESHID_ADMIN_TOKEN: 'x'.repeat(43) });
  t.equal(noToken.code, 1);
  await server.stop();
  t.equal((await meshid(['healthcheck'], env)).code, 1, 'not ready once stopped');
});
