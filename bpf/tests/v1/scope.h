/* Which traffic a packet is: from pods / the cluster CIDRs ("internal") or from outside
 * ("external"). Decides which frontend entries (BPX_SCOPE_*) a new flow looks up first. */
#ifndef BPX_SCOPE_H
#define BPX_SCOPE_H
#include <stdbool.h>
#include "common.h"
#include "config.h"
#include "lb.h"

/* Where a packet entered, a compile-time constant of each entry program. */
#define BPX_FROM_POD 0    /* host side of a pod veth: always internal */
#define BPX_FROM_DEVICE 1 /* an external device: internal only from a cluster CIDR */

static __always_inline bool source_is_in_cluster(__be32 saddr)
{
	struct bpx_config *cfg;
	__u32 zero = 0;
	int i;

	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	if (!cfg)
		return false;
#pragma unroll
	for (i = 0; i < BPX_MAX_CLUSTER_CIDRS; i++) {
		struct bpx_cidr4 *cidr = &cfg->cluster_cidrs[i];

		if (i >= cfg->n_cluster_cidrs)
			break;
		if (cidr->mask && !((saddr ^ cidr->addr) & cidr->mask))
			return true;
	}
	return false;
}

static __always_inline __u8 packet_scope(__be32 saddr, const int from)
{
	if (from == BPX_FROM_POD)
		return BPX_SCOPE_INTERNAL;
	return source_is_in_cluster(saddr) ? BPX_SCOPE_INTERNAL : BPX_SCOPE_EXTERNAL;
}

#endif
