/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing: Ethernet, then IPv4 or IPv6 (with extension headers), then
 * the ports of TCP, UDP and SCTP. Every read goes through load_header or
 * load_bytes: straight from the packet when the linear part holds the bytes
 * (checked against data_end), through bpf_skb_load_bytes otherwise (a
 * non-linear skb), which checks against the packet's length. */
#ifndef MESHID_LIB_PARSE_H
#define MESHID_LIB_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include "common.h"

#define PARSE_OK          0
#define PARSE_NOT_POLICED 1 /* not IP (ARP...), or IPv6 neighbour discovery */
#define PARSE_INVALID -1 /* truncated or malformed IP packet */

#define IPV4_FRAG_OFFSET_MASK 0x1fff
#define IPV6_FRAG_OFFSET_MASK 0xfff8
#define IPV6_MAX_EXT_HEADERS 8
/* ICMPv6 router solicitation .. redirect: IPv6's ARP, never policed */
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST  137

struct ipv6_ext_header {
	__u8 nexthdr;
	__u8 hdrlen;
	__u16 frag_off; /* fragment header only */
};

/* The first four bytes of TCP, UDP and SCTP headers alike. */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

/* True when the linear part of the packet holds `len` bytes at `off`. */
static __always_inline int
linear_holds(const struct __sk_buff *skb, __u32 off, __u32 len)
{
	const __u8 *data = (const __u8 *)(long)skb->data;
	const __u8 *end = (const __u8 *)(long)skb->data_end;

	return off <= 0xffff && data + off + len <= end;
}

/* Copies `len` bytes at `off` of the packet into `dst`; < 0 when the packet is shorter. */
static __always_inline int
load_bytes(const struct __sk_buff *skb, __u32 off, void *dst, __u32 len)
{
	if (linear_holds(skb, off, len)) {
		__builtin_memcpy(dst, (const __u8 *)(long)skb->data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, dst, len);
}

/* load_bytes of a whole header into *dst, copied as its type: a memcpy of
 * unknown alignment is a load per byte, the type's own copy a load per field
 * (unaligned packet reads are allowed where the kernel has cheap ones, and a
 * load of the wrong alignment elsewhere fails at load time, not silently). */
#define load_header(skb, off, dst)                                                   \
	(linear_holds((skb), (off), sizeof(*(dst))) ?                                     \
		 (*(dst) = *(const __typeof__(*(dst)) *)((const __u8 *)(long)(skb)->data + (off)), 0) : \
		 bpf_skb_load_bytes((skb), (off), (dst), sizeof(*(dst))))

static __always_inline int parse_ports(struct __sk_buff *skb, __u32 off, struct meshid_flow *flow)
{
	struct l4_ports ports;

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP &&
	    flow->proto != IPPROTO_SCTP)
		return PARSE_OK;
	if (load_header(skb, off, &ports) < 0)
		return PARSE_INVALID;
	flow->sport = bpf_ntohs(ports.source);
	flow->dport = bpf_ntohs(ports.dest);
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct meshid_flow *flow)
{
	struct iphdr ip;
	__u32 hlen;

	if (load_header(skb, ETH_HLEN, &ip) < 0)
		return PARSE_INVALID;
	if (ip.version != 4 || ip.ihl < 5)
		return PARSE_INVALID;
	hlen = ip.ihl * 4;
	flow->family = MESHID_FAMILY_IPV4;
	flow->proto = ip.protocol;
	__builtin_memcpy(flow->saddr, &ip.saddr, 4);
	__builtin_memcpy(flow->daddr, &ip.daddr, 4);
	if (bpf_ntohs(ip.frag_off) & IPV4_FRAG_OFFSET_MASK)
		return PARSE_OK; /* non-first fragment: no ports */
	return parse_ports(skb, ETH_HLEN + hlen, flow);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct meshid_flow *flow)
{
	struct ipv6hdr ip;
	struct ipv6_ext_header ext;
	__u32 off = ETH_HLEN + sizeof(ip);
	__u8 nexthdr;
	int i;

	if (load_header(skb, ETH_HLEN, &ip) < 0)
		return PARSE_INVALID;
	if (ip.version != 6)
		return PARSE_INVALID;
	flow->family = MESHID_FAMILY_IPV6;
	__builtin_memcpy(flow->saddr, &ip.saddr, 16);
	__builtin_memcpy(flow->daddr, &ip.daddr, 16);
	nexthdr = ip.nexthdr;

	for (i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if (load_bytes(skb, off, &ext, 2) < 0)
				return PARSE_INVALID;
			off += ((__u32)ext.hdrlen + 1) * 8;
			nexthdr = ext.nexthdr;
			break;
		case IPPROTO_AH:
			if (load_bytes(skb, off, &ext, 2) < 0)
				return PARSE_INVALID;
			off += ((__u32)ext.hdrlen + 2) * 4;
			nexthdr = ext.nexthdr;
			break;
		case IPPROTO_FRAGMENT:
			if (load_bytes(skb, off, &ext, 4) < 0)
				return PARSE_INVALID;
			off += 8;
			nexthdr = ext.nexthdr;
			flow->proto = nexthdr;
			if (bpf_ntohs(ext.frag_off) & IPV6_FRAG_OFFSET_MASK)
				return PARSE_OK; /* non-first fragment: no ports */
			break;
		case IPPROTO_ICMPV6: {
			__u8 type;

			flow->proto = nexthdr;
			if (load_bytes(skb, off, &type, 1) < 0)
				return PARSE_INVALID;
			if (type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST)
				return PARSE_NOT_POLICED;
			return PARSE_OK;
		}
		default:
			flow->proto = nexthdr;
			return parse_ports(skb, off, flow);
		}
	}
	return PARSE_INVALID; /* more extension headers than we walk */
}

static __always_inline int parse_flow(struct __sk_buff *skb, struct meshid_flow *flow)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return parse_ipv4(skb, flow);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, flow);
	return PARSE_NOT_POLICED;
}

#endif
