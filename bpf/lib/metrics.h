/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_metrics: per-CPU packet and byte counters by reason and direction.
 *
 * A per-CPU array, so that counting costs no hash lookup (every packet is
 * counted, the fast path's too). The index is reason | direction << 8: on a
 * little-endian machine the bytes of { u8 reason, u8 direction, u16 pad }. */
#ifndef MESHID_LIB_METRICS_H
#define MESHID_LIB_METRICS_H

#include "common.h"

#define MESHID_METRICS_ENTRIES 512 /* 256 reasons x 2 directions */

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, MESHID_METRICS_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_metrics SEC(".maps");

static __always_inline void metrics_count(__u8 reason, __u8 direction, __u32 bytes)
{
	__u32 index = (__u32)reason | (__u32)direction << 8;
	struct metrics_value *v = bpf_map_lookup_elem(&meshid_metrics, &index);

	if (v) {
		v->packets += 1;
		v->bytes += bytes;
	}
}

#endif
