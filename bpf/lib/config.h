/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshid_config: one entry of node-wide settings written by the agent. */
#ifndef MESHID_LIB_CONFIG_H
#define MESHID_LIB_CONFIG_H

#include "common.h"

/* Emit a `meshid_events` record for every new forwarded flow, not only drops. */
#define MESHID_CONFIG_TRACE_FORWARDED (1U << 0)

struct meshid_config {
	__u32 wireguard_ifindex; /* 0: no WireGuard device on this node */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct meshid_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meshid_config SEC(".maps");

static __always_inline const struct meshid_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&meshid_config, &zero);
}

/* Cross-node traffic that requires authentication is accepted only when it
 * entered this node through the WireGuard device (DESIGN data flow 4). */
static __always_inline int arrived_via_wireguard(const struct __sk_buff *skb)
{
	const struct meshid_config *cfg = config_get();

	return cfg && cfg->wireguard_ifindex != 0 &&
	       skb->ingress_ifindex == cfg->wireguard_ifindex;
}

static __always_inline int trace_forwarded(void)
{
	const struct meshid_config *cfg = config_get();

	return cfg && (cfg->flags & MESHID_CONFIG_TRACE_FORWARDED);
}

#endif
