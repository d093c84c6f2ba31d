/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_auth: authenticated pairs, written by the agent after mutual auth.
 * The key is Cilium's auth map key; the value is when the pair expires on
 * the kernel's boot-time clock (bpf_ktime_get_boot_ns). */
#ifndef MESHID_LIB_AUTH_H
#define MESHID_LIB_AUTH_H

#include "common.h"

struct auth_key {
	__u32 local_identity;
	__u32 remote_identity;
	__u16 remote_node_id; /* 0: this node */
	__u8 auth_type;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct auth_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_auth SEC(".maps");

static __always_inline void auth_key_of(struct auth_key *key, const struct meshid_verdict *v)
{
	key->local_identity = v->local_identity;
	key->remote_identity = v->remote_identity;
	key->remote_node_id = v->remote_node_id;
	key->auth_type = v->auth_type;
	key->pad = 0;
}

/* When the pair's entry expires (boot ns), or 0 when it has none. */
static __always_inline __u64 auth_expiry(const struct auth_key *key)
{
	const __u64 *expiration = bpf_map_lookup_elem(&meshid_auth, key);

	return expiration ? *expiration : 0;
}

#endif
