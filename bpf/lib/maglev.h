/* Maglev consistent hashing: per frontend, a table of BPX_MAGLEV_SIZE backend ids computed
 * by the daemon (src/dataplane/maglev.ts) from the backends' addresses, so every node holding
 * the same backends picks the same backend for the same flow. The program only hashes the
 * flow and indexes the table. */
#ifndef BPX_MAGLEV_H
#define BPX_MAGLEV_H
#include "common.h"

/* Prime, > 100 x the backends of a usual Service (the paper's advice for even shares). */
#define BPX_MAGLEV_SIZE 16381
#define BPX_MAGLEV_MAX_TABLES 4096

/* Fixed on every node: the hash must not depend on where the flow lands. */
#define BPX_MAGLEV_SEED 0x6270786dU

/* One table per frontend entry: the two scopes of a frontend can have different backends. */
struct bpx_maglev_key {
	__u32 rev_nat_id; /* the frontend's rev-NAT id, host byte order */
	__u8 scope;       /* BPX_SCOPE_* of the service entry */
	__u8 pad[3];      /* zero */
};

struct bpx_maglev_table {
	__u32 backend_ids[BPX_MAGLEV_SIZE]; /* host byte order; ids into bpx_backend_v1 */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpx_maglev_key);
	__type(value, struct bpx_maglev_table);
	__uint(max_entries, BPX_MAGLEV_MAX_TABLES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpx_maglev_v1 BPX_MAPS;

static __always_inline __u32 maglev_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> (32 - shift));
}

/* Bob Jenkins' lookup3 final mix over three words (the kernel's jhash_3words); its TypeScript
 * twin in src/dataplane/maglev.ts lets tests predict the choice. */
static __always_inline __u32 maglev_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += 0xdeadbeef + (3 << 2) + initval;
	b += 0xdeadbeef + (3 << 2) + initval;
	c += 0xdeadbeef + (3 << 2) + initval;
	c ^= b;
	c -= maglev_rol32(b, 14);
	a ^= c;
	a -= maglev_rol32(c, 11);
	b ^= a;
	b -= maglev_rol32(a, 25);
	c ^= b;
	c -= maglev_rol32(b, 16);
	a ^= c;
	a -= maglev_rol32(c, 4);
	b ^= a;
	b -= maglev_rol32(a, 14);
	c ^= b;
	c -= maglev_rol32(b, 24);
	return c;
}

/* The flow as the client sent it; addresses and ports as the bytes in the packet, read as
 * host-order words (TypeScript: readUInt32LE on little-endian hosts). */
static __always_inline __u32 maglev_flow_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 ports = ((__u32)dport << 16) | (__u32)sport;

	return maglev_jhash_3words(saddr, daddr, ports ^ proto, BPX_MAGLEV_SEED);
}

/* The backend id the frontend's table assigns to the flow hash; 0 when there is no table. */
static __always_inline __u32 maglev_backend(__u32 rev_nat_id, __u8 scope, __u32 hash)
{
	struct bpx_maglev_key key = {.rev_nat_id = rev_nat_id, .scope = scope};
	struct bpx_maglev_table *table = bpf_map_lookup_elem(&bpx_maglev_v1, &key);

	__u32 index = hash % BPX_MAGLEV_SIZE;

	if (!table)
		return 0;
	/* The verifier does not bound a modulo: hide the index from clang so the check stays. */
	asm volatile("" : "+r"(index));
	if (index >= BPX_MAGLEV_SIZE)
		return 0;
	return table->backend_ids[index];
}

#endif
