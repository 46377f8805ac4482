/* `bpfproxy monitor` events of the IPv6 path (events.h): the same ring buffer, rate window and
 * switch as IPv4's, in a record of their own with 16-byte addresses (a reader tells the two apart by
 * the record's length). The IPv6 path counts drops without the parsed packet at hand (datapath6.h
 * bpx6_drop), so bpx6_event reads the tuple from the packet itself: a global function, verified once
 * per program and costing its callers one call, and nothing but an array lookup while nobody listens. */
#ifndef BPX_EVENTS6_H
#define BPX_EVENTS6_H
#include "common.h"
#include "ctx.h"
#include "counters.h"
#include "events.h"
#include "ipv6.h"
#ifndef BPX_CTX_XDP
#include "lb6.h"
#include "frag6.h"
#include "scope.h"
#include "reject6.h"
#endif

struct bpx_event6 {
	__u64 ts_ns;                   /* bpf_ktime_get_ns(), host order */
	__u32 rev_nat_id;              /* frontend id, host order; 0: none */
	__u32 backend_id;              /* BPX_EV_NEW_FLOW: backend id, host order; else 0 */
	union bpx_v6addr saddr;        /* client, network byte order */
	union bpx_v6addr daddr;        /* address the client sent to, network byte order */
	union bpx_v6addr backend_addr; /* BPX_EV_NEW_FLOW: backend address, network byte order */
	__u32 ifindex;                 /* interface the packet came in on (tc egress: went out of), host order */
	__be16 sport;                  /* network byte order; 0 when not TCP/UDP */
	__be16 dport;                  /* network byte order */
	__be16 backend_port;           /* network byte order */
	__u8 type;                     /* BPX_EV_* */
	__u8 reason;                   /* enum bpx_reason (counters.h) */
	__u8 proto;                    /* the upper-layer protocol (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6...) */
	__u8 pad[3];
};

#ifndef BPX_CTX_XDP
/* bpx6_event's type_reason: BPX_EV_* and enum bpx_reason in one argument, and BPX_EV6_F_REPLY: the packet
 * is the reply built to it, addresses and ports swapped (a TCP RST, reject6.h). */
#define BPX_EV6_TR(type, reason) (((__u32)(type) << 8) | (__u32)(reason))
#define BPX_EV6_F_REPLY (1U << 16)

/* The record's fixed part, every other byte zeroed (reserved ring-buffer memory is not). Out of line, so
 * struct bpx_event6 is in the object's BTF (test/abi-btf.test.ts). */
static __noinline int bpx_event6_init(struct bpx_event6 *ev, __u64 now, __u32 type_reason, __u32 ifindex)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = now;
	ev->type = (type_reason >> 8) & 0xff;
	ev->reason = type_reason & 0xff;
	ev->ifindex = ifindex;
	return 0;
}

/* Reports the packet whose IPv6 header is at ip_off, before the path rewrote it: a new flow to backend_id
 * of frontend id, or a drop (id 0: the frontend the packet is addressed to, if any, as a drop of IPv4's
 * names the frontend it matched; none for a forged pod source, dropped before any was looked at, as
 * IPv4's). A later fragment takes its datagram's ports from its first fragment (frag6.h). Takes only
 * scalars and the context, so that it is verified once whatever its callers hold; __weak: tc_v6.o and
 * tc_v6_l3.o both define it, identically (the offset is an argument), and are linked into one object.
 * The record is written in place in the ring buffer: the IPv6 programs' frames leave little stack. */
__weak __noinline int bpx6_event(struct __ctx_buff *ctx, __u32 ip_off, __u32 type_reason, __u32 id, __u32 backend_id)
{
	struct bpx_events_window *w;
	struct bpx_event6 *ev;
	struct bpx_ip6_walk walk;
	bool reply = type_reason & BPX_EV6_F_REPLY;
	__u8 next;
	__u64 now;

	w = bpx_event_window((type_reason >> 8) & 0xff, &now);
	if (!w)
		return 0;
	ev = bpf_ringbuf_reserve(&bpx_events_v1, sizeof(*ev), 0);
	if (!ev) {
		w->lost++;
		return 0;
	}
	bpx_event6_init(ev, now, type_reason, ctx->ifindex);
	ev->backend_id = backend_id;
	/* A reply that is an ICMPv6 error (reject6.h) quotes the packet, in its own orientation. */
	if (reply && bpf_skb_load_bytes(ctx, ip_off + offsetof(struct ipv6hdr, nexthdr), &next, 1) == 0 &&
	    next == BPX_NEXTHDR_ICMP6) {
		ip_off += BPX_IP6_HLEN + 8;
		reply = false;
	}
	if (bpf_skb_load_bytes(ctx, ip_off + offsetof(struct ipv6hdr, nexthdr), &next, 1) < 0 ||
	    bpf_skb_load_bytes(ctx, ip_off + offsetof(struct ipv6hdr, saddr), reply ? &ev->daddr : &ev->saddr, 16) <
	            0 ||
	    bpf_skb_load_bytes(ctx, ip_off + offsetof(struct ipv6hdr, daddr), reply ? &ev->saddr : &ev->daddr, 16) <
	            0) {
		bpf_ringbuf_discard(ev, 0);
		return 0;
	}
	ev->proto = next;
	if (ip6_walk_ext(ctx, ip_off, next, &walk) == 0) {
		ev->proto = walk.next;
		if (walk.frag & BPX_PKT6_F_LATER) {
			struct bpx_frag6_key fk = {.saddr = ev->saddr, .daddr = ev->daddr, .id = walk.frag_id};
			struct bpx_frag6_ports *first = bpf_map_lookup_elem(&bpx_frag6_v1, &fk);

			if (first) {
				ev->sport = first->sport;
				ev->dport = first->dport;
				ev->proto = first->proto;
			}
		} else if (walk.next == IPPROTO_TCP || walk.next == IPPROTO_UDP) {
			__be16 ports[2];

			if (bpf_skb_load_bytes(ctx, walk.off, ports, sizeof(ports)) == 0) {
				ev->sport = ports[reply ? 1 : 0];
				ev->dport = ports[reply ? 0 : 1];
			}
		}
	}
	if (ev->type == BPX_EV_NEW_FLOW) {
		struct bpx_backend6 *b = bpf_map_lookup_elem(&bpx_backend6_v1, &backend_id);

		if (b) {
			ev->backend_addr = b->address;
			ev->backend_port = b->port;
		}
	} else if (!id && ev->reason != BPX_CTR_DROP_POD_SOURCE && ev->dport) {
		struct bpx_svc6_key key = {.address = ev->daddr, .port = ev->dport, .proto = ev->proto};
		struct bpx_svc_value *svc = lb6_lookup_service(&key, BPX_SCOPE_INTERNAL);

		if (svc)
			id = svc->rev_nat_id;
	}
	ev->rev_nat_id = id;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* A reject sent (reject6.h): the packet is its reply now. A TCP RST holds the tuple swapped; an ICMPv6
 * error quotes the packet from its IPv6 header, after its own IPv6 and ICMPv6 headers (bpx6_event). */
static __always_inline void bpx6_event_rejected(struct __ctx_buff *ctx, __u32 id, __u32 reason)
{
	bpx6_event(ctx, BPX_IP6_OFF, BPX_EV6_TR(BPX_EV_DROP, reason) | BPX_EV6_F_REPLY, id, 0);
}

#else
/* XDP (a ctx-generic IPv6 path): not reported yet; the events above read the packet with tc's helpers. */
#define BPX_EV6_TR(type, reason) 0
#define BPX_EV6_F_REPLY 0
static __always_inline int bpx6_event(struct __ctx_buff *ctx, __u32 ip_off, __u32 type_reason, __u32 id,
                                      __u32 backend_id)
{
	return 0;
}
static __always_inline void bpx6_event_rejected(struct __ctx_buff *ctx, __u32 id, __u32 reason)
{
}
#endif

/* A drop counted but not reported: the ICMPv6 programs' frames (icmp6.h) leave no room on the 512-byte
 * combined stack for bpx6_event's. */
static __always_inline int bpx6_drop_unreported(struct __ctx_buff *ctx, __u32 reason)
{
	bpx_count(ctx, reason);
	return CTX_ACT_DROP;
}

#endif
