import { readFileSync } from 'node:fs';
import t from 'tap';
import { bootNsToWallClock, bootTimeNs, wallClockToBootNs } from '../../bpf/clock.js';

t.test('bootTimeNs reads CLOCK_BOOTTIME, the clock /proc/uptime reports', async (t) => {
  const before = bootTimeNs();
  const uptimeNs = BigInt(Math.round(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e9));
  const after = bootTimeNs();
  t.ok(after >= before, 'monotonic');
  // /proc/uptime has 10 ms resolution
  t.ok(uptimeNs >= before - 20_000_000n && uptimeNs <= after + 20_000_000n, `uptime ${uptimeNs} within [${before}, ${after}]`);
});

t.test('a wall-clock time converts to the boot-time clock and back', async (t) => {
  const now = bootTimeNs();
  const converted = wallClockToBootNs(new Date());
  t.ok(converted - now > -5_000_000n && converted - now < 5_000_000n, 'now on both clocks agrees within 5 ms');
  const notAfter = new Date(Date.now() + 3_600_000);
  const atBoot = wallClockToBootNs(notAfter);
  t.ok(atBoot - now > 3_599_000_000_000n && atBoot - now < 3_601_000_000_000n, 'an hour from now is an hour of boot time from now');
  t.ok(Math.abs(bootNsToWallClock(atBoot).getTime() - notAfter.getTime()) <= 1, 'and back, to the millisecond');
});
