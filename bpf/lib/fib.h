/* Delivery of translated packets: up the host stack (the default) or past it (bypass).
 *
 * The stack (no BPX_NAT_CFG_F_FIB_REDIRECT, `bypassNetfilter: false`): tc hands a packet to the
 * stack the way kube-proxy's netfilter NAT does, so the FORWARD chain (NetworkPolicy of Calico's
 * iptables mode, kube-router), netfilter's conntrack and rp_filter see every Service packet:
 *   - a client's packet is only DNATed at ingress; masquerade (the source becomes a node
 *     address) is left to tc egress of the device it leaves by (bpx_handle_egress), as
 *     POSTROUTING's MASQUERADE is. A node address never enters ip_rcv as a source (martian).
 *   - a backend's answer only gets its destination restored at ingress (the masquerade
 *     undone, as netfilter's de-SNAT before routing); its source becomes the frontend at tc
 *     egress, as netfilter's de-DNAT in POSTROUTING. netfilter's conntrack sees one
 *     consistent flow client <-> backend in both directions.
 * The stack routes, decrements the TTL and answers for itself (time exceeded, fragmentation
 * needed, unreachable), about a packet whose source is the client's.
 *
 * Bypass (BPX_NAT_CFG_F_FIB_REDIRECT): a FIB lookup before anything is written picks the
 * egress interface and next hop, and the translated packet is redirected there with the
 * neighbour's MAC (bpf_redirect_neigh when the kernel has no neighbour entry yet). A packet
 * the lookup cannot send (local destination, no route, TTL expiring, too big for the egress
 * MTU, GSO segments too big) takes the stack path above instead, so the stack answers it or
 * delivers it, never as a martian. From an L3 device (parse.h BPX_L3_DEV) the same choice holds;
 * the redirect first pushes an Ethernet header, which bpf_redirect_neigh needs and replaces.
 *
 * XDP (before anything is written, bypass only): the next hop must be known, neighbour resolved, the TTL
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
#include "nat.h"
#include "counters.h"

#ifndef AF_INET
#define AF_INET 2
#endif

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
	struct bpf_fib_lookup fib;
#ifndef BPX_CTX_XDP
	__u8 how;   /* BPX_NH_* */
	__u32 mark; /* bpx_nat_config.translated_mark, read with the config fib_prepare reads anyway
	             * (datapath.h mark_translated): one config read per packet */
#endif
};

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

/* The translated packet leaves through the next hop deliver_prepare found; `ttl_done`: its
 * rewrite decremented the TTL already (nat_rewrite, deliver_decrements_ttl). */
static __always_inline int fib_deliver(struct __ctx_buff *ctx, const struct bpx_next_hop *nh, __be32 saddr,
                                       __be32 daddr, const bool ttl_done)
{
	if ((!ttl_done && nat_dec_ttl(ctx) < 0) || fib_set_macs(ctx, &nh->fib) < 0)
		return XDP_DROP; /* cannot happen: deliver_prepare read the same header */
	/* Back out of the device it came in on through the DEVMAP too, not XDP_TX: a veth's XDP_TX
	 * wakes its peer only when the peer runs XDP itself, so with a GRO-only peer the frames
	 * waited for the next packet (seen in the lab); ndo_xdp_xmit with a flush does not wait. */
	bpx_count(ctx, nh->fib.ifindex == ctx->ingress_ifindex ? BPX_CTR_XDP_TX : BPX_CTR_XDP_REDIRECT);
	return bpf_redirect_map(&bpx_xdp_devs_v1, nh->fib.ifindex, 0);
}

/* XDP sends what it translates itself (deliver_prepare) or leaves it to tc untouched. */
static __always_inline bool deliver_by_stack(const struct bpx_next_hop *nh)
{
	return false;
}

/* Past the stack: the rewrite decrements the TTL in its one store (nat_rewrite). */
static __always_inline bool deliver_decrements_ttl(const struct bpx_next_hop *nh)
{
	return true;
}
#else
/* tc: the packet is written, then sent as deliver_prepare decided. */
#define BPX_NH_STACK 0    /* up the stack, masquerade left to egress */
#define BPX_NH_REDIRECT 1 /* bpf_redirect_neigh to the next hop */

/* Too big for the egress MTU: the whole packet, or a GSO packet's segments (the lookup
 * checks neither for a GSO packet, nor anything when the neighbour is unknown). */
static __always_inline bool fib_too_big(struct __sk_buff *skb, __u32 ifindex)
{
	__u32 mtu_len = 0;

	return bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS;
}

/* Always true (tc finishes every packet); nh says how. Bypass (or `redirect`): redirect when
 * the lookup can send the translated packet saddr -> daddr, else the stack path. */
static __always_inline bool fib_prepare(struct __ctx_buff *ctx, struct bpx_next_hop *nh, __be32 saddr, __be32 daddr,
                                        bool redirect)
{
	struct bpf_fib_lookup *p = &nh->fib;
	struct bpx_nat_config *cfg = nat_config();
	long rc;
	__u8 ttl;

	nh->how = BPX_NH_STACK;
	nh->mark = cfg ? cfg->translated_mark : 0;
	if (!redirect && (!cfg || !(cfg->flags & BPX_NAT_CFG_F_FIB_REDIRECT)))
		return true;
	/* At 1 the stack answers "time exceeded" (RFC 1812 5.3.1) to the client. */
	if (ctx_load_bytes(ctx, BPX_IP_TTL_OFF, &ttl, 1) < 0 || ttl <= 1)
		return true;
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->ipv4_src = saddr;
	p->ipv4_dst = daddr;
	p->ifindex = ctx->ifindex;
	rc = bpf_fib_lookup(ctx, p, sizeof(*p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return true; /* local, no route, prohibited, too big: the stack delivers or answers */
	if (fib_too_big(ctx, p->ifindex))
		return true; /* the stack answers "fragmentation needed" (DF) or fragments */
	nh->how = BPX_NH_REDIRECT;
	return true;
}

static __always_inline bool deliver_prepare(struct __ctx_buff *ctx, struct bpx_next_hop *nh, __be32 saddr, __be32 daddr)
{
	return fib_prepare(ctx, nh, saddr, daddr, false);
}

/* An ICMP error translated at ingress may now come from the frontend (the backend's own error),
 * which the stack would drop as a martian (a node address) or fail rp_filter (a ClusterIP): it
 * is redirected whenever the lookup can send it, in both modes. */
static __always_inline bool deliver_prepare_icmp(struct __ctx_buff *ctx, struct bpx_next_hop *nh, __be32 saddr,
                                                 __be32 daddr)
{
	return fib_prepare(ctx, nh, saddr, daddr, true);
}

/* The packet keeps the client's source: masquerade is left to tc egress. */
static __always_inline bool deliver_by_stack(const struct bpx_next_hop *nh)
{
	return nh->how == BPX_NH_STACK;
}

/* Redirected past the stack, which would have decremented the TTL: the rewrite does it in
 * its one store (nat_rewrite). */
static __always_inline bool deliver_decrements_ttl(const struct bpx_next_hop *nh)
{
	return nh->how == BPX_NH_REDIRECT;
}

/* The translated packet leaves as deliver_prepare decided; `ttl_done`: its rewrite
 * decremented the TTL already (deliver_decrements_ttl). */
static __always_inline int fib_deliver(struct __ctx_buff *ctx, const struct bpx_next_hop *nh, __be32 saddr,
                                       __be32 daddr, const bool ttl_done)
{
	if (nh->how == BPX_NH_STACK)
		return TC_ACT_OK;
	/* deliver_prepare read the TTL above 1 */
	if (!ttl_done && nat_dec_ttl(ctx) < 0)
		return TC_ACT_SHOT;
	/* An L3 device's packet (parse.h BPX_L3_DEV) first gets an Ethernet header (as Cilium's
	 * add_l2_hdr): bpf_redirect_neigh takes a packet with one, strips it and writes the egress
	 * device's own (none toward another L3 device). */
	if (!BPX_ETH_HLEN) {
		struct ethhdr eth = {.h_proto = bpf_htons(ETH_P_IP)};

		if (bpf_skb_change_head(ctx, sizeof(eth), 0) < 0 ||
		    bpf_skb_store_bytes(ctx, 0, &eth, sizeof(eth), 0) < 0)
			return TC_ACT_SHOT; /* the TTL is written already */
	}
	/* One way whether the neighbour is known or not (the kernel resolves it): a second
	 * (bpf_redirect with the MACs written here) doubled every path the verifier walks. */
	{
		struct bpf_redir_neigh neigh = {.nh_family = AF_INET, .ipv4_nh = nh->fib.ipv4_dst};

		return bpf_redirect_neigh(nh->fib.ifindex, &neigh, sizeof(neigh), 0);
	}
}
#endif

#endif
