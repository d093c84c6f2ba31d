/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_metrics: per-CPU packet and byte counters by reason and direction. */
#ifndef MESHID_LIB_METRICS_H
#define MESHID_LIB_METRICS_H

#include "common.h"

struct metrics_key {
	__u8 reason;
	__u8 direction;
	__u16 pad;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 256);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_metrics SEC(".maps");

static __always_inline void metrics_count(__u8 reason, __u8 direction, __u32 bytes)
{
	struct metrics_key key = { .reason = reason, .direction = direction };
	struct metrics_value *v = bpf_map_lookup_elem(&meshid_metrics, &key);
	struct metrics_value first = { .packets = 1, .bytes = bytes };

	if (v) {
		v->packets += 1;
		v->bytes += bytes;
		return;
	}
	if (bpf_map_update_elem(&meshid_metrics, &key, &first, BPF_NOEXIST) == 0)
		return;
	/* Created by another CPU meanwhile: this CPU's slot exists now. */
	v = bpf_map_lookup_elem(&meshid_metrics, &key);
	if (v) {
		v->packets += 1;
		v->bytes += bytes;
	}
}

#endif
