/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_ct: flows that a program forwarded in their original direction.
 *
 * Each program records the packets it forwards, keyed by their 5-tuple and
 * the program's direction. A packet whose reversed 5-tuple was recorded by
 * the program of the other direction is a reply: it is forwarded without a
 * policy lookup (so an endpoint's egress policy does not break the replies
 * of connections that its ingress policy allowed, and the reverse). Entries
 * live in an LRU map and stop matching once idle for longer than the
 * lifetime of their protocol.
 *
 * The entry of an original-direction flow also keeps what its verdict was
 * decided from (generation, a deadline on the tick clock, WireGuard arrival),
 * for the fast path of fastpath.h. It is rewritten when that changes or the
 * deadline passes, which is also when last_seen moves on: at least once per
 * second while the flow sends. */
#ifndef MESHID_LIB_CONNTRACK_H
#define MESHID_LIB_CONNTRACK_H

#include "common.h"
#include "config.h"

#define MESHID_CT_LIFETIME_TCP   (21600ULL * NSEC_PER_SEC) /* 6 h, as Cilium */
#define MESHID_CT_LIFETIME_OTHER (60ULL * NSEC_PER_SEC)

/* Replies entering the endpoint must arrive through WireGuard: the flow was
 * authenticated with an endpoint on another node. */
#define MESHID_CT_WIREGUARD_REPLY   (1U << 0)
/* Packets of this flow entering the endpoint must arrive through WireGuard:
 * they come from an authenticated endpoint on another node. */
#define MESHID_CT_WIREGUARD_ARRIVAL (1U << 1)

/* 8-byte aligned, so that the flow cache (fastpath.h) reads it as five words. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 direction; /* of the program that recorded the flow */
	__u8 pad;
} __attribute__((aligned(8)));

struct ct_entry {
	__u64 last_seen;  /* boot ns of the full check that last wrote it */
	__u64 fast_until; /* tick (clock_jiffies) until which that verdict holds */
	__u64 generation; /* meshid_gen when that check started */
	__u32 flags;
	__u32 pad;
};

/* What the full check of a forwarded original-direction packet decided from. */
struct ct_basis {
	__u64 generation;
	__u64 ticks;      /* clock_jiffies() at the check */
	__u64 fast_until; /* fastpath_until() of the check */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_ct SEC(".maps");

static __always_inline __u64 ct_lifetime(__u8 proto)
{
	return proto == IPPROTO_TCP ? MESHID_CT_LIFETIME_TCP : MESHID_CT_LIFETIME_OTHER;
}

static __always_inline void
ct_key_fill(struct ct_key *key, const __u8 *saddr, const __u8 *daddr, __u16 sport,
	    __u16 dport, const struct meshid_flow *flow, __u8 direction)
{
	__builtin_memcpy(key->saddr, saddr, 16);
	__builtin_memcpy(key->daddr, daddr, 16);
	key->sport = sport;
	key->dport = dport;
	key->proto = flow->proto;
	key->family = flow->family;
	key->direction = direction;
	key->pad = 0;
}

/* The key under which the program of `direction` records a packet's flow. */
static __always_inline void
ct_key_of(struct ct_key *key, const struct meshid_flow *flow, __u8 direction)
{
	ct_key_fill(key, flow->saddr, flow->daddr, flow->sport, flow->dport, flow, direction);
}

/* The key of the flow that a packet of `flow`, seen by the program of
 * `direction`, would reply to: the reversed 5-tuple, the other direction. */
static __always_inline void
ct_reverse_key_of(struct ct_key *key, const struct meshid_flow *flow, __u8 direction)
{
	ct_key_fill(key, flow->daddr, flow->saddr, flow->dport, flow->sport, flow,
		    direction == MESHID_DIR_INGRESS ? MESHID_DIR_EGRESS : MESHID_DIR_INGRESS);
}

/* The entry of the flow this packet would reply to, live or not (ct_live). */
static __always_inline const struct ct_entry *
ct_lookup_reply(const struct meshid_flow *flow, __u8 direction)
{
	struct ct_key key;

	ct_reverse_key_of(&key, flow, direction);
	return bpf_map_lookup_elem(&meshid_ct, &key);
}

/* True when the flow has not been idle for its protocol's lifetime at `now`. */
static __always_inline int ct_live(const struct ct_entry *entry, __u8 proto, __u64 now)
{
	return now - entry->last_seen < ct_lifetime(proto);
}

/* Records a forwarded original-direction packet and what its verdict was
 * decided from. The entry is left as it is while its verdict holds and nothing
 * it was decided from changed. Returns 1 when it starts a new flow (no live
 * entry before), 0 otherwise. */
static __always_inline int
ct_record(const struct meshid_flow *flow, __u8 direction,
	  const struct ct_basis *basis, __u64 now)
{
	struct ct_key key;
	struct ct_entry *entry;
	struct ct_entry fresh = {
		.last_seen = now,
		.fast_until = basis->fast_until,
		.generation = basis->generation,
		.flags = basis->flags,
	};
	int is_new = 1;

	ct_key_of(&key, flow, direction);
	entry = bpf_map_lookup_elem(&meshid_ct, &key);
	if (entry && ct_live(entry, flow->proto, now)) {
		is_new = 0;
		if (basis->ticks < entry->fast_until && entry->flags == basis->flags &&
		    entry->generation == basis->generation)
			return 0;
	}
	bpf_map_update_elem(&meshid_ct, &key, &fresh, BPF_ANY);
	return is_new;
}

#endif
