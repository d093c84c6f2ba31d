/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_signals: "this pair needs authentication", for the agent. At most
 * one record per pair per second; meshid_sigrate remembers when the last one
 * of each pair was sent. The record is the auth key itself (12 bytes). */
#ifndef MESHID_LIB_SIGNAL_H
#define MESHID_LIB_SIGNAL_H

#include "common.h"
#include "auth.h"

#define MESHID_SIGNAL_INTERVAL_NS NSEC_PER_SEC

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_signals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct auth_key);
	__type(value, __u64); /* boot ns of the last signal of this pair */
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_sigrate SEC(".maps");

static __always_inline void signal_auth_required(const struct auth_key *key, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&meshid_sigrate, key);

	if (last) {
		__u64 seen = *last;

		if (now - seen < MESHID_SIGNAL_INTERVAL_NS)
			return;
		/* Of several CPUs that see the same stale time, one wins. */
		if (__sync_val_compare_and_swap(last, seen, now) != seen)
			return;
	} else if (bpf_map_update_elem(&meshid_sigrate, key, &now, BPF_NOEXIST) != 0) {
		return; /* another CPU signalled this pair just now */
	}
	bpf_ringbuf_output(&meshid_signals, (void *)key, sizeof(*key), 0);
}

#endif
