/* NodePorts: one wildcard service entry (address 0.0.0.0) per NodePort, served on every
 * node address the daemon lists in bpx_nodeport_addrs_v1 (kube-proxy's nodePortAddresses:
 * every local address when unset, else those inside the CIDRs / the primary address). */
#ifndef BPX_NODEPORT_H
#define BPX_NODEPORT_H
#include <stdbool.h>
#include "common.h"
#include "lb.h"

#define BPX_MAX_NODEPORT_ADDRS 256
#define BPX_WILDCARD_ADDR 0 /* svc key address of a NodePort entry */

/* Value of bpx_nodeport_addrs_v1; key: __be32 node IPv4 address (network byte order). */
struct bpx_nodeport_addr {
	__u32 flags; /* BPX_NODEPORT_ADDR_F_*, host byte order */
};

#define BPX_NODEPORT_ADDR_F_SERVE (1U << 0) /* NodePorts are served on this address */
#define BPX_NODEPORT_ADDR_F_LOCAL (1U << 1) /* an address of this node (a backend there is a host socket) */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct bpx_nodeport_addr);
	__uint(max_entries, BPX_MAX_NODEPORT_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_nodeport_addrs_v1 BPX_MAPS;

static __always_inline bool nodeport_serves(__be32 addr)
{
	struct bpx_nodeport_addr *a = bpf_map_lookup_elem(&bpx_nodeport_addrs_v1, &addr);

	return a && (a->flags & BPX_NODEPORT_ADDR_F_SERVE);
}

/* A backend at one of the node's own addresses is a host-network socket: packets to it are
 * delivered locally, where a masqueraded source (the node itself) would be a martian, and
 * kube-proxy never masquerades locally delivered traffic either. */
static __always_inline bool node_addr_is_local(__be32 addr)
{
	struct bpx_nodeport_addr *a = bpf_map_lookup_elem(&bpx_nodeport_addrs_v1, &addr);

	return a && (a->flags & BPX_NODEPORT_ADDR_F_LOCAL);
}

/* The master entry for a packet to key->{address, port, proto}: the exact frontend first
 * (ClusterIP, LoadBalancer, externalIP), else the NodePort wildcard when the address is one
 * NodePorts are served on. On a wildcard hit key->address is 0, as the slots are keyed. */
static __always_inline struct bpx_svc_value *lb_lookup_frontend(struct bpx_svc_key *key, __u8 scope)
{
	struct bpx_svc_value *svc;
	__be32 addr = key->address;

	svc = lb_lookup_service(key, scope);
	if (svc || addr == BPX_WILDCARD_ADDR || !nodeport_serves(addr))
		return svc;
	key->address = BPX_WILDCARD_ADDR;
	svc = lb_lookup_service(key, scope);
	if (!svc)
		key->address = addr;
	return svc;
}

#endif
