// The packet half of `bpfproxy explain`: what the loaded program does with one crafted packet right now.
//
// Side-effect free by construction: a fresh copy of the data-plane object is loaded with no map pinned or
// reused (native noPin), its maps are filled from the pinned ones (conntrack, NAT, affinity and the reject
// limiter with only the entries of this client's address or socket), and BPF_PROG_TEST_RUN runs the copy's
// program. Live maps are only opened read-only (BPF_F_RDONLY): the kernel refuses any write to them.
// test/e2e-explain.test.ts checks every pinned map is byte-identical before and after.
import { existsSync, readFileSync } from "node:fs";
import * as native from "../native/index.js";
import {
  affinity6Key,
  affinityKey,
  affinityValue,
  backend as backendCodec,
  backend6,
  bytesToIpv4,
  type Codec,
  COUNTER_REASONS,
  counter,
  CT_DIR_FORWARD,
  CT_F_SEQ_KNOWN,
  ct6Entry,
  ct6Key,
  ctEntry,
  ctKey,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ipv4ToBytes,
  MAP_NAMES,
  nat6Config,
  nat6Entry,
  natConfig,
  natEntry,
  natKey,
  svc6Key,
  svcKey,
  svcValue,
  u32Key,
} from "../dataplane/bpf/abi.js";
import { OBJECT_PATH } from "../dataplane/bpf/index.js";
import { findAttachments } from "../dataplane/bpf/status.js";
import { fillTailCalls } from "../dataplane/bpf/tail.js";
import { bytesToIpv6, ipv6ToBytes, isIPv6 } from "../k8s/ip.js";
import { hostPort } from "../format.js";

/** Each family's flow maps and their layouts: IPv6 packets reach the IPv6 program (tail.h) and its maps. */
interface FamilyMaps {
  conntrack: string;
  nat: string;
  natConfig: string;
  affinity: string;
  services: string;
  backends: string;
  rejectLimit: string;
  ctKey: Codec<{ saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }>;
  ctEntry: Codec<{ backendId: number; flags: number; nextSeq?: number }>;
  natKey: Codec<{ saddr: string; daddr: string; sport: number; dport: number }>;
  natEntry: Codec<{ addr: string; port: number; backendId: number }>;
  affinityKey: Codec<{ revNatId: number }>;
  svcKey: Codec<{ address: string; port: number; proto: number; scope: number; slot: number }>;
  backend: Codec<{ address: string; port: number }>;
  wildcard: string;
  /** Address bytes and their offsets in conntrack/NAT keys (saddr, daddr; then sport, dport, proto). */
  toBytes: (a: string) => Buffer;
  addrLen: number;
}
const V4: FamilyMaps = {
  conntrack: MAP_NAMES.conntrack,
  nat: MAP_NAMES.nat,
  natConfig: MAP_NAMES.natConfig,
  affinity: MAP_NAMES.affinity,
  services: MAP_NAMES.services,
  backends: MAP_NAMES.backends,
  rejectLimit: MAP_NAMES.rejectLimit,
  ctKey,
  ctEntry,
  natKey,
  natEntry,
  affinityKey,
  svcKey,
  backend: backendCodec,
  wildcard: "0.0.0.0",
  toBytes: ipv4ToBytes,
  addrLen: 4,
};
const V6: FamilyMaps = {
  conntrack: MAP_NAMES.conntrack6,
  nat: MAP_NAMES.nat6,
  natConfig: MAP_NAMES.nat6Config,
  affinity: MAP_NAMES.affinity6,
  services: MAP_NAMES.services6,
  backends: MAP_NAMES.backends6,
  rejectLimit: MAP_NAMES.reject6Limit,
  ctKey: ct6Key,
  ctEntry: ct6Entry,
  natKey: ct6Key,
  natEntry: nat6Entry,
  affinityKey: affinity6Key,
  svcKey: svc6Key,
  backend: backend6,
  wildcard: "::",
  toBytes: ipv6ToBytes,
  addrLen: 16,
};
const familyOf = (q: { dst: string }) => (isIPv6(q.dst) ? V6 : V4);

export interface PacketQuery {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  protocol: "TCP" | "UDP";
  /** Enter at this pod interface's tc ingress (bpx_from_pod); else at a device's (bpx_from_device). */
  fromPod?: string;
  /** The device for the default path; default: the first device bpfproxy's ingress program is on. */
  device?: string;
  bpffs: string;
  /** The object to copy; default the package's bpfproxy.o (the one the daemon loaded). */
  objectPath?: string;
}

export interface FlowEntry {
  /** "forward" (client → frontend) or "reply". */
  dir: string;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  backendId: number;
  /** The backend's address:port from the backends map; null: the backend is gone (a stale entry). */
  backend: string | null;
  flags: number;
}

export interface PacketExplanation {
  program: string;
  interface: string;
  /** The copy runs the very code attached (equal program tags). */
  sameProgram: boolean;
  packet: { src: string; sport: number; dst: string; dport: number; protocol: string; tcpFlags?: string };
  existing: {
    conntrack: FlowEntry[];
    nat: {
      saddr: string;
      sport: number;
      daddr: string;
      dport: number;
      addr: string;
      port: number;
      backend: string | null;
    }[];
    affinity: { revNatId: number; backend: string | null }[];
  };
  /** TC_ACT_* the program returned. */
  retval: number;
  /** Counters the run moved (enum bpx_reason names), in slot order. */
  reasons: string[];
  verdict: "forward" | "reject" | "drop" | "pass";
  /** The drop or reject reason (a counter name), null otherwise. */
  dropReason: string | null;
  /** The backend the program picked for a new flow or followed for a tracked one. */
  backend: { id: number; address: string; port: number } | null;
  /** Packet header fields the program changed. */
  rewrites: { src?: string; sport?: number; dst?: string; dport?: number; protocol?: string };
  /** Masquerade configuration when the flow was source-NATed. */
  masquerade: { address: string; portMin: number; portMax: number } | null;
  /** What the program answered in place of delivering (TCP RST, ICMP unreachable). */
  reply: string | null;
}

const PERCPU_TYPES = new Set([5, 6, 10]);
/** Types a tc program's run never reads for the packet (XDP devmaps, ring and perf buffers, tail-call tables). */
const SKIP_TYPES = new Set([3, 4, 14, 25, 27]);
const FLOW_MAPS = new Set<string>([
  MAP_NAMES.conntrack,
  MAP_NAMES.nat,
  MAP_NAMES.affinity,
  MAP_NAMES.rejectLimit,
  MAP_NAMES.fragments,
  MAP_NAMES.conntrack6,
  MAP_NAMES.nat6,
  MAP_NAMES.affinity6,
  MAP_NAMES.reject6Limit,
  MAP_NAMES.fragments6,
  MAP_NAMES.sockRevNat,
  MAP_NAMES.sockRevNat6,
]);

const TC = { OK: 0, SHOT: 2, REDIRECT: 7 };

function ethernetOf(ifname: string): Buffer {
  try {
    const mac = readFileSync(`/sys/class/net/${ifname}/address`, "utf8").trim();
    const b = Buffer.from(mac.split(":").map((h) => parseInt(h, 16)));
    if (b.length === 6) return b;
  } catch {
    /* fall through */
  }
  return Buffer.from([2, 0, 0, 0, 0, 2]);
}

function csum(buf: Buffer, start = 0, end = buf.length, seed = 0): number {
  let sum = seed;
  for (let i = start; i + 1 < end; i += 2) sum += buf.readUInt16BE(i);
  if ((end - start) % 2) sum += buf[end - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

/** An Ethernet + IPv4 or IPv6 + TCP (SYN, or ACK with seq) / UDP frame with correct checksums. */
export function craftPacket(
  q: { src: string; sport: number; dst: string; dport: number; protocol: "TCP" | "UDP" },
  dstMac: Buffer,
  tcp: { flags: number; seq: number },
): Buffer {
  const l4len = q.protocol === "TCP" ? 20 : 8 + 8;
  const v6 = isIPv6(q.dst);
  const iplen = v6 ? 40 : 20;
  const frame = Buffer.alloc(14 + iplen + l4len);
  dstMac.copy(frame, 0);
  Buffer.from([2, 0, 0, 0, 0, 1]).copy(frame, 6);
  frame.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  const ip = 14;
  const proto = q.protocol === "TCP" ? IPPROTO_TCP : IPPROTO_UDP;
  const pseudo = Buffer.alloc(v6 ? 40 : 12);
  if (v6) {
    frame.writeUInt32BE(0x60000000, ip);
    frame.writeUInt16BE(l4len, ip + 4);
    frame[ip + 6] = proto;
    frame[ip + 7] = 64;
    ipv6ToBytes(q.src).copy(frame, ip + 8);
    ipv6ToBytes(q.dst).copy(frame, ip + 24);
    // RFC 8200 8.1: addresses, upper-layer length (32 bits), next header.
    frame.copy(pseudo, 0, ip + 8, ip + 40);
    pseudo.writeUInt32BE(l4len, 32);
    pseudo[39] = proto;
  } else {
    frame[ip] = 0x45;
    frame.writeUInt16BE(20 + l4len, ip + 2);
    frame.writeUInt16BE(0x1234, ip + 4);
    frame.writeUInt16BE(0x4000, ip + 6);
    frame[ip + 8] = 64;
    frame[ip + 9] = proto;
    ipv4ToBytes(q.src).copy(frame, ip + 12);
    ipv4ToBytes(q.dst).copy(frame, ip + 16);
    frame.writeUInt16BE(~csum(frame, ip, ip + 20) & 0xffff, ip + 10);
    frame.copy(pseudo, 0, ip + 12, ip + 20);
    pseudo[9] = proto;
    pseudo.writeUInt16BE(l4len, 10);
  }
  const l4 = ip + iplen;
  frame.writeUInt16BE(q.sport, l4);
  frame.writeUInt16BE(q.dport, l4 + 2);
  if (q.protocol === "TCP") {
    frame.writeUInt32BE(tcp.seq >>> 0, l4 + 4);
    frame.writeUInt32BE(tcp.flags & 0x10 ? 1 : 0, l4 + 8);
    frame[l4 + 12] = 5 << 4;
    frame[l4 + 13] = tcp.flags;
    frame.writeUInt16BE(64240, l4 + 14);
  } else {
    frame.writeUInt16BE(l4len, l4 + 4);
    frame.write("explain\n", l4 + 8, "latin1");
  }
  const sum = ~csum(frame, l4, l4 + l4len, csum(pseudo)) & 0xffff;
  frame.writeUInt16BE(q.protocol === "UDP" && sum === 0 ? 0xffff : sum, l4 + (q.protocol === "TCP" ? 16 : 6));
  return frame;
}

/** struct __sk_buff for the run: the packet arrived on `ifindex` (fib lookups and redirects see that device). */
function skbContext(ifindex: number): Buffer {
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(ifindex, 36); // ingress_ifindex
  ctx.writeUInt32LE(ifindex, 40); // ifindex
  return ctx;
}

function parseHeaders(
  frame: Buffer,
): { src: string; dst: string; protocol: number; sport: number; dport: number } | null {
  if (frame.length >= 54 && frame.readUInt16BE(12) === 0x86dd) {
    // No extension headers: explain's packets carry none, and the program adds none.
    const protocol = frame[20]!;
    const ports = (protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) && frame.length >= 58;
    return {
      src: bytesToIpv6(frame, 22),
      dst: bytesToIpv6(frame, 38),
      protocol,
      sport: ports ? frame.readUInt16BE(54) : 0,
      dport: ports ? frame.readUInt16BE(56) : 0,
    };
  }
  if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) return null;
  const ihl = (frame[14]! & 0x0f) * 4;
  const protocol = frame[23]!;
  const l4 = 14 + ihl;
  const ports = protocol === IPPROTO_TCP || protocol === IPPROTO_UDP;
  return {
    src: bytesToIpv4(frame, 26),
    dst: bytesToIpv4(frame, 30),
    protocol,
    sport: ports && frame.length >= l4 + 4 ? frame.readUInt16BE(l4) : 0,
    dport: ports && frame.length >= l4 + 4 ? frame.readUInt16BE(l4 + 2) : 0,
  };
}

interface LiveMap {
  map: native.BpfMap;
  entries: native.MapEntries;
}

/** Only this client's flow state: entries keyed by its socket (conntrack, NAT) or address (affinity, limiter),
 * in its family's maps. Keys start with saddr, daddr, then sport, dport and proto (struct bpx_ct_key, _ct6_key,
 * _nat_key; the affinity and limiter keys with the client's address). */
function flowFilter(name: string, q: PacketQuery, proto: number, fam: FamilyMaps): (key: Buffer) => boolean {
  const src = fam.toBytes(q.src);
  const n = fam.addrLen;
  switch (name) {
    case fam.conntrack:
    case fam.nat:
      return (k) => {
        if (k[2 * n + 4] !== proto) return false;
        const fromClient = k.subarray(0, n).equals(src) && k.readUInt16BE(2 * n) === q.sport;
        const toClient = k.subarray(n, 2 * n).equals(src) && k.readUInt16BE(2 * n + 2) === q.sport;
        return fromClient || toClient;
      };
    case fam.affinity:
    case fam.rejectLimit:
      return (k) => k.subarray(0, n).equals(src);
    default:
      return () => false; // fragments, socket LB reverse NAT, the other family's flows: not this packet's
  }
}

function split(e: native.MapEntries, keySize: number, valueSize: number, keep: (k: Buffer) => boolean) {
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  for (let i = 0; i < e.count; i++) {
    const k = e.keys.subarray(i * keySize, (i + 1) * keySize);
    if (!keep(k)) continue;
    keys.push(k);
    values.push(e.values.subarray(i * valueSize, (i + 1) * valueSize));
  }
  return { keys, values };
}

function backendName(backends: native.MapHandle | undefined, id: number, fam: FamilyMaps): string | null {
  const raw = backends?.lookup(u32Key.encode(id));
  if (!raw) return null;
  const b = fam.backend.decode(raw);
  return hostPort(b.address, b.port);
}

function sumCounters(m: native.BpfMap): Map<number, bigint> {
  const perCpu = m.valueSizeAll / native.possibleCpus();
  const out = new Map<number, bigint>();
  for (let slot = 0; slot < m.info.maxEntries; slot++) {
    const raw = m.lookup(u32Key.encode(slot));
    let packets = 0n;
    for (let off = 0; raw && off + counter.size <= raw.length; off += perCpu)
      packets += counter.decode(raw, off).packets;
    if (packets > 0n) out.set(slot, packets);
  }
  return out;
}

function chooseHook(q: PacketQuery): { ifname: string; program: string; progId: number } {
  const ingress = findAttachments().filter((a) => a.hook === "tc-ingress");
  if (q.fromPod !== undefined) {
    const a = ingress.find((x) => x.interface === q.fromPod);
    if (!a) throw new Error(`no bpfproxy program on the tc ingress of ${q.fromPod} in this network namespace`);
    return { ifname: a.interface, program: a.program, progId: a.programId ?? 0 };
  }
  const devs = ingress.filter((x) =>
    q.device !== undefined ? x.interface === q.device : x.program === "bpx_from_device",
  );
  const a = devs[0];
  if (!a)
    throw new Error(
      q.device !== undefined
        ? `no bpfproxy program on the tc ingress of ${q.device} in this network namespace`
        : "no device with bpfproxy's ingress program in this network namespace (is the daemon running here?)",
    );
  return { ifname: a.interface, program: a.program, progId: a.programId ?? 0 };
}

export async function explainPacket(q: PacketQuery): Promise<PacketExplanation> {
  const hook = chooseHook(q);
  if (hook.program !== "bpx_from_device" && hook.program !== "bpx_from_pod")
    throw new Error(`explain runs bpx_from_device and bpx_from_pod only; ${hook.ifname} has ${hook.program}`);
  const ifindex = native.ifNameToIndex(hook.ifname);
  const proto = q.protocol === "TCP" ? IPPROTO_TCP : IPPROTO_UDP;
  const fam = familyOf(q);
  const obj = new native.BpfObject(q.objectPath ?? OBJECT_PATH, { noPin: true });
  const live = new Map<string, LiveMap>();
  try {
    // Live maps, read-only; the copy's sizes follow what they hold (arrays keep their fixed size).
    const infos = obj.maps();
    for (const info of infos) {
      const path = `${q.bpffs}/${info.name}`;
      if (!existsSync(path) || SKIP_TYPES.has(info.type) || PERCPU_TYPES.has(info.type)) continue;
      const map = native.BpfMap.openPinned(path, { readOnly: true });
      live.set(info.name, { map, entries: await map.entriesAsync() });
    }
    const keep = new Map<string, { keys: Buffer[]; values: Buffer[] }>();
    for (const [name, l] of live) {
      const filter = FLOW_MAPS.has(name) ? flowFilter(name, q, proto, fam) : () => true;
      keep.set(name, split(l.entries, l.map.info.keySize, l.map.valueSizeAll, filter));
    }
    for (const info of infos) {
      const k = keep.get(info.name);
      // Hash-like maps: room for the copied entries and what one packet may add.
      if (k && info.type !== 2) obj.setMapMaxEntries(info.name, Math.max(k.keys.length + 256, 1024));
    }
    obj.load();
    // The copy's own IPv6 programs in the copy's tail-call map: the entry program hands IPv6 to them.
    fillTailCalls(obj);
    for (const [name, k] of keep) {
      if (k.keys.length === 0) continue;
      obj.map(name).updateBatch(Buffer.concat(k.keys), Buffer.concat(k.values), k.keys.length);
    }

    // What exists for this tuple now (from the live maps).
    const liveBackends = live.get(fam.backends)?.map;
    const ctBefore = keep.get(fam.conntrack) ?? { keys: [], values: [] };
    const conntrack: FlowEntry[] = ctBefore.keys.map((k, i) => flowEntry(k, ctBefore.values[i]!, liveBackends, fam));
    const natBefore = keep.get(fam.nat) ?? { keys: [], values: [] };
    const nat = natBefore.keys.map((k, i) => {
      const key = fam.natKey.decode(k);
      const v = fam.natEntry.decode(natBefore.values[i]!);
      return {
        saddr: key.saddr,
        sport: key.sport,
        daddr: key.daddr,
        dport: key.dport,
        addr: v.addr,
        port: v.port,
        backend: v.backendId ? backendName(liveBackends, v.backendId, fam) : null,
      };
    });
    const revNatIds = frontendRevNatIds(live.get(fam.services)?.map, q, proto, fam);
    const affBefore = keep.get(fam.affinity) ?? { keys: [], values: [] };
    const affinity = affBefore.keys
      .map((k, i) => ({ key: fam.affinityKey.decode(k), v: affinityValue.decode(affBefore.values[i]!) }))
      .filter((a) => revNatIds.has(a.key.revNatId))
      .map((a) => ({ revNatId: a.key.revNatId, backend: backendName(liveBackends, a.v.backendId, fam) }));

    // A tracked flow's next packet is an ACK in sequence; anything else a new connection's SYN.
    const forward = conntrack.find((e) => e.dir === "forward" && e.daddr === q.dst && e.dport === q.dport);
    let tcpFlags = 0x02;
    let seq = 1000;
    if (forward && q.protocol === "TCP") {
      tcpFlags = 0x10;
      const i = conntrack.indexOf(forward);
      const v = fam.ctEntry.decode(ctBefore.values[i]!);
      if (v.flags & CT_F_SEQ_KNOWN && v.nextSeq !== undefined) seq = v.nextSeq;
    }
    const data = craftPacket(q, ethernetOf(hook.ifname), { flags: tcpFlags, seq });
    const prog = obj.program(hook.program);
    const liveTag = native.programInfoById(hook.progId)?.tag;
    const run = await prog.testRun({ data, ctx: skbContext(ifindex) });

    // What the run did, read from the copy.
    const counters = obj.map(MAP_NAMES.counters);
    const moved = sumCounters(counters);
    const names = new Map<number, string>(Object.entries(COUNTER_REASONS).map(([n, s]) => [s, n]));
    const reasons = [...moved.keys()].sort((a, b) => a - b).map((s) => names.get(s) ?? `slot_${s}`);
    const dropReason = reasons.find((r) => r.startsWith("drop_") || r.startsWith("reject_")) ?? null;
    let verdict: PacketExplanation["verdict"];
    if (reasons.some((r) => r.startsWith("reject_"))) verdict = "reject";
    else if (run.retval === TC.SHOT || reasons.some((r) => r.startsWith("drop_"))) verdict = "drop";
    else if (reasons.some((r) => r.startsWith("translated_"))) verdict = "forward";
    else verdict = "pass";

    const copyBackends = obj.map(fam.backends);
    let backend: PacketExplanation["backend"] = null;
    const ctAfter = await obj.map(fam.conntrack).entriesAsync();
    const keySize = fam.ctKey.size;
    const valSize = fam.ctEntry.size;
    for (let i = 0; i < ctAfter.count; i++) {
      const k = fam.ctKey.decode(ctAfter.keys, i * keySize);
      if (
        k.dir !== CT_DIR_FORWARD ||
        k.saddr !== q.src ||
        k.sport !== q.sport ||
        k.daddr !== q.dst ||
        k.dport !== q.dport
      )
        continue;
      const v = fam.ctEntry.decode(ctAfter.values, i * valSize);
      const raw = verdict === "forward" ? copyBackends.lookup(u32Key.encode(v.backendId)) : undefined;
      if (raw) {
        const b = fam.backend.decode(raw);
        backend = { id: v.backendId, address: b.address, port: b.port };
      }
    }
    const before = parseHeaders(data)!;
    const after = parseHeaders(run.data);
    const rewrites: PacketExplanation["rewrites"] = {};
    let reply: string | null = null;
    if (after) {
      if (after.protocol !== before.protocol || (after.dst === before.src && after.src === before.dst)) {
        reply =
          after.protocol === 1
            ? "ICMP destination unreachable"
            : after.protocol === 58
              ? "ICMPv6 destination unreachable"
              : after.protocol === IPPROTO_TCP
                ? "TCP RST"
                : "reply";
      } else {
        if (after.src !== before.src) rewrites.src = after.src;
        if (after.sport !== before.sport) rewrites.sport = after.sport;
        if (after.dst !== before.dst) rewrites.dst = after.dst;
        if (after.dport !== before.dport) rewrites.dport = after.dport;
      }
    }
    let masquerade: PacketExplanation["masquerade"] = null;
    if (rewrites.src !== undefined) {
      // The port range is one for both families (bpx_nat_config); IPv6 has its own address.
      const raw = live.get(MAP_NAMES.natConfig)?.map.lookup(u32Key.encode(0));
      const raw6 = fam === V6 ? live.get(MAP_NAMES.nat6Config)?.map.lookup(u32Key.encode(0)) : undefined;
      if (raw) {
        const c = natConfig.decode(raw);
        const address = raw6 ? nat6Config.decode(raw6).masqAddr : c.masqAddr;
        masquerade = { address, portMin: c.portMin, portMax: c.portMax };
      }
    }
    return {
      program: hook.program,
      interface: hook.ifname,
      sameProgram: liveTag !== undefined && liveTag === prog.info.tag,
      packet: {
        src: q.src,
        sport: q.sport,
        dst: q.dst,
        dport: q.dport,
        protocol: q.protocol,
        ...(q.protocol === "TCP" ? { tcpFlags: tcpFlags === 0x02 ? "SYN" : "ACK" } : {}),
      },
      existing: { conntrack, nat, affinity },
      retval: run.retval,
      reasons,
      verdict,
      dropReason,
      backend,
      rewrites,
      masquerade,
      reply,
    };
  } finally {
    for (const l of live.values()) l.map.close();
    obj.close();
  }
}

function flowEntry(k: Buffer, v: Buffer, backends: native.MapHandle | undefined, fam: FamilyMaps): FlowEntry {
  const key = fam.ctKey.decode(k);
  const e = fam.ctEntry.decode(v);
  return {
    dir: key.dir === CT_DIR_FORWARD ? "forward" : "reply",
    saddr: key.saddr,
    sport: key.sport,
    daddr: key.daddr,
    dport: key.dport,
    backendId: e.backendId,
    backend: backendName(backends, e.backendId, fam),
    flags: e.flags,
  };
}

/** The reverse-NAT ids of the frontend entries of dst:dport (either scope; NodePorts at the wildcard too). */
function frontendRevNatIds(
  services: native.MapHandle | undefined,
  q: PacketQuery,
  proto: number,
  fam: FamilyMaps,
): Set<number> {
  const out = new Set<number>();
  if (!services) return out;
  for (const address of [q.dst, fam.wildcard])
    for (const scope of [0, 1]) {
      const raw = services.lookup(fam.svcKey.encode({ address, port: q.dport, proto, scope, slot: 0 }));
      if (raw) out.add(svcValue.decode(raw).revNatId);
    }
  return out;
}
