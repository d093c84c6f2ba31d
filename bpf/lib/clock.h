/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The datapath's clock: the kernel's boot-time clock, the clock of every
 * expiry in the maps (auth entries, conntrack, signal rate).
 *
 * Built with -DMESHID_TEST_BUILD (the differential test's objects only, never
 * the one the agent loads), the time is read from the one-entry array
 * meshid_test_clock instead, so a test can move time by exact steps. */
#ifndef MESHID_LIB_CLOCK_H
#define MESHID_LIB_CLOCK_H

#include "common.h"

#ifdef MESHID_TEST_BUILD
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_test_clock SEC(".maps");

static __always_inline __u64 clock_now(void)
{
	__u32 zero = 0;
	const __u64 *now = bpf_map_lookup_elem(&meshid_test_clock, &zero);

	return now ? *now : 0;
}
#else
static __always_inline __u64 clock_now(void)
{
	return bpf_ktime_get_boot_ns();
}
#endif

#endif
