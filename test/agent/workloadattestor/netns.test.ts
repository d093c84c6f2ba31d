import { statSync, realpathSync } from 'node:fs';
import t from 'tap';
import { NetnsAttestor } from '../../../agent/workloadattestor/index.js';
import { FakeWorkloadSource } from '../workloadapi/fake-source.js';
import { startServer } from '../workloadapi/helpers.js';
import { run, spawnChild, waitForExec, type Teardown } from './helpers.js';

const fixture = new URL('../workloadapi/fixtures/fetch-x509.js', import.meta.url).pathname;
let seq = 0;

/** A named network namespace (`ip netns add`), deleted at teardown. */
async function addNetns(t: Teardown): Promise<string> {
  const name = `meshid-wl-${process.pid}-${++seq}`;
  await run(t, 'ip', ['netns', 'add', name]);
  t.teardown(() => run({ teardown() {} }, 'ip', ['netns', 'del', name]).catch(() => undefined));
  return name;
}

t.test('the netns attestor names the namespace of a process by inode and by its ip-netns name', async (t) => {
  const name = await addNetns(t);
  const child = spawnChild(t, 'ip', ['netns', 'exec', name, '/usr/bin/sleep', '30']);
  await waitForExec(child.pid!, realpathSync('/usr/bin/sleep'));
  const sels = (await new NetnsAttestor().attest(child.pid!)).map(String);
  t.ok(sels.includes(`netns:name:${name}`), `selectors include netns:name:${name}`);
  t.ok(sels.includes(`netns:inode:${statSync(`/run/netns/${name}`).ino}`));

  const own = (await new NetnsAttestor().attest(process.pid)).map(String);
  t.ok(own.includes(`netns:inode:${statSync('/proc/self/ns/net').ino}`));
  t.notOk(own.includes(`netns:name:${name}`), 'this process is not in that namespace');
});

t.test('a Workload API client inside a named netns gets the identity of the entry that selects that netns', async (t) => {
  const name = await addNetns(t);
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/devnet/sa/pod', [`netns:name:${name}`]);
  const server = await startServer(t, source);

  const inside = JSON.parse(await run(t, 'ip', ['netns', 'exec', name, process.execPath, fixture, server.socketPath])) as { spiffeIds: string[] };
  t.same(inside.spiffeIds, ['spiffe://example.test/ns/devnet/sa/pod']);
  t.ok(source.callers.some((c) => c.has(`netns:name:${name}`)), 'the caller was attested with netns:name');

  const outside = JSON.parse(await run(t, process.execPath, [fixture, server.socketPath])) as { code: number };
  t.equal(outside.code, 7, 'the same program outside the namespace gets PermissionDenied');
});
