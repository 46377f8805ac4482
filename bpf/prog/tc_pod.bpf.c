// SPDX-License-Identifier: GPL-2.0
/* tc ingress of the host side of pod interfaces (--pod-interfaces): all traffic is internal.
 * One of the compilation units linked into bpfproxy.o (bpf/Makefile); the datapath is
 * bpf/lib/datapath.h. */
#include "datapath.h"

SEC("tc")
int bpx_from_pod(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_POD);
}

/* One license for the linked object (the linker keeps the first). */
char _license[] SEC("license") = "GPL";
