/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants shared by every part of the meshid datapath. The numbers here are
 * part of the userspace contract (bpf/layouts.ts mirrors them). */
#ifndef MESHID_LIB_COMMON_H
#define MESHID_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Direction, from the endpoint's point of view (as in Cilium). */
#define MESHID_DIR_INGRESS 0 /* entering the endpoint */
#define MESHID_DIR_EGRESS  1 /* leaving the endpoint */

/* Why a packet was forwarded (0) or dropped (anything else). */
#define MESHID_REASON_FORWARDED          0
#define MESHID_REASON_POLICY_DENIED      1
#define MESHID_REASON_AUTH_REQUIRED      2
#define MESHID_REASON_WIREGUARD_REQUIRED 3
#define MESHID_REASON_INVALID_PACKET     4

/* Address families as Linux numbers them (AF_INET, AF_INET6). */
#define MESHID_FAMILY_IPV4 2
#define MESHID_FAMILY_IPV6 10

/* The identity of a remote address that is not in the ipcache. It matches
 * only policy entries whose remote identity is "any" (also 0). */
#define MESHID_IDENTITY_UNKNOWN 0

#define NSEC_PER_SEC 1000000000ULL

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* One packet's 5-tuple, ports in host byte order (0 where the protocol has
 * none, or for non-first fragments). IPv4 addresses use the first 4 bytes. */
struct meshid_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* What the verdict of one packet was decided from. */
struct meshid_verdict {
	__u32 local_identity;
	__u32 remote_identity;
	__u16 remote_node_id;
	__u8 direction;
	__u8 auth_type;
};

#endif
