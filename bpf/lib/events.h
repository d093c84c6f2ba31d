/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_events: one record per drop, and per new forwarded flow when the
 * config flag MESHID_CONFIG_TRACE_FORWARDED is set. Read by `meshid observe`. */
#ifndef MESHID_LIB_EVENTS_H
#define MESHID_LIB_EVENTS_H

#include "common.h"

struct meshid_event {
	__u64 timestamp; /* boot ns */
	__u32 local_identity;
	__u32 remote_identity;
	__u16 remote_node_id;
	__u8 direction;
	__u8 reason;     /* MESHID_REASON_* (0: forwarded) */
	__u8 family;
	__u8 proto;
	__u8 auth_type;
	__u8 pad1;
	__u16 sport;
	__u16 dport;
	__u32 ifindex;   /* the endpoint's node-side interface */
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 length;    /* bytes of the packet */
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_events SEC(".maps");

/* Records that did not fit the ring (the reader was behind): counted, so a
 * loss is reported, never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_events_lost SEC(".maps");

static __always_inline void event_count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&meshid_events_lost, &zero);

	if (lost)
		*lost += 1;
}

/* The reader is woken only once this much waits: a wakeup per record costs it
 * more than the record. It also reads on a timer (EventReader: every 25 ms), so
 * a lone record waits at most that long. */
#define MESHID_EVENTS_WAKEUP_BYTES (64 * 1024)

static __always_inline __u64 event_wakeup(void)
{
	return bpf_ringbuf_query(&meshid_events, BPF_RB_AVAIL_DATA) >= MESHID_EVENTS_WAKEUP_BYTES ?
	       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void
event_emit(const struct __sk_buff *skb, const struct meshid_flow *flow,
	   const struct meshid_verdict *v, __u8 reason, __u64 now)
{
	struct meshid_event *e = bpf_ringbuf_reserve(&meshid_events, sizeof(*e), 0);

	if (!e) {
		event_count_lost(); /* the reader is behind: lose the record, not the packet */
		return;
	}
	e->timestamp = now;
	e->local_identity = v->local_identity;
	e->remote_identity = v->remote_identity;
	e->remote_node_id = v->remote_node_id;
	e->direction = v->direction;
	e->reason = reason;
	e->family = flow->family;
	e->proto = flow->proto;
	e->auth_type = v->auth_type;
	e->pad1 = 0;
	e->sport = flow->sport;
	e->dport = flow->dport;
	e->ifindex = skb->ifindex;
	__builtin_memcpy(e->saddr, flow->saddr, 16);
	__builtin_memcpy(e->daddr, flow->daddr, 16);
	e->length = skb->len;
	e->pad2 = 0;
	bpf_ringbuf_submit(e, event_wakeup());
}

#endif
