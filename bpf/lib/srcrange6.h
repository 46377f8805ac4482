/* loadBalancerSourceRanges of IPv6 frontends (datapath6.h), as srcrange.h's for IPv4: an LPM trie of its
 * own keyed by (frontend id, IPv6 source prefix). A frontend whose master has BPX_SVC_F_SOURCE_RANGES only
 * accepts new flows from a source inside one of its ranges. Written by the daemon's encoder
 * (src/dataplane/bpf/srcrange6.ts). */
#ifndef BPX_SRCRANGE6_H
#define BPX_SRCRANGE6_H
#include <stdbool.h>
#include "common.h"
#include "ipv6.h"
#include "srcrange.h"

struct bpx_srcrange6_key {
	__u32 prefixlen;       /* LPM prefix length in bits: 32 (the id) + the CIDR's length */
	__u32 rev_nat_id;      /* frontend id, host order (always fully matched) */
	union bpx_v6addr addr; /* CIDR network address, network byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct bpx_srcrange6_key);
	__type(value, __u32); /* unused, 1 */
	__uint(max_entries, BPX_MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_srcrange6_v1 BPX_MAPS;

static __always_inline bool srcrange6_allows(__u32 rev_nat_id, const union bpx_v6addr *saddr)
{
	struct bpx_srcrange6_key key = {.prefixlen = 32 + 128, .rev_nat_id = rev_nat_id, .addr = *saddr};

	return bpf_map_lookup_elem(&bpx_srcrange6_v1, &key) != NULL;
}

#endif
