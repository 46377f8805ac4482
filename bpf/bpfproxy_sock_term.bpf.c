// SPDX-License-Identifier: GPL-2.0
/* Ends the UDP sockets socket-level load balancing connected to a backend the control plane
 * removed: a connected UDP socket keeps sending to the address chosen at connect(), so without
 * this it would talk to a gone (or reused) pod address forever. kube-proxy flushes the UDP
 * conntrack entries of a removed endpoint for the same reason; TCP is left alone, as there.
 *
 * One pass of the iterator walks the UDP sockets of the daemon's network namespace; the daemon
 * fills bpx_sock_term_v1 (IPv4) and bpx_sock_term6_v1 (IPv6) with the removed backends first. A
 * dual-stack socket connected to an IPv4-mapped address counts as IPv4. bpf_sock_destroy() exists from Linux
 * 6.5: this object is loaded apart from bpfproxy_sock.o so that a kernel without it only loses
 * this (docs/socket-lb.md). */
#include "common.h"
#include "sock.h"

/* The kernel's types, as far as used here; CO-RE relocates the offsets against the running kernel. */
struct bpf_iter_meta {
	void *seq;
} __attribute__((preserve_access_index));

/* The kernel's struct in6_addr (CO-RE matches the name without the ___bpx flavour). */
struct in6_addr___bpx {
	union {
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	unsigned short skc_family;
	struct in6_addr___bpx skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

#define AF_INET 2
#define AF_INET6 10

/* Key of bpx_sock_term_v1: a removed backend. */
struct bpx_sock_term_key {
	__be32 address; /* backend IPv4, network byte order */
	__be16 port;    /* backend port, network byte order */
	__u16 pad;      /* zero */
};

/* Owned by the daemon's handle on this object for one pass at a time: never pinned. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_sock_term_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} bpx_sock_term_v1 SEC(".maps");

/* The same for removed IPv6 backends. */
struct bpx_sock_term6_key {
	__be32 address[4]; /* backend IPv6, network byte order */
	__be16 port;       /* backend port, network byte order */
	__u16 pad;         /* zero */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_sock_term6_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} bpx_sock_term6_v1 SEC(".maps");

/* An IPv4 peer (an AF_INET socket, or a dual-stack one connected to ::ffff:a.b.c.d, which connect6
 * translated with the IPv4 maps). */
static __always_inline void term4(struct bpf_iter__udp *ctx, struct sock *sk, __be32 daddr)
{
	struct bpx_sock_term_key key = {};
	struct bpx_sock_revnat_key rkey = {};
	static const char fmt[] = "%pI4:%u\n";
	__u64 args[2];

	key.address = daddr;
	key.port = sk->__sk_common.skc_dport;
	if (!key.address || !bpf_map_lookup_elem(&bpx_sock_term_v1, &key))
		return;
	/* Only sockets the connect hooks pointed there: a socket a process connected to the pod's
	 * address itself is none of bpfproxy's business. */
	rkey.cookie = bpf_get_socket_cookie(sk);
	rkey.address = key.address;
	rkey.port = key.port;
	if (!bpf_map_lookup_elem(&bpx_sock_revnat_v1, &rkey))
		return;
	bpf_sock_destroy(&sk->__sk_common);
	args[0] = (__u64)(unsigned long)&key.address;
	args[1] = bpf_ntohs(key.port);
	bpf_seq_printf(ctx->meta->seq, fmt, sizeof(fmt), args, sizeof(args));
}

SEC("iter/udp")
int bpx_sock_term_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct bpx_sock_term6_key key = {};
	struct bpx_sock_revnat6_key rkey = {};
	static const char fmt[] = "[%pI6]:%u\n"; /* uncompressed: terminate() writes it canonical */
	unsigned short family;
	__u64 args[2];

	if (!sk)
		return 0;
	family = sk->__sk_common.skc_family;
	/* An iterator program returns 0 ("next socket"); 1 would make the read fail with EAGAIN. */
	if (family == AF_INET) {
		term4(ctx, sk, sk->__sk_common.skc_daddr);
		return 0;
	}
	if (family != AF_INET6)
		return 0;
	key.address[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
	key.address[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
	key.address[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
	key.address[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
	if (sock_v4mapped(key.address[0], key.address[1], key.address[2])) {
		term4(ctx, sk, key.address[3]);
		return 0;
	}
	key.port = sk->__sk_common.skc_dport;
	if (!bpf_map_lookup_elem(&bpx_sock_term6_v1, &key))
		return 0;
	rkey.cookie = bpf_get_socket_cookie(sk);
	__builtin_memcpy(rkey.address, key.address, sizeof(rkey.address));
	rkey.port = key.port;
	if (!bpf_map_lookup_elem(&bpx_sock_revnat6_v1, &rkey))
		return 0;
	bpf_sock_destroy(&sk->__sk_common);
	args[0] = (__u64)(unsigned long)&key.address;
	args[1] = bpf_ntohs(key.port);
	bpf_seq_printf(ctx->meta->seq, fmt, sizeof(fmt), args, sizeof(args));
	return 0;
}

char _license[] SEC("license") = "GPL";
