/**
 * The quick start, end to end with the real binaries on loopback: server,
 * CLI, agent, and a workload fetching its SVID through the Workload API.
 */
import t from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bin, Daemon, run } from '../helpers/process.js';

t.test('server, CLI and agent binaries: an admin creates an entry, the agent attests, and `api fetch x509 --write` output passes openssl verify; entries survive SIGKILL', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-e2e-'));
  const daemons: Daemon[] = [];
  t.teardown(async () => { for (const d of daemons) await d.stop(); rmSync(dir, { recursive: true, force: true }); });
  const serverArgs = ['run', '--data-dir', join(dir, 'server'), '--trust-domain', 'example.org', '--bind', '127.0.0.1:0', '--admin', '127.0.0.1:0'];
  let server = new Daemon('meshid-server', serverArgs);
  daemons.push(server);
  let started = await server.waitFor(/meshid-server started/);
  const admin = () => ['--server', `http://127.0.0.1:${started['admin_port']}`, '--token-file', join(dir, 'server', 'admin.token')];
  t.equal(statSync(join(dir, 'server', 'admin.token')).mode & 0o777, 0o600, 'admin token file is 0600');

  const agentId = 'spiffe://example.org/meshid/agent/join_token/node1';
  const tok = run('meshid', [...admin(), '-o', 'json', 'token', 'generate', '--spiffe-id', agentId]);
  t.equal(tok.code, 0, tok.stderr);
  const token = JSON.parse(tok.stdout).token as string;
  const uid = process.getuid!();
  const created = run('meshid', [...admin(), 'entry', 'create', '--spiffe-id', 'spiffe://example.org/ns/default/sa/web', '--parent-id', agentId, '--selector', `unix:uid:${uid}`]);
  t.equal(created.code, 0, created.stderr);
  const listed = run('meshid', [...admin(), 'entry', 'list']);
  t.match(listed.stdout, /spiffe:\/\/example\.org\/ns\/default\/sa\/web/, 'entry list shows the entry');
  const bad = run('meshid', [...admin(), 'entry', 'create', '--spiffe-id', 'spiffe://Example.org/x', '--parent-id', agentId, '--selector', 'unix:uid:1']);
  t.not(bad.code, 0, 'a bad SPIFFE ID is refused');
  t.match(bad.stderr, /spiffe_id/, 'the message names the field');

  const bundle = run('meshid', [...admin(), 'bundle', 'show', '--format', 'pem']);
  t.equal(bundle.code, 0, bundle.stderr);
  writeFileSync(join(dir, 'bundle.pem'), bundle.stdout);

  const socket = join(dir, 'agent.sock');
  const agent = new Daemon('meshid-agent', ['run', '--server', `127.0.0.1:${started['agent_port']}`, '--join-token', token, '--trust-bundle', join(dir, 'bundle.pem'),
    '--socket', socket, '--data-dir', join(dir, 'agent'), '--health', '127.0.0.1:0', '--node-name', 'node1']);
  daemons.push(agent);
  const agentStarted = await agent.waitFor(/meshid-agent started/);
  t.equal(agentStarted['spiffe_id'], agentId);

  const out = join(dir, 'out');
  let fetched = run('meshid-agent', ['api', 'fetch', 'x509', '--socket', socket, '--write', out]);
  for (let i = 0; i < 50 && fetched.code !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    fetched = run('meshid-agent', ['api', 'fetch', 'x509', '--socket', socket, '--write', out]);
  }
  t.equal(fetched.code, 0, fetched.stderr);
  t.match(fetched.stdout, /spiffe:\/\/example\.org\/ns\/default\/sa\/web/);
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(out, 'bundle.pem'), join(out, 'svid.pem')]).toString(), /svid\.pem: OK/);
  t.equal(statSync(join(out, 'svid.key')).mode & 0o777, 0o600, 'svid.key is written 0600');
  const health = run('meshid-agent', ['healthcheck', '--health', `127.0.0.1:${agentStarted['health_port']}`]);
  t.equal(health.code, 0, health.stdout + health.stderr);

  // `api fetch jwt` then `api validate jwt`, as with spire-agent; a changed token is refused with the Workload API's InvalidArgument
  const jwt = run('meshid-agent', ['api', 'fetch', 'jwt', '--socket', socket, '--audience', 'db']);
  t.equal(jwt.code, 0, jwt.stderr);
  const jwtSvid = /token\(spiffe:\/\/example\.org\/ns\/default\/sa\/web\):\n(\S+)/.exec(jwt.stdout)?.[1] ?? '';
  const valid = run('meshid-agent', ['api', 'validate', 'jwt', '--socket', socket, '--audience', 'db', '--svid', jwtSvid]);
  t.equal(valid.code, 0, valid.stderr);
  t.match(valid.stdout, /SVID is valid\.\nSPIFFE ID:\tspiffe:\/\/example\.org\/ns\/default\/sa\/web\nClaims:.*"aud":\["db"\]/);
  const otherAudience = run('meshid-agent', ['api', 'validate', 'jwt', '--socket', socket, '--audience', 'cache', '--svid', jwtSvid]);
  t.equal(otherAudience.code, 1);
  t.match(otherAudience.stderr, /INVALID_ARGUMENT: .*audience/);
  const tampered = `${jwtSvid.slice(0, -4)}${jwtSvid.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
  const forged = run('meshid-agent', ['api', 'validate', 'jwt', '--socket', socket, '--audience', 'db', '--svid', tampered]);
  t.equal(forged.code, 1, 'a changed signature is refused');
  t.match(forged.stderr, /INVALID_ARGUMENT/);

  // `api watch --write`: the files follow the SVID (here an entry update re-issues it), whole at every step
  const watched = join(dir, 'watched');
  const watcher = spawn(process.execPath, [bin('meshid-agent'), 'api', 'watch', '--socket', socket, '--write', watched], { stdio: ['ignore', 'pipe', 'pipe'] });
  let watchOut = '';
  watcher.stdout.on('data', (d: Buffer) => { watchOut += d; });
  const exited = new Promise<number | null>((r) => watcher.once('exit', (code) => r(code)));
  const writes = (): number => watchOut.split('Wrote 1 SVID(s)').length - 1;
  const until = async (what: string, cond: () => boolean): Promise<void> => {
    for (const end = Date.now() + 20_000; !cond();) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; watch printed: ${watchOut}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until('the first write', () => writes() >= 1);
  const serialOf = (): string => execFileSync('openssl', ['x509', '-noout', '-serial', '-in', join(watched, 'svid.pem')]).toString().trim();
  const first = serialOf();
  const entryId = (JSON.parse(run('meshid', [...admin(), '-o', 'json', 'entry', 'list']).stdout) as { entries: { id: string }[] }).entries[0]!.id;
  const updated = run('meshid', [...admin(), 'entry', 'update', entryId, '--dns', 'web.default.svc']);
  t.equal(updated.code, 0, updated.stderr);
  await until('the re-issued SVID', () => writes() >= 2);
  t.not(serialOf(), first, 'svid.pem now holds the new certificate');
  t.match(execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(watched, 'svid.pem')]).toString(), /DNS:web\.default\.svc/, 'with the new DNS name');
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(watched, 'bundle.pem'), join(watched, 'svid.pem')]).toString(), /OK/);
  const certKey = execFileSync('openssl', ['x509', '-noout', '-pubkey', '-in', join(watched, 'svid.pem')]).toString();
  t.equal(execFileSync('openssl', ['pkey', '-pubout', '-in', join(watched, 'svid.key')]).toString(), certKey, 'svid.key is the key of the new certificate');
  t.equal(statSync(join(watched, 'svid.key')).mode & 0o777, 0o600, 'svid.key stays 0600');
  t.same(readdirSync(watched).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
  watcher.kill('SIGTERM');
  t.equal(await exited, 0, 'watch ends cleanly on SIGTERM');

  // SIGKILL the server: committed entries are still there after a restart
  await server.stop('SIGKILL');
  server = new Daemon('meshid-server', serverArgs);
  daemons.push(server);
  started = await server.waitFor(/meshid-server started/);
  const after = run('meshid', [...admin(), '-o', 'json', 'entry', 'list']);
  t.equal(after.code, 0, after.stderr);
  t.match(after.stdout, /ns\/default\/sa\/web/, 'entry survived SIGKILL');
});

t.test('after the README\'s setup, meshid, meshid-server and meshid-agent are on the PATH and run this checkout', { skip: process.getuid?.() !== 0 ? 'the links are made as root' : false }, async (t) => {
  const { realpathSync } = await import('node:fs');
  for (const cmd of ['meshid', 'meshid-server', 'meshid-agent'] as const) {
    t.equal(realpathSync(`/usr/local/bin/${cmd}`), realpathSync(bin(cmd)), `${cmd} links to this checkout's bin/${cmd}.js`);
    const r = spawnSync(cmd, ['--help'], { encoding: 'utf8' });
    t.equal(r.status, 0, `${cmd} --help runs from the PATH`);
    t.match(r.stdout, new RegExp(`Usage: ${cmd}`));
  }
});
