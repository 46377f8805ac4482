/* bpfproxy's own connection tracking: remembers the backend chosen for a flow so every
 * packet of it (UDP too) goes to the same backend, and how to reverse-translate replies. */
#ifndef BPX_CONNTRACK_H
#define BPX_CONNTRACK_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"

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
	__u64 last_seen_ns;  /* bpf_ktime_get_ns() of the last packet; host order */
	__u32 backend_id;    /* forward: backend chosen for the flow; reply: same backend */
	__u32 rev_nat_id;    /* frontend of the flow (bpx_revnat_v2 key) */
	__u8 flags;          /* BPX_CT_F_*; both entries of a flow carry the same state bits */
	__u8 xflags;         /* BPX_CT_X_*: facts fixed when the flow was created (zero in entries of
	                     * older versions, which then take the slow path) */
	__u16 src_ifindex;   /* forward: the pod interface whose packet created the flow passed the pod
	                     * source check on (datapath.h pod_source_valid), when its ifindex fits;
	                     * zero (reply entries, older versions, other hooks): every packet is checked */
	__u32 next_seq;      /* TCP: next sequence number of this direction's sender (valid with
	                     * BPX_CT_F_SEQ_KNOWN), host order; UDP: zero */
	__be32 backend_addr; /* the backend's address and port, copied at creation so a tracked packet
	                      * needs no backend lookup; 0: the backend is gone (the daemon zeroes the
	                      * forward entries of a removed backend, src/dataplane/bpf/ct-gc.ts), the
	                      * next packet is handled as today's stale entry. Network byte order */
	__be16 backend_port; /* network byte order */
	__u16 pad;           /* zero */
};

/* State bits. The TCP state they spell (docs/conntrack.md):
 *   none of them            SYN_SENT     tcp_syn_sent
 *   REPLIED                 SYN_RECV: answered, the client has not acknowledged yet; tcp_syn_sent
 *   SEEN_REPLY              ESTABLISHED  tcp_established  (conntrack.tcpEstablishedTimeout)
 *   one of FIN_*            FIN_WAIT / CLOSE_WAIT: half closed, tcp_close_wait (conntrack.tcpCloseWaitTimeout)
 *   FIN_FORWARD|FIN_REPLY   TIME_WAIT    tcp_time_wait
 *   CLOSING                 CLOSE (an in-window RST), tcp_close
 * A TCP reply sets REPLIED; the client's ACK after it (no SYN, no RST) sets SEEN_REPLY, so a SYN flood whose
 * sources never answer the SYN-ACK stays at tcp_syn_sent. SEEN_REPLY keeps its meaning of earlier versions
 * (established), so their pinned entries need no migration.
 * UDP: SEEN_REPLY (set by a reply) picks udp_stream (conntrack.udpStreamTimeout) over udp (conntrack.udpTimeout). */
#define BPX_CT_F_SEEN_REPLY (1U << 0)  /* TCP: established; UDP: a reply went through */
#define BPX_CT_F_CLOSING (1U << 1)     /* an accepted RST (pins of older versions: FIN or RST) */
#define BPX_CT_F_FIN_FORWARD (1U << 2) /* the client sent FIN */
#define BPX_CT_F_FIN_REPLY (1U << 3)   /* the backend sent FIN */
#define BPX_CT_F_SEQ_KNOWN (1U << 4)   /* next_seq is valid (per entry, never copied to the other) */
#define BPX_CT_F_REPLIED (1U << 5)     /* TCP: the backend answered (SYN-ACK); not yet established */
#define BPX_CT_F_STATE \
	(BPX_CT_F_SEEN_REPLY | BPX_CT_F_CLOSING | BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY | BPX_CT_F_REPLIED)

/* xflags. NO_NAT: the flow has no NAT entries (neither masqueraded nor to a NodePort
 * wildcard), so its packets skip the NAT table. Without it they look there as before. */
#define BPX_CT_X_NO_NAT (1U << 0)
/* MARK: the flow's client packets, translated at tc ingress, may carry the translated mark bit
 * (datapath.h mark_translated): no NAT entries, and a backend that is not a node address (a locally
 * delivered packet would take the bit to a socket, and with tcp_fwmark_accept or fwmark_reflect to
 * its answers, which egress must translate). Entries of earlier versions lack it: never marked. */
#define BPX_CT_X_MARK (1U << 1)
/* COUNTED: forward entries only, set right after ct_create (leastconn.h lc_flow_opened). The flow is one
 * of its backend's active flows; cleared when it is taken off, so it is taken off once. */
#define BPX_CT_X_COUNTED (1U << 2)
/* DSR: a direct-server-return flow (dsr.h). On the node that chose the backend, its forward entry (the only
 * one: replies go straight to the client) sends its packets to bpx_dsr_lb; on the backend's node, both entries
 * say where the flow came from (the frontend of another node). */
#define BPX_CT_X_DSR (1U << 3)

/* Lifetimes, written by the daemon at start from kube-proxy's `conntrack` settings (one
 * array slot). A zero field means the default below, so a map the daemon has not written
 * yet behaves like kube-proxy's defaults. The daemon's garbage collector applies exactly
 * these lifetimes with the same rule (src/dataplane/ct-gc.ts). */
struct bpx_ct_config {
	__u64 tcp_syn_sent_ns;    /* no reply yet */
	__u64 tcp_established_ns; /* conntrack.tcpEstablishedTimeout */
	__u64 tcp_close_wait_ns;  /* one FIN: conntrack.tcpCloseWaitTimeout */
	__u64 tcp_time_wait_ns;   /* FIN from both sides */
	__u64 tcp_close_ns;       /* after an accepted RST */
	__u64 udp_ns;             /* conntrack.udpTimeout: no reply yet */
	__u64 udp_stream_ns;      /* conntrack.udpStreamTimeout: replies seen */
	__u32 flags;              /* BPX_CT_CFG_F_*, host order */
	__u32 pad;                /* zero */
};

#define BPX_CT_CFG_F_BE_LIBERAL (1U << 0) /* conntrack.tcpBeLiberal: accept every RST (no window check) */

#define BPX_CT_DEFAULT_TCP_SYN_SENT_NS (60ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_TCP_ESTABLISHED_NS (86400ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_TCP_CLOSE_WAIT_NS (3600ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_TCP_TIME_WAIT_NS (120ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_TCP_CLOSE_NS (10ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_UDP_NS (30ULL * 1000000000ULL)
#define BPX_CT_DEFAULT_UDP_STREAM_NS (120ULL * 1000000000ULL)

/* An RST is accepted when its sequence number lies within this distance of the sender's
 * next sequence number (either side): the sender's own RST carries exactly that number. */
#define BPX_CT_RST_WINDOW (1U << 20)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_ct_key);
	__type(value, struct bpx_ct_entry);
	__uint(max_entries, BPX_CT_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_ct_v3 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_ct_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_ct_config_v1 BPX_MAPS;

/* ---- Lookups and updates (functions only; the layout above is the ABI) ---- */

/* A reply refreshes its forward entry at most this often (keeps replies to cheap reads). */
#define BPX_CT_REFRESH_INTERVAL_NS (1ULL * 1000000000ULL)

/* What conntrack needs of a TCP segment, host order. */
struct bpx_tcp_seg {
	__u32 seq;  /* SEG.SEQ */
	__u32 end;  /* SEG.SEQ + SEG.LEN (payload, SYN and FIN count) */
	__u32 ack;  /* SEG.ACK (valid with BPX_TCP_ACK in flags) */
	__u8 flags; /* BPX_TCP_* */
	__u8 valid; /* 0: not TCP, or the header could not be read */
	__u16 pad;
};

static __always_inline void ct_seg_fill(struct bpx_tcp_seg *seg, __u32 seq, __u32 ack, __u8 flags, __s32 payload)
{
	seg->seq = seq;
	seg->ack = ack;
	seg->flags = flags;
	seg->end = seq + (payload > 0 ? (__u32)payload : 0) + ((flags & BPX_TCP_SYN) ? 1 : 0) +
	           ((flags & BPX_TCP_FIN) ? 1 : 0);
	seg->valid = 1;
}

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
	return bpf_map_lookup_elem(&bpx_ct_v3, key);
}

static __always_inline struct bpx_ct_config *ct_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bpx_ct_config_v1, &zero);
}

static __always_inline bool ct_entry_is_closing(const struct bpx_ct_entry *entry)
{
	return entry->flags & BPX_CT_F_CLOSING;
}

/* The flow was established or is closing: a new SYN on its tuple is a new connection. A SYN
 * retransmitted after the SYN-ACK (REPLIED alone) keeps its backend. */
static __always_inline bool ct_entry_has_concluded(const struct bpx_ct_entry *entry)
{
	return entry->flags & (BPX_CT_F_STATE & ~BPX_CT_F_REPLIED);
}

static __always_inline __u64 ct_pick(__u64 configured, __u64 fallback)
{
	return configured ? configured : fallback;
}

/* How long an idle flow with state bits `flags` keeps its backend — and its NAT entries, which
 * live exactly as long as their flow's conntrack entry (snat.h): the one lifetime rule. */
static __always_inline __u64 ct_lifetime(__u8 flags, __u8 proto)
{
	struct bpx_ct_config *c = ct_config();
	__u8 fins = flags & (BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY);

	if (proto != IPPROTO_TCP) {
		if (flags & BPX_CT_F_SEEN_REPLY)
			return ct_pick(c ? c->udp_stream_ns : 0, BPX_CT_DEFAULT_UDP_STREAM_NS);
		return ct_pick(c ? c->udp_ns : 0, BPX_CT_DEFAULT_UDP_NS);
	}
	if (flags & BPX_CT_F_CLOSING)
		return ct_pick(c ? c->tcp_close_ns : 0, BPX_CT_DEFAULT_TCP_CLOSE_NS);
	if (fins == (BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY))
		return ct_pick(c ? c->tcp_time_wait_ns : 0, BPX_CT_DEFAULT_TCP_TIME_WAIT_NS);
	if (fins)
		return ct_pick(c ? c->tcp_close_wait_ns : 0, BPX_CT_DEFAULT_TCP_CLOSE_WAIT_NS);
	if (flags & BPX_CT_F_SEEN_REPLY)
		return ct_pick(c ? c->tcp_established_ns : 0, BPX_CT_DEFAULT_TCP_ESTABLISHED_NS);
	/* SYN_SENT and SYN_RECV: at most 60 s by default (netfilter: 120 s and 60 s). */
	return ct_pick(c ? c->tcp_syn_sent_ns : 0, BPX_CT_DEFAULT_TCP_SYN_SENT_NS);
}

static __always_inline __u64 ct_entry_lifetime(const struct bpx_ct_entry *entry, __u8 proto)
{
	return ct_lifetime(entry->flags, proto);
}

/* No lifetime is shorter: the daemon refuses conntrack timeouts between 0 and 1 s (netfilter's are whole
 * seconds) and every fixed one is longer. */
#define BPX_CT_MIN_LIFETIME_NS (1ULL * 1000000000ULL)

/* Signed: another CPU may have stamped the entry after this packet read the clock. An entry touched
 * within the shortest lifetime is alive without reading the lifetimes (the config) at all: a busy
 * flow's packets, which refresh it once per BPX_CT_REFRESH_INTERVAL_NS, mostly are. */
static __always_inline bool ct_entry_is_expired(const struct bpx_ct_entry *entry, __u8 proto, __u64 now)
{
	__s64 age = (__s64)(now - entry->last_seen_ns);

	if (age < (__s64)BPX_CT_MIN_LIFETIME_NS)
		return false;
	return age > (__s64)ct_entry_lifetime(entry, proto);
}

/* Another packet of the flow went through; `flags` are BPX_CT_F_* state bits learnt from it.
 * Written only when the flags change or once per BPX_CT_REFRESH_INTERVAL_NS; true when written,
 * and then the flow's other entry is due the same touch, so both age together. */
static __always_inline bool ct_entry_touch(struct bpx_ct_entry *entry, __u8 flags, __u64 now)
{
	flags &= BPX_CT_F_STATE;
	if ((entry->flags | flags) != entry->flags)
		entry->flags |= flags;
	else if ((__s64)(now - entry->last_seen_ns) < (__s64)BPX_CT_REFRESH_INTERVAL_NS)
		return false;
	entry->last_seen_ns = now;
	return true;
}

/* The sender of `seg` is the one whose direction `entry` tracks: remember how far it got.
 * An RST never moves the number (an ignored one must leave no trace). */
static __always_inline void ct_entry_advance(struct bpx_ct_entry *entry, const struct bpx_tcp_seg *seg)
{
	if (!seg->valid || (seg->flags & BPX_TCP_RST))
		return;
	if (!(entry->flags & BPX_CT_F_SEQ_KNOWN) || (__s32)(seg->end - entry->next_seq) > 0) {
		entry->next_seq = seg->end;
		entry->flags |= BPX_CT_F_SEQ_KNOWN;
	}
}

/* The RST rule: accepted when conntrack.tcpBeLiberal is set, when its sender has not sent
 * anything with a sequence number yet, or when its sequence number is within
 * BPX_CT_RST_WINDOW of the sender's next one. A blind RST guessing it has a 1 in 2048 chance. */
static __always_inline bool ct_rst_acceptable(const struct bpx_ct_entry *sender, const struct bpx_tcp_seg *seg)
{
	struct bpx_ct_config *c = ct_config();

	if (c && (c->flags & BPX_CT_CFG_F_BE_LIBERAL))
		return true;
	if (!(sender->flags & BPX_CT_F_SEQ_KNOWN))
		return true;
	return seg->seq - (sender->next_seq - BPX_CT_RST_WINDOW) <= 2 * BPX_CT_RST_WINDOW;
}

/* State bits a segment from direction `dir` teaches, given the entry of its sender
 * (NULL: unknown, then an RST is accepted). *ignored is set for an out-of-window RST. */
static __always_inline __u8 ct_seg_state(const struct bpx_ct_entry *sender, const struct bpx_tcp_seg *seg, __u8 dir,
                                         bool *ignored)
{
	*ignored = false;
	if (!seg->valid)
		return 0;
	if (seg->flags & BPX_TCP_RST) {
		if (!sender || ct_rst_acceptable(sender, seg))
			return BPX_CT_F_CLOSING;
		*ignored = true;
		return 0;
	}
	if (seg->flags & BPX_TCP_FIN)
		return dir == BPX_CT_DIR_FORWARD ? BPX_CT_F_FIN_FORWARD : BPX_CT_F_FIN_REPLY;
	return 0;
}

/* The client's segment that establishes a flow: an ACK (no SYN, no RST) after the backend
 * answered (REPLIED). When the backend's sequence number is known (`reply` has it), the ACK
 * must acknowledge it exactly, so a blind ACK after a spoofed SYN does not promote the flow. */
static __always_inline __u8 ct_seg_establishes(const struct bpx_ct_entry *forward, const struct bpx_ct_entry *reply,
                                               const struct bpx_tcp_seg *seg)
{
	if (!seg->valid || (seg->flags & (BPX_TCP_ACK | BPX_TCP_SYN | BPX_TCP_RST)) != BPX_TCP_ACK)
		return 0;
	if ((forward->flags & (BPX_CT_F_REPLIED | BPX_CT_F_SEEN_REPLY)) != BPX_CT_F_REPLIED)
		return 0;
	if (reply && (reply->flags & BPX_CT_F_SEQ_KNOWN) && seg->ack != reply->next_seq)
		return 0;
	return BPX_CT_F_SEEN_REPLY;
}

/* The state bit a reply teaches: TCP answered (REPLIED, established only by the client's ACK),
 * UDP a stream (SEEN_REPLY). */
static __always_inline __u8 ct_reply_state(__u8 proto)
{
	return proto == IPPROTO_TCP ? BPX_CT_F_REPLIED : BPX_CT_F_SEEN_REPLY;
}

/* The reply-direction key of a flow: as the backend sends it, before reverse NAT. */
static __always_inline void ct_key_reply_of(struct bpx_ct_key *reply, const struct bpx_ct_key *forward,
                                            __be32 backend_addr, __be16 backend_port)
{
	ct_key_init(reply, backend_addr, forward->saddr, backend_port, forward->sport, forward->proto,
	            BPX_CT_DIR_REPLY);
}

/* Tracks a new flow: the forward entry (as the client sent it) and the reply entry (as
 * the backend answers), both naming the backend and the frontend. Replaces older ones.
 * `seg` (the client's first segment) seeds the forward entry's sequence number; `xflags`
 * (BPX_CT_X_*) says what the flow's later packets may skip, `src_ifindex` where its source was
 * checked (0: nowhere). */
static __always_inline int ct_create(const struct bpx_ct_key *forward, __be32 backend_addr, __be16 backend_port,
                                     __u32 backend_id, __u32 rev_nat_id, __u8 flags, __u8 xflags, __u16 src_ifindex,
                                     const struct bpx_tcp_seg *seg, __u64 now)
{
	struct bpx_ct_entry entry = {
	        .last_seen_ns = now,
	        .backend_id = backend_id,
	        .rev_nat_id = rev_nat_id,
	        .flags = flags & BPX_CT_F_STATE,
	        .xflags = xflags,
	        .backend_addr = backend_addr,
	        .backend_port = backend_port,
	};
	struct bpx_ct_key reply;

	ct_key_reply_of(&reply, forward, backend_addr, backend_port);
	if (bpf_map_update_elem(&bpx_ct_v3, &reply, &entry, BPF_ANY) < 0)
		return -1;
	ct_entry_advance(&entry, seg);
	entry.src_ifindex = src_ifindex;
	return bpf_map_update_elem(&bpx_ct_v3, forward, &entry, BPF_ANY);
}

#endif
