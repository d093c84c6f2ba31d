/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The fast path of an established flow: a slot of a per-CPU flow cache, or
 * one conntrack lookup, instead of the whole check.
 *
 * When the full check forwards an original-direction packet, the flow's
 * conntrack entry (conntrack.h) records the generation of the maps at the
 * start of that check, a deadline on the tick clock until which the verdict
 * holds (fastpath_until: at most MESHID_FASTPATH_REVALIDATE_TICKS ahead, and
 * ending before the auth entry it needed expires), and whether its packets must
 * arrive through WireGuard. A later packet of the flow is forwarded on that
 * record alone when
 *   - the generation is still the current one: no policy, ipcache, auth or
 *     config entry changed since (the agent bumps meshid_gen after each write),
 *   - the deadline has not passed,
 *   - and, where it must, the packet arrived through the WireGuard device.
 * Anything else takes the full check, which decides, refreshes the entry and
 * drops with its reason. The fast path only ever forwards, and reads no clock
 * but the tick counter.
 *
 * The record is looked for first in this CPU's flow cache (flowcache.h), a
 * copy that costs no hash lookup, then in the conntrack entry itself.
 *
 * A reply needs to know that the flow it answers is live (not idle for its
 * lifetime, 60 s at the least). While that flow's verdict holds on the tick
 * clock it was fully checked less than a second ago, so it is: fastpath_recent
 * spares the reply the boot-time clock read.
 *
 * MESHID_FASTPATH=0 compiles it out, the flow cache with it (the differential
 * test builds the same object both ways and checks that every packet gets the
 * same verdict). */
#ifndef MESHID_LIB_FASTPATH_H
#define MESHID_LIB_FASTPATH_H

#include "common.h"
#include "clock.h"
#include "config.h"
#include "conntrack.h"

#ifndef MESHID_FASTPATH
#define MESHID_FASTPATH 1
#endif
#if !MESHID_FASTPATH
#undef MESHID_FLOWCACHE
#define MESHID_FLOWCACHE 0
#endif
#include "flowcache.h"

/* An established flow is fully checked again at least once per 100 ticks:
 * every second at HZ=100, every 100 ms at HZ=1000. So a change made behind the
 * agent's back (an auth entry deleted with bpftool) reaches it within 1 s.
 * Changes made by the agent reach it at its next packet. */
#define MESHID_FASTPATH_REVALIDATE_TICKS 100
/* Ticks the verdict ends early before its auth entry expires: the tick counter
 * can trail the boot-time clock by a tick when a CPU wakes, and the turning of
 * nanoseconds into ticks rounds. So the fast path never forwards on an expired
 * entry; the last ticks go through the full check. */
#define MESHID_FASTPATH_EXPIRY_MARGIN_TICKS 2

/* meshid_gen: the generation of the maps that verdicts depend on (policy,
 * ipcache, auth, config), bumped by the agent after each write to them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_gen SEC(".maps");

#ifdef MESHID_TEST_BUILD
/* Packets the fast path forwarded [0], and of those the flow cache [1], in the
 * differential test's objects only: the test checks that its sequences
 * exercised both. */
#define FASTPATH_HIT_CONNTRACK 0
#define FASTPATH_HIT_FLOWCACHE 1
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_test_fastpath SEC(".maps");

static __always_inline void fastpath_count(__u32 where)
{
	__u32 zero = 0;
	__u64 *hits = bpf_map_lookup_elem(&meshid_test_fastpath, &zero);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	if (where == FASTPATH_HIT_FLOWCACHE) {
		hits = bpf_map_lookup_elem(&meshid_test_fastpath, &where);
		if (hits)
			__sync_fetch_and_add(hits, 1);
	}
}
#else
#define FASTPATH_HIT_CONNTRACK 0
#define FASTPATH_HIT_FLOWCACHE 1
static __always_inline void fastpath_count(__u32 where) {}
#endif

/* A new conntrack entry for `flow` (this program's direction) makes it the
 * reply of the reversed flow: cached copies of that flow's record stop
 * holding (see the top of this file). */
static __always_inline void fastpath_flow_started(const struct meshid_flow *flow, __u8 direction)
{
#if MESHID_FASTPATH
	struct ct_key reversed;

	ct_reverse_key_of(&reversed, flow, direction);
	flowcache_invalidate(&reversed);
#endif
}

/* Read before any lookup of the full check: a write that lands during the
 * check bumps past it, so its result is not trusted by the next packet. */
static __always_inline __u64 generation_now(void)
{
	__u32 zero = 0;
	const __u64 *gen = bpf_map_lookup_elem(&meshid_gen, &zero);

	return gen ? *gen : 0;
}

/* The tick until which a verdict decided at `now` (boot ns) and `ticks` holds:
 * the revalidation interval, cut short before the auth entry's expiry
 * (`auth_expiry`, boot ns; 0 when the verdict needed none). */
static __always_inline __u64 fastpath_until(__u64 ticks, __u64 now, __u64 auth_expiry)
{
	__u64 window = MESHID_FASTPATH_REVALIDATE_TICKS;

	if (auth_expiry) {
		__u64 left = auth_expiry > now ? (auth_expiry - now) / MESHID_JIFFY_NS_MAX : 0;

		left = left > MESHID_FASTPATH_EXPIRY_MARGIN_TICKS ?
		       left - MESHID_FASTPATH_EXPIRY_MARGIN_TICKS : 0;
		if (left < window)
			window = left;
	}
	return ticks + window;
}

/* True when the flow `entry` records was fully checked so recently that it is
 * surely live (see the top of this file). */
static __always_inline int fastpath_recent(const struct ct_entry *entry)
{
#if MESHID_FASTPATH
	return clock_jiffies() < entry->fast_until;
#else
	return 0;
#endif
}

/* True when a verdict recorded at `recorded` (generation), holding until the
 * tick `until`, with `flags`, still holds for this packet. */
static __always_inline int
fastpath_holds(const struct __sk_buff *skb, __u64 generation, __u64 recorded,
	       __u64 until, __u32 flags)
{
	if (recorded != generation || clock_jiffies() >= until)
		return 0;
	return !(flags & MESHID_CT_WIREGUARD_ARRIVAL) || arrived_via_wireguard(skb);
}

/* True when the packet belongs to an established flow whose last full check
 * still holds: forward it without another. */
static __always_inline int
fastpath_established(const struct __sk_buff *skb, const struct meshid_flow *flow,
		     __u8 direction, __u64 generation)
{
#if MESHID_FASTPATH
	const struct flowcache_slot *copy;
	struct flowcache_probe probe;
	const struct ct_entry *entry;
	struct ct_key key;

	ct_key_of(&key, flow, direction);
	flowcache_probe(&probe, &key);
	copy = flowcache_copy(&probe, &key);
	if (copy && fastpath_holds(skb, generation, copy->generation, copy->fast_until, copy->flags)) {
		fastpath_count(FASTPATH_HIT_FLOWCACHE);
		return 1;
	}
	/* not cached, or the copy no longer holds: the entry may hold a newer record */
	entry = bpf_map_lookup_elem(&meshid_ct, &key);
	if (!entry || !fastpath_holds(skb, generation, entry->generation, entry->fast_until, entry->flags))
		return 0;
	flowcache_store(&probe, &key, entry);
	fastpath_count(FASTPATH_HIT_CONNTRACK);
	return 1;
#else
	return 0;
#endif
}

#endif
