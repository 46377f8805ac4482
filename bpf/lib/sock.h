/* Socket-level load balancing for processes on the node (host network): the cgroup hooks pick a
 * backend when a socket connects or sends, so no packet ever carries the frontend's address and
 * nothing needs translating on the wire. What the socket was pointed at is remembered per socket
 * so that recvmsg and getpeername show the frontend again. */
#ifndef BPX_SOCK_H
#define BPX_SOCK_H
#include <stdbool.h>
#include "common.h"

#define BPX_SOCK_REVNAT_MAX 65536

/* Key of bpx_sock_revnat_v1: a socket and the backend it was sent to. */
struct bpx_sock_revnat_key {
	__u64 cookie;   /* bpf_get_socket_cookie(): the socket, host byte order */
	__be32 address; /* backend IPv4, network byte order */
	__be16 port;    /* backend port, network byte order */
	__u16 pad;      /* zero */
};

/* Value: the frontend the socket asked for. */
struct bpx_sock_revnat_value {
	__be32 address; /* frontend IPv4, network byte order */
	__be16 port;    /* frontend port, network byte order */
	__u16 pad;      /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_sock_revnat_key);
	__type(value, struct bpx_sock_revnat_value);
	__uint(max_entries, BPX_SOCK_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_sock_revnat_v1 BPX_MAPS;

/* The same for IPv6 sockets and IPv6 frontends (bpx_sock_revnat6_v1). A dual-stack socket pointed at
 * an IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 translation: its entry is in bpx_sock_revnat_v1. */
struct bpx_sock_revnat6_key {
	__u64 cookie;      /* bpf_get_socket_cookie(): the socket, host byte order */
	__be32 address[4]; /* backend IPv6, network byte order */
	__be16 port;       /* backend port, network byte order */
	__u16 pad;         /* zero */
	__u32 pad2;        /* zero (the cookie's alignment) */
};

struct bpx_sock_revnat6_value {
	__be32 address[4]; /* frontend IPv6, network byte order */
	__be16 port;       /* frontend port, network byte order */
	__u16 pad;         /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_sock_revnat6_key);
	__type(value, struct bpx_sock_revnat6_value);
	__uint(max_entries, BPX_SOCK_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_sock_revnat6_v1 BPX_MAPS;

/* ::ffff:a.b.c.d, as a dual-stack (AF_INET6) socket names an IPv4 peer; a3 is then the IPv4 address. */
static __always_inline bool sock_v4mapped(__be32 a0, __be32 a1, __be32 a2)
{
	return !(a0 | a1) && a2 == bpf_htonl(0x0000ffff);
}

/* Where the hooks are attached, so `bpfproxy cleanup` can find them from the pins alone. */
#define BPX_CGROUP_PATH_LEN 256
struct bpx_sock_config {
	char cgroup_path[BPX_CGROUP_PATH_LEN]; /* NUL padded; never read by BPF */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_sock_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_sock_config_v1 BPX_MAPS;

/* Whose sockets are translated (bpx_sock_scope_v1, written by the daemon before it attaches). By
 * default only the node's own network namespace: a pod's packets cross its veth, where the tc
 * programs apply every Service feature with the pod's address as the client. With
 * BPX_SOCK_F_POD_NAMESPACES pods are translated too, except for what only tc can do (bpfproxy_sock.bpf.c). */
struct bpx_sock_scope {
	__u64 host_netns_cookie; /* bpf_get_netns_cookie() of the node's namespace, host byte order; 0 = unset */
	__u32 flags;             /* BPX_SOCK_F_*, host byte order */
	__u32 pad;               /* zero */
};

#define BPX_SOCK_F_POD_NAMESPACES (1U << 0) /* translate sockets in every network namespace of the cgroup */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpx_sock_scope);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_sock_scope_v1 BPX_MAPS;

#endif
