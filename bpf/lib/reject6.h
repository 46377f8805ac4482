/* Reject replies of the IPv6 path (datapath6.h), as reject.h's for IPv4, built in place over the packet
 * that asked and sent back out of the interface it came in on:
 *   - a TCP RST (RFC 793 "Reset Generation") for a TCP segment: IPv6 + TCP, no options or payload;
 *   - an ICMPv6 destination unreachable, port unreachable (RFC 4443 3.1, type 1 code 4) for a UDP
 *     datagram, quoting as much of it (from its IPv6 header on, extension headers included) as fits
 *     without the reply exceeding the minimum IPv6 MTU, 1280 bytes (RFC 4443 2.4 (c)).
 * Both come from the address the packet was sent to (the frontend), hop limit 64, traffic class and
 * flow label zero, checksums computed in full (IPv6 pseudo header, RFC 8200 8.1). Rate limited per
 * source by reject.h's token bucket, in a map of its own keyed by the 16-byte source. */
#ifndef BPX_REJECT6_H
#define BPX_REJECT6_H
#include "common.h"
#include "csum.h"
#include "ipv6.h"
#include "reject.h"

#define BPX_NEXTHDR_ICMP6 58
#define BPX_ICMP6_DEST_UNREACH 1 /* RFC 4443 3.1 type */
#define BPX_ICMP6_PORT_UNREACH 4 /* its code: port unreachable */
#define BPX_IP6_MIN_MTU 1280
#define BPX_ICMP6_HLEN 8
/* Bytes of the offending packet an error quotes at most: 1280 - 40 - 8. */
#define BPX_ICMP6_QUOTE_MAX (BPX_IP6_MIN_MTU - BPX_IP6_HLEN - BPX_ICMP6_HLEN)
/* The quote is summed in chunks loaded onto the stack (bpf_csum_diff takes at most 512 bytes). */
#define BPX_ICMP6_SUM_CHUNK 64
#define BPX_ICMP6_SUM_CHUNKS ((BPX_ICMP6_QUOTE_MAX + BPX_ICMP6_SUM_CHUNK - 1) / BPX_ICMP6_SUM_CHUNK)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, union bpx_v6addr); /* source IPv6 of the packet rejected, network order */
	__type(value, struct bpx_reject_bucket);
	__uint(max_entries, BPX_REJECT_RL_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_reject6_rl_v1 BPX_MAPS;

static __always_inline bool reject6_allowed(const union bpx_v6addr *saddr)
{
	return reject_rl_allowed(&bpx_reject6_rl_v1, saddr);
}

/* Sum of the IPv6 pseudo header (RFC 8200 8.1): addresses, upper-layer length, next header. Values
 * that are not packet bytes are added in network byte order (csum.h). */
static __always_inline __u32 csum_ipv6_pseudo(const union bpx_v6addr *saddr, const union bpx_v6addr *daddr,
                                              __u8 nexthdr, __u16 len)
{
	__u32 sum = csum_words(0, saddr, 4);

	sum = csum_words(sum, daddr, 4);
	sum += bpf_htons((__u16)nexthdr);
	sum += bpf_htons(len);
	return sum;
}

/* An IPv6 header from the frontend back to the client. */
static __always_inline void reject6_fill_ip(struct ipv6hdr *ip, const struct bpx_pkt6 *pkt, __u8 nexthdr,
                                            __u16 payload_len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 6;
	ip->payload_len = bpf_htons(payload_len);
	ip->nexthdr = nexthdr;
	ip->hop_limit = BPX_REPLY_TTL;
	__builtin_memcpy(&ip->saddr, &pkt->daddr, 16);
	__builtin_memcpy(&ip->daddr, &pkt->saddr, 16);
}

struct bpx_rst6_reply {
	struct ipv6hdr ip;
	struct tcphdr tcp;
};

/* RFC 793: if the segment has ACK, <SEQ=SEG.ACK><CTL=RST>; else
 * <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where SEG.LEN counts SYN and FIN. */
static __noinline enum bpx_reject_result reject6_tcp_rst(struct __sk_buff *skb, const struct bpx_pkt6 *pkt)
{
	struct bpx_rst6_reply out;
	struct ethhdr eth;
	struct tcphdr in;
	__s32 seg_len;

	if (pkt->tcp_flags & BPX_TCP_RST)
		return BPX_REJECT_SILENT;
	if (bpf_skb_load_bytes(skb, pkt->l4_off, &in, sizeof(in)) < 0 || reject_load_eth(skb, &eth) < 0)
		return BPX_REJECT_FAILED;
	seg_len = (__s32)pkt->l4_len - (__s32)in.doff * 4;
	if (seg_len < 0 || in.doff < 5)
		return BPX_REJECT_MALFORMED;
	seg_len += in.syn + in.fin;

	reject6_fill_ip(&out.ip, pkt, IPPROTO_TCP, sizeof(out.tcp));
	__builtin_memset(&out.tcp, 0, sizeof(out.tcp));
	out.tcp.source = pkt->dport;
	out.tcp.dest = pkt->sport;
	out.tcp.doff = sizeof(out.tcp) / 4;
	out.tcp.rst = 1;
	if (in.ack) {
		out.tcp.seq = in.ack_seq;
	} else {
		out.tcp.ack = 1;
		out.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + (__u32)seg_len);
	}
	out.tcp.check = csum_fold32(csum_words(csum_ipv6_pseudo(&pkt->daddr, &pkt->saddr, IPPROTO_TCP, sizeof(out.tcp)),
	                                       &out.tcp, sizeof(out.tcp) / 4));
	return reject_write(skb, &eth, &out, sizeof(out));
}

struct bpx_icmp6_err {
	struct ipv6hdr ip;
	struct bpx_icmphdr icmp; /* type, code, checksum, 4 unused bytes: RFC 4443 3.1's layout */
};

/* Sum of `len` bytes of the packet from `off`, read in chunks (an odd tail is padded with zero, as
 * RFC 1071 sums it). Negative when a helper fails. */
static __always_inline __s64 reject6_sum_bytes(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 buf[BPX_ICMP6_SUM_CHUNK];
	__s64 sum = 0;
	int i;

	for (i = 0; i < BPX_ICMP6_SUM_CHUNKS; i++) {
		__u32 done = (__u32)i * BPX_ICMP6_SUM_CHUNK, n;

		if (done >= len)
			break;
		n = len - done; /* >= 1 */
		if (n > BPX_ICMP6_SUM_CHUNK)
			n = BPX_ICMP6_SUM_CHUNK;
		/* Bounds the verifier can see: 1..CHUNK, through a mask the compiler cannot fold away. */
		asm volatile("" : "+r"(n));
		n = ((n - 1) & (BPX_ICMP6_SUM_CHUNK - 1)) + 1;
		__builtin_memset(buf, 0, sizeof(buf));
		if (bpf_skb_load_bytes(skb, off + done, buf, n) < 0)
			return -1;
		n = (n + 3) >> 2; /* whole words (the buffer was zeroed past the bytes loaded) */
		asm volatile("" : "+r"(n));
		sum = bpf_csum_diff(NULL, 0, (__be32 *)buf, n << 2, (__u32)sum);
		if (sum < 0)
			return -1;
	}
	return sum;
}

/* The packet, from its IPv6 header, cut to what fits and prefixed with the error's IPv6 and ICMPv6
 * headers (bpf_skb_adjust_room inserts them between the link-layer and IPv6 headers). */
static __noinline enum bpx_reject_result reject6_udp_port_unreachable(struct __sk_buff *skb, const struct bpx_pkt6 *pkt)
{
	struct bpx_icmp6_err out;
	struct ethhdr eth;
	__u32 quote_len = pkt->l4_off - BPX_IP6_OFF + pkt->l4_len; /* the whole packet, by its own length */
	__s64 sum;

	if (quote_len > BPX_ICMP6_QUOTE_MAX)
		quote_len = BPX_ICMP6_QUOTE_MAX;
	if (quote_len < BPX_IP6_HLEN)
		return BPX_REJECT_MALFORMED;
	if (reject_load_eth(skb, &eth) < 0)
		return BPX_REJECT_FAILED;
	sum = reject6_sum_bytes(skb, BPX_IP6_OFF, quote_len);
	if (sum < 0)
		return BPX_REJECT_FAILED;

	reject6_fill_ip(&out.ip, pkt, BPX_NEXTHDR_ICMP6, sizeof(out.icmp) + quote_len);
	out.icmp.type = BPX_ICMP6_DEST_UNREACH;
	out.icmp.code = BPX_ICMP6_PORT_UNREACH;
	out.icmp.checksum = 0;
	out.icmp.unused = 0;
	out.icmp.checksum = csum_fold32(
	        csum_words(csum_ipv6_pseudo(&pkt->daddr, &pkt->saddr, BPX_NEXTHDR_ICMP6, sizeof(out.icmp) + quote_len) +
	                           (__u32)(sum & 0xffff) + (__u32)((sum >> 16) & 0xffff),
	                   &out.icmp, sizeof(out.icmp) / 4));

	if (bpf_skb_change_tail(skb, BPX_ETH_HLEN + quote_len, 0) < 0 ||
	    bpf_skb_adjust_room(skb, sizeof(out), BPF_ADJ_ROOM_MAC, 0) < 0)
		return BPX_REJECT_FAILED;
	if (BPX_ETH_HLEN && bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0)
		return BPX_REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, BPX_IP6_OFF, &out, sizeof(out), 0) < 0)
		return BPX_REJECT_FAILED;
	return BPX_REJECT_SENT;
}

#endif
