// SPDX-License-Identifier: GPL-2.0
/* XDP on external devices (--xdp): the same datapath as tc ingress of a device, finishing what
 * it can send itself and passing the rest to tc untouched (bpf/lib/datapath.h, fib.h). Linked
 * into bpfproxy.o. */
#define BPX_CTX_XDP
#include "datapath.h"

SEC("xdp")
int bpx_xdp(struct xdp_md *ctx)
{
	return bpx_handle(ctx, BPX_FROM_DEVICE);
}
