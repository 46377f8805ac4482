// SPDX-License-Identifier: GPL-2.0
/* bpfproxy socket-level load balancing, attached to the node's cgroup v2 directory
 * (--cgroup-path): processes on the node reach ClusterIPs, NodePorts and other frontends.
 *
 *   connect4, sendmsg4   a TCP/UDP socket pointed at a frontend is pointed at a backend instead
 *                        (random slot); a frontend without backends refuses at once (EPERM);
 *   recvmsg4, getpeername4  the backend's address reads as the frontend's again.
 *
 * Only sockets of the node's own network namespace, unless the daemon set pod mode
 * (bpx_sock_scope_v1): the cgroup usually holds the pods too, and a pod's traffic is tc's.
 *
 * Maps are shared with the tc programs by pinning: same names, same layouts. */
#include "common.h"
#include "config.h"
#include "lb.h"
#include "nodeport.h"
#include "sock.h"

#define SYS_PROCEED 1
#define SYS_REJECT 0

/* What a pod's packet gets from tc and a socket cannot give it here: the client's address
 * (ClientIP affinity, source ranges) and source port (Maglev's flow hash) are not known before
 * the connect, and a masqueraded Service hides the pod's address from the backend. Such
 * connects are left alone, for tc on the pod's interface. */
#define BPX_SOCK_TC_ONLY (BPX_SVC_F_AFFINITY | BPX_SVC_F_SOURCE_RANGES | BPX_SVC_F_MAGLEV | BPX_SVC_F_MASQUERADE)

/* 1 when the socket belongs to the node's namespace, 0 for another (a pod's) namespace in pod
 * mode, -1 when it is not to be translated at all. */
static __always_inline int sock_scope(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct bpx_sock_scope *scope = bpf_map_lookup_elem(&bpx_sock_scope_v1, &zero);

	if (!scope || !scope->host_netns_cookie)
		return -1;
	if (bpf_get_netns_cookie(ctx) == scope->host_netns_cookie)
		return 1;
	return (scope->flags & BPX_SOCK_F_POD_NAMESPACES) ? 0 : -1;
}

static __always_inline bool sock_leave_to_tc(const struct bpx_svc_value *svc)
{
	__u32 zero = 0;
	struct bpx_config *cfg;

	if (svc->flags & BPX_SOCK_TC_ONLY)
		return true;
	/* tc drops (not rejects) traffic a Local policy leaves without backends. */
	if (!svc_has_backends(svc) && svc_drops_when_empty(svc))
		return true;
	cfg = bpf_map_lookup_elem(&bpx_config_v1, &zero);
	return cfg && (cfg->flags & BPX_CFG_F_MASQUERADE_ALL);
}

static __always_inline int sock_translate(struct bpf_sock_addr *ctx)
{
	struct bpx_svc_key key = {};
	struct bpx_sock_revnat_key rkey = {};
	struct bpx_sock_revnat_value rval = {};
	struct bpx_sock_revnat_value *old;
	struct bpx_svc_value *svc, *slot;
	struct bpx_backend *backend;
	__u8 proto = ctx->protocol;
	int host;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	host = sock_scope(ctx);
	if (host < 0)
		return SYS_PROCEED;
	key.address = ctx->user_ip4;
	key.port = (__be16)ctx->user_port;
	key.proto = proto;
	/* Processes on the node are in-cluster clients: internal entries first. A NodePort is the
	 * wildcard entry, found when the address is one the node serves NodePorts on. */
	svc = lb_lookup_frontend(&key, BPX_SCOPE_INTERNAL);
	if (!svc)
		return SYS_PROCEED;
	if (!host && sock_leave_to_tc(svc))
		return SYS_PROCEED;
	if (!svc_has_backends(svc))
		return SYS_REJECT;
	slot = lb_select_slot(&key, svc);
	if (!slot)
		return SYS_PROCEED;
	backend = lb_lookup_backend(slot->backend_id);
	if (!backend)
		return SYS_PROCEED;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = backend->address;
	rkey.port = backend->port;
	/* What the socket asked for, not the wildcard entry that matched. */
	rval.address = ctx->user_ip4;
	rval.port = (__be16)ctx->user_port;
	/* Written once per socket and backend: an unconnected UDP socket sending to the same
	 * backend again costs a lookup, not a write. Without the entry the peer reads as the
	 * backend: still a working socket. */
	old = bpf_map_lookup_elem(&bpx_sock_revnat_v1, &rkey);
	if (!old || old->address != rval.address || old->port != rval.port)
		bpf_map_update_elem(&bpx_sock_revnat_v1, &rkey, &rval, BPF_ANY);

	ctx->user_ip4 = backend->address;
	ctx->user_port = (__u32)backend->port;
	return SYS_PROCEED;
}

static __always_inline int sock_reverse(struct bpf_sock_addr *ctx)
{
	struct bpx_sock_revnat_key rkey = {};
	struct bpx_sock_revnat_value *rval;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&bpx_sock_revnat_v1, &rkey);
	if (rval) {
		ctx->user_ip4 = rval->address;
		ctx->user_port = (__u32)rval->port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int bpx_sock_conn4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx);
}

SEC("cgroup/sendmsg4")
int bpx_sock_send4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx);
}

SEC("cgroup/recvmsg4")
int bpx_sock_recv4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

SEC("cgroup/getpeername4")
int bpx_sock_peer4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

char _license[] SEC("license") = "GPL";
