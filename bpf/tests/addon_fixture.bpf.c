/* Small programs and maps exercised by test/native.test.ts (the native addon's tests). */
#include "common.h"

/* One counter per program type, so a test can tell which hook saw packets. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tc_counter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xdp_counter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cg_counter SEC(".maps");

/* Plain hash for map-operation tests: 4-byte key, 8-byte value, room for 16. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} test_hash SEC(".maps");

/* Pinned under the object's pin root and reused by the next load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned_hash SEC(".maps");

/* 4-byte values so valueSizeAll shows the per-CPU rounding up to 8. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} percpu_arr SEC(".maps");

static __always_inline void bump(void *map)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(map, &zero);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *p = bpf_map_lookup_elem(&percpu_arr, &zero);

	bump(&tc_counter);
	if (p)
		*p += 1;
	return TC_ACT_OK;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	bump(&xdp_counter);
	return XDP_PASS;
}

SEC("cgroup_skb/egress")
int cg_egress_count(struct __sk_buff *skb)
{
	bump(&cg_counter);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
