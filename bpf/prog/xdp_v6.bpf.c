// SPDX-License-Identifier: GPL-2.0
/* The IPv6 path for XDP on external devices (--xdp), tail-called by bpx_xdp for IPv6 frames through
 * bpx_xdp_tail_v1 (lib/tail.h): it finishes what it can send itself and passes the rest to tc untouched
 * (bpf/lib/datapath6.h bpx_handle6_xdp). Linked into bpfproxy.o. */
#define BPX_CTX_XDP
#include "datapath6.h"

SEC("xdp")
int bpx_xdp_v6(struct xdp_md *ctx)
{
	return bpx_handle6_xdp(ctx);
}
