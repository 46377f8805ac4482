/* Per-frontend and per-backend traffic of the IPv6 path, in IPv4's per-CPU arrays (fecount.h): both
 * are indexed by ids of the one space both families share. A tracked flow's packets and every drop
 * slot use fecount.h's own helpers; a new flow is counted here, without fecount.h's monitor event,
 * whose record holds IPv4 addresses (`bpfproxy monitor` does not see IPv6 flows). */
#ifndef BPX_FECOUNT6_H
#define BPX_FECOUNT6_H
#include "fecount.h"

/* The first packet of a new IPv6 flow, translated to backend_id. */
static __always_inline void fe6_count_new(struct __ctx_buff *ctx, __u32 id, __u32 backend_id)
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
}

#endif
