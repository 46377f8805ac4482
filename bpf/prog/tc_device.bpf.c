// SPDX-License-Identifier: GPL-2.0
/* tc on external devices (--devices): ingress, where traffic is internal only from a cluster
 * CIDR, and egress (also attached to pod interfaces), where replies that crossed no hooked
 * ingress are reverse-translated. Linked into bpfproxy.o; the datapath is bpf/lib/datapath.h. */
#include "datapath.h"

SEC("tc")
int bpx_from_device(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_DEVICE);
}

SEC("tc")
int bpx_reverse(struct __sk_buff *skb)
{
	return bpx_handle_egress(skb);
}
