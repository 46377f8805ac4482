// SPDX-License-Identifier: GPL-2.0
/* FROZEN COPY of the released _v1 data plane (bpf/ as of ABI v1), kept only so the tests can run it
 * and prove that a daemon migrates its pins without dropping flows. Never edit. */
/* bpfproxy service translation at tc ingress.
 *
 * Two thin entry programs share one inline core, specialised by a constant:
 *   bpx_from_pod     host side of pod veths: all traffic is internal;
 *   bpx_from_device  external devices: internal only from a cluster CIDR.
 *
 * Per IPv4 TCP/UDP packet, in order:
 *   1. reply of a tracked flow (CT reply entry) -> source rewritten to the frontend;
 *   2. tracked flow from a client (CT forward entry, alive, backend present) -> DNAT;
 *   3. new flow to a frontend -> backend chosen (affinity, else random slot), tracked,
 *      DNAT; a frontend without backends is rejected (TCP RST / ICMP port unreachable).
 * Anything else passes untouched.
 *
 * Counting: every IPv4 TCP/UDP packet is counted under exactly one outcome reason
 * (TRANSLATED_*, REVERSE_TRANSLATED, NOT_SERVICE, REJECT_NO_BACKEND, DROP_*);
 * AFFINITY_HIT and BACKEND_RESELECT are events counted in addition. Other traffic is
 * not counted, so it costs one parse only. */
#include "common.h"
#include "config.h"
#include "counters.h"
#include "lb.h"
#include "conntrack.h"
#include "affinity.h"
#include "parse.h"
#include "nat.h"
#include "reject.h"
#include "scope.h"

static __always_inline int bpx_pass(struct __sk_buff *skb, __u32 reason)
{
	bpx_count(skb, reason);
	return TC_ACT_OK;
}

static __always_inline int bpx_drop(struct __sk_buff *skb, __u32 reason)
{
	bpx_count(skb, reason);
	return TC_ACT_SHOT;
}

static __always_inline __u8 ct_flags_of(const struct bpx_pkt *pkt)
{
	return pkt_closes_connection(pkt) ? BPX_CT_F_CLOSING : 0;
}

/* Fragments carry ports in the first fragment only, so they cannot be translated
 * consistently: those of a frontend or a tracked reply are dropped. Non-first fragments
 * cannot be matched at all and pass. */
static __always_inline int handle_fragment(struct __sk_buff *skb, const struct bpx_pkt *pkt, const int from)
{
	struct bpx_svc_key svc_key = {.address = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct bpx_ct_key key;

	if (!pkt->has_ports)
		return bpx_pass(skb, BPX_CTR_NOT_SERVICE);
	if (lb_lookup_service(&svc_key, packet_scope(pkt->saddr, from)))
		return bpx_drop(skb, BPX_CTR_DROP_FRAGMENT);
	ct_key_init(&key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, BPX_CT_DIR_REPLY);
	if (ct_lookup(&key))
		return bpx_drop(skb, BPX_CTR_DROP_FRAGMENT);
	return bpx_pass(skb, BPX_CTR_NOT_SERVICE);
}

/* 1. Backend -> client: the source becomes the frontend again. The forward entry learns
 * about replies (SEEN_REPLY, CLOSING) and stays alive while only the backend talks, but
 * is written at most once per BPX_CT_REFRESH_INTERVAL_NS unless its flags change. */
static __always_inline int reverse_translate(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                             struct bpx_ct_entry *reply, const struct bpx_rev_nat *nat, __u64 now)
{
	__u8 flags = BPX_CT_F_SEEN_REPLY | ct_flags_of(pkt);

	if ((reply->flags | flags) != reply->flags || now - reply->last_seen_ns > BPX_CT_REFRESH_INTERVAL_NS) {
		struct bpx_ct_entry *forward;
		struct bpx_ct_key key;

		ct_key_init(&key, pkt->daddr, nat->address, pkt->dport, nat->port, pkt->proto, BPX_CT_DIR_FORWARD);
		forward = ct_lookup(&key);
		if (forward && forward->backend_id == reply->backend_id)
			ct_entry_touch(forward, flags, now);
	}
	ct_entry_touch(reply, flags, now);

	if (nat_rev_snat(skb, pkt, nat->address, nat->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	return bpx_pass(skb, BPX_CTR_REVERSE_TRANSLATED);
}

/* 2. Client -> frontend of a tracked flow whose backend still exists. */
static __always_inline int translate_tracked(struct __sk_buff *skb, const struct bpx_pkt *pkt,
                                             const struct bpx_ct_key *key, struct bpx_ct_entry *forward,
                                             const struct bpx_backend *backend, __u64 now)
{
	__u8 flags = ct_flags_of(pkt);

	if (unlikely(flags && !ct_entry_is_closing(forward))) {
		struct bpx_ct_entry *reply;
		struct bpx_ct_key reply_key;

		ct_key_reply_of(&reply_key, key, backend->address, backend->port);
		reply = ct_lookup(&reply_key);
		if (reply)
			ct_entry_touch(reply, flags, now);
	}
	ct_entry_touch(forward, flags, now);

	if (nat_dnat(skb, pkt, backend->address, backend->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	return bpx_pass(skb, BPX_CTR_TRANSLATED_EST);
}

/* A frontend without backends: answer in place and send the answer back out of the
 * interface the packet came in on. */
static __always_inline int reject_no_backend(struct __sk_buff *skb, const struct bpx_pkt *pkt)
{
	switch (reject_build_reply(skb, pkt)) {
	case BPX_REJECT_SENT:
		bpx_count(skb, BPX_CTR_REJECT_NO_BACKEND);
		return bpf_redirect(skb->ifindex, 0);
	case BPX_REJECT_SILENT:
		return bpx_drop(skb, BPX_CTR_REJECT_NO_BACKEND);
	case BPX_REJECT_MALFORMED:
		return bpx_drop(skb, BPX_CTR_DROP_MALFORMED);
	default:
		return bpx_drop(skb, BPX_CTR_DROP_REJECT_FAILED);
	}
}

/* 3. Client -> frontend, not (or no longer usefully) tracked: choose a backend. */
static __always_inline int translate_new(struct __sk_buff *skb, const struct bpx_pkt *pkt, const struct bpx_ct_key *key,
                                         __u8 scope, bool reselect, __u64 now)
{
	struct bpx_svc_key svc_key = {.address = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct bpx_backend *backend = NULL;
	struct bpx_svc_value *svc, *slot;
	__u32 backend_id = 0;
	__u16 rev_nat_id;
	bool affinity;

	svc = lb_lookup_service(&svc_key, scope);
	if (!svc)
		return bpx_pass(skb, BPX_CTR_NOT_SERVICE);
	if (!svc_has_backends(svc)) {
		if (svc_drops_when_empty(svc))
			return bpx_drop(skb, BPX_CTR_DROP_NO_LOCAL_BACKEND);
		return reject_no_backend(skb, pkt);
	}
	if (reselect)
		bpx_count(skb, BPX_CTR_BACKEND_RESELECT);

	rev_nat_id = svc->rev_nat_id;
	affinity = svc_has_affinity(svc);
	if (affinity && affinity_lookup(pkt->saddr, rev_nat_id, svc->affinity_timeout, now, &backend_id)) {
		backend = lb_lookup_backend(backend_id);
		if (backend)
			bpx_count(skb, BPX_CTR_AFFINITY_HIT);
	}
	if (!backend) {
		slot = lb_select_slot(&svc_key, svc);
		if (!slot)
			return bpx_drop(skb, BPX_CTR_DROP_NO_BACKEND_ENTRY);
		backend_id = slot->backend_id;
		backend = lb_lookup_backend(backend_id);
		if (!backend)
			return bpx_drop(skb, BPX_CTR_DROP_NO_BACKEND_ENTRY);
	}
	if (affinity)
		affinity_update(pkt->saddr, rev_nat_id, backend_id, now);

	/* A full table only costs stickiness: the next packet chooses again. */
	ct_create(key, backend->address, backend->port, backend_id, rev_nat_id, ct_flags_of(pkt), now);

	if (nat_dnat(skb, pkt, backend->address, backend->port) < 0)
		return bpx_drop(skb, BPX_CTR_DROP_REWRITE);
	return bpx_pass(skb, BPX_CTR_TRANSLATED_NEW);
}

static __always_inline int bpx_handle(struct __sk_buff *skb, const int from)
{
	struct bpx_ct_entry *reply, *forward;
	struct bpx_backend *backend;
	struct bpx_rev_nat *nat;
	struct bpx_ct_key key;
	bool reselect = false;
	struct bpx_pkt pkt;
	__u64 now;

	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK)
		return TC_ACT_OK;
	if (unlikely(pkt_is_fragment(&pkt)))
		return handle_fragment(skb, &pkt, from);

	now = bpf_ktime_get_ns();

	ct_key_init(&key, pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto, BPX_CT_DIR_REPLY);
	reply = ct_lookup(&key);
	if (reply) {
		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		if (likely(nat))
			return reverse_translate(skb, &pkt, reply, nat, now);
	}

	key.dir = BPX_CT_DIR_FORWARD;
	forward = ct_lookup(&key);
	/* A SYN reusing the tuple of a flow that got an answer (or is closing) is a new
	 * connection and chooses again; a retransmitted SYN of an unanswered flow stays. */
	if (forward && !(pkt_opens_connection(&pkt) && ct_entry_has_concluded(forward)) &&
	    !ct_entry_is_expired(forward, pkt.proto, now)) {
		backend = lb_lookup_backend(forward->backend_id);
		if (likely(backend))
			return translate_tracked(skb, &pkt, &key, forward, backend, now);
		reselect = true;
	}

	return translate_new(skb, &pkt, &key, packet_scope(pkt.saddr, from), reselect, now);
}

SEC("tc")
int bpx_from_pod(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_POD);
}

SEC("tc")
int bpx_from_device(struct __sk_buff *skb)
{
	return bpx_handle(skb, BPX_FROM_DEVICE);
}

char _license[] SEC("license") = "GPL";
