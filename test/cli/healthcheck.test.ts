import t from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { meshid } from './fixtures/run.js';

t.test('healthcheck exits 0 when the server is ready and 1 when it is not or cannot be reached', async (t) => {
  const f = await startAdminApi(t, 'cli-health', { ready: false });
  const notReady = await meshid(['--server', f.url, 'healthcheck']);
  t.equal(notReady.code, 1);
  t.match(notReady.stderr, /is not ready \(HTTP 503\)/);
  f.ready.value = true;
  const ready = await meshid(['--server', f.url, 'healthcheck']);
  t.equal(ready.code, 0, ready.stderr);
  t.match(ready.stdout, /meshid-server at http:\/\/127\.0\.0\.1:\d+ is ready/);
  const port = Number(new URL(f.url).port);
  await f.api.stop();
  const down = await meshid(['healthcheck'], { MESHID_SERVER: `http://127.0.0.1:${port}` });
  t.equal(down.code, 1);
  t.match(down.stderr, /cannot reach meshid-server at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
});
