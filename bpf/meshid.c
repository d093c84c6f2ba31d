// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The meshid datapath: tc programs on the node side of each endpoint's veth.
 *
 *   meshid_from_ep  tc ingress of the node-side veth: traffic leaving the
 *                   endpoint (its egress policy)
 *   meshid_to_ep    tc egress of the node-side veth: traffic entering the
 *                   endpoint (its ingress policy)
 *
 * One object serves every endpoint: the endpoint's identity is the ipcache
 * entry of its own address (source when leaving, destination when entering).
 */
#include "lib/common.h"
#include "lib/clock.h"
#include "lib/parse.h"
#include "lib/config.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/auth.h"
#include "lib/signal.h"
#include "lib/conntrack.h"
#include "lib/fastpath.h"
#include "lib/metrics.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int
drop(struct __sk_buff *skb, const struct meshid_flow *flow,
     const struct meshid_verdict *v, __u8 reason, __u64 now)
{
	metrics_count(reason, v->direction, skb->len);
	event_emit(skb, flow, v, reason, now);
	return TC_ACT_SHOT;
}

static __always_inline int
forward(struct __sk_buff *skb, const struct meshid_flow *flow,
	const struct meshid_verdict *v, const struct ct_basis *basis, __u64 now)
{
	if (ct_record(flow, v->direction, basis, now)) {
		fastpath_flow_started(flow, v->direction);
		if (trace_forwarded())
			event_emit(skb, flow, v, MESHID_REASON_FORWARDED, now);
	}
	metrics_count(MESHID_REASON_FORWARDED, v->direction, skb->len);
	return TC_ACT_OK;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 direction)
{
	struct meshid_flow flow = {};
	struct meshid_verdict v = { .direction = direction };
	const struct ipcache_value *local, *remote;
	const struct policy_value *policy;
	const struct ct_entry *reply_of;
	struct auth_key auth = {};
	struct ct_basis basis = {};
	__u64 now, expiry;
	int ret;

	ret = parse_flow(skb, &flow);
	if (ret == PARSE_NOT_POLICED)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &flow, &v, MESHID_REASON_INVALID_PACKET, clock_now());

	basis.generation = generation_now();
	if (fastpath_established(skb, &flow, direction, basis.generation)) {
		metrics_count(MESHID_REASON_FORWARDED, direction, skb->len);
		return TC_ACT_OK;
	}
	/* A reply of a live tracked flow passes without a policy lookup. The
	 * boot-time clock is read only when the flow was not checked recently. */
	reply_of = ct_lookup_reply(&flow, direction);
	now = 0;
	if (reply_of && !fastpath_recent(reply_of)) {
		now = clock_now();
		if (!ct_live(reply_of, flow.proto, now))
			reply_of = NULL;
	}
	if (reply_of) {
		if (direction == MESHID_DIR_INGRESS &&
		    (reply_of->flags & MESHID_CT_WIREGUARD_REPLY) &&
		    !arrived_via_wireguard(skb))
			return drop(skb, &flow, &v, MESHID_REASON_WIREGUARD_REQUIRED, clock_now());
		metrics_count(MESHID_REASON_FORWARDED, direction, skb->len);
		return TC_ACT_OK;
	}

	if (!now)
		now = clock_now();
	basis.ticks = clock_jiffies();
	basis.fast_until = fastpath_until(basis.ticks, now, 0);

	if (direction == MESHID_DIR_EGRESS) {
		local = ipcache_lookup(flow.family, flow.saddr);
		remote = ipcache_lookup(flow.family, flow.daddr);
	} else {
		local = ipcache_lookup(flow.family, flow.daddr);
		remote = ipcache_lookup(flow.family, flow.saddr);
	}
	if (!local) /* not an endpoint the agent knows (yet): no policy */
		return forward(skb, &flow, &v, &basis, now);
	v.local_identity = local->identity;
	if (remote) {
		v.remote_identity = remote->identity;
		v.remote_node_id = remote->node_id;
	}

	policy = policy_lookup(v.local_identity, v.remote_identity, flow.dport,
			       flow.proto, direction);
	if (!policy) /* not selected in this direction */
		return forward(skb, &flow, &v, &basis, now);
	if (policy->verdict != MESHID_VERDICT_ALLOW)
		return drop(skb, &flow, &v, MESHID_REASON_POLICY_DENIED, now);
	if (policy->auth_type == 0)
		return forward(skb, &flow, &v, &basis, now);

	v.auth_type = policy->auth_type;
	auth_key_of(&auth, &v);
	expiry = auth_expiry(&auth);
	if (!expiry || now >= expiry) {
		if (v.remote_identity != MESHID_IDENTITY_UNKNOWN)
			signal_auth_required(&auth, now);
		return drop(skb, &flow, &v, MESHID_REASON_AUTH_REQUIRED, now);
	}
	basis.fast_until = fastpath_until(basis.ticks, now, expiry);
	if (v.remote_node_id != 0) {
		if (direction == MESHID_DIR_INGRESS && !arrived_via_wireguard(skb))
			return drop(skb, &flow, &v, MESHID_REASON_WIREGUARD_REQUIRED, now);
		basis.flags = direction == MESHID_DIR_INGRESS ? MESHID_CT_WIREGUARD_ARRIVAL
							      : MESHID_CT_WIREGUARD_REPLY;
	}
	return forward(skb, &flow, &v, &basis, now);
}

SEC("tc")
int meshid_from_ep(struct __sk_buff *skb)
{
	return handle(skb, MESHID_DIR_EGRESS);
}

SEC("tc")
int meshid_to_ep(struct __sk_buff *skb)
{
	return handle(skb, MESHID_DIR_INGRESS);
}
