/* Data-plane events for `bpfproxy monitor`: drops and rejects with their reason, new flows
 * with the backend chosen, written to a ring buffer only while a monitor listens. A monitor
 * turns them on by writing bpx_events_cfg_v1 (an expiry it renews every second, so a killed
 * monitor turns them off by itself); with nobody listening an event costs one array lookup
 * and a compare, and never reserves ring-buffer space. While on, each CPU emits at most
 * `rate` events per second (a per-CPU window, no atomics); what it holds back is counted
 * (BPX_EV_SLOT_SUPPRESSED), as are events the ring buffer had no room for. */
#ifndef BPX_EVENTS_H
#define BPX_EVENTS_H
#include "common.h"
#include "parse.h"

#define BPX_EV_NEW_FLOW 1 /* a new flow was sent to a backend (backend_* set) */
#define BPX_EV_DROP 2     /* dropped or rejected; reason is an enum bpx_reason */

#define BPX_EV_F_DROPS_ONLY (1U << 0) /* new flows are not reported */

#define BPX_EV_RINGBUF_SIZE (256 * 1024)

struct bpx_event {
	__u64 ts_ns;         /* bpf_ktime_get_ns(), host order */
	__u32 rev_nat_id;    /* frontend id, host order */
	__u32 backend_id;    /* BPX_EV_NEW_FLOW: backend id, host order; else 0 */
	__be32 saddr;        /* client, network byte order */
	__be32 daddr;        /* frontend address the client used, network byte order */
	__be32 backend_addr; /* BPX_EV_NEW_FLOW: backend address, network byte order */
	__u32 ifindex;       /* interface the packet came in on, host order */
	__be16 sport;        /* network byte order */
	__be16 dport;        /* network byte order */
	__be16 backend_port; /* network byte order */
	__u8 type;           /* BPX_EV_* */
	__u8 reason;         /* enum bpx_reason (counters.h) */
	__u8 proto;          /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[7];
};

/* Written by `bpfproxy monitor` only. */
struct bpx_events_config {
	__u64 until_ns; /* events on while bpf_ktime_get_ns() < until_ns; 0 = off. Host order */
	__u32 rate;     /* events per second per CPU, host order */
	__u32 flags;    /* BPX_EV_F_*, host order */
	__u32 owner;    /* never read by BPF: the listening monitor's pid, so a second one refuses to start
	                 * (ring-buffer records go to whichever reader takes them first) */
	__u32 pad;
};

/* Per-CPU rate window and what it held back. */
struct bpx_events_window {
	__u64 start_ns;   /* start of the current one-second window, host order */
	__u64 emitted;    /* events emitted in it, host order */
	__u64 suppressed; /* events held back by the rate limit (total), host order */
	__u64 lost;       /* events the ring buffer had no room for (total), host order */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BPX_EV_RINGBUF_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_events_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_events_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_events_cfg_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_events_window);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_events_rl_v1 BPX_MAPS;

/* Out of line, so struct bpx_event is in the object's BTF (the ABI test reads it from there). */
static __noinline int bpx_event_submit(const struct bpx_event *ev, struct bpx_events_window *w)
{
	if (bpf_ringbuf_output(&bpx_events_v1, (void *)ev, sizeof(*ev), 0) < 0)
		w->lost++;
	return 0;
}

/* This CPU's rate window when an event of `type` is to be written now (a monitor listens, does not
 * filter it out, and the window has room; counted in it), NULL otherwise. Shared with events6.h. */
static __always_inline struct bpx_events_window *bpx_event_window(__u32 type, __u64 *now)
{
	struct bpx_events_config *cfg;
	struct bpx_events_window *w;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&bpx_events_cfg_v1, &zero);
	if (!cfg || !cfg->until_ns)
		return NULL;
	if (type == BPX_EV_NEW_FLOW && (cfg->flags & BPX_EV_F_DROPS_ONLY))
		return NULL;
	*now = bpf_ktime_get_ns();
	if (*now >= cfg->until_ns)
		return NULL;
	w = bpf_map_lookup_elem(&bpx_events_rl_v1, &zero);
	if (!w)
		return NULL;
	if (*now - w->start_ns >= 1000000000ULL) {
		w->start_ns = *now;
		w->emitted = 0;
	}
	if (w->emitted >= cfg->rate) {
		w->suppressed++;
		return NULL;
	}
	w->emitted++;
	return w;
}

/* Out of line: one copy per program, and the verifier walks the enabled path once per call
 * site instead of once per path through the caller. */
static __noinline int bpx_event_emit(const struct bpx_pkt *pkt, __u64 meta, __u32 rev_nat_id, __u32 backend_id,
                                     __u64 backend)
{
	struct bpx_events_window *w;
	struct bpx_event ev = {};
	__u64 now;

	w = bpx_event_window((meta >> 8) & 0xff, &now);
	if (!w)
		return 0;
	ev.ts_ns = now;
	ev.type = (meta >> 8) & 0xff;
	ev.reason = meta & 0xff;
	ev.ifindex = meta >> 32;
	ev.rev_nat_id = rev_nat_id;
	ev.backend_id = backend_id;
	ev.saddr = pkt->saddr;
	ev.daddr = pkt->daddr;
	ev.sport = pkt->sport;
	ev.dport = pkt->dport;
	ev.proto = pkt->proto;
	ev.backend_addr = (__be32)(backend >> 16);
	ev.backend_port = (__be16)(backend & 0xffff);
	return bpx_event_submit(&ev, w);
}

/* bpx_event_emit's meta: ingress ifindex, type and reason in one argument (five at most). */
#define BPX_EV_META(ifindex, type, reason) (((__u64)(ifindex) << 32) | ((__u32)(type) << 8) | (__u32)(reason))
/* bpx_event_emit's backend: address and port in one argument. */
#define BPX_EV_BACKEND(addr, port) (((__u64)(addr) << 16) | (__u16)(port))

#endif
