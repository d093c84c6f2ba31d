import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
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
  pidfdalive(pidfd: number): boolean;
}

const addonPath = join(packageRoot, 'agent', 'workloadattestor', 'peercred', 'build', 'Release', 'peercred.node');

let addon: PeercredAddon | undefined;

/** Loads the addon once; throws a message naming `make native` when it was not built. */
export function loadPeercredAddon(): PeercredAddon {
  if (addon) return addon;
  if (!existsSync(addonPath)) {
    throw new Error(`meshid: the peercred native addon is not built (${addonPath}); run \`make native\``);
  }
  addon = createRequire(import.meta.url)(addonPath) as PeercredAddon;
  return addon;
}

/**
 * The credentials of the process at the other end of an accepted Unix socket
 * connection, read with getsockopt(SO_PEERCRED) on the connection's own file
 * descriptor: the pid, uid and gid of the process that called connect(2).
 */
export function peerCredentials(socket: Socket): PeerCredentials {
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

/**
 * Whether the process a pidfd names has not exited. A pidfd names one process
 * for good, so while it is alive its pid cannot have been given to another.
 */
export function pidfdAlive(pidfd: number): boolean {
  return loadPeercredAddon().pidfdalive(pidfd);
}

function socketFd(socket: Socket): number {
  // Node keeps the fd on the socket's libuv handle (a Pipe); it has no public accessor.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('peerCredentials: the socket has no open file descriptor');
  return fd;
}
