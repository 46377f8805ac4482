// TypeScript codecs for the BPF map ABI. The C structs in bpf/lib/*.h are the single
// source of truth; every codec here names the C struct and member it mirrors, and
// test/abi-btf.test.ts compares sizes and offsets with the compiled object's BTF.

/** One member of a C struct as laid out in memory. */
export interface MemberLayout {
  /** C member name. */
  c: string;
  offset: number;
  size: number;
}

export interface Codec<T> {
  /** C struct (or scalar type) name, e.g. "bpx_svc_key" or "__u16". */
  readonly cName: string;
  readonly size: number;
  readonly layout: readonly MemberLayout[];
  encode(value: T): Buffer;
  decode(buf: Buffer, offset?: number): T;
}

type Kind = "u8" | "u16" | "u32" | "u64" | "be16" | "be32" | "ipv4" | { cstr: number } | { pad: number };

interface Field {
  /** C member name. */
  c: string;
  /** JS property name; omitted for padding. */
  js?: string;
  kind: Kind;
}

function kindSize(k: Kind): number {
  if (typeof k === "object") return "cstr" in k ? k.cstr : k.pad;
  return { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4, ipv4: 4 }[k];
}

export function ipv4ToBytes(addr: string): Buffer {
  const parts = addr.split(".");
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
  const b = Buffer.alloc(4);
  parts.forEach((p, i) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new RangeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
    b[i] = n;
  });
  return b;
}

export function bytesToIpv4(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

// Host byte order of the machine: BPF maps hold host-order integers as the CPU writes them.
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function writeField(buf: Buffer, off: number, k: Kind, v: unknown): void {
  if (typeof k === "object") {
    if ("cstr" in k) {
      const s = Buffer.from(String(v ?? ""), "utf8");
      if (s.length >= k.cstr) throw new RangeError(`string longer than ${k.cstr - 1} bytes: ${JSON.stringify(v)}`);
      s.copy(buf, off);
    }
    return; // padding stays zero
  }
  switch (k) {
    case "u8":
      buf.writeUInt8(Number(v ?? 0), off);
      return;
    case "u16":
      LE ? buf.writeUInt16LE(Number(v ?? 0), off) : buf.writeUInt16BE(Number(v ?? 0), off);
      return;
    case "u32":
      LE ? buf.writeUInt32LE(Number(v ?? 0), off) : buf.writeUInt32BE(Number(v ?? 0), off);
      return;
    case "u64":
      LE ? buf.writeBigUInt64LE(BigInt((v as bigint | number | undefined) ?? 0), off) : buf.writeBigUInt64BE(BigInt((v as bigint | number | undefined) ?? 0), off);
      return;
    case "be16":
      buf.writeUInt16BE(Number(v ?? 0), off);
      return;
    case "be32":
      buf.writeUInt32BE(Number(v ?? 0), off);
      return;
    case "ipv4":
      ipv4ToBytes(String(v ?? "0.0.0.0")).copy(buf, off);
      return;
  }
}

function readField(buf: Buffer, off: number, k: Kind): unknown {
  if (typeof k === "object") {
    if ("cstr" in k) {
      const end = buf.indexOf(0, off);
      return buf.toString("utf8", off, end < 0 || end > off + k.cstr ? off + k.cstr : end);
    }
    return undefined;
  }
  switch (k) {
    case "u8":
      return buf.readUInt8(off);
    case "u16":
      return LE ? buf.readUInt16LE(off) : buf.readUInt16BE(off);
    case "u32":
      return LE ? buf.readUInt32LE(off) : buf.readUInt32BE(off);
    case "u64":
      return LE ? buf.readBigUInt64LE(off) : buf.readBigUInt64BE(off);
    case "be16":
      return buf.readUInt16BE(off);
    case "be32":
      return buf.readUInt32BE(off);
    case "ipv4":
      return bytesToIpv4(buf, off);
  }
}

/** A codec for a C struct whose members are laid out in order without implicit padding. */
function struct<T>(cName: string, fields: Field[]): Codec<T> {
  let offset = 0;
  const placed = fields.map((f) => {
    const p = { ...f, offset, size: kindSize(f.kind) };
    offset += p.size;
    return p;
  });
  const size = offset;
  return {
    cName,
    size,
    layout: placed.map((p) => ({ c: p.c, offset: p.offset, size: p.size })),
    encode(value: T): Buffer {
      const buf = Buffer.alloc(size);
      for (const p of placed) writeField(buf, p.offset, p.kind, p.js ? (value as Record<string, unknown>)[p.js] : undefined);
      return buf;
    },
    decode(buf: Buffer, at = 0): T {
      if (buf.length < at + size) throw new RangeError(`${cName}: need ${size} bytes, have ${buf.length - at}`);
      const out: Record<string, unknown> = {};
      for (const p of placed) if (p.js) out[p.js] = readField(buf, at + p.offset, p.kind);
      return out as T;
    },
  };
}

function scalar(cName: string, kind: "u16" | "u32"): Codec<number> {
  const size = kindSize(kind);
  return {
    cName,
    size,
    layout: [],
    encode(v: number): Buffer {
      const b = Buffer.alloc(size);
      writeField(b, 0, kind, v);
      return b;
    },
    decode(buf: Buffer, at = 0): number {
      return readField(buf, at, kind) as number;
    },
  };
}

// ---- constants mirrored from the headers ----

export const ABI_VERSION = 1;

export const MAP_NAMES = {
  services: "bpx_svc_v1",
  backends: "bpx_backend_v1",
  revNat: "bpx_revnat_v1",
  svcMeta: "bpx_svc_meta_v1",
  conntrack: "bpx_ct_v1",
  affinity: "bpx_affinity_v1",
  counters: "bpx_counters_v1",
  config: "bpx_config_v1",
  nodePortAddrs: "bpx_nodeport_addrs_v1",
  nat: "bpx_snat_v1",
  natConfig: "bpx_nat_config_v1",
  sourceRanges: "bpx_srcrange_v1",
  frontendStats: "bpx_fe_stats_v1",
} as const;

export const SCOPE_EXTERNAL = 0;
export const SCOPE_INTERNAL = 1;
export const SVC_F_AFFINITY = 1 << 0;
export const SVC_F_DROP_WHEN_EMPTY = 1 << 1;
export const SVC_F_MASQUERADE = 1 << 2;
export const SVC_F_MASQ_OUTSIDE = 1 << 3;
export const SVC_F_SOURCE_RANGES = 1 << 4;
export const CFG_F_MASQUERADE_ALL = 1 << 0;
export const CFG_F_DETECT_LOCAL = 1 << 1;
export const NAT_CFG_F_FIB_REDIRECT = 1 << 0;
export const NODEPORT_ADDR_F_SERVE = 1 << 0;
export const NODEPORT_ADDR_F_LOCAL = 1 << 1;
export const NAT_DIR_FORWARD = 0;
export const NAT_DIR_REPLY = 1;
export const NAT_E_MASQUERADED = 1 << 0;
export const NAT_E_SEEN_REPLY = 1 << 1;
export const NAT_E_CLOSING = 1 << 2;
/** Address of a NodePort's wildcard service entry. */
export const WILDCARD_ADDRESS = "0.0.0.0";
export const BACKEND_F_TERMINATING = 1 << 0;
export const BACKEND_F_NODE_LOCAL = 1 << 1;
export const CT_DIR_FORWARD = 0;
export const CT_DIR_REPLY = 1;
export const CT_F_SEEN_REPLY = 1 << 0;
export const CT_F_CLOSING = 1 << 1;
export const SVC_TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalIP"] as const;
export const ALGORITHMS = ["random", "maglev"] as const;
export const MAX_CLUSTER_CIDRS = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** enum bpx_reason: counter slot per named reason. */
export const COUNTER_REASONS = {
  translated_new: 0,
  translated_established: 1,
  reverse_translated: 2,
  not_service: 3,
  reject_no_backend: 4,
  affinity_hit: 5,
  backend_reselect: 6,
  drop_malformed: 16,
  drop_rewrite: 17,
  drop_no_backend_entry: 18,
  drop_fragment: 19,
  drop_reject_failed: 20,
  drop_no_local_backend: 21,
  drop_source_range: 22,
  drop_snat_exhausted: 23,
} as const;
export const COUNTER_SLOTS = 32;

// ---- structs ----

export interface SvcKey {
  address: string;
  port: number;
  proto: number;
  scope: number;
  slot: number;
}
export const svcKey = struct<SvcKey>("bpx_svc_key", [
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "scope", js: "scope", kind: "u8" },
  { c: "slot", js: "slot", kind: "u16" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface SvcValue {
  backendId: number;
  count: number;
  revNatId: number;
  flags: number;
  affinityTimeout: number;
}
export const svcValue = struct<SvcValue>("bpx_svc_value", [
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "count", js: "count", kind: "u16" },
  { c: "rev_nat_id", js: "revNatId", kind: "u16" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "pad1", kind: { pad: 1 } },
  { c: "pad2", kind: { pad: 2 } },
  { c: "affinity_timeout", js: "affinityTimeout", kind: "u32" },
]);

export interface BackendEntry {
  address: string;
  port: number;
  proto: number;
  flags: number;
}
export const backend = struct<BackendEntry>("bpx_backend", [
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "flags", js: "flags", kind: "u8" },
]);

export interface RevNat {
  address: string;
  port: number;
}
export const revNat = struct<RevNat>("bpx_rev_nat", [
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface SvcMeta {
  service: string;
  portName: string;
  type: number;
  algorithm: number;
  affinity: number;
}
export const svcMeta = struct<SvcMeta>("bpx_svc_meta", [
  { c: "service", js: "service", kind: { cstr: 128 } },
  { c: "port_name", js: "portName", kind: { cstr: 64 } },
  { c: "type", js: "type", kind: "u8" },
  { c: "algorithm", js: "algorithm", kind: "u8" },
  { c: "affinity", js: "affinity", kind: "u8" },
  { c: "pad", kind: { pad: 1 } },
]);

export interface CtKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  dir: number;
}
export const ctKey = struct<CtKey>("bpx_ct_key", [
  { c: "saddr", js: "saddr", kind: "ipv4" },
  { c: "daddr", js: "daddr", kind: "ipv4" },
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "dir", js: "dir", kind: "u8" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface CtEntry {
  lastSeenNs: bigint;
  backendId: number;
  revNatId: number;
  flags: number;
}
export const ctEntry = struct<CtEntry>("bpx_ct_entry", [
  { c: "last_seen_ns", js: "lastSeenNs", kind: "u64" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u16" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "pad", kind: { pad: 1 } },
]);

export interface AffinityKey {
  client: string;
  revNatId: number;
}
export const affinityKey = struct<AffinityKey>("bpx_affinity_key", [
  { c: "client", js: "client", kind: "ipv4" },
  { c: "rev_nat_id", js: "revNatId", kind: "u16" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface AffinityValue {
  lastUsedNs: bigint;
  backendId: number;
}
export const affinityValue = struct<AffinityValue>("bpx_affinity_value", [
  { c: "last_used_ns", js: "lastUsedNs", kind: "u64" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);

export interface Counter {
  packets: bigint;
  bytes: bigint;
}
export const counter = struct<Counter>("bpx_counter", [
  { c: "packets", js: "packets", kind: "u64" },
  { c: "bytes", js: "bytes", kind: "u64" },
]);

export interface BpxConfig {
  flags: number;
  /** IPv4 CIDRs ("10.244.0.0/16"), at most MAX_CLUSTER_CIDRS. */
  clusterCidrs: string[];
  nodeName: string;
}

const cidr4 = struct<{ addr: string; mask: string }>("bpx_cidr4", [
  { c: "addr", js: "addr", kind: "ipv4" },
  { c: "mask", js: "mask", kind: "ipv4" },
]);

function prefixToMask(bits: number): string {
  const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return [24, 16, 8, 0].map((s) => (m >>> s) & 0xff).join(".");
}

function maskToPrefix(mask: string): number {
  return ipv4ToBytes(mask).reduce((n, byte) => n + byte.toString(2).replace(/0/g, "").length, 0);
}

/** Parses "a.b.c.d/n" into its network address and prefix length. */
export function parseCidr4(cidr: string): { addr: string; bits: number } {
  const [a, b, extra] = cidr.split("/");
  const bits = Number(b);
  if (extra !== undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) throw new RangeError(`not an IPv4 CIDR: ${JSON.stringify(cidr)}`);
  const addrBytes = ipv4ToBytes(a!);
  const maskBytes = ipv4ToBytes(prefixToMask(bits));
  return { addr: bytesToIpv4(Buffer.from(addrBytes.map((x, i) => x & maskBytes[i]!))), bits };
}

const CONFIG_HEAD = 8;
const CONFIG_NODE = CONFIG_HEAD + cidr4.size * MAX_CLUSTER_CIDRS;
const NODE_NAME_LEN = 64;
export const config: Codec<BpxConfig> = {
  cName: "bpx_config",
  size: CONFIG_NODE + NODE_NAME_LEN,
  layout: [
    { c: "flags", offset: 0, size: 4 },
    { c: "n_cluster_cidrs", offset: 4, size: 4 },
    { c: "cluster_cidrs", offset: CONFIG_HEAD, size: cidr4.size * MAX_CLUSTER_CIDRS },
    { c: "node_name", offset: CONFIG_NODE, size: NODE_NAME_LEN },
  ],
  encode(v: BpxConfig): Buffer {
    if (v.clusterCidrs.length > MAX_CLUSTER_CIDRS) throw new RangeError(`at most ${MAX_CLUSTER_CIDRS} cluster CIDRs are supported`);
    const buf = Buffer.alloc(this.size);
    writeField(buf, 0, "u32", v.flags);
    writeField(buf, 4, "u32", v.clusterCidrs.length);
    v.clusterCidrs.forEach((c, i) => {
      const { addr, bits } = parseCidr4(c);
      cidr4.encode({ addr, mask: prefixToMask(bits) }).copy(buf, CONFIG_HEAD + i * cidr4.size);
    });
    writeField(buf, CONFIG_NODE, { cstr: NODE_NAME_LEN }, v.nodeName);
    return buf;
  },
  decode(buf: Buffer, at = 0): BpxConfig {
    const n = Math.min(readField(buf, at + 4, "u32") as number, MAX_CLUSTER_CIDRS);
    const clusterCidrs: string[] = [];
    for (let i = 0; i < n; i++) {
      const { addr, mask } = cidr4.decode(buf, at + CONFIG_HEAD + i * cidr4.size);
      clusterCidrs.push(`${addr}/${maskToPrefix(mask)}`);
    }
    return { flags: readField(buf, at, "u32") as number, clusterCidrs, nodeName: readField(buf, at + CONFIG_NODE, { cstr: NODE_NAME_LEN }) as string };
  },
};

export interface NodePortAddr {
  flags: number;
}
export const nodePortAddr = struct<NodePortAddr>("bpx_nodeport_addr", [{ c: "flags", js: "flags", kind: "u32" }]);
export const be32AddrKey = struct<{ address: string }>("__be32", [{ c: "address", js: "address", kind: "ipv4" }]);

export interface NatKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  dir: number;
}
export const natKey = struct<NatKey>("bpx_nat_key", [
  { c: "saddr", js: "saddr", kind: "ipv4" },
  { c: "daddr", js: "daddr", kind: "ipv4" },
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "dir", js: "dir", kind: "u8" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface NatEntry {
  lastSeenNs: bigint;
  addr: string;
  frontendAddr: string;
  port: number;
  frontendPort: number;
  backendId: number;
  flags: number;
}
export const natEntry = struct<NatEntry>("bpx_nat_entry", [
  { c: "last_seen_ns", js: "lastSeenNs", kind: "u64" },
  { c: "addr", js: "addr", kind: "ipv4" },
  { c: "frontend_addr", js: "frontendAddr", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "frontend_port", js: "frontendPort", kind: "be16" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "pad1", kind: { pad: 1 } },
  { c: "pad2", kind: { pad: 2 } },
  { c: "pad3", kind: { pad: 4 } },
]);

export interface NatConfig {
  masqAddr: string;
  portMin: number;
  portMax: number;
  flags: number;
}
export const natConfig = struct<NatConfig>("bpx_nat_config", [
  { c: "masq_addr", js: "masqAddr", kind: "ipv4" },
  { c: "port_min", js: "portMin", kind: "u16" },
  { c: "port_max", js: "portMax", kind: "u16" },
  { c: "flags", js: "flags", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);

export interface SrcRangeKey {
  prefixlen: number;
  revNatId: number;
  addr: string;
}
export const srcRangeKey = struct<SrcRangeKey>("bpx_srcrange_key", [
  { c: "prefixlen", js: "prefixlen", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "addr", js: "addr", kind: "ipv4" },
]);

/** Nested structs the BTF test checks as well. */
export const nestedCodecs = [cidr4];

export const u16Key = scalar("__u16", "u16");
export const u32Key = scalar("__u32", "u32");

/** Every struct codec, for the BTF layout check. */
export const structCodecs: readonly Codec<unknown>[] = [
  svcKey, svcValue, backend, revNat, svcMeta, ctKey, ctEntry, affinityKey, affinityValue, counter, config, cidr4,
  nodePortAddr, natKey, natEntry, natConfig, srcRangeKey,
] as Codec<unknown>[];

/** Which codecs form each map's key and value. */
export const MAP_CODECS = {
  [MAP_NAMES.services]: { key: svcKey, value: svcValue },
  [MAP_NAMES.backends]: { key: u32Key, value: backend },
  [MAP_NAMES.revNat]: { key: u16Key, value: revNat },
  [MAP_NAMES.svcMeta]: { key: u16Key, value: svcMeta },
  [MAP_NAMES.conntrack]: { key: ctKey, value: ctEntry },
  [MAP_NAMES.affinity]: { key: affinityKey, value: affinityValue },
  [MAP_NAMES.counters]: { key: u32Key, value: counter },
  [MAP_NAMES.config]: { key: u32Key, value: config },
  [MAP_NAMES.nodePortAddrs]: { key: be32AddrKey, value: nodePortAddr },
  [MAP_NAMES.nat]: { key: natKey, value: natEntry },
  [MAP_NAMES.natConfig]: { key: u32Key, value: natConfig },
  [MAP_NAMES.sourceRanges]: { key: srcRangeKey, value: u32Key },
  [MAP_NAMES.frontendStats]: { key: u32Key, value: counter },
} as const;
