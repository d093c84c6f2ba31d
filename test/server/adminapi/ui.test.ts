/**
 * The web UI's sessions on the admin listener (server/adminapi/ui.ts): a login
 * code from the admin token works once and for a minute, its session reads
 * (GET) for 8 hours and changes nothing.
 */
import t from 'tap';
import { FakeClock } from '../../../common/clock.js';
import { startAdminApi } from './fixtures/adminapi.js';

t.test('a login code works once, within a minute; its session reads and only reads, for 8 hours', async (t) => {
  const clock = new FakeClock(new Date('2026-12-05T12:00:00Z'));
  const f = await startAdminApi(t, 'ui', { clock });
  const newCode = async (): Promise<string> => {
    const r = await f.call('POST', '/v1/ui/sessions');
    t.equal(r.status, 201);
    return r.json.login_path as string;
  };
  const login = (path: string): Promise<Response> => fetch(f.url + path, { redirect: 'manual' });

  t.equal((await fetch(f.url + '/v1/ui/sessions', { method: 'POST' })).status, 401, 'a code needs the admin token');
  const path = await newCode();
  t.match(path, /^\/ui\/login\?code=[A-Za-z0-9_-]{20,}$/);
  const ok = await login(path);
  t.equal(ok.status, 303);
  t.equal(ok.headers.get('location'), '/ui/');
  const cookie = ok.headers.get('set-cookie')!;
  t.match(cookie, /^meshid_session=[A-Za-z0-9_-]+; Max-Age=28800; Path=\/; Expires=.*; HttpOnly; SameSite=Strict$/);
  const session = cookie.split(';')[0]!;
  t.equal((await login(path)).status, 401, 'the same code again: refused');

  const get = (p: string, method = 'GET'): Promise<Response> => fetch(f.url + p, { method, headers: { cookie: session }, ...(method === 'GET' ? {} : { body: '{}' }) });
  t.equal((await get('/v1/entries')).status, 200, 'the session reads the API');
  t.equal((await get('/ui/')).status !== 401, true, 'and the UI');
  const write = await get('/v1/entries', 'POST');
  t.equal(write.status, 403, 'a write with the session is refused');
  t.match((await write.json() as { error: { message: string } }).error.message, /only reads/);
  t.equal((await f.call('GET', '/v1/entries')).status, 200, 'the admin token still works as before');

  t.equal((await fetch(f.url + '/ui/')).status, 401, 'no session: no UI');
  t.equal((await fetch(f.url + '/v1/entries', { headers: { cookie: 'meshid_session=' + 'x'.repeat(43) } })).status, 401, 'a made-up session: nothing');

  const late = await newCode();
  clock.advance(61_000);
  t.equal((await login(late)).status, 401, 'a code older than a minute: refused');
  clock.advance(8 * 3600_000);
  t.equal((await get('/v1/entries')).status, 401, 'the session ends after 8 hours');
});
