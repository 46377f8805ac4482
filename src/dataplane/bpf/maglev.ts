// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of a prime size M in
// which every backend owns about M/N entries. A flow's hash picks an entry, so every node with the
// same backend set picks the same backend for the same flow, and a change of the set moves only
// about 1/N of the entries. Pure: the data plane writes the table, the BPF program only indexes it.
import { createHash } from "node:crypto";
import { MAGLEV_SIZE } from "./abi.js";
import { canonicalIP, ipv6ToBytes, writeIPv4 } from "../../k8s/ip.js";

/** Default table size (BPX_MAGLEV_SIZE): prime, and > 100 × the backends a Service usually has. */
export const MAGLEV_TABLE_SIZE = MAGLEV_SIZE;

/** A backend's table identity: the same on every node (ids are node-local, names are not). */
export function maglevName(address: string, port: number): string {
  // An IPv6 address in one text form (RFC 5952), whichever form the EndpointSlice of each node had.
  return `${canonicalIP(address)}:${port}`;
}

function isPrime(n: number): boolean {
  if (n < 2 || !Number.isInteger(n)) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/**
 * The Maglev table for `names`: entry i holds an index into `names` (-1 everywhere when there are
 * none). Depends only on the set of names, never on their order, so nodes that list backends in
 * another order build the same table. `turns` (parallel to names; absent: 1 each) weighs them: in every
 * round a backend takes that many entries in a row from its permutation, so the entries are in the ratio of the
 * turns (up to the last round); 0 takes none (bpfproxy.io/backend-weights, reduced as slots.ts slotRuns does).
 */
export function maglevTable(names: readonly string[], size = MAGLEV_TABLE_SIZE, turns?: readonly number[]): Int32Array {
  if (!isPrime(size)) throw new RangeError(`maglev table size must be prime, got ${size}`);
  const table = new Int32Array(size).fill(-1);
  const order = names
    .map((_, i) => i)
    .filter((i) => !turns || turns[i]! > 0)
    .sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : a - b));
  const n = order.length;
  if (n === 0) return table;
  // Each backend walks its own permutation of the table: start at offset, step by skip (a step
  // coprime with the prime size visits every entry once).
  const pos = new Array<number>(n);
  const skip = new Array<number>(n);
  order.forEach((idx, i) => {
    const h = createHash("sha256").update(names[idx]!).digest();
    pos[i] = h.readUInt32BE(0) % size;
    skip[i] = (h.readUInt32BE(4) % (size - 1)) + 1;
  });
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      for (let t = turns ? turns[order[i]!]! : 1; t > 0; t--) {
        let c = pos[i]!;
        while (table[c] !== -1) c = (c + skip[i]!) % size;
        table[c] = order[i]!;
        pos[i] = (c + skip[i]!) % size;
        if (++filled === size) return table;
      }
    }
  }
}

const rol32 = (w: number, s: number) => ((w << s) | (w >>> (32 - s))) >>> 0;

/** The kernel's jhash_3words, as bpf/lib/maglev.h computes it. */
export function jhash3(a: number, b: number, c: number, initval: number): number {
  const init = (0xdeadbeef + (3 << 2) + initval) >>> 0;
  a = (a + init) >>> 0;
  b = (b + init) >>> 0;
  c = (c + init) >>> 0;
  c = ((c ^ b) - rol32(b, 14)) >>> 0;
  a = ((a ^ c) - rol32(c, 11)) >>> 0;
  b = ((b ^ a) - rol32(a, 25)) >>> 0;
  c = ((c ^ b) - rol32(b, 16)) >>> 0;
  a = ((a ^ c) - rol32(c, 4)) >>> 0;
  b = ((b ^ a) - rol32(a, 14)) >>> 0;
  c = ((c ^ b) - rol32(b, 24)) >>> 0;
  return c;
}

/** BPX_MAGLEV_SEED: the same on every node. */
export const MAGLEV_SEED = 0x6270786d;

/**
 * The flow hash bpf/lib/maglev.h computes for a packet (addresses dotted, ports as numbers), on
 * this host's byte order: the program reads the packet's bytes as host-order words.
 */
export function maglevFlowHash(saddr: string, daddr: string, sport: number, dport: number, proto: number): number {
  const b = Buffer.alloc(12);
  writeIPv4(b, 0, saddr);
  writeIPv4(b, 4, daddr);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const word = (off: number) => (le ? b.readUInt32LE(off) : b.readUInt32BE(off));
  return jhash3(word(0), word(4), (word(8) ^ proto) >>> 0, MAGLEV_SEED);
}

/**
 * The flow hash bpf/lib/maglev6.h computes for an IPv6 packet: the nine words of the 5-tuple (addresses as
 * their 16 bytes, then the ports and the protocol as maglevFlowHash) through three chained jhash3 calls, each
 * seeded with the last, words read in this host's byte order as the program does.
 */
export function maglevFlowHash6(saddr: string, daddr: string, sport: number, dport: number, proto: number): number {
  const b = Buffer.alloc(36);
  ipv6ToBytes(saddr).copy(b, 0);
  ipv6ToBytes(daddr).copy(b, 16);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const w = (off: number) => (le ? b.readUInt32LE(off) : b.readUInt32BE(off));
  let h = jhash3(w(0), w(4), w(8), MAGLEV_SEED);
  h = jhash3(w(12), w(16), w(20), h);
  return jhash3(w(24), w(28), (w(32) ^ proto) >>> 0, h);
}

/** Which table entry a flow hash selects (the program's `hash % BPX_MAGLEV_SIZE`). */
export function maglevIndex(hash: number, size = MAGLEV_TABLE_SIZE): number {
  return hash % size;
}
