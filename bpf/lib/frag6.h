/* IPv6 fragments of Service flows (RFC 8200 4.5), as IPv4's frag.h: only the first fragment carries
 * the TCP/UDP header, so its protocol and ports are remembered under the datagram's identity (source,
 * destination, identification: RFC 8200 makes the identification unique per source and destination),
 * and later fragments of the datagram take the same path through conntrack and NAT with them. A later
 * fragment gets the address rewrite only: IPv6 has no header checksum, and the L4 checksum (which
 * covers the whole datagram, through the pseudo header) lives in the first fragment, updated there.
 *
 * Every first fragment is recorded, translated or not. The map is LRU and small; a datagram's
 * fragments normally arrive within microseconds of each other. A later fragment that arrives before
 * its first (reordering) or after its entry was evicted finds nothing and passes untranslated
 * (counted fragment_no_entry): its datagram cannot be reassembled at the backend, and the sender
 * retries as after any loss. */
#ifndef BPX_FRAG6_H
#define BPX_FRAG6_H
#include <stdbool.h>
#include "common.h"
#include "ipv6.h"

#define BPX_FRAG6_MAX_ENTRIES 8192

struct bpx_frag6_key {
	union bpx_v6addr saddr; /* IPv6 source of the fragments as received */
	union bpx_v6addr daddr; /* IPv6 destination as received */
	__be32 id;              /* the Fragment header's identification, network byte order */
};

struct bpx_frag6_ports {
	__be16 sport; /* L4 source port of the first fragment, network byte order */
	__be16 dport; /* L4 destination port of the first fragment, network byte order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP (a later fragment's header may name a destination option) */
	__u8 pad[3];  /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_frag6_key);
	__type(value, struct bpx_frag6_ports);
	__uint(max_entries, BPX_FRAG6_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_frag6_v1 BPX_MAPS;

/* A fragment of pkt: the first one records its protocol and ports, a later one gets its first's.
 * False when a later fragment has no recorded first fragment. */
static __always_inline bool frag6_ports(struct bpx_pkt6 *pkt)
{
	struct bpx_frag6_key key = {.saddr = pkt->saddr, .daddr = pkt->daddr, .id = pkt->frag_id};
	struct bpx_frag6_ports *have;

	if (!(pkt->frag & BPX_PKT6_F_LATER)) {
		struct bpx_frag6_ports ports = {.sport = pkt->sport, .dport = pkt->dport, .proto = pkt->proto};

		/* A full map only costs the later fragments of this datagram. */
		bpf_map_update_elem(&bpx_frag6_v1, &key, &ports, BPF_ANY);
		return true;
	}
	have = bpf_map_lookup_elem(&bpx_frag6_v1, &key);
	if (!have)
		return false;
	pkt->sport = have->sport;
	pkt->dport = have->dport;
	pkt->proto = have->proto;
	return true;
}

#endif
