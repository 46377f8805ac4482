// SPDX-License-Identifier: GPL-2.0
/* Direct server return (bpf/lib/dsr.h), tail-called by bpx_from_device (lib/tail.h): the node that chose the
 * backend (bpx_dsr_lb) and the backend's node (bpx_dsr_backend). Linked into bpfproxy.o. */
#include "dsr.h"

SEC("tc")
int bpx_dsr_lb(struct __sk_buff *skb)
{
	return dsr_lb(skb);
}

SEC("tc")
int bpx_dsr_backend(struct __sk_buff *skb)
{
	return dsr_backend(skb);
}
