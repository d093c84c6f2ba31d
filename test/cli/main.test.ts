import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startAdminApi } from '../server/adminapi/fixtures/adminapi.js';
import { meshid } from './fixtures/run.js';

t.test('a wrong command line exits 2 with the parser message; --help exits 0', async (t) => {
  const unknownFlag = await meshid(['entry', 'create', '--colour', 'blue']);
  t.equal(unknownFlag.code, 2);
  t.match(unknownFlag.stderr, /unknown option '--colour'/);
  const badFormat = await meshid(['-o', 'yaml', 'entry', 'list']);
  t.equal(badFormat.code, 2);
  t.match(badFormat.stderr, /-o, --output <format>' argument 'yaml' is invalid/);
  const noCommand = await meshid([]);
  t.equal(noCommand.code, 2);
  const help = await meshid(['--help']);
  t.equal(help.code, 0);
  for (const group of ['entry', 'agent', 'token', 'bundle', 'x509', 'jwt', 'identity', 'healthcheck']) t.match(help.stdout, new RegExp(`^  ${group}\\b`, 'm'));
  const badUrl = await meshid(['--server', 'ftp://x', 'entry', 'list']);
  t.equal(badUrl.code, 2);
  t.match(badUrl.stderr, /--server "ftp:\/\/x" must be an http/);
});

t.test('a wrong token or an unreadable token file is an error that says so', async (t) => {
  const f = await startAdminApi(t, 'cli-auth');
  const wrong = await meshid(['entry', 'list'], { MESHID_SERVER: f.url, MESHID_ADMIN_TOKEN: 'not-the-token-at-all' });
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, /a valid bearer token is required/);
  const tokenFile = join(f.dir, 'admin.token');
  writeFileSync(tokenFile, 'test-admin-token-0123456789abcdef\n', { mode: 0o600 });
  const viaFile = await meshid(['--server', f.url, '--token-file', tokenFile, 'entry', 'list']);
  t.equal(viaFile.code, 0, viaFile.stderr);
  const viaEnvFile = await meshid(['--server', f.url, 'entry', 'list'], { MESHID_TOKEN_FILE: tokenFile });
  t.equal(viaEnvFile.code, 0, viaEnvFile.stderr);
  const missing = await meshid(['--server', f.url, '--token-file', join(f.dir, 'nope'), 'entry', 'list']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /cannot read the admin token from .*nope \(ENOENT\)/);
});
