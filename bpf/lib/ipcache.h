/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_ipcache: address (prefix) -> security identity and node. */
#ifndef MESHID_LIB_IPCACHE_H
#define MESHID_LIB_IPCACHE_H

#include "common.h"

/* prefixlen counts the bits after itself: 32 bits of family+pad, then the
 * address prefix. A /24 IPv4 CIDR has prefixlen 32 + 24 = 56. */
#define IPCACHE_PREFIX_HEADER_BITS 32

struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u16 node_id; /* 0: this node */
	__u16 flags;   /* reserved for the agent; not read here */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_ipcache SEC(".maps");

static __always_inline const struct ipcache_value *
ipcache_lookup(__u8 family, const __u8 *addr)
{
	struct ipcache_key key = { .family = family };

	if (family == MESHID_FAMILY_IPV4) {
		key.prefixlen = IPCACHE_PREFIX_HEADER_BITS + 32;
		__builtin_memcpy(key.addr, addr, 4);
	} else {
		key.prefixlen = IPCACHE_PREFIX_HEADER_BITS + 128;
		__builtin_memcpy(key.addr, addr, 16);
	}
	return bpf_map_lookup_elem(&meshid_ipcache, &key);
}

#endif
