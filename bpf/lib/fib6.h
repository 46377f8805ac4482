/* Delivery of translated IPv6 packets at tc (datapath6.h): IPv4's two modes (fib.h), for IPv6.
 *
 * The stack (the default): only the client's DNAT (and a masqueraded reply's restored client) is written
 * at ingress; the masquerade and the frontend as a reply's source are written at tc egress
 * (bpx_handle6_egress), so netfilter's conntrack sees one flow client <-> backend both ways.
 *
 * Bypass (BPX_NAT_CFG_F_FIB_REDIRECT, `bypassNetfilter`): a FIB lookup for the translated addresses picks
 * the egress device and next hop; the packet is then translated completely at ingress (masquerade and
 * frontend too), its hop limit decremented as a router's (RFC 8200 3), and sent with bpf_redirect_neigh,
 * past netfilter. Where IPv4 falls back to the stack, so does IPv6: a hop limit of 1 or less (the stack
 * answers "time exceeded", RFC 4443 3.3), a local destination, no route or a prohibited one, a packet (or
 * GSO segments) too big for the egress device (the stack answers "packet too big", RFC 4443 3.2: IPv6
 * routers never fragment). ICMPv6 errors keep the stack path in both modes (icmp6.h), and so do L3
 * devices' packets (parse.h BPX_L3_DEV; IPv4 redirects them with an Ethernet header pushed first): on 6.1
 * the redirect took bpx_v6_from_l3dev past its verifier budget. */
#ifndef BPX_FIB6_H
#define BPX_FIB6_H
#include <stdbool.h>
#include "common.h"
#include "ctx.h"
#include "ipv6.h"
#include "snat.h"

#ifndef AF_INET6
#define AF_INET6 10
#endif

/* The next hop a translated packet leaves by; ifindex 0: up the stack. Small on purpose: the callers'
 * frames share the 512-byte combined limit with nat6_create's (the lookup's 64 bytes stay in
 * fib6_prepare's frame). */
struct bpx_next_hop6 {
	union bpx_v6addr gw; /* the neighbour: the route's gateway, or the destination itself */
	__u32 ifindex;
	__u32 mark; /* bpx_nat_config.translated_mark (datapath.h mark_translated) */
};

/* Whether translated packets bypass the stack (a cheap test before the lookups only bypass needs). Never
 * on an L3 device (above): the redirect paths compile out of its program. */
static __always_inline bool fib6_bypass(void)
{
	struct bpx_nat_config *cfg = nat_config();

	return BPX_ETH_HLEN && cfg && (cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT);
}

/* Fills nh for the packet translated to saddr -> daddr: a device and next hop in bypass when the
 * lookup can send it (the neighbour may be unresolved: bpf_redirect_neigh resolves it), else ifindex
 * 0 (the stack). Inline in subprograms of the callers (their frames share the 512-byte limit). */
static __always_inline int fib6_prepare(struct __sk_buff *ctx, struct bpx_next_hop6 *nh, const union bpx_v6addr *saddr,
                                        const union bpx_v6addr *daddr)
{
	struct bpx_nat_config *cfg = nat_config();
	struct bpf_fib_lookup p;
	__u32 mtu_len = 0;
	__be32 first;
	__u8 hop;
	long rc;

	nh->ifindex = 0;
	nh->mark = cfg ? cfg->translated_mark : 0;
	if (!BPX_ETH_HLEN || !cfg || !(cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT))
		return 0;
	if (ctx_load_bytes(ctx, BPX_IP6_OFF, &first, sizeof(first)) < 0 ||
	    ctx_load_bytes(ctx, BPX_IP6_OFF + offsetof(struct ipv6hdr, hop_limit), &hop, 1) < 0 || hop <= 1)
		return 0;
	__builtin_memset(&p, 0, sizeof(p));
	p.family = AF_INET6;
	/* The flow label, for a multipath route's hash as the stack's. */
	p.flowinfo = first & bpf_htonl(0x000fffff);
	__builtin_memcpy(p.ipv6_src, saddr, 16);
	__builtin_memcpy(p.ipv6_dst, daddr, 16);
	p.ifindex = ctx->ifindex;
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0; /* local, no route, prohibited: the stack delivers or answers */
	/* The device's MTU, for the whole packet or a GSO packet's segments (fib.h fib_too_big). */
	if (bpf_check_mtu(ctx, p.ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS)
		return 0;
	__builtin_memcpy(&nh->gw, p.ipv6_dst, 16);
	nh->ifindex = p.ifindex;
	return 0;
}

/* Sends the translated packet to nh (ifindex set): hop limit decremented (in no checksum: IPv6 has no
 * header checksum and the pseudo header leaves it out; BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE
 * packet's sum right), marked, then redirected. */
static __always_inline int fib6_deliver(struct __sk_buff *ctx, const struct bpx_next_hop6 *nh)
{
	__u8 hop;

	if (ctx_load_bytes(ctx, BPX_IP6_OFF + offsetof(struct ipv6hdr, hop_limit), &hop, 1) < 0)
		return TC_ACT_SHOT;
	hop--; /* fib6_prepare read it above 1 */
	if (bpf_skb_store_bytes(ctx, BPX_IP6_OFF + offsetof(struct ipv6hdr, hop_limit), &hop, 1, BPF_F_RECOMPUTE_CSUM) <
	    0)
		return TC_ACT_SHOT;
	/* Translated completely: tc egress skips it (datapath.h mark_translated). */
	if (nh->mark)
		ctx->mark |= nh->mark;
	{
		struct bpf_redir_neigh neigh = {.nh_family = AF_INET6};

		__builtin_memcpy(neigh.ipv6_nh, &nh->gw, 16);
		return bpf_redirect_neigh(nh->ifindex, &neigh, sizeof(neigh), 0);
	}
}

#endif
