/* The IPv6 path (datapath6.h) and direct server return (dsr.h) are programs of their own, reached
 * from the tc entries by tail calls, so the IPv4 programs' verifier counts stay where they are. The
 * loader fills the slots after load (src/dataplane/bpf/tail.ts); an empty slot makes the tail call
 * fall through, and the entry passes an IPv6 packet untouched (what every IPv6 packet got before). */
#ifndef BPX_TAIL_H
#define BPX_TAIL_H
#include <stdbool.h>
#include "common.h"
#include "ctx.h"
#include "scope.h"
#include "parse.h"
#include "lb.h"

#define BPX_TAIL_V6_POD 0        /* bpx_v6_from_pod: Ethernet, from a pod interface */
#define BPX_TAIL_V6_DEVICE 1     /* bpx_v6_from_device: Ethernet, from a device */
#define BPX_TAIL_V6_L3DEV 2      /* bpx_v6_from_l3dev: an L3 device (no link-layer header) */
#define BPX_TAIL_V6_REVERSE 3    /* bpx_v6_reverse: tc egress, Ethernet */
#define BPX_TAIL_V6_REVERSE_L3 4 /* bpx_v6_reverse_l3: tc egress of an L3 device */
#define BPX_TAIL_V6_ICMP 5       /* bpx_v6_icmp: an ICMPv6 error (icmp6.h), Ethernet, either direction */
#define BPX_TAIL_V6_ICMP_L3 6    /* bpx_v6_icmp_l3: the same on an L3 device */
#define BPX_TAIL_DSR_LB 7        /* bpx_dsr_lb: tc ingress of an Ethernet device, a DSR flow's client packet */
#define BPX_TAIL_DSR_BACKEND 8   /* bpx_dsr_backend: tc ingress of an Ethernet device, a packet with the DSR option */
/* The __sk_buff cb word telling bpx_v6_icmp* which hook called it: nonzero at tc egress. */
#define BPX_CB_ICMP6_EGRESS 0
#define BPX_TAIL_SLOTS 16

#ifdef BPX_L3_DEV
#define BPX_L3_DEV_BUILD 1 /* DSR is for Ethernet devices only (docs/dsr.md) */
#else
#define BPX_L3_DEV_BUILD 0
#endif

/* The IPv4 option that carries a DSR flow's frontend to the backend's node (dsr.h, docs/dsr.md): RFC 4727's
 * experimental option number 30 with the copied bit (every fragment carries it), class 0: 0x9e. */
#define BPX_DSR_OPT_TYPE 0x9e
#define BPX_DSR_OPT_LEN 8
/* skb->cb[1] of a packet handed to bpx_dsr_lb, beside the backend in cb[0] (0: a tracked flow). */
#define BPX_DSR_CB_MAGIC 0x44535231

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, BPX_TAIL_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_tail_v1 BPX_MAPS;

/* An IPv6 packet (not IPv4: on the IPv4 path's way out) goes to its hook's program; true when the
 * caller must pass it on (no program loaded). XDP leaves IPv6 to tc. */
static __always_inline bool tail_call_v6(struct __ctx_buff *ctx, const int from)
{
#ifdef BPX_CTX_XDP
	return false;
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

/* Whether a new flow's packet is bpx_dsr_lb's: a frontend with BPX_SVC_X_DSR (`svc_xflags`), from outside the
 * cluster through a device, to a backend on another node, an IPv4 header without options (the option goes after
 * 20 bytes), not a fragment. A global function (as leastconn.h's): verified once on its own, and the caller's
 * state is not split by each comparison (which doubled bpx_from_device's verified instructions when inline). */
__weak __noinline int dsr_wanted(__u32 svc_xflags, __u32 scope, __u32 backend_flags, __u32 ip_hlen, __u32 fragment)
{
	return (svc_xflags & BPX_SVC_X_DSR) && scope == BPX_SCOPE_EXTERNAL &&
	       !(backend_flags & BPX_BACKEND_F_NODE_LOCAL) && ip_hlen == 20 && !fragment;
}

/* A DSR flow's client packet (new: the backend chosen, `backend_id`; tracked: 0) goes to bpx_dsr_lb, which
 * adds the option and sends it to the backend's node. Only tc on Ethernet devices has it; the caller drops what
 * comes back (no program loaded: the daemon fills the slot before it attaches anything). */
static __always_inline void tail_call_dsr_lb(struct __ctx_buff *ctx, __u32 backend_id)
{
#if !defined(BPX_CTX_XDP) && !defined(BPX_L3_DEV)
	ctx->cb[0] = backend_id;
	ctx->cb[1] = BPX_DSR_CB_MAGIC;
	bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_DSR_LB);
#endif
}

#if !defined(BPX_CTX_XDP) && !defined(BPX_L3_DEV)
/* Whether a packet is one bpx_dsr_lb of some node sent here: a 28-byte IPv4 header whose one option is the DSR
 * option, exactly as dsr_push_opt writes it (type, length 8, a frontend port and address), naming a frontend
 * this node knows too (an exact external one, or a NodePort: the wildcard entry of its port), and for TCP
 * only on a connection's first segment (SYN without ACK: the only TCP segment that carries it). Type 0x9e is
 * an experimental option anyone may send: a packet that merely has it (a pod's reply, a NodePort flow's
 * reply to the masquerade address) must take the ordinary path, since bpx_dsr_backend strips the option and
 * hands the packet to the stack untranslated (the cause of the lost flows in test/fuzz-csum, docs/dsr.md).
 * Global (verified once on its own): the caller's state is not split by these tests. The parser made the
 * IPv4 header and 8 bytes after it linear. */
__weak __noinline int dsr_has_option(struct __sk_buff *ctx)
{
	struct bpx_svc_key key = {};
	__u8 h[BPX_IP_HLEN_MIN + BPX_DSR_OPT_LEN];
	__u8 tcp_flags;

	if (bpf_skb_load_bytes(ctx, BPX_ETH_HLEN, h, sizeof(h)) < 0)
		return 0;
	if (h[0] != 0x47 || h[BPX_IP_HLEN_MIN] != BPX_DSR_OPT_TYPE || h[BPX_IP_HLEN_MIN + 1] != BPX_DSR_OPT_LEN)
		return 0;
	/* TCP, not a later fragment (6-7: flags and fragment offset, 9: protocol, 33: TCP flags). */
	if (h[9] == IPPROTO_TCP && !(((h[6] << 8) | h[7]) & BPX_IP_OFFSET)) {
		if (bpf_skb_load_bytes(ctx, BPX_ETH_HLEN + sizeof(h) + 13, &tcp_flags, 1) < 0 ||
		    (tcp_flags & (BPX_TCP_SYN | BPX_TCP_ACK)) != BPX_TCP_SYN)
			return 0;
	}
	__builtin_memcpy(&key.port, &h[BPX_IP_HLEN_MIN + 2], sizeof(key.port));
	__builtin_memcpy(&key.address, &h[BPX_IP_HLEN_MIN + 4], sizeof(key.address));
	key.proto = h[9];
	if (!key.port || !key.address)
		return 0;
	if (lb_lookup_service(&key, BPX_SCOPE_EXTERNAL))
		return 1;
	key.address = 0; /* a NodePort of another node's address: its wildcard entry (nodeport.h) */
	return lb_lookup_service(&key, BPX_SCOPE_EXTERNAL) != NULL;
}
#endif

/* A packet from a device with the DSR option goes to bpx_dsr_backend (the backend's node: reads and strips it).
 * Else, or without the program, the caller goes on. */
static __always_inline void tail_call_dsr_backend(struct __ctx_buff *ctx, const int from)
{
#if !defined(BPX_CTX_XDP) && !defined(BPX_L3_DEV)
	if (from == BPX_FROM_DEVICE && dsr_has_option(ctx))
		bpf_tail_call(ctx, &bpx_tail_v1, BPX_TAIL_DSR_BACKEND);
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
