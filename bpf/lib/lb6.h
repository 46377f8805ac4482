/* IPv6 load-balancer tables, beside the IPv4 ones (lb.h) so IPv4 entries keep their size: frontends
 * (master + backend slots, as bpx_svc_v2) and backends (the same backend id space as bpx_backend_v2).
 * Written only by the daemon (src/dataplane/bpf/lb6.ts). The service value is IPv4's struct
 * bpx_svc_value; rev_nat_id is the frontend's id (counters), the address a reply's source becomes is
 * in the flow's conntrack reply entry (conntrack6.h). */
#ifndef BPX_LB6_H
#define BPX_LB6_H
#include "common.h"
#include "lb.h"
#include "ipv6.h"

/* Default sizes (hash maps without preallocation: the bucket array is what an empty map costs). */
#define BPX_MAX_SERVICES6 65536
#define BPX_MAX_BACKENDS6 65536

struct bpx_svc6_key {
	union bpx_v6addr address; /* frontend IPv6 address, network byte order */
	__be16 port;              /* frontend L4 port, network byte order */
	__u8 proto;               /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope;               /* BPX_SCOPE_* */
	__u16 slot;               /* 0 = master entry, 1..count = backend slots; host byte order */
	__u16 pad;                /* zero */
};

struct bpx_backend6 {
	union bpx_v6addr address; /* backend IPv6, network byte order */
	__be16 port;              /* backend L4 port, network byte order */
	__u8 proto;               /* IPPROTO_* */
	__u8 flags;               /* BPX_BACKEND_F_* */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_svc6_key);
	__type(value, struct bpx_svc_value);
	__uint(max_entries, BPX_MAX_SERVICES6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_svc6_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct bpx_backend6);
	__uint(max_entries, BPX_MAX_BACKENDS6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_backend6_v1 BPX_MAPS;

/* The master entry of the frontend key->{address, port, proto}: the packet's own scope first,
 * then the other one (lb.h lb_lookup_service). */
static __always_inline struct bpx_svc_value *lb6_lookup_service(struct bpx_svc6_key *key, __u8 scope)
{
	struct bpx_svc_value *svc;

	key->slot = 0;
	key->pad = 0;
	key->scope = scope;
	svc = bpf_map_lookup_elem(&bpx_svc6_v1, key);
	if (!svc) {
		key->scope = svc_scope_other(scope);
		svc = bpf_map_lookup_elem(&bpx_svc6_v1, key);
	}
	return svc;
}

/* A uniformly random backend slot (lb.h lb_select_slot). */
static __always_inline struct bpx_svc_value *lb6_select_slot(struct bpx_svc6_key *key, const struct bpx_svc_value *svc)
{
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	return bpf_map_lookup_elem(&bpx_svc6_v1, key);
}

static __always_inline struct bpx_backend6 *lb6_lookup_backend(__u32 backend_id)
{
	return bpf_map_lookup_elem(&bpx_backend6_v1, &backend_id);
}

#endif
