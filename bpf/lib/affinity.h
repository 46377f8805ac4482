/* ClientIP session affinity: the backend a client address last used for a frontend. */
#ifndef BPX_AFFINITY_H
#define BPX_AFFINITY_H
#include <stdbool.h>
#include "common.h"

#define BPX_AFFINITY_MAX_ENTRIES 65536 /* default; the daemon sets the size before load */

struct bpx_affinity_key {
	__be32 client;    /* client IPv4, network byte order */
	__u32 rev_nat_id; /* frontend, host byte order */
};

struct bpx_affinity_value {
	__u64 last_used_ns; /* bpf_ktime_get_ns() of the last new flow; host order */
	__u32 backend_id;   /* backend chosen, host order */
	__u32 pad;          /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_affinity_key);
	__type(value, struct bpx_affinity_value);
	__uint(max_entries, BPX_AFFINITY_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_affinity_v2 BPX_MAPS;

/* Which backends a frontend may still send new flows to: an affinity entry naming any other
 * backend (not ready, terminating, removed, another Service's) is ignored. Written by the daemon
 * for frontends with ClientIP affinity only. */
struct bpx_affinity_match_key {
	__u32 backend_id; /* host byte order */
	__u32 rev_nat_id; /* the frontend, host byte order */
	__u8 scope;       /* BPX_SCOPE_* of the service entry */
	__u8 pad[3];      /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_affinity_match_key);
	__type(value, __u8); /* 1 */
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_affinity_match_v1 BPX_MAPS;

/* ---- Lookups and updates (functions only; the layout above is the ABI) ---- */

static __always_inline bool affinity_backend_is_member(__u32 backend_id, __u32 rev_nat_id, __u8 scope)
{
	struct bpx_affinity_match_key key = {.backend_id = backend_id, .rev_nat_id = rev_nat_id, .scope = scope};

	return bpf_map_lookup_elem(&bpx_affinity_match_v1, &key) != NULL;
}

#define BPX_NSEC_PER_SEC 1000000000ULL

static __always_inline void affinity_key_init(struct bpx_affinity_key *key, __be32 client, __u32 rev_nat_id)
{
	key->client = client;
	key->rev_nat_id = rev_nat_id;
}

/* The backend id `client` last used for the frontend, when that was less than
 * timeout_s seconds ago; false otherwise. */
static __always_inline bool affinity_lookup(__be32 client, __u32 rev_nat_id, __u32 timeout_s, __u64 now,
                                            __u32 *backend_id)
{
	struct bpx_affinity_value *val;
	struct bpx_affinity_key key;

	affinity_key_init(&key, client, rev_nat_id);
	val = bpf_map_lookup_elem(&bpx_affinity_v2, &key);
	if (!val || now - val->last_used_ns >= (__u64)timeout_s * BPX_NSEC_PER_SEC)
		return false;
	*backend_id = val->backend_id;
	return true;
}

/* Remembers that `client` now uses backend_id for the frontend. */
static __always_inline void affinity_update(__be32 client, __u32 rev_nat_id, __u32 backend_id, __u64 now)
{
	struct bpx_affinity_value val = {.last_used_ns = now, .backend_id = backend_id};
	struct bpx_affinity_key key;

	affinity_key_init(&key, client, rev_nat_id);
	bpf_map_update_elem(&bpx_affinity_v2, &key, &val, BPF_ANY);
}

#endif
