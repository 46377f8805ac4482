// SPDX-License-Identifier: GPL-2.0
/* The released bpx_ct_v2 conntrack map (24-byte entries, without the backend's address and port
 * bpx_ct_v3 carries), frozen: test/e2e-migrate.test.ts pins it as a v2 daemon left it, to check
 * that a restart migrates its flows into bpx_ct_v3 (src/dataplane/bpf/migrate.ts). */
#include "common.h"

struct bpx_ct_key_v2 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct bpx_ct_entry_v2 {
	__u64 last_seen_ns;
	__u32 backend_id;
	__u32 rev_nat_id;
	__u8 flags;
	__u8 xflags;
	__u16 src_ifindex;
	__u32 next_seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpx_ct_key_v2);
	__type(value, struct bpx_ct_entry_v2);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_ct_v2 SEC(".maps");

/* Keeps the map referenced by a program so libbpf creates it. */
SEC("tc")
int bpx_ct_v2_fixture(struct __sk_buff *skb)
{
	struct bpx_ct_key_v2 key = {};

	return bpf_map_lookup_elem(&bpx_ct_v2, &key) ? TC_ACT_OK : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
