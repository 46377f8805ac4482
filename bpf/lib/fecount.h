/* Per-frontend packet counters for `bpfproxy status`: packets and bytes clients sent to each
 * frontend (new and tracked flows), keyed by its id, summed over CPUs by the reader. */
#ifndef BPX_FECOUNT_H
#define BPX_FECOUNT_H
#include "common.h"
#include "ctx.h"
#include "counters.h"

#define BPX_MAX_FE_STATS 65536

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, __u32); /* frontend (rev-NAT) id, host order */
	__type(value, struct bpx_counter);
	__uint(max_entries, BPX_MAX_FE_STATS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_fe_stats_v1 BPX_MAPS;

static __always_inline void fe_count_len(__u32 id, __u32 len)
{
	struct bpx_counter *c = bpf_map_lookup_elem(&bpx_fe_stats_v1, &id);

	if (c) {
		c->packets++;
		c->bytes += len;
		return;
	}
	struct bpx_counter first = {.packets = 1, .bytes = len};
	bpf_map_update_elem(&bpx_fe_stats_v1, &id, &first, BPF_NOEXIST);
}

static __always_inline void fe_count(struct __ctx_buff *ctx, __u32 id)
{
	fe_count_len(id, ctx_full_len(ctx));
}

#endif
