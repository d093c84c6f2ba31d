import type { ChildProcess } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { chmodSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { peerCredentials, peerPidfd, pidfdAlive } from '../../../agent/workloadattestor/index.js';
import { tempDir } from '../workloadapi/helpers.js';
import { spawnChild, type Teardown } from './helpers.js';

/** Accepts one connection from a child `node` that connects and stays; returns the child and the accepted socket. */
async function connectFromChild(t: Teardown, uid?: number, gid?: number): Promise<{ pid: number; socket: Socket; child: ChildProcess }> {
  const path = join(tempDir(t, 'peercred'), 's.sock');
  const server = createServer();
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  await new Promise<void>((r) => server.listen(path, r));
  chmodSync(path, 0o777);
  chmodSync(join(path, '..'), 0o755);
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const child = spawnChild(t, process.execPath, ['-e', `require('net').connect(${JSON.stringify(path)}); setInterval(() => {}, 1000)`],
    uid === undefined ? {} : { uid, gid: gid! });
  const [socket] = await accepted;
  t.teardown(() => { socket.destroy(); });
  return { pid: child.pid!, socket, child };
}

t.test('peerCredentials returns the pid, uid and gid of the process that connected', async (t) => {
  const { pid, socket } = await connectFromChild(t);
  t.same(peerCredentials(socket), { pid, uid: process.getuid!(), gid: process.getgid!() });
  t.not(pid, process.pid, 'the peer, not this process');
});

t.test('peerCredentials reports another uid and gid for a child running as nobody', async (t) => {
  const { pid, socket } = await connectFromChild(t, 65534, 65534);
  t.same(peerCredentials(socket), { pid, uid: 65534, gid: 65534 });
});

t.test('peerCredentials throws for a socket that has no file descriptor any more', async (t) => {
  const { socket } = await connectFromChild(t);
  socket.destroy();
  t.throws(() => peerCredentials(socket), /no open file descriptor/);
});

t.test('peerPidfd pins the process that connected: alive while it runs, gone once it exited, whoever gets its pid later', async (t) => {
  const { pid, socket, child } = await connectFromChild(t);
  const pidfd = peerPidfd(socket);
  t.type(pidfd, 'number', 'this kernel has SO_PEERPIDFD (Linux 6.5+)');
  t.teardown(() => closeSync(pidfd!));
  t.match(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'latin1'), new RegExp(`^Pid:\\s*${pid}$`, 'm'), 'the pidfd names the peer, not this process');
  t.equal(pidfdAlive(pidfd!), true);
  child.kill('SIGKILL');
  await once(child, 'exit');
  t.equal(pidfdAlive(pidfd!), false, 'after the process exited and was reaped, the pidfd names no live process');
});

t.test('pidfdAlive refuses what is not a pidfd', async (t) => {
  t.throws(() => pidfdAlive(-1), /non-negative integer/);
  t.throws(() => pidfdAlive(0), { code: 'EBADF' }, 'stdin is not a pidfd');
});
