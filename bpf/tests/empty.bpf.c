// SPDX-License-Identifier: GPL-2.0
/* The cheapest possible tc program: the baseline that per-packet costs of the real
 * programs are compared with under BPF_PROG_TEST_RUN. */
#include "common.h"

SEC("tc")
int bpx_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
