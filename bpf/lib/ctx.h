/* The packet context, one per compilation unit (as Cilium's __ctx_buff): an entry file that
 * defines BPX_CTX_XDP before its includes is an XDP program, any other a tc program. The
 * datapath (datapath.h) is written once against the wrappers below, so tc and XDP run the
 * same code; where a hook cannot do what the other does (XDP cannot build a reject or walk
 * an ICMP error), the datapath says so in one place and passes the packet on to tc.
 *
 * tc uses the kernel's skb helpers, which keep skb->csum right in every ip_summed state.
 * XDP writes the frame in place: headers are read and written through bounds-checked packet
 * pointers, checksums updated incrementally (csum.h) as complete checksums: the datapath passes
 * a packet whose L4 checksum field is its pseudo-header sum (CHECKSUM_PARTIAL, which XDP cannot
 * see otherwise) to tc before writing anything (datapath.h xdp_csum_partial). */
#ifndef BPX_CTX_H
#define BPX_CTX_H
#include <stdbool.h>
#include "common.h"
#include "csum.h"

#ifdef BPX_CTX_XDP
#define __ctx_buff xdp_md
#define CTX_IS_XDP 1
#define CTX_ACT_OK XDP_PASS /* to tc on the same device, untouched */
#define CTX_ACT_DROP XDP_DROP
#else
#define __ctx_buff __sk_buff
#define CTX_IS_XDP 0
#define CTX_ACT_OK TC_ACT_OK
#define CTX_ACT_DROP TC_ACT_SHOT
#endif

/* Offsets the XDP wrappers accept: Ethernet + the largest IPv4 header + a TCP header. */
#define BPX_CTX_OFF_MAX 128

static __always_inline void *ctx_data(const struct __ctx_buff *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const struct __ctx_buff *ctx)
{
	return (void *)(long)ctx->data_end;
}

/* The frame's length, as the counters report it (L2). */
static __always_inline __u32 ctx_full_len(const struct __ctx_buff *ctx)
{
#ifdef BPX_CTX_XDP
	return ctx->data_end - ctx->data;
#else
	return ctx->len;
#endif
}

/* The first `len` bytes can be read through packet pointers. An XDP frame is linear; the
 * headers of skbs built from page fragments (GRO, some veth paths) may not all be in the
 * linear area. Exactly the first `len` bytes are pulled in, and only when they are not there
 * yet: a pull of a cloned skb (TCP keeps clones for retransmission) copies its head, so a
 * pull "to be safe" would cost every data segment. */
static __always_inline bool ctx_ensure_linear(struct __ctx_buff *ctx, __u32 len)
{
#ifdef BPX_CTX_XDP
	return ctx_data(ctx) + len <= ctx_data_end(ctx);
#else
	__u32 linear = ctx->data_end - ctx->data;

	if (likely(linear >= len))
		return true;
	if (len > ctx->len)
		return false;
	return bpf_skb_pull_data(ctx, len) == 0;
#endif
}

#ifdef BPX_CTX_XDP
/* A packet pointer to `len` bytes at `off`, or NULL when the frame is shorter. */
static __always_inline void *ctx_ptr(struct __ctx_buff *ctx, __u32 off, const __u32 len)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);

	if (off > BPX_CTX_OFF_MAX)
		return NULL;
	if (data + off + len > data_end)
		return NULL;
	return data + off;
}
#endif

/* `len` (a constant) bytes at `off` into `to`; 0 or negative. */
static __always_inline int ctx_load_bytes(struct __ctx_buff *ctx, __u32 off, void *to, const __u32 len)
{
#ifdef BPX_CTX_XDP
	void *p = ctx_ptr(ctx, off, len);

	if (!p)
		return -1;
	__builtin_memcpy(to, p, len);
	return 0;
#else
	return bpf_skb_load_bytes(ctx, off, to, len);
#endif
}

/* Writes `len` (a constant) bytes at `off`; no checksum is touched (callers balance every
 * change with a checksum update). */
static __always_inline int ctx_store_bytes(struct __ctx_buff *ctx, __u32 off, const void *from, const __u32 len)
{
#ifdef BPX_CTX_XDP
	void *p = ctx_ptr(ctx, off, len);

	if (!p)
		return -1;
	__builtin_memcpy(p, from, len);
	return 0;
#else
	return bpf_skb_store_bytes(ctx, off, from, len, 0);
#endif
}

/* ctx_store_bytes for bytes whose change no checksum field update balances (tc: BPF_F_RECOMPUTE_CSUM,
 * so skb->csum of a CHECKSUM_COMPLETE skb follows them; XDP has none). */
static __always_inline int ctx_store_bytes_rcsum(struct __ctx_buff *ctx, __u32 off, const void *from, const __u32 len)
{
#ifdef BPX_CTX_XDP
	return ctx_store_bytes(ctx, off, from, len);
#else
	return bpf_skb_store_bytes(ctx, off, from, len, BPF_F_RECOMPUTE_CSUM);
#endif
}

/* The checksum field at `off` after a 2- or 4-byte word it covers changed from `from` to
 * `to` (`size` is 2 or 4). */
static __always_inline int ctx_l3_csum_replace(struct __ctx_buff *ctx, __u32 off, __u32 from, __u32 to,
                                               const __u32 size)
{
#ifdef BPX_CTX_XDP
	__sum16 *check = ctx_ptr(ctx, off, sizeof(*check));

	if (!check)
		return -1;
	*check = size == 2 ? csum_replace2(*check, from, to) : csum_replace4(*check, from, to);
	return 0;
#else
	return bpf_l3_csum_replace(ctx, off, from, to, size);
#endif
}

/* The same for a TCP/UDP checksum; `flags` as bpf_l4_csum_replace's: BPF_F_PSEUDO_HDR (the
 * word is in the pseudo header: the same update for a complete checksum), BPF_F_MARK_MANGLED_0
 * (UDP: a zero checksum, "none", stays zero and a computed zero is written as all ones), and
 * the size in the low bits. */
static __always_inline int ctx_l4_csum_replace(struct __ctx_buff *ctx, __u32 off, __u32 from, __u32 to,
                                               const __u64 flags)
{
#ifdef BPX_CTX_XDP
	__sum16 *check = ctx_ptr(ctx, off, sizeof(*check));
	__sum16 sum;

	if (!check)
		return -1;
	if ((flags & BPF_F_MARK_MANGLED_0) && !*check)
		return 0;
	sum = (flags & BPF_F_HDR_FIELD_MASK) == 2 ? csum_replace2(*check, from, to) : csum_replace4(*check, from, to);
	if ((flags & BPF_F_MARK_MANGLED_0) && !sum)
		sum = CSUM_MANGLED_0;
	*check = sum;
	return 0;
#else
	return bpf_l4_csum_replace(ctx, off, from, to, flags);
#endif
}

/* The TCP/UDP checksum field at `off` after changes whose sum is `diff` (~old + new of each changed
 * word, csum.h), in one update: bpf_l4_csum_replace with size 0 (inet_proto_csum_replace_by_diff);
 * `flags` as ctx_l4_csum_replace's without a size. */
static __always_inline int ctx_l4_csum_diff(struct __ctx_buff *ctx, __u32 off, __u32 diff, const __u64 flags)
{
#ifdef BPX_CTX_XDP
	__sum16 *check = ctx_ptr(ctx, off, sizeof(*check));
	__sum16 sum;

	if (!check)
		return -1;
	if ((flags & BPF_F_MARK_MANGLED_0) && !*check)
		return 0;
	sum = csum_update(*check, diff);
	if ((flags & BPF_F_MARK_MANGLED_0) && !sum)
		sum = CSUM_MANGLED_0;
	*check = sum;
	return 0;
#else
	return bpf_l4_csum_replace(ctx, off, 0, diff, flags);
#endif
}

#endif
