/* ClientIP session affinity: the backend a client address last used for a frontend. */
#ifndef BPX_AFFINITY_H
#define BPX_AFFINITY_H
#include "common.h"

struct bpx_affinity_key {
	__be32 client;    /* client IPv4, network byte order */
	__u16 rev_nat_id; /* frontend, host byte order */
	__u16 pad;        /* zero */
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
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_affinity_v1 SEC(".maps");

#endif
