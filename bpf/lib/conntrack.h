/* bpfproxy's own connection tracking: remembers the backend chosen for a flow so every
 * packet of it (UDP too) goes to the same backend, and how to reverse-translate replies. */
#ifndef BPX_CONNTRACK_H
#define BPX_CONNTRACK_H
#include <stdbool.h>
#include "common.h"

#define BPX_CT_MAX_ENTRIES 262144 /* default; the daemon sets the size before load */

#define BPX_CT_DIR_FORWARD 0 /* client -> frontend, as the client sent it (before DNAT) */
#define BPX_CT_DIR_REPLY 1   /* backend -> client, as the backend sent it (before reverse NAT) */

struct bpx_ct_key {
	__be32 saddr; /* source IPv4 of the packet, network byte order */
	__be32 daddr; /* destination IPv4 of the packet, network byte order */
	__be16 sport; /* source port, network byte order */
	__be16 dport; /* destination port, network byte order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 dir;     /* BPX_CT_DIR_* */
	__u16 pad;    /* zero */
};

struct bpx_ct_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet; host order */
	__u32 backend_id;   /* forward: backend chosen for the flow; reply: same backend */
	__u32 rev_nat_id;   /* frontend of the flow (bpx_revnat_v2 key) */
	__u8 flags;         /* BPX_CT_F_* */
	__u8 pad1;          /* zero */
	__u16 pad2;         /* zero */
	__u32 pad3;         /* zero (explicit: the struct is 8-aligned) */
};

#define BPX_CT_F_SEEN_REPLY (1U << 0) /* a reply went through: the flow is established */
#define BPX_CT_F_CLOSING (1U << 1)    /* FIN or RST seen */

/* Idle lifetimes before an entry no longer pins its backend. */
#define BPX_CT_LIFETIME_TCP_SYN_NS (60ULL * 1000000000ULL)
#define BPX_CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define BPX_CT_LIFETIME_TCP_CLOSING_NS (10ULL * 1000000000ULL)
#define BPX_CT_LIFETIME_UDP_NS (60ULL * 1000000000ULL)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_ct_key);
	__type(value, struct bpx_ct_entry);
	__uint(max_entries, BPX_CT_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_ct_v2 SEC(".maps");

/* ---- Lookups and updates (functions only; the layout above is the ABI) ---- */

/* A reply refreshes its forward entry at most this often (keeps replies to cheap reads). */
#define BPX_CT_REFRESH_INTERVAL_NS (1ULL * 1000000000ULL)

static __always_inline void ct_key_init(struct bpx_ct_key *key, __be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
                                        __u8 proto, __u8 dir)
{
	key->saddr = saddr;
	key->daddr = daddr;
	key->sport = sport;
	key->dport = dport;
	key->proto = proto;
	key->dir = dir;
	key->pad = 0;
}

static __always_inline struct bpx_ct_entry *ct_lookup(const struct bpx_ct_key *key)
{
	return bpf_map_lookup_elem(&bpx_ct_v2, key);
}

static __always_inline bool ct_entry_is_closing(const struct bpx_ct_entry *entry)
{
	return entry->flags & BPX_CT_F_CLOSING;
}

static __always_inline bool ct_entry_has_seen_reply(const struct bpx_ct_entry *entry)
{
	return entry->flags & BPX_CT_F_SEEN_REPLY;
}

/* The flow was answered or is closing: a new SYN on its tuple is a new connection. */
static __always_inline bool ct_entry_has_concluded(const struct bpx_ct_entry *entry)
{
	return entry->flags & (BPX_CT_F_SEEN_REPLY | BPX_CT_F_CLOSING);
}

/* How long an idle entry keeps pinning its backend. */
static __always_inline __u64 ct_entry_lifetime(const struct bpx_ct_entry *entry, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return BPX_CT_LIFETIME_UDP_NS;
	if (ct_entry_is_closing(entry))
		return BPX_CT_LIFETIME_TCP_CLOSING_NS;
	if (ct_entry_has_seen_reply(entry))
		return BPX_CT_LIFETIME_TCP_NS;
	return BPX_CT_LIFETIME_TCP_SYN_NS;
}

static __always_inline bool ct_entry_is_expired(const struct bpx_ct_entry *entry, __u8 proto, __u64 now)
{
	return now - entry->last_seen_ns > ct_entry_lifetime(entry, proto);
}

/* Another packet of the flow went through; `flags` are BPX_CT_F_* learnt from it. */
static __always_inline void ct_entry_touch(struct bpx_ct_entry *entry, __u8 flags, __u64 now)
{
	entry->last_seen_ns = now;
	if ((entry->flags | flags) != entry->flags)
		entry->flags |= flags;
}

/* The reply-direction key of a flow: as the backend sends it, before reverse NAT. */
static __always_inline void ct_key_reply_of(struct bpx_ct_key *reply, const struct bpx_ct_key *forward,
                                            __be32 backend_addr, __be16 backend_port)
{
	ct_key_init(reply, backend_addr, forward->saddr, backend_port, forward->sport, forward->proto,
	            BPX_CT_DIR_REPLY);
}

/* Tracks a new flow: the forward entry (as the client sent it) and the reply entry (as
 * the backend answers), both naming the backend and the frontend. Replaces older ones. */
static __always_inline int ct_create(const struct bpx_ct_key *forward, __be32 backend_addr, __be16 backend_port,
                                     __u32 backend_id, __u32 rev_nat_id, __u8 flags, __u64 now)
{
	struct bpx_ct_entry entry = {
	        .last_seen_ns = now,
	        .backend_id = backend_id,
	        .rev_nat_id = rev_nat_id,
	        .flags = flags,
	};
	struct bpx_ct_key reply;

	if (bpf_map_update_elem(&bpx_ct_v2, forward, &entry, BPF_ANY) < 0)
		return -1;
	ct_key_reply_of(&reply, forward, backend_addr, backend_port);
	return bpf_map_update_elem(&bpx_ct_v2, &reply, &entry, BPF_ANY);
}

#endif
