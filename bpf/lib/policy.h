/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_policy: (local identity, remote identity, port, proto, direction)
 * -> verdict. 0 is "any" for the remote identity, the port and the protocol.
 *
 * The all-wildcard entry {local, 0, 0, 0, direction} is the marker of an
 * endpoint selected in that direction: its verdict is what applies when no
 * more specific entry matches (deny: Cilium's default deny). When nothing
 * matches, not even a marker, the endpoint is not selected in that direction
 * and traffic passes. The agent writes the marker of every (identity,
 * direction) that any policy selects, before the more specific entries. */
#ifndef MESHID_LIB_POLICY_H
#define MESHID_LIB_POLICY_H

#include "common.h"

#define MESHID_VERDICT_ALLOW 1
#define MESHID_VERDICT_DENY  2

struct policy_key {
	__u32 local_identity;
	__u32 remote_identity;
	__u16 port;
	__u8 proto;
	__u8 direction;
};

struct policy_value {
	__u8 verdict;
	__u8 auth_type; /* 0: none, 1: mutual */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_policy SEC(".maps");

/* Most specific first: the remote identity outranks the port, the port
 * outranks the protocol.
 *   1 {remote, port, proto}  2 {remote, 0, proto}  3 {remote, 0, 0}
 *   4 {any,    port, proto}  5 {any,    0, proto}  6 {any,    0, 0}
 * Returns NULL when the endpoint is not selected in this direction. */
static __always_inline const struct policy_value *
policy_lookup(__u32 local, __u32 remote, __u16 port, __u8 proto, __u8 direction)
{
	struct policy_key key = {
		.local_identity = local,
		.direction = direction,
	};
	const struct policy_value *v;

	if (remote != MESHID_IDENTITY_UNKNOWN) {
		key.remote_identity = remote;
		if (port) {
			key.port = port;
			key.proto = proto;
			v = bpf_map_lookup_elem(&meshid_policy, &key);
			if (v)
				return v;
			key.port = 0;
		}
		key.proto = proto;
		v = bpf_map_lookup_elem(&meshid_policy, &key);
		if (v)
			return v;
		key.proto = 0;
		v = bpf_map_lookup_elem(&meshid_policy, &key);
		if (v)
			return v;
		key.remote_identity = 0;
	}
	if (port) {
		key.port = port;
		key.proto = proto;
		v = bpf_map_lookup_elem(&meshid_policy, &key);
		if (v)
			return v;
		key.port = 0;
	}
	key.proto = proto;
	v = bpf_map_lookup_elem(&meshid_policy, &key);
	if (v)
		return v;
	key.proto = 0;
	return bpf_map_lookup_elem(&meshid_policy, &key);
}

#endif
