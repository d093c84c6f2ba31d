import { loadNative } from './native.js';

/**
 * CLOCK_BOOTTIME now, in nanoseconds: the clock of bpf_ktime_get_boot_ns(),
 * on which `meshid_auth` expirations are written. Unlike process.hrtime it
 * keeps counting while the machine is suspended.
 */
export function bootTimeNs(): bigint {
  return loadNative().bootTimeNs();
}

/** The boot-time instant of a wall-clock time (e.g. a certificate's notAfter). */
export function wallClockToBootNs(date: Date): bigint {
  return BigInt(date.getTime()) * 1_000_000n - loadNative().realTimeMinusBootTimeNs();
}

/** The wall-clock time of a boot-time instant (e.g. an event's timestamp), to the millisecond. */
export function bootNsToWallClock(bootNs: bigint): Date {
  return new Date(Number((bootNs + loadNative().realTimeMinusBootTimeNs()) / 1_000_000n));
}

/**
 * Wall clock minus boot-time clock, in nanoseconds: add it to a boot-time
 * instant for its wall-clock time. It changes only when the wall clock is set,
 * so a reader of many events may read it once a second.
 */
export function bootToWallOffsetNs(): bigint {
  return loadNative().realTimeMinusBootTimeNs();
}
