// SPDX-License-Identifier: GPL-2.0
/* The IPv6 path for tc ingress of L3 devices (no link-layer header), tail-called by
 * bpx_from_l3dev and bpx_reverse_l3 (lib/tail.h): offsets start at the IPv6 header (parse.h BPX_L3_DEV). */
#define BPX_L3_DEV
#include "datapath6.h"

SEC("tc")
int bpx_v6_from_l3dev(struct __sk_buff *skb)
{
	return bpx_handle6(skb, BPX_FROM_DEVICE);
}

SEC("tc")
int bpx_v6_reverse_l3(struct __sk_buff *skb)
{
	return bpx_handle6_egress(skb);
}

SEC("tc")
int bpx_v6_icmp_l3(struct __sk_buff *skb)
{
	return bpx_handle6_icmp(skb);
}
