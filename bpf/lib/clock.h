/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The datapath's clocks.
 *
 *   clock_now()      the kernel's boot-time clock (bpf_ktime_get_boot_ns), the
 *                    clock of every expiry in the maps (auth entries,
 *                    conntrack, signal rate). Exact, but a clock read costs
 *                    about 40 ns here: the full check reads it once.
 *   clock_jiffies()  the kernel's tick counter (bpf_jiffies64, inlined by the
 *                    verifier: free). The fast path reads only this. A tick
 *                    is 1/HZ, and HZ is a build option of the kernel (100, 250,
 *                    300 or 1000), so durations are turned into ticks as if a
 *                    tick were the longest one, MESHID_JIFFY_NS_MAX: a window
 *                    of N ticks then never lasts longer than N x 10 ms.
 *
 * Built with -DMESHID_TEST_BUILD (the differential test's objects only, never
 * the one the agent loads), both read the one-entry array meshid_test_clock
 * instead (ticks as at HZ=100), so a test can move time by exact steps. */
#ifndef MESHID_LIB_CLOCK_H
#define MESHID_LIB_CLOCK_H

#include "common.h"

/* The longest tick of any kernel (HZ=100). */
#define MESHID_JIFFY_NS_MAX (10ULL * 1000 * 1000)

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

static __always_inline __u64 clock_jiffies(void)
{
	return clock_now() / MESHID_JIFFY_NS_MAX;
}
#else
static __always_inline __u64 clock_now(void)
{
	return bpf_ktime_get_boot_ns();
}

static __always_inline __u64 clock_jiffies(void)
{
	return bpf_jiffies64();
}
#endif

#endif
