/* Connection tracking of IPv6 flows: its own map, keyed by the IPv6 tuple. An entry carries the
 * state of an IPv4 entry (conntrack.h) with the same layout up to next_seq, so the state rules
 * there (lifetimes, touch, sequence numbers, RSTs) apply to both families unchanged, through
 * ct6_state(); then one 16-byte address: the forward entry's is the backend's (DNAT), the reply
 * entry's the frontend's (what the reply's source becomes), so a reply needs no other lookup. */
#ifndef BPX_CONNTRACK6_H
#define BPX_CONNTRACK6_H
#include <stdbool.h>
#include "common.h"
#include "conntrack.h"
#include "ipv6.h"

#define BPX_CT6_MAX_ENTRIES 65536 /* default (LRU, preallocated) */

struct bpx_ct6_key {
	union bpx_v6addr saddr; /* source of the packet, network byte order */
	union bpx_v6addr daddr; /* destination of the packet, network byte order */
	__be16 sport;           /* network byte order */
	__be16 dport;           /* network byte order */
	__u8 proto;             /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 dir;               /* BPX_CT_DIR_* */
	__u16 pad;              /* zero */
};

struct bpx_ct6_entry {
	__u64 last_seen_ns;    /* as bpx_ct_entry's, up to next_seq */
	__u32 backend_id;      /* the flow's backend (bpx_backend6_v1 key) */
	__u32 rev_nat_id;      /* the flow's frontend id */
	__u8 flags;            /* BPX_CT_F_* */
	__u8 xflags;           /* BPX_CT_X_* (none used yet) */
	__u16 src_ifindex;     /* forward: the pod interface the creating packet's source was checked on */
	__u32 next_seq;        /* TCP: next sequence number of this direction's sender, host order */
	union bpx_v6addr addr; /* forward: the backend's address; reply: the frontend's */
	__be16 port;           /* forward: the backend's port; reply: the frontend's. Network byte order */
	__u16 pad;             /* zero */
	__u32 pad2;            /* zero */
};

/* The state rules of conntrack.h read and write only the members before backend_addr, which both
 * layouts share (checked here); the IPv6 programs are built without strict aliasing (bpf/Makefile). */
#define BPX_CT6_SAME(m) (__builtin_offsetof(struct bpx_ct6_entry, m) == __builtin_offsetof(struct bpx_ct_entry, m))
_Static_assert(BPX_CT6_SAME(last_seen_ns) && BPX_CT6_SAME(backend_id) && BPX_CT6_SAME(rev_nat_id) &&
                       BPX_CT6_SAME(flags) && BPX_CT6_SAME(xflags) && BPX_CT6_SAME(src_ifindex) &&
                       BPX_CT6_SAME(next_seq) &&
                       __builtin_offsetof(struct bpx_ct6_entry, addr) >=
                               __builtin_offsetof(struct bpx_ct_entry, backend_addr),
               "bpx_ct6_entry must start as bpx_ct_entry");

static __always_inline struct bpx_ct_entry *ct6_state(struct bpx_ct6_entry *e)
{
	return (struct bpx_ct_entry *)e;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_ct6_key);
	__type(value, struct bpx_ct6_entry);
	__uint(max_entries, BPX_CT6_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_ct6_v1 BPX_MAPS;

static __always_inline void ct6_key_init(struct bpx_ct6_key *key, const union bpx_v6addr *saddr,
                                         const union bpx_v6addr *daddr, __be16 sport, __be16 dport, __u8 proto,
                                         __u8 dir)
{
	key->saddr = *saddr;
	key->daddr = *daddr;
	key->sport = sport;
	key->dport = dport;
	key->proto = proto;
	key->dir = dir;
	key->pad = 0;
}

static __always_inline struct bpx_ct6_entry *ct6_lookup(const struct bpx_ct6_key *key)
{
	return bpf_map_lookup_elem(&bpx_ct6_v1, key);
}

/* Tracks a new flow (conntrack.h ct_create): the reply entry (backend -> client, naming the
 * frontend) and the forward entry (client -> frontend, naming the backend). */
static __always_inline int ct6_create(const struct bpx_ct6_key *forward, const union bpx_v6addr *backend_addr,
                                      __be16 backend_port, __u32 backend_id, __u32 rev_nat_id, __u8 flags,
                                      __u16 src_ifindex, const struct bpx_tcp_seg *seg, __u64 now)
{
	struct bpx_ct6_entry entry = {
	        .last_seen_ns = now,
	        .backend_id = backend_id,
	        .rev_nat_id = rev_nat_id,
	        .flags = flags & BPX_CT_F_STATE,
	        .addr = forward->daddr,
	        .port = forward->dport,
	};
	struct bpx_ct6_key reply;

	ct6_key_init(&reply, backend_addr, &forward->saddr, backend_port, forward->sport, forward->proto,
	             BPX_CT_DIR_REPLY);
	if (bpf_map_update_elem(&bpx_ct6_v1, &reply, &entry, BPF_ANY) < 0)
		return -1;
	ct_entry_advance(ct6_state(&entry), seg);
	entry.src_ifindex = src_ifindex;
	entry.addr = *backend_addr;
	entry.port = backend_port;
	return bpf_map_update_elem(&bpx_ct6_v1, forward, &entry, BPF_ANY);
}

#endif
