/* Per-CPU packet/byte counters, one slot per named reason; `bpfproxy status` and
 * the metrics endpoint sum them over CPUs. A drop or reject (DROP_*, REJECT_*) is counted only
 * through fecount.h's bpx_drop/bpx_count_drop, which also reports it to `bpfproxy monitor`. */
#ifndef BPX_COUNTERS_H
#define BPX_COUNTERS_H
#include "common.h"
#include "ctx.h"

enum bpx_reason {
	BPX_CTR_TRANSLATED_NEW = 0,     /* new flow DNATed to a backend */
	BPX_CTR_TRANSLATED_EST = 1,     /* packet of a tracked flow DNATed */
	BPX_CTR_REVERSE_TRANSLATED = 2, /* reply source rewritten to the frontend */
	BPX_CTR_NOT_SERVICE = 3,        /* no frontend matched: passed untouched */
	BPX_CTR_REJECT_NO_BACKEND = 4,  /* frontend without backends: TCP RST / ICMP unreachable sent */
	BPX_CTR_AFFINITY_HIT = 5,       /* new flow sent to the client's affinity backend */
	BPX_CTR_BACKEND_RESELECT = 6,   /* tracked flow's backend was gone: chose again */
	BPX_CTR_ICMP_TRANSLATED = 7,    /* ICMP error about a translated flow rewritten (icmp.h) */
	BPX_CTR_ICMP_NOT_TRACKED = 8,   /* ICMP error about a flow not translated: passed untouched */
	BPX_CTR_FRAGMENT_NO_ENTRY = 9,  /* later IPv4 fragment without its first's ports: passed untouched */
	BPX_CTR_TUPLE_RELEASED = 10, /* event: a flow straight to a backend took over an earlier Service flow's tuple */
	BPX_CTR_XDP_TX = 11,         /* event: XDP sent a translated packet back out of its ingress device */
	BPX_CTR_REJECT_NO_CONNTRACK = 12, /* TCP non-SYN to a frontend without a flow: RST sent (or an RST dropped) */
	BPX_CTR_CT_RST_IGNORED = 13,      /* event: an RST outside the sender's window left conntrack alone */
	BPX_CTR_XDP_REDIRECT = 14,        /* event: XDP redirected a translated packet to another device */
	BPX_CTR_XDP_PASS_NO_XMIT =
	        15, /* event: XDP passed a packet to tc: its next hop's device is not known to take XDP frames */
	BPX_CTR_DROP_MALFORMED = 16,        /* truncated or bad headers on a frontend-bound packet */
	BPX_CTR_DROP_REWRITE = 17,          /* a packet rewrite helper failed */
	BPX_CTR_DROP_NO_BACKEND_ENTRY = 18, /* a slot named a backend id that is not in the backend map */
	BPX_CTR_DROP_FRAGMENT = 19,         /* IP fragment to a frontend without backends: not rejected */
	BPX_CTR_DROP_REJECT_FAILED = 20,    /* could not build the reject reply */
	BPX_CTR_DROP_NO_LOCAL_BACKEND = 21, /* Local traffic policy and no endpoint on this node */
	BPX_CTR_DROP_SOURCE_RANGE = 22,     /* source outside the frontend's loadBalancerSourceRanges */
	BPX_CTR_DROP_SNAT_EXHAUSTED = 23,   /* no free SNAT port (or no masquerade address) for a new flow */
	BPX_CTR_DROP_POD_SOURCE = 24,       /* from a pod interface with a source that is not routed back through it */
	BPX_CTR_REJECT_SUPPRESSED = 25,     /* reject due but over its source's rate limit: dropped without a reply */
	BPX_CTR_REJECT_MAP_FULL = 26,       /* frontend whose backends the daemon had no map room for: rejected */
	BPX_CTR_SNAT_EVICTED = 28,          /* event: a new flow took the SNAT port of an unestablished flow */
	BPX_CTR_DROP_NAT_NOT_OWNER = 29,    /* a tracked flow's SNAT port is held by another flow now */
	BPX_CTR_XDP_PASS_CSUM_PARTIAL = 30, /* event: XDP passed a packet to tc: L4 checksum = pseudo-header sum */
	BPX_CTR_DSR_OPTION_SENT = 32,       /* event: a DSR flow's packet left with the option (dsr.h) */
	BPX_CTR_DSR_RECEIVED = 33,    /* a packet with the DSR option: flow recorded, option stripped, passed up */
	BPX_CTR_DSR_FRAG_NEEDED = 34, /* DF packet too big for the DSR option: ICMP fragmentation needed sent */
	BPX_CTR_MAX = 40,
};

struct bpx_counter {
	__u64 packets; /* host order */
	__u64 bytes;   /* host order, L2 length */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_counter);
	__uint(max_entries, BPX_CTR_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_counters_v1 BPX_MAPS;

static __always_inline void bpx_count_len(__u32 reason, __u32 len)
{
	struct bpx_counter *c = bpf_map_lookup_elem(&bpx_counters_v1, &reason);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline void bpx_count(struct __ctx_buff *ctx, __u32 reason)
{
	bpx_count_len(reason, ctx_full_len(ctx));
}

#endif
