/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_flowcache: per CPU, copies of the fast path's conntrack records.
 *
 * The conntrack lookup hashes a 40-byte key (jhash) and walks a bucket: most
 * of what an established packet costs. The fast path (fastpath.h) first looks
 * here: a direct-mapped table per CPU, whose slot is the top bits of a
 * multiplicative hash of the key (a few instructions; the verifier inlines the
 * array lookup), and whose copy counts only for the very key it was made for.
 * A copy is made whenever a packet is forwarded on its conntrack entry, and
 * holds under the same conditions as that entry (generation, deadline,
 * WireGuard arrival), for at most MESHID_FLOWCACHE_TICKS, and while its slot's
 * epoch is unchanged.
 *
 * The epoch. A copy does not see the conntrack map, and the full check of an
 * original-direction packet first asks whether the packet is a reply: a packet
 * of a recorded flow becomes one when the reversed flow is recorded by the
 * program of the other direction. That only happens while the flow's own entry
 * is gone (evicted, or idle past its lifetime, which no copy outlives), and
 * recording it bumps the epoch of the slot of the flow it answers
 * (flowcache_invalidate), shared by all CPUs. The epoch is read before the
 * entry is, as the generation is before a full check: a copy made under an
 * older epoch no longer holds.
 *
 * Slots are per CPU, so no two programs ever write one at once. The maps are
 * not pinned: a new load of the programs starts with an empty cache.
 *
 * MESHID_FLOWCACHE=0 compiles it out (the benchmark's reference for the
 * fast path on conntrack alone). */
#ifndef MESHID_LIB_FLOWCACHE_H
#define MESHID_LIB_FLOWCACHE_H

#include "common.h"
#include "clock.h"
#include "conntrack.h"

#ifndef MESHID_FLOWCACHE
#define MESHID_FLOWCACHE 1
#endif

/* A copy holds for at most 10 ticks (100 ms at HZ=100) after it was made, then
 * the conntrack entry is looked up again: so the LRU map sees the flow in use,
 * and an entry it evicted anyway is recorded again within that time. */
#define MESHID_FLOWCACHE_TICKS 10
/* Slots per CPU, a power of two: 4096 slots of 64 bytes, 256 KiB a CPU. */
#define MESHID_FLOWCACHE_BITS 12
#define MESHID_FLOWCACHE_SLOTS (1U << MESHID_FLOWCACHE_BITS)

/* A copy of what a flow's conntrack entry recorded for the fast path. */
struct flowcache_slot {
	struct ct_key key;
	__u64 generation;
	__u64 fast_until; /* the entry's, or MESHID_FLOWCACHE_TICKS after the copy */
	__u32 flags;
	__u32 epoch;      /* of the slot, when the copy was made */
};

/* A slot of this CPU, and its epoch when it was found. */
struct flowcache_probe {
	struct flowcache_slot *slot;
	__u32 epoch;
};

#if MESHID_FLOWCACHE
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flowcache_slot);
	__uint(max_entries, MESHID_FLOWCACHE_SLOTS);
} meshid_flowcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MESHID_FLOWCACHE_SLOTS);
} meshid_flowcache_epoch SEC(".maps");

/* The slot of a key: a multiplicative hash of its five words (each with its own
 * odd constant, so that swapping the addresses or the ports moves the slot). */
static __always_inline __u32 flowcache_index(const struct ct_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u64 h = w[0] * 0x9e3779b97f4a7c15ULL + w[1] * 0xc2b2ae3d27d4eb4fULL +
		  w[2] * 0x165667b19e3779f9ULL + w[3] * 0xd6e8feb86659fd93ULL +
		  w[4] * 0xff51afd7ed558ccdULL;

	return (__u32)(h >> (64 - MESHID_FLOWCACHE_BITS));
}

static __always_inline int ct_key_equal(const struct ct_key *a, const struct ct_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) |
		(x[4] ^ y[4])) == 0;
}
#endif

/* Finds the slot of `key` on this CPU and reads its epoch (before the caller
 * looks up the conntrack entry). */
static __always_inline void flowcache_probe(struct flowcache_probe *probe, const struct ct_key *key)
{
	probe->slot = NULL;
	probe->epoch = 0;
#if MESHID_FLOWCACHE
	__u32 index = flowcache_index(key);
	const __u32 *epoch = bpf_map_lookup_elem(&meshid_flowcache_epoch, &index);

	if (epoch) {
		probe->epoch = *epoch;
		probe->slot = bpf_map_lookup_elem(&meshid_flowcache, &index);
	}
#endif
}

/* The probed slot's copy, when it was made for `key` under the current epoch. */
static __always_inline const struct flowcache_slot *
flowcache_copy(const struct flowcache_probe *probe, const struct ct_key *key)
{
#if MESHID_FLOWCACHE
	const struct flowcache_slot *slot = probe->slot;

	if (slot && slot->epoch == probe->epoch && ct_key_equal(&slot->key, key))
		return slot;
#endif
	return NULL;
}

/* Copies the record of `key`'s conntrack entry into the probed slot. */
static __always_inline void
flowcache_store(const struct flowcache_probe *probe, const struct ct_key *key,
		const struct ct_entry *entry)
{
#if MESHID_FLOWCACHE
	struct flowcache_slot *slot = probe->slot;
	__u64 until = clock_jiffies() + MESHID_FLOWCACHE_TICKS;

	if (!slot)
		return;
	slot->key = *key;
	slot->generation = entry->generation;
	slot->fast_until = entry->fast_until < until ? entry->fast_until : until;
	slot->flags = entry->flags;
	slot->epoch = probe->epoch;
#endif
}

/* The flow of `key` became the reply of a newly recorded flow: copies of its
 * record stop holding, on every CPU. */
static __always_inline void flowcache_invalidate(const struct ct_key *key)
{
#if MESHID_FLOWCACHE
	__u32 index = flowcache_index(key);
	__u32 *epoch = bpf_map_lookup_elem(&meshid_flowcache_epoch, &index);

	if (epoch)
		__sync_fetch_and_add(epoch, 1);
#endif
}

#endif
