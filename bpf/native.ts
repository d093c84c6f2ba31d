import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../api/assets.js';

/** The addon in bpf/native (built by `make native`); see meshid_bpf.c for each call. */
export interface NativeBpf {
  bootTimeNs(): bigint;
  realTimeMinusBootTimeNs(): bigint;
  loadObject(objectPath: string, pinRoot: string): {
    programs: Record<string, { fd: number; id: number }>;
    maps: Record<string, number>;
  };
  closeFd(fd: number): void;
  ifIndex(netns: string | null, ifname: string): number;
  tcAttach(netns: string | null, ifname: string, egress: boolean, progFd: number, handle: number, priority: number): void;
  tcDetach(netns: string | null, ifname: string, egress: boolean, handle: number, priority: number): boolean;
  tcQuery(netns: string | null, ifname: string, egress: boolean, handle: number, priority: number): number;
  /** `onBatch` gets the records of one loop turn: each a u32 length (native order), its bytes, padding to 4 (readers.ts ringRecords). */
  ringOpen(pinPath: string, onBatch: (batch: Buffer) => void, pollMs?: number): RingHandle;
  ringClose(ring: RingHandle): void;
  /** BPF_PROG_TEST_RUN of a tc program on one Ethernet frame; durationNs is per run. */
  progTestRun(progFd: number, packet: Buffer, repeat: number, ingressIfindex: number): { retval: number; durationNs: number };
}

/** An open ring buffer inside the addon. */
export interface RingHandle { readonly __ring: unique symbol }

export const nativeAddonPath = join(packageRoot, 'bpf', 'native', 'build', 'Release', 'meshid_bpf.node');

const requireAddon = createRequire(import.meta.url);

/** The addon (Node caches the module, so this is cheap after the first call). */
export function loadNative(): NativeBpf {
  return requireAddon(nativeAddonPath) as NativeBpf;
}
