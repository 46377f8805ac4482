// SPDX-License-Identifier: GPL-2.0
/* tc on external devices without a link-layer header (ipip, wireguard, tun: --devices that are
 * not Ethernet): the same programs as tc_device.bpf.c, built with every offset starting at the
 * IPv4 header (parse.h, BPX_L3_DEV). Linked into bpfproxy.o. */
#define BPX_L3_DEV
#include "datapath.h"

SEC("tc")
int bpx_from_l3dev(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_DEVICE);
}

SEC("tc")
int bpx_reverse_l3(struct __sk_buff *skb)
{
	return bpx_handle_egress(skb);
}
