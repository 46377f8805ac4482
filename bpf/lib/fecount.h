/* Per-frontend and per-backend traffic for `bpfproxy status --stats`/`--rate` and /metrics
 * (bpfproxy_service_*, bpfproxy_backend_*): new connections, packets and bytes clients sent,
 * and per frontend the drops by reason. Per-CPU arrays indexed by the frontend (rev-NAT) id
 * and the backend id, summed over CPUs by the reader: a lookup the verifier inlines, no hash
 * and no update on the hot path (issue 16 item 10). Ids at or above BPX_MAX_FE_STATS /
 * BPX_MAX_BE_STATS are not counted here (the global counters still count them); the daemon
 * zeroes a slot when its id is released, so a reused id starts from zero. Every counted
 * outcome also goes to `bpfproxy monitor` (events.h) while one listens. bpx_fe_stats_v1 was an
 * LRU hash of struct bpx_counter before: a daemon finding that pin replaces it (migrate.ts,
 * "layout": counters are not carried over). */
#ifndef BPX_FECOUNT_H
#define BPX_FECOUNT_H
#include "common.h"
#include "ctx.h"
#include "counters.h"
#include "parse.h"
#include "lb.h"
#include "events.h"

#define BPX_MAX_FE_STATS 16384
#define BPX_MAX_BE_STATS 65536

/* bpx_fe_stats.drops slots: the drops a frontend's own settings or state cause. */
enum bpx_fe_drop {
	BPX_FE_DROP_NO_BACKEND = 0,        /* no endpoints: rejected (TCP RST / ICMP unreachable) */
	BPX_FE_DROP_SOURCE_RANGE = 1,      /* source outside loadBalancerSourceRanges */
	BPX_FE_DROP_NO_LOCAL_BACKEND = 2,  /* Local traffic policy, no endpoint on this node */
	BPX_FE_DROP_SNAT_EXHAUSTED = 3,    /* no free SNAT port for the new flow */
	BPX_FE_DROP_MAP_FULL = 4,          /* backends the daemon had no map room for: rejected */
	BPX_FE_DROP_NO_CONNTRACK = 5,      /* TCP non-SYN of a flow this node does not know: reset */
	BPX_FE_DROP_REJECT_SUPPRESSED = 6, /* a reject (4, 0 or 5) over its source's rate limit: dropped */
	/* 7: spare, so a new reason does not change the value layout again */
	BPX_FE_DROP_MAX = 8,
};

struct bpx_fe_stats {
	__u64 conns;                  /* new flows sent to a backend, host order */
	__u64 packets;                /* client packets translated (new and tracked flows), host order */
	__u64 bytes;                  /* their L2 length, host order */
	__u64 drops[BPX_FE_DROP_MAX]; /* packets dropped or rejected, by enum bpx_fe_drop, host order */
};

struct bpx_be_stats {
	__u64 conns;   /* new flows sent to this backend, host order */
	__u64 packets; /* client packets translated to it, host order */
	__u64 bytes;   /* their L2 length, host order */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* frontend (rev-NAT) id, host order */
	__type(value, struct bpx_fe_stats);
	__uint(max_entries, BPX_MAX_FE_STATS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_fe_stats_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* backend id, host order */
	__type(value, struct bpx_be_stats);
	__uint(max_entries, BPX_MAX_BE_STATS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_be_stats_v1 BPX_MAPS;

static __always_inline __u32 ctx_ingress_ifindex(const struct __ctx_buff *ctx)
{
#ifdef BPX_CTX_XDP
	return ctx->ingress_ifindex;
#else
	return ctx->ifindex;
#endif
}

/* A client packet of a tracked flow, translated. */
static __always_inline void fe_count_est(struct __ctx_buff *ctx, __u32 id, __u32 backend_id)
{
	struct bpx_fe_stats *f = bpf_map_lookup_elem(&bpx_fe_stats_v1, &id);
	struct bpx_be_stats *b = bpf_map_lookup_elem(&bpx_be_stats_v1, &backend_id);
	__u32 len = ctx_full_len(ctx);

	if (f) {
		f->packets++;
		f->bytes += len;
	}
	if (b) {
		b->packets++;
		b->bytes += len;
	}
}

/* The first packet of a new flow, translated to `backend`. */
static __always_inline void fe_count_new(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 id, __u32 backend_id,
                                         const struct bpx_backend *backend)
{
	struct bpx_fe_stats *f = bpf_map_lookup_elem(&bpx_fe_stats_v1, &id);
	struct bpx_be_stats *b = bpf_map_lookup_elem(&bpx_be_stats_v1, &backend_id);
	__u32 len = ctx_full_len(ctx);

	if (f) {
		f->conns++;
		f->packets++;
		f->bytes += len;
	}
	if (b) {
		b->conns++;
		b->packets++;
		b->bytes += len;
	}
	bpx_event_emit(pkt, BPX_EV_META(ctx_ingress_ifindex(ctx), BPX_EV_NEW_FLOW, BPX_CTR_TRANSLATED_NEW), id,
	               backend_id, BPX_EV_BACKEND(backend->address, backend->port));
}

/* Every drop and reject the data plane counts goes through here: counted globally under `reason`
 * and reported to `bpfproxy monitor` with its frontend (0 before one matched), so no drop is
 * counted without its event. */
static __always_inline void bpx_count_drop(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 id, __u32 reason)
{
	bpx_event_emit(pkt, BPX_EV_META(ctx_ingress_ifindex(ctx), BPX_EV_DROP, reason), id, 0, 0);
	bpx_count(ctx, reason);
}

static __always_inline int bpx_drop(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 id, __u32 reason)
{
	bpx_count_drop(ctx, pkt, id, reason);
	return CTX_ACT_DROP;
}

/* A frontend's packet dropped or rejected for `why` (enum bpx_fe_drop): the per-frontend slot only;
 * the caller counts and reports it (bpx_drop, reject_no_backend, reject_untracked). */
static __always_inline void fe_note_drop(__u32 id, __u32 why)
{
	struct bpx_fe_stats *f = bpf_map_lookup_elem(&bpx_fe_stats_v1, &id);

	if (f && why < BPX_FE_DROP_MAX)
		f->drops[why]++;
}

/* A frontend's packet dropped: per frontend, globally under `reason`, and to the monitor. */
static __always_inline int fe_drop(struct __ctx_buff *ctx, const struct bpx_pkt *pkt, __u32 id, __u32 why, __u32 reason)
{
	fe_note_drop(id, why);
	return bpx_drop(ctx, pkt, id, reason);
}

#endif
