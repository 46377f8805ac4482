/* Delivery of translated packets without the host stack: a FIB lookup picks the egress
 * interface and next hop, the packet is redirected there with the neighbour's MAC.
 *
 * tc (after the rewrite): through bpf_redirect_neigh when the kernel has no neighbour entry
 * yet. This is what keeps replies whose source is a node address from being dropped as
 * martians on a pod interface, and keeps half-translated flows out of netfilter's conntrack
 * (INVALID). When the destination is local, or the lookup cannot say, the packet goes up the
 * stack.
 *
 * XDP (before anything is written): the next hop must be known, neighbour resolved, the TTL
 * above 1, the frame within the egress MTU, and the egress device one known to take XDP frames
 * (bpx_xdp_devs_v1), else the packet is passed to tc untouched and with no state changed, and tc
 * handles it exactly as without XDP. A native XDP_REDIRECT (or XDP_TX) to a device that cannot
 * transmit XDP frames drops them: bridges, vxlan and other tunnels have no ndo_xdp_xmit, a veth
 * takes them only when its peer runs XDP or has GRO on (NAPI), a NIC only with XDP resources
 * (an XDP program) set up. Which devices qualify is the daemon's call (src/dataplane/xdp-devs.ts). */
#ifndef BPX_FIB_H
#define BPX_FIB_H
#include <stdbool.h>
#include "common.h"
#include "ctx.h"
#include "parse.h"
#include "snat.h"
#include "counters.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define BPX_IP_TTL_OFF (BPX_IP_OFF + offsetof(struct iphdr, ttl))
#define BPX_IP_CHECK_OFF (BPX_IP_OFF + offsetof(struct iphdr, check))

#define BPX_MAX_XDP_DEVS 256

/* Devices XDP may send translated packets to (back out of the device they came in on, or to
 * another), written by the daemon; key and value: ifindex. The kernel removes a device's entry
 * when the device goes away. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, BPX_MAX_XDP_DEVS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_xdp_devs_v1 BPX_MAPS;

/* Where a packet goes once translated: XDP looks it up before committing to the packet. */
struct bpx_next_hop {
#ifdef BPX_CTX_XDP
	struct bpf_fib_lookup fib;
#else
	__u32 unused; /* tc looks the next hop up after the rewrite (fib_redirect) */
#endif
};

/* Forwarding decrements the TTL (RFC 1812 5.3.1); at 1 the stack answers with ICMP. */
static __always_inline int fib_dec_ttl(struct __ctx_buff *ctx)
{
	__u8 ttl;

	if (ctx_load_bytes(ctx, BPX_IP_TTL_OFF, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	/* TTL is the high byte of its 16-bit checksum word. */
	if (ctx_l3_csum_replace(ctx, BPX_IP_CHECK_OFF, bpf_htons((__u16)ttl << 8), bpf_htons((__u16)(ttl - 1) << 8),
	                        2) < 0)
		return -1;
	ttl--;
	return ctx_store_bytes(ctx, BPX_IP_TTL_OFF, &ttl, 1);
}

/* Writes the next hop's MACs into the Ethernet header. */
static __always_inline int fib_set_macs(struct __ctx_buff *ctx, const struct bpf_fib_lookup *p)
{
	__u8 macs[2 * ETH_ALEN];

	__builtin_memcpy(macs, p->dmac, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, p->smac, ETH_ALEN);
	return ctx_store_bytes(ctx, 0, macs, sizeof(macs));
}

#ifdef BPX_CTX_XDP
/* True when XDP can send the packet, translated to saddr -> daddr, itself; fills nh. */
static __always_inline bool deliver_prepare(struct __ctx_buff *ctx, struct bpx_next_hop *nh, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup *p = &nh->fib;
	struct bpx_nat_config *cfg = nat_config();
	struct iphdr *ip = ctx_ptr(ctx, BPX_IP_OFF, sizeof(*ip));

	if (!ip || !cfg || !(cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT) || ip->ttl <= 1)
		return false;
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->ipv4_src = saddr;
	p->ipv4_dst = daddr;
	p->ifindex = ctx->ingress_ifindex;
	/* With the length the lookup checks the route's MTU: a frame too big goes to tc and
	 * the stack, which answers "fragmentation needed". */
	p->tot_len = bpf_ntohs(ip->tot_len);
	if (bpf_fib_lookup(ctx, p, sizeof(*p), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return false;
	if (!bpf_map_lookup_elem(&bpx_xdp_devs_v1, &p->ifindex)) {
		bpx_count(ctx, BPX_CTR_XDP_PASS_NO_XMIT);
		return false;
	}
	return true;
}

/* The translated packet leaves through the next hop deliver_prepare found. */
static __always_inline int fib_deliver(struct __ctx_buff *ctx, const struct bpx_next_hop *nh, __be32 saddr,
                                       __be32 daddr)
{
	if (fib_dec_ttl(ctx) < 0 || fib_set_macs(ctx, &nh->fib) < 0)
		return XDP_DROP; /* cannot happen: deliver_prepare read the same header */
	/* Back out of the device it came in on through the DEVMAP too, not XDP_TX: a veth's XDP_TX
	 * wakes its peer only when the peer runs XDP itself, so with a GRO-only peer the frames
	 * waited for the next packet (seen in the lab); ndo_xdp_xmit with a flush does not wait. */
	bpx_count(ctx, nh->fib.ifindex == ctx->ingress_ifindex ? BPX_CTR_XDP_TX : BPX_CTR_XDP_REDIRECT);
	return bpf_redirect_map(&bpx_xdp_devs_v1, nh->fib.ifindex, 0);
}
#else
static __always_inline bool deliver_prepare(struct __ctx_buff *ctx, struct bpx_next_hop *nh, __be32 saddr, __be32 daddr)
{
	return true;
}

/* The lookup checks a GSO packet's total length only, never its segments: one whose
 * segments exceed the egress MTU (a smaller hop) must take the stack, which answers
 * "fragmentation needed" (path-MTU discovery) instead of a silent loss further on. */
static __always_inline bool fib_segments_too_big(struct __sk_buff *skb, __u32 ifindex)
{
	__u32 mtu_len = 0;

	return skb->gso_size && bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS;
}

/* TC_ACT_REDIRECT when the packet was handed to its egress interface, TC_ACT_OK when it
 * must take the stack (local destination, no route, TTL expiring, too big for the egress
 * MTU, helper failure). */
static __always_inline int fib_redirect(struct __sk_buff *skb, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup p = {};
	long rc;

	p.family = AF_INET;
	p.ipv4_src = saddr;
	p.ipv4_dst = daddr;
	p.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (fib_segments_too_big(skb, p.ifindex) || fib_dec_ttl(skb) < 0)
			return TC_ACT_OK;
		if (fib_set_macs(skb, &p) < 0)
			return TC_ACT_OK;
		return bpf_redirect(p.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = p.ipv4_dst};

		if (fib_segments_too_big(skb, p.ifindex) || fib_dec_ttl(skb) < 0)
			return TC_ACT_OK;
		return bpf_redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
	}
	return TC_ACT_OK;
}

/* From an L3 device (no link-layer header, parse.h BPX_L3_DEV): as fib_redirect, but the packet
 * first gets an Ethernet header (as Cilium's add_l2_hdr), which bpf_redirect to an Ethernet
 * device and bpf_redirect_neigh need; toward another L3 device the kernel strips it again.
 * The stack cannot take such a packet once masqueraded: its source is a node address, a martian
 * on input. */
static __always_inline int fib_redirect_l3(struct __sk_buff *skb, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup p = {};
	struct ethhdr eth = {.h_proto = bpf_htons(ETH_P_IP)};
	long rc;

	p.family = AF_INET;
	p.ipv4_src = saddr;
	p.ipv4_dst = daddr;
	p.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (fib_segments_too_big(skb, p.ifindex) || fib_dec_ttl(skb) < 0)
		return TC_ACT_OK;
	__builtin_memcpy(eth.h_dest, p.dmac, ETH_ALEN);
	__builtin_memcpy(eth.h_source, p.smac, ETH_ALEN);
	if (bpf_skb_change_head(skb, sizeof(eth), 0) < 0 || bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0)
		return TC_ACT_SHOT; /* the packet may be half rewritten */
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = p.ipv4_dst};

		return bpf_redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect(p.ifindex, 0);
}

/* A translated packet is delivered past the host stack when the daemon asked for it, else
 * goes up the stack. */
static __always_inline int fib_deliver(struct __ctx_buff *ctx, const struct bpx_next_hop *nh, __be32 saddr,
                                       __be32 daddr)
{
	struct bpx_nat_config *cfg = nat_config();

	if (cfg && (cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT))
		return BPX_ETH_HLEN ? fib_redirect(ctx, saddr, daddr) : fib_redirect_l3(ctx, saddr, daddr);
	return TC_ACT_OK;
}
#endif

#endif
