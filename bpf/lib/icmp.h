/* ICMP errors about translated flows (RFC 792 destination unreachable, including port
 * unreachable and fragmentation needed; time exceeded). The error quotes the packet it is
 * about: its IPv4 header and at least 8 bytes of TCP/UDP. The client's stack matches the
 * quote against its socket, so a quote of a translated packet (client -> backend, or the
 * masquerade address -> backend) must be turned back into what the client sent
 * (client -> frontend), as netfilter's NAT does for related ICMP.
 *
 * The flow is looked up by the quoted tuple reversed, i.e. as the backend would answer:
 * in bpx_snat_v1 (masqueraded or NodePort flows: restores the client and the frontend) and
 * else in bpx_ct_v3 (restores the frontend). A NAT entry is used only if it passes the owner
 * check the replies pass (snat.h nat_reply_entry_owned): a stale entry of a port whose flow
 * moved on names a client that no longer owns it, and an error sent there could end that
 * client's other connection. Such an error is dropped (drop_nat_not_owner), with no fallback
 * to conntrack, as handle_reply does. An error about a backend's reply (a hop toward
 * the client too small for it) quotes frontend -> client: its forward entries turn the quote
 * back into backend -> source the backend saw, and the error goes to the backend. Rewritten:
 *  - the quoted source and destination (addresses and ports);
 *  - the quoted IPv4 header checksum and the quoted L4 checksum when the quote holds it
 *    (a zero UDP checksum stays zero);
 *  - the ICMP checksum, which covers the whole quote;
 *  - the outer destination when it was the quoted source (masquerade address -> client;
 *    frontend -> backend), the outer source when it was the quoted destination (the
 *    backend's own error -> the frontend), and the outer IPv4 header checksum.
 * Every checksum is updated incrementally (RFC 1624) from the words changed, so each stays
 * right by itself and skb->csum of a CHECKSUM_COMPLETE skb stays valid: every change is
 * balanced by a checksum field covering it. */
#ifndef BPX_ICMP_H
#define BPX_ICMP_H
#include <stdbool.h>
#include "common.h"
#include "parse.h"
#include "conntrack.h"
#include "snat.h"
#include "lb.h"
#include "reject.h"
#include "csum.h"

#define BPX_ICMP_TIME_EXCEEDED 11 /* RFC 792 type: time exceeded */
#define BPX_ICMP_HLEN 8           /* type, code, checksum, 4 type-specific bytes */

enum bpx_icmp_result {
	BPX_ICMP_NOT_ERROR = 0,  /* not an ICMP error quoting IPv4 TCP/UDP: pass uncounted */
	BPX_ICMP_UNTRACKED = 1,  /* about a flow bpfproxy did not translate: pass untouched */
	BPX_ICMP_TRANSLATED = 2, /* rewritten; the outer addresses are returned */
	BPX_ICMP_FAILED = 3,     /* a helper failed, the packet may be half rewritten: drop */
	BPX_ICMP_NOT_OWNER = 4   /* about a NAT port whose entry fails the owner check: drop */
};

/* The quoted packet and where its fields are. */
struct bpx_icmp_quote {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 ip_off; /* quoted IPv4 header */
	__u32 l4_off; /* quoted TCP/UDP header */
	__u32 end;    /* end of the ICMP message: the outer IPv4 total length (not link padding) */
	__u8 proto;
};

/* An ICMP error quoting IPv4 TCP/UDP with its ports: fills q and the outer header. */
static __always_inline bool icmp_parse_error(struct __sk_buff *skb, struct iphdr *ip, __u16 *icmp_csum,
                                             struct bpx_icmp_quote *q)
{
	struct bpx_icmphdr icmp;
	struct iphdr in;
	__be16 ports[2];
	__u32 icmp_off;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (bpf_skb_load_bytes(skb, BPX_IP_OFF, ip, sizeof(*ip)) < 0)
		return false;
	/* An error is one small datagram: a fragmented one is not looked into. */
	if (ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_ICMP ||
	    (ip->frag_off & bpf_htons(BPX_IP_MF | BPX_IP_OFFSET)))
		return false;
	icmp_off = BPX_IP_OFF + ip->ihl * 4;
	if (bpf_skb_load_bytes(skb, icmp_off, &icmp, sizeof(icmp)) < 0)
		return false;
	if (icmp.type != BPX_ICMP_DEST_UNREACH && icmp.type != BPX_ICMP_TIME_EXCEEDED)
		return false;
	q->ip_off = icmp_off + BPX_ICMP_HLEN;
	if (bpf_skb_load_bytes(skb, q->ip_off, &in, sizeof(in)) < 0)
		return false;
	/* A quoted non-first fragment has no ports. */
	if (in.version != 4 || in.ihl < 5 || (in.protocol != IPPROTO_TCP && in.protocol != IPPROTO_UDP) ||
	    (in.frag_off & bpf_htons(BPX_IP_OFFSET)))
		return false;
	q->l4_off = q->ip_off + in.ihl * 4;
	if (bpf_skb_load_bytes(skb, q->l4_off, ports, sizeof(ports)) < 0)
		return false;
	q->end = BPX_IP_OFF + bpf_ntohs(ip->tot_len);
	q->saddr = in.saddr;
	q->daddr = in.daddr;
	q->sport = ports[0];
	q->dport = ports[1];
	q->proto = in.protocol;
	*icmp_csum = icmp.checksum;
	return true;
}

/* An error about a backend's reply as it left (frontend -> client): the quote reversed is
 * the flow as the client sent it, whose forward entries give the backend and the source
 * written after DNAT. The error goes to the backend, quoting its own packet. */
static __always_inline bool icmp_lookup_reply_flow(const struct bpx_icmp_quote *q, __be32 *saddr, __be16 *sport,
                                                   __be32 *daddr, __be16 *dport)
{
	struct bpx_ct_entry *forward;
	struct bpx_backend *backend;
	struct bpx_nat_entry *ne;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;

	ct_key_init(&key, q->daddr, q->saddr, q->dport, q->sport, q->proto, BPX_CT_DIR_FORWARD);
	forward = ct_lookup(&key);
	if (!forward)
		return false;
	backend = lb_lookup_backend(forward->backend_id);
	if (!backend)
		return false;
	*saddr = backend->address;
	*sport = backend->port;
	*daddr = q->daddr;
	*dport = q->dport;
	nat_key_init(&nkey, q->daddr, q->saddr, q->dport, q->sport, q->proto, BPX_NAT_DIR_FORWARD);
	ne = nat_lookup(&nkey);
	if (ne && ne->backend_id == forward->backend_id) {
		*daddr = ne->addr;
		*dport = ne->port;
	}
	return true;
}

/* What the quote must become. An error about a packet the client sent (after DNAT) is
 * found by the quoted tuple reversed, i.e. as the backend would answer; one about a
 * backend's reply (after reverse NAT) by the forward entries. */
static __always_inline enum bpx_icmp_result icmp_lookup_flow(const struct bpx_icmp_quote *q, __be32 *saddr,
                                                             __be16 *sport, __be32 *daddr, __be16 *dport)
{
	struct bpx_nat_entry *ne;
	struct bpx_ct_entry *reply;
	struct bpx_rev_nat *nat;
	struct bpx_nat_key nkey;
	struct bpx_ct_key key;

	nat_key_init(&nkey, q->daddr, q->saddr, q->dport, q->sport, q->proto, BPX_NAT_DIR_REPLY);
	ne = nat_lookup(&nkey);
	if (ne && !nat_reply_entry_owned(&nkey, ne))
		return BPX_ICMP_NOT_OWNER;
	if (ne) {
		*saddr = ne->addr;
		*sport = ne->port;
		*daddr = ne->frontend_addr;
		*dport = ne->frontend_port;
		return BPX_ICMP_TRANSLATED;
	}
	ct_key_init(&key, q->daddr, q->saddr, q->dport, q->sport, q->proto, BPX_CT_DIR_REPLY);
	reply = ct_lookup(&key);
	if (reply) {
		nat = lb_lookup_rev_nat(reply->rev_nat_id);
		if (nat) {
			*saddr = q->saddr;
			*sport = q->sport;
			*daddr = nat->address;
			*dport = nat->port;
			return BPX_ICMP_TRANSLATED;
		}
	}
	return icmp_lookup_reply_flow(q, saddr, sport, daddr, dport) ? BPX_ICMP_TRANSLATED : BPX_ICMP_UNTRACKED;
}

/* Rewrites the quoted L4 checksum, if the quote holds it; returns the ICMP checksum. */
static __always_inline int icmp_fix_quoted_l4(struct __sk_buff *skb, const struct bpx_icmp_quote *q, __be32 saddr,
                                              __be16 sport, __be32 daddr, __be16 dport, __u16 *icmp_csum)
{
	__u32 off = q->l4_off + (q->proto == IPPROTO_TCP ? BPX_TCP_CSUM_OFF : BPX_UDP_CSUM_OFF);
	__u16 old, sum;

	if (off + sizeof(old) > q->end || off + sizeof(old) > skb->len)
		return 0; /* only the first 8 bytes of a TCP header were quoted */
	if (bpf_skb_load_bytes(skb, off, &old, sizeof(old)) < 0)
		return -1;
	if (q->proto == IPPROTO_UDP && old == 0)
		return 0; /* no checksum */
	sum = csum_replace4(old, q->saddr, saddr);
	sum = csum_replace4(sum, q->daddr, daddr);
	sum = csum_replace2(sum, q->sport, sport);
	sum = csum_replace2(sum, q->dport, dport);
	if (q->proto == IPPROTO_UDP && sum == 0)
		sum = 0xffff;
	*icmp_csum = csum_replace2(*icmp_csum, old, sum);
	return bpf_skb_store_bytes(skb, off, &sum, sizeof(sum), 0);
}

/* Translates an ICMP error about a translated flow back to what the client knows.
 * saddr/daddr receive the outer addresses the packet leaves with. */
static __always_inline enum bpx_icmp_result icmp_error_translate(struct __sk_buff *skb, __be32 *saddr, __be32 *daddr)
{
	struct bpx_icmp_quote q;
	__be32 in_saddr, in_daddr;
	__be16 in_sport, in_dport;
	__u16 icmp_csum, in_check, check;
	__be32 addrs[2];
	__be16 ports[2];
	enum bpx_icmp_result found;
	struct iphdr ip;

	if (!icmp_parse_error(skb, &ip, &icmp_csum, &q))
		return BPX_ICMP_NOT_ERROR;
	found = icmp_lookup_flow(&q, &in_saddr, &in_sport, &in_daddr, &in_dport);
	if (found != BPX_ICMP_TRANSLATED)
		return found;

	/* The quoted L4 header: ports (ones'-complement words) and its checksum. */
	if (icmp_fix_quoted_l4(skb, &q, in_saddr, in_sport, in_daddr, in_dport, &icmp_csum) < 0)
		return BPX_ICMP_FAILED;
	ports[0] = in_sport;
	ports[1] = in_dport;
	icmp_csum = csum_replace2(icmp_csum, q.sport, in_sport);
	icmp_csum = csum_replace2(icmp_csum, q.dport, in_dport);
	if (bpf_skb_store_bytes(skb, q.l4_off, ports, sizeof(ports), 0) < 0)
		return BPX_ICMP_FAILED;

	/* The quoted IPv4 header: addresses and its checksum. */
	if (bpf_skb_load_bytes(skb, q.ip_off + offsetof(struct iphdr, check), &in_check, sizeof(in_check)) < 0)
		return BPX_ICMP_FAILED;
	check = csum_replace4(in_check, q.saddr, in_saddr);
	check = csum_replace4(check, q.daddr, in_daddr);
	icmp_csum = csum_replace2(icmp_csum, in_check, check);
	icmp_csum = csum_replace4(icmp_csum, q.saddr, in_saddr);
	icmp_csum = csum_replace4(icmp_csum, q.daddr, in_daddr);
	addrs[0] = in_saddr;
	addrs[1] = in_daddr;
	if (bpf_skb_store_bytes(skb, q.ip_off + offsetof(struct iphdr, check), &check, sizeof(check), 0) < 0 ||
	    bpf_skb_store_bytes(skb, q.ip_off + offsetof(struct iphdr, saddr), addrs, sizeof(addrs), 0) < 0 ||
	    bpf_skb_store_bytes(skb, q.ip_off - BPX_ICMP_HLEN + offsetof(struct bpx_icmphdr, checksum), &icmp_csum,
	                        sizeof(icmp_csum), 0) < 0)
		return BPX_ICMP_FAILED;

	/* The outer header: the error goes to the client, from the frontend if the backend sent it. */
	addrs[0] = ip.saddr == q.daddr ? in_daddr : ip.saddr;
	addrs[1] = ip.daddr == q.saddr ? in_saddr : ip.daddr;
	check = csum_replace4(ip.check, ip.saddr, addrs[0]);
	check = csum_replace4(check, ip.daddr, addrs[1]);
	if (bpf_skb_store_bytes(skb, BPX_IP_OFF + offsetof(struct iphdr, check), &check, sizeof(check), 0) < 0 ||
	    bpf_skb_store_bytes(skb, BPX_IP_OFF + offsetof(struct iphdr, saddr), addrs, sizeof(addrs), 0) < 0)
		return BPX_ICMP_FAILED;
	*saddr = addrs[0];
	*daddr = addrs[1];
	return BPX_ICMP_TRANSLATED;
}

#endif
