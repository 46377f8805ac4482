/* Least-connection selection (bpfproxy.io/lb-algorithm: least-conn): new flows of a frontend go to
 * the backend with fewer active flows, chosen by power of two choices over its slots (two distinct
 * random backends, the one with fewer active flows wins, a tie goes to the first, itself random;
 * with bpfproxy.io/backend-weights: drawn by weight, fewer per unit of weight wins). Active flows per
 * backend id are two counters, so that each has one kind of writer:
 *   bpx_lc_active_v1  BPF only, atomic add: +1 when a least-conn flow's forward conntrack entry is
 *                     created (marked BPX_CT_X_COUNTED), -1 when BPF sees it end (accepted RST, FIN
 *                     both ways) or replaces or deletes the entry (the mark is cleared at once);
 *   bpx_lc_gone_v1    the daemon only: flows it ended itself (the conntrack GC deleted a marked entry).
 * Active = active - gone (signed, at least 0). The daemon zeroes both when a backend id is released,
 * so a reused id starts from zero. Ids at or above BPX_MAX_LC are not counted (they count as 0). */
#ifndef BPX_LEASTCONN_H
#define BPX_LEASTCONN_H
#include "common.h"
#include "lb.h"
#include "conntrack.h"

#define BPX_MAX_LC 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);   /* backend id, host order */
	__type(value, __u64); /* flows counted in minus flows BPF saw end (wraps: read signed with gone) */
	__uint(max_entries, BPX_MAX_LC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_lc_active_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);   /* backend id, host order */
	__type(value, __u64); /* counted flows the daemon ended (conntrack GC), host order */
	__uint(max_entries, BPX_MAX_LC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_lc_gone_v1 BPX_MAPS;

static __always_inline bool svc_uses_least_conn(const struct bpx_svc_value *svc)
{
	return svc->flags & BPX_SVC_F_LEAST_CONN;
}

/* The backend's active flows. */
static __always_inline __u64 lc_active(__u32 backend_id)
{
	__u64 *active = bpf_map_lookup_elem(&bpx_lc_active_v1, &backend_id);
	__u64 *gone = bpf_map_lookup_elem(&bpx_lc_gone_v1, &backend_id);
	__s64 n;

	if (!active)
		return 0;
	n = (__s64)(*active - (gone ? *gone : 0));
	return n > 0 ? (__u64)n : 0;
}

/* The backend a new flow of the frontend {address, port_proto_scope: port | proto << 16 | scope << 24}
 * with `count` (> 0) slots takes (0: its slot is not written): a uniformly random slot's (lb.h
 * lb_select_slot; a weighted backend has a run of slots, so the draw is by weight), or for a least-conn
 * frontend (`svc_flags`) the one with fewer active flows per slot of two: the first drawn by weight, the
 * second by weight among the other backends (a slot outside the first's run). A tie goes to the first.
 * A slot's run is its count (length) and affinity_timeout (first slot, 0-based); 0 and 0 in the
 * unweighted encoding mean a run of one, itself (src/dataplane/bpf/slots.ts).
 * A global function (weak: every compilation unit of bpfproxy.o has it, the linker keeps one): the
 * verifier checks it once, on its own, and each caller path only steps over the call to its scalar result
 * (docs/architecture.md, "Verifier budget"). */
__weak __noinline __u32 lb_pick_backend(__u32 address, __u32 port_proto_scope, __u32 count, __u32 svc_flags)
{
	struct bpx_svc_key key = {
	        .address = address,
	        .port = (__be16)(port_proto_scope & 0xffff),
	        .proto = (__u8)(port_proto_scope >> 16),
	        .scope = (__u8)(port_proto_scope >> 24),
	};
	struct bpx_svc_value *slot;
	__u32 a, b, id, len_a, start_a, len_b;

	if (!count)
		return 0;
	a = bpf_get_prandom_u32() % count;
	key.slot = a + 1;
	slot = bpf_map_lookup_elem(&bpx_svc_v2, &key);
	if (!slot)
		return 0;
	id = slot->backend_id;
	if (!(svc_flags & BPX_SVC_F_LEAST_CONN))
		return id;
	len_a = slot->count ? slot->count : 1;
	start_a = slot->count ? slot->affinity_timeout : a;
	/* Only backends besides the first's (none: nothing to compare). */
	if (len_a >= count || start_a > count - len_a)
		return id;
	b = bpf_get_prandom_u32() % (count - len_a);
	if (b >= start_a)
		b += len_a;
	key.slot = b + 1;
	slot = bpf_map_lookup_elem(&bpx_svc_v2, &key);
	if (!slot)
		return id;
	len_b = slot->count ? slot->count : 1;
	/* active_b / len_b < active_a / len_a, without division (64 bits: counts fit 32, lengths 16). */
	if (lc_active(slot->backend_id) * len_a < lc_active(id) * len_b)
		id = slot->backend_id;
	return id;
}

/* A new flow's conntrack entries were written (`created` is ct_create's result, 0 on success): the
 * flow of a least-conn frontend (`svc_flags`) is one more active flow of its backend, and its forward
 * entry is marked so. The lookup is a least-conn flow's only. Global, like lb_pick_backend: verified once. */
__weak __noinline int lc_flow_opened(const struct bpx_ct_key *key, __u32 backend_id, __u32 svc_flags, int created)
{
	struct bpx_ct_entry *forward;
	struct bpx_ct_key k;
	__u64 *active;

	if (!key || !(svc_flags & BPX_SVC_F_LEAST_CONN) || created != 0)
		return 0;
	/* A map key from the stack: Linux 6.1 refuses an argument's memory as one. */
	k = *key;
	forward = ct_lookup(&k);
	if (!forward || forward->backend_id != backend_id)
		return 0;
	active = bpf_map_lookup_elem(&bpx_lc_active_v1, &backend_id);
	if (!active)
		return 0;
	forward->xflags |= BPX_CT_X_COUNTED;
	__sync_fetch_and_add(active, 1);
	return 1;
}

/* A counted flow is over (or its entry is replaced or deleted): the mark goes first, so each
 * flow is taken off once. The mark is cleared by a plain write: two CPUs ending the same flow
 * at the same instant (its two FINs crossing) could both take it off (docs/leastconn.md). */
__weak __noinline int lc_flow_ended(struct bpx_ct_entry *forward)
{
	__u32 backend_id;
	__u64 *active;

	if (!forward || !(forward->xflags & BPX_CT_X_COUNTED))
		return 0;
	backend_id = forward->backend_id;
	forward->xflags &= ~BPX_CT_X_COUNTED;
	active = bpf_map_lookup_elem(&bpx_lc_active_v1, &backend_id);
	if (active)
		__sync_fetch_and_add(active, -1);
	return 1;
}

/* The forward entry's state changed: a flow that is closed (an accepted RST, FIN from both
 * sides; docs/conntrack.md) is no longer active. Global: verified once, the caller does not fork on it. */
__weak __noinline int lc_note_state(struct bpx_ct_entry *forward)
{
	__u8 fins = BPX_CT_F_FIN_FORWARD | BPX_CT_F_FIN_REPLY;

	if (forward && (forward->xflags & BPX_CT_X_COUNTED) &&
	    ((forward->flags & BPX_CT_F_CLOSING) || (forward->flags & fins) == fins))
		return lc_flow_ended(forward);
	return 0;
}

#endif
