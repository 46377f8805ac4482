/* The IPv6 path, first version (docs/ipv6.md): a program of its own, tail-called by the tc ingress
 * entries for IPv6 packets (tail.h). Per IPv6 TCP/UDP packet, as the IPv4 path (datapath.h):
 *   1. reply of a tracked flow (ct6 reply entry) -> source rewritten to the frontend;
 *   2. tracked flow from a client (ct6 forward entry, alive) -> DNAT to its backend;
 *   3. new flow to a frontend (bpx_svc6_v1) -> backend chosen (ClientIP affinity, else Maglev or a
 *      random slot), tracked, DNAT.
 * Anything else passes untouched. Every packet goes up the stack (no FIB redirect): a client's packet is
 * DNATed at tc ingress, a reply gets the frontend as its source at tc egress (bpx_handle6_egress), as
 * IPv4's stack path does (fib.h). A fragment takes the same path with the ports of its datagram's
 * first fragment (frag6.h); an ICMPv6 error about a translated flow is translated back (icmp6.h).
 * A packet neither to nor from a frontend or backend skips every lookup (prefilter6.h).
 * Not yet: XDP. Counted in the IPv4 path's counters (counters.h), by the same reasons, and per frontend
 * and backend in IPv4's arrays (fecount6.h). */
#ifndef BPX_DATAPATH6_H
#define BPX_DATAPATH6_H
#include "common.h"
#include "ctx.h"
#include "config.h"
#include "counters.h"
#include "lb.h"
#include "lb6.h"
#include "conntrack.h"
#include "conntrack6.h"
#include "affinity6.h"
#include "maglev6.h"
#include "fecount6.h"
#include "frag6.h"
#include "icmp6.h"
#include "ipv6.h"
#include "nat6.h"
#include "prefilter6.h"
#include "reject6.h"
#include "scope.h"
#include "srcrange6.h"
#include "tail.h"

#ifdef BPX_CTX_XDP
#error "the IPv6 path is tc only"
#endif

#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline __u64 bpx6_now(void)
{
	return bpf_ktime_get_coarse_ns(); /* the IPv4 path's clock (datapath.h bpx_now) */
}

/* UDP over IPv6 must carry a checksum (RFC 8200 8.1): a computed zero is sent as 0xffff. */
static __always_inline __u64 nat6_l4_csum_flags(const struct bpx_pkt6 *pkt)
{
	return pkt6_is_tcp(pkt) ? 0 : BPF_F_MARK_MANGLED_0;
}

/* Rewrites one address (source or destination, at `addr_off`) and one port (at `port_off`) of the
 * packet, fixing the L4 checksum: the address is in the IPv6 pseudo header, so its 16-byte change
 * (bpf_csum_diff) is applied with BPF_F_PSEUDO_HDR (right for every skb->ip_summed state, nat.h),
 * the port as a plain L4 change. IPv6 has no header checksum. Bytes are stored without
 * BPF_F_RECOMPUTE_CSUM: the checksum field's update balances them (nat.h). */
static __always_inline int nat6_rewrite(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt, __u32 addr_off,
                                        const union bpx_v6addr *from, const union bpx_v6addr *to, __u32 port_off,
                                        __be16 from_port, __be16 to_port)
{
	__u64 flags = nat6_l4_csum_flags(pkt);
	__s64 diff;

	/* A later fragment: no L4 header here (its first fragment's checksum covers the datagram). */
	if (pkt->frag & BPX_PKT6_F_LATER)
		return v6addr_equal(from, to) ? 0 : bpf_skb_store_bytes(ctx, addr_off, to, 16, 0);
	if (!v6addr_equal(from, to)) {
		diff = bpf_csum_diff((__be32 *)from->addr32, 16, (__be32 *)to->addr32, 16, 0);
		if (diff < 0 || bpf_l4_csum_replace(ctx, pkt6_l4_csum_off(pkt), 0, diff, flags | BPF_F_PSEUDO_HDR) < 0)
			return -1;
		if (bpf_skb_store_bytes(ctx, addr_off, to, 16, 0) < 0)
			return -1;
	}
	if (from_port != to_port) {
		if (bpf_l4_csum_replace(ctx, pkt6_l4_csum_off(pkt), from_port, to_port, flags | sizeof(to_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(ctx, port_off, &to_port, sizeof(to_port), 0) < 0)
			return -1;
	}
	return 0;
}

/* The TCP header fields conntrack follows (datapath.h ct_seg_load); zeroed for UDP. */
static __always_inline void ct6_seg_load(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt, struct bpx_tcp_seg *seg)
{
	struct {
		__be32 seq;
		__be32 ack_seq;
		__u8 doff; /* data offset in the high nibble */
	} h;

	__builtin_memset(seg, 0, sizeof(*seg));
	if (!pkt6_is_tcp(pkt) || (pkt->frag & BPX_PKT6_F_LATER) || ctx_load_bytes(ctx, pkt->l4_off + 4, &h, 9) < 0)
		return;
	ct_seg_fill(seg, bpf_ntohl(h.seq), bpf_ntohl(h.ack_seq), pkt->tcp_flags,
	            (__s32)pkt->l4_len - (__s32)(h.doff >> 4) * 4);
}

static __always_inline int bpx6_drop(struct __sk_buff *ctx, __u32 reason)
{
	bpx6_event(ctx, BPX_IP6_OFF, BPX_EV6_TR(BPX_EV_DROP, reason), 0, 0); /* monitor (events6.h) */
	bpx_count(ctx, reason);
	return TC_ACT_SHOT;
}

static __always_inline int bpx6_pass(struct __sk_buff *ctx, __u32 reason)
{
	bpx_count(ctx, reason);
	return TC_ACT_OK;
}

/* The pod source check (datapath.h pod_source_routed) for IPv6: the route back to the source leaves
 * through the interface the packet came in on (or its bridge). */
static __noinline bool pod6_source_routed(struct __sk_buff *ctx, const union bpx_v6addr *saddr,
                                          const union bpx_v6addr *daddr)
{
	struct bpf_fib_lookup p = {};
	long rc;

	p.family = AF_INET6;
	__builtin_memcpy(p.ipv6_src, daddr, 16);
	__builtin_memcpy(p.ipv6_dst, saddr, 16);
	p.ifindex = ctx->ifindex;
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return false;
	if (p.ifindex == ctx->ifindex)
		return true;
	__u32 port = ctx->ifindex;
	__u32 *bridge = bpf_map_lookup_elem(&bpx_bridge_ports_v1, &port);
	return bridge && *bridge == p.ifindex;
}

static __always_inline bool pod6_source_check(const int from)
{
	struct bpx_config *cfg;
	__u32 zero = 0;

	if (from != BPX_FROM_POD)
		return false;
	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	return cfg && (cfg->flags & BPX_CFG_F_POD_SOURCE_CHECK);
}

/* 1. Backend -> client, at tc egress: the source becomes the frontend the reply entry names. */
static __always_inline int reverse_translate6(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt,
                                              struct bpx_ct6_entry *reply, __u64 now)
{
	union bpx_v6addr fe_addr = reply->addr;
	__be16 fe_port = reply->port;
	__u8 flags;
	struct bpx_tcp_seg seg;
	bool ignored;

	ct6_seg_load(ctx, pkt, &seg);
	flags = ct_reply_state(pkt->proto) | ct_seg_state(ct6_state(reply), &seg, BPX_CT_DIR_REPLY, &ignored);
	if (unlikely(ignored))
		bpx_count(ctx, BPX_CTR_CT_RST_IGNORED);
	ct_entry_advance(ct6_state(reply), &seg);
	if (ct_entry_touch(ct6_state(reply), flags, now)) {
		struct bpx_ct6_entry *forward;
		struct bpx_ct6_key key;

		ct6_key_init(&key, &pkt->daddr, &fe_addr, pkt->dport, fe_port, pkt->proto, BPX_CT_DIR_FORWARD);
		forward = ct6_lookup(&key);
		if (forward && forward->backend_id == reply->backend_id)
			ct_entry_touch(ct6_state(forward), flags, now);
	}
	if (nat6_rewrite(ctx, pkt, BPX_IP6_SADDR_OFF, &pkt->saddr, &fe_addr, pkt->l4_off + BPX_L4_SPORT_OFF, pkt->sport,
	                 fe_port) < 0)
		return bpx6_drop(ctx, BPX_CTR_DROP_REWRITE);
	return bpx6_pass(ctx, BPX_CTR_REVERSE_TRANSLATED);
}

/* 2. Client -> frontend of a tracked flow: DNAT to the backend its forward entry names. */
static __always_inline int translate_tracked6(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt,
                                              const struct bpx_ct6_key *key, struct bpx_ct6_entry *forward, __u64 now)
{
	union bpx_v6addr be_addr = forward->addr;
	__be16 be_port = forward->port;
	struct bpx_ct6_entry *reply = NULL;
	struct bpx_ct6_key reply_key;
	struct bpx_tcp_seg seg;
	bool ignored, looked = false;
	__u8 flags;

	ct6_seg_load(ctx, pkt, &seg);
	flags = ct_seg_state(ct6_state(forward), &seg, BPX_CT_DIR_FORWARD, &ignored);
	if (unlikely(ignored))
		bpx_count(ctx, BPX_CTR_CT_RST_IGNORED);
	ct6_key_init(&reply_key, &be_addr, &pkt->saddr, be_port, pkt->sport, pkt->proto, BPX_CT_DIR_REPLY);
	/* Answered, not yet established: this ACK may establish it (datapath.h ct_forward_touch). */
	if ((forward->flags & (BPX_CT_F_REPLIED | BPX_CT_F_SEEN_REPLY)) == BPX_CT_F_REPLIED) {
		reply = ct6_lookup(&reply_key);
		looked = true;
		flags |= ct_seg_establishes(ct6_state(forward), reply ? ct6_state(reply) : NULL, &seg);
	}
	ct_entry_advance(ct6_state(forward), &seg);
	if (ct_entry_touch(ct6_state(forward), flags, now)) {
		if (!looked)
			reply = ct6_lookup(&reply_key);
		if (reply && reply->backend_id == forward->backend_id)
			ct_entry_touch(ct6_state(reply), flags, now);
	}
	fe_count_est(ctx, forward->rev_nat_id, forward->backend_id);
	if (nat6_rewrite(ctx, pkt, BPX_IP6_DADDR_OFF, &pkt->daddr, &be_addr, pkt->l4_off + BPX_L4_DPORT_OFF, pkt->dport,
	                 be_port) < 0)
		return bpx6_drop(ctx, BPX_CTR_DROP_REWRITE);
	return bpx6_pass(ctx, BPX_CTR_TRANSLATED_EST);
}

/* Whether a new flow to `svc` is masqueraded (datapath.h needs_masquerade): a client reaching
 * itself (hairpin), a Service that always is, traffic from outside the cluster with a local-traffic
 * detector, or masqueradeAll. */
static __always_inline bool needs_masquerade6(const struct bpx_svc_value *svc, const union bpx_v6addr *saddr,
                                              const union bpx_v6addr *be_addr, __u8 scope)
{
	struct bpx_config *cfg;
	__u32 zero = 0, flags;

	if (v6addr_equal(saddr, be_addr) || (svc->flags & BPX_SVC_F_MASQUERADE))
		return true;
	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	flags = cfg ? cfg->flags : 0;
	if ((svc->flags & BPX_SVC_F_MASQ_OUTSIDE) && scope == BPX_SCOPE_EXTERNAL && (flags & BPX_CFG_F_DETECT_LOCAL))
		return true;
	return flags & BPX_CFG_F_MASQUERADE_ALL;
}

/* A backend's reply to a masqueraded flow (backend -> node address, allocated port), at tc ingress:
 * the destination becomes the client again, so the stack forwards it as the reply of the flow it
 * saw (client -> backend); tc egress then restores the frontend (reverse_translate6). Only while
 * the client's forward entry still names this port (the port may have been taken over). Counted
 * at egress. A subprogram: its locals stay off the caller's frame (the combined stack limit). */
static __noinline int reverse_masquerade6(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt,
                                          const struct bpx_nat6_entry *ne)
{
	union bpx_v6addr client = ne->addr;
	__be16 client_port = ne->port;
	struct bpx_nat6_entry *fwd;
	struct bpx_ct6_key key;

	ct6_key_init(&key, &client, &pkt->saddr, client_port, pkt->sport, pkt->proto, BPX_CT_DIR_FORWARD);
	fwd = nat6_lookup(&key);
	if (!fwd || fwd->port != pkt->dport || fwd->backend_id != ne->backend_id ||
	    !v6addr_equal(&fwd->addr, &pkt->daddr))
		return bpx6_drop(ctx, BPX_CTR_DROP_NAT_NOT_OWNER);
	if (nat6_rewrite(ctx, pkt, BPX_IP6_DADDR_OFF, &pkt->daddr, &client, pkt->l4_off + BPX_L4_DPORT_OFF, pkt->dport,
	                 client_port) < 0)
		return bpx6_drop(ctx, BPX_CTR_DROP_REWRITE);
	return TC_ACT_OK;
}

/* The packet, to a frontend, is answered with a reject (reject6.h) sent back out of the interface it
 * came in on, as IPv4's reject_no_backend/reject_untracked (datapath.h): `reason` counts a reply
 * sent (REJECT_NO_BACKEND, REJECT_MAP_FULL, REJECT_NO_CONNTRACK), `why` the frontend `id`'s slot
 * (fecount.h). An RST is never answered and takes no token. */
static __always_inline int reject6(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt, __u32 id, __u32 reason, __u32 why)
{
	enum bpx_reject_result r;

	if (!(pkt->tcp_flags & BPX_TCP_RST) && !reject6_allowed(&pkt->saddr)) {
		fe_note_drop(id, BPX_FE_DROP_REJECT_SUPPRESSED);
		return bpx6_drop(ctx, BPX_CTR_REJECT_SUPPRESSED);
	}
	fe_note_drop(id, why);
	r = pkt6_is_tcp(pkt) ? reject6_tcp_rst(ctx, pkt) : reject6_udp_port_unreachable(ctx, pkt);
	switch (r) {
	case BPX_REJECT_SENT:
		bpx6_event_rejected(ctx, id, reason); /* monitor (events6.h) */
		bpx_count(ctx, reason);
		return bpf_redirect(ctx->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx6_drop(ctx, reason);
	case BPX_REJECT_MALFORMED:
		return bpx6_drop(ctx, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx6_drop(ctx, BPX_CTR_DROP_REJECT_FAILED);
	}
}

/* Drops a frontend's packet: per frontend (`why`, fecount.h) and globally (`reason`). */
static __always_inline int fe6_drop(struct __sk_buff *ctx, __u32 id, __u32 why, __u32 reason)
{
	fe_note_drop(id, why);
	return bpx6_drop(ctx, reason);
}

/* The backend id a new flow to `svc` (with backends) goes to, 0 when none can be had: the client's
 * ClientIP affinity entry while it names a backend the frontend still has (bpx_affinity_match_v1, as
 * IPv4's), else the frontend's Maglev table, else a random backend slot (also when a table is missing:
 * a usable backend beats none). The affinity entry is written here, before the masquerade may still
 * drop the flow (IPv4 writes it after): a subprogram, so that its keys stay off the program's frame,
 * which with nat6_create's is at the 512-byte combined stack limit. */
static __noinline __u32 lb6_choose(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt, struct bpx_svc6_key *svc_key,
                                   const struct bpx_svc_value *svc, __u64 now)
{
	__u32 rev_nat_id = svc->rev_nat_id, backend_id = 0;
	struct bpx_svc_value *slot;
	bool affinity = svc_has_affinity(svc), hit = false;

	if (affinity && affinity6_lookup(&pkt->saddr, rev_nat_id, svc->affinity_timeout, now, &backend_id) &&
	    affinity_backend_is_member(backend_id, rev_nat_id, svc_key->scope))
		hit = lb6_lookup_backend(backend_id) != NULL;
	if (!hit && svc_uses_maglev(svc)) {
		backend_id =
		        maglev_backend(rev_nat_id, svc_key->scope,
		                       maglev_flow_hash6(&pkt->saddr, &pkt->daddr, pkt->sport, pkt->dport, pkt->proto));
		if (backend_id && !lb6_lookup_backend(backend_id))
			backend_id = 0;
	} else if (!hit) {
		backend_id = 0;
	}
	if (!hit && !backend_id) {
		slot = lb6_select_slot(svc_key, svc);
		if (!slot)
			return 0;
		backend_id = slot->backend_id;
	}
	if (hit)
		bpx_count(ctx, BPX_CTR_AFFINITY_HIT);
	if (affinity)
		affinity6_update(&pkt->saddr, rev_nat_id, backend_id, now);
	return backend_id;
}

/* 3. Client -> frontend, not tracked: a backend chosen by lb6_choose. Only a SYN or a UDP datagram
 * starts a flow. A frontend without backends is rejected (TCP RST, ICMPv6 port unreachable), as is a TCP
 * segment of an unknown flow (RST), as IPv4 does; Maglev's mid-stream pick-up is not here yet. */
static __always_inline int translate_new6(struct __sk_buff *ctx, const struct bpx_pkt6 *pkt,
                                          const struct bpx_ct6_key *key, __u8 scope, __u64 now, const int from)
{
	struct bpx_svc6_key svc_key = {.address = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct bpx_svc_value *svc;
	struct bpx_backend6 *backend;
	union bpx_v6addr be_addr;
	struct bpx_tcp_seg seg;
	__u32 backend_id, rev_nat_id;
	__be16 be_port;
	__u8 ct_flags;
	bool ignored;

	svc = lb6_lookup_service(&svc_key, scope);
	if (!svc)
		return bpx6_pass(ctx, BPX_CTR_NOT_SERVICE);
	rev_nat_id = svc->rev_nat_id;
	if ((svc->flags & BPX_SVC_F_SOURCE_RANGES) && !srcrange6_allows(rev_nat_id, &pkt->saddr))
		return fe6_drop(ctx, rev_nat_id, BPX_FE_DROP_SOURCE_RANGE, BPX_CTR_DROP_SOURCE_RANGE);
	if (!svc_has_backends(svc) && svc_drops_when_empty(svc))
		return fe6_drop(ctx, rev_nat_id, BPX_FE_DROP_NO_LOCAL_BACKEND, BPX_CTR_DROP_NO_LOCAL_BACKEND);
	/* One call for both rejects: the verifier walks the reply builders once. A fragment's headers do
	 * not describe the datagram: no reply is built from them (IPv4's drop_fragment). */
	if (!svc_has_backends(svc) || (pkt6_is_tcp(pkt) && !pkt6_opens_connection(pkt))) {
		if (unlikely(pkt->frag))
			return bpx6_drop(ctx, BPX_CTR_DROP_FRAGMENT);
		return reject6(ctx, pkt, rev_nat_id,
		               svc_has_backends(svc) ? BPX_CTR_REJECT_NO_CONNTRACK
		               : svc_map_full(svc)   ? BPX_CTR_REJECT_MAP_FULL
		                                     : BPX_CTR_REJECT_NO_BACKEND,
		               svc_has_backends(svc) ? BPX_FE_DROP_NO_CONNTRACK
		               : svc_map_full(svc)   ? BPX_FE_DROP_MAP_FULL
		                                     : BPX_FE_DROP_NO_BACKEND);
	}
	backend_id = lb6_choose(ctx, pkt, &svc_key, svc, now);
	backend = backend_id ? lb6_lookup_backend(backend_id) : NULL;
	if (!backend)
		return bpx6_drop(ctx, BPX_CTR_DROP_NO_BACKEND_ENTRY);
	be_addr = backend->address;
	be_port = backend->port;

	/* The masquerade's entries first: a flow whose replies could not come back is not started. */
	if (needs_masquerade6(svc, &pkt->saddr, &be_addr, scope)) {
		struct bpx_nat6_config *n6 = nat6_config();
		__be16 nat_port;

		if (!n6 || v6addr_is_zero(&n6->masq_addr))
			return fe6_drop(ctx, rev_nat_id, BPX_FE_DROP_SNAT_EXHAUSTED, BPX_CTR_DROP_SNAT_EXHAUSTED);
		/* A backend at the node's own address answers the client directly. */
		if (v6addr_equal(&be_addr, &n6->masq_addr))
			nat6_forget(key, &be_addr, be_port);
		else if (nat6_create(key, &n6->masq_addr, backend, backend_id, &nat_port) < 0)
			return fe6_drop(ctx, rev_nat_id, BPX_FE_DROP_SNAT_EXHAUSTED, BPX_CTR_DROP_SNAT_EXHAUSTED);
	} else {
		nat6_forget(key, &be_addr, be_port);
	}

	ct6_seg_load(ctx, pkt, &seg);
	ct_flags = ct_seg_state(NULL, &seg, BPX_CT_DIR_FORWARD, &ignored);
	/* A full table only costs stickiness: the next packet chooses again. */
	ct6_create(key, &be_addr, be_port, backend_id, rev_nat_id, ct_flags,
	           from == BPX_FROM_POD && ctx->ifindex <= 0xffff ? ctx->ifindex : 0, &seg, now);
	fe6_count_new(ctx, rev_nat_id, backend_id);
	if (nat6_rewrite(ctx, pkt, BPX_IP6_DADDR_OFF, &pkt->daddr, &be_addr, pkt->l4_off + BPX_L4_DPORT_OFF, pkt->dport,
	                 be_port) < 0)
		return bpx6_drop(ctx, BPX_CTR_DROP_REWRITE);
	return bpx6_pass(ctx, BPX_CTR_TRANSLATED_NEW);
}

/* Not TCP/UDP: an ICMPv6 error about a translated flow is translated back (icmp6.h), in a program of
 * its own (bpx_v6_icmp*, tail.h). One about a flow this hook has nothing to undo for passes uncounted:
 * the other hook may (an error about a DNATed packet is translated at egress only). Counted
 * icmp_translated at each hook that rewrites it. */
static __always_inline int bpx_not_l4_6(struct __sk_buff *ctx, const bool egress)
{
	__u8 next;

	if (ctx_load_bytes(ctx, BPX_IP6_OFF + offsetof(struct ipv6hdr, nexthdr), &next, sizeof(next)) == 0 &&
	    next == BPX_NEXTHDR_ICMP6)
		tail_call_icmp6(ctx, egress);
	return TC_ACT_OK;
}

/* The tail-called ICMPv6 program (bpx_v6_icmp, bpx_v6_icmp_l3); the caller's hook is in cb. */
static __always_inline int bpx_handle6_icmp(struct __sk_buff *ctx)
{
	switch (icmp6_error_translate(ctx, ctx->cb[BPX_CB_ICMP6_EGRESS] != 0)) {
	case BPX_ICMP_TRANSLATED:
		return bpx6_pass(ctx, BPX_CTR_ICMP_TRANSLATED);
	case BPX_ICMP_FAILED:
		return bpx6_drop_unreported(ctx, BPX_CTR_DROP_REWRITE);
	case BPX_ICMP_NOT_OWNER:
		return bpx6_drop_unreported(ctx, BPX_CTR_DROP_NAT_NOT_OWNER);
	default:
		return TC_ACT_OK;
	}
}

static __always_inline int bpx_handle6(struct __sk_buff *ctx, const int from)
{
	struct bpx_ct6_entry *entry;
	struct bpx_ct6_key key;
	struct bpx_pkt6 pkt;
	__u64 now;

	if (pkt6_parse(ctx, &pkt) != BPX_PARSE_OK)
		return bpx_not_l4_6(ctx, false);
	if (unlikely(pkt.frag)) {
		/* A first fragment records its ports (state): its source is checked first. */
		if (pod6_source_check(from) && !pod6_source_routed(ctx, &pkt.saddr, &pkt.daddr))
			return bpx6_drop(ctx, BPX_CTR_DROP_POD_SOURCE);
		if (!frag6_ports(&pkt))
			return bpx6_pass(ctx, BPX_CTR_FRAGMENT_NO_ENTRY);
	}
	/* Illegal over IPv6 (RFC 8200 8.1: receivers discard it); a CHECKSUM_PARTIAL packet's field holds
	 * its pseudo-header sum, never zero. Nothing to translate it with. */
	if (!pkt6_is_tcp(&pkt) && !pkt.l4_csum && !(pkt.frag & BPX_PKT6_F_LATER))
		return bpx6_drop(ctx, BPX_CTR_DROP_MALFORMED);
	/* Not to a frontend or backend, not from a backend: nothing below can match. */
	if (!prefilter6_match(&pkt))
		return bpx6_pass(ctx, BPX_CTR_NOT_SERVICE);
	now = bpx6_now();

	ct6_key_init(&key, &pkt.saddr, &pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_FORWARD);
	entry = ct6_lookup(&key);
	/* Everything below may create or change state: a pod may only speak for itself. A flow whose
	 * first packet passed the check on this interface skips it (datapath.h pod_source_known_flow). */
	if (pod6_source_check(from) && !(entry && entry->src_ifindex && entry->src_ifindex == ctx->ifindex) &&
	    !pod6_source_routed(ctx, &pkt.saddr, &pkt.daddr))
		return bpx6_drop(ctx, BPX_CTR_DROP_POD_SOURCE);
	if (!entry) {
		struct bpx_ct6_entry *reply;

		key.dir = BPX_CT_DIR_REPLY;
		reply = ct6_lookup(&key);
		key.dir = BPX_CT_DIR_FORWARD;
		/* The stack forwards it as the backend sent it, so netfilter's conntrack sees one flow client <->
		 * backend (kube-proxy's FORWARD drops ctstate INVALID: a SYN-ACK from the frontend would be);
		 * tc egress restores the frontend (bpx_handle6_egress), as for IPv4 (fib.h). */
		if (reply)
			return TC_ACT_OK;
		/* A reply to a masqueraded flow, to the node address and the port it was given. */
		key.dir = BPX_CT_DIR_REPLY;
		struct bpx_nat6_entry *ne = nat6_lookup(&key);

		key.dir = BPX_CT_DIR_FORWARD;
		if (ne)
			return reverse_masquerade6(ctx, &pkt, ne);
	}
	/* A SYN reusing the tuple of a flow that got an answer (or is closing) chooses again. */
	if (entry && !(pkt6_opens_connection(&pkt) && ct_entry_has_concluded(ct6_state(entry))) &&
	    !ct_entry_is_expired(ct6_state(entry), pkt.proto, now))
		return translate_tracked6(ctx, &pkt, &key, entry, now);

	/* IPv6 cluster CIDRs are not configured yet: a pod's traffic is internal, any other external. */
	return translate_new6(ctx, &pkt, &key, from == BPX_FROM_POD ? BPX_SCOPE_INTERNAL : BPX_SCOPE_EXTERNAL, now,
	                      from);
}

/* tc egress: a reply of a tracked flow, forwarded by the stack as the backend sent it, gets the
 * frontend as its source. Anything else passes uncounted. */
static __always_inline int bpx_handle6_egress(struct __sk_buff *ctx)
{
	struct bpx_ct6_entry *reply;
	struct bpx_ct6_key key;
	struct bpx_pkt6 pkt;

	if (pkt6_parse(ctx, &pkt) != BPX_PARSE_OK)
		return bpx_not_l4_6(ctx, true);
	if (unlikely(pkt.frag) && !frag6_ports(&pkt))
		return TC_ACT_OK;
	if ((!pkt6_is_tcp(&pkt) && !pkt.l4_csum && !(pkt.frag & BPX_PKT6_F_LATER)) || !prefilter6_match(&pkt))
		return TC_ACT_OK;
	ct6_key_init(&key, &pkt.saddr, &pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_REPLY);
	reply = ct6_lookup(&key);
	if (reply)
		return reverse_translate6(ctx, &pkt, reply, bpx6_now());
	/* A masqueraded flow on its way to the backend: the node address and the flow's port as source. */
	key.dir = BPX_CT_DIR_FORWARD;
	struct bpx_nat6_entry *ne = nat6_lookup(&key);
	if (!ne)
		return TC_ACT_OK;
	union bpx_v6addr masq = ne->addr;

	if (nat6_rewrite(ctx, &pkt, BPX_IP6_SADDR_OFF, &pkt.saddr, &masq, pkt.l4_off + BPX_L4_SPORT_OFF, pkt.sport,
	                 ne->port) < 0)
		return bpx6_drop(ctx, BPX_CTR_DROP_REWRITE);
	return TC_ACT_OK;
}

#endif
