import type { Selector } from '../../spiffe/index.js';

/**
 * One source of workload selectors (spire-agent's WorkloadAttestor plugin).
 * Given the caller's process as the kernel reported it for the connection,
 * returns the selectors of its kind (`unix:…`, `netns:…`). Throws when the
 * process cannot be inspected; the caller then gets no identity.
 */
export interface WorkloadAttestor {
  attest(pid: number, uid: number, gid: number): Promise<Selector[]>;
}

/** The peer of a Workload API connection, fixed when the connection was accepted. */
export interface PeerProcess {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot): tells this process from a later one with the same pid. */
  readonly startTime: string;
}
