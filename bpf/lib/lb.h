/* Load-balancer tables: services (master slot + backend slots), backends,
 * reverse NAT and service metadata. Written only by the daemon. */
#ifndef BPX_LB_H
#define BPX_LB_H
#include <stdbool.h>
#include "common.h"

/* Default sizes; the daemon sets every size before load (--map-sizes, docs/maps.md).
 * Masters and backend slots share the services map: 50,000 frontends + 500,000 slots
 * with room for make-before-break updates. */
#define BPX_MAX_SERVICES 1048576
#define BPX_MAX_BACKENDS 524288
#define BPX_MAX_FRONTENDS 131072

/* Which traffic a frontend entry serves. A frontend with the same backends for
 * both kinds of traffic has one entry; lookups try the packet's own scope first. */
#define BPX_SCOPE_EXTERNAL 0 /* from outside the cluster: NodePort, LoadBalancer, externalIPs */
#define BPX_SCOPE_INTERNAL 1 /* from pods / cluster CIDR */

struct bpx_svc_key {
	__be32 address; /* frontend IPv4 address, network byte order */
	__be16 port;    /* frontend L4 port, network byte order */
	__u8 proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope;     /* BPX_SCOPE_* */
	__u16 slot;     /* 0 = master entry, 1..count = backend slots; host byte order */
	__u16 pad;      /* zero */
};

struct bpx_svc_value {
	__u32 backend_id;       /* slots: id into bpx_backend_v2; master: 0. Host byte order */
	__u32 rev_nat_id;       /* master and slots: id into bpx_revnat_v2. Host byte order */
	__u16 count;            /* master: number of live slots (0 = reject new connections);
	                         * slot: length of its backend's run of slots (weights, leastconn.h), 0 = 1 */
	__u8 flags;             /* master: BPX_SVC_F_* */
	__u8 xflags;            /* master: BPX_SVC_X_* (zero in entries of earlier versions, where it was padding) */
	__u32 affinity_timeout; /* master: ClientIP affinity in seconds, 0 = no affinity. Host order;
	                         * slot: first slot of its run, 0-based (with count 0: the slot itself) */
};

#define BPX_SVC_F_AFFINITY (1U << 0)        /* ClientIP session affinity on */
#define BPX_SVC_F_DROP_WHEN_EMPTY (1U << 1) /* count 0 by Local policy: drop, don't reject */
#define BPX_SVC_F_MASQUERADE (1U << 2)      /* NodePort/LB/externalIP with Cluster policy: masquerade every new flow */
#define BPX_SVC_F_MASQ_OUTSIDE (1U << 3)    /* ClusterIP: masquerade flows from outside the cluster */
#define BPX_SVC_F_SOURCE_RANGES (1U << 4)   /* only sources in bpx_srcrange_v1 for this frontend */
#define BPX_SVC_F_MAGLEV (1U << 5)          /* new flows pick from the frontend's Maglev table */
#define BPX_SVC_F_MAP_FULL (1U << 6)   /* count 0 because the backend maps had no room: rejected as REJECT_MAP_FULL */
#define BPX_SVC_F_LEAST_CONN (1U << 7) /* new flows pick by active flows (leastconn.h); counted per backend */

/* xflags: the flags byte is full. */
#define BPX_SVC_X_DSR (1U << 0)    /* external flows to a backend on another node by direct server return (dsr.h) */
#define BPX_SVC_X_HYBRID (1U << 1) /* never read by BPF: hybrid mode (DSR for TCP only), for `bpfproxy status` */

struct bpx_backend {
	__be32 address; /* backend IPv4, network byte order */
	__be16 port;    /* backend L4 port, network byte order */
	__u8 proto;     /* IPPROTO_* */
	__u8 flags;     /* BPX_BACKEND_F_* */
};

#define BPX_BACKEND_F_TERMINATING (1U << 0) /* serving but terminating: existing flows only unless fallback */
#define BPX_BACKEND_F_NODE_LOCAL (1U << 1)  /* endpoint on this node */

/* Key: __u32 rev_nat_id (host byte order). What a reply's source is rewritten to. */
struct bpx_rev_nat {
	__be32 address; /* frontend IPv4, network byte order */
	__be16 port;    /* frontend port, network byte order */
	__u16 pad;      /* zero */
};

/* Key: __u32 rev_nat_id. Never read by BPF: names the frontend for `bpfproxy status`,
 * so status can be answered from the pins alone. */
#define BPX_NAME_LEN 128
#define BPX_PORT_NAME_LEN 64
struct bpx_svc_meta {
	char service[BPX_NAME_LEN];        /* "namespace/name", NUL padded */
	char port_name[BPX_PORT_NAME_LEN]; /* Service port name, NUL padded ("" if unnamed) */
	__u8 type;                         /* BPX_SVC_TYPE_* */
	__u8 algorithm;                    /* BPX_ALG_* */
	__u8 affinity;                     /* 0 = None, 1 = ClientIP */
	__u8 pad;                          /* zero */
};

#define BPX_SVC_TYPE_CLUSTER_IP 0
#define BPX_SVC_TYPE_NODE_PORT 1
#define BPX_SVC_TYPE_LOAD_BALANCER 2
#define BPX_SVC_TYPE_EXTERNAL_IP 3

#define BPX_ALG_RANDOM 0
#define BPX_ALG_MAGLEV 1
#define BPX_ALG_LEAST_CONN 2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_svc_key);
	__type(value, struct bpx_svc_value);
	__uint(max_entries, BPX_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_svc_v2 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct bpx_backend);
	__uint(max_entries, BPX_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_backend_v2 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct bpx_rev_nat);
	__uint(max_entries, BPX_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_revnat_v2 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct bpx_svc_meta);
	__uint(max_entries, BPX_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_svc_meta_v2 BPX_MAPS;

/* ---- Service selection (functions only; the layout above is the ABI) ---- */

static __always_inline bool svc_has_backends(const struct bpx_svc_value *svc)
{
	return svc->count > 0;
}

/* kube-proxy drops (rather than rejects) traffic a Local policy leaves without backends. */
static __always_inline bool svc_drops_when_empty(const struct bpx_svc_value *svc)
{
	return svc->flags & BPX_SVC_F_DROP_WHEN_EMPTY;
}

/* The daemon could not write this frontend's backends (a full map): rejected, reported apart. */
static __always_inline bool svc_map_full(const struct bpx_svc_value *svc)
{
	return svc->flags & BPX_SVC_F_MAP_FULL;
}

static __always_inline bool svc_uses_maglev(const struct bpx_svc_value *svc)
{
	return svc->flags & BPX_SVC_F_MAGLEV;
}

static __always_inline bool svc_has_affinity(const struct bpx_svc_value *svc)
{
	return svc->flags & BPX_SVC_F_AFFINITY;
}

static __always_inline __u8 svc_scope_other(__u8 scope)
{
	return scope == BPX_SCOPE_INTERNAL ? BPX_SCOPE_EXTERNAL : BPX_SCOPE_INTERNAL;
}

/* The master entry of the frontend key->{address, port, proto}: the packet's own scope
 * first, then the other one. On a hit key->scope is the scope that matched and
 * key->slot is 0, ready for lb_select_slot. */
static __always_inline struct bpx_svc_value *lb_lookup_service(struct bpx_svc_key *key, __u8 scope)
{
	struct bpx_svc_value *svc;

	key->slot = 0;
	key->pad = 0;
	key->scope = scope;
	svc = bpf_map_lookup_elem(&bpx_svc_v2, key);
	if (likely(!svc)) {
		key->scope = svc_scope_other(scope);
		svc = bpf_map_lookup_elem(&bpx_svc_v2, key);
	}
	return svc;
}

static __always_inline struct bpx_backend *lb_lookup_backend(__u32 backend_id)
{
	return bpf_map_lookup_elem(&bpx_backend_v2, &backend_id);
}

static __always_inline struct bpx_rev_nat *lb_lookup_rev_nat(__u32 rev_nat_id)
{
	return bpf_map_lookup_elem(&bpx_revnat_v2, &rev_nat_id);
}

/* A uniformly random backend slot of a service with backends; the slot entry, or NULL
 * when the daemon has not written it. `key` is the master key lb_lookup_service matched. */
static __always_inline struct bpx_svc_value *lb_select_slot(struct bpx_svc_key *key, const struct bpx_svc_value *svc)
{
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	return bpf_map_lookup_elem(&bpx_svc_v2, key);
}

#endif
