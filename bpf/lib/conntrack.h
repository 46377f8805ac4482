/* bpfproxy's own connection tracking: remembers the backend chosen for a flow so every
 * packet of it (UDP too) goes to the same backend, and how to reverse-translate replies. */
#ifndef BPX_CONNTRACK_H
#define BPX_CONNTRACK_H
#include "common.h"

#define BPX_CT_MAX_ENTRIES 262144

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
	__u16 rev_nat_id;   /* frontend of the flow (bpx_revnat_v1 key) */
	__u8 flags;         /* BPX_CT_F_* */
	__u8 pad;           /* zero */
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
} bpx_ct_v1 SEC(".maps");

#endif
