// SPDX-License-Identifier: GPL-2.0
/* bpfproxy service translation at tc ingress.
 *
 * Two thin entry programs share one inline core, specialised by a constant:
 *   bpx_from_pod     host side of pod veths: all traffic is internal;
 *   bpx_from_device  external devices: internal only from a cluster CIDR.
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
 * Counting: every IPv4 TCP/UDP packet is counted under exactly one outcome reason
 * (TRANSLATED_*, REVERSE_TRANSLATED, NOT_SERVICE, REJECT_NO_BACKEND, FRAGMENT_NO_ENTRY,
 * DROP_*), and so is every ICMP error quoting TCP/UDP (ICMP_TRANSLATED, ICMP_NOT_TRACKED);
 * AFFINITY_HIT and BACKEND_RESELECT are events counted in addition. Other traffic is
 * not counted, so it costs one parse only. */
#include "common.h"
#include "config.h"
#include "counters.h"
#include "lb.h"
#include "conntrack.h"
#include "affinity.h"
#include "maglev.h"
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
#include "xdp.h"
#include "frag.h"
#include "icmp.h"
#include "prefilter.h"

static __always_inline int bpx_pass(struct __sk_buff *skb, __u32 reason)
{
	bpx_count(skb, reason);
	return TC_ACT_OK;
}

static __always_inline int bpx_drop(struct __sk_buff *skb, __u32 reason)
{
	bpx_count(skb, reason);
	return TC_ACT_SHOT;
}

/* A translated packet: counted, then delivered past the host stack when the daemon asked
 * for it (see fib.h), else up the stack. */
static __always_inline int bpx_deliver(struct __sk_buff *skb, __be32 saddr, __be32 daddr, __u32 reason)
{
	struct bpx_nat_config *cfg = nat_config();

	bpx_count(skb, reason);
	if (cfg && (cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT))
		return fib_redirect(skb, saddr, daddr);
	return TC_ACT_OK;
}

/* Not TCP/UDP: an ICMP error about a translated flow is translated back (icmp.h). At
 * egress an error about an untranslated flow passes uncounted like other egress traffic. */
static __always_inline int handle_icmp_error(struct __sk_buff *skb, const bool egress)
{
	__be32 saddr, daddr;

	switch (icmp_error_translate(skb, &saddr, &daddr)) {
	case BPX_ICMP_NOT_ERROR:
		return TC_ACT_OK;
	case BPX_ICMP_UNTRACKED:
		return egress ? TC_ACT_OK : bpx_pass(skb, BPX_CTR_ICMP_NOT_TRACKED);
	case BPX_ICMP_FAILED:
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	default:
		break;
	}
	if (egress)
		return bpx_pass(skb, BPX_CTR_ICMP_TRANSLATED);
	return bpx_deliver(skb, saddr, daddr, BPX_CTR_ICMP_TRANSLATED);
}

static __always_inline __u32 config_flags(void)
{
	struct bpx_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	return cfg ? cfg->flags : 0;
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
static __always_inline void ct_seg_load(struct __sk_buff *skb, const struct bpx_pkt *pkt, struct bpx_tcp_seg *seg)
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
		void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
		struct iphdr *ip = data + BPX_IP_OFF;
		__u32 off = pkt->l4_off;
		struct tcphdr *tcp;

		if (off <= BPX_IP_OFF + BPX_IP_HLEN_MAX && (void *)(ip + 1) <= data_end) {
			tcp = data + off;
			if ((void *)(tcp + 1) <= data_end) {
				ct_seg_fill(seg, bpf_ntohl(tcp->seq), pkt->tcp_flags,
				            (__s32)bpf_ntohs(ip->tot_len) - (__s32)(off - BPX_IP_OFF) -
				                    (__s32)tcp->doff * 4);
				return;
			}
		}
	}
	if (bpf_skb_load_bytes(skb, pkt->l4_off + 4, &h, 9) < 0 ||
	    bpf_skb_load_bytes(skb, BPX_IP_OFF + offsetof(struct iphdr, tot_len), &tot_len, sizeof(tot_len)) < 0)
		return;
	ct_seg_fill(seg, bpf_ntohl(h.seq), pkt->tcp_flags,
	            (__s32)bpf_ntohs(tot_len) - (__s32)(pkt->l4_off - BPX_IP_OFF) - (__s32)(h.doff >> 4) * 4);
}

/* The same from an XDP packet (IPv4 header without options, TCP header bounds-checked by xdp_parse). */
static __always_inline void ct_seg_xdp(struct xdp_md *ctx, const struct bpx_pkt *pkt, const struct bpx_xdp_pkt *x,
                                       struct bpx_tcp_seg *seg)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = x->ip;
	struct tcphdr *tcp = (void *)(ip + 1);

	__builtin_memset(seg, 0, sizeof(*seg));
	if (!pkt_is_tcp(pkt) || (void *)(tcp + 1) > data_end)
		return;
	ct_seg_fill(seg, bpf_ntohl(tcp->seq), pkt->tcp_flags,
	            (__s32)bpf_ntohs(ip->tot_len) - BPX_IP_HLEN_MIN - (__s32)tcp->doff * 4);
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
static __always_inline bool handle_fragment(struct __sk_buff *skb, struct bpx_pkt *pkt)
{
	return frag_ports(skb, pkt);
}

static __always_inline void ct_reply_touch(const struct bpx_pkt *pkt, const struct bpx_tcp_seg *seg,
                                           struct bpx_ct_entry *reply, const struct bpx_rev_nat *nat, __u64 now,
                                           __u32 len)
{
	__u8 flags = BPX_CT_F_SEEN_REPLY | ct_seg_state_counted(reply, seg, BPX_CT_DIR_REPLY, len);

	if ((reply->flags | flags) != reply->flags || now - reply->last_seen_ns > BPX_CT_REFRESH_INTERVAL_NS) {
		struct bpx_ct_entry *forward;
		struct bpx_ct_key key;

		ct_key_init(&key, pkt->daddr, nat->address, pkt->dport, nat->port, pkt->proto, BPX_CT_DIR_FORWARD);
		forward = ct_lookup(&key);
		if (forward && forward->backend_id == reply->backend_id)
			ct_entry_touch(forward, flags, now);
	}
	ct_entry_advance(reply, seg);
	ct_entry_touch(reply, flags, now);
}

/* 1. Backend -> client: the source becomes the frontend again. The forward entry learns
 * about replies (SEEN_REPLY, CLOSING) and stays alive while only the backend talks, but
 * is written at most once per BPX_CT_REFRESH_INTERVAL_NS unless its flags change. */
static __always_inline int reverse_translate(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                             struct bpx_ct_entry *reply, const struct bpx_rev_nat *nat, __u64 now,
                                             const bool egress)
{
	struct bpx_tcp_seg seg;

	ct_seg_load(skb, pkt, &seg);
	ct_reply_touch(pkt, &seg, reply, nat, now, skb->len);

	if (nat_rev_snat(skb, pkt, nat->address, nat->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	if (egress)
		return bpx_pass(skb, BPX_CTR_REVERSE_TRANSLATED);
	return bpx_deliver(skb, nat->address, pkt->daddr, BPX_CTR_REVERSE_TRANSLATED);
}

/* A reply of a north-south flow went through: its NAT entry and the flow's conntrack
 * forward entry learn it (SEEN_REPLY, CLOSING). */
/* The backend's sequence numbers of a north-south flow are not followed (its conntrack reply
 * entry never matches a packet), so its RSTs are accepted without a window check. */
static __always_inline void nat_reverse_touch(const struct bpx_pkt *pkt, const struct bpx_tcp_seg *seg,
                                              struct bpx_nat_entry *ne, __u64 now)
{
	bool ignored;
	__u8 ct_flags = BPX_CT_F_SEEN_REPLY | ct_seg_state(NULL, seg, BPX_CT_DIR_REPLY, &ignored);
	struct bpx_ct_entry *forward;
	struct bpx_ct_key key;

	nat_entry_touch(ne, BPX_NAT_E_SEEN_REPLY | (pkt_closes_connection(pkt) ? BPX_NAT_E_CLOSING : 0), now);
	ct_key_init(&key, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, pkt->proto, BPX_CT_DIR_FORWARD);
	forward = ct_lookup(&key);
	if (forward && forward->backend_id == ne->backend_id &&
	    ((forward->flags | ct_flags) != forward->flags || now - forward->last_seen_ns > BPX_CT_REFRESH_INTERVAL_NS))
		ct_entry_touch(forward, ct_flags, now);
}

/* 0. Reply of a north-south flow (masqueraded or to a NodePort): the destination becomes
 * the client again and the source the address and port the client connected to. */
static __always_inline int nat_reverse(struct __sk_buff *skb, const struct bpx_pkt *pkt, struct bpx_nat_entry *ne,
                                       __u64 now, const bool egress)
{
	__be32 client = ne->addr, fe_addr = ne->frontend_addr;
	__be16 client_port = ne->port, fe_port = ne->frontend_port;
	struct bpx_tcp_seg seg;

	ct_seg_load(skb, pkt, &seg);
	nat_reverse_touch(pkt, &seg, ne, now);
	if (nat_rewrite(skb, pkt, fe_addr, client, fe_port, client_port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	if (egress)
		return bpx_pass(skb, BPX_CTR_REVERSE_TRANSLATED);
	return bpx_deliver(skb, fe_addr, client, BPX_CTR_REVERSE_TRANSLATED);
}

/* The source a tracked flow's packets carry after DNAT (its masquerade address and port, or
 * its own); touches the NAT entries when `touch`. */
static __always_inline void nat_forward_source(const struct bpx_pkt *pkt, const struct bpx_backend *backend,
                                               __u32 backend_id, __u64 now, bool touch, __be32 *addr, __be16 *port)
{
	struct bpx_nat_entry *ne, *reply;
	struct bpx_nat_key key;
	__u8 flags = pkt_closes_connection(pkt) ? BPX_NAT_E_CLOSING : 0;

	*addr = pkt->saddr;
	*port = pkt->sport;
	nat_key_init(&key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_NAT_DIR_FORWARD);
	ne = nat_lookup(&key);
	if (!ne || ne->backend_id != backend_id)
		return;
	if (touch)
		nat_entry_touch(ne, flags, now);
	if (!(ne->flags & BPX_NAT_E_MASQUERADED))
		return;
	*addr = ne->addr;
	*port = ne->port;
	if (!touch)
		return;
	/* Keeps the allocated port claimed while only the client talks (one-way UDP). */
	nat_key_init(&key, backend->address, *addr, backend->port, *port, pkt->proto, BPX_NAT_DIR_REPLY);
	reply = nat_lookup(&key);
	if (reply)
		nat_entry_touch(reply, flags, now);
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

	*saddr = pkt->saddr;
	*sport = pkt->sport;
	if (masq) {
		struct bpx_nat_config *cfg = nat_config();

		if (!cfg || !cfg->masq_addr)
			return -1;
		nat_key_init(&key, backend->address, cfg->masq_addr, backend->port, 0, pkt->proto, BPX_NAT_DIR_REPLY);
		if (nat_alloc_port(&key, &e, cfg, now) < 0)
			return -1;
		*saddr = cfg->masq_addr;
		*sport = key.dport;
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

static __always_inline void ct_forward_touch(const struct bpx_tcp_seg *seg, const struct bpx_ct_key *key,
                                             struct bpx_ct_entry *forward, const struct bpx_backend *backend, __u64 now,
                                             __u32 len)
{
	__u8 flags = ct_seg_state_counted(forward, seg, BPX_CT_DIR_FORWARD, len);

	if (unlikely((forward->flags | flags) != forward->flags)) {
		struct bpx_ct_entry *reply;
		struct bpx_ct_key reply_key;

		ct_key_reply_of(&reply_key, key, backend->address, backend->port);
		reply = ct_lookup(&reply_key);
		if (reply)
			ct_entry_touch(reply, flags, now);
	}
	ct_entry_advance(forward, seg);
	ct_entry_touch(forward, flags, now);
}

/* 2. Client -> frontend of a tracked flow whose backend still exists. */
static __always_inline int translate_tracked(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                             const struct bpx_ct_key *key, struct bpx_ct_entry *forward,
                                             const struct bpx_backend *backend, __u64 now)
{
	struct bpx_tcp_seg seg;
	__be32 saddr;
	__be16 sport;

	ct_seg_load(skb, pkt, &seg);
	ct_forward_touch(&seg, key, forward, backend, now, skb->len);
	fe_count(skb, forward->rev_nat_id);

	/* The source after DNAT: the masquerade its NAT entry says, if any (BPX_CT_X_NO_NAT: none). */
	saddr = pkt->saddr;
	sport = pkt->sport;
	if (!(forward->xflags & BPX_CT_X_NO_NAT))
		nat_forward_source(pkt, backend, forward->backend_id, now, true, &saddr, &sport);
	if (nat_rewrite(skb, pkt, saddr, backend->address, sport, backend->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	return bpx_deliver(skb, saddr, backend->address, BPX_CTR_TRANSLATED_EST);
}

/* A frontend without backends: answer in place and send the answer back out of the
 * interface the packet came in on. */
static __always_inline int reject_no_backend(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	/* A fragment's headers do not describe the datagram: no reply built from them. */
	if (unlikely(pkt_is_fragment(pkt)))
		return bpx_drop(skb, BPX_CTR_DROP_FRAGMENT);
	switch (reject_build_reply(skb, pkt)) {
	case BPX_REJECT_SENT:
		bpx_count(skb, BPX_CTR_REJECT_NO_BACKEND);
		return bpf_redirect(skb->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx_drop(skb, BPX_CTR_REJECT_NO_BACKEND);
	case BPX_REJECT_MALFORMED:
		return bpx_drop(skb, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx_drop(skb, BPX_CTR_DROP_REJECT_FAILED);
	}
}

/* A TCP segment that cannot start a connection (not a SYN) to a frontend, with no flow it
 * belongs to: RFC 793's reset (seq = its ACK number), so the client fails fast. */
static __always_inline int reject_untracked(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	switch (reject_tcp_rst(skb, pkt)) {
	case BPX_REJECT_SENT:
		bpx_count(skb, BPX_CTR_REJECT_NO_CONNTRACK);
		return bpf_redirect(skb->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx_drop(skb, BPX_CTR_REJECT_NO_CONNTRACK);
	case BPX_REJECT_MALFORMED:
		return bpx_drop(skb, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx_drop(skb, BPX_CTR_DROP_REJECT_FAILED);
	}
}

/* A flow that starts straight to a backend (not to a frontend) on the tuple of an earlier
 * Service flow — the client reused a source port: the new flow owns the tuple, so the old
 * flow's entries, whose reply entry would rewrite this flow's replies to the frontend, are
 * dropped. Only flow starts look (TCP SYN, any UDP datagram), and only when the pre-filter
 * let the packet through, i.e. its destination may be a backend. */
static __always_inline void release_reused_tuple(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	struct bpx_ct_entry *reply, *forward;
	struct bpx_nat_entry *ne, *nf;
	struct bpx_rev_nat *nat;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;

	if (pkt_is_tcp(pkt) && !pkt_opens_connection(pkt))
		return;
	ct_key_init(&key, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto, BPX_CT_DIR_REPLY);
	reply = ct_lookup(&key);
	if (reply) {
		__u32 backend_id = reply->backend_id;

		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		bpf_map_delete_elem(&bpx_ct_v2, &key);
		if (nat) {
			ct_key_init(&key, pkt->saddr, nat->address, pkt->sport, nat->port, pkt->proto,
			            BPX_CT_DIR_FORWARD);
			forward = ct_lookup(&key);
			if (forward && forward->backend_id == backend_id)
				bpf_map_delete_elem(&bpx_ct_v2, &key);
		}
		bpx_count(skb, BPX_CTR_TUPLE_RELEASED);
	}
	nat_key_init(&nkey, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto, BPX_NAT_DIR_REPLY);
	ne = nat_lookup(&nkey);
	if (ne) {
		struct bpx_nat_key fkey;
		__u32 backend_id = ne->backend_id;

		nat_key_init(&fkey, ne->addr, ne->frontend_addr, ne->port, ne->frontend_port, pkt->proto,
		             BPX_NAT_DIR_FORWARD);
		bpf_map_delete_elem(&bpx_snat_v1, &nkey);
		nf = nat_lookup(&fkey);
		if (nf && nf->backend_id == backend_id)
			bpf_map_delete_elem(&bpx_snat_v1, &fkey);
		bpx_count(skb, BPX_CTR_TUPLE_RELEASED);
	}
}

/* 3. Client -> frontend, not (or no longer usefully) tracked: choose a backend. Only a SYN
 * or a UDP datagram starts a flow; another TCP segment is picked up mid-stream by a Maglev
 * frontend (every node chooses the same backend for it, so a flow moved by an ECMP rehash
 * or a lost entry lives on) and reset otherwise. */
static __always_inline int translate_new(struct __sk_buff *skb, const struct bpx_pkt *pkt, const struct bpx_ct_key *key,
                                         __u8 scope, bool reselect, __u64 now)
{
	bool midstream = pkt_is_tcp(pkt) && !pkt_opens_connection(pkt);
	struct bpx_tcp_seg seg;
	__u8 ct_flags;
	struct bpx_svc_key svc_key = {.address = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct bpx_backend *backend = NULL;
	struct bpx_svc_value *svc, *slot;
	__u32 backend_id = 0;
	__u32 rev_nat_id;
	bool affinity, masq;
	__be32 saddr;
	__be16 sport;

	svc = lb_lookup_frontend(&svc_key, scope);
	if (!svc) {
		release_reused_tuple(skb, pkt);
		return bpx_pass(skb, BPX_CTR_NOT_SERVICE);
	}
	if ((svc->flags & BPX_SVC_F_SOURCE_RANGES) && !srcrange_allows(svc->rev_nat_id, pkt->saddr))
		return bpx_drop(skb, BPX_CTR_DROP_SOURCE_RANGE);
	if (!svc_has_backends(svc)) {
		if (svc_drops_when_empty(svc))
			return bpx_drop(skb, BPX_CTR_DROP_NO_LOCAL_BACKEND);
		return reject_no_backend(skb, pkt);
	}
	if (midstream && !svc_uses_maglev(svc))
		return reject_untracked(skb, pkt);
	if (reselect)
		bpx_count(skb, BPX_CTR_BACKEND_RESELECT);

	rev_nat_id = svc->rev_nat_id;
	/* A picked-up flow follows the Maglev table alone: affinity is this node's memory. */
	affinity = svc_has_affinity(svc) && !midstream;
	/* Only a backend that still serves this frontend: affinity never revives a removed one. */
	if (affinity && affinity_lookup(pkt->saddr, rev_nat_id, svc->affinity_timeout, now, &backend_id) &&
	    affinity_backend_is_member(backend_id, rev_nat_id, svc_key.scope)) {
		backend = lb_lookup_backend(backend_id);
		if (backend)
			bpx_count(skb, BPX_CTR_AFFINITY_HIT);
	}
	if (!backend && svc_uses_maglev(svc)) {
		backend_id =
		        maglev_backend(rev_nat_id, svc_key.scope,
		                       maglev_flow_hash(pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto));
		backend = backend_id ? lb_lookup_backend(backend_id) : NULL;
	}
	if (!backend && midstream)
		return reject_untracked(skb, pkt);
	/* Random choice, also when a Maglev table is missing: a usable backend beats none. */
	if (!backend) {
		slot = lb_select_slot(&svc_key, svc);
		if (!slot)
			return bpx_drop(skb, BPX_CTR_DROP_NO_BACKEND_ENTRY);
		backend_id = slot->backend_id;
		backend = lb_lookup_backend(backend_id);
		if (!backend)
			return bpx_drop(skb, BPX_CTR_DROP_NO_BACKEND_ENTRY);
	}
	if (affinity)
		affinity_update(pkt->saddr, rev_nat_id, backend_id, now);

	/* Replies of masqueraded and NodePort flows need the NAT table; a flow that cannot
	 * be recorded there could never be answered, so it is not started. */
	masq = needs_masquerade(svc, pkt->saddr, backend->address, scope) && !node_addr_is_local(backend->address);
	saddr = pkt->saddr;
	sport = pkt->sport;
	if ((masq || svc_key.address == BPX_WILDCARD_ADDR) &&
	    nat_create(pkt, backend, backend_id, masq, now, &saddr, &sport) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_SNAT_EXHAUSTED);

	/* A full table only costs stickiness: the next packet chooses again. A picked-up flow
	 * has evidently been answered already. */
	ct_seg_load(skb, pkt, &seg);
	ct_flags = ct_seg_state_counted(NULL, &seg, BPX_CT_DIR_FORWARD, skb->len);
	if (midstream)
		ct_flags |= BPX_CT_F_SEEN_REPLY;
	ct_create(key, backend->address, backend->port, backend_id, rev_nat_id, ct_flags,
	          masq || svc_key.address == BPX_WILDCARD_ADDR ? 0 : BPX_CT_X_NO_NAT, &seg, now);
	fe_count(skb, rev_nat_id);

	/* saddr and sport are the packet's own unless masqueraded. */
	if (nat_rewrite(skb, pkt, saddr, backend->address, sport, backend->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	return bpx_deliver(skb, saddr, backend->address, BPX_CTR_TRANSLATED_NEW);
}

/* A packet from a backend that answers a tracked flow: reverse-translated through its NAT entry
 * (masqueraded and NodePort flows) or its conntrack entry. True with the verdict in *verdict;
 * false when it answers nothing. The NAT entry comes first, unless the conntrack entry says its
 * flow has none (the latest flow on this tuple). */
static __always_inline bool handle_reply(struct __sk_buff *skb, struct bpx_pkt *pkt, __u64 now, bool egress,
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
		if (ne) {
			*verdict = nat_reverse(skb, pkt, ne, now, egress);
			return true;
		}
	}
	if (reply) {
		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		if (likely(nat)) {
			*verdict = reverse_translate(skb, pkt, reply, nat, now, egress);
			return true;
		}
	}
	return false;
}

static __always_inline int bpx_handle(struct __sk_buff *skb, const int from)
{
	struct bpx_ct_entry *forward;
	struct bpx_backend *backend;
	struct bpx_ct_key key;
	bool reselect = false;
	struct bpx_pkt pkt;
	int verdict;
	__u64 now;
	__u32 pf;

	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK)
		return handle_icmp_error(skb, false);
	if (unlikely(pkt_is_fragment(&pkt)) && !handle_fragment(skb, &pkt))
		return bpx_pass(skb, BPX_CTR_FRAGMENT_NO_ENTRY);
	/* Not to a frontend, not from a backend: nothing below can match (prefilter.h). */
	pf = prefilter_match(&pkt);
	if (!pf)
		return bpx_pass(skb, BPX_CTR_NOT_SERVICE);

	now = bpf_ktime_get_ns();

	/* Only a packet from a backend can be a reply. */
	if ((pf & BPX_PF_SRC) && handle_reply(skb, &pkt, now, false, &verdict))
		return verdict;
	/* Neither to a frontend nor to a backend (a flow straight to one may release a tuple). */
	if (!(pf & BPX_PF_DST))
		return bpx_pass(skb, BPX_CTR_NOT_SERVICE);

	ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
	forward = ct_lookup(&key);
	/* A SYN reusing the tuple of a flow that got an answer (or is closing) is a new
	 * connection and chooses again; a retransmitted SYN of an unanswered flow stays. */
	if (forward && !(pkt_opens_connection(&pkt) && ct_entry_has_concluded(forward)) &&
	    !ct_entry_is_expired(forward, pkt.proto, now)) {
		backend = lb_lookup_backend(forward->backend_id);
		if (likely(backend))
			return translate_tracked(skb, &pkt, &key, forward, backend, now);
		reselect = true;
	}

	return translate_new(skb, &pkt, &key, packet_scope(pkt.saddr, from), reselect, now);
}

/* tc egress: replies that never crossed a hooked ingress — from host-network sockets of
 * this node (a host-network backend, the API server on a control-plane node) and anything
 * the stack forwarded — are reverse-translated on their way out. Only replies: packets
 * already translated at ingress no longer match a reply tuple. Other packets pass uncounted. */
static __always_inline int bpx_handle_egress(struct __sk_buff *skb)
{
	struct bpx_pkt pkt;
	int verdict;

	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK)
		return handle_icmp_error(skb, true);
	if (unlikely(pkt_is_fragment(&pkt)) && !handle_fragment(skb, &pkt))
		return TC_ACT_OK;
	/* Only a packet from a backend can be a reply (prefilter.h). */
	if (!(prefilter_match(&pkt) & BPX_PF_SRC))
		return TC_ACT_OK;
	if (handle_reply(skb, &pkt, bpf_ktime_get_ns(), true, &verdict))
		return verdict;
	return TC_ACT_OK;
}

SEC("tc")
int bpx_from_pod(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_POD);
}

SEC("tc")
int bpx_from_device(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_DEVICE);
}

/* XDP on --devices: see xdp.h. Counted only when XDP finishes the packet; what it passes
 * is counted by the tc program that then handles it. */
static __always_inline int bpx_handle_xdp(struct xdp_md *ctx)
{
	struct bpx_svc_key svc_key;
	struct bpx_ct_entry *reply, *forward;
	struct bpx_svc_value *svc, *slot;
	struct bpx_backend *backend;
	struct bpx_nat_config *ncfg;
	struct bpx_nat_entry *ne;
	struct bpx_rev_nat *nat;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;
	struct bpf_fib_lookup p;
	struct bpx_tcp_seg seg;
	struct bpx_xdp_pkt x;
	struct bpx_pkt pkt;
	__u32 len, backend_id;
	__be32 saddr;
	__be16 sport;
	bool masq;
	__u8 scope;
	__u64 now;
	__u32 pf;

	if (!xdp_parse(ctx, &pkt, &x))
		return XDP_PASS;
	pf = prefilter_match(&pkt);
	if (!pf)
		return XDP_PASS;
	len = ctx->data_end - ctx->data;
	now = bpf_ktime_get_ns();

	/* Only a packet from a backend can be a reply (prefilter.h). */
	if (pf & BPX_PF_SRC) {
		ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_REPLY);
		reply = ct_lookup(&key);
		/* As in tc: the NAT entry first, unless the conntrack entry says there is none. */
		ne = NULL;
		if (!reply || !(reply->xflags & BPX_CT_X_NO_NAT)) {
			nat_key_init(&nkey, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_NAT_DIR_REPLY);
			ne = nat_lookup(&nkey);
		}
		if (ne) {
			__be32 client = ne->addr, fe_addr = ne->frontend_addr;
			__be16 client_port = ne->port, fe_port = ne->frontend_port;

			if (!xdp_next_hop(ctx, &p, fe_addr, client, &x))
				return XDP_PASS;
			ct_seg_xdp(ctx, &pkt, &x, &seg);
			nat_reverse_touch(&pkt, &seg, ne, now);
			bpx_count_len(BPX_CTR_REVERSE_TRANSLATED, len);
			return xdp_rewrite_and_send(ctx, &x, fe_addr, fe_port, client, client_port, &p);
		}
		if (reply) {
			nat = lb_lookup_rev_nat(reply->rev_nat_id);
			if (!nat || !xdp_next_hop(ctx, &p, nat->address, pkt.daddr, &x))
				return XDP_PASS;
			ct_seg_xdp(ctx, &pkt, &x, &seg);
			ct_reply_touch(&pkt, &seg, reply, nat, now, len);
			bpx_count_len(BPX_CTR_REVERSE_TRANSLATED, len);
			return xdp_rewrite_and_send(ctx, &x, nat->address, nat->port, pkt.daddr, pkt.dport, &p);
		}
	}
	if (!(pf & BPX_PF_DST))
		return XDP_PASS;

	ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
	forward = ct_lookup(&key);
	if (forward && !(pkt_opens_connection(&pkt) && ct_entry_has_concluded(forward)) &&
	    !ct_entry_is_expired(forward, pkt.proto, now)) {
		backend = lb_lookup_backend(forward->backend_id);
		if (!backend)
			return XDP_PASS; /* tc chooses again */
		saddr = pkt.saddr;
		sport = pkt.sport;
		if (!(forward->xflags & BPX_CT_X_NO_NAT))
			nat_forward_source(&pkt, backend, forward->backend_id, now, false, &saddr, &sport);
		if (!xdp_next_hop(ctx, &p, saddr, backend->address, &x))
			return XDP_PASS;
		if (!(forward->xflags & BPX_CT_X_NO_NAT))
			nat_forward_source(&pkt, backend, forward->backend_id, now, true, &saddr, &sport);
		ct_seg_xdp(ctx, &pkt, &x, &seg);
		ct_forward_touch(&seg, &key, forward, backend, now, len);
		fe_count_len(forward->rev_nat_id, len);
		bpx_count_len(BPX_CTR_TRANSLATED_EST, len);
		return xdp_rewrite_and_send(ctx, &x, saddr, sport, backend->address, backend->port, &p);
	}

	__builtin_memset(&svc_key, 0, sizeof(svc_key));
	svc_key.address = pkt.daddr;
	svc_key.port = pkt.dport;
	svc_key.proto = pkt.proto;
	scope = packet_scope(pkt.saddr, BPX_FROM_DEVICE);
	/* Only a SYN or a datagram starts a flow here; tc picks up or resets the rest. */
	if (pkt_is_tcp(&pkt) && !pkt_opens_connection(&pkt))
		return XDP_PASS;
	svc = lb_lookup_frontend(&svc_key, scope);
	if (!svc)
		return XDP_PASS;
	if ((svc->flags & BPX_SVC_F_SOURCE_RANGES) && !srcrange_allows(svc->rev_nat_id, pkt.saddr)) {
		bpx_count_len(BPX_CTR_DROP_SOURCE_RANGE, len);
		return XDP_DROP;
	}
	/* Rejects, Local-policy drops and affinity are tc's. */
	if (!svc_has_backends(svc) || svc_has_affinity(svc))
		return XDP_PASS;
	backend = NULL;
	if (svc_uses_maglev(svc)) {
		backend_id = maglev_backend(svc->rev_nat_id, svc_key.scope,
		                            maglev_flow_hash(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto));
		backend = backend_id ? lb_lookup_backend(backend_id) : NULL;
	}
	if (!backend) {
		slot = lb_select_slot(&svc_key, svc);
		if (!slot)
			return XDP_PASS;
		backend_id = slot->backend_id;
		backend = lb_lookup_backend(backend_id);
		if (!backend)
			return XDP_PASS;
	}
	masq = needs_masquerade(svc, pkt.saddr, backend->address, scope) && !node_addr_is_local(backend->address);
	saddr = pkt.saddr;
	if (masq) {
		ncfg = nat_config();
		if (!ncfg || !ncfg->masq_addr)
			return XDP_PASS;
		saddr = ncfg->masq_addr;
	}
	if (!xdp_next_hop(ctx, &p, saddr, backend->address, &x))
		return XDP_PASS;
	sport = pkt.sport;
	if ((masq || svc_key.address == BPX_WILDCARD_ADDR) &&
	    nat_create(&pkt, backend, backend_id, masq, now, &saddr, &sport) < 0) {
		bpx_count_len(BPX_CTR_DROP_SNAT_EXHAUSTED, len);
		return XDP_DROP;
	}
	ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
	ct_seg_xdp(ctx, &pkt, &x, &seg);
	ct_create(&key, backend->address, backend->port, backend_id, svc->rev_nat_id, 0,
	          masq || svc_key.address == BPX_WILDCARD_ADDR ? 0 : BPX_CT_X_NO_NAT, &seg, now);
	fe_count_len(svc->rev_nat_id, len);
	bpx_count_len(BPX_CTR_TRANSLATED_NEW, len);
	return xdp_rewrite_and_send(ctx, &x, saddr, sport, backend->address, backend->port, &p);
}

SEC("xdp")
int bpx_xdp(struct xdp_md *ctx)
{
	return bpx_handle_xdp(ctx);
}

SEC("tc")
int bpx_reverse(struct __sk_buff *skb)
{
	return bpx_handle_egress(skb);
}

char _license[] SEC("license") = "GPL";
