/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The fast path of an established flow: one conntrack lookup instead of the
 * whole check.
 *
 * When the full check forwards an original-direction packet, its conntrack
 * entry records what that verdict depended on (conntrack.h): the generation
 * of the maps at the start of the check, the expiry of the auth entry it
 * needed, and whether it had to arrive through WireGuard. A later packet of
 * the flow is forwarded on that entry alone when
 *   - the generation is still the current one: no policy, ipcache or auth
 *     entry changed since (the agent bumps meshid_gen after every such write),
 *   - the entry was fully checked less than MESHID_FASTPATH_REVALIDATE_NS ago,
 *   - the auth entry it needed has not expired by now,
 *   - and, where it must, the packet arrived through the WireGuard device.
 * Anything else takes the full check, which decides, refreshes the entry and
 * drops with its reason. The fast path only ever forwards.
 *
 * MESHID_FASTPATH=0 compiles it out (the differential test builds the same
 * object both ways and checks that every packet gets the same verdict). */
#ifndef MESHID_LIB_FASTPATH_H
#define MESHID_LIB_FASTPATH_H

#include "common.h"
#include "config.h"
#include "conntrack.h"

#ifndef MESHID_FASTPATH
#define MESHID_FASTPATH 1
#endif

/* An established flow is fully checked again at least this often, so a change
 * made behind the agent's back (an auth entry deleted with bpftool) reaches it
 * within this time. Changes made by the agent reach it at the next packet. */
#define MESHID_FASTPATH_REVALIDATE_NS NSEC_PER_SEC

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
/* Packets the fast path forwarded, in the differential test's objects only:
 * the test checks that its sequences exercised the fast path at all. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_test_fastpath SEC(".maps");

static __always_inline void fastpath_count(void)
{
	__u32 zero = 0;
	__u64 *hits = bpf_map_lookup_elem(&meshid_test_fastpath, &zero);

	if (hits)
		__sync_fetch_and_add(hits, 1);
}
#else
static __always_inline void fastpath_count(void) {}
#endif

/* Read before any lookup of the full check: a write that lands during the
 * check bumps past it, so its result is not trusted by the next packet. */
static __always_inline __u64 generation_now(void)
{
	__u32 zero = 0;
	const __u64 *gen = bpf_map_lookup_elem(&meshid_gen, &zero);

	return gen ? *gen : 0;
}

/* True when the packet belongs to an established flow whose last full check
 * still holds: forward it without another. */
static __always_inline int
fastpath_established(const struct __sk_buff *skb, const struct meshid_flow *flow,
		     __u8 direction, __u64 generation, __u64 now)
{
#if MESHID_FASTPATH
	const struct ct_entry *entry = ct_lookup_original(flow, direction);

	if (!entry || entry->generation != generation)
		return 0;
	if (now - entry->last_seen >= MESHID_FASTPATH_REVALIDATE_NS)
		return 0;
	if (entry->auth_expiry && now >= entry->auth_expiry)
		return 0;
	if ((entry->flags & MESHID_CT_WIREGUARD_ARRIVAL) && !arrived_via_wireguard(skb))
		return 0;
	fastpath_count();
	return 1;
#else
	return 0;
#endif
}

#endif
