/* Direct server return for external flows to a backend on another node (docs/dsr.md), IPv4 on tc of
 * Ethernet devices. Two programs, tail-called from bpx_from_device (tail.h), so the entry programs'
 * verifier counts only gain the calls:
 *
 * bpx_dsr_lb, the node that received the client's packet: the backend is chosen (new flow, by
 * translate_new, handed over in skb->cb) or tracked (a conntrack forward entry with BPX_CT_X_DSR).
 * The packet is DNATed to the backend and keeps the client's source (no SNAT); the flow's first
 * packet (TCP SYN) and every UDP datagram carry the frontend the client used in an 8-byte IPv4
 * option (BPX_DSR_OPT_TYPE: type, length, port, address), which makes the IPv4 header 28 bytes.
 * Only the forward conntrack entry is written here: replies never come back through this node.
 * Since they don't, this node's netfilter conntrack would call the flow's later packets INVALID
 * (an ACK of a SYN it never saw answered): the packet is redirected past the stack
 * (bpf_redirect_neigh) whenever the FIB names a next hop. A datagram or SYN with DF set that would
 * no longer fit the egress MTU with the option gets ICMP fragmentation needed (RFC 1191) with the
 * MTU less 8 back to the client; without DF the stack fragments it (the option is copied into
 * every fragment).
 *
 * bpx_dsr_backend, the backend's node: a packet from a device with exactly the DSR option. The
 * option is read and stripped (the IPv4 header is 20 bytes again, checksum recomputed) and the flow
 * recorded as a NodePort flow is: conntrack entries of client -> frontend and a NAT reply entry
 * backend -> client whose frontend is the option's. The backend's reply then takes the ordinary
 * reverse-NAT path (handle_reply: the source becomes the frontend at tc egress, or at ingress with
 * bypassNetfilter) and goes straight to the client. The packet goes up the stack to the backend. */
#ifndef BPX_DSR_H
#define BPX_DSR_H
#include "datapath.h"

struct bpx_dsr_opt {
	__u8 type;   /* BPX_DSR_OPT_TYPE */
	__u8 len;    /* BPX_DSR_OPT_LEN */
	__be16 port; /* the frontend's port, network byte order */
	__be32 addr; /* the frontend's address (what the client sent to), network byte order */
} __attribute__((packed));

struct bpx_dsr_hdr {
	struct iphdr ip;
	struct bpx_dsr_opt opt;
} __attribute__((packed));

#define BPX_ICMP_FRAG_NEEDED 4 /* destination unreachable code: fragmentation needed and DF set */

/* RFC 1191's "fragmentation needed" about the client's packet (as received, not yet translated),
 * from the frontend, with the next-hop MTU the option leaves: reject_udp_port_unreachable's reply
 * with another code and the MTU in the low 16 bits of the word after the checksum. */
/* A subprogram: its reply buffer in its own frame keeps bpx_dsr_lb within 6.1's 512-byte combined stack. */
static __noinline int dsr_frag_needed_reply(struct __sk_buff *skb, const struct bpx_pkt *pkt, __u32 mtu)
{
	struct bpx_icmp_reply out = {};
	struct ethhdr eth;
	__u32 quote_len = pkt->l4_off - BPX_IP_OFF + BPX_ICMP_QUOTE_L4;
	__s64 sum;

	if (quote_len < BPX_IP_HLEN_MIN + BPX_ICMP_QUOTE_L4 || quote_len > BPX_ICMP_QUOTE_MAX)
		return BPX_REJECT_MALFORMED;
	if (bpf_skb_load_bytes(skb, BPX_IP_OFF, out.quote, quote_len) < 0 || reject_load_eth(skb, &eth) < 0)
		return BPX_REJECT_FAILED;
	out.icmp.type = BPX_ICMP_DEST_UNREACH;
	out.icmp.code = BPX_ICMP_FRAG_NEEDED;
	out.icmp.unused = bpf_htonl(mtu & 0xffff);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp) + quote_len, 0);
	if (sum < 0)
		return BPX_REJECT_FAILED;
	out.icmp.checksum = csum_fold32((__u32)sum);
	reject_fill_ip(&out.ip, pkt, IPPROTO_ICMP, BPX_ICMP_TOS, sizeof(out.ip) + sizeof(out.icmp) + quote_len);
	return reject_write(skb, &eth, &out, sizeof(out.ip) + sizeof(out.icmp) + quote_len);
}

/* The packet no longer fits `ifindex`'s MTU (0: the device it came in on) once the option is added;
 * *mtu is that MTU. A GSO packet is left to the stack's own checks. */
static __always_inline bool dsr_too_big(struct __sk_buff *skb, __u32 ifindex, __u32 *mtu)
{
	*mtu = 0;
	return bpf_check_mtu(skb, ifindex, mtu, BPX_DSR_OPT_LEN, 0) == BPF_MTU_CHK_RET_FRAG_NEEDED;
}

/* Inserts the option after the 20-byte IPv4 header (bpf_skb_adjust_room at the network layer
 * opens the room exactly there) and rewrites the header: IHL 7, total length + 8, checksum. The
 * L4 checksum does not cover IPv4 options. */
static __always_inline int dsr_push_opt(struct __sk_buff *skb, __be32 addr, __be16 port)
{
	struct bpx_dsr_hdr h;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, BPX_IP_OFF, &h.ip, sizeof(h.ip)) < 0)
		return -1;
	if (bpf_skb_adjust_room(skb, BPX_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	h.ip.ihl = (sizeof(h) / 4) & 0xf;
	h.ip.tot_len = bpf_htons(bpf_ntohs(h.ip.tot_len) + BPX_DSR_OPT_LEN);
	h.ip.check = 0;
	h.opt.type = BPX_DSR_OPT_TYPE;
	h.opt.len = BPX_DSR_OPT_LEN;
	h.opt.port = port;
	h.opt.addr = addr;
	/* Summed by the kernel: csum_words' 32-bit loads may be ordered before the zeroed check field's
	 * store (strict aliasing), a helper's argument memory may not. */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&h, sizeof(h), 0);
	if (sum < 0)
		return -1;
	h.ip.check = csum_fold32((__u32)sum);
	return bpf_skb_store_bytes(skb, BPX_IP_OFF, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM);
}

/* The reverse: the 8 bytes after the first 20 of the header go, and the header is 20 bytes again. */
static __always_inline int dsr_strip_opt(struct __sk_buff *skb)
{
	struct iphdr ip;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, BPX_IP_OFF, &ip, sizeof(ip)) < 0)
		return -1;
	if (bpf_skb_adjust_room(skb, -(__s32)BPX_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(bpf_ntohs(ip.tot_len) - BPX_DSR_OPT_LEN);
	ip.check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (sum < 0)
		return -1;
	ip.check = csum_fold32((__u32)sum);
	return bpf_skb_store_bytes(skb, BPX_IP_OFF, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM);
}

/* A tracked DSR flow's client packet. The backend's segments never pass this node, so the client's
 * first segment without SYN (its ACK of the SYN-ACK) stands for the answer: the flow is established
 * and lives as long as an established one (else tcp_syn_sent's minute would end an idle connection
 * here while the backend keeps it). FIN and RST close it as usual. */
static __always_inline void dsr_forward_touch(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                              struct bpx_ct_entry *forward, __u64 now)
{
	struct bpx_tcp_seg seg;
	__u8 flags;

	ct_seg_load(skb, pkt, &seg);
	flags = ct_seg_state_counted(forward, &seg, BPX_CT_DIR_FORWARD, ctx_full_len(skb));
	if (pkt_is_tcp(pkt) && !(pkt->tcp_flags & (BPX_TCP_SYN | BPX_TCP_RST)))
		flags |= BPX_CT_F_REPLIED | BPX_CT_F_SEEN_REPLY;
	ct_entry_advance(forward, &seg);
	if (ct_entry_touch(forward, flags, now))
		lc_note_state(forward);
}

/* The new flow's state, once the packet is known to go: affinity, the forward conntrack entry (no
 * reply entry: replies never come here; no NAT: the source stays the client's), least-conn's count. */
static __always_inline void dsr_flow_create(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                            const struct bpx_ct_key *key, const struct bpx_svc_value *svc,
                                            const struct bpx_backend *backend, __u32 backend_id, __u64 now)
{
	struct bpx_ct_entry e = {
	        .last_seen_ns = now,
	        .backend_id = backend_id,
	        .rev_nat_id = svc->rev_nat_id,
	        .xflags = BPX_CT_X_NO_NAT | BPX_CT_X_DSR,
	        .backend_addr = backend->address,
	        .backend_port = backend->port,
	};
	struct bpx_tcp_seg seg;

	if (svc_has_affinity(svc))
		affinity_update(pkt->saddr, svc->rev_nat_id, backend_id, now);
	ct_seg_load(skb, pkt, &seg);
	e.flags = ct_seg_state_counted(NULL, &seg, BPX_CT_DIR_FORWARD, ctx_full_len(skb)) & BPX_CT_F_STATE;
	ct_entry_advance(&e, &seg);
	lc_flow_opened(key, backend_id, svc->flags, bpf_map_update_elem(&bpx_ct_v3, key, &e, BPF_ANY));
	fe_count_new(skb, pkt, svc->rev_nat_id, backend_id, backend);
}

/* The packet leaves translated completely (DNAT; the client's source kept on purpose): the translated mark
 * bit makes tc egress pass it without a look (datapath.h mark_translated). Without it, egress_masquerade
 * finds a masqueraded flow's stack key (backend -> client) left by an earlier flow from the same client
 * address and port to the same backend (a reused ephemeral port) and rewrites the source to that flow's SNAT
 * port: the backend then answers a port the client never used. A packet sent by bpf_redirect_neigh passes tc
 * egress too. */
static __always_inline void dsr_mark_translated(struct __sk_buff *skb)
{
	struct bpx_nat_config *cfg = nat_config();

	if (cfg && cfg->translated_mark)
		skb->mark |= cfg->translated_mark;
}

/* The same for a node run without the mark bit (translatedMarkBit -1): a new DSR flow takes the client's
 * tuple over, so a masqueraded flow's stack key for it (only ever looked up by egress_masquerade) goes. */
static __always_inline void dsr_clear_stack_key(const struct bpx_pkt *pkt, __be32 backend_addr, __be16 backend_port)
{
	struct bpx_nat_entry *ne;
	struct bpx_nat_key k;

	nat_key_init(&k, backend_addr, pkt->saddr, backend_port, pkt->sport, pkt->proto, BPX_NAT_DIR_REPLY);
	ne = nat_lookup(&k);
	if (ne && (ne->flags & BPX_NAT_E_MASQUERADED))
		bpf_map_delete_elem(&bpx_snat_v1, &k);
}

/* bpx_dsr_lb: see the top of this file. */
static __always_inline int dsr_lb(struct __sk_buff *skb)
{
	__u32 backend_id = skb->cb[0], rev_nat_id, mtu;
	struct bpx_svc_key svc_key = {};
	struct bpx_svc_value *svc = NULL;
	struct bpx_backend *backend = NULL;
	struct bpx_ct_entry *forward = NULL;
	struct bpf_fib_lookup p = {};
	__be32 backend_addr;
	__be16 backend_port;
	bool opt, redirect;
	struct bpx_ct_key key;
	struct bpx_pkt pkt;
	__u16 frag_off;
	__u64 now;
	long rc;

	/* Only the entry's hand-over (tail.h tail_call_dsr_lb) may come here; the cb is the qdisc's scratch. */
	if (skb->cb[1] != BPX_DSR_CB_MAGIC)
		return TC_ACT_SHOT;
	skb->cb[0] = 0;
	skb->cb[1] = 0;
	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK || pkt.l4_off != BPX_IP_OFF + BPX_IP_HLEN_MIN || !pkt.has_ports)
		return TC_ACT_SHOT;
	now = bpx_now();
	ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
	if (backend_id) {
		svc_key.address = pkt.daddr;
		svc_key.port = pkt.dport;
		svc_key.proto = pkt.proto;
		svc = lb_lookup_frontend(&svc_key, BPX_SCOPE_EXTERNAL);
		backend = lb_lookup_backend(backend_id);
		if (!svc || !backend)
			return bpx_drop(skb, &pkt, 0, BPX_CTR_DROP_NO_BACKEND_ENTRY);
		rev_nat_id = svc->rev_nat_id;
		backend_addr = backend->address;
		backend_port = backend->port;
	} else {
		forward = ct_lookup(&key);
		if (!forward || !(forward->xflags & BPX_CT_X_DSR) || !forward->backend_addr)
			return bpx_drop(skb, &pkt, 0, BPX_CTR_DROP_NO_BACKEND_ENTRY);
		rev_nat_id = forward->rev_nat_id;
		backend_id = forward->backend_id;
		backend_addr = forward->backend_addr;
		backend_port = forward->backend_port;
	}
	/* The backend's node learns the frontend from the flow's first packet; UDP has no first
	 * packet it could count on, so every datagram says it. */
	opt = !pkt_is_tcp(&pkt) || pkt_opens_connection(&pkt);

	/* Past the stack when the FIB names a next hop (see the top of this file). */
	if (bpf_skb_load_bytes(skb, BPX_IP_OFF + offsetof(struct iphdr, frag_off), &frag_off, sizeof(frag_off)) < 0)
		return bpx_drop(skb, &pkt, rev_nat_id, BPX_CTR_DROP_MALFORMED);
	p.family = AF_INET;
	p.ipv4_src = pkt.saddr;
	p.ipv4_dst = backend_addr;
	p.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	redirect = rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
	if (opt && dsr_too_big(skb, redirect ? p.ifindex : 0, &mtu)) {
		if (bpf_ntohs(frag_off) & BPX_IP_DF) {
			/* Rate-limited per source like every reply bpfproxy makes (reject.h). */
			if (!reject_allowed(pkt.saddr))
				return bpx_drop(skb, &pkt, rev_nat_id, BPX_CTR_REJECT_SUPPRESSED);
			switch (dsr_frag_needed_reply(skb, &pkt, mtu - BPX_DSR_OPT_LEN)) {
			case BPX_REJECT_SENT:
				bpx_count_drop(skb, &pkt, rev_nat_id, BPX_CTR_DSR_FRAG_NEEDED);
				return bpf_redirect(skb->ifindex, 0);
			default:
				return bpx_drop(skb, &pkt, rev_nat_id, BPX_CTR_DROP_REJECT_FAILED);
			}
		}
		/* Without DF the stack fragments it, each fragment with the option (copied). */
		redirect = false;
	}
	/* A redirect must not take the packet past a TTL of 1: the stack answers that one. */
	if (redirect) {
		__u8 ttl;

		if (bpf_skb_load_bytes(skb, BPX_IP_TTL_OFF, &ttl, 1) < 0 || ttl <= 1)
			redirect = false;
	}

	if (svc) {
		dsr_clear_stack_key(&pkt, backend_addr, backend_port);
		dsr_flow_create(skb, &pkt, &key, svc, backend, backend_id, now);
	} else {
		dsr_forward_touch(skb, &pkt, forward, now);
		fe_count_est(skb, rev_nat_id, backend_id);
	}
	if (nat_rewrite(skb, &pkt, pkt.saddr, backend_addr, pkt.sport, backend_port, redirect) < 0)
		return bpx_drop(skb, &pkt, rev_nat_id, BPX_CTR_DROP_REWRITE);
	if (opt) {
		if (dsr_push_opt(skb, pkt.daddr, pkt.dport) < 0)
			return bpx_drop(skb, &pkt, rev_nat_id, BPX_CTR_DROP_REWRITE);
		bpx_count(skb, BPX_CTR_DSR_OPTION_SENT);
	}
	bpx_count(skb, svc ? BPX_CTR_TRANSLATED_NEW : BPX_CTR_TRANSLATED_EST);
	dsr_mark_translated(skb);
	if (!redirect)
		return TC_ACT_OK;
	{
		struct bpf_redir_neigh neigh = {.nh_family = AF_INET, .ipv4_nh = p.ipv4_dst};

		return bpf_redirect_neigh(p.ifindex, &neigh, sizeof(neigh), 0);
	}
}

/* bpx_dsr_backend: see the top of this file. Entries are written for every packet with the option
 * (a retransmitted SYN, each UDP datagram), so they follow the latest flow on the tuple. The key is
 * the sender's own tuple: a host can only choose the source of the replies to itself. */
static __always_inline int dsr_backend(struct __sk_buff *skb)
{
	struct bpx_dsr_opt opt;
	struct bpx_nat_entry ne = {};
	struct bpx_nat_key nkey;
	struct bpx_tcp_seg seg;
	struct bpx_ct_key key;
	struct bpx_pkt pkt;
	__u64 now;

	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK || pkt.l4_off != BPX_IP_OFF + BPX_IP_HLEN_MIN + BPX_DSR_OPT_LEN ||
	    bpf_skb_load_bytes(skb, BPX_IP_OFF + BPX_IP_HLEN_MIN, &opt, sizeof(opt)) < 0 ||
	    opt.type != BPX_DSR_OPT_TYPE)
		return TC_ACT_OK;
	if (opt.len != BPX_DSR_OPT_LEN || !opt.addr || !opt.port)
		return bpx_drop(skb, &pkt, 0, BPX_CTR_DROP_MALFORMED);
	/* A later fragment has no ports: its first fragment wrote the entries. */
	if (pkt.has_ports) {
		now = bpx_now();
		ne.last_seen_ns = now;
		ne.addr = pkt.saddr;
		ne.port = pkt.sport;
		ne.frontend_addr = opt.addr;
		ne.frontend_port = opt.port;
		nat_key_init(&nkey, pkt.daddr, pkt.saddr, pkt.dport, pkt.sport, pkt.proto, BPX_NAT_DIR_REPLY);
		ct_key_init(&key, pkt.saddr, opt.addr, pkt.sport, opt.port, pkt.proto, BPX_CT_DIR_FORWARD);
		ct_seg_load(skb, &pkt, &seg);
		/* No backend or frontend id of this node's: 0 names none (the reply finds the NAT entry). */
		if (bpf_map_update_elem(&bpx_snat_v1, &nkey, &ne, BPF_ANY) < 0 ||
		    ct_create(&key, pkt.daddr, pkt.dport, 0, 0, 0, BPX_CT_X_DSR, 0, &seg, now) < 0)
			return bpx_drop(skb, &pkt, 0, BPX_CTR_DROP_SNAT_EXHAUSTED);
	}
	if (dsr_strip_opt(skb) < 0)
		return bpx_drop(skb, &pkt, 0, BPX_CTR_DROP_REWRITE);
	bpx_count(skb, BPX_CTR_DSR_RECEIVED);
	return TC_ACT_OK;
}

#endif
