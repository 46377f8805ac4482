/* bpfproxy's service translation, written once for every hook (ctx.h): tc ingress of pod
 * interfaces and devices, tc egress (replies that crossed no hooked ingress) and XDP on
 * devices. The entry files in bpf/prog/ are thin: each picks its context and where packets
 * come from (a compile-time constant), and calls bpx_handle or bpx_handle_egress.
 *
 * Per IPv4 TCP/UDP packet, in order:
 *   1. reply of a tracked flow (CT reply entry) -> source rewritten to the frontend;
 *   2. tracked flow from a client (CT forward entry, alive, backend present) -> DNAT;
 *   3. new flow to a frontend -> backend chosen (affinity, else Maglev or random slot), tracked,
 *      DNAT; a frontend without backends is rejected (TCP RST / ICMP port unreachable).
 * Anything else passes untouched. An IPv4 fragment takes the same path with the ports of
 * its datagram's first fragment (frag.h); an ICMP error about a translated flow is
 * translated back (icmp.h).
 *
 * XDP runs the same steps and finishes what it can send itself (fib.h): each path decides
 * what the packet becomes, asks deliver_prepare, and only then writes state, counters and
 * the packet. A packet XDP cannot finish (no next hop, a reject to build, an ICMP error,
 * a fragment, IPv4 options) is passed to tc untouched with nothing written, and tc handles
 * it exactly as without XDP.
 *
 * Counting: every IPv4 TCP/UDP packet is counted under exactly one outcome reason
 * (TRANSLATED_*, REVERSE_TRANSLATED, NOT_SERVICE, REJECT_NO_BACKEND, FRAGMENT_NO_ENTRY,
 * DROP_*), and so is every ICMP error quoting TCP/UDP (ICMP_TRANSLATED, ICMP_NOT_TRACKED);
 * AFFINITY_HIT and BACKEND_RESELECT are events counted in addition. Other traffic is
 * not counted, so it costs one parse only. XDP counts what it finishes (delivers or drops);
 * what it passes is counted by tc. */
#ifndef BPX_DATAPATH_H
#define BPX_DATAPATH_H
#include "common.h"
#include "ctx.h"
#include "config.h"
#include "counters.h"
#include "lb.h"
#include "conntrack.h"
#include "affinity.h"
#include "maglev.h"
#include "leastconn.h"
/* Not used here: bpfproxy.o creates and pins every map, the socket object reuses them. */
#include "sock.h"
#include "parse.h"
#include "nat.h"
#include "reject.h"
#include "scope.h"
#include "nodeport.h"
#include "snat.h"
#include "srcrange.h"
#include "fib.h"
#include "fecount.h"
#include "frag.h"
#include "icmp.h"
#include "prefilter.h"
#include "tail.h"

/* The clock of conntrack, NAT and affinity timestamps: CLOCK_MONOTONIC at tick resolution
 * (a few ms, against lifetimes of seconds and a refresh interval of BPX_CT_REFRESH_INTERVAL_NS).
 * The precise clock read the TSC, about a tenth of an established packet's cost (docs/benchmarks.md). */
static __always_inline __u64 bpx_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* Passed on: up the stack (tc), or to tc (XDP, which then counts it). */
static __always_inline int bpx_pass(struct __ctx_buff *ctx, __u32 reason)
{
	if (!CTX_IS_XDP)
		bpx_count(ctx, reason);
	return CTX_ACT_OK;
}

/* A translated packet: counted, then delivered (fib.h) through the next hop deliver_prepare
 * approved. */
static __always_inline int bpx_deliver(struct __ctx_buff *ctx, const struct bpx_next_hop *nh, __be32 saddr,
                                       __be32 daddr, __u32 reason, const bool ttl_done)
{
	bpx_count(ctx, reason);
	return fib_deliver(ctx, nh, saddr, daddr, ttl_done);
}

/* A client's packet translated completely at tc ingress (DNAT, and the source too when masqueraded
 * or redirected past the stack): tc egress has nothing left to do and skips it by the mark bit the
 * daemon chose (bpx_nat_config.translated_mark, bpfproxy.translatedMarkBit), saving its parse,
 * pre-filter and NAT lookup (bpx_handle_egress). Set after the rewrite, so a packet carries it only
 * when it is translated; the mark survives the stack's forwarding within the node's namespace. */
static __always_inline void mark_translated(struct __ctx_buff *ctx, const struct bpx_next_hop *nh)
{
#ifndef BPX_CTX_XDP
	if (nh->mark)
		ctx->mark |= nh->mark;
#endif
}

/* On the stack path a client's packet keeps its own source: tc egress masquerades it. */
static __always_inline void deliver_source(const struct bpx_next_hop *nh, const struct bpx_pkt *pkt, __be32 *saddr,
                                           __be16 *sport)
{
	if (deliver_by_stack(nh)) {
		*saddr = pkt->saddr;
		*sport = pkt->sport;
	}
}

/* tc egress: a masqueraded flow's packet the stack forwarded (client -> backend, fib.h) gets
 * the source its NAT entry says, as POSTROUTING's MASQUERADE. The flow is found by the
 * backend's answer to the client (nat_create's stack key), owner-checked with its other two
 * entries (nat_reply_entry_owned): a port another flow holds now is never written. */
static __always_inline int egress_masquerade(struct __ctx_buff *ctx, const struct bpx_pkt *pkt)
{
	struct bpx_nat_entry *ne, *fwd;
	struct bpx_nat_key key;

	nat_key_init(&key, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto, BPX_NAT_DIR_REPLY);
	ne = nat_lookup(&key);
	if (!ne || !(ne->flags & BPX_NAT_E_MASQUERADED) || ne->addr != pkt->saddr || ne->port != pkt->sport ||
	    !nat_reply_entry_owned(&key, ne))
		return TC_ACT_OK;
	nat_key_init(&key, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, pkt->proto, BPX_NAT_DIR_FORWARD);
	fwd = nat_lookup(&key);
	if (!fwd)
		return TC_ACT_OK;
	if (nat_rewrite(ctx, pkt, fwd->addr, pkt->daddr, fwd->port, pkt->dport, false) < 0)
		return bpx_drop(ctx, pkt, 0, BPX_CTR_DROP_REWRITE);
	return TC_ACT_OK;
}

/* An ICMP error dropped: reported with its own (outer) addresses, no ports and no frontend. */
#ifndef BPX_CTX_XDP
static __always_inline int icmp_drop(struct __ctx_buff *ctx, __u32 reason)
{
	struct bpx_pkt pkt = {.proto = IPPROTO_ICMP};
	__be32 addrs[2];

	if (ctx_load_bytes(ctx, BPX_IP_OFF + offsetof(struct iphdr, saddr), addrs, sizeof(addrs)) == 0) {
		pkt.saddr = addrs[0];
		pkt.daddr = addrs[1];
	}
	return bpx_drop(ctx, &pkt, 0, reason);
}
#endif

/* Not TCP/UDP: an ICMP error about a translated flow is translated back (icmp.h). At
 * egress an error about an untranslated flow passes uncounted like other egress traffic.
 * XDP leaves ICMP to tc. */
static __always_inline int handle_icmp_error(struct __ctx_buff *ctx, const bool egress)
{
#ifdef BPX_CTX_XDP
	return CTX_ACT_OK;
#else
	struct bpx_next_hop nh;
	__be32 saddr, daddr;

	switch (icmp_error_translate(ctx, &saddr, &daddr)) {
	case BPX_ICMP_NOT_ERROR:
		return TC_ACT_OK;
	case BPX_ICMP_UNTRACKED:
		return egress ? TC_ACT_OK : bpx_pass(ctx, BPX_CTR_ICMP_NOT_TRACKED);
	case BPX_ICMP_FAILED:
		return icmp_drop(ctx, BPX_CTR_DROP_REWRITE);
	case BPX_ICMP_NOT_OWNER:
		return icmp_drop(ctx, BPX_CTR_DROP_NAT_NOT_OWNER);
	default:
		break;
	}
	if (egress || !deliver_prepare_icmp(ctx, &nh, saddr, daddr))
		return bpx_pass(ctx, BPX_CTR_ICMP_TRANSLATED);
	return bpx_deliver(ctx, &nh, saddr, daddr, BPX_CTR_ICMP_TRANSLATED, false);
#endif
}
static __always_inline __u32 config_flags(void)
{
	struct bpx_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	return cfg ? cfg->flags : 0;
}

/* The interface a new flow's source was checked on (pod_source_valid), for its forward entry: the
 * flow's later packets on it skip the check (pod_source_known_flow). 0 when nothing was checked or the
 * ifindex does not fit the entry's 16 bits (those flows are checked on every packet). */
static __always_inline __u16 pod_source_ifindex(struct __ctx_buff *ctx, const int from)
{
#ifdef BPX_CTX_XDP
	return 0;
#else
	if (from != BPX_FROM_POD || !(config_flags() & BPX_CFG_F_POD_SOURCE_CHECK) || ctx->ifindex > 0xffff)
		return 0;
	return ctx->ifindex;
#endif
}

/* A packet of a flow whose first packet passed the source check on this same interface: its source
 * is the flow's (part of the key), so it passes again; the FIB lookup is the larger part of an
 * established packet's cost. Another interface's packet with the tuple is checked as any other. */
static __always_inline bool pod_source_known_flow(struct __ctx_buff *ctx, const struct bpx_ct_entry *forward)
{
#ifdef BPX_CTX_XDP
	return false;
#else
	return forward && forward->src_ifindex && forward->src_ifindex == ctx->ifindex;
#endif
}

/* kube-proxy's masquerade rules: hairpin (the client is the backend), masqueradeAll,
 * external frontends with Cluster policy always, ClusterIP from outside the cluster when a
 * local-traffic detector is configured. */
static __always_inline bool needs_masquerade(const struct bpx_svc_value *svc, __be32 saddr, __be32 backend_addr,
                                             __u8 scope)
{
	__u32 flags;

	if (saddr == backend_addr)
		return true;
	if (svc->flags & BPX_SVC_F_MASQUERADE)
		return true;
	flags = config_flags();
	if ((svc->flags & BPX_SVC_F_MASQ_OUTSIDE) && scope == BPX_SCOPE_EXTERNAL && (flags & BPX_CFG_F_DETECT_LOCAL))
		return true;
	return flags & BPX_CFG_F_MASQUERADE_ALL;
}

/* The TCP header fields conntrack follows (sequence numbers, flags); zeroed for UDP. */
static __always_inline void ct_seg_load(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, struct bpx_tcp_seg *seg)
{
	struct {
		__be32 seq;
		__be32 ack_seq;
		__u8 doff; /* data offset in the high nibble */
	} h;
	__be16 tot_len;

	__builtin_memset(seg, 0, sizeof(*seg));
	if (!pkt_is_tcp(pkt))
		return;
	/* pkt_parse made the IPv4 and TCP headers linear and nothing has moved them since: read
	 * them in place (the helper below only for a packet that is somehow not). */
	{
		void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
		struct iphdr *ip = data + BPX_IP_OFF;
		__u32 off = pkt->l4_off;
		struct tcphdr *tcp;

		if (off <= BPX_IP_OFF + BPX_IP_HLEN_MAX && (void *)(ip + 1) <= data_end) {
			tcp = data + off;
			if ((void *)(tcp + 1) <= data_end) {
				ct_seg_fill(seg, bpf_ntohl(tcp->seq), bpf_ntohl(tcp->ack_seq), pkt->tcp_flags,
				            (__s32)bpf_ntohs(ip->tot_len) - (__s32)(off - BPX_IP_OFF) -
				                    (__s32)tcp->doff * 4);
				return;
			}
		}
	}
	if (ctx_load_bytes(ctx, pkt->l4_off + 4, &h, 9) < 0 ||
	    ctx_load_bytes(ctx, BPX_IP_OFF + offsetof(struct iphdr, tot_len), &tot_len, sizeof(tot_len)) < 0)
		return;
	ct_seg_fill(seg, bpf_ntohl(h.seq), bpf_ntohl(h.ack_seq), pkt->tcp_flags,
	            (__s32)bpf_ntohs(tot_len) - (__s32)(pkt->l4_off - BPX_IP_OFF) - (__s32)(h.doff >> 4) * 4);
}

/* An out-of-window RST: forwarded (the endpoints judge it too) but conntrack ignores it. */
static __always_inline __u8 ct_seg_state_counted(const struct bpx_ct_entry *sender, const struct bpx_tcp_seg *seg,
                                                 __u8 dir, __u32 len)
{
	bool ignored;
	__u8 flags = ct_seg_state(sender, seg, dir, &ignored);

	if (unlikely(ignored))
		bpx_count_len(BPX_CTR_CT_RST_IGNORED, len);
	return flags;
}

/* An IPv4 fragment (frag.h): the first records its ports, a later one takes them and then
 * follows the same path (addresses only). False: a later fragment without a first. */
static __always_inline bool handle_fragment(struct __ctx_buff *ctx, struct bpx_pkt *pkt)
{
#ifdef BPX_CTX_XDP
	return false; /* never here: pkt_parse leaves fragments to tc */
#else
	return frag_ports(ctx, pkt);
#endif
}

static __always_inline void ct_reply_touch(const struct bpx_pkt *pkt, const struct bpx_tcp_seg *seg,
                                           struct bpx_ct_entry *reply, const struct bpx_rev_nat *nat, __u64 now,
                                           __u32 len)
{
	__u8 flags = ct_reply_state(pkt->proto) | ct_seg_state_counted(reply, seg, BPX_CT_DIR_REPLY, len);

	ct_entry_advance(reply, seg);
	/* The forward entry is due whenever this one is written (new flags, or once per interval). */
	if (ct_entry_touch(reply, flags, now)) {
		struct bpx_ct_entry *forward;
		struct bpx_ct_key key;

		ct_key_init(&key, pkt->daddr, nat->address, pkt->dport, nat->port, pkt->proto, BPX_CT_DIR_FORWARD);
		forward = ct_lookup(&key);
		if (forward && forward->backend_id == reply->backend_id && ct_entry_touch(forward, flags, now))
			lc_note_state(forward);
	}
}

/* 1. Backend -> client: the source becomes the frontend again. The forward entry learns
 * about replies (REPLIED / SEEN_REPLY, CLOSING) and stays alive while only the backend talks;
 * both are written at most once per BPX_CT_REFRESH_INTERVAL_NS unless their flags change. */
static __always_inline int reverse_translate(struct __ctx_buff *ctx, const struct bpx_pkt *pkt,
                                             struct bpx_ct_entry *reply, const struct bpx_rev_nat *nat, __u64 now,
                                             const bool egress)
{
	struct bpx_next_hop nh;
	struct bpx_tcp_seg seg;

	if (!egress && !deliver_prepare(ctx, &nh, nat->address, pkt->daddr))
		return CTX_ACT_OK;
	/* Addressed to the client already: the stack forwards it, tc egress restores the source
	 * (and counts it). */
	if (!egress && deliver_by_stack(&nh))
		return CTX_ACT_OK;
	ct_seg_load(ctx, pkt, &seg);
	ct_reply_touch(pkt, &seg, reply, nat, now, ctx_full_len(ctx));

	if (nat_rewrite(ctx, pkt, nat->address, pkt->daddr, nat->port, pkt->dport,
	                !egress && deliver_decrements_ttl(&nh)) < 0)
		return bpx_drop(ctx, pkt, reply->rev_nat_id, BPX_CTR_DROP_REWRITE);
	if (egress)
		return bpx_pass(ctx, BPX_CTR_REVERSE_TRANSLATED);
	return bpx_deliver(ctx, &nh, nat->address, pkt->daddr, BPX_CTR_REVERSE_TRANSLATED, true);
}

/* A reply of a north-south flow went through: the flow's conntrack entries learn it (its NAT
 * entries live as long as they do). The backend's sequence numbers of a north-south flow are not
 * followed (its conntrack reply entry never matches a packet), so its RSTs are accepted without
 * a window check. */
static __always_inline void nat_reverse_touch(const struct bpx_pkt *pkt, const struct bpx_tcp_seg *seg,
                                              struct bpx_nat_entry *ne, __be32 backend_addr, __u64 now)
{
	bool ignored;
	__u8 ct_flags = ct_reply_state(pkt->proto) | ct_seg_state(NULL, seg, BPX_CT_DIR_REPLY, &ignored);
	struct bpx_ct_entry *forward, *reply;
	struct bpx_ct_key key, rkey;

	ct_key_init(&key, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, pkt->proto, BPX_CT_DIR_FORWARD);
	forward = ct_lookup(&key);
	/* A DSR flow on the backend's node (dsr.h): the client's ACKs go straight to the backend, unseen here.
	 * A backend segment with ACK and neither SYN nor RST says the handshake completed: established. In
	 * arithmetic, not a branch (the reply paths' verifier count): BPX_CT_X_DSR is bit 3, SEEN_REPLY bit 0. */
	if (forward)
		ct_flags |= ((forward->xflags & BPX_CT_X_DSR) >> 3) & (seg->flags >> 4) & ~(seg->flags >> 1) &
		            ~(seg->flags >> 2) & BPX_CT_F_SEEN_REPLY;
	if (forward && forward->backend_id == ne->backend_id && ct_entry_touch(forward, ct_flags, now)) {
		lc_note_state(forward);
		ct_key_reply_of(&rkey, &key, backend_addr, pkt->sport);
		reply = ct_lookup(&rkey);
		if (reply && reply->backend_id == ne->backend_id)
			ct_entry_touch(reply, ct_flags, now);
	}
}

/* 0. Reply of a north-south flow (masqueraded or to a NodePort): the destination becomes
 * the client again and the source the address and port the client connected to. */
static __always_inline int nat_reverse(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, struct bpx_nat_entry *ne,
                                       __u64 now, const bool egress)
{
	__be32 client = ne->addr, fe_addr = ne->frontend_addr;
	__be16 client_port = ne->port, fe_port = ne->frontend_port;
	struct bpx_next_hop nh;
	struct bpx_tcp_seg seg;

	if (!egress && !deliver_prepare(ctx, &nh, fe_addr, client))
		return CTX_ACT_OK;
	/* The stack path: only the masquerade is undone here; tc egress restores the source
	 * (and counts it). */
	if (!egress && deliver_by_stack(&nh)) {
		fe_addr = pkt->saddr;
		fe_port = pkt->sport;
	}
	ct_seg_load(ctx, pkt, &seg);
	nat_reverse_touch(pkt, &seg, ne, pkt->saddr, now);
	if (nat_rewrite(ctx, pkt, fe_addr, client, fe_port, client_port, !egress && deliver_decrements_ttl(&nh)) < 0)
		return bpx_drop(ctx, pkt, 0, BPX_CTR_DROP_REWRITE);
	if (egress)
		return bpx_pass(ctx, BPX_CTR_REVERSE_TRANSLATED);
	if (deliver_by_stack(&nh))
		return CTX_ACT_OK;
	return bpx_deliver(ctx, &nh, fe_addr, client, BPX_CTR_REVERSE_TRANSLATED, true);
}

/* The source a tracked flow's packets carry after DNAT: the masquerade its NAT entry says, if
 * any, else its own. False when the flow's masquerade port no longer belongs to it (the reply
 * entry names another client: the owner check): the packet must not be sent with it. */
static __always_inline bool nat_forward_source(const struct bpx_pkt *pkt, __be32 backend_addr, __be16 backend_port,
                                               __u32 backend_id, __be32 *addr, __be16 *port)
{
	struct bpx_nat_entry *ne, *reply;
	struct bpx_nat_key key;

	*addr = pkt->saddr;
	*port = pkt->sport;
	nat_key_init(&key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_NAT_DIR_FORWARD);
	ne = nat_lookup(&key);
	if (!ne || ne->backend_id != backend_id || !(ne->flags & BPX_NAT_E_MASQUERADED))
		return true;
	nat_key_init(&key, backend_addr, ne->addr, backend_port, ne->port, pkt->proto, BPX_NAT_DIR_REPLY);
	reply = nat_lookup(&key);
	if (!nat_reply_owned(reply, pkt->saddr, pkt->sport, backend_id))
		return false;
	*addr = ne->addr;
	*port = ne->port;
	return true;
}

/* Records a new north-south flow; saddr and sport receive the source the packet must carry. */
static __always_inline int nat_create(const struct bpx_pkt *pkt, const struct bpx_backend *backend, __u32 backend_id,
                                      bool masq, __u64 now, __be32 *saddr, __be16 *sport)
{
	struct bpx_nat_entry e = {
	        .last_seen_ns = now,
	        .addr = pkt->saddr,
	        .frontend_addr = pkt->daddr,
	        .port = pkt->sport,
	        .frontend_port = pkt->dport,
	        .backend_id = backend_id,
	        .flags = masq ? BPX_NAT_E_MASQUERADED : 0,
	};
	struct bpx_nat_key key;
	bool evicted;

	*saddr = pkt->saddr;
	*sport = pkt->sport;
	if (masq) {
		struct bpx_nat_config *cfg = nat_config();

		if (!cfg || !cfg->masq_addr)
			return -1;
		nat_key_init(&key, backend->address, cfg->masq_addr, backend->port, 0, pkt->proto, BPX_NAT_DIR_REPLY);
		if (nat_alloc_port(&key, &e, cfg, now, &evicted) < 0)
			return -1;
		if (evicted)
			bpx_count_len(BPX_CTR_SNAT_EVICTED, 0);
		*saddr = cfg->masq_addr;
		*sport = key.dport;
		/* The stack path masquerades at tc egress (fib.h), which finds the flow by the
		 * backend's answer to the client: backend -> client, MASQUERADED. */
		nat_key_init(&key, backend->address, pkt->saddr, backend->port, pkt->sport, pkt->proto,
		             BPX_NAT_DIR_REPLY);
		if (bpf_map_update_elem(&bpx_snat_v1, &key, &e, BPF_ANY) < 0)
			return -1;
	} else {
		nat_key_init(&key, backend->address, pkt->saddr, backend->port, pkt->sport, pkt->proto,
		             BPX_NAT_DIR_REPLY);
		if (bpf_map_update_elem(&bpx_snat_v1, &key, &e, BPF_ANY) < 0)
			return -1;
	}
	e.addr = *saddr;
	e.port = *sport;
	nat_key_init(&key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_NAT_DIR_FORWARD);
	return bpf_map_update_elem(&bpx_snat_v1, &key, &e, BPF_ANY);
}

/* A client packet of a tracked flow: the forward entry learns it (FIN, RST, and the ACK that
 * establishes the flow), and the reply entry is written with it whenever it is, so a flow whose
 * client alone talks keeps its reply entry (both age together). */
static __always_inline void ct_forward_touch(const struct bpx_tcp_seg *seg, const struct bpx_ct_key *key,
                                             struct bpx_ct_entry *forward, __u64 now, __u32 len)
{
	__u8 flags = ct_seg_state_counted(forward, seg, BPX_CT_DIR_FORWARD, len);
	struct bpx_ct_entry *reply = NULL;
	struct bpx_ct_key reply_key;
	bool looked = false;

	ct_key_reply_of(&reply_key, key, forward->backend_addr, forward->backend_port);
	/* Answered, not yet established: this ACK may establish it (checked against the reply). */
	if (unlikely((forward->flags & (BPX_CT_F_REPLIED | BPX_CT_F_SEEN_REPLY)) == BPX_CT_F_REPLIED)) {
		reply = ct_lookup(&reply_key);
		looked = true;
		flags |= ct_seg_establishes(forward, reply, seg);
	}
	ct_entry_advance(forward, seg);
	if (!ct_entry_touch(forward, flags, now))
		return;
	lc_note_state(forward);
	if (!looked)
		reply = ct_lookup(&reply_key);
	if (reply && reply->backend_id == forward->backend_id)
		ct_entry_touch(reply, flags, now);
}

/* 2. Client -> frontend of a tracked flow whose backend still exists: the forward entry names it
 * (backend_addr, backend_port), no backend lookup. */
static __always_inline int translate_tracked(struct __ctx_buff *ctx, const struct bpx_pkt *pkt,
                                             const struct bpx_ct_key *key, struct bpx_ct_entry *forward, __u64 now)
{
	__be32 backend_addr = forward->backend_addr;
	__be16 backend_port = forward->backend_port;
	struct bpx_next_hop nh;
	struct bpx_tcp_seg seg;
	__be32 saddr = pkt->saddr;
	__be16 sport = pkt->sport;

	/* The source after DNAT: the masquerade its NAT entry says, if any (BPX_CT_X_NO_NAT: none).
	 * A flow whose port another flow holds now is over: its entry goes, the next packet starts
	 * a new flow (tc decides; XDP leaves it to tc). */
	if (!(forward->xflags & BPX_CT_X_NO_NAT) &&
	    !nat_forward_source(pkt, backend_addr, backend_port, forward->backend_id, &saddr, &sport)) {
		if (CTX_IS_XDP)
			return CTX_ACT_OK;
		lc_flow_ended(forward);
		bpf_map_delete_elem(&bpx_ct_v3, key);
		return bpx_drop(ctx, pkt, forward->rev_nat_id, BPX_CTR_DROP_NAT_NOT_OWNER);
	}
	if (!deliver_prepare(ctx, &nh, saddr, backend_addr))
		return CTX_ACT_OK;
	ct_seg_load(ctx, pkt, &seg);
	ct_forward_touch(&seg, key, forward, now, ctx_full_len(ctx));
	fe_count_est(ctx, forward->rev_nat_id, forward->backend_id);
	deliver_source(&nh, pkt, &saddr, &sport);
	if (nat_rewrite(ctx, pkt, saddr, backend_addr, sport, backend_port, deliver_decrements_ttl(&nh)) < 0)
		return bpx_drop(ctx, pkt, forward->rev_nat_id, BPX_CTR_DROP_REWRITE);
	/* A flow without NAT entries is never masqueraded: egress would only look and pass. */
	if (!deliver_by_stack(&nh) || (forward->xflags & BPX_CT_X_MARK))
		mark_translated(ctx, &nh);
	return bpx_deliver(ctx, &nh, saddr, backend_addr, BPX_CTR_TRANSLATED_EST, true);
}

/* A frontend without backends (`reason`: REJECT_NO_BACKEND, or REJECT_MAP_FULL when the daemon
 * had no map room for them; `why` the per-frontend slot): answer in place and send the answer
 * back out of the interface the packet came in on. Counted per frontend in tc only (XDP passes
 * the packet to tc, which counts). */
static __always_inline int reject_no_backend(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 id, __u32 reason,
                                             __u32 why)
{
#ifdef BPX_CTX_XDP
	return CTX_ACT_OK; /* tc builds the reply */
#else
	/* A fragment's headers do not describe the datagram: no reply built from them. */
	if (unlikely(pkt_is_fragment(pkt))) {
		fe_note_drop(id, why);
		return bpx_drop(ctx, pkt, id, BPX_CTR_DROP_FRAGMENT);
	}
	/* An RST is never answered (reject_tcp_rst): it takes no token. */
	if (!(pkt->tcp_flags & BPX_TCP_RST) && !reject_allowed(pkt->saddr)) {
		fe_note_drop(id, BPX_FE_DROP_REJECT_SUPPRESSED);
		return bpx_drop(ctx, pkt, id, BPX_CTR_REJECT_SUPPRESSED);
	}
	fe_note_drop(id, why);
	switch (reject_build_reply(ctx, pkt)) {
	case BPX_REJECT_SENT:
		bpx_count_drop(ctx, pkt, id, reason);
		return bpf_redirect(ctx->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx_drop(ctx, pkt, id, reason);
	case BPX_REJECT_MALFORMED:
		return bpx_drop(ctx, pkt, id, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx_drop(ctx, pkt, id, BPX_CTR_DROP_REJECT_FAILED);
	}
#endif
}

/* A TCP segment that cannot start a connection (not a SYN) to a frontend, with no flow it
 * belongs to: RFC 793's reset (seq = its ACK number), so the client fails fast. The monitor
 * sees a segment of a flow this node does not know (a stale or lost entry). */
static __always_inline int reject_untracked(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 rev_nat_id)
{
#ifdef BPX_CTX_XDP
	return CTX_ACT_OK; /* tc builds the reset */
#else
	/* An RST is never answered (reject_tcp_rst): it takes no token. */
	if (!(pkt->tcp_flags & BPX_TCP_RST) && !reject_allowed(pkt->saddr)) {
		fe_note_drop(rev_nat_id, BPX_FE_DROP_REJECT_SUPPRESSED);
		return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_REJECT_SUPPRESSED);
	}
	fe_note_drop(rev_nat_id, BPX_FE_DROP_NO_CONNTRACK);
	switch (reject_tcp_rst(ctx, pkt)) {
	case BPX_REJECT_SENT:
		bpx_count_drop(ctx, pkt, rev_nat_id, BPX_CTR_REJECT_NO_CONNTRACK);
		return bpf_redirect(ctx->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_REJECT_NO_CONNTRACK);
	case BPX_REJECT_MALFORMED:
		return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_DROP_REJECT_FAILED);
	}
#endif
}

/* Whether a flow whose entries a new flow on the same tuple would take over is really gone:
 * expired, or TCP that was closed (an accepted RST, FIN from both sides). An ESTABLISHED or
 * half-closed TCP flow is never released, whoever sends the packet. A TCP flow never answered
 * (SYN_SENT) and a UDP flow are released only for a sender on a pod interface (`trusted`:
 * pod_source_valid let it through): only the owner of the address can reuse its port, and a
 * UDP flow has no close to wait for. */
static __always_inline bool ct_flow_is_gone(const struct bpx_ct_entry *e, __u8 proto, __u64 now, bool trusted)
{
	__u8 fins = e->flags & (BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY);

	if (ct_entry_is_expired(e, proto, now))
		return true;
	if (proto != IPPROTO_TCP)
		return trusted;
	if ((e->flags & BPX_CT_F_CLOSING) || fins == (BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY))
		return true;
	return trusted && !(e->flags & BPX_CT_F_SEEN_REPLY);
}

/* The same for a north-south flow's NAT entry, judged by the conntrack entry that owns it (NAT
 * entries live exactly as long as their flow's conntrack, snat.h nat_owner_state). */
static __always_inline bool nat_flow_is_gone(const struct bpx_nat_entry *e, __u8 proto, __u64 now, bool trusted)
{
	struct bpx_ct_entry *owner;
	struct bpx_ct_key ckey;

	nat_owner_key(&ckey, e, proto);
	owner = ct_lookup(&ckey);
	if (!owner || owner->backend_id != e->backend_id)
		return true;
	return ct_flow_is_gone(owner, proto, now, trusted);
}

/* A flow that starts straight to a backend (not to a frontend) on the tuple of an earlier
 * Service flow — the client reused a source port: the new flow owns the tuple, so the old
 * flow's entries, whose reply entry would rewrite this flow's replies to the frontend, are
 * dropped, but only when that flow is gone (ct_flow_is_gone): a SYN forged with another
 * client's tuple must never end its live connection. Only flow starts look (TCP SYN, any UDP
 * datagram), and only when the pre-filter let the packet through, i.e. its destination may be
 * a backend. XDP leaves it to tc, which sees the packet next. */
static __always_inline void release_reused_tuple(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u64 now,
                                                 const int from)
{
	const bool trusted = from == BPX_FROM_POD;
	struct bpx_ct_entry *reply, *forward;
	struct bpx_nat_entry *ne, *nf;
	struct bpx_rev_nat *nat;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;

	if (CTX_IS_XDP || (pkt_is_tcp(pkt) && !pkt_opens_connection(pkt)))
		return;
	ct_key_init(&key, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto, BPX_CT_DIR_REPLY);
	reply = ct_lookup(&key);
	if (reply && ct_flow_is_gone(reply, pkt->proto, now, trusted)) {
		__u32 backend_id = reply->backend_id;

		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		bpf_map_delete_elem(&bpx_ct_v3, &key);
		if (nat) {
			ct_key_init(&key, pkt->saddr, nat->address, pkt->sport, nat->port, pkt->proto,
			            BPX_CT_DIR_FORWARD);
			forward = ct_lookup(&key);
			if (forward && forward->backend_id == backend_id) {
				lc_flow_ended(forward);
				bpf_map_delete_elem(&bpx_ct_v3, &key);
			}
		}
		bpx_count(ctx, BPX_CTR_TUPLE_RELEASED);
	}
	nat_key_init(&nkey, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto, BPX_NAT_DIR_REPLY);
	ne = nat_lookup(&nkey);
	if (ne && nat_flow_is_gone(ne, pkt->proto, now, trusted)) {
		struct bpx_nat_key fkey;
		__u32 backend_id = ne->backend_id;

		nat_key_init(&fkey, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, pkt->proto,
		             BPX_NAT_DIR_FORWARD);
		bpf_map_delete_elem(&bpx_snat_v1, &nkey);
		nf = nat_lookup(&fkey);
		if (nf && nf->backend_id == backend_id)
			bpf_map_delete_elem(&bpx_snat_v1, &fkey);
		bpx_count(ctx, BPX_CTR_TUPLE_RELEASED);
	}
}

/* 3. Client -> frontend, not (or no longer usefully) tracked: choose a backend. Only a SYN
 * or a UDP datagram starts a flow; another TCP segment is picked up mid-stream by a Maglev
 * frontend (every node chooses the same backend for it, so a flow moved by an ECMP rehash
 * or a lost entry lives on) and reset otherwise. The choice is made first and written
 * (affinity, NAT, conntrack, counters) only once the packet can be delivered. */
static __always_inline int translate_new(struct __ctx_buff *ctx, const struct bpx_pkt *pkt,
                                         const struct bpx_ct_key *key, __u8 scope, bool reselect, __u64 now,
                                         const int from)
{
	bool midstream = pkt_is_tcp(pkt) && !pkt_opens_connection(pkt);
	struct bpx_tcp_seg seg;
	__u8 ct_flags;
	struct bpx_svc_key svc_key = {.address = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct bpx_backend *backend = NULL;
	struct bpx_svc_value *svc;
	struct bpx_nat_config *ncfg;
	struct bpx_next_hop nh;
	bool affinity, affinity_hit = false, masq, nat;
	__u32 backend_id = 0;
	__u8 xflags;
	__u32 rev_nat_id;
	__be32 saddr;
	__be16 sport;

	svc = lb_lookup_frontend(&svc_key, scope);
	if (!svc) {
		release_reused_tuple(ctx, pkt, now, from);
		return bpx_pass(ctx, BPX_CTR_NOT_SERVICE);
	}
	if ((svc->flags & BPX_SVC_F_SOURCE_RANGES) && !srcrange_allows(svc->rev_nat_id, pkt->saddr))
		return fe_drop(ctx, pkt, svc->rev_nat_id, BPX_FE_DROP_SOURCE_RANGE, BPX_CTR_DROP_SOURCE_RANGE);
	if (!svc_has_backends(svc)) {
		if (svc_drops_when_empty(svc))
			return fe_drop(ctx, pkt, svc->rev_nat_id, BPX_FE_DROP_NO_LOCAL_BACKEND,
			               BPX_CTR_DROP_NO_LOCAL_BACKEND);
		/* One inlined reject for both (the verifier walks it once). */
		bool full = svc_map_full(svc);

		return reject_no_backend(ctx, pkt, svc->rev_nat_id,
		                         full ? BPX_CTR_REJECT_MAP_FULL : BPX_CTR_REJECT_NO_BACKEND,
		                         full ? BPX_FE_DROP_MAP_FULL : BPX_FE_DROP_NO_BACKEND);
	}
	if (midstream && !svc_uses_maglev(svc))
		return reject_untracked(ctx, pkt, svc->rev_nat_id);

	/* Counted at once (XDP never gets here with reselect): a flag kept alive to the end
	 * would double the verifier's work on every path below. */
	if (reselect)
		bpx_count(ctx, BPX_CTR_BACKEND_RESELECT);
	rev_nat_id = svc->rev_nat_id;
	/* A picked-up flow follows the Maglev table alone: affinity is this node's memory. */
	affinity = svc_has_affinity(svc) && !midstream;
	/* Only a backend that still serves this frontend: affinity never revives a removed one. */
	if (affinity && affinity_lookup(pkt->saddr, rev_nat_id, svc->affinity_timeout, now, &backend_id) &&
	    affinity_backend_is_member(backend_id, rev_nat_id, svc_key.scope)) {
		backend = lb_lookup_backend(backend_id);
		affinity_hit = backend != NULL;
	}
	if (!backend && svc_uses_maglev(svc)) {
		backend_id =
		        maglev_backend(rev_nat_id, svc_key.scope,
		                       maglev_flow_hash(pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto));
		backend = backend_id ? lb_lookup_backend(backend_id) : NULL;
	}
	if (!backend && midstream)
		return reject_untracked(ctx, pkt, svc->rev_nat_id);
	/* Random choice (least-conn: the less busy of two random slots), also when a Maglev table is
	 * missing: a usable backend beats none. */
	if (!backend) {
		backend_id = lb_pick_backend(svc_key.address,
		                             (__u32)svc_key.port | ((__u32)svc_key.proto << 16) |
		                                     ((__u32)svc_key.scope << 24),
		                             svc->count, svc->flags);
		backend = backend_id ? lb_lookup_backend(backend_id) : NULL;
		if (!backend)
			return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_DROP_NO_BACKEND_ENTRY);
	}

	/* Direct server return (dsr.h): an external flow to a backend on another node, for a frontend with
	 * BPX_SVC_X_DSR, is bpx_dsr_lb's (XDP leaves it to tc). IPv4 headers without options only (the
	 * option goes after 20 bytes); fragments are masqueraded as before. */
	if (from == BPX_FROM_DEVICE && !BPX_L3_DEV_BUILD &&
	    unlikely(dsr_wanted(svc->xflags, scope, backend->flags, pkt->l4_off - BPX_IP_OFF, pkt->fragment))) {
		if (CTX_IS_XDP)
			return CTX_ACT_OK;
		tail_call_dsr_lb(ctx, backend_id);
		return CTX_ACT_DROP;
	}

	/* Replies of masqueraded and NodePort flows need the NAT table; a flow that cannot
	 * be recorded there could never be answered, so it is not started. */
	masq = needs_masquerade(svc, pkt->saddr, backend->address, scope) && !node_addr_is_local(backend->address);
	nat = masq || svc_key.address == BPX_WILDCARD_ADDR;
	saddr = pkt->saddr;
	sport = pkt->sport;
	if (masq) {
		ncfg = nat_config();
		if (!ncfg || !ncfg->masq_addr)
			return fe_drop(ctx, pkt, rev_nat_id, BPX_FE_DROP_SNAT_EXHAUSTED, BPX_CTR_DROP_SNAT_EXHAUSTED);
		saddr = ncfg->masq_addr;
	}
	if (!deliver_prepare(ctx, &nh, saddr, backend->address))
		return CTX_ACT_OK;

	if (affinity_hit)
		bpx_count(ctx, BPX_CTR_AFFINITY_HIT);
	if (affinity)
		affinity_update(pkt->saddr, rev_nat_id, backend_id, now);
	if (nat && nat_create(pkt, backend, backend_id, masq, now, &saddr, &sport) < 0)
		return fe_drop(ctx, pkt, rev_nat_id, BPX_FE_DROP_SNAT_EXHAUSTED, BPX_CTR_DROP_SNAT_EXHAUSTED);

	/* A full table only costs stickiness: the next packet chooses again. A picked-up flow
	 * has evidently been answered already, but is not established until the next ACK of its
	 * client (a stray or spoofed segment pins a backend for tcp_syn_sent only). */
	ct_seg_load(ctx, pkt, &seg);
	ct_flags = ct_seg_state_counted(NULL, &seg, BPX_CT_DIR_FORWARD, ctx_full_len(ctx));
	if (midstream)
		ct_flags |= BPX_CT_F_REPLIED;
	/* Its client packets may be marked (BPX_CT_X_MARK) unless delivered to a host-network socket here. */
	xflags = nat ? 0 : BPX_CT_X_NO_NAT;
	if (!nat && !((backend->flags & BPX_BACKEND_F_NODE_LOCAL) && node_addr_is_local(backend->address)))
		xflags |= BPX_CT_X_MARK;
	/* A least-conn frontend's flow is one of its backend's active flows (a call: no fork here). */
	lc_flow_opened(key, backend_id, svc->flags,
	               ct_create(key, backend->address, backend->port, backend_id, rev_nat_id, ct_flags, xflags,
	                         pod_source_ifindex(ctx, from), &seg, now));
	fe_count_new(ctx, pkt, rev_nat_id, backend_id, backend);

	/* saddr and sport are the packet's own unless masqueraded. */
	deliver_source(&nh, pkt, &saddr, &sport);
	if (nat_rewrite(ctx, pkt, saddr, backend->address, sport, backend->port, deliver_decrements_ttl(&nh)) < 0)
		return bpx_drop(ctx, pkt, rev_nat_id, BPX_CTR_DROP_REWRITE);
	if (!deliver_by_stack(&nh) || (xflags & BPX_CT_X_MARK))
		mark_translated(ctx, &nh);
	return bpx_deliver(ctx, &nh, saddr, backend->address, BPX_CTR_TRANSLATED_NEW, true);
}

/* A packet from a backend that answers a tracked flow: reverse-translated through its NAT entry
 * (masqueraded and NodePort flows) or its conntrack entry. True with the verdict in *verdict;
 * false when it answers nothing. The NAT entry comes first, unless the conntrack entry says its
 * flow has none (the latest flow on this tuple). */
static __always_inline bool handle_reply(struct __ctx_buff *ctx, struct bpx_pkt *pkt, __u64 now, bool egress,
                                         int *verdict)
{
	struct bpx_nat_entry *ne;
	struct bpx_ct_entry *reply;
	struct bpx_rev_nat *nat;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;

	ct_key_init(&key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_CT_DIR_REPLY);
	reply = ct_lookup(&key);
	if (!reply || !(reply->xflags & BPX_CT_X_NO_NAT)) {
		nat_key_init(&nkey, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_NAT_DIR_REPLY);
		ne = nat_lookup(&nkey);
		/* The owner check (snat.h): never another flow's port, and no fallback to the conntrack
		 * entry either (on the stack path the backend's answer carries the client's tuple, whose
		 * conntrack reply entry would write the frontend all the same). */
		if (ne && !nat_reply_entry_owned(&nkey, ne))
			return false;
		if (ne) {
			*verdict = nat_reverse(ctx, pkt, ne, now, egress);
			return true;
		}
	}
	if (reply) {
		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		if (likely(nat)) {
			*verdict = reverse_translate(ctx, pkt, reply, nat, now, egress);
			return true;
		}
	}
	return false;
}

/* Strict reverse path (rp_filter=1) for a pod interface: the route back to the source must
 * leave through the interface the packet came in on, i.e. the source is an address of the
 * pod behind it. Pods behind one shared device (a bridge) are not told apart. Only packets
 * bpfproxy acts on ask (the pre-filter matched), so plain pod traffic pays nothing. Off
 * unless the daemon set BPX_CFG_F_POD_SOURCE_CHECK. */
#ifndef BPX_CTX_XDP
/* The FIB lookup of pod_source_valid, a BPF-to-BPF call: its lookup struct lives in its own frame,
 * so the caller's stack is the same whether a packet was checked here or skipped the check
 * (pod_source_known_flow), and the verifier walks what follows once, not once per way. */
static __noinline bool pod_source_routed(struct __sk_buff *ctx, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup p = {};
	long rc;

	p.family = AF_INET;
	p.ipv4_src = daddr;
	p.ipv4_dst = saddr;
	p.ifindex = ctx->ifindex;
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	/* Each of these results names the egress device; any other (local, unreachable,
	 * blackhole, no route) means the source does not belong behind this interface. */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return false;
	if (p.ifindex == ctx->ifindex)
		return true;
	/* A port of a bridge: the way back to its pods is the bridge. */
	__u32 port = ctx->ifindex;
	__u32 *bridge = bpf_map_lookup_elem(&bpx_bridge_ports_v1, &port);
	return bridge && *bridge == p.ifindex;
}
#endif

static __always_inline bool pod_source_valid(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, const int from)
{
#ifdef BPX_CTX_XDP
	return true;
#else
	if (from != BPX_FROM_POD || !(config_flags() & BPX_CFG_F_POD_SOURCE_CHECK))
		return true;
	return pod_source_routed(ctx, pkt->saddr, pkt->daddr);
#endif
}

/* XDP cannot see ip_summed. A CHECKSUM_PARTIAL packet (generic XDP runs after GRO; a veth's peer
 * stack hands them over) holds its folded pseudo-header sum in the L4 checksum field, not a
 * checksum: an address change must move it by -old + new and a port change not at all, which
 * ctx_l4_csum_replace's complete-checksum update gets wrong. So a field equal to the packet's own
 * pseudo-header sum goes to tc, which has ip_summed and the kernel's helpers; a complete checksum
 * equal to it by chance (1 in 65,536) only takes that slower path. UDP's 0 (no checksum) never
 * equals it (the sum includes the protocol). A total length below the header's (0: a GRO packet
 * over 64 KiB, BIG TCP) says nothing about the field: tc too. */
static __always_inline bool xdp_csum_partial(struct __ctx_buff *ctx, const struct bpx_pkt *pkt)
{
#ifdef BPX_CTX_XDP
	/* pkt_parse left XDP only unfragmented IPv4 without options, with the whole TCP/UDP header. */
	struct iphdr *ip = ctx_ptr(ctx, BPX_IP_OFF, sizeof(*ip));
	__sum16 *check = ctx_ptr(ctx, pkt_l4_csum_off(pkt), sizeof(*check));
	__u16 tot_len;

	if (!ip || !check)
		return false;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len >= BPX_IP_HLEN_MIN &&
	    *check != (__sum16)~csum_fold32(
	                      csum_ipv4_pseudo(pkt->saddr, pkt->daddr, pkt->proto, tot_len - BPX_IP_HLEN_MIN)))
		return false;
	bpx_count(ctx, BPX_CTR_XDP_PASS_CSUM_PARTIAL);
	return true;
#else
	return false;
#endif
}

static __always_inline int bpx_handle(struct __ctx_buff *ctx, const int from)
{
	struct bpx_ct_entry *forward = NULL;
	bool known = false;
	struct bpx_ct_key key;
	bool reselect = false;
	struct bpx_pkt pkt;
	int verdict;
	__u64 now;
	__u32 pf;

	if (pkt_parse(ctx, &pkt) != BPX_PARSE_OK) {
		/* IPv6 has its own program (tail.h); without one it passes untouched. */
		if (tail_call_v6(ctx, from))
			return CTX_ACT_OK;
		return handle_icmp_error(ctx, false);
	}
	/* A DSR flow's packet for a backend here, with the option (dsr.h): its own program. */
	tail_call_dsr_backend(ctx, from);
	if (unlikely(pkt_is_fragment(&pkt))) {
		/* A first fragment records its ports (state): its source is checked first. */
		if (!pod_source_valid(ctx, &pkt, from))
			return bpx_drop(ctx, &pkt, 0, BPX_CTR_DROP_POD_SOURCE);
		if (!handle_fragment(ctx, &pkt))
			return bpx_pass(ctx, BPX_CTR_FRAGMENT_NO_ENTRY);
	}
	/* Not to a frontend, not from a backend: nothing below can match (prefilter.h). */
	pf = prefilter_match(&pkt);
	if (!pf)
		return bpx_pass(ctx, BPX_CTR_NOT_SERVICE);
	/* Neither to a frontend nor to a backend: only a reply may follow. The flow is looked up once,
	 * before the source check, which it may spare (a lookup only, nothing written). */
	if (pf & BPX_PF_DST) {
		ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
		forward = ct_lookup(&key);
	}
	/* A pod's client packet (its source is no backend: no reply) of a flow whose source was
	 * checked on this interface skips the check. */
	if (from == BPX_FROM_POD && !(pf & BPX_PF_SRC))
		known = pod_source_known_flow(ctx, forward);
	/* Everything below may create, change or release state: a pod may only speak for itself. */
	if (!known && !pod_source_valid(ctx, &pkt, from))
		return bpx_drop(ctx, &pkt, 0, BPX_CTR_DROP_POD_SOURCE);
	/* Before XDP writes anything: a CHECKSUM_PARTIAL packet is tc's. */
	if (xdp_csum_partial(ctx, &pkt))
		return CTX_ACT_OK;

	now = bpx_now();

	/* Only a packet from a backend can be a reply. */
	if ((pf & BPX_PF_SRC) && handle_reply(ctx, &pkt, now, false, &verdict))
		return verdict;
	/* Neither to a frontend nor to a backend (a flow straight to one may release a tuple). */
	if (!(pf & BPX_PF_DST))
		return bpx_pass(ctx, BPX_CTR_NOT_SERVICE);

	/* A SYN reusing the tuple of a flow that got an answer (or is closing) is a new
	 * connection and chooses again; a retransmitted SYN of an unanswered flow stays. */
	if (forward && !(pkt_opens_connection(&pkt) && ct_entry_has_concluded(forward)) &&
	    !ct_entry_is_expired(forward, pkt.proto, now)) {
		if (likely(forward->backend_addr)) {
			/* A DSR flow's packet is bpx_dsr_lb's (an L3 device has none: DNAT alone, its entry says NO_NAT). */
			if (!BPX_L3_DEV_BUILD && unlikely(forward->xflags & BPX_CT_X_DSR)) {
				if (CTX_IS_XDP)
					return CTX_ACT_OK;
				tail_call_dsr_lb(ctx, 0);
				return CTX_ACT_DROP;
			}
			return translate_tracked(ctx, &pkt, &key, forward, now);
		}
		/* The flow's backend is gone (the daemon zeroed its address): tc chooses again (it counts
		 * the reselect). */
		if (CTX_IS_XDP)
			return CTX_ACT_OK;
		reselect = true;
	}
	/* The flow on this tuple is over (concluded, expired, or its backend gone): if it was counted, it is
	 * taken off now, before a new flow takes its entry. */
	if (forward)
		lc_flow_ended(forward);

	return translate_new(ctx, &pkt, &key, packet_scope(pkt.saddr, from), reselect, now, from);
}

/* tc egress: replies that never crossed a hooked ingress — from host-network sockets of
 * this node (a host-network backend, the API server on a control-plane node) and anything
 * the stack forwarded — are reverse-translated on their way out. Only replies: packets
 * already translated at ingress no longer match a reply tuple (and those translated completely
 * carry the mark bit, mark_translated: passed without a look). Other packets pass uncounted. */
#ifndef BPX_CTX_XDP
static __always_inline int bpx_handle_egress(struct __ctx_buff *ctx)
{
	struct bpx_nat_config *cfg = nat_config();
	__u32 mark = cfg ? cfg->translated_mark : 0;
	struct bpx_pkt pkt;
	int verdict;
	__u32 pf;

	/* Translated completely at ingress (mark_translated): the bit is the node's no longer. */
	if (mark && (ctx->mark & mark) == mark) {
		ctx->mark &= ~mark;
		return TC_ACT_OK;
	}

	if (pkt_parse(ctx, &pkt) != BPX_PARSE_OK) {
		if (tail_call_v6_egress(ctx))
			return TC_ACT_OK;
		return handle_icmp_error(ctx, true);
	}
	if (unlikely(pkt_is_fragment(&pkt)) && !handle_fragment(ctx, &pkt))
		return TC_ACT_OK;
	/* Only a packet from a backend can be a reply, only one to a backend masqueraded
	 * (prefilter.h). */
	pf = prefilter_match(&pkt);
	if ((pf & BPX_PF_SRC) && handle_reply(ctx, &pkt, bpx_now(), true, &verdict))
		return verdict;
	if (pf & BPX_PF_DST)
		return egress_masquerade(ctx, &pkt);
	return TC_ACT_OK;
}
#endif

#endif
