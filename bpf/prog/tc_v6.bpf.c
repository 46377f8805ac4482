// SPDX-License-Identifier: GPL-2.0
/* The IPv6 path for tc ingress of pod interfaces and Ethernet devices and tc egress, tail-called by
 * bpx_from_pod, bpx_from_device and bpx_reverse (lib/tail.h), and its ICMPv6 program. Linked into bpfproxy.o; the path is
 * bpf/lib/datapath6.h. */
#include "datapath6.h"

SEC("tc")
int bpx_v6_from_pod(struct __sk_buff *skb)
{
	return bpx_handle6(skb, BPX_FROM_POD);
}

SEC("tc")
int bpx_v6_from_device(struct __sk_buff *skb)
{
	return bpx_handle6(skb, BPX_FROM_DEVICE);
}

SEC("tc")
int bpx_v6_reverse(struct __sk_buff *skb)
{
	return bpx_handle6_egress(skb);
}

SEC("tc")
int bpx_v6_icmp(struct __sk_buff *skb)
{
	return bpx_handle6_icmp(skb);
}
