/* Delivery of translated packets without the host stack: a FIB lookup picks the egress
 * interface and next hop, the packet is redirected there (with the neighbour's MAC, or
 * through bpf_redirect_neigh when the kernel has no neighbour entry yet). This is what
 * keeps replies whose source is a node address from being dropped as martians on a pod
 * interface, and keeps half-translated flows out of netfilter's conntrack (INVALID). When
 * the destination is local, or the lookup cannot say, the packet goes up the stack. */
#ifndef BPX_FIB_H
#define BPX_FIB_H
#include "common.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define BPX_IP_TTL_OFF (BPX_IP_OFF + offsetof(struct iphdr, ttl))

/* Forwarding decrements the TTL (RFC 1812 5.3.1); at 1 the stack answers with ICMP. */
static __always_inline int fib_dec_ttl(struct __sk_buff *skb)
{
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, BPX_IP_TTL_OFF, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	/* TTL is the high byte of its 16-bit checksum word. */
	if (bpf_l3_csum_replace(skb, BPX_IP_OFF + offsetof(struct iphdr, check), bpf_htons((__u16)ttl << 8),
	                        bpf_htons((__u16)(ttl - 1) << 8), 2) < 0)
		return -1;
	ttl--;
	return bpf_skb_store_bytes(skb, BPX_IP_TTL_OFF, &ttl, 1, 0);
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
		if (bpf_skb_store_bytes(skb, 0, p.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, p.smac, ETH_ALEN, 0) < 0)
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

#endif
