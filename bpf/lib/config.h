/* Per-node settings written by the daemon at start (one array slot), so the
 * precompiled object never needs rebuilding on the node. */
#ifndef BPX_CONFIG_H
#define BPX_CONFIG_H
#include "common.h"

#define BPX_MAX_CLUSTER_CIDRS 4

struct bpx_cidr4 {
	__be32 addr; /* network address, network byte order */
	__be32 mask; /* netmask, network byte order (0 = unused entry) */
};

struct bpx_config {
	__u32 flags;                                           /* BPX_CFG_F_*, host byte order */
	__u32 n_cluster_cidrs;                                 /* used entries in cluster_cidrs, host byte order */
	struct bpx_cidr4 cluster_cidrs[BPX_MAX_CLUSTER_CIDRS]; /* pod CIDRs: sources inside are "internal" */
	char node_name[64]; /* never read by BPF: lets `bpfproxy status` name the node from the pins */
};

#define BPX_CFG_F_MASQUERADE_ALL (1U << 0) /* kube-proxy's masqueradeAll */
#define BPX_CFG_F_DETECT_LOCAL \
	(1U << 1) /* a local-traffic detector is set (detectLocalMode): ClusterIP
					    * traffic from outside it is masqueraded */
#define BPX_CFG_F_POD_SOURCE_CHECK \
	(1U << 2) /* a pod interface's Service packets must come from an address routed back
	           * through it (datapath.h pod_source_valid) */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_config_v1 BPX_MAPS;

/* Pod interfaces that are ports of a Linux bridge (a bridge CNI): the programs run on the ports, so
 * translation happens before the bridge and its br_netfilter conntrack, and the FIB names the bridge,
 * not the port, as the way back to a pod behind it. Key: the port's ifindex; value: its bridge's. */
#define BPX_MAX_BRIDGE_PORTS 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);   /* port ifindex, host order */
	__type(value, __u32); /* its bridge's ifindex, host order */
	__uint(max_entries, BPX_MAX_BRIDGE_PORTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_bridge_ports_v1 BPX_MAPS;

#endif
