/* Internet checksum (RFC 1071), the one place it is computed: whole sums over headers the
 * program builds on the stack, and incremental updates (RFC 1624) of a field after the data
 * it covers changed.
 *
 * The ones'-complement sum is byte-order independent: summing the 16-bit words as the
 * CPU loads them and storing the folded result back the same way gives the right bytes
 * on the wire. Values added that are not packet bytes (pseudo-header protocol and
 * length) must therefore be added in network byte order. */
#ifndef BPX_CSUM_H
#define BPX_CSUM_H
#include "common.h"

/* What a UDP checksum that computes to zero is sent as (RFC 768: zero means "none"). */
#define CSUM_MANGLED_0 ((__sum16)0xffff)

/* Folds a 32-bit running sum to 16 bits and complements it: the checksum field. */
static __always_inline __sum16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* Adds the 16-bit halves of a 32-bit word; the caller folds before ~2^15 words. */
static __always_inline __u32 csum_add_word(__u32 sum, __u32 word)
{
	return sum + (word & 0xffff) + (word >> 16);
}

/* Sum of `words` 32-bit words at a 4-byte aligned stack buffer; `words` is a constant. */
static __always_inline __u32 csum_words(__u32 sum, const void *buf, const int words)
{
	const __u32 *w = buf;
	int i;

#pragma unroll
	for (i = 0; i < words; i++)
		sum = csum_add_word(sum, w[i]);
	return sum;
}

/* Sum of the IPv4 pseudo header used by TCP, UDP: addresses, protocol, L4 length. */
static __always_inline __u32 csum_ipv4_pseudo(__be32 saddr, __be32 daddr, __u8 proto, __u16 l4_len)
{
	__u32 sum = 0;

	sum = csum_add_word(sum, saddr);
	sum = csum_add_word(sum, daddr);
	sum += bpf_htons((__u16)proto);
	sum += bpf_htons(l4_len);
	return sum;
}

/* The sum `delta` of changes (for each changed word: ~old + new, as csum_diff_word gives)
 * applied to checksum `check`: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'). The only incremental
 * update in the programs; the helpers below and the skb helpers' XDP twins (ctx.h) use it. */
static __always_inline __sum16 csum_update(__sum16 check, __u32 delta)
{
	return csum_fold32((__u32)(__u16)~check + (delta & 0xffff) + (delta >> 16));
}

/* ~old + new of one 32-bit word, a term of csum_update's delta (add at most ~2^14 of them). */
static __always_inline __u32 csum_diff_word(__u32 old, __u32 new)
{
	return csum_add_word(csum_add_word(0, ~old), new);
}

static __always_inline __sum16 csum_replace4(__sum16 check, __u32 from, __u32 to)
{
	return csum_update(check, csum_diff_word(from, to));
}

static __always_inline __sum16 csum_replace2(__sum16 check, __u16 from, __u16 to)
{
	return csum_update(check, (__u32)(__u16)~from + to);
}

#endif
