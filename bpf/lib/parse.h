/* Packet parsing: Ethernet -> IPv4 -> TCP/UDP, every read bounds-checked, summarised in
 * struct bpx_pkt so later steps never need packet pointers (helpers that rewrite the
 * packet invalidate them).
 *
 * An L3 device (ipip, wireguard, tun: no link-layer header, mac_len 0) hands tc the packet
 * from its IPv4 header, with skb->protocol saying what it is. Its entry file defines
 * BPX_L3_DEV before its includes (as Cilium builds with ETH_HLEN 0): every offset below
 * then starts at the IPv4 header. */
#ifndef BPX_PARSE_H
#define BPX_PARSE_H
#include <stdbool.h>
#include "common.h"
#include "ctx.h"

#ifdef BPX_L3_DEV
#ifdef BPX_CTX_XDP
#error "XDP is never attached to L3 devices"
#endif
#define BPX_ETH_HLEN 0 /* an L3 device: the packet starts at the IPv4 header */
#else
#define BPX_ETH_HLEN 14 /* tc programs see the packet from the Ethernet header */
#endif
#define BPX_IP_OFF BPX_ETH_HLEN /* offset of the IPv4 header */
#define BPX_IP_HLEN_MIN 20
#define BPX_IP_HLEN_MAX 60
#define BPX_TCP_HLEN_MIN 20
#define BPX_UDP_HLEN 8

/* IPv4 frag_off bits (host order, as in the kernel's net/ip.h). */
#define BPX_IP_DF 0x4000
#define BPX_IP_MF 0x2000
#define BPX_IP_OFFSET 0x1fff

/* TCP flags byte (offset 13 of the TCP header). */
#define BPX_TCP_FIN 0x01
#define BPX_TCP_SYN 0x02
#define BPX_TCP_RST 0x04
#define BPX_TCP_PSH 0x08
#define BPX_TCP_ACK 0x10
#define BPX_TCP_FLAGS_OFF 13

/* Offsets inside the L4 header: ports are at the same place for TCP, UDP and SCTP. */
#define BPX_L4_SPORT_OFF 0
#define BPX_L4_DPORT_OFF 2
#define BPX_TCP_CSUM_OFF 16
#define BPX_UDP_CSUM_OFF 6

enum bpx_parse_result {
	BPX_PARSE_OK = 0,      /* IPv4 TCP/UDP/SCTP; ports valid unless a non-first fragment */
	BPX_PARSE_NOT_OURS = 1 /* not IPv4 TCP/UDP/SCTP, or too short to say: pass untouched */
};

/* What the rest of the program needs to know about a packet. */
struct bpx_pkt {
	__be32 saddr;   /* IPv4 source, network byte order */
	__be32 daddr;   /* IPv4 destination, network byte order */
	__be16 sport;   /* L4 source port, network byte order (0 for a non-first fragment) */
	__be16 dport;   /* L4 destination port, network byte order (0 for a non-first fragment) */
	__u8 proto;     /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 tcp_flags; /* BPX_TCP_* of a TCP packet; 0 for UDP and SCTP */
	__u8 fragment;  /* nonzero when MF is set or the fragment offset is nonzero */
	__u8 has_ports; /* nonzero when the L4 header is present (not a non-first fragment) */
	__u32 l4_off;   /* offset of the L4 header from the start of the frame, host order */
};

static __always_inline bool pkt_is_tcp(const struct bpx_pkt *pkt)
{
	return pkt->proto == IPPROTO_TCP;
}

static __always_inline bool pkt_is_fragment(const struct bpx_pkt *pkt)
{
	return pkt->fragment;
}

/* A SYN without ACK: the client opens a (new) connection. */
static __always_inline bool pkt_opens_connection(const struct bpx_pkt *pkt)
{
	return pkt_is_tcp(pkt) && (pkt->tcp_flags & (BPX_TCP_SYN | BPX_TCP_ACK)) == BPX_TCP_SYN;
}

/* FIN or RST: the connection is being torn down. */
static __always_inline bool pkt_closes_connection(const struct bpx_pkt *pkt)
{
	return pkt_is_tcp(pkt) && (pkt->tcp_flags & (BPX_TCP_FIN | BPX_TCP_RST));
}

/* SCTP's CRC32c covers the SCTP packet only (no pseudo header, RFC 9260 6.8): an address
 * rewrite leaves it valid and nothing may change it. nat.h ANDs every L4 checksum difference
 * with this mask, 0 for SCTP (an update by 0 writes the 16 bits back as they were) and ~0
 * otherwise: no branch per update, so the verifier walks no new path there.
 * Only TCP (6), UDP (17) and SCTP (132) are parsed: bit 7 is SCTP's alone. Its ports are never
 * rewritten (the daemon gives SCTP frontends whose port changes to IPVS; SNAT keeps an SCTP
 * client's port, snat.h). */
static __always_inline __u32 pkt_l4_csum_mask(const struct bpx_pkt *pkt)
{
	return ((__u32)pkt->proto >> 7) - 1;
}

static __always_inline __u32 pkt_l4_csum_off(const struct bpx_pkt *pkt)
{
	return pkt->l4_off + (pkt_is_tcp(pkt) ? BPX_TCP_CSUM_OFF : BPX_UDP_CSUM_OFF);
}

static __always_inline enum bpx_parse_result pkt_parse(struct __ctx_buff *ctx, struct bpx_pkt *pkt)
{
	void *data, *data_end, *l4;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 ip_hlen;
	__u16 frag;

	if (!ctx_ensure_linear(ctx, BPX_ETH_HLEN + BPX_IP_HLEN_MIN))
		return BPX_PARSE_NOT_OURS;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);

#ifdef BPX_L3_DEV
	(void)eth;
	if (ctx->protocol != bpf_htons(ETH_P_IP))
		return BPX_PARSE_NOT_OURS;
	ip = data;
#else
	eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return BPX_PARSE_NOT_OURS;

	ip = (void *)(eth + 1);
#endif
	if ((void *)(ip + 1) > data_end)
		return BPX_PARSE_NOT_OURS;
	if (ip->version != 4 || ip->ihl < 5)
		return BPX_PARSE_NOT_OURS;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_SCTP)
		return BPX_PARSE_NOT_OURS;

	ip_hlen = ip->ihl * 4;
	frag = bpf_ntohs(ip->frag_off);
	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->fragment = (frag & (BPX_IP_MF | BPX_IP_OFFSET)) != 0;
	pkt->l4_off = BPX_IP_OFF + ip_hlen;
	pkt->tcp_flags = 0;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->has_ports = 0;

	/* XDP leaves fragments (frag.h) and IPv4 options to tc. */
	if (CTX_IS_XDP && (pkt->fragment || ip_hlen != BPX_IP_HLEN_MIN))
		return BPX_PARSE_NOT_OURS;
	/* A non-first fragment carries no L4 header. */
	if (frag & BPX_IP_OFFSET)
		return BPX_PARSE_OK;

	if (!ctx_ensure_linear(ctx, pkt->l4_off + (pkt->proto == IPPROTO_TCP ? BPX_TCP_HLEN_MIN : BPX_UDP_HLEN)))
		return BPX_PARSE_NOT_OURS;
	/* A pull moves the data: every pointer is taken again. */
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	if (data + BPX_ETH_HLEN + BPX_IP_HLEN_MIN > data_end)
		return BPX_PARSE_NOT_OURS;
	l4 = data + BPX_ETH_HLEN + ip_hlen;
	if (pkt->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return BPX_PARSE_NOT_OURS;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[BPX_TCP_FLAGS_OFF];
	} else {
		/* UDP, or SCTP: its 12-byte common header starts with the two ports as well. */
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return BPX_PARSE_NOT_OURS;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
	}
	pkt->has_ports = 1;
	return BPX_PARSE_OK;
}

#endif
