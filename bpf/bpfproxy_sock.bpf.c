// SPDX-License-Identifier: GPL-2.0
/* bpfproxy socket-level load balancing, attached to the node's cgroup v2 directory
 * (--cgroup-path): processes on the node reach ClusterIPs, NodePorts and other frontends.
 *
 *   connect4, sendmsg4   a TCP/UDP socket pointed at a frontend is pointed at a backend instead
 *                        (random slot); a frontend without backends refuses at once (EPERM);
 *   recvmsg4, getpeername4  the backend's address reads as the frontend's again.
 *   connect6, sendmsg6, recvmsg6, getpeername6  the same for IPv6 frontends (bpx_svc6_v1), and for
 *                        IPv4-mapped addresses of dual-stack sockets (the IPv4 maps).
 *
 * Only sockets of the node's own network namespace, unless the daemon set pod mode
 * (bpx_sock_scope_v1): the cgroup usually holds the pods too, and a pod's traffic is tc's.
 *
 * Maps are shared with the tc programs by pinning: same names, same layouts. */
#include "common.h"
#include "config.h"
#include "lb.h"
#include "lb6.h"
#include "nodeport.h"
#include "sock.h"

#define SYS_PROCEED 1
#define SYS_REJECT 0

/* What a pod's packet gets from tc and a socket cannot give it here: the client's address
 * (ClientIP affinity, source ranges) and source port (Maglev's flow hash) are not known before
 * the connect, a masqueraded Service hides the pod's address from the backend, and a
 * least-connection choice is counted by tc's conntrack (a socket's flow would never come off).
 * Such connects are left alone, for tc on the pod's interface. */
#define BPX_SOCK_TC_ONLY \
	(BPX_SVC_F_AFFINITY | BPX_SVC_F_SOURCE_RANGES | BPX_SVC_F_MAGLEV | BPX_SVC_F_MASQUERADE | BPX_SVC_F_LEAST_CONN)

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

/* The IPv4 choice: *addr and *port (what the socket asked for) become a backend's when they name a
 * frontend. SOCK_XLATED when they changed; SYS_PROCEED when left alone; SYS_REJECT for a frontend
 * without backends. On values, not ctx->user_ip4: connect6/sendmsg6 use it for IPv4-mapped addresses,
 * and a connect6 program may not touch user_ip4. */
#define SOCK_XLATED 2
static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx, __u8 proto, int host, __be32 *addr, __be16 *port)
{
	struct bpx_svc_key key = {};
	struct bpx_sock_revnat_key rkey = {};
	struct bpx_sock_revnat_value rval = {};
	struct bpx_sock_revnat_value *old;
	struct bpx_svc_value *svc, *slot;
	struct bpx_backend *backend;

	key.address = *addr;
	key.port = *port;
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
	rval.address = *addr;
	rval.port = *port;
	/* Written once per socket and backend: an unconnected UDP socket sending to the same
	 * backend again costs a lookup, not a write. Without the entry the peer reads as the
	 * backend: still a working socket. */
	old = bpf_map_lookup_elem(&bpx_sock_revnat_v1, &rkey);
	if (!old || old->address != rval.address || old->port != rval.port)
		bpf_map_update_elem(&bpx_sock_revnat_v1, &rkey, &rval, BPF_ANY);

	*addr = backend->address;
	*port = backend->port;
	return SOCK_XLATED;
}

static __always_inline int sock_translate(struct bpf_sock_addr *ctx)
{
	__u8 proto = ctx->protocol;
	__be32 addr;
	__be16 port;
	int host, ret;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	host = sock_scope(ctx);
	if (host < 0)
		return SYS_PROCEED;
	addr = ctx->user_ip4;
	port = (__be16)ctx->user_port;
	ret = sock4_xlate(ctx, proto, host, &addr, &port);
	if (ret != SOCK_XLATED)
		return ret;
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	return SYS_PROCEED;
}

/* The IPv6 choice against bpx_svc6_v1 (lb6.h), with sock4_xlate's rules; an IPv4-mapped address
 * (a dual-stack socket reaching an IPv4 peer, which the kernel then sends as IPv4) is looked up in
 * the IPv4 maps and the backend written back IPv4-mapped. */
static __always_inline int sock6_translate(struct bpf_sock_addr *ctx)
{
	struct bpx_svc6_key key = {};
	struct bpx_sock_revnat6_key rkey = {};
	struct bpx_sock_revnat6_value rval = {};
	struct bpx_sock_revnat6_value *old;
	struct bpx_svc_value *svc, *slot;
	struct bpx_backend6 *backend;
	__u8 proto = ctx->protocol;
	__be32 a0, a1, a2, a3;
	__be16 port;
	int host, ret;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	host = sock_scope(ctx);
	if (host < 0)
		return SYS_PROCEED;
	a0 = ctx->user_ip6[0];
	a1 = ctx->user_ip6[1];
	a2 = ctx->user_ip6[2];
	a3 = ctx->user_ip6[3];
	port = (__be16)ctx->user_port;
	if (sock_v4mapped(a0, a1, a2)) {
		ret = sock4_xlate(ctx, proto, host, &a3, &port);
		if (ret != SOCK_XLATED)
			return ret;
		ctx->user_ip6[3] = a3;
		ctx->user_port = (__u32)port;
		return SYS_PROCEED;
	}
	key.address.addr32[0] = a0;
	key.address.addr32[1] = a1;
	key.address.addr32[2] = a2;
	key.address.addr32[3] = a3;
	key.port = port;
	key.proto = proto;
	/* Internal entries first, as for IPv4. There are no IPv6 NodePorts yet (docs/ipv6.md). */
	svc = lb6_lookup_service(&key, BPX_SCOPE_INTERNAL);
	if (!svc)
		return SYS_PROCEED;
	if (!host && sock_leave_to_tc(svc))
		return SYS_PROCEED;
	if (!svc_has_backends(svc))
		return SYS_REJECT;
	slot = lb6_select_slot(&key, svc);
	if (!slot)
		return SYS_PROCEED;
	backend = lb6_lookup_backend(slot->backend_id);
	if (!backend)
		return SYS_PROCEED;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rkey.address, backend->address.addr32, sizeof(rkey.address));
	rkey.port = backend->port;
	rval.address[0] = a0;
	rval.address[1] = a1;
	rval.address[2] = a2;
	rval.address[3] = a3;
	rval.port = port;
	old = bpf_map_lookup_elem(&bpx_sock_revnat6_v1, &rkey);
	if (!old || old->address[0] != a0 || old->address[1] != a1 || old->address[2] != a2 || old->address[3] != a3 ||
	    old->port != port)
		bpf_map_update_elem(&bpx_sock_revnat6_v1, &rkey, &rval, BPF_ANY);

	ctx->user_ip6[0] = backend->address.addr32[0];
	ctx->user_ip6[1] = backend->address.addr32[1];
	ctx->user_ip6[2] = backend->address.addr32[2];
	ctx->user_ip6[3] = backend->address.addr32[3];
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

/* The backend reads as the frontend again; an IPv4-mapped peer through the IPv4 entries. */
static __always_inline int sock6_reverse(struct bpf_sock_addr *ctx)
{
	struct bpx_sock_revnat6_key rkey = {};
	struct bpx_sock_revnat_key rkey4 = {};
	struct bpx_sock_revnat6_value *rval;
	struct bpx_sock_revnat_value *rval4;
	__be32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__be16 port = (__be16)ctx->user_port;

	if (sock_v4mapped(a0, a1, a2)) {
		rkey4.cookie = bpf_get_socket_cookie(ctx);
		rkey4.address = a3;
		rkey4.port = port;
		rval4 = bpf_map_lookup_elem(&bpx_sock_revnat_v1, &rkey4);
		if (rval4) {
			ctx->user_ip6[3] = rval4->address;
			ctx->user_port = (__u32)rval4->port;
		}
		return SYS_PROCEED;
	}
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address[0] = a0;
	rkey.address[1] = a1;
	rkey.address[2] = a2;
	rkey.address[3] = a3;
	rkey.port = port;
	rval = bpf_map_lookup_elem(&bpx_sock_revnat6_v1, &rkey);
	if (rval) {
		ctx->user_ip6[0] = rval->address[0];
		ctx->user_ip6[1] = rval->address[1];
		ctx->user_ip6[2] = rval->address[2];
		ctx->user_ip6[3] = rval->address[3];
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

SEC("cgroup/connect6")
int bpx_sock_conn6(struct bpf_sock_addr *ctx)
{
	return sock6_translate(ctx);
}

SEC("cgroup/sendmsg6")
int bpx_sock_send6(struct bpf_sock_addr *ctx)
{
	return sock6_translate(ctx);
}

SEC("cgroup/recvmsg6")
int bpx_sock_recv6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}

SEC("cgroup/getpeername6")
int bpx_sock_peer6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}

char _license[] SEC("license") = "GPL";
