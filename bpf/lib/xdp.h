/* The XDP fast path on --devices: the same lookups, state and rewrites as the tc core, on
 * raw packet memory, for what XDP can finish by itself — translated packets whose next hop
 * the FIB knows (neighbour resolved), sent with XDP_REDIRECT. Everything else (fragments, IP
 * options, rejects, affinity, unresolved neighbours, local destinations, non-service traffic)
 * is passed untouched to the tc program on the same device, which handles it exactly as
 * without XDP. The next hop is looked up with the translated addresses before anything is
 * written, so a passed packet is never half translated.
 *
 * Checksums are updated incrementally (RFC 1624) on the assumption of full checksums, as
 * packets received from a wire carry; a UDP checksum of 0 (none) stays 0. */
#ifndef BPX_XDP_H
#define BPX_XDP_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"
#include "fib.h"

struct bpx_xdp_pkt {
	struct iphdr *ip;
	__sum16 *l4_csum; /* TCP or UDP checksum field */
	__be16 *sport;
	__be16 *dport;
	bool udp_no_csum;
};

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), on 16-bit words as they lie in memory. */
static __always_inline __sum16 xdp_csum16(__sum16 csum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~csum;

	s += (__u16)~from;
	s += to;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

static __always_inline __sum16 xdp_csum32(__sum16 csum, __u32 from, __u32 to)
{
	csum = xdp_csum16(csum, (__u16)(from >> 16), (__u16)(to >> 16));
	return xdp_csum16(csum, (__u16)from, (__u16)to);
}

/* Parses Ethernet / IPv4 without options / TCP|UDP, not a fragment; false: leave it to tc. */
static __always_inline bool xdp_parse(struct xdp_md *ctx, struct bpx_pkt *pkt, struct bpx_xdp_pkt *x)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5)
		return false;
	if (ip->frag_off & bpf_htons(BPX_IP_MF | BPX_IP_OFFSET))
		return false;
	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->fragment = 0;
	pkt->has_ports = 1;
	pkt->l4_off = BPX_IP_OFF + BPX_IP_HLEN_MIN;
	pkt->tcp_flags = 0;
	x->ip = ip;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);

		if ((void *)(tcp + 1) > data_end)
			return false;
		pkt->tcp_flags = ((__u8 *)tcp)[BPX_TCP_FLAGS_OFF];
		x->l4_csum = &tcp->check;
		x->sport = &tcp->source;
		x->dport = &tcp->dest;
		x->udp_no_csum = false;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip + 1);

		if ((void *)(udp + 1) > data_end)
			return false;
		x->l4_csum = &udp->check;
		x->sport = &udp->source;
		x->dport = &udp->dest;
		x->udp_no_csum = udp->check == 0;
	} else {
		return false;
	}
	pkt->sport = *x->sport;
	pkt->dport = *x->dport;
	return true;
}

/* The next hop of the translated packet, or false when XDP cannot send it itself. */
static __always_inline bool xdp_next_hop(struct xdp_md *ctx, struct bpf_fib_lookup *p, __be32 saddr, __be32 daddr,
                                         const struct bpx_xdp_pkt *x)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->ipv4_src = saddr;
	p->ipv4_dst = daddr;
	p->ifindex = ctx->ingress_ifindex;
	/* With the length the lookup checks the route's MTU: a frame too big goes to tc and
	 * the stack, which answers "fragmentation needed". */
	p->tot_len = bpf_ntohs(x->ip->tot_len);
	if (x->ip->ttl <= 1)
		return false;
	return bpf_fib_lookup(ctx, p, sizeof(*p), 0) == BPF_FIB_LKUP_RET_SUCCESS;
}

/* Writes the translated tuple, decrements the TTL, sets the MACs and redirects. */
static __always_inline int xdp_rewrite_and_send(struct xdp_md *ctx, const struct bpx_xdp_pkt *x, __be32 saddr,
                                                __be16 sport, __be32 daddr, __be16 dport,
                                                const struct bpf_fib_lookup *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = x->ip;
	__sum16 l4 = *x->l4_csum, l3 = ip->check;
	__u16 ttl_word_old, ttl_word_new;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (!x->udp_no_csum) {
		l4 = xdp_csum32(l4, ip->saddr, saddr);
		l4 = xdp_csum32(l4, ip->daddr, daddr);
		l4 = xdp_csum16(l4, *x->sport, sport);
		l4 = xdp_csum16(l4, *x->dport, dport);
		if (ip->protocol == IPPROTO_UDP && l4 == 0)
			l4 = 0xffff; /* RFC 768: a computed 0 is sent as all ones */
		*x->l4_csum = l4;
	}
	l3 = xdp_csum32(l3, ip->saddr, saddr);
	l3 = xdp_csum32(l3, ip->daddr, daddr);
	/* TTL and protocol share a 16-bit word. */
	ttl_word_old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	ttl_word_new = *(__u16 *)&ip->ttl;
	ip->check = xdp_csum16(l3, ttl_word_old, ttl_word_new);
	ip->saddr = saddr;
	ip->daddr = daddr;
	*x->sport = sport;
	*x->dport = dport;
	__builtin_memcpy(eth->h_dest, p->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p->smac, ETH_ALEN);
	return bpf_redirect(p->ifindex, 0);
}

#endif
