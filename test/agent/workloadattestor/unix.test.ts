import { createHash } from 'node:crypto';
import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { UnixAttestor } from '../../../agent/workloadattestor/index.js';
import { FakeWorkloadSource } from '../workloadapi/fake-source.js';
import { startServer, tempDir } from '../workloadapi/helpers.js';
import { run, spawnChild, waitForExec } from './helpers.js';

const strings = (sels: { toString(): string }[]): string[] => sels.map(String);
const uid = process.getuid!();
const gid = process.getgid!();
const exe = realpathSync(process.execPath);
const fixture = new URL('../workloadapi/fixtures/fetch-x509.js', import.meta.url).pathname;

/** Name of a uid/gid in /etc/passwd or /etc/group, as the attestor must find it. */
function nameOf(file: string, id: number): string {
  return readFileSync(file, 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[2] === String(id))![0]!;
}

t.test('the unix attestor describes this process: uid, user, gid, group and executable path', async (t) => {
  const sels = strings(await new UnixAttestor().attest(process.pid, uid, gid));
  t.ok(sels.includes(`unix:uid:${uid}`));
  t.ok(sels.includes(`unix:user:${nameOf('/etc/passwd', uid)}`));
  t.ok(sels.includes(`unix:gid:${gid}`));
  t.ok(sels.includes(`unix:group:${nameOf('/etc/group', gid)}`));
  t.ok(sels.includes(`unix:path:${exe}`));
  t.notOk(sels.some((s) => s.startsWith('unix:sha256:')), 'no hash unless asked for');
});

t.test('with workloadSha256 the unix attestor adds the SHA-256 of the executable, the same on a repeated (cached) attestation', async (t) => {
  const attestor = new UnixAttestor({ workloadSha256: true });
  const want = `unix:sha256:${createHash('sha256').update(readFileSync(exe)).digest('hex')}`;
  t.ok(strings(await attestor.attest(process.pid, uid, gid)).includes(want));
  t.ok(strings(await attestor.attest(process.pid, uid, gid)).includes(want));
  const small = new UnixAttestor({ workloadSha256: true, sha256SizeLimit: 1024 });
  t.notOk(strings(await small.attest(process.pid, uid, gid)).some((s) => s.startsWith('unix:sha256:')), 'an executable over the size limit is not hashed');
});

t.test('the unix attestor describes a process running as nobody with supplementary groups', async (t) => {
  const child = spawnChild(t, '/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--groups=27,65534', '/usr/bin/sleep', '30']);
  const sleep = realpathSync('/usr/bin/sleep');
  await waitForExec(child.pid!, sleep);
  const sels = strings(await new UnixAttestor().attest(child.pid!, 65534, 65534));
  t.ok(sels.includes('unix:uid:65534'));
  t.ok(sels.includes(`unix:user:${nameOf('/etc/passwd', 65534)}`));
  t.ok(sels.includes('unix:gid:65534'));
  t.ok(sels.includes(`unix:group:${nameOf('/etc/group', 65534)}`));
  t.ok(sels.includes('unix:supplementary_gid:27'));
  t.ok(sels.includes('unix:supplementary_gid:65534'));
  t.ok(sels.includes(`unix:path:${sleep}`));
  t.notOk(sels.includes(`unix:uid:${uid}`));
});

t.test('user and group names come from the configured passwd and group files, and a changed file is re-read', async (t) => {
  const dir = tempDir(t, 'passwd');
  const passwd = join(dir, 'passwd');
  const group = join(dir, 'group');
  writeFileSync(passwd, `meshid-first:x:${uid}:${gid}::/:/bin/false\nduplicate:x:${uid}:${gid}::/:/bin/false\n`);
  writeFileSync(group, `# comment\nmeshid-grp:x:${gid}:\n`);
  const attestor = new UnixAttestor({ passwdPath: passwd, groupPath: group });
  let sels = strings(await attestor.attest(process.pid, uid, gid));
  t.ok(sels.includes('unix:user:meshid-first'), 'the first line of a duplicated id wins');
  t.notOk(sels.includes('unix:user:duplicate'));
  t.ok(sels.includes('unix:group:meshid-grp'));
  writeFileSync(passwd, `renamed-user:x:${uid}:${gid}::/:/bin/false\n`);
  sels = strings(await attestor.attest(process.pid, uid, gid));
  t.ok(sels.includes('unix:user:renamed-user'));
  const missing = new UnixAttestor({ passwdPath: join(dir, 'none'), groupPath: join(dir, 'none') });
  sels = strings(await missing.attest(process.pid, uid, gid));
  t.ok(sels.includes(`unix:uid:${uid}`), 'without name files, ids still attest');
  t.notOk(sels.some((s) => s.startsWith('unix:user:')));
});

t.test('the Workload API gives a caller running as another uid a different identity than this process', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/root', [`unix:uid:${uid}`, `unix:path:${exe}`]);
  await source.setEntry('/ns/default/sa/nobody', ['unix:uid:65534', 'unix:user:nobody']);
  const server = await startServer(t, source);

  const asRoot = JSON.parse(await run(t, process.execPath, [fixture, server.socketPath])) as { spiffeIds: string[] };
  t.same(asRoot.spiffeIds, ['spiffe://example.test/ns/default/sa/root']);

  const asNobody = JSON.parse(await run(t, process.execPath, [fixture, server.socketPath], { uid: 65534, gid: 65534 })) as { uid: number; spiffeIds: string[] };
  t.equal(asNobody.uid, 65534);
  t.same(asNobody.spiffeIds, ['spiffe://example.test/ns/default/sa/nobody']);

  const asOther = JSON.parse(await run(t, process.execPath, [fixture, server.socketPath], { uid: 4243, gid: 4243 })) as { code: number; details: string };
  t.equal(asOther.code, 7, 'a uid that no entry names gets PermissionDenied');
  t.equal(asOther.details, 'no identity issued');
});
