/* loadBalancerSourceRanges, enforced per frontend: an LPM trie keyed by (frontend id,
 * source prefix). A frontend whose master has BPX_SVC_F_SOURCE_RANGES only accepts new
 * flows from a source inside one of its ranges. */
#ifndef BPX_SRCRANGE_H
#define BPX_SRCRANGE_H
#include <stdbool.h>
#include "common.h"

#define BPX_MAX_SOURCE_RANGES 16384

struct bpx_srcrange_key {
	__u32 prefixlen;  /* LPM prefix length in bits: 32 (the id) + the CIDR's length */
	__u32 rev_nat_id; /* frontend id, host order (always fully matched) */
	__be32 addr;      /* CIDR network address, network byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct bpx_srcrange_key);
	__type(value, __u32); /* unused, 1 */
	__uint(max_entries, BPX_MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_srcrange_v1 BPX_MAPS;

static __always_inline bool srcrange_allows(__u32 rev_nat_id, __be32 saddr)
{
	struct bpx_srcrange_key key = {.prefixlen = 64, .rev_nat_id = rev_nat_id, .addr = saddr};

	return bpf_map_lookup_elem(&bpx_srcrange_v1, &key) != NULL;
}

#endif
