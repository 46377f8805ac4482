/* Address/port rewrites with incremental checksum updates: DNAT of a client packet to
 * its backend, and reverse SNAT of a backend's reply back to the frontend.
 *
 * Checksums are fixed incrementally rather than recomputed (ctx.h: in XDP in place, in
 * tc with the kernel's csum helpers, which keeps them right for every skb->ip_summed state):
 *  - the IPv4 header checksum follows the address change (bpf_l3_csum_replace);
 *  - the TCP/UDP checksum covers the address through the pseudo header, so that update
 *    carries BPF_F_PSEUDO_HDR: for CHECKSUM_PARTIAL skbs (local sockets over veth) the
 *    kernel then adjusts the pseudo-header seed in the checksum field, and for
 *    CHECKSUM_COMPLETE it keeps skb->csum in step with the field it changed;
 *  - port changes are inside the segment: a plain L4 update (no-op for PARTIAL);
 *  - UDP adds BPF_F_MARK_MANGLED_0: a zero checksum ("none") stays zero and a
 *    computed zero is written as 0xffff;
 *  - SCTP's CRC32c covers no IP header: SCTP takes the field-by-field way with every L4
 *    difference masked to 0 (parse.h pkt_l4_csum_mask), so the 16 bits at UDP's checksum
 *    offset (half of SCTP's verification tag) are stored back unchanged.
 * Bytes are stored without BPF_F_RECOMPUTE_CSUM: every byte stored is balanced by the
 * checksum field update, so skb->csum of a CHECKSUM_COMPLETE skb stays valid. */
#ifndef BPX_NAT_H
#define BPX_NAT_H
#include "common.h"
#include "parse.h"
#include "csum.h"
#include "ctx.h"

#define BPX_IP_CSUM_OFF (BPX_IP_OFF + offsetof(struct iphdr, check))
#define BPX_IP_SADDR_OFF (BPX_IP_OFF + offsetof(struct iphdr, saddr))
#define BPX_IP_DADDR_OFF (BPX_IP_OFF + offsetof(struct iphdr, daddr))
#define BPX_IP_TTL_OFF (BPX_IP_OFF + offsetof(struct iphdr, ttl))

static __always_inline __u64 nat_l4_csum_flags(const struct bpx_pkt *pkt)
{
	return pkt_is_tcp(pkt) ? 0 : BPF_F_MARK_MANGLED_0;
}

/* Replaces the IPv4 address at addr_off (source or destination) and fixes both checksums. */
static __always_inline int nat_rewrite_addr(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 addr_off,
                                            __be32 from, __be32 to)
{
	if (from == to)
		return 0;
	/* A later IPv4 fragment has no L4 header: its first fragment's checksum covers it. */
	__u32 m = pkt_l4_csum_mask(pkt);

	if (pkt->has_ports && ctx_l4_csum_replace(ctx, pkt_l4_csum_off(pkt), from & m, to & m,
	                                          nat_l4_csum_flags(pkt) | BPF_F_PSEUDO_HDR | sizeof(to)) < 0)
		return -1;
	if (ctx_l3_csum_replace(ctx, BPX_IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	return ctx_store_bytes(ctx, addr_off, &to, sizeof(to));
}

/* Replaces the L4 port at port_off (source or destination) and fixes the L4 checksum. */
static __always_inline int nat_rewrite_port(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 port_off,
                                            __be16 from, __be16 to)
{
	__u16 m = (__u16)pkt_l4_csum_mask(pkt);

	if (from == to || !pkt->has_ports)
		return 0;
	if (ctx_l4_csum_replace(ctx, pkt_l4_csum_off(pkt), from & m, to & m, nat_l4_csum_flags(pkt) | sizeof(to)) < 0)
		return -1;
	return ctx_store_bytes(ctx, port_off, &to, sizeof(to));
}

/* Forwarding past the stack decrements the TTL (RFC 1812 5.3.1); the caller checked it is
 * above 1 (fib.h deliver_prepare). For a packet nat_rewrite cannot write in one store. */
static __always_inline int nat_dec_ttl(struct __ctx_buff *ctx)
{
	__u8 ttl;

	if (ctx_load_bytes(ctx, BPX_IP_TTL_OFF, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	/* TTL is the high byte of its 16-bit checksum word. */
	if (ctx_l3_csum_replace(ctx, BPX_IP_CSUM_OFF, bpf_htons((__u16)ttl << 8), bpf_htons((__u16)(ttl - 1) << 8), 2) <
	    0)
		return -1;
	ttl--;
	return ctx_store_bytes(ctx, BPX_IP_TTL_OFF, &ttl, 1);
}

/* The L4 checksum field of this (20-byte IPv4 header, whole L4 header) packet is a complete
 * checksum, so an address and a port change can be applied to it in one update. The other case,
 * CHECKSUM_PARTIAL (a local socket's packet over a veth), holds the folded pseudo-header sum
 * there, to which a port change must not be added: a field equal to that sum is taken as
 * partial (a complete checksum equal to it by chance, 1 in 65,536, only takes the two-update
 * path, right for both), as is any packet whose total length says nothing (0: BIG TCP). XDP never
 * sees a partial one (datapath.h xdp_csum_partial passes those to tc). Read before any helper. */
static __always_inline bool nat_l4_csum_complete(struct __ctx_buff *ctx, const struct bpx_pkt *pkt,
                                                 const struct iphdr *ip)
{
#ifdef BPX_CTX_XDP
	return true;
#else
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	__sum16 *check = data + pkt_l4_csum_off(pkt);
	__u16 tot_len = bpf_ntohs(ip->tot_len);

	if (pkt_l4_csum_off(pkt) > BPX_IP_OFF + BPX_IP_HLEN_MIN + BPX_TCP_CSUM_OFF || (void *)(check + 1) > data_end ||
	    tot_len < BPX_IP_HLEN_MIN)
		return false;
	return *check !=
	       (__sum16)~csum_fold32(csum_ipv4_pseudo(pkt->saddr, pkt->daddr, pkt->proto, tot_len - BPX_IP_HLEN_MIN));
#endif
}

/* The IPv4 header from the TTL on, in wire order: TTL, protocol, header checksum, addresses,
 * and with a 20-byte IPv4 header the L4 ports that follow, so one store writes all of them. */
struct bpx_nat_tuple {
	union {
		struct {
			__u8 ttl;
			__u8 protocol;
		};
		__u16 ttl_word; /* as it lies in the packet: a 16-bit word of the checksum */
	};
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
} __attribute__((packed));

/* The same, on through the L4 checksum field (TCP: sequence numbers, offset, flags and window
 * stored back as they are), for one store of every changed byte. */
struct bpx_nat_tcp_store {
	struct bpx_nat_tuple t;
	__u8 mid[12];
	__sum16 check;
} __attribute__((packed));

struct bpx_nat_udp_store {
	struct bpx_nat_tuple t;
	__be16 len;
	__sum16 check;
} __attribute__((packed));

/* Writes `to` and the L4 checksum, a complete one (nat_l4_csum_complete), moved by `diff`, in one
 * store: one helper call for the whole rewrite. BPF_F_RECOMPUTE_CSUM keeps skb->csum of a
 * CHECKSUM_COMPLETE skb equal to the sum of the bytes as they are now; NONE and UNNECESSARY need
 * only the field. UDP: a zero field (no checksum) stays zero, a computed zero is sent as 0xffff. */
static __always_inline int nat_store_with_l4_csum(struct __ctx_buff *ctx, const struct bpx_pkt *pkt,
                                                  const struct bpx_nat_tuple *to, __u32 diff)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	__u8 *l4 = data + BPX_IP_OFF + BPX_IP_HLEN_MIN;

	if (pkt_is_tcp(pkt)) {
		struct bpx_nat_tcp_store b;

		if ((void *)(l4 + BPX_TCP_CSUM_OFF + sizeof(__sum16)) > data_end)
			return -1;
		b.t = *to;
		__builtin_memcpy(b.mid, l4 + 4, sizeof(b.mid));
		b.check = csum_update(*(__sum16 *)(l4 + BPX_TCP_CSUM_OFF), diff);
		return ctx_store_bytes_rcsum(ctx, BPX_IP_TTL_OFF, &b, sizeof(b));
	} else {
		struct bpx_nat_udp_store b;
		__sum16 check;

		if ((void *)(l4 + BPX_UDP_CSUM_OFF + sizeof(__sum16)) > data_end)
			return -1;
		b.t = *to;
		b.len = *(__be16 *)(l4 + 4);
		check = *(__sum16 *)(l4 + BPX_UDP_CSUM_OFF);
		if (check) {
			check = csum_update(check, diff);
			if (!check)
				check = CSUM_MANGLED_0;
		}
		b.check = check;
		return ctx_store_bytes_rcsum(ctx, BPX_IP_TTL_OFF, &b, sizeof(b));
	}
}

/* Rewrites the packet's addresses and ports to the given ones (unchanged fields are given as
 * `pkt` has them; `pkt` must describe the packet as it is, i.e. not after an earlier rewrite),
 * and with `dec_ttl` also decrements the TTL (a packet delivered past the stack, fib.h).
 * Without IP options (the common case): each changed address takes one L4 checksum update,
 * the ports (one 32-bit word) one together, and one store writes the TTL and the new IPv4
 * header checksum (computed here for the addresses and the TTL together, as
 * bpf_l3_csum_replace would for each) with the whole tuple. With options: field by field. */
static __always_inline int nat_rewrite(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __be32 saddr, __be32 daddr,
                                       __be16 sport, __be16 dport, const bool dec_ttl)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct iphdr *ip = data + BPX_IP_OFF;
	struct bpx_nat_tuple to = {.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport};
	union {
		struct {
			__be16 sport;
			__be16 dport;
		} p;
		__u32 word;
	} from_ports = {.p = {pkt->sport, pkt->dport}}, to_ports = {.p = {sport, dport}};
	bool addrs = saddr != pkt->saddr || daddr != pkt->daddr;
	bool ports = from_ports.word != to_ports.word;
	__u64 flags = nat_l4_csum_flags(pkt);
	__u32 delta = 0, l4_delta;
	__u16 ttl_word;
	bool one;

	/* SCTP too (no L4 checksum): measured on 6.1, cheaper than masking the one-store way's updates. */
	if (pkt->l4_off != BPX_IP_OFF + BPX_IP_HLEN_MIN || !pkt->has_ports || !pkt_l4_csum_mask(pkt) ||
	    (void *)(ip + 1) > data_end) {
		if (nat_rewrite_addr(ctx, pkt, BPX_IP_SADDR_OFF, pkt->saddr, saddr) < 0 ||
		    nat_rewrite_addr(ctx, pkt, BPX_IP_DADDR_OFF, pkt->daddr, daddr) < 0 ||
		    nat_rewrite_port(ctx, pkt, pkt->l4_off + BPX_L4_SPORT_OFF, pkt->sport, sport) < 0 ||
		    nat_rewrite_port(ctx, pkt, pkt->l4_off + BPX_L4_DPORT_OFF, pkt->dport, dport) < 0)
			return -1;
		return dec_ttl ? nat_dec_ttl(ctx) : 0;
	}
	if (!dec_ttl && !addrs && !ports)
		return 0;
	/* Read before any helper call: those may move the packet. */
	to.ttl = ip->ttl;
	to.protocol = ip->protocol;
	to.check = ip->check;
	/* A complete L4 checksum is updated here and stored with the rest (one helper call). */
	one = (addrs || ports) && nat_l4_csum_complete(ctx, pkt, ip);
	l4_delta = csum_diff_word(pkt->saddr, saddr) + csum_diff_word(pkt->daddr, daddr);
	if (addrs)
		delta = l4_delta;
	if (dec_ttl) {
		ttl_word = to.ttl_word;
		to.ttl--;
		delta += (__u32)(__u16)~ttl_word + to.ttl_word;
	}
	if (addrs || dec_ttl)
		to.check = csum_update(to.check, delta);
	if (one)
		return nat_store_with_l4_csum(ctx, pkt, &to,
		                              (addrs ? l4_delta : 0) +
		                                      (ports ? csum_diff_word(from_ports.word, to_ports.word) : 0));
	/* Both addresses in one pseudo-header update (right for every skb->ip_summed state), the ports
	 * in a plain one (a no-op for CHECKSUM_PARTIAL). */
	if (addrs && ctx_l4_csum_diff(ctx, pkt_l4_csum_off(pkt), l4_delta, flags | BPF_F_PSEUDO_HDR) < 0)
		return -1;
	if (ports && ctx_l4_csum_replace(ctx, pkt_l4_csum_off(pkt), from_ports.word, to_ports.word,
	                                 flags | sizeof(to_ports.word)) < 0)
		return -1;
	return ctx_store_bytes(ctx, BPX_IP_TTL_OFF, &to, sizeof(to));
}

#endif
