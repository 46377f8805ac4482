/* North-south NAT: flows whose reply cannot be reverse-translated from bpfproxy's
 * conntrack alone — masqueraded flows (the source becomes a node address and an allocated
 * port, so the reply comes back to this node) and flows to a NodePort wildcard entry (the
 * address the client used is only in the packet). Two entries per flow, like conntrack:
 *   forward  (client -> frontend, as sent)  : source to write after DNAT, the frontend;
 *   reply    (backend -> source written)    : the client to restore, the frontend.
 * A masqueraded flow's reply key is inserted with BPF_NOEXIST, so two flows can never be
 * given the same (node address, port) toward the same backend: no collision. NAT entries
 * live and die with their flow's conntrack entries (nat_owner_state, ct-gc.ts). */
#ifndef BPX_SNAT_H
#define BPX_SNAT_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"
#include "conntrack.h"

#define BPX_SNAT_MAX_ENTRIES 262144
#define BPX_SNAT_TRIES 32     /* random free ports tried (BPF_NOEXIST) */
#define BPX_SNAT_TAKE_TRIES 4 /* then random held ports looked at for a gone or unestablished flow */

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
	__be32 masq_addr;      /* source of masqueraded flows (node address), network order; 0 = none */
	__u16 port_min;        /* first SNAT source port, host order */
	__u16 port_max;        /* last SNAT source port, host order (inclusive) */
	__u32 flags;           /* BPX_NAT_CFG_F_*, host order */
	__u32 translated_mark; /* skb mark bit(s) tc ingress sets on a packet it translated completely, which tc
	                        * egress clears and passes (datapath.h mark_translated); 0 = off (the padding of
	                        * earlier versions), host order */
};

/* Deliver translated packets with bpf_fib_lookup + redirect instead of the host stack. */
#define BPX_NAT_CFG_F_FIB_REDIRECT (1U << 0)
/* Never read by BPF: the daemon reserved [port_min, port_max] in ip_local_reserved_ports, so
 * `bpfproxy cleanup` releases it. */
#define BPX_NAT_CFG_F_PORTS_RESERVED (1U << 1)

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

/* Never read by BPF: the NodePort range the daemon added to ip_local_reserved_ports (a host connection
 * whose ephemeral port is a NodePort would have its replies taken for NodePort traffic), kept here so that
 * `bpfproxy cleanup` releases it. The SNAT range's reservation is BPX_NAT_CFG_F_PORTS_RESERVED. */
struct bpx_reserved_ports {
	__u16 nodeport_min; /* host order; 0 = nothing reserved */
	__u16 nodeport_max; /* host order (inclusive) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_reserved_ports);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_reserved_v1 BPX_MAPS;

/* ---- functions (the layout above is the ABI) ---- */

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

/* The conntrack forward key of the flow that owns NAT entry `ne` (both directions name it). */
static __always_inline void nat_owner_key(struct bpx_ct_key *ckey, const struct bpx_nat_entry *ne, __u8 proto)
{
	ct_key_init(ckey, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, proto, BPX_CT_DIR_FORWARD);
}

#define BPX_NAT_OWNER_GONE 0          /* no conntrack entry of this flow (collected): the port may be reclaimed */
#define BPX_NAT_OWNER_UNESTABLISHED 1 /* SYN_SENT / SYN_RECV, or UDP never answered: may be evicted */
#define BPX_NAT_OWNER_LIVE 2          /* established (or closing): never taken */

/* NAT entries have no lifetime of their own: they live exactly as long as their flow's
 * conntrack forward entry (ct_lifetime, one rule and one config), and the daemon's collector
 * deletes them with it (src/dataplane/ct-gc.ts). */
static __always_inline int nat_owner_state(const struct bpx_nat_entry *ne, __u8 proto, __u64 now,
                                           struct bpx_ct_key *ckey)
{
	struct bpx_ct_entry *ct;

	nat_owner_key(ckey, ne, proto);
	ct = ct_lookup(ckey);
	/* An expired entry still counts by its state until the collector deletes it: cheaper to
	 * verify, and only ever later, never wrong. */
	if (!ct || ct->backend_id != ne->backend_id)
		return BPX_NAT_OWNER_GONE;
	if (ct->flags & (BPX_CT_F_STATE & ~BPX_CT_F_REPLIED))
		return BPX_NAT_OWNER_LIVE;
	return BPX_NAT_OWNER_UNESTABLISHED;
}

/* Takes the masquerade reply key `reply` for a new flow if the flow holding it is gone
 * (conntrack expired or deleted: reclaimed) or unestablished (SYN only, UDP never answered:
 * evicted, *evicted set); an established flow's port is never taken. The lock is the deletion
 * of the old flow's forward NAT entry, which must still name this port: a delete succeeds once,
 * so of two CPUs taking the same port only one wins (the other tries another port). Then the
 * old flow's conntrack entries go (it starts over with its next packet) and the reply entry
 * becomes the new flow's. 0 when taken. A subprogram, not inlined: its many exits would
 * otherwise be verified once for each state of the caller (3x the instructions of each
 * ingress program with BPX_SNAT_TAKE_TRIES inlined copies). */
static __noinline int nat_take_port(const struct bpx_nat_key *reply, const struct bpx_nat_entry *entry, __u64 now,
                                    bool *evicted)
{
	struct bpx_nat_entry *have = nat_lookup(reply), *fwd;
	struct bpx_ct_key ckey, rkey;
	struct bpx_nat_key fkey;
	struct bpx_ct_entry *ct;
	__u32 backend_id;
	int state;

	if (!have)
		return bpf_map_update_elem(&bpx_snat_v1, reply, entry, BPF_NOEXIST);
	backend_id = have->backend_id;
	state = nat_owner_state(have, reply->proto, now, &ckey);
	if (state == BPX_NAT_OWNER_LIVE)
		return -1;
	nat_key_init(&fkey, have->addr, have->frontend_addr, have->port, have->frontend_port, reply->proto,
	             BPX_NAT_DIR_FORWARD);
	fwd = nat_lookup(&fkey);
	/* A forward entry naming another port belongs to a newer flow of that client: leave it (the
	 * stale reply entry is the collector's). */
	if (!fwd || fwd->port != reply->dport || fwd->addr != reply->daddr || fwd->backend_id != backend_id)
		return -1;
	if (bpf_map_delete_elem(&bpx_snat_v1, &fkey) < 0)
		return -1;
	/* Only entries of that flow (same backend): the tuple may already carry a newer flow. */
	ct_key_reply_of(&rkey, &ckey, reply->saddr, reply->sport);
	ct = ct_lookup(&ckey);
	if (ct && ct->backend_id == backend_id)
		bpf_map_delete_elem(&bpx_ct_v3, &ckey);
	ct = ct_lookup(&rkey);
	if (ct && ct->backend_id == backend_id)
		bpf_map_delete_elem(&bpx_ct_v3, &rkey);
	/* And its stack key (backend -> client, nat_create), which goes with the flow. */
	nat_key_init(&fkey, reply->saddr, have->addr, reply->sport, have->port, reply->proto, BPX_NAT_DIR_REPLY);
	fwd = nat_lookup(&fkey);
	if (fwd && fwd->backend_id == backend_id && (fwd->flags & BPX_NAT_E_MASQUERADED) && fwd->addr == have->addr &&
	    fwd->port == have->port)
		bpf_map_delete_elem(&bpx_snat_v1, &fkey);
	*evicted = state == BPX_NAT_OWNER_UNESTABLISHED;
	return bpf_map_update_elem(&bpx_snat_v1, reply, entry, BPF_ANY);
}

/* Claims the reply key `reply` (whose daddr is the masquerade address and dport a candidate)
 * for a new flow. A free port is claimed atomically: BPF_NOEXIST insert, another random port on
 * EEXIST (BPX_SNAT_TRIES). When every try was held, up to BPX_SNAT_TAKE_TRIES consecutive ports
 * from a random one are looked at, and the first whose flow is gone or unestablished is taken (nat_take_port):
 * established flows are never evicted. Returns 0 with reply->dport set (*evicted: an
 * unestablished flow lost its port), -1 when nothing could be claimed. */
static __always_inline int nat_alloc_port(struct bpx_nat_key *reply, const struct bpx_nat_entry *entry,
                                          const struct bpx_nat_config *cfg, __u64 now, bool *evicted)
{
	__u32 min = cfg->port_min, range = (__u32)cfg->port_max - min + 1, start;
	/* ~0 for SCTP (bit 7 of the protocol: parse.h), 0 for TCP and UDP. */
	__u32 sctp = -((__u32)reply->proto >> 7);
	int i;

	*evicted = false;
	if (cfg->port_max < cfg->port_min || !cfg->port_min)
		return -1;
	/* SCTP keeps the client's port, a range of one, without a branch: a new port would need the
	 * CRC32c of the whole packet recomputed. Held by a live flow of another client to the same
	 * backend: refused (as when every port is held). */
	min += ((__u32)bpf_ntohs(entry->port) - min) & sctp;
	range -= (range - 1) & sctp;
	for (i = 0; i < BPX_SNAT_TRIES; i++) {
		reply->dport = bpf_htons((__u16)(min + bpf_get_prandom_u32() % range));
		if (bpf_map_update_elem(&bpx_snat_v1, reply, entry, BPF_NOEXIST) == 0)
			return 0;
	}
	/* Consecutive ports from a random start (as netfilter's search does): a small range is
	 * covered whole, and no candidate is looked at twice. */
	start = bpf_get_prandom_u32() % range;
	for (i = 0; i < BPX_SNAT_TAKE_TRIES; i++) {
		reply->dport = bpf_htons((__u16)(min + (start + i) % range));
		if (nat_take_port(reply, entry, now, evicted) == 0)
			return 0;
	}
	return -1;
}

/* A masqueraded flow's two NAT entries name each other: the forward entry's source (addr, port)
 * is the reply entry's key, and the reply entry's client is the forward entry's key. A packet
 * uses a NAT entry only when its partner agrees (the owner check), so a port taken by another
 * flow never carries this flow's packets, nor its replies to this client. */
static __always_inline bool nat_reply_owned(const struct bpx_nat_entry *fwd, __be32 client, __be16 client_port,
                                            __u32 backend_id)
{
	return fwd && fwd->addr == client && fwd->port == client_port && fwd->backend_id == backend_id;
}

/* The owner check of NAT reply entry `ne`, found by `key` (a packet backend -> key->daddr): 1 when
 * the entry may translate it. A masqueraded flow's entries name each other (nat_reply_owned): at the
 * masquerade address, the client's forward entry must still name this port. Its third entry, the
 * stack key (backend -> the client itself, datapath.h nat_create: tc egress on the stack path
 * masquerades and restores the frontend by it), is the flow's while the forward entry is
 * masqueraded to this backend and the reply entry of the port it names still names this client.
 * A subprogram, not inlined, like nat_take_port: inlined, its two ways forked every reply path the
 * verifier walks after it (6.18: bpx_from_pod 150k -> 177k). */
static __noinline int nat_reply_entry_owned(const struct bpx_nat_key *key, const struct bpx_nat_entry *ne)
{
	struct bpx_nat_entry *fwd;
	struct bpx_nat_key k;

	if (!(ne->flags & BPX_NAT_E_MASQUERADED))
		return 1;
	nat_key_init(&k, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, key->proto, BPX_NAT_DIR_FORWARD);
	fwd = nat_lookup(&k);
	if (key->daddr != ne->addr || key->dport != ne->port)
		return nat_reply_owned(fwd, key->daddr, key->dport, ne->backend_id);
	if (!fwd || fwd->backend_id != ne->backend_id || !(fwd->flags & BPX_NAT_E_MASQUERADED))
		return 0;
	nat_key_init(&k, key->saddr, fwd->addr, key->sport, fwd->port, key->proto, BPX_NAT_DIR_REPLY);
	return nat_reply_owned(nat_lookup(&k), ne->addr, ne->port, ne->backend_id);
}

#endif
