/* IPv6 parsing for the IPv6 path (datapath6.h): Ethernet (or an L3 device's bare packet, parse.h
 * BPX_L3_DEV) -> IPv6 -> extension headers -> TCP/UDP, summarised in struct bpx_pkt6 so later
 * steps never need packet pointers.
 *
 * Extension headers (RFC 8200 4.1) are walked with a fixed bound the 6.1 verifier accepts:
 * hop-by-hop, routing, destination options and fragment headers are skipped; a routing header with
 * segments left (the upper-layer checksum then covers another destination) is left alone (passed
 * untouched), as is every other next header (AH, ESP, ...). A fragment (frag6.h) is flagged: a first
 * one has its TCP/UDP header, a later one only data (its ports come from its first, frag6.h). */
#ifndef BPX_IPV6_H
#define BPX_IPV6_H
#include <stdbool.h>
#include <linux/ipv6.h>
#include "common.h"
#include "ctx.h"
#include "parse.h"

/* One IPv6 address, as it lies in the packet (network byte order). 4-byte aligned, so the structs
 * holding one need no padding for it (struct bpx_backend6 is 20 bytes). */
union bpx_v6addr {
	__u8 addr8[16];
	__be32 addr32[4];
};

#define BPX_IP6_OFF BPX_ETH_HLEN /* offset of the IPv6 header */
#define BPX_IP6_HLEN 40
#define BPX_IP6_SADDR_OFF (BPX_IP6_OFF + offsetof(struct ipv6hdr, saddr))
#define BPX_IP6_DADDR_OFF (BPX_IP6_OFF + offsetof(struct ipv6hdr, daddr))

/* Extension headers walked before giving up (RFC 8200 4.1 recommends each at most once, so a
 * legitimate chain in front of TCP/UDP has hop-by-hop, destination, routing, fragment, destination). */
#define BPX_IP6_MAX_EXT 5

#define BPX_NEXTHDR_HOP 0
#define BPX_NEXTHDR_ROUTING 43
#define BPX_NEXTHDR_FRAGMENT 44
#define BPX_NEXTHDR_DEST 60

/* What the IPv6 path needs to know about a packet. */
struct bpx_pkt6 {
	union bpx_v6addr saddr;
	union bpx_v6addr daddr;
	__be16 sport;    /* network byte order */
	__be16 dport;    /* network byte order */
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 tcp_flags;  /* BPX_TCP_* of a TCP packet; 0 for UDP and a later fragment */
	__u8 frag;       /* BPX_PKT6_F_*: 0 unless a fragment */
	__u8 pad;        /* zero */
	__u32 l4_off;    /* offset of the L4 header from the start of the frame (a later fragment: its data) */
	__u32 l4_len;    /* upper-layer length: payload length minus the extension headers */
	__be32 frag_id;  /* a fragment's identification, network byte order */
	__sum16 l4_csum; /* the L4 checksum field as received (none in a later fragment) */
};

#define BPX_PKT6_F_FRAG (1U << 0)  /* a fragment (first or later) */
#define BPX_PKT6_F_LATER (1U << 1) /* a fragment other than the first: no L4 header, ports from frag6.h */

/* Where the extension header walk ended (ip6_walk_ext). */
struct bpx_ip6_walk {
	__u32 off;      /* the upper-layer header (a later fragment: its data) */
	__u8 next;      /* its next header value (a later fragment: the fragment header's) */
	__u8 frag;      /* BPX_PKT6_F_* */
	__u16 pad;      /* zero */
	__be32 frag_id; /* a fragment's identification */
};

static __always_inline bool v6addr_equal(const union bpx_v6addr *a, const union bpx_v6addr *b)
{
	return !((a->addr32[0] ^ b->addr32[0]) | (a->addr32[1] ^ b->addr32[1]) | (a->addr32[2] ^ b->addr32[2]) |
	         (a->addr32[3] ^ b->addr32[3]));
}

static __always_inline bool pkt6_is_tcp(const struct bpx_pkt6 *pkt)
{
	return pkt->proto == IPPROTO_TCP;
}

static __always_inline bool pkt6_opens_connection(const struct bpx_pkt6 *pkt)
{
	return pkt6_is_tcp(pkt) && (pkt->tcp_flags & (BPX_TCP_SYN | BPX_TCP_ACK)) == BPX_TCP_SYN;
}

static __always_inline __u32 pkt6_l4_csum_off(const struct bpx_pkt6 *pkt)
{
	return pkt->l4_off + (pkt6_is_tcp(pkt) ? BPX_TCP_CSUM_OFF : BPX_UDP_CSUM_OFF);
}

/* Walks the extension headers after the IPv6 header at `ip_off` (its next header `next`), at most
 * BPX_IP6_MAX_EXT: hop-by-hop, destination options, a routing header without segments left, a
 * fragment header. Stops at anything else, and after a later fragment's header (what follows is
 * data). -1 for a routing header with segments left or a header that cannot be read. A global
 * function: the verifier checks it once, and its callers do not walk every chain it may find. */
__weak __noinline int ip6_walk_ext(struct __sk_buff *ctx, __u32 ip_off, __u32 next, struct bpx_ip6_walk *w)
{
	__u32 off = ip_off + BPX_IP6_HLEN;
	int i;

	if (!w) /* a global function's pointer may be NULL as far as the verifier knows */
		return -1;
	w->frag = 0;
	w->pad = 0;
	w->frag_id = 0;
#pragma unroll
	for (i = 0; i < BPX_IP6_MAX_EXT; i++) {
		/* next header, length in 8-byte units beyond the first 8 (a fragment header: reserved), routing
		 * type or fragment offset, segments left or fragment offset and M; a fragment's identification */
		__u8 h[8];

		if (next != BPX_NEXTHDR_HOP && next != BPX_NEXTHDR_ROUTING && next != BPX_NEXTHDR_DEST &&
		    next != BPX_NEXTHDR_FRAGMENT)
			break;
		if (ctx_load_bytes(ctx, off, h, sizeof(h)) < 0)
			return -1;
		if (next == BPX_NEXTHDR_ROUTING && h[3] != 0)
			return -1;
		if (next == BPX_NEXTHDR_FRAGMENT) {
			__builtin_memcpy(&w->frag_id, &h[4], sizeof(w->frag_id));
			w->frag = BPX_PKT6_F_FRAG;
			next = h[0];
			off += 8;
			/* 13-bit offset in the high bits of bytes 2-3: nonzero for a later fragment. */
			if ((h[2] << 5) | (h[3] >> 3)) {
				w->frag |= BPX_PKT6_F_LATER;
				break;
			}
			continue;
		}
		next = h[0];
		off += ((__u32)h[1] + 1) * 8;
	}
	w->off = off;
	w->next = next;
	return 0;
}

/* BPX_PARSE_OK for IPv6 TCP/UDP this version translates (a later fragment: proto and ports zero, for
 * frag6.h to fill); BPX_PARSE_NOT_OURS otherwise. Reads go
 * through ctx_load_bytes (variable offsets after the extension headers are simplest for the
 * verifier that way). tc only. */
static __always_inline enum bpx_parse_result pkt6_parse(struct __ctx_buff *ctx, struct bpx_pkt6 *pkt)
{
	struct bpx_ip6_walk w;
	struct ipv6hdr ip6;
	__u32 off;
	__u8 next;

#ifdef BPX_L3_DEV
	if (ctx->protocol != bpf_htons(ETH_P_IPV6))
		return BPX_PARSE_NOT_OURS;
#else
	__be16 proto;

	if (ctx_load_bytes(ctx, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0 ||
	    proto != bpf_htons(ETH_P_IPV6))
		return BPX_PARSE_NOT_OURS;
#endif
	if (ctx_load_bytes(ctx, BPX_IP6_OFF, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
		return BPX_PARSE_NOT_OURS;
	__builtin_memcpy(&pkt->saddr, &ip6.saddr, 16);
	__builtin_memcpy(&pkt->daddr, &ip6.daddr, 16);
	if (ip6_walk_ext(ctx, BPX_IP6_OFF, ip6.nexthdr, &w) < 0)
		return BPX_PARSE_NOT_OURS;
	off = w.off;
	next = w.next;
	if (off - BPX_IP6_OFF - BPX_IP6_HLEN > bpf_ntohs(ip6.payload_len))
		return BPX_PARSE_NOT_OURS;
	pkt->frag = w.frag;
	pkt->frag_id = w.frag_id;
	pkt->pad = 0;
	pkt->l4_off = off;
	pkt->l4_len = bpf_ntohs(ip6.payload_len) - (off - BPX_IP6_OFF - BPX_IP6_HLEN);
	pkt->tcp_flags = 0;
	if (w.frag & BPX_PKT6_F_LATER) {
		/* Data only: the protocol and ports are its first fragment's (frag6.h). */
		pkt->proto = 0;
		pkt->sport = 0;
		pkt->dport = 0;
		pkt->l4_csum = 0;
		return BPX_PARSE_OK;
	}
	if (next != IPPROTO_TCP && next != IPPROTO_UDP)
		return BPX_PARSE_NOT_OURS; /* also a chain longer than the bound */
	pkt->proto = next;
	if (next == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (pkt->l4_len < sizeof(tcp) || ctx_load_bytes(ctx, off, &tcp, sizeof(tcp)) < 0)
			return BPX_PARSE_NOT_OURS;
		pkt->sport = tcp.source;
		pkt->dport = tcp.dest;
		pkt->tcp_flags = ((__u8 *)&tcp)[BPX_TCP_FLAGS_OFF];
		pkt->l4_csum = tcp.check;
	} else {
		struct udphdr udp;

		if (pkt->l4_len < sizeof(udp) || ctx_load_bytes(ctx, off, &udp, sizeof(udp)) < 0)
			return BPX_PARSE_NOT_OURS;
		pkt->sport = udp.source;
		pkt->dport = udp.dest;
		pkt->l4_csum = udp.check;
	}
	return BPX_PARSE_OK;
}

#endif
