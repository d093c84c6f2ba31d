// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The reference of `npm run bench:datapath`: a tc program that does nothing.
 * What BPF_PROG_TEST_RUN reports for it is the test runner's own cost per
 * run, which every figure of the real programs includes. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int meshid_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
