// The kernel's IPVS table over generic netlink (family "IPVS", linux/ip_vs.h): attribute encoding and the
// service/destination commands. The addon sends the bytes; everything IPVS-specific lives here.
import * as native from "../../native/index.js";
import { bytesToIpv6, ipv6ToBytes, isIPv6, writeIPv4 } from "../../k8s/ip.js";

const FAMILY = "IPVS";
const VERSION = 1; // IPVS_GENL_VERSION

const CMD = {
  NEW_SERVICE: 1,
  SET_SERVICE: 2,
  DEL_SERVICE: 3,
  GET_SERVICE: 4,
  NEW_DEST: 5,
  SET_DEST: 6,
  DEL_DEST: 7,
  GET_DEST: 8,
  FLUSH: 17,
} as const;
const ATTR = { SERVICE: 1, DEST: 2 } as const;
const SVC = {
  AF: 1,
  PROTOCOL: 2,
  ADDR: 3,
  PORT: 4,
  FWMARK: 5,
  SCHED_NAME: 6,
  FLAGS: 7,
  TIMEOUT: 8,
  NETMASK: 9,
} as const;
const DEST = {
  ADDR: 1,
  PORT: 2,
  FWD_METHOD: 3,
  WEIGHT: 4,
  U_THRESH: 5,
  L_THRESH: 6,
  ACTIVE_CONNS: 7,
  INACT_CONNS: 8,
  PERSIST_CONNS: 9,
  ADDR_FAMILY: 11,
} as const;
const NLA_F_NESTED = 0x8000;
const AF_INET = 2;
const AF_INET6 = 10;

/** IP_VS_SVC_F_*: persistence is how ClientIP affinity is expressed. */
export const SVC_F_PERSISTENT = 0x1;
/** SCHED1/2: for sh "fallback" and "port", for mh "fallback" and "port" (ipvsadm's sh-fallback, mh-port, ...). */
export const SVC_F_SCHED1 = 0x8;
export const SVC_F_SCHED2 = 0x10;
/** Masquerading (NAT) forwarding: IP_VS_CONN_F_MASQ. */
export const FWD_MASQ = 0;

export const PROTO_NUM = { TCP: 6, UDP: 17, SCTP: 132 } as const;
export type IpvsProto = keyof typeof PROTO_NUM;
const PROTO_NAME = new Map<number, IpvsProto>(Object.entries(PROTO_NUM).map(([k, v]) => [v, k as IpvsProto]));

export interface VirtualServer {
  protocol: IpvsProto;
  address: string;
  port: number;
  scheduler: string;
  flags: number;
  /** Persistence timeout in seconds (used with SVC_F_PERSISTENT). */
  timeout: number;
}

export interface RealServer {
  address: string;
  port: number;
  weight: number;
  fwd: number;
  activeConns: number;
  inactConns: number;
}

// ---- attribute encoding ------------------------------------------------------------------------------------

function attr(type: number, data: Buffer): Buffer {
  const len = 4 + data.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  data.copy(out, 4);
  return out;
}
const nested = (type: number, ...children: Buffer[]) => attr(type | NLA_F_NESTED, Buffer.concat(children));
const u16 = (t: number, v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return attr(t, b);
};
const u32 = (t: number, v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return attr(t, b);
};
const be16 = (t: number, v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return attr(t, b);
};
const str = (t: number, v: string) => attr(t, Buffer.from(v + "\0", "latin1"));

/** The address family IPVS is told for an address: AF_INET6 for an IPv6 literal, else AF_INET. */
export const afOf = (ip: string): number => (isIPv6(ip) ? AF_INET6 : AF_INET);

/** IPVS addresses are union nf_inet_addr: 16 bytes, IPv4 in the first 4. */
function addr(t: number, ip: string): Buffer {
  const b = Buffer.alloc(16);
  if (isIPv6(ip)) ipv6ToBytes(ip).copy(b);
  else writeIPv4(b, 0, ip);
  return attr(t, b);
}

function parse(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4 || off + len > buf.length) break;
    out.set(type, buf.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}
/** An nf_inet_addr as text: dotted quad, or RFC 5952 form (the WHATWG URL serializer's) for AF_INET6. */
function ipOf(b: Buffer | undefined, af: number): string {
  if (!b) return "";
  if (af !== AF_INET6 || b.length < 16) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  return bytesToIpv6(b);
}

function svcId(vs: Pick<VirtualServer, "protocol" | "address" | "port">): Buffer[] {
  return [
    u16(SVC.AF, afOf(vs.address)),
    u16(SVC.PROTOCOL, PROTO_NUM[vs.protocol]),
    addr(SVC.ADDR, vs.address),
    be16(SVC.PORT, vs.port),
  ];
}
/** The SERVICE nest of NEW_SERVICE/SET_SERVICE (exported for byte-level tests). */
export function svcFull(vs: VirtualServer): Buffer {
  const flags = Buffer.alloc(8);
  flags.writeUInt32LE(vs.flags, 0);
  flags.writeUInt32LE(0xffffffff, 4); // mask: every flag is set as given
  return nested(
    ATTR.SERVICE,
    ...svcId(vs),
    str(SVC.SCHED_NAME, vs.scheduler),
    attr(SVC.FLAGS, flags),
    u32(SVC.TIMEOUT, vs.timeout),
    // Persistence granularity: a mask for IPv4, a prefix length (1..128, else EINVAL) for IPv6; one client address.
    u32(SVC.NETMASK, isIPv6(vs.address) ? 128 : 0xffffffff),
  );
}
/** The DEST nest of NEW_DEST/SET_DEST (exported for byte-level tests). */
export function destFull(rs: Pick<RealServer, "address" | "port" | "weight" | "fwd">): Buffer {
  return nested(
    ATTR.DEST,
    addr(DEST.ADDR, rs.address),
    be16(DEST.PORT, rs.port),
    u32(DEST.FWD_METHOD, rs.fwd),
    u32(DEST.WEIGHT, rs.weight),
    u32(DEST.U_THRESH, 0),
    u32(DEST.L_THRESH, 0),
    u16(DEST.ADDR_FAMILY, afOf(rs.address)),
  );
}

const req = (cmd: number, dump: boolean, ...attrs: Buffer[]) =>
  native.genlRequest(FAMILY, VERSION, cmd, dump, Buffer.concat(attrs));

// ---- commands ------------------------------------------------------------------------------------------------

/** The family of a service nest: AF_INET or AF_INET6, else undefined (fwmark services have no address). */
function svcFamily(s: Map<number, Buffer>): number | undefined {
  const af = s.get(SVC.AF)?.readUInt16LE();
  return (af === AF_INET || af === AF_INET6) && s.get(SVC.ADDR) ? af : undefined;
}

/** Decodes one GET_SERVICE answer; undefined for fwmark services (bpfproxy makes none) and unknown protocols. */
export function parseService(msg: Buffer): VirtualServer | undefined {
  const s = parse(parse(msg).get(ATTR.SERVICE) ?? Buffer.alloc(0));
  const af = svcFamily(s);
  const proto = PROTO_NAME.get(s.get(SVC.PROTOCOL)?.readUInt16LE() ?? 0);
  if (af === undefined || !proto) return undefined;
  return {
    protocol: proto,
    address: ipOf(s.get(SVC.ADDR), af),
    port: s.get(SVC.PORT)?.readUInt16BE() ?? 0,
    scheduler: s.get(SVC.SCHED_NAME)?.toString("latin1").replace(/\0.*$/s, "") ?? "",
    flags: (s.get(SVC.FLAGS)?.readUInt32LE(0) ?? 0) & ~0x2, // drop IP_VS_SVC_F_HASHED (kernel-internal)
    timeout: s.get(SVC.TIMEOUT)?.readUInt32LE() ?? 0,
  };
}

/** Decodes one GET_DEST answer; the address family is the destination's own (IPVS_DEST_ATTR_ADDR_FAMILY, Linux >= 4.10), else the service's. */
export function parseDestination(msg: Buffer, serviceAddress: string): RealServer {
  const d = parse(parse(msg).get(ATTR.DEST) ?? Buffer.alloc(0));
  const af = d.get(DEST.ADDR_FAMILY)?.readUInt16LE() ?? afOf(serviceAddress);
  return {
    address: ipOf(d.get(DEST.ADDR), af),
    port: d.get(DEST.PORT)?.readUInt16BE() ?? 0,
    weight: d.get(DEST.WEIGHT)?.readUInt32LE() ?? 0,
    fwd: (d.get(DEST.FWD_METHOD)?.readUInt32LE() ?? 0) & 0x7,
    activeConns: d.get(DEST.ACTIVE_CONNS)?.readUInt32LE() ?? 0,
    inactConns: d.get(DEST.INACT_CONNS)?.readUInt32LE() ?? 0,
  };
}

/** Every IPv4 and IPv6 virtual service (fwmark services are skipped: bpfproxy makes none). */
export function listServices(): VirtualServer[] {
  return req(CMD.GET_SERVICE, true)
    .map(parseService)
    .filter((v): v is VirtualServer => v !== undefined);
}

export function listDestinations(vs: Pick<VirtualServer, "protocol" | "address" | "port">): RealServer[] {
  return req(CMD.GET_DEST, true, nested(ATTR.SERVICE, ...svcId(vs))).map((msg) => parseDestination(msg, vs.address));
}

// ---- statistics (`ipvsadm --stats`) -----------------------------------------------------------------------

/** IPVS_SVC_ATTR_STATS/STATS64 and IPVS_DEST_ATTR_STATS/STATS64. */
const SVC_STATS = 10;
const SVC_STATS64 = 12;
const DEST_STATS = 10;
const DEST_STATS64 = 12;
/** IPVS_STATS_ATTR_*: totals only (the kernel's rate estimates are not used). */
const STATS = { CONNS: 1, INPKTS: 2, OUTPKTS: 3, INBYTES: 4, OUTBYTES: 5 } as const;

export interface IpvsStats {
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
}

/**
 * The totals of a service or destination: from the 64-bit nest when the kernel sends it (Linux >= 4.1),
 * else from the 32-bit one (which wraps).
 */
export function parseIpvsStats(stats64: Buffer | undefined, stats32: Buffer | undefined): IpvsStats {
  const s = parse(stats64 ?? stats32 ?? Buffer.alloc(0));
  const get = (t: number) => {
    const b = s.get(t);
    if (!b) return 0;
    if (stats64 && b.length >= 8) return Number(b.readBigUInt64LE(0));
    return b.length >= 4 ? b.readUInt32LE(0) : 0;
  };
  return {
    conns: get(STATS.CONNS),
    inPkts: get(STATS.INPKTS),
    outPkts: get(STATS.OUTPKTS),
    inBytes: get(STATS.INBYTES),
    outBytes: get(STATS.OUTBYTES),
  };
}

/** Every IPv4 and IPv6 virtual service with its totals. */
export function listServiceStats(): (Pick<VirtualServer, "protocol" | "address" | "port"> & { stats: IpvsStats })[] {
  const out = [];
  for (const msg of req(CMD.GET_SERVICE, true)) {
    const s = parse(parse(msg).get(ATTR.SERVICE) ?? Buffer.alloc(0));
    const af = svcFamily(s);
    const proto = PROTO_NAME.get(s.get(SVC.PROTOCOL)?.readUInt16LE() ?? 0);
    if (af === undefined || !proto) continue;
    out.push({
      protocol: proto,
      address: ipOf(s.get(SVC.ADDR), af),
      port: s.get(SVC.PORT)?.readUInt16BE() ?? 0,
      stats: parseIpvsStats(s.get(SVC_STATS64), s.get(SVC_STATS)),
    });
  }
  return out;
}

/** A virtual service's destinations with their totals. */
export function listDestinationStats(
  vs: Pick<VirtualServer, "protocol" | "address" | "port">,
): { address: string; port: number; stats: IpvsStats }[] {
  return req(CMD.GET_DEST, true, nested(ATTR.SERVICE, ...svcId(vs))).map((msg) => {
    const d = parse(parse(msg).get(ATTR.DEST) ?? Buffer.alloc(0));
    return {
      address: ipOf(d.get(DEST.ADDR), d.get(DEST.ADDR_FAMILY)?.readUInt16LE() ?? afOf(vs.address)),
      port: d.get(DEST.PORT)?.readUInt16BE() ?? 0,
      stats: parseIpvsStats(d.get(DEST_STATS64), d.get(DEST_STATS)),
    };
  });
}

export const addService = (vs: VirtualServer) => void req(CMD.NEW_SERVICE, false, svcFull(vs));
export const editService = (vs: VirtualServer) => void req(CMD.SET_SERVICE, false, svcFull(vs));
export const deleteService = (vs: Pick<VirtualServer, "protocol" | "address" | "port">) =>
  void req(CMD.DEL_SERVICE, false, nested(ATTR.SERVICE, ...svcId(vs)));
export const addDestination = (vs: VirtualServer, rs: Pick<RealServer, "address" | "port" | "weight" | "fwd">) =>
  void req(CMD.NEW_DEST, false, nested(ATTR.SERVICE, ...svcId(vs)), destFull(rs));
export const editDestination = (vs: VirtualServer, rs: Pick<RealServer, "address" | "port" | "weight" | "fwd">) =>
  void req(CMD.SET_DEST, false, nested(ATTR.SERVICE, ...svcId(vs)), destFull(rs));
export const deleteDestination = (vs: VirtualServer, rs: Pick<RealServer, "address" | "port">) =>
  void req(
    CMD.DEL_DEST,
    false,
    nested(ATTR.SERVICE, ...svcId(vs)),
    nested(ATTR.DEST, addr(DEST.ADDR, rs.address), be16(DEST.PORT, rs.port), u16(DEST.ADDR_FAMILY, afOf(rs.address))),
  );

/** True when the kernel has IPVS (the family resolves; loading ip_vs on demand where modules allow). */
export function ipvsAvailable(): { ok: boolean; reason: string } {
  try {
    req(CMD.GET_SERVICE, true);
    return { ok: true, reason: "" };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

/** ipvsadm --set: connection timeouts in seconds (0 leaves one unchanged). */
export function setTimeouts(tcp: number, tcpFin: number, udp: number): void {
  req(12 /* IPVS_CMD_SET_CONFIG */, false, u32(4, tcp), u32(5, tcpFin), u32(6, udp));
}
