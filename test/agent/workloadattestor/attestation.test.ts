import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import t from 'tap';
import { Selector } from '../../../spiffe/index.js';
import { parseStartTime, type PeerProcess, UnixAttestor, WorkloadAttestation, type WorkloadAttestor } from '../../../agent/workloadattestor/index.js';
import { tempDir } from '../workloadapi/helpers.js';
import { spawnChild } from './helpers.js';

/** /proc/<pid>/stat with `startTime` in field 22 and an awkward comm. */
function statLine(pid: number, startTime: string): string {
  const after = ['S', '1', '1', '1', '0', '-1', '4194560', '0', '0', '0', '0', '0', '0', '0', '0', '20', '0', '1', '0', startTime, '1000', '10'];
  return `${pid} (we ird) (comm) ${after.join(' ')}\n`;
}

/** A fake /proc with one process whose start time the test changes (to simulate pid reuse). */
function fakeProc(t: { teardown(fn: () => unknown): void }, pid: number) {
  const root = tempDir(t, 'proc');
  mkdirSync(join(root, String(pid)));
  return {
    root,
    setStartTime: (st: string) => writeFileSync(join(root, String(pid), 'stat'), statLine(pid, st)),
    exit: () => writeFileSync(join(root, String(pid), 'stat'), ''),
  };
}

/** An attestor that reports which process "generation" it saw, and counts its calls. */
class CountingAttestor implements WorkloadAttestor {
  calls = 0;
  generation = 'a';
  onAttest: () => void = () => {};
  async attest(pid: number): Promise<Selector[]> {
    this.calls++;
    this.onAttest();
    return [Selector.of('test', `pid:${pid}`), Selector.of('test', `gen:${this.generation}`)];
  }
}

t.test('parseStartTime reads field 22 even when the command name holds spaces and parentheses', async (t) => {
  t.equal(parseStartTime(statLine(42, '123456')), '123456');
  t.equal(parseStartTime('garbage'), undefined);
});

t.test('attestation is cached per (pid, start time): a reused pid gets a fresh attestation, never the old answer', async (t) => {
  const pid = 31337;
  const proc = fakeProc(t, pid);
  const attestor = new CountingAttestor();
  const attestation = new WorkloadAttestation({ attestors: [attestor], procRoot: proc.root });
  proc.setStartTime('1000');
  const first: PeerProcess = { pid, uid: 0, gid: 0, startTime: '1000' };
  t.ok((await attestation.attest(first)).has('test:gen:a'));
  t.ok((await attestation.attest(first)).has('test:gen:a'));
  t.equal(attestor.calls, 1, 'the second call on the same process is served from the cache');

  // the process exits and another one gets the same pid
  proc.setStartTime('2000');
  attestor.generation = 'b';
  await t.rejects(attestation.attest(first), { code: 'unauthenticated' }, 'a connection of the old process is refused');
  const second: PeerProcess = { pid, uid: 0, gid: 0, startTime: '2000' };
  const sels = await attestation.attest(second);
  t.ok(sels.has('test:gen:b'), 'the new process is attested afresh');
  t.notOk(sels.has('test:gen:a'));
  t.equal(attestor.calls, 2);
});

t.test('concurrent attestations of one process share one run, and the cache expires after its TTL', async (t) => {
  const pid = 4711;
  const proc = fakeProc(t, pid);
  proc.setStartTime('5');
  let now = 1_000;
  const attestor = new CountingAttestor();
  const attestation = new WorkloadAttestation({ attestors: [attestor], procRoot: proc.root, cacheTtlMs: 100, now: () => now });
  const peer: PeerProcess = { pid, uid: 1, gid: 1, startTime: '5' };
  await Promise.all(Array.from({ length: 50 }, () => attestation.attest(peer)));
  t.equal(attestor.calls, 1);
  now += 101;
  await attestation.attest(peer);
  t.equal(attestor.calls, 2, 're-attested after the TTL');
  await attestation.attest({ ...peer, uid: 2 });
  t.equal(attestor.calls, 3, 'other credentials of the same process are a different key');
});

t.test('a process that exits while it is being attested gets no answer', async (t) => {
  const pid = 999;
  const proc = fakeProc(t, pid);
  proc.setStartTime('77');
  const attestor = new CountingAttestor();
  attestor.onAttest = () => proc.exit();
  const attestation = new WorkloadAttestation({ attestors: [attestor], procRoot: proc.root });
  await t.rejects(attestation.attest({ pid, uid: 0, gid: 0, startTime: '77' }), { code: 'unauthenticated' });
  proc.setStartTime('77');
  attestor.onAttest = () => {};
  t.ok(await attestation.attest({ pid, uid: 0, gid: 0, startTime: '77' }), 'a failed answer was not cached');
  t.equal(attestor.calls, 2);
});

t.test('an attestor that fails for a live process makes attestation fail with an internal error', async (t) => {
  const pid = 555;
  const proc = fakeProc(t, pid);
  proc.setStartTime('1');
  const failing: WorkloadAttestor = { attest: async () => { throw new Error('boom'); } };
  const attestation = new WorkloadAttestation({ attestors: [failing], procRoot: proc.root });
  await t.rejects(attestation.attest({ pid, uid: 0, gid: 0, startTime: '1' }), { code: 'internal', message: /boom/ });
});

t.test('a real connection is pinned to its process: after the process exits, its connection no longer attests', async (t) => {
  const path = join(tempDir(t, 'pin'), 's.sock');
  const server = createServer();
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const child = spawnChild(t, process.execPath, ['-e', `require('net').connect(${JSON.stringify(path)}); setInterval(() => {}, 1000)`]);
  const [socket] = await accepted;
  t.teardown(() => { socket.destroy(); });
  const attestation = new WorkloadAttestation({ attestors: [new UnixAttestor()] });
  const peer = attestation.identifyPeer(socket);
  t.equal(peer.pid, child.pid);
  t.match(peer.startTime, /^\d+$/);
  t.ok((await attestation.attest(peer)).has(`unix:uid:${process.getuid!()}`));
  child.kill('SIGKILL');
  await once(child, 'exit');
  await t.rejects(attestation.attest(peer), { code: 'unauthenticated' }, 'even with a cached answer, a dead caller gets nothing');
});
