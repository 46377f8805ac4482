/* The IPv6 path is its own program (datapath6.h), reached from each tc ingress entry by a tail
 * call when the packet is IPv6, so the IPv4 programs' verifier counts stay where they are. The
 * loader fills the slots after load (src/dataplane/bpf/tail.ts); an empty slot makes the tail call
 * fall through, and the entry passes the packet untouched (what every IPv6 packet got before). */
#ifndef BPX_TAIL_H
#define BPX_TAIL_H
#include <stdbool.h>
#include "common.h"
#include "ctx.h"
#include "scope.h"

#define BPX_TAIL_V6_POD 0        /* bpx_v6_from_pod: Ethernet, from a pod interface */
#define BPX_TAIL_V6_DEVICE 1     /* bpx_v6_from_device: Ethernet, from a device */
#define BPX_TAIL_V6_L3DEV 2      /* bpx_v6_from_l3dev: an L3 device (no link-layer header) */
#define BPX_TAIL_V6_REVERSE 3    /* bpx_v6_reverse: tc egress, Ethernet */
#define BPX_TAIL_V6_REVERSE_L3 4 /* bpx_v6_reverse_l3: tc egress of an L3 device */
#define BPX_TAIL_V6_ICMP 5       /* bpx_v6_icmp: an ICMPv6 error (icmp6.h), Ethernet, either direction */
#define BPX_TAIL_V6_ICMP_L3 6    /* bpx_v6_icmp_l3: the same on an L3 device */
/* The __sk_buff cb word telling bpx_v6_icmp* which hook called it: nonzero at tc egress. */
#define BPX_CB_ICMP6_EGRESS 0
#define BPX_TAIL_SLOTS 8

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, BPX_TAIL_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_tail_v1 BPX_MAPS;

/* XDP's IPv6 program (bpx_xdp_v6, prog/xdp_v6.bpf.c), tail-called by bpx_xdp: a map of its own, since a
 * PROG_ARRAY holds programs of one type only (the first program using it fixes the type). */
#define BPX_XDP_TAIL_V6 0
#define BPX_XDP_TAIL_SLOTS 1

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, BPX_XDP_TAIL_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_xdp_tail_v1 BPX_MAPS;

/* An IPv6 packet (not IPv4: on the IPv4 path's way out) goes to its hook's program; true when the
 * caller must pass it on (no program loaded: XDP passes it to tc, tc up the stack). */
static __always_inline bool tail_call_v6(struct __ctx_buff *ctx, const int from)
{
#ifdef BPX_CTX_XDP
	struct ethhdr *eth = ctx_ptr(ctx, 0, sizeof(*eth));

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return false;
	bpf_tail_call(ctx, &bpx_xdp_tail_v1, BPX_XDP_TAIL_V6);
	return true;
#else
	if (ctx->protocol != bpf_htons(ETH_P_IPV6))
		return false;
#ifdef BPX_L3_DEV
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_V6_L3DEV);
#else
	bpf_tail_call(ctx, &bpx_tail_v1, from == BPX_FROM_POD ? BPX_TAIL_V6_POD : BPX_TAIL_V6_DEVICE);
#endif
	return true;
#endif
}

/* From an IPv6 program, an ICMPv6 message to its own program (icmp6.h: a frame of its own for the
 * 512-byte stack, a verifier budget of its own). An empty slot falls through. */
static __always_inline void tail_call_icmp6(struct __ctx_buff *ctx, const bool egress)
{
#ifndef BPX_CTX_XDP
	ctx->cb[BPX_CB_ICMP6_EGRESS] = egress;
#ifdef BPX_L3_DEV
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_V6_ICMP_L3);
#else
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_V6_ICMP);
#endif
#endif
}

/* The same at tc egress. */
static __always_inline bool tail_call_v6_egress(struct __ctx_buff *ctx)
{
#ifdef BPX_CTX_XDP
	return false;
#else
	if (ctx->protocol != bpf_htons(ETH_P_IPV6))
		return false;
#ifdef BPX_L3_DEV
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_V6_REVERSE_L3);
#else
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_V6_REVERSE);
#endif
	return true;
#endif
}

#endif
