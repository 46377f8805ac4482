/* Maglev over IPv6: the IPv4 tables (maglev.h, bpx_maglev_v1, one per frontend id and scope) hold
 * backend ids, which both families share, so an IPv6 frontend's table is built and indexed as
 * IPv4's; only the flow hash differs. */
#ifndef BPX_MAGLEV6_H
#define BPX_MAGLEV6_H
#include "common.h"
#include "maglev.h"
#include "ipv6.h"

/* The flow as the client sent it: the nine words of the IPv6 5-tuple through three chained lookup3
 * mixes (every address bit counts, no folding), the packet's bytes read as host-order words as
 * maglev_flow_hash does; its TypeScript twin is maglevFlowHash6 (src/dataplane/bpf/maglev.ts). */
static __always_inline __u32 maglev_flow_hash6(const union bpx_v6addr *saddr, const union bpx_v6addr *daddr,
                                               __be16 sport, __be16 dport, __u8 proto)
{
	__u32 ports = ((__u32)dport << 16) | (__u32)sport;
	__u32 h;

	h = maglev_jhash_3words(saddr->addr32[0], saddr->addr32[1], saddr->addr32[2], BPX_MAGLEV_SEED);
	h = maglev_jhash_3words(saddr->addr32[3], daddr->addr32[0], daddr->addr32[1], h);
	return maglev_jhash_3words(daddr->addr32[2], daddr->addr32[3], ports ^ proto, h);
}

#endif
