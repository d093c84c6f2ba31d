import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { packageRoot } from '../../api/assets.js';

/** What the kernel recorded for the peer of a Unix socket when it connected (SO_PEERCRED). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export interface PeercredAddon {
  peercred(fd: number): PeerCredentials;
  peerpidfd(fd: number): number;
}

const addonPath = join(packageRoot, 'agent', 'workloadattestor', 'peercred', 'build', 'Release', 'peercred.node');

/** Loads the addon (node caches it); throws a message naming `make native` when it was not built. */
export function loadPeercredAddon(): PeercredAddon {
  if (!existsSync(addonPath)) {
    throw new Error(`meshid: the peercred native addon is not built (${addonPath}); run \`make native\``);
  }
  return createRequire(import.meta.url)(addonPath) as PeercredAddon;
}

/**
 * The credentials of the process at the other end of an accepted Unix socket
 * connection, read with getsockopt(SO_PEERCRED) on the connection's own file
 * descriptor: the pid, uid and gid of the process that called connect(2).
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  // require() caches the addon, so this is a lookup after the first call
  return loadPeercredAddon().peercred(socketFd(socket));
}

/**
 * A pidfd of the process that connected (SO_PEERPIDFD, Linux 6.5+), which names
 * that process even after its pid is reused; undefined on older kernels. The
 * caller closes it.
 */
export function peerPidfd(socket: Socket): number | undefined {
  try {
    return loadPeercredAddon().peerpidfd(socketFd(socket));
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOPROTOOPT') return undefined;
    throw err;
  }
}

/** Whether the process a pidfd names still runs with pid `pid` (the Pid line of its fdinfo is -1 once it is gone). */
export function pidfdRefersTo(pidfd: number, pid: number): boolean {
  const info = readFileSync(`/proc/self/fdinfo/${pidfd}`, 'latin1');
  const m = /^Pid:\s*(-?\d+)/m.exec(info);
  return m !== null && Number(m[1]) === pid;
}

function socketFd(socket: Socket): number {
  // Node keeps the fd on the socket's libuv handle (a Pipe); it has no public accessor.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('peerCredentials: the socket has no open file descriptor');
  return fd;
}
