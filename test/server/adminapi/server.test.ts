import { request as httpRequest } from 'node:http';
import t from 'tap';
import { TOKEN, auditLines, startAdminApi } from './fixtures/adminapi.js';

const entry = {
  spiffe_id: 'spiffe://example.org/ns/default/sa/web',
  parent_id: 'spiffe://example.org/meshid/agent/join_token/node-1',
  selectors: ['k8s:ns:default', 'k8s:sa:web'],
};

t.test('every /v1 route refuses a missing or wrong bearer token with 401 and an error body only', async (t) => {
  const f = await startAdminApi(t, 'auth');
  const created = await f.call('POST', '/v1/entries', entry);
  t.equal(created.status, 201);
  const probes: [string, string, unknown?][] = [
    ['GET', '/v1/entries'], ['GET', `/v1/entries/${created.json.id}`], ['POST', '/v1/entries', entry],
    ['DELETE', `/v1/entries/${created.json.id}`], ['POST', '/v1/tokens', {}], ['GET', '/v1/bundle'],
    ['GET', '/v1/agents'], ['POST', '/v1/svids/jwt', { spiffe_id: 'spiffe://example.org/x', audience: ['a'] }],
    ['GET', '/v1/no-such-route'], ['PUT', '/v1/bundles/partner.example', { keys: [] }],
  ];
  const wrongHeaders: Record<string, string>[] = [
    {}, { authorization: 'Bearer wrong-token-of-some-length' }, { authorization: `Bearer ${TOKEN}x` },
    { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` }, { authorization: TOKEN },
  ];
  for (const headers of wrongHeaders) {
    for (const [method, path, body] of probes) {
      const res = await fetch(f.url + path, { method, headers, ...(body ? { body: JSON.stringify(body) } : {}) });
      const text = await res.text();
      t.equal(res.status, 401, `${method} ${path} with ${JSON.stringify(headers)}`);
      t.same(JSON.parse(text), { error: { code: 'unauthenticated', message: 'a valid bearer token is required' } });
      t.notMatch(text, /spiffe:\/\/|example\.org/, 'nothing about the store leaks');
      t.equal(res.headers.get('www-authenticate'), 'Bearer realm="meshid"');
    }
  }
  t.equal((await f.store.listEntries()).items.length, 1, 'no refused request changed anything');
  t.equal((await f.store.listEntries()).items[0]!.id, created.json.id);
  t.equal(auditLines(f).length, 1, 'only the authorised create was audited');
});

t.test('a refused caller cannot make the server read its body: 401 comes before 413 and 400', async (t) => {
  const f = await startAdminApi(t, 'auth-body');
  const big = await fetch(f.url + '/v1/entries', { method: 'POST', body: 'x'.repeat(2 * 1024 * 1024) });
  t.equal(big.status, 401);
  const bad = await fetch(f.url + '/v1/entries', { method: 'POST', body: '{not json' });
  t.equal(bad.status, 401);
});

t.test('/live, /ready and /metrics answer without a token; /ready is 503 until ready', async (t) => {
  const f = await startAdminApi(t, 'health', { ready: false });
  const live = await fetch(f.url + '/live');
  t.equal(live.status, 200);
  t.same(await live.json(), { status: 'live' });
  const notReady = await fetch(f.url + '/ready');
  t.equal(notReady.status, 503);
  t.same(await notReady.json(), { status: 'not_ready' });
  f.ready.value = true;
  const ready = await fetch(f.url + '/ready');
  t.equal(ready.status, 200);
  t.same(await ready.json(), { status: 'ready' });
  const metrics = await fetch(f.url + '/metrics');
  t.equal(metrics.status, 200);
  t.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const text = await metrics.text();
  t.match(text, /# TYPE meshid_server_admin_requests_total counter/);
  t.match(text, /meshid_server_admin_requests_total\{method="GET",route="\/ready",status="503"\} 1/);
  t.match(text, /meshid_server_admin_requests_total\{method="GET",route="\/ready",status="200"\} 1/);
});

t.test('/metrics counts requests by method, route template and status', async (t) => {
  const f = await startAdminApi(t, 'metrics');
  const a = await f.call('POST', '/v1/entries', entry);
  await f.call('GET', `/v1/entries/${a.json.id}`);
  await f.call('GET', '/v1/entries/no-such-entry');
  await f.call('GET', '/v1/entries/no-such-entry', undefined, { authorization: 'Bearer nope' });
  await f.call('GET', '/v1/unknown');
  const text = await (await fetch(f.url + '/metrics')).text();
  t.match(text, 'meshid_server_admin_requests_total{method="POST",route="/v1/entries",status="201"} 1');
  t.match(text, 'meshid_server_admin_requests_total{method="GET",route="/v1/entries/{id}",status="200"} 1');
  t.match(text, 'meshid_server_admin_requests_total{method="GET",route="/v1/entries/{id}",status="404"} 1');
  t.match(text, 'meshid_server_admin_requests_total{method="GET",route="/v1/entries/{id}",status="401"} 1');
  t.match(text, 'meshid_server_admin_requests_total{method="GET",route="unmatched",status="404"} 1');
  t.notMatch(text, /no-such-entry/, 'raw paths are not labels');
  t.equal(f.metrics.adminRequests.get({ method: 'POST', route: '/v1/entries', status: 201 }), 1);
});

t.test('malformed JSON is 400 naming the body; a body over 1 MiB is 413', async (t) => {
  const f = await startAdminApi(t, 'body');
  const bad = await f.call('POST', '/v1/entries', '{"spiffe_id": ');
  t.equal(bad.status, 400);
  t.equal(bad.json.error.code, 'invalid_argument');
  t.equal(bad.json.error.field, 'body');
  t.match(bad.json.error.message, /not valid JSON/);
  const notObject = await f.call('POST', '/v1/entries', '[1,2]');
  t.equal(notObject.status, 400);
  const big = await f.call('POST', '/v1/entries', JSON.stringify({ ...entry, hint: 'h'.repeat(1024 * 1024 + 10) }));
  t.equal(big.status, 413);
  t.equal(big.json.error.code, 'resource_exhausted');
  t.equal(big.json.error.field, 'body');
  t.equal((await f.store.listEntries()).items.length, 0, 'nothing was created');
  // A body sent as form encoding (curl -d) is still read as JSON.
  const form = await f.call('POST', '/v1/entries', JSON.stringify(entry), { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(form.status, 201);
});

t.test('an unknown path with the token is 404 with an error body', async (t) => {
  const f = await startAdminApi(t, 'notfound');
  const res = await f.call('GET', '/v1/nothing/here');
  t.equal(res.status, 404);
  t.equal(res.json.error.code, 'not_found');
  const outside = await fetch(f.url + '/elsewhere');
  t.equal(outside.status, 404);
});

t.test('start binds 127.0.0.1 on the port asked for; stop closes the listener and open keep-alive connections', async (t) => {
  const f = await startAdminApi(t, 'stop');
  const port = Number(new URL(f.url).port);
  t.ok(port > 0);
  // Hold a keep-alive connection open across stop().
  const agent = new (await import('node:http')).Agent({ keepAlive: true });
  const first = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/live', agent }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    req.end();
  });
  t.equal(first, 200);
  const started = Date.now();
  await f.api.stop();
  t.ok(Date.now() - started < 1500, 'stop does not wait for idle keep-alive connections');
  await t.rejects(fetch(f.url + '/live'), 'nothing listens after stop');
  await f.api.stop();
  agent.destroy();
});

t.test('a bad bind address and a short token are refused at construction', async (t) => {
  const f = await startAdminApi(t, 'ctor');
  const { AdminApi } = await import('../../../server/adminapi/index.js');
  const base = {
    store: f.store, ca: f.ca, registration: f.registration, metrics: f.metrics, logger: { debug() {}, info() {}, warn() {}, error() {}, child() { return this; } },
    clock: { now: () => new Date() }, ready: () => true,
  };
  const fieldOf = async (fn: () => unknown): Promise<unknown> => {
    try { await fn(); } catch (err) { return (err as { field?: unknown }).field; }
    return 'no error';
  };
  t.equal(await fieldOf(() => new AdminApi({ ...base, bind: '127.0.0.1:0', authToken: 'short' })), 'admin_token_file');
  const api = new AdminApi({ ...base, bind: 'nonsense', authToken: TOKEN });
  t.equal(await fieldOf(() => api.start()), 'admin');
  const inUse = new AdminApi({ ...base, bind: `127.0.0.1:${new URL(f.url).port}`, authToken: TOKEN });
  await t.rejects(inUse.start(), { code: 'EADDRINUSE' });
  await inUse.stop();
});

t.test('a keep-alive connection idle past Node\'s default 5 s is still open and serves the next request (no EPIPE/"other side closed" race)', async (t) => {
  const f = await startAdminApi(t, 'keepalive');
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const get = () => new Promise<{ status: number; reused: boolean; socket: import('node:net').Socket }>((resolve, reject) => {
    const req = httpRequest(`${f.url}/v1/entries`, { agent, headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, socket: req.socket! }));
    });
    req.on('error', reject);
    req.end();
  });
  const first = await get();
  t.equal(first.status, 200);
  await new Promise((r) => setTimeout(r, 5600)); // past the 5 s at which Node would have closed it
  t.notOk(first.socket.destroyed, 'the server kept the idle connection open');
  const second = await get();
  t.equal(second.status, 200);
  t.ok(second.reused, 'the second request went over the same connection');
});
