/* The pre-filter of the IPv6 path (prefilter.h for IPv4, same semantics): a bitmap of its own, written by
 * the daemon, with a bit set for every IPv6 frontend (address, port, proto; a NodePort once per node IPv6
 * address, as bpx_svc6_v1 keys it) and every IPv6 backend (address, port, proto) in bpx_backend6_v1. A
 * packet to a frontend matches by its destination, a reply of a Service flow (masqueraded or not) by its
 * source, a masqueraded flow on its way to the backend by its destination; a packet matching neither is
 * not Service traffic and skips every conntrack, NAT and service lookup (counted not_service at ingress,
 * as IPv4's). A false positive only costs those lookups; the daemon sets a flow's bits before it writes
 * its entries and clears them after removing them (src/dataplane/bpf/prefilter.ts, family 6). Its own map
 * and ready slot: nothing is filtered until the daemon has written a complete IPv6 bitmap (a fresh pin,
 * an upgrade from a version without it). */
#ifndef BPX_PREFILTER6_H
#define BPX_PREFILTER6_H
#include <stdbool.h>
#include "common.h"
#include "ipv6.h"

#define BPX_PREFILTER6_BITS_LOG2 20 /* 1 Mi bits, 128 KiB */
#define BPX_PREFILTER6_WORDS (1U << (BPX_PREFILTER6_BITS_LOG2 - 6))
#define BPX_PREFILTER6_READY_SLOT BPX_PREFILTER6_WORDS

/* Key: __u32 word index (host order); value: __u64 bitmap word, bit i = bit (index*64+i). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BPX_PREFILTER6_WORDS + 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_prefilter6_v1 BPX_MAPS;

/* The bit of an (IPv6 address, port, proto). The daemon computes the same function
 * (src/dataplane/bpf/prefilter.ts prefilter6Bit): the address's four 32-bit groups and the port are
 * taken as the bytes lie in the packet, read as little-endian integers. */
static __always_inline __u32 prefilter6_bit(const union bpx_v6addr *a, __be16 port, __u8 proto)
{
	__u32 h = (__u32)a->addr32[0] * 0x9E3779B1U;

	h ^= (__u32)a->addr32[1] * 0x85EBCA77U;
	h ^= h >> 15;
	h ^= (__u32)a->addr32[2] * 0xC2B2AE3DU;
	h ^= h >> 13;
	h ^= (__u32)a->addr32[3] * 0x27D4EB2FU;
	h ^= h >> 16;
	h ^= (((__u32)port << 8) | proto) * 0x165667B1U;
	h ^= h >> 15;
	h *= 0xC2B2AE3DU;
	h ^= h >> 13;
	return h >> (32 - BPX_PREFILTER6_BITS_LOG2);
}

static __always_inline bool prefilter6_has(const union bpx_v6addr *a, __be16 port, __u8 proto)
{
	__u32 bit = prefilter6_bit(a, port, proto);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&bpx_prefilter6_v1, &word);

	return !w || ((*w >> (bit & 63)) & 1);
}

/* False: the packet is certainly neither to nor from a frontend or a backend. */
static __always_inline bool prefilter6_match(const struct bpx_pkt6 *pkt)
{
	__u32 ready_slot = BPX_PREFILTER6_READY_SLOT;
	__u64 *ready = bpf_map_lookup_elem(&bpx_prefilter6_v1, &ready_slot);

#ifdef BPX_NO_PREFILTER /* bench/datapath.ts measures the path without it side by side */
	return true;
#endif
	if (!ready || !*ready)
		return true;
	return prefilter6_has(&pkt->daddr, pkt->dport, pkt->proto) ||
	       prefilter6_has(&pkt->saddr, pkt->sport, pkt->proto);
}

#endif
