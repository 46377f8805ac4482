/* ClientIP session affinity over IPv6 (affinity.h for IPv4): the backend an IPv6 client last used for
 * a frontend, keyed by its 16-byte address, in a map of its own so IPv4's entries keep their size.
 * Which backends an entry may still name is IPv4's bpx_affinity_match_v1: backend and frontend ids
 * are one space for both families, so the daemon writes an IPv6 frontend's members there too. */
#ifndef BPX_AFFINITY6_H
#define BPX_AFFINITY6_H
#include <stdbool.h>
#include "common.h"
#include "affinity.h"
#include "ipv6.h"

#define BPX_AFFINITY6_MAX_ENTRIES 65536

struct bpx_affinity6_key {
	union bpx_v6addr client; /* client IPv6, network byte order */
	__u32 rev_nat_id;        /* frontend, host byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_affinity6_key);
	__type(value, struct bpx_affinity_value);
	__uint(max_entries, BPX_AFFINITY6_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_affinity6_v1 BPX_MAPS;

/* The backend id `client` last used for the frontend, when that was less than timeout_s seconds
 * ago (affinity.h affinity_lookup). */
static __always_inline bool affinity6_lookup(const union bpx_v6addr *client, __u32 rev_nat_id, __u32 timeout_s,
                                             __u64 now, __u32 *backend_id)
{
	struct bpx_affinity6_key key = {.client = *client, .rev_nat_id = rev_nat_id};
	struct bpx_affinity_value *val = bpf_map_lookup_elem(&bpx_affinity6_v1, &key);

	if (!val || now - val->last_used_ns >= (__u64)timeout_s * BPX_NSEC_PER_SEC)
		return false;
	*backend_id = val->backend_id;
	return true;
}

/* Remembers that `client` now uses backend_id for the frontend. */
static __always_inline void affinity6_update(const union bpx_v6addr *client, __u32 rev_nat_id, __u32 backend_id,
                                             __u64 now)
{
	struct bpx_affinity6_key key = {.client = *client, .rev_nat_id = rev_nat_id};
	struct bpx_affinity_value val = {.last_used_ns = now, .backend_id = backend_id};

	bpf_map_update_elem(&bpx_affinity6_v1, &key, &val, BPF_ANY);
}

#endif
