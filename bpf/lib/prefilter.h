/* The pre-filter: one bitmap, written by the daemon, with a bit set for every frontend
 * (address, port, proto) — NodePort wildcards once per address NodePorts are served on —
 * and for every backend (address, port, proto) in bpx_backend_v2. Service traffic always
 * matches it: a packet to a frontend by its destination, a reply of a Service flow
 * (masqueraded or not) by its source, which is a backend's. A packet matching neither is
 * not Service traffic and skips every conntrack, NAT and service lookup. A false positive
 * (hash collision) only costs those lookups; the daemon sets a flow's bits before it writes
 * its entries and clears them after removing them (src/dataplane/prefilter.ts). */
#ifndef BPX_PREFILTER_H
#define BPX_PREFILTER_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"

#define BPX_PREFILTER_BITS_LOG2 22 /* 4 Mi bits, 512 KiB */
#define BPX_PREFILTER_WORDS (1U << (BPX_PREFILTER_BITS_LOG2 - 6))
/* The slot after the bitmap: nonzero once the daemon has written a complete bitmap. Until
 * then (a fresh pin, an upgrade from a version without it) nothing is filtered. */
#define BPX_PREFILTER_READY_SLOT BPX_PREFILTER_WORDS

/* Key: __u32 word index (host order); value: __u64 bitmap word, bit i = bit (index*64+i). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BPX_PREFILTER_WORDS + 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_prefilter_v1 BPX_MAPS;

/* The bit of an (address, port, proto). The daemon computes the same function
 * (src/dataplane/prefilter.ts): address and port are taken as the bytes lie in the packet,
 * read as little-endian integers. */
static __always_inline __u32 prefilter_bit(__be32 addr, __be16 port, __u8 proto)
{
	__u32 h = (__u32)addr * 0x9E3779B1U;

	h ^= (((__u32)port << 8) | proto) * 0x85EBCA77U;
	h ^= h >> 15;
	h *= 0xC2B2AE3DU;
	h ^= h >> 13;
	return h >> (32 - BPX_PREFILTER_BITS_LOG2);
}

static __always_inline bool prefilter_has(__be32 addr, __be16 port, __u8 proto)
{
	__u32 bit = prefilter_bit(addr, port, proto);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&bpx_prefilter_v1, &word);

	return !w || ((*w >> (bit & 63)) & 1);
}

/* Which ends of a packet may be Service traffic: BPX_PF_DST when its destination may be a
 * frontend or a backend, BPX_PF_SRC when its source may be a backend (or a frontend). Zero:
 * certainly neither to a frontend nor from a backend. A reply of a Service flow always has
 * BPX_PF_SRC (its source is a backend), a packet to a frontend always BPX_PF_DST, so the
 * reply lookups are skipped without BPX_PF_SRC and the forward ones without BPX_PF_DST. */
#define BPX_PF_DST (1U << 0)
#define BPX_PF_SRC (1U << 1)

static __always_inline __u32 prefilter_match(const struct bpx_pkt *pkt)
{
	__u32 ready_slot = BPX_PREFILTER_READY_SLOT;
	__u64 *ready = bpf_map_lookup_elem(&bpx_prefilter_v1, &ready_slot);

#ifdef BPX_NO_PREFILTER /* bench/datapath.ts measures the path without it side by side */
	return BPX_PF_DST | BPX_PF_SRC;
#endif
	if (!ready || !*ready)
		return BPX_PF_DST | BPX_PF_SRC;
	return (prefilter_has(pkt->daddr, pkt->dport, pkt->proto) ? BPX_PF_DST : 0) |
	       (prefilter_has(pkt->saddr, pkt->sport, pkt->proto) ? BPX_PF_SRC : 0);
}

#endif
