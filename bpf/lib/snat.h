/* North-south NAT: flows whose reply cannot be reverse-translated from bpfproxy's
 * conntrack alone — masqueraded flows (the source becomes a node address and an allocated
 * port, so the reply comes back to this node) and flows to a NodePort wildcard entry (the
 * address the client used is only in the packet). Two entries per flow, like conntrack:
 *   forward  (client -> frontend, as sent)  : source to write after DNAT, the frontend;
 *   reply    (backend -> source written)    : the client to restore, the frontend.
 * A masqueraded flow's reply key is inserted with BPF_NOEXIST, so two flows can never be
 * given the same (node address, port) toward the same backend: no collision. */
#ifndef BPX_SNAT_H
#define BPX_SNAT_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"

#define BPX_SNAT_MAX_ENTRIES 262144
#define BPX_SNAT_TRIES 32 /* random ports tried before a new flow is dropped as exhausted */

#define BPX_NAT_DIR_FORWARD 0
#define BPX_NAT_DIR_REPLY 1

struct bpx_nat_key {
	__be32 saddr; /* packet source IPv4, network byte order */
	__be32 daddr; /* packet destination IPv4, network byte order */
	__be16 sport; /* network byte order */
	__be16 dport; /* network byte order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 dir;     /* BPX_NAT_DIR_* */
	__u16 pad;    /* zero */
};

struct bpx_nat_entry {
	__u64 last_seen_ns;   /* bpf_ktime_get_ns() of the last packet; host order */
	__be32 addr;          /* forward: source written after DNAT; reply: client address restored */
	__be32 frontend_addr; /* address the client connected to (source of replies), network order */
	__be16 port;          /* forward: source port written; reply: client port restored */
	__be16 frontend_port; /* port the client connected to, network order */
	__u32 backend_id;     /* backend of the flow, host order */
	__u8 flags;           /* BPX_NAT_E_* */
	__u8 pad1;            /* zero */
	__u16 pad2;           /* zero */
	__u32 pad3;           /* zero */
};

#define BPX_NAT_E_MASQUERADED (1U << 0) /* the source was rewritten to a node address */
#define BPX_NAT_E_SEEN_REPLY (1U << 1)  /* a reply went through */
#define BPX_NAT_E_CLOSING (1U << 2)     /* FIN or RST seen */

/* Per-node NAT settings, written by the daemon at start (one array slot). */
struct bpx_nat_config {
	__be32 masq_addr; /* source of masqueraded flows (node address), network order; 0 = none */
	__u16 port_min;   /* first SNAT source port, host order */
	__u16 port_max;   /* last SNAT source port, host order (inclusive) */
	__u32 flags;      /* BPX_NAT_CFG_F_*, host order */
	__u32 pad;        /* zero */
};

/* Deliver translated packets with bpf_fib_lookup + redirect instead of the host stack. */
#define BPX_NAT_CFG_F_FIB_REDIRECT (1U << 0)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_nat_key);
	__type(value, struct bpx_nat_entry);
	__uint(max_entries, BPX_SNAT_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_snat_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_nat_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_nat_config_v1 BPX_MAPS;

/* ---- functions (the layout above is the ABI) ---- */

#define BPX_NAT_LIFETIME_TCP_SYN_NS (60ULL * 1000000000ULL)
#define BPX_NAT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define BPX_NAT_LIFETIME_TCP_CLOSING_NS (10ULL * 1000000000ULL)
#define BPX_NAT_LIFETIME_UDP_NS (60ULL * 1000000000ULL)
#define BPX_NAT_REFRESH_INTERVAL_NS (1ULL * 1000000000ULL)

static __always_inline struct bpx_nat_config *nat_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bpx_nat_config_v1, &zero);
}

static __always_inline void nat_key_init(struct bpx_nat_key *key, __be32 saddr, __be32 daddr, __be16 sport,
                                         __be16 dport, __u8 proto, __u8 dir)
{
	key->saddr = saddr;
	key->daddr = daddr;
	key->sport = sport;
	key->dport = dport;
	key->proto = proto;
	key->dir = dir;
	key->pad = 0;
}

static __always_inline struct bpx_nat_entry *nat_lookup(const struct bpx_nat_key *key)
{
	return bpf_map_lookup_elem(&bpx_snat_v1, key);
}

static __always_inline bool nat_entry_is_expired(const struct bpx_nat_entry *e, __u8 proto, __u64 now)
{
	__u64 life;

	if (proto != IPPROTO_TCP)
		life = BPX_NAT_LIFETIME_UDP_NS;
	else if (e->flags & BPX_NAT_E_CLOSING)
		life = BPX_NAT_LIFETIME_TCP_CLOSING_NS;
	else if (e->flags & BPX_NAT_E_SEEN_REPLY)
		life = BPX_NAT_LIFETIME_TCP_NS;
	else
		life = BPX_NAT_LIFETIME_TCP_SYN_NS;
	return now - e->last_seen_ns > life;
}

/* Another packet went through; written only when flags change or once per interval. */
static __always_inline void nat_entry_touch(struct bpx_nat_entry *e, __u8 flags, __u64 now)
{
	if ((e->flags | flags) != e->flags)
		e->flags |= flags;
	else if (now - e->last_seen_ns < BPX_NAT_REFRESH_INTERVAL_NS)
		return;
	e->last_seen_ns = now;
}

/* Claims the reply key `reply` (whose daddr is the masquerade address and dport a candidate)
 * for a new flow: a free port, or one whose flow has expired. Returns 0 with reply->dport
 * set, -1 when every try collided with a live flow. */
static __always_inline int nat_alloc_port(struct bpx_nat_key *reply, const struct bpx_nat_entry *entry,
                                          const struct bpx_nat_config *cfg, __u64 now)
{
	__u32 range = (__u32)cfg->port_max - (__u32)cfg->port_min + 1;
	int i;

	if (cfg->port_max < cfg->port_min)
		return -1;
	for (i = 0; i < BPX_SNAT_TRIES; i++) {
		struct bpx_nat_entry *have;

		reply->dport = bpf_htons((__u16)(cfg->port_min + bpf_get_prandom_u32() % range));
		if (bpf_map_update_elem(&bpx_snat_v1, reply, entry, BPF_NOEXIST) == 0)
			return 0;
		have = nat_lookup(reply);
		if (have && nat_entry_is_expired(have, reply->proto, now)) {
			if (bpf_map_update_elem(&bpx_snat_v1, reply, entry, BPF_EXIST) == 0)
				return 0;
		}
	}
	return -1;
}

#endif
