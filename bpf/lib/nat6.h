/* Masquerade (SNAT) of the IPv6 path (datapath6.h) to the node's IPv6 address, with IPv4's port range
 * (bpx_nat_config_v1 port_min..port_max, snat.h) and IPv4's way through the stack: tc ingress DNATs
 * only, tc egress toward the backend rewrites the source to (node address, allocated port), and the
 * backend's reply to that port gets the client back as its destination at tc ingress, so the stack
 * and netfilter see one flow client <-> backend; tc egress toward the client then restores the
 * frontend as its source (the flow's conntrack reply entry, conntrack6.h). Two entries per flow in
 * bpx_snat6_v1, keyed as conntrack's (struct bpx_ct6_key):
 *   forward (client -> backend, as the stack forwards it): the node address and port to write;
 *   reply   (backend -> node address, port):              the client to restore, and its frontend.
 * A reply key is claimed with BPF_NOEXIST, so two live flows never share a (node address, port)
 * toward one backend; a port whose flow is gone (its conntrack forward entry missing, expired or of
 * another backend) is taken over. The daemon's conntrack collector deletes a flow's two entries once
 * the flow is over (src/dataplane/bpf/ct-gc.ts collectNat6). */
#ifndef BPX_NAT6_H
#define BPX_NAT6_H
#include <stdbool.h>
#include "common.h"
#include "conntrack.h"
#include "conntrack6.h"
#include "ipv6.h"
#include "lb6.h"
#include "snat.h"

#define BPX_SNAT6_MAX_ENTRIES 65536 /* two per flow, as bpx_ct6_v1 */

struct bpx_nat6_entry {
	__u64 last_seen_ns;             /* bpf_ktime_get_coarse_ns() at creation, host order */
	union bpx_v6addr addr;          /* forward: source written (node address); reply: the client */
	union bpx_v6addr frontend_addr; /* the frontend the client connected to */
	__be16 port;                    /* forward: source port written; reply: the client's port */
	__be16 frontend_port;           /* the frontend's port */
	__u32 backend_id;               /* the flow's backend, host order */
};

/* The node's IPv6 address masqueraded flows get, written by the daemon at start (one slot). The
 * port range is IPv4's (bpx_nat_config_v1). */
struct bpx_nat6_config {
	union bpx_v6addr masq_addr; /* network order; all zero = none (flows that need it are dropped) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_ct6_key);
	__type(value, struct bpx_nat6_entry);
	__uint(max_entries, BPX_SNAT6_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_snat6_v1 BPX_MAPS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_nat6_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_nat6_config_v1 BPX_MAPS;

static __always_inline struct bpx_nat6_config *nat6_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bpx_nat6_config_v1, &zero);
}

static __always_inline bool v6addr_is_zero(const union bpx_v6addr *a)
{
	return !(a->addr32[0] | a->addr32[1] | a->addr32[2] | a->addr32[3]);
}

static __always_inline struct bpx_nat6_entry *nat6_lookup(const struct bpx_ct6_key *key)
{
	return bpf_map_lookup_elem(&bpx_snat6_v1, key);
}

/* Claims a port for a new masqueraded flow and writes its two entries: the reply entry (`entry`,
 * naming the client and its frontend) under (backend, masq, bport, port), then the forward entry
 * (client -> backend: masq and the port). BPX_SNAT_TRIES random ports with BPF_NOEXIST, then
 * BPX_SNAT_TAKE_TRIES consecutive ones from a random start whose flow is gone: its conntrack
 * forward entry missing, of another backend, or expired (snat.h's search; conntrack.h lifetimes).
 * One key buffer serves every lookup: the combined stack of this subprogram and its caller must
 * stay within 512 bytes. 0 with *port set, -1 when no port is free. */
static __noinline int nat6_create(const struct bpx_ct6_key *forward, const union bpx_v6addr *masq,
                                  const struct bpx_backend6 *backend, __u32 backend_id, __be16 *port)
{
	__u64 now = bpf_ktime_get_coarse_ns(); /* the IPv6 path's clock (datapath6.h bpx6_now) */
	struct bpx_nat6_entry entry = {
	        .last_seen_ns = now,
	        .addr = forward->saddr,
	        .frontend_addr = forward->daddr,
	        .port = forward->sport,
	        .frontend_port = forward->dport,
	        .backend_id = backend_id,
	};
	struct bpx_nat_config *cfg = nat_config();
	struct bpx_ct6_key key;
	__u32 range, start;
	__be16 p = 0;
	int i;

	if (!cfg || cfg->port_max < cfg->port_min || !cfg->port_min)
		return -1;
	range = (__u32)cfg->port_max - (__u32)cfg->port_min + 1;
	ct6_key_init(&key, &backend->address, masq, backend->port, 0, forward->proto, BPX_CT_DIR_REPLY);
	for (i = 0; i < BPX_SNAT_TRIES; i++) {
		key.dport = bpf_htons((__u16)(cfg->port_min + bpf_get_prandom_u32() % range));
		if (bpf_map_update_elem(&bpx_snat6_v1, &key, &entry, BPF_NOEXIST) == 0) {
			p = key.dport;
			break;
		}
	}
	start = bpf_get_prandom_u32() % range;
	for (i = 0; !p && i < BPX_SNAT_TAKE_TRIES; i++) {
		__be16 cand = bpf_htons((__u16)(cfg->port_min + (start + i) % range));
		struct bpx_nat6_entry *have;
		struct bpx_ct6_entry *ct;

		ct6_key_init(&key, &backend->address, masq, backend->port, cand, forward->proto, BPX_CT_DIR_REPLY);
		have = nat6_lookup(&key);
		if (have) {
			__u32 owner = have->backend_id;

			ct6_key_init(&key, &have->addr, &have->frontend_addr, have->port, have->frontend_port,
			             forward->proto, BPX_CT_DIR_FORWARD);
			ct = ct6_lookup(&key);
			if (ct && ct->backend_id == owner && !ct_entry_is_expired(ct6_state(ct), forward->proto, now))
				continue;
			ct6_key_init(&key, &backend->address, masq, backend->port, cand, forward->proto,
			             BPX_CT_DIR_REPLY);
		}
		if (bpf_map_update_elem(&bpx_snat6_v1, &key, &entry, BPF_ANY) == 0)
			p = cand;
	}
	if (!p)
		return -1;
	*port = p;
	entry.addr = *masq;
	entry.port = p;
	ct6_key_init(&key, &forward->saddr, &backend->address, forward->sport, backend->port, forward->proto,
	             BPX_CT_DIR_FORWARD);
	if (bpf_map_update_elem(&bpx_snat6_v1, &key, &entry, BPF_ANY) < 0)
		return -1;
	return 0;
}

/* A new flow that is not masqueraded (client -> backend as the stack forwards it): a forward entry an
 * earlier, masqueraded flow left on the same tuple (to the same backend through another frontend, kept
 * until the collector runs) would masquerade it at tc egress, which finds entries by that tuple alone. */
static __noinline void nat6_forget(const struct bpx_ct6_key *forward, const union bpx_v6addr *be_addr, __be16 be_port)
{
	struct bpx_ct6_key key;

	ct6_key_init(&key, &forward->saddr, be_addr, forward->sport, be_port, forward->proto, BPX_CT_DIR_FORWARD);
	bpf_map_delete_elem(&bpx_snat6_v1, &key);
}

#endif
