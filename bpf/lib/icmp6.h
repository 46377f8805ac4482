/* ICMPv6 errors about translated flows (RFC 4443: destination unreachable, packet too big, time
 * exceeded), translated back as IPv4's icmp.h does, Packet Too Big above all: IPv6 routers never
 * fragment, so path-MTU discovery through a Service needs the client to see its own packet quoted.
 *
 * The IPv6 path lets the stack forward every packet (datapath6.h): tc ingress DNATs a client's packet
 * (and turns a masqueraded reply back to the client), tc egress gives a reply the frontend as its
 * source (and masquerades a flow on its way to the backend). An error travels the other way from the
 * packet it quotes, so each hook undoes on the quote what the other hook did to the quoted packet, and
 * netfilter between them sees an error about the flow it knows (client <-> backend):
 *   tc egress,  quote client -> backend:      was DNATed at ingress -> client -> frontend
 *                                             (the flow's conntrack reply entry, bpx_ct6_v1);
 *   tc egress,  quote backend -> client:      was un-masqueraded at ingress -> backend -> node address
 *                                             and port (the flow's forward entry in bpx_snat6_v1);
 *   tc ingress, quote node address -> backend: was masqueraded at egress -> client -> backend
 *                                             (the reply entry in bpx_snat6_v1, owner-checked as the
 *                                             replies are: drop_nat_not_owner);
 *   tc ingress, quote frontend -> client:     was reverse-translated at egress -> backend -> client
 *                                             (the flow's conntrack forward entry).
 * Each is looked up by the quoted tuple reversed (as the answer to the quoted packet would be keyed).
 * So a Packet Too Big from a router past this node about client -> backend reaches the client quoting
 * client -> frontend; one about a masqueraded flow sent to the node's address reaches the client
 * (ingress, then egress); one about a backend's reply sent to the frontend reaches the backend.
 * Rewritten: the quoted addresses and ports, the quoted L4 checksum when the quote holds it, the
 * outer destination when it was the quoted source and the outer source when it was the quoted
 * destination (a backend's own port unreachable then comes from the frontend), and the ICMPv6
 * checksum (pseudo header included, RFC 4443 2.3). Every checksum is updated incrementally (RFC 1624)
 * and every change is balanced by a checksum covering it, so skb->csum of a CHECKSUM_COMPLETE skb
 * stays valid (icmp.h). An error that itself is fragmented or has extension headers is not looked
 * into (a router's error has none); the quoted packet's extension headers are walked (ipv6.h), and a
 * quote of a later fragment (no ports) is not ours. */
#ifndef BPX_ICMP6_H
#define BPX_ICMP6_H
#include <stdbool.h>
#include "common.h"
#include "csum.h"
#include "ipv6.h"
#include "conntrack6.h"
#include "nat6.h"
#include "icmp.h"
#include "reject6.h"

#define BPX_ICMP6_PKT_TOOBIG 2  /* RFC 4443 3.2 */
#define BPX_ICMP6_TIME_EXCEED 3 /* RFC 4443 3.3 */
#define BPX_ICMP6_CSUM_OFF 2    /* the checksum in the ICMPv6 header */

/* The quoted packet and where its fields are. */
struct bpx_icmp6_quote {
	union bpx_v6addr saddr;
	union bpx_v6addr daddr;
	__be16 sport;
	__be16 dport;
	__u32 ip_off; /* quoted IPv6 header */
	__u32 l4_off; /* quoted TCP/UDP header */
	__u32 end;    /* end of the ICMPv6 message: by the outer payload length (not link padding) */
	__u8 proto;
};

/* An ICMPv6 error quoting IPv6 TCP/UDP with its ports: fills q and the outer header. */
static __always_inline bool icmp6_parse_error(struct __sk_buff *skb, struct ipv6hdr *ip, __u16 *icmp_csum,
                                              struct bpx_icmp6_quote *q)
{
	struct bpx_icmphdr icmp;
	struct bpx_ip6_walk w;
	struct ipv6hdr in;
	__be16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return false;
	if (bpf_skb_load_bytes(skb, BPX_IP6_OFF, ip, sizeof(*ip)) < 0)
		return false;
	if (ip->version != 6 || ip->nexthdr != BPX_NEXTHDR_ICMP6)
		return false;
	if (bpf_skb_load_bytes(skb, BPX_IP6_OFF + BPX_IP6_HLEN, &icmp, sizeof(icmp)) < 0)
		return false;
	if (icmp.type != BPX_ICMP6_DEST_UNREACH && icmp.type != BPX_ICMP6_PKT_TOOBIG &&
	    icmp.type != BPX_ICMP6_TIME_EXCEED)
		return false;
	q->ip_off = BPX_IP6_OFF + BPX_IP6_HLEN + BPX_ICMP6_HLEN;
	if (bpf_skb_load_bytes(skb, q->ip_off, &in, sizeof(in)) < 0 || in.version != 6)
		return false;
	if (ip6_walk_ext(skb, q->ip_off, in.nexthdr, &w) < 0 || (w.frag & BPX_PKT6_F_LATER) ||
	    (w.next != IPPROTO_TCP && w.next != IPPROTO_UDP))
		return false;
	q->end = BPX_IP6_OFF + BPX_IP6_HLEN + bpf_ntohs(ip->payload_len);
	q->l4_off = w.off;
	if (q->l4_off + sizeof(ports) > q->end || bpf_skb_load_bytes(skb, q->l4_off, ports, sizeof(ports)) < 0)
		return false;
	__builtin_memcpy(&q->saddr, &in.saddr, 16);
	__builtin_memcpy(&q->daddr, &in.daddr, 16);
	q->sport = ports[0];
	q->dport = ports[1];
	q->proto = w.next;
	*icmp_csum = icmp.checksum;
	return true;
}

/* What the quote becomes (s, sp -> d, dp), by the quoted tuple reversed: at tc egress the conntrack
 * reply entry (client -> backend => client -> frontend), then the masquerade's forward entry
 * (backend -> client => backend -> node address); at tc ingress the masquerade's reply entry
 * (node address -> backend => client -> backend), then the conntrack forward entry
 * (frontend -> client => backend -> client). */
static __always_inline enum bpx_icmp_result icmp6_lookup_flow(const struct bpx_icmp6_quote *q, const bool egress,
                                                              union bpx_v6addr *s, __be16 *sp, union bpx_v6addr *d,
                                                              __be16 *dp)
{
	struct bpx_ct6_entry *ct;
	struct bpx_nat6_entry *ne;
	struct bpx_ct6_key key;

	*s = q->saddr;
	*sp = q->sport;
	*d = q->daddr;
	*dp = q->dport;
	ct6_key_init(&key, &q->daddr, &q->saddr, q->dport, q->sport, q->proto,
	             egress ? BPX_CT_DIR_REPLY : BPX_CT_DIR_FORWARD);
	if (egress) {
		ct = ct6_lookup(&key);
		if (ct) {
			*d = ct->addr;
			*dp = ct->port;
			return BPX_ICMP_TRANSLATED;
		}
		key.dir = BPX_CT_DIR_FORWARD;
		ne = nat6_lookup(&key);
		if (!ne)
			return BPX_ICMP_UNTRACKED;
		*d = ne->addr;
		*dp = ne->port;
		return BPX_ICMP_TRANSLATED;
	}
	key.dir = BPX_CT_DIR_REPLY;
	ne = nat6_lookup(&key);
	if (ne) {
		union bpx_v6addr client = ne->addr;
		__be16 client_port = ne->port;
		__u32 owner = ne->backend_id;

		/* The client's forward entry must still name this port (datapath6.h reverse_masquerade6). */
		ct6_key_init(&key, &client, &q->daddr, client_port, q->dport, q->proto, BPX_CT_DIR_FORWARD);
		ne = nat6_lookup(&key);
		if (!ne || ne->port != q->sport || ne->backend_id != owner || !v6addr_equal(&ne->addr, &q->saddr))
			return BPX_ICMP_NOT_OWNER;
		*s = client;
		*sp = client_port;
		return BPX_ICMP_TRANSLATED;
	}
	key.dir = BPX_CT_DIR_FORWARD;
	ct = ct6_lookup(&key);
	if (!ct)
		return BPX_ICMP_UNTRACKED;
	*s = ct->addr;
	*sp = ct->port;
	return BPX_ICMP_TRANSLATED;
}

/* Sum of the changes of one 16-byte address, a term of csum_update's delta (csum.h). */
static __always_inline __u32 csum_diff16(__u32 sum, const union bpx_v6addr *from, const union bpx_v6addr *to)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		sum += csum_diff_word(from->addr32[i], to->addr32[i]);
	return sum;
}

/* Folds a running sum of differences to 16 bits (ones' complement), so more can be added. */
static __always_inline __u32 csum_fold_delta(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	return (sum & 0xffff) + (sum >> 16);
}

/* Translates an ICMPv6 error about a translated flow back, at tc ingress or egress (see above). */
static __always_inline enum bpx_icmp_result icmp6_error_translate(struct __sk_buff *skb, const bool egress)
{
	struct bpx_icmp6_quote q;
	union bpx_v6addr s, d, addrs[2];
	__be16 sp, dp, ports[2];
	__u16 icmp_csum, l4_csum;
	enum bpx_icmp_result found;
	struct ipv6hdr ip;
	__u32 delta, l4_off;

	if (!icmp6_parse_error(skb, &ip, &icmp_csum, &q))
		return BPX_ICMP_NOT_ERROR;
	found = icmp6_lookup_flow(&q, egress, &s, &sp, &d, &dp);
	if (found != BPX_ICMP_TRANSLATED)
		return found;

	/* The quote's changes: its addresses (in its IPv6 header and in its L4 pseudo header) and ports. */
	delta = csum_diff16(0, &q.saddr, &s);
	delta = csum_diff16(delta, &q.daddr, &d);
	delta += csum_diff_word(((__u32)q.dport << 16) | q.sport, ((__u32)dp << 16) | sp);
	delta = csum_fold_delta(delta);

	/* The quoted L4 checksum, if the quote holds it (a zero UDP checksum, illegal over IPv6, stays).
	 * Its change and the quote's cancel out in the ICMPv6 sum; without it, the ICMPv6 checksum
	 * takes the quote's changes. */
	l4_off = q.l4_off + (q.proto == IPPROTO_TCP ? BPX_TCP_CSUM_OFF : BPX_UDP_CSUM_OFF);
	if (l4_off + sizeof(l4_csum) <= q.end && bpf_skb_load_bytes(skb, l4_off, &l4_csum, sizeof(l4_csum)) == 0 &&
	    !(q.proto == IPPROTO_UDP && l4_csum == 0)) {
		__u16 sum = csum_update(l4_csum, delta);

		if (q.proto == IPPROTO_UDP && sum == 0)
			sum = 0xffff;
		if (bpf_skb_store_bytes(skb, l4_off, &sum, sizeof(sum), 0) < 0)
			return BPX_ICMP_FAILED;
		icmp_csum = csum_replace2(icmp_csum, l4_csum, sum);
	}
	icmp_csum = csum_update(icmp_csum, delta);
	ports[0] = sp;
	ports[1] = dp;
	addrs[0] = s;
	addrs[1] = d;
	if (bpf_skb_store_bytes(skb, q.l4_off, ports, sizeof(ports), 0) < 0 ||
	    bpf_skb_store_bytes(skb, q.ip_off + offsetof(struct ipv6hdr, saddr), addrs, sizeof(addrs), 0) < 0)
		return BPX_ICMP_FAILED;

	/* The outer header: to the quoted source's new address when it was sent to the quoted source,
	 * from the quoted destination's when the quoted destination sent it. The ICMPv6 checksum covers
	 * the outer addresses through its pseudo header. */
	__builtin_memcpy(&addrs[0], &ip.saddr, 16);
	__builtin_memcpy(&addrs[1], &ip.daddr, 16);
	delta = 0;
	if (v6addr_equal(&addrs[0], &q.daddr)) {
		delta = csum_diff16(delta, &addrs[0], &d);
		addrs[0] = d;
	}
	if (v6addr_equal(&addrs[1], &q.saddr)) {
		delta = csum_diff16(delta, &addrs[1], &s);
		addrs[1] = s;
	}
	icmp_csum = csum_update(icmp_csum, csum_fold_delta(delta));
	if (bpf_skb_store_bytes(skb, BPX_IP6_OFF + offsetof(struct ipv6hdr, saddr), addrs, sizeof(addrs), 0) < 0 ||
	    bpf_skb_store_bytes(skb, BPX_IP6_OFF + BPX_IP6_HLEN + BPX_ICMP6_CSUM_OFF, &icmp_csum, sizeof(icmp_csum),
	                        0) < 0)
		return BPX_ICMP_FAILED;
	return BPX_ICMP_TRANSLATED;
}

#endif
