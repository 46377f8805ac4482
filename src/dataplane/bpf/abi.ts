// TypeScript codecs for the BPF map ABI. The C structs in bpf/lib/*.h are the single
// source of truth; every codec here names the C struct and member it mirrors, and
// test/abi-btf.test.ts compares sizes and offsets with the compiled object's BTF.
import { ipv4FromNumber, ipv4PrefixMask, parseIPv4Network, writeIPv4 } from "../../k8s/ip.js";
// The only IPv6 text <-> bytes code in the tree so far (src/k8s/ip.ts is IPv4-only).
import { bytesToIpv6, ipv6ToBytes } from "../../k8s/ip.js";

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

/**
 * A fixed-size codec that also reads and writes the bytes as a latin1 string (one char per byte): the
 * reconciler keeps hundreds of thousands of entries, and a short string costs a fraction of a Buffer.
 */
export interface BinCodec<T> extends Codec<T> {
  encodeBin(value: T): string;
  decodeBin(bin: string): T;
}

/** Scratch for the latin1 forms (the biggest fixed-size struct is the service metadata, under 256 bytes). */
const binScratch = Buffer.alloc(256);

function toBin(size: number, fill: (buf: Buffer) => void): string {
  binScratch.fill(0, 0, size);
  fill(binScratch);
  return binScratch.toString("latin1", 0, size);
}

function fromBin(bin: string): Buffer {
  binScratch.write(bin, 0, "latin1");
  return binScratch;
}

type Kind = "u8" | "u16" | "u32" | "u64" | "be16" | "be32" | "ipv4" | "ipv6" | { cstr: number } | { pad: number };

interface Field {
  /** C member name. */
  c: string;
  /** JS property name; omitted for padding. */
  js?: string;
  kind: Kind;
}

function kindSize(k: Kind): number {
  if (typeof k === "object") return "cstr" in k ? k.cstr : k.pad;
  return { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4, ipv4: 4, ipv6: 16 }[k];
}

export function ipv4ToBytes(addr: string): Buffer {
  const b = Buffer.alloc(4);
  writeIPv4(b, 0, addr);
  return b;
}

export function bytesToIpv4(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

// Host byte order of the machine: BPF maps hold host-order integers as the CPU writes them.
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A string field's value; undefined means the field's zero value. */
function stringField(v: unknown, zero: string): string {
  if (v === undefined || v === null) return zero;
  if (typeof v !== "string") throw new TypeError(`expected a string, got ${typeof v}`);
  return v;
}

function writeField(buf: Buffer, off: number, k: Kind, v: unknown): void {
  if (typeof k === "object") {
    if ("cstr" in k) {
      const s = Buffer.from(stringField(v, ""), "utf8");
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
      if (LE) buf.writeUInt16LE(Number(v ?? 0), off);
      else buf.writeUInt16BE(Number(v ?? 0), off);
      return;
    case "u32":
      if (LE) buf.writeUInt32LE(Number(v ?? 0), off);
      else buf.writeUInt32BE(Number(v ?? 0), off);
      return;
    case "u64":
      if (LE) buf.writeBigUInt64LE(BigInt((v as bigint | number | undefined) ?? 0), off);
      else buf.writeBigUInt64BE(BigInt((v as bigint | number | undefined) ?? 0), off);
      return;
    case "be16":
      buf.writeUInt16BE(Number(v ?? 0), off);
      return;
    case "be32":
      buf.writeUInt32BE(Number(v ?? 0), off);
      return;
    case "ipv4":
      writeIPv4(buf, off, stringField(v, "0.0.0.0"));
      return;
    case "ipv6":
      ipv6ToBytes(stringField(v, "::")).copy(buf, off);
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
    case "ipv6":
      return bytesToIpv6(buf, off);
  }
}

/** A codec for a C struct whose members are laid out in order without implicit padding. */
function struct<T>(cName: string, fields: Field[]): BinCodec<T> {
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
      // From the shared pool: hundreds of thousands of small buffers per full sync; zeroed for the padding.
      const buf = Buffer.allocUnsafe(size).fill(0);
      for (const p of placed)
        writeField(buf, p.offset, p.kind, p.js ? (value as Record<string, unknown>)[p.js] : undefined);
      return buf;
    },
    decode(buf: Buffer, at = 0): T {
      if (buf.length < at + size) throw new RangeError(`${cName}: need ${size} bytes, have ${buf.length - at}`);
      const out: Record<string, unknown> = {};
      for (const p of placed) if (p.js) out[p.js] = readField(buf, at + p.offset, p.kind);
      return out as T;
    },
    encodeBin(value: T): string {
      return toBin(size, (buf) => {
        for (const p of placed)
          writeField(buf, p.offset, p.kind, p.js ? (value as Record<string, unknown>)[p.js] : undefined);
      });
    },
    decodeBin(bin: string): T {
      if (bin.length !== size) throw new RangeError(`${cName}: need ${size} bytes, have ${bin.length}`);
      return this.decode(fromBin(bin));
    },
  };
}

function scalar(cName: string, kind: "u8" | "u16" | "u32"): BinCodec<number> {
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
    encodeBin(v: number): string {
      return toBin(size, (buf) => writeField(buf, 0, kind, v));
    },
    decodeBin(bin: string): number {
      if (bin.length !== size) throw new RangeError(`${cName}: need ${size} bytes, have ${bin.length}`);
      return readField(fromBin(bin), 0, kind) as number;
    },
  };
}

// ---- constants mirrored from the headers ----

export const ABI_VERSION = 2;

export const MAP_NAMES = {
  services: "bpx_svc_v2",
  backends: "bpx_backend_v2",
  revNat: "bpx_revnat_v2",
  svcMeta: "bpx_svc_meta_v2",
  conntrack: "bpx_ct_v3",
  affinity: "bpx_affinity_v2",
  // Counters and config kept their v1 layout, so their names (and pins) carry over.
  counters: "bpx_counters_v1",
  config: "bpx_config_v1",
  maglev: "bpx_maglev_v1",
  sockRevNat: "bpx_sock_revnat_v1",
  /** IPv6 sockets' reverse entries (an IPv4-mapped peer's are in sockRevNat). */
  sockRevNat6: "bpx_sock_revnat6_v1",
  sockConfig: "bpx_sock_config_v1",
  sockScope: "bpx_sock_scope_v1",
  affinityMatch: "bpx_affinity_match_v1",
  nodePortAddrs: "bpx_nodeport_addrs_v1",
  nat: "bpx_snat_v1",
  natConfig: "bpx_nat_config_v1",
  /** The NodePort range the daemon reserved in ip_local_reserved_ports (never read by BPF; for cleanup). */
  reservedPorts: "bpx_reserved_v1",
  ctConfig: "bpx_ct_config_v1",
  sourceRanges: "bpx_srcrange_v1",
  // Per-CPU array of struct bpx_fe_stats since issue 19 (an LRU hash of bpx_counter before): the daemon
  // replaces an old pin as any uncarried map of another layout (migrate.ts), as when drops[] grew from 4 to 8.
  frontendStats: "bpx_fe_stats_v1",
  backendStats: "bpx_be_stats_v1",
  /** Ring buffer of struct bpx_event (events.h): no key or value type, read by `bpfproxy monitor`. */
  events: "bpx_events_v1",
  eventsConfig: "bpx_events_cfg_v1",
  eventsWindow: "bpx_events_rl_v1",
  fragments: "bpx_frag_v1",
  prefilter: "bpx_prefilter_v1",
  xdpDevs: "bpx_xdp_devs_v1",
  rejectLimit: "bpx_reject_rl_v1",
  bridgePorts: "bpx_bridge_ports_v1",
  // IPv6 (bpf/lib/lb6.h, conntrack6.h), beside the IPv4 maps: an IPv4 entry keeps its size (docs/maps.md).
  services6: "bpx_svc6_v1",
  backends6: "bpx_backend6_v1",
  conntrack6: "bpx_ct6_v1",
  reject6Limit: "bpx_reject6_rl_v1",
  nat6: "bpx_snat6_v1",
  nat6Config: "bpx_nat6_config_v1",
  sourceRanges6: "bpx_srcrange6_v1",
  /** ClientIP affinity of IPv6 clients (bpf/lib/affinity6.h); which backends an entry may name is affinityMatch. */
  affinity6: "bpx_affinity6_v1",
  /** The ports of IPv6 datagrams' first fragments (bpf/lib/frag6.h). */
  fragments6: "bpx_frag6_v1",
  /** IPv6's pre-filter bitmap (bpf/lib/prefilter6.h): u32 word index -> u64 word, then the ready slot. */
  prefilter6: "bpx_prefilter6_v1",
  /** Least-connection counts per backend id (bpf/lib/leastconn.h): BPF's opened minus ended, and the flows the
   * daemon ended (the conntrack GC); active = the first minus the second. */
  lcActive: "bpx_lc_active_v1",
  lcGone: "bpx_lc_gone_v1",
  /** PROG_ARRAY of the IPv6 programs the tc entries tail-call (bpf/lib/tail.h, tail.ts): values are program fds. */
  tailCalls: "bpx_tail_v1",
} as const;

/** Maps whose size is set by configuration (--map-sizes, bpfproxy.mapSizes); docs/maps.md has the memory cost. */
export interface MapSizes {
  /** bpx_svc_v2: one master per frontend and scope plus one entry per backend slot. */
  services: number;
  /** bpx_backend_v2: distinct endpoints (address, port, protocol). */
  backends: number;
  /** bpx_revnat_v2 and bpx_svc_meta_v2: one per frontend (address, port, protocol). */
  frontends: number;
  /** bpx_ct_v3: two entries per tracked flow (LRU, preallocated). */
  conntrack: number;
  /** bpx_affinity_v2: ClientIP affinity entries (LRU, preallocated). */
  affinity: number;
  /** bpx_svc6_v1: services' IPv6 half (masters and slots). */
  services6: number;
  /** bpx_backend6_v1: distinct IPv6 endpoints. */
  backends6: number;
  /** bpx_ct6_v1 (and bpx_snat6_v1, which follows it): two entries per tracked IPv6 flow (LRU, preallocated). */
  conntrack6: number;
  /** bpx_affinity6_v1: IPv6 ClientIP affinity entries (LRU, preallocated). */
  affinity6: number;
}

/** The C defaults (BPX_MAX_* in bpf/lib/): ≥ 50,000 frontends and ≥ 500,000 backend slots. */
export const DEFAULT_MAP_SIZES: Readonly<MapSizes> = Object.freeze({
  services: 1_048_576,
  backends: 524_288,
  frontends: 131_072,
  conntrack: 262_144,
  affinity: 65_536,
  services6: 65_536,
  backends6: 65_536,
  conntrack6: 65_536,
  affinity6: 65_536,
});

/** Which maps each size applies to. */
export const MAP_SIZE_TARGETS: Record<keyof MapSizes, string[]> = {
  services: ["bpx_svc_v2"],
  backends: ["bpx_backend_v2"],
  frontends: ["bpx_revnat_v2", "bpx_svc_meta_v2"],
  // The NAT table follows conntrack: a NAT flow has two entries as its conntrack has, and no more flows.
  conntrack: ["bpx_ct_v3", "bpx_snat_v1"],
  affinity: ["bpx_affinity_v2"],
  services6: ["bpx_svc6_v1"],
  backends6: ["bpx_backend6_v1"],
  conntrack6: ["bpx_ct6_v1", "bpx_snat6_v1"],
  affinity6: ["bpx_affinity6_v1"],
};

export const SCOPE_EXTERNAL = 0;
export const SCOPE_INTERNAL = 1;
export const SVC_F_AFFINITY = 1 << 0;
export const SVC_F_DROP_WHEN_EMPTY = 1 << 1;
export const SVC_F_MAGLEV = 1 << 5;
export const SVC_F_MASQUERADE = 1 << 2;
export const SVC_F_MASQ_OUTSIDE = 1 << 3;
export const SVC_F_SOURCE_RANGES = 1 << 4;
/** BPX_SVC_F_MAP_FULL: no backends written because the backend maps had no room (rejected as reject_map_full). */
export const SVC_F_MAP_FULL = 1 << 6;
/** BPX_SVC_F_LEAST_CONN: new flows pick by active flows per backend (bpf/lib/leastconn.h). */
export const SVC_F_LEAST_CONN = 1 << 7;
/** BPX_SVC_X_DSR (bpx_svc_value.xflags): external flows to a backend on another node by direct server return
 * (bpf/lib/dsr.h, docs/dsr.md) instead of masquerade. */
export const SVC_X_DSR = 1 << 0;
/** BPX_SVC_X_HYBRID: never read by BPF: the frontend's Service is in hybrid mode (DSR for TCP only), for `status`. */
export const SVC_X_HYBRID = 1 << 1;
/** BPX_MAX_LC: backend ids at or above it are not counted for least-conn. */
export const LC_MAX_BACKEND_IDS = 65_536;
export const CFG_F_MASQUERADE_ALL = 1 << 0;
export const CFG_F_DETECT_LOCAL = 1 << 1;
/** BPX_CFG_F_POD_SOURCE_CHECK: Service packets from a pod interface must come from an address routed back through it. */
export const CFG_F_POD_SOURCE_CHECK = 1 << 2;
export const NAT_CFG_F_FIB_REDIRECT = 1 << 0;
/** The daemon reserved the SNAT range in ip_local_reserved_ports (cleanup releases it). */
export const NAT_CFG_F_PORTS_RESERVED = 1 << 1;
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
export const CT_F_FIN_FORWARD = 1 << 2;
export const CT_F_FIN_REPLY = 1 << 3;
export const CT_F_SEQ_KNOWN = 1 << 4;
/** TCP: the backend answered (SYN-ACK), the client has not acknowledged it yet (SYN_RECV). */
export const CT_F_REPLIED = 1 << 5;
export const CT_F_STATE = CT_F_SEEN_REPLY | CT_F_CLOSING | CT_F_FIN_FORWARD | CT_F_FIN_REPLY | CT_F_REPLIED;
/** BPX_CT_X_NO_NAT: the flow has no NAT entries; its packets skip the NAT table. */
export const CT_X_NO_NAT = 1 << 0;
/** BPX_CT_X_COUNTED: a forward entry counted among its backend's active flows (bpf/lib/leastconn.h). */
export const CT_X_COUNTED = 1 << 2;
/** BPX_CT_X_DSR: a direct-server-return flow (bpf/lib/dsr.h). */
export const CT_X_DSR = 1 << 3;
export const CT_CFG_F_BE_LIBERAL = 1 << 0;
/** BPX_CT_RST_WINDOW */
export const CT_RST_WINDOW = 1 << 20;
/** BPX_CT_DEFAULT_*_NS: what a zero field of bpx_ct_config means. */
export const CT_DEFAULT_LIFETIMES_NS = Object.freeze({
  tcpSynSentNs: 60_000_000_000n,
  tcpEstablishedNs: 86_400_000_000_000n,
  tcpCloseWaitNs: 3_600_000_000_000n,
  tcpTimeWaitNs: 120_000_000_000n,
  tcpCloseNs: 10_000_000_000n,
  udpNs: 30_000_000_000n,
  udpStreamNs: 120_000_000_000n,
});
export const SVC_TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalIP"] as const;
export const ALGORITHMS = ["random", "maglev", "least-conn"] as const;
export const MAX_CLUSTER_CIDRS = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

/** enum bpx_reason: counter slot per named reason. */
export const COUNTER_REASONS = {
  translated_new: 0,
  translated_established: 1,
  reverse_translated: 2,
  not_service: 3,
  reject_no_backend: 4,
  affinity_hit: 5,
  backend_reselect: 6,
  icmp_translated: 7,
  icmp_not_tracked: 8,
  fragment_no_entry: 9,
  tuple_released: 10,
  xdp_tx: 11,
  reject_no_conntrack: 12,
  ct_rst_ignored: 13,
  xdp_redirect: 14,
  xdp_pass_no_xmit: 15,
  drop_malformed: 16,
  drop_rewrite: 17,
  drop_no_backend_entry: 18,
  drop_fragment: 19,
  drop_reject_failed: 20,
  drop_no_local_backend: 21,
  drop_source_range: 22,
  drop_snat_exhausted: 23,
  drop_pod_source: 24,
  reject_suppressed: 25,
  reject_map_full: 26,
  snat_evicted: 28,
  drop_nat_not_owner: 29,
  xdp_pass_csum_partial: 30,
  dsr_option_sent: 32,
  dsr_received: 33,
  dsr_frag_needed: 34,
} as const;
export const COUNTER_SLOTS = 40;

/** BPX_MAX_FE_STATS, BPX_MAX_BE_STATS (fecount.h): ids at or above are not counted per frontend/backend. */
export const MAX_FE_STATS = 16384;
export const MAX_BE_STATS = 65536;
/** enum bpx_fe_drop: bpx_fe_stats.drops slots, named as the metrics' reason label. */
export const FE_DROP_REASONS = [
  "no_backend",
  "source_range",
  "no_local_backend",
  "snat_exhausted",
  "map_full",
  "no_conntrack",
  "reject_suppressed",
] as const;
/** BPX_FE_DROP_MAX: drops[] slots in the value (FE_DROP_REASONS plus spares). */
export const FE_DROP_SLOTS = 8;
export type FeDropReason = (typeof FE_DROP_REASONS)[number];
/** BPX_EV_* (events.h). */
export const EV_NEW_FLOW = 1;
export const EV_DROP = 2;
export const EV_F_DROPS_ONLY = 1 << 0;

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
  /** SVC_X_*: the byte that was padding (zero in entries of earlier versions; absent: 0). */
  xflags?: number;
  affinityTimeout: number;
}
export const svcValue = struct<SvcValue>("bpx_svc_value", [
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "count", js: "count", kind: "u16" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "xflags", js: "xflags", kind: "u8" },
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
  /** TCP: the next sequence number of this direction's sender (with CT_F_SEQ_KNOWN); absent = 0. */
  nextSeq?: number;
  /** CT_X_*: what the flow's packets may skip, fixed at creation; absent = 0 (skip nothing). */
  xflags?: number;
  /** Forward entries: the pod interface whose packet created the flow passed the source check on; absent = 0 (none). */
  srcIfindex?: number;
  /** The backend's address and port, copied at creation (bpx_ct_v3); "0.0.0.0"/absent: the backend is gone. */
  backendAddr?: string;
  backendPort?: number;
}
export const ctEntry = struct<CtEntry>("bpx_ct_entry", [
  { c: "last_seen_ns", js: "lastSeenNs", kind: "u64" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "xflags", js: "xflags", kind: "u8" },
  { c: "src_ifindex", js: "srcIfindex", kind: "u16" },
  { c: "next_seq", js: "nextSeq", kind: "u32" },
  { c: "backend_addr", js: "backendAddr", kind: "ipv4" },
  { c: "backend_port", js: "backendPort", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

// ---- IPv6 (bpf/lib/lb6.h, conntrack6.h); the service value is svcValue ----

export interface Svc6Key {
  address: string;
  port: number;
  proto: number;
  scope: number;
  slot: number;
}
export const svc6Key = struct<Svc6Key>("bpx_svc6_key", [
  { c: "address", js: "address", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "scope", js: "scope", kind: "u8" },
  { c: "slot", js: "slot", kind: "u16" },
  { c: "pad", kind: { pad: 2 } },
]);

export const backend6 = struct<BackendEntry>("bpx_backend6", [
  { c: "address", js: "address", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "flags", js: "flags", kind: "u8" },
]);

export const ct6Key = struct<CtKey>("bpx_ct6_key", [
  { c: "saddr", js: "saddr", kind: "ipv6" },
  { c: "daddr", js: "daddr", kind: "ipv6" },
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "dir", js: "dir", kind: "u8" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface Ct6Entry {
  lastSeenNs: bigint;
  backendId: number;
  revNatId: number;
  flags: number;
  xflags?: number;
  srcIfindex?: number;
  nextSeq?: number;
  /** Forward entries: the backend's address and port; reply entries: the frontend's. */
  addr: string;
  port: number;
}
export const ct6Entry = struct<Ct6Entry>("bpx_ct6_entry", [
  { c: "last_seen_ns", js: "lastSeenNs", kind: "u64" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "flags", js: "flags", kind: "u8" },
  { c: "xflags", js: "xflags", kind: "u8" },
  { c: "src_ifindex", js: "srcIfindex", kind: "u16" },
  { c: "next_seq", js: "nextSeq", kind: "u32" },
  { c: "addr", js: "addr", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
  { c: "pad2", kind: { pad: 4 } },
]);

/** struct bpx_nat6_entry (nat6.h): forward: the node address and port written; reply: the client restored. */
export interface Nat6Entry {
  lastSeenNs: bigint;
  addr: string;
  frontendAddr: string;
  port: number;
  frontendPort: number;
  backendId: number;
}
export const nat6Entry = struct<Nat6Entry>("bpx_nat6_entry", [
  { c: "last_seen_ns", js: "lastSeenNs", kind: "u64" },
  { c: "addr", js: "addr", kind: "ipv6" },
  { c: "frontend_addr", js: "frontendAddr", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "frontend_port", js: "frontendPort", kind: "be16" },
  { c: "backend_id", js: "backendId", kind: "u32" },
]);

/** struct bpx_nat6_config (nat6.h): the node's IPv6 address masqueraded flows get ("::" = none). */
export const nat6Config = struct<{ masqAddr: string }>("bpx_nat6_config", [
  { c: "masq_addr", js: "masqAddr", kind: "ipv6" },
]);

/** union bpx_v6addr (ipv6.h) as a map key: an IPv6 address, network order. */
export const v6AddrKey = struct<{ address: string }>("bpx_v6addr", [{ c: "address", js: "address", kind: "ipv6" }]);

/** Slots of bpx_tail_v1 (bpf/lib/tail.h) and the program each holds. */
export const TAIL_CALL_PROGRAMS: Readonly<Record<number, string>> = Object.freeze({
  0: "bpx_v6_from_pod",
  1: "bpx_v6_from_device",
  2: "bpx_v6_from_l3dev",
  3: "bpx_v6_reverse",
  4: "bpx_v6_reverse_l3",
  5: "bpx_v6_icmp",
  6: "bpx_v6_icmp_l3",
  7: "bpx_dsr_lb",
  8: "bpx_dsr_backend",
});

export interface CtConfig {
  tcpSynSentNs: bigint;
  tcpEstablishedNs: bigint;
  tcpCloseWaitNs: bigint;
  tcpTimeWaitNs: bigint;
  tcpCloseNs: bigint;
  udpNs: bigint;
  udpStreamNs: bigint;
  flags: number;
}
export const ctConfig = struct<CtConfig>("bpx_ct_config", [
  { c: "tcp_syn_sent_ns", js: "tcpSynSentNs", kind: "u64" },
  { c: "tcp_established_ns", js: "tcpEstablishedNs", kind: "u64" },
  { c: "tcp_close_wait_ns", js: "tcpCloseWaitNs", kind: "u64" },
  { c: "tcp_time_wait_ns", js: "tcpTimeWaitNs", kind: "u64" },
  { c: "tcp_close_ns", js: "tcpCloseNs", kind: "u64" },
  { c: "udp_ns", js: "udpNs", kind: "u64" },
  { c: "udp_stream_ns", js: "udpStreamNs", kind: "u64" },
  { c: "flags", js: "flags", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);

export interface AffinityKey {
  client: string;
  revNatId: number;
}
export const affinityKey = struct<AffinityKey>("bpx_affinity_key", [
  { c: "client", js: "client", kind: "ipv4" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
]);

export interface Affinity6Key {
  client: string;
  revNatId: number;
}
export const affinity6Key = struct<Affinity6Key>("bpx_affinity6_key", [
  { c: "client", js: "client", kind: "ipv6" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
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

export interface FeStats {
  conns: bigint;
  packets: bigint;
  bytes: bigint;
  /** drops[i] by FE_DROP_REASONS[i]. */
  drops: bigint[];
}
const feStatsHead = struct<Omit<FeStats, "drops">>("bpx_fe_stats", [
  { c: "conns", js: "conns", kind: "u64" },
  { c: "packets", js: "packets", kind: "u64" },
  { c: "bytes", js: "bytes", kind: "u64" },
  { c: "drops", kind: { pad: 8 * FE_DROP_SLOTS } }, // __u64 drops[BPX_FE_DROP_MAX], read below
]);
/** struct bpx_fe_stats (one CPU's value). Encodes zero drops (only the daemon's zeroing writes it). */
export const feStats: Codec<FeStats> = {
  cName: feStatsHead.cName,
  size: feStatsHead.size,
  layout: feStatsHead.layout,
  encode: (v) => feStatsHead.encode(v),
  decode(buf, at = 0) {
    const head = feStatsHead.decode(buf, at);
    const drops = FE_DROP_REASONS.map((_, i) =>
      LE ? buf.readBigUInt64LE(at + 24 + 8 * i) : buf.readBigUInt64BE(at + 24 + 8 * i),
    );
    return { ...head, drops };
  },
};

export interface BeStats {
  conns: bigint;
  packets: bigint;
  bytes: bigint;
}
export const beStats = struct<BeStats>("bpx_be_stats", [
  { c: "conns", js: "conns", kind: "u64" },
  { c: "packets", js: "packets", kind: "u64" },
  { c: "bytes", js: "bytes", kind: "u64" },
]);

export interface BpxEvent {
  tsNs: bigint;
  revNatId: number;
  backendId: number;
  saddr: string;
  daddr: string;
  backendAddr: string;
  ifindex: number;
  sport: number;
  dport: number;
  backendPort: number;
  type: number;
  reason: number;
  proto: number;
}
export const event = struct<BpxEvent>("bpx_event", [
  { c: "ts_ns", js: "tsNs", kind: "u64" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "saddr", js: "saddr", kind: "ipv4" },
  { c: "daddr", js: "daddr", kind: "ipv4" },
  { c: "backend_addr", js: "backendAddr", kind: "ipv4" },
  { c: "ifindex", js: "ifindex", kind: "u32" },
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "backend_port", js: "backendPort", kind: "be16" },
  { c: "type", js: "type", kind: "u8" },
  { c: "reason", js: "reason", kind: "u8" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "pad", kind: { pad: 7 } },
]);

/** struct bpx_event6 (events6.h): an IPv6 path's record in the same ring buffer, told apart by its length. */
export const event6 = struct<BpxEvent>("bpx_event6", [
  { c: "ts_ns", js: "tsNs", kind: "u64" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "saddr", js: "saddr", kind: "ipv6" },
  { c: "daddr", js: "daddr", kind: "ipv6" },
  { c: "backend_addr", js: "backendAddr", kind: "ipv6" },
  { c: "ifindex", js: "ifindex", kind: "u32" },
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "backend_port", js: "backendPort", kind: "be16" },
  { c: "type", js: "type", kind: "u8" },
  { c: "reason", js: "reason", kind: "u8" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "pad", kind: { pad: 3 } },
]);

export interface EventsConfig {
  untilNs: bigint;
  rate: number;
  flags: number;
  owner: number;
}
export const eventsConfig = struct<EventsConfig>("bpx_events_config", [
  { c: "until_ns", js: "untilNs", kind: "u64" },
  { c: "rate", js: "rate", kind: "u32" },
  { c: "flags", js: "flags", kind: "u32" },
  { c: "owner", js: "owner", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);

export interface EventsWindow {
  startNs: bigint;
  emitted: bigint;
  suppressed: bigint;
  lost: bigint;
}
export const eventsWindow = struct<EventsWindow>("bpx_events_window", [
  { c: "start_ns", js: "startNs", kind: "u64" },
  { c: "emitted", js: "emitted", kind: "u64" },
  { c: "suppressed", js: "suppressed", kind: "u64" },
  { c: "lost", js: "lost", kind: "u64" },
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
  return ipv4FromNumber(ipv4PrefixMask(bits));
}

function maskToPrefix(mask: string): number {
  return ipv4ToBytes(mask).reduce((n, byte) => n + byte.toString(2).replace(/0/g, "").length, 0);
}

/** Parses "a.b.c.d/n" into its network address and prefix length. */
export function parseCidr4(cidr: string): { addr: string; bits: number } {
  const n = parseIPv4Network(cidr);
  if (!n) throw new RangeError(`not an IPv4 CIDR: ${JSON.stringify(cidr)}`);
  return { addr: n.network, bits: n.prefix };
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
    if (v.clusterCidrs.length > MAX_CLUSTER_CIDRS)
      throw new RangeError(`at most ${MAX_CLUSTER_CIDRS} cluster CIDRs are supported`);
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
    return {
      flags: readField(buf, at, "u32") as number,
      clusterCidrs,
      nodeName: readField(buf, at + CONFIG_NODE, { cstr: NODE_NAME_LEN }) as string,
    };
  },
};

export interface MaglevKey {
  revNatId: number;
  scope: number;
}
export const maglevKey = struct<MaglevKey>("bpx_maglev_key", [
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "scope", js: "scope", kind: "u8" },
  { c: "pad", kind: { pad: 3 } },
]);

/** BPX_MAGLEV_SIZE in bpf/lib/maglev.h. */
export const MAGLEV_SIZE = 16381;

/** struct bpx_maglev_table: the backend id of every Maglev table entry. */
export const maglevTable: Codec<Uint32Array> = {
  cName: "bpx_maglev_table",
  size: MAGLEV_SIZE * 4,
  layout: [{ c: "backend_ids", offset: 0, size: MAGLEV_SIZE * 4 }],
  encode(ids: Uint32Array): Buffer {
    if (ids.length !== MAGLEV_SIZE)
      throw new RangeError(`a Maglev table has ${MAGLEV_SIZE} entries, got ${ids.length}`);
    const buf = Buffer.alloc(this.size);
    ids.forEach((id, i) => writeField(buf, i * 4, "u32", id));
    return buf;
  },
  decode(buf: Buffer, at = 0): Uint32Array {
    const out = new Uint32Array(MAGLEV_SIZE);
    for (let i = 0; i < MAGLEV_SIZE; i++) out[i] = readField(buf, at + i * 4, "u32") as number;
    return out;
  },
};

export interface AffinityMatchKey {
  backendId: number;
  revNatId: number;
  scope: number;
}
export const affinityMatchKey = struct<AffinityMatchKey>("bpx_affinity_match_key", [
  { c: "backend_id", js: "backendId", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "scope", js: "scope", kind: "u8" },
  { c: "pad", kind: { pad: 3 } },
]);

export interface SockRevNatKey {
  cookie: bigint;
  address: string;
  port: number;
}
export const sockRevNatKey = struct<SockRevNatKey>("bpx_sock_revnat_key", [
  { c: "cookie", js: "cookie", kind: "u64" },
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface SockRevNatValue {
  address: string;
  port: number;
}
export const sockRevNatValue = struct<SockRevNatValue>("bpx_sock_revnat_value", [
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

export const sockRevNat6Key = struct<SockRevNatKey>("bpx_sock_revnat6_key", [
  { c: "cookie", js: "cookie", kind: "u64" },
  { c: "address", js: "address", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
  { c: "pad2", kind: { pad: 4 } },
]);

export const sockRevNat6Value = struct<SockRevNatValue>("bpx_sock_revnat6_value", [
  { c: "address", js: "address", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

export interface SockConfig {
  cgroupPath: string;
}
export const sockConfig = struct<SockConfig>("bpx_sock_config", [
  { c: "cgroup_path", js: "cgroupPath", kind: { cstr: 256 } },
]);

export interface SockScope {
  hostNetnsCookie: bigint;
  flags: number;
}
export const sockScope = struct<SockScope>("bpx_sock_scope", [
  { c: "host_netns_cookie", js: "hostNetnsCookie", kind: "u64" },
  { c: "flags", js: "flags", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);
/** bpx_sock_scope.flags: translate sockets of every network namespace in the cgroup (pods too). */
export const SOCK_F_POD_NAMESPACES = 1 << 0;

/** Key of bpx_sock_term_v1 (bpfproxy_sock_term.o, never pinned): a removed backend. */
export const sockTermKey = struct<{ address: string; port: number }>("bpx_sock_term_key", [
  { c: "address", js: "address", kind: "ipv4" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);
/** Key of bpx_sock_term6_v1 (bpfproxy_sock_term.o, never pinned): a removed IPv6 backend. */
export const sockTerm6Key = struct<{ address: string; port: number }>("bpx_sock_term6_key", [
  { c: "address", js: "address", kind: "ipv6" },
  { c: "port", js: "port", kind: "be16" },
  { c: "pad", kind: { pad: 2 } },
]);

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

export interface FragKey {
  saddr: string;
  daddr: string;
  id: number;
  proto: number;
}
export const fragKey = struct<FragKey>("bpx_frag_key", [
  { c: "saddr", js: "saddr", kind: "ipv4" },
  { c: "daddr", js: "daddr", kind: "ipv4" },
  { c: "id", js: "id", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "pad", kind: { pad: 1 } },
]);

export interface FragPorts {
  sport: number;
  dport: number;
}
export const fragPorts = struct<FragPorts>("bpx_frag_ports", [
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
]);

export interface Frag6Key {
  saddr: string;
  daddr: string;
  id: number;
}
export const frag6Key = struct<Frag6Key>("bpx_frag6_key", [
  { c: "saddr", js: "saddr", kind: "ipv6" },
  { c: "daddr", js: "daddr", kind: "ipv6" },
  { c: "id", js: "id", kind: "be32" },
]);

export interface Frag6Ports {
  sport: number;
  dport: number;
  proto: number;
}
export const frag6Ports = struct<Frag6Ports>("bpx_frag6_ports", [
  { c: "sport", js: "sport", kind: "be16" },
  { c: "dport", js: "dport", kind: "be16" },
  { c: "proto", js: "proto", kind: "u8" },
  { c: "pad", kind: { pad: 3 } },
]);

/** bpx_reject_bucket: a source's reject token bucket (reject.h). */
export interface RejectBucket {
  lastNs: bigint;
  tokens: number;
}
export const rejectBucket = struct<RejectBucket>("bpx_reject_bucket", [
  { c: "last_ns", js: "lastNs", kind: "u64" },
  { c: "tokens", js: "tokens", kind: "u32" },
  { c: "pad", kind: { pad: 4 } },
]);
/** BPX_REJECT_BURST and BPX_REJECT_INTERVAL_NS: replies a source gets at once, then one per interval. */
export const REJECT_BURST = 10;
export const REJECT_INTERVAL_NS = 100_000_000n;

export interface NatConfig {
  masqAddr: string;
  portMin: number;
  portMax: number;
  flags: number;
  /** The skb mark bits tc ingress sets on a packet it translated completely (tc egress clears them and skips
   * the packet); 0 = off (zero in pins of earlier versions, where this was padding). */
  translatedMark?: number;
}
export const natConfig = struct<NatConfig>("bpx_nat_config", [
  { c: "masq_addr", js: "masqAddr", kind: "ipv4" },
  { c: "port_min", js: "portMin", kind: "u16" },
  { c: "port_max", js: "portMax", kind: "u16" },
  { c: "flags", js: "flags", kind: "u32" },
  { c: "translated_mark", js: "translatedMark", kind: "u32" },
]);

export interface ReservedPorts {
  /** 0 = nothing reserved. */
  nodePortMin: number;
  nodePortMax: number;
}
export const reservedPorts = struct<ReservedPorts>("bpx_reserved_ports", [
  { c: "nodeport_min", js: "nodePortMin", kind: "u16" },
  { c: "nodeport_max", js: "nodePortMax", kind: "u16" },
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

export const srcRange6Key = struct<SrcRangeKey>("bpx_srcrange6_key", [
  { c: "prefixlen", js: "prefixlen", kind: "u32" },
  { c: "rev_nat_id", js: "revNatId", kind: "u32" },
  { c: "addr", js: "addr", kind: "ipv6" },
]);

/** Nested structs the BTF test checks as well. */
export const nestedCodecs = [cidr4];

export const u16Key = scalar("__u16", "u16");
export const u8Value = scalar("__u8", "u8");
export const u32Key = scalar("__u32", "u32");

/** A 64-bit word of the pre-filter bitmap (src/dataplane/bpf/prefilter.ts reads and writes it directly). */
export const u64Word: Codec<bigint> = {
  cName: "__u64",
  size: 8,
  layout: [],
  encode(v: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  },
  decode(buf: Buffer, at = 0): bigint {
    return buf.readBigUInt64LE(at);
  },
};

/** Every struct codec, for the BTF layout check. */
export const structCodecs: readonly Codec<unknown>[] = [
  svcKey,
  svcValue,
  backend,
  revNat,
  svcMeta,
  ctKey,
  ctEntry,
  affinityKey,
  affinityValue,
  counter,
  config,
  cidr4,
  maglevKey,
  maglevTable,
  affinityMatchKey,
  sockRevNatKey,
  sockRevNatValue,
  sockRevNat6Key,
  sockRevNat6Value,
  sockConfig,
  sockScope,
  nodePortAddr,
  natKey,
  natEntry,
  natConfig,
  reservedPorts,
  ctConfig,
  srcRangeKey,
  fragKey,
  fragPorts,
  frag6Key,
  frag6Ports,
  rejectBucket,
  feStats,
  beStats,
  event,
  event6,
  eventsConfig,
  eventsWindow,
  svc6Key,
  backend6,
  ct6Key,
  ct6Entry,
  nat6Entry,
  nat6Config,
  srcRange6Key,
  affinity6Key,
] as Codec<unknown>[];

/** Which codecs form each map's key and value. */
export const MAP_CODECS = {
  [MAP_NAMES.services]: { key: svcKey, value: svcValue },
  [MAP_NAMES.backends]: { key: u32Key, value: backend },
  [MAP_NAMES.revNat]: { key: u32Key, value: revNat },
  [MAP_NAMES.svcMeta]: { key: u32Key, value: svcMeta },
  [MAP_NAMES.conntrack]: { key: ctKey, value: ctEntry },
  [MAP_NAMES.affinity]: { key: affinityKey, value: affinityValue },
  [MAP_NAMES.counters]: { key: u32Key, value: counter },
  [MAP_NAMES.config]: { key: u32Key, value: config },
  [MAP_NAMES.maglev]: { key: maglevKey, value: maglevTable },
  [MAP_NAMES.sockRevNat]: { key: sockRevNatKey, value: sockRevNatValue },
  [MAP_NAMES.sockRevNat6]: { key: sockRevNat6Key, value: sockRevNat6Value },
  [MAP_NAMES.sockConfig]: { key: u32Key, value: sockConfig },
  [MAP_NAMES.sockScope]: { key: u32Key, value: sockScope },
  [MAP_NAMES.affinityMatch]: { key: affinityMatchKey, value: u8Value },
  [MAP_NAMES.nodePortAddrs]: { key: be32AddrKey, value: nodePortAddr },
  [MAP_NAMES.nat]: { key: natKey, value: natEntry },
  [MAP_NAMES.natConfig]: { key: u32Key, value: natConfig },
  [MAP_NAMES.reservedPorts]: { key: u32Key, value: reservedPorts },
  [MAP_NAMES.ctConfig]: { key: u32Key, value: ctConfig },
  [MAP_NAMES.sourceRanges]: { key: srcRangeKey, value: u32Key },
  [MAP_NAMES.frontendStats]: { key: u32Key, value: feStats },
  [MAP_NAMES.backendStats]: { key: u32Key, value: beStats },
  [MAP_NAMES.eventsConfig]: { key: u32Key, value: eventsConfig },
  [MAP_NAMES.eventsWindow]: { key: u32Key, value: eventsWindow },
  [MAP_NAMES.fragments]: { key: fragKey, value: fragPorts },
  [MAP_NAMES.fragments6]: { key: frag6Key, value: frag6Ports },
  [MAP_NAMES.prefilter]: { key: u32Key, value: u64Word },
  [MAP_NAMES.prefilter6]: { key: u32Key, value: u64Word },
  [MAP_NAMES.lcActive]: { key: u32Key, value: u64Word },
  [MAP_NAMES.lcGone]: { key: u32Key, value: u64Word },
  [MAP_NAMES.xdpDevs]: { key: u32Key, value: u32Key },
  [MAP_NAMES.rejectLimit]: { key: be32AddrKey, value: rejectBucket },
  [MAP_NAMES.bridgePorts]: { key: u32Key, value: u32Key },
  [MAP_NAMES.services6]: { key: svc6Key, value: svcValue },
  [MAP_NAMES.backends6]: { key: u32Key, value: backend6 },
  [MAP_NAMES.conntrack6]: { key: ct6Key, value: ct6Entry },
  [MAP_NAMES.reject6Limit]: { key: v6AddrKey, value: rejectBucket },
  [MAP_NAMES.nat6]: { key: ct6Key, value: nat6Entry },
  [MAP_NAMES.nat6Config]: { key: u32Key, value: nat6Config },
  [MAP_NAMES.sourceRanges6]: { key: srcRange6Key, value: u32Key },
  [MAP_NAMES.affinity6]: { key: affinity6Key, value: affinityValue },
  [MAP_NAMES.tailCalls]: { key: u32Key, value: u32Key },
} as const;
