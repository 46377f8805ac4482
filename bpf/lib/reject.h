/* Reject replies for frontends without backends, built in place over the packet that
 * asked: a TCP RST (RFC 793 "Reset Generation") for TCP, an ICMP destination
 * unreachable / port unreachable (RFC 792) for UDP. The caller redirects the result
 * back out of the interface it arrived on.
 *
 * The reply's headers are assembled on the stack with full checksums (computed here,
 * not patched), the frame is resized with bpf_skb_change_tail and written with
 * bpf_skb_store_bytes. The IPv4 header of a reply never has options. */
#ifndef BPX_REJECT_H
#define BPX_REJECT_H
#include "common.h"
#include "parse.h"
#include "csum.h"

#define BPX_REPLY_TTL 64
#define BPX_ICMP_TOS 0xc0   /* IPTOS_PREC_INTERNETCONTROL, as the kernel's own ICMP errors */
#define BPX_ICMP_QUOTE_L4 8 /* RFC 792: the original IP header plus 64 bits of its data */
#define BPX_ICMP_QUOTE_MAX (BPX_IP_HLEN_MAX + BPX_ICMP_QUOTE_L4)

/* ICMP bits (common.h cannot include linux/icmp.h under -target bpf). */
#define BPX_ICMP_DEST_UNREACH 3 /* RFC 792 type: destination unreachable */
#define BPX_ICMP_PORT_UNREACH 3 /* code: port unreachable */

struct bpx_icmphdr {
	__u8 type;        /* BPX_ICMP_* type */
	__u8 code;        /* type-specific code */
	__sum16 checksum; /* over the ICMP message, network byte order */
	__be32 unused;    /* zero for destination unreachable */
};

enum bpx_reject_result {
	BPX_REJECT_SENT = 0,      /* the packet is now the reply: redirect it */
	BPX_REJECT_SILENT = 1,    /* no reply is due (never answer a RST): drop */
	BPX_REJECT_MALFORMED = 2, /* the header lengths do not add up: drop */
	BPX_REJECT_FAILED = 3     /* a helper failed; the packet may be half rewritten: drop */
};

/* The reply to a TCP segment: IPv4 + TCP without options or payload. */
struct bpx_rst_reply {
	struct iphdr ip;   /* network byte order throughout */
	struct tcphdr tcp; /* network byte order throughout */
};

/* The reply to a UDP datagram: IPv4 + ICMP header + quote of the offending datagram. */
struct bpx_icmp_reply {
	struct iphdr ip;                /* network byte order throughout */
	struct bpx_icmphdr icmp;        /* network byte order throughout */
	__u8 quote[BPX_ICMP_QUOTE_MAX]; /* original IPv4 header + first 8 L4 bytes, as received */
};

/* Rejects are rate-limited per source, like the kernel's own ICMP errors (icmp_ratelimit: a
 * token bucket per peer, burst 6, one token a second). A frontend without backends answers
 * every packet of every client, so a spoofed flood would otherwise turn bpfproxy into a
 * reflector of RSTs and ICMP errors toward the forged sources. A source may get
 * BPX_REJECT_BURST replies at once and one more every BPX_REJECT_INTERVAL_NS (10 a second:
 * more than the kernel's ICMP limit, since a TCP client retrying connections should still
 * fail fast); the rest are dropped silently and counted (REJECT_SUPPRESSED). The LRU forgets
 * idle sources first; a forgotten source starts with a full bucket. */
#define BPX_REJECT_BURST 10
#define BPX_REJECT_INTERVAL_NS (100ULL * 1000000ULL)
#define BPX_REJECT_RL_ENTRIES 65536

struct bpx_reject_bucket {
	__u64 last_ns; /* bpf_ktime_get_ns() when tokens was last refilled; host order */
	__u32 tokens;  /* replies the source may still get now, host order */
	__u32 pad;     /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __be32); /* source IPv4 of the packet rejected, network order */
	__type(value, struct bpx_reject_bucket);
	__uint(max_entries, BPX_REJECT_RL_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_reject_rl_v1 BPX_MAPS;

/* True when the source `key` (in LRU map `rl`: bpx_reject_rl_v1, or reject6.h's IPv6 twin) may get
 * one more reject now, and takes its token. Two CPUs may race on one bucket and both answer: the
 * limit is approximate by at most a token per CPU. */
static __always_inline bool reject_rl_allowed(void *rl, const void *key)
{
	__u64 now = bpf_ktime_get_ns();
	struct bpx_reject_bucket *b = bpf_map_lookup_elem(rl, key);
	__u64 elapsed;

	if (!b) {
		struct bpx_reject_bucket fresh = {.last_ns = now, .tokens = BPX_REJECT_BURST - 1};

		bpf_map_update_elem(rl, key, &fresh, BPF_ANY);
		return true;
	}
	elapsed = now - b->last_ns;
	if ((__s64)elapsed >= (__s64)(BPX_REJECT_BURST * BPX_REJECT_INTERVAL_NS)) {
		b->tokens = BPX_REJECT_BURST;
		b->last_ns = now;
	} else if ((__s64)elapsed >= (__s64)BPX_REJECT_INTERVAL_NS) {
		__u32 add = (__u32)(elapsed / BPX_REJECT_INTERVAL_NS);

		b->tokens = b->tokens + add > BPX_REJECT_BURST ? BPX_REJECT_BURST : b->tokens + add;
		b->last_ns += (__u64)add * BPX_REJECT_INTERVAL_NS;
	}
	if (!b->tokens)
		return false;
	b->tokens--;
	return true;
}

/* True when IPv4 source `saddr` may get one more reject now (and takes its token). */
static __always_inline bool reject_allowed(__be32 saddr)
{
	return reject_rl_allowed(&bpx_reject_rl_v1, &saddr);
}

/* The Ethernet header with the addresses swapped: the reply goes back where it came from. */
static __always_inline int reject_load_eth(struct __sk_buff *skb, struct ethhdr *out)
{
	struct ethhdr in;

	if (BPX_ETH_HLEN == 0) /* an L3 device: no link-layer header to answer with */
		return 0;

	if (bpf_skb_load_bytes(skb, 0, &in, sizeof(in)) < 0)
		return -1;
	__builtin_memcpy(out->h_dest, in.h_source, ETH_ALEN);
	__builtin_memcpy(out->h_source, in.h_dest, ETH_ALEN);
	out->h_proto = in.h_proto;
	return 0;
}

/* An IPv4 header without options from the frontend back to the client, checksummed. */
static __always_inline void reject_fill_ip(struct iphdr *ip, const struct bpx_pkt *pkt, __u8 proto, __u8 tos,
                                           __u16 tot_len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(tot_len);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = BPX_REPLY_TTL;
	ip->protocol = proto;
	ip->saddr = pkt->daddr;
	ip->daddr = pkt->saddr;
	ip->check = 0;
	ip->check = csum_fold32(csum_words(0, ip, sizeof(*ip) / 4));
}

/* Resizes the frame to frame_len and writes the Ethernet header plus `len` bytes of l3. */
static __always_inline enum bpx_reject_result reject_write(struct __sk_buff *skb, const struct ethhdr *eth,
                                                           const void *l3, __u32 len)
{
	if (bpf_skb_change_tail(skb, BPX_ETH_HLEN + len, 0) < 0)
		return BPX_REJECT_FAILED;
	if (BPX_ETH_HLEN && bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0) < 0)
		return BPX_REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, BPX_IP_OFF, l3, len, 0) < 0)
		return BPX_REJECT_FAILED;
	return BPX_REJECT_SENT;
}

/* RFC 793: if the segment has ACK, <SEQ=SEG.ACK><CTL=RST>; else
 * <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where SEG.LEN counts SYN and FIN. */
static __always_inline enum bpx_reject_result reject_tcp_rst(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	struct bpx_rst_reply out = {};
	struct ethhdr eth;
	struct tcphdr in;
	__be16 tot_len;
	__s32 seg_len;

	if (pkt->tcp_flags & BPX_TCP_RST)
		return BPX_REJECT_SILENT;
	if (bpf_skb_load_bytes(skb, pkt->l4_off, &in, sizeof(in)) < 0 ||
	    bpf_skb_load_bytes(skb, BPX_IP_OFF + offsetof(struct iphdr, tot_len), &tot_len, sizeof(tot_len)) < 0 ||
	    reject_load_eth(skb, &eth) < 0)
		return BPX_REJECT_FAILED;

	seg_len = (__s32)bpf_ntohs(tot_len) - (__s32)(pkt->l4_off - BPX_IP_OFF) - (__s32)in.doff * 4;
	if (seg_len < 0 || in.doff < 5)
		return BPX_REJECT_MALFORMED;
	seg_len += in.syn + in.fin;

	reject_fill_ip(&out.ip, pkt, IPPROTO_TCP, 0, sizeof(out));
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
	out.tcp.check =
	        csum_fold32(csum_words(csum_ipv4_pseudo(out.ip.saddr, out.ip.daddr, IPPROTO_TCP, sizeof(out.tcp)),
	                               &out.tcp, sizeof(out.tcp) / 4));
	return reject_write(skb, &eth, &out, sizeof(out));
}

static __always_inline enum bpx_reject_result reject_udp_port_unreachable(struct __sk_buff *skb,
                                                                          const struct bpx_pkt *pkt)
{
	struct bpx_icmp_reply out = {};
	struct ethhdr eth;
	__u32 quote_len = pkt->l4_off - BPX_IP_OFF + BPX_ICMP_QUOTE_L4;
	__s64 sum;

	/* Both bounds are implied by parsing; stated again for the verifier. */
	if (quote_len < BPX_IP_HLEN_MIN + BPX_ICMP_QUOTE_L4 || quote_len > BPX_ICMP_QUOTE_MAX)
		return BPX_REJECT_MALFORMED;
	if (bpf_skb_load_bytes(skb, BPX_IP_OFF, out.quote, quote_len) < 0 || reject_load_eth(skb, &eth) < 0)
		return BPX_REJECT_FAILED;

	out.icmp.type = BPX_ICMP_DEST_UNREACH;
	out.icmp.code = BPX_ICMP_PORT_UNREACH;
	/* The quote has a variable length, so the kernel sums it (a multiple of 4 bytes, as
	 * bpf_csum_diff wants: IHL counts 32-bit words, plus 8). The checksum field is 0. */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp) + quote_len, 0);
	if (sum < 0)
		return BPX_REJECT_FAILED;
	out.icmp.checksum = csum_fold32((__u32)sum);
	reject_fill_ip(&out.ip, pkt, IPPROTO_ICMP, BPX_ICMP_TOS, sizeof(out.ip) + sizeof(out.icmp) + quote_len);
	return reject_write(skb, &eth, &out, sizeof(out.ip) + sizeof(out.icmp) + quote_len);
}

/* Turns the packet into the reject reply for its protocol. */
static __always_inline enum bpx_reject_result reject_build_reply(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	if (pkt_is_tcp(pkt))
		return reject_tcp_rst(skb, pkt);
	return reject_udp_port_unreachable(skb, pkt);
}

#endif
