/* Shared includes and small helpers for every bpfproxy BPF program. */
#ifndef BPX_COMMON_H
#define BPX_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
/* linux/icmp.h pulls in glibc socket headers that break -target bpf; reject.h defines the ICMP bits it needs. */
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Map names carry this ABI version so a daemon never reuses pins of another layout. */
#define BPX_ABI_VERSION 1

/* Map definitions. bpfproxy.o links one compilation unit per hook (bpf/Makefile), each
 * including the maps it uses: weak symbols let the linker merge them into one map per name
 * (it checks the definitions are identical). */
#define BPX_MAPS SEC(".maps") __weak

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#endif
