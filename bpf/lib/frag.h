/* IPv4 fragments of Service flows. Only the first fragment carries the L4 header, so its
 * ports are remembered under the datagram's identity (RFC 791: source, destination,
 * protocol, IP id); later fragments of the same datagram look them up and take the same
 * path through conntrack and NAT. They get the same address rewrite (IPv4 header checksum
 * on each fragment); the ports and the L4 checksum live only in the first fragment.
 *
 * Every first fragment is recorded, translated or not: the entry is written before the
 * program knows whether the datagram is Service traffic. The map is LRU and small;
 * a datagram's fragments normally arrive within microseconds of each other. A later
 * fragment that arrives before its first (reordering) or after its entry was evicted
 * finds nothing and passes untranslated (counted): its datagram cannot be reassembled
 * at the backend, and the sender retries as it would after any loss. */
#ifndef BPX_FRAG_H
#define BPX_FRAG_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"

#define BPX_FRAG_MAX_ENTRIES 8192

struct bpx_frag_key {
	__be32 saddr; /* IPv4 source of the fragments as received, network byte order */
	__be32 daddr; /* IPv4 destination as received, network byte order */
	__be16 id;    /* IPv4 identification, network byte order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;     /* zero */
};

struct bpx_frag_ports {
	__be16 sport; /* L4 source port of the first fragment, network byte order */
	__be16 dport; /* L4 destination port of the first fragment, network byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_frag_key);
	__type(value, struct bpx_frag_ports);
	__uint(max_entries, BPX_FRAG_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_frag_v1 BPX_MAPS;

/* ---- functions (the layout above is the ABI) ---- */

#define BPX_IP_ID_OFF (BPX_IP_OFF + offsetof(struct iphdr, id))

/* A fragment of pkt: the first one records its ports, a later one gets its first's ports
 * (pkt->has_ports stays 0: there is no L4 header to rewrite). False when a later fragment
 * has no recorded first fragment. */
static __always_inline bool frag_ports(struct __sk_buff *skb, struct bpx_pkt *pkt)
{
	struct bpx_frag_key key = {.saddr = pkt->saddr, .daddr = pkt->daddr, .proto = pkt->proto};
	struct bpx_frag_ports *have;

	if (bpf_skb_load_bytes(skb, BPX_IP_ID_OFF, &key.id, sizeof(key.id)) < 0)
		return false;
	if (pkt->has_ports) {
		struct bpx_frag_ports ports = {.sport = pkt->sport, .dport = pkt->dport};

		/* A full map only costs the later fragments of this datagram. */
		bpf_map_update_elem(&bpx_frag_v1, &key, &ports, BPF_ANY);
		return true;
	}
	have = bpf_map_lookup_elem(&bpx_frag_v1, &key);
	if (!have)
		return false;
	pkt->sport = have->sport;
	pkt->dport = have->dport;
	return true;
}

#endif
