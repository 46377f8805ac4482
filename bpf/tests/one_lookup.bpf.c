// SPDX-License-Identifier: GPL-2.0
/* The floor for a table-driven translation, for bench/datapath.ts: parse Ethernet, IPv4 and the
 * ports as bpfproxy does, then exactly one hash lookup keyed by the destination, in a map of the
 * service map's size and kind, and nothing else. */
#include "common.h"
#include "parse.h"

struct ref_key {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ref_key);
	__type(value, __u64);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bpx_ref_table SEC(".maps");

SEC("tc")
int bpx_one_lookup(struct __sk_buff *skb)
{
	struct bpx_pkt pkt;
	struct ref_key key = {};
	__u64 *v;

	if (pkt_parse(skb, &pkt) != BPX_PARSE_OK)
		return TC_ACT_OK;
	key.address = pkt.daddr;
	key.port = pkt.dport;
	key.proto = pkt.proto;
	v = bpf_map_lookup_elem(&bpx_ref_table, &key);
	if (v)
		skb->mark = (__u32)*v;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
