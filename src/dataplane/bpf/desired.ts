// Pure translation of the node's service model into the exact contents of the BPF
// load-balancer maps. No I/O: the reconciler diffs this against the kernel.
import {
  ALGORITHMS,
  BACKEND_F_NODE_LOCAL,
  BACKEND_F_TERMINATING,
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  NODEPORT_ADDR_F_LOCAL,
  NODEPORT_ADDR_F_SERVE,
  SCOPE_EXTERNAL,
  SCOPE_INTERNAL,
  SVC_F_AFFINITY,
  SVC_F_DROP_WHEN_EMPTY,
  SVC_F_MAGLEV,
  SVC_F_LEAST_CONN,
  SVC_F_MASQ_OUTSIDE,
  SVC_F_MASQUERADE,
  SVC_F_SOURCE_RANGES,
  SVC_X_DSR,
  SVC_X_HYBRID,
  SVC_TYPES,
  WILDCARD_ADDRESS,
  affinityMatchKey,
  backend,
  be32AddrKey,
  maglevKey,
  maglevTable as maglevCodec,
  nodePortAddr,
  parseCidr4,
  revNat,
  srcRangeKey,
  svcKey,
  svcMeta,
  svcValue,
  u32Key,
  u8Value,
} from "./abi.js";
import { maglevName, maglevTable } from "./maglev.js";
import { slotRuns } from "./slots.js";
import { NumberTable } from "./entry-table.js";
import { ipv4FromNumber, ipv4ToNumber, ipv6Hex } from "../../k8s/ip.js";
import { encodeFrontend6 } from "./lb6.js";
import { encodeSourceRanges6 } from "./srcrange6.js";
import type { BackendModel, Frontend, FrontendExtras, NodeModel } from "../../model/types.js";
import {
  BACKEND_NODE_LOCAL,
  BACKEND_TERMINATING,
  recordsFromFrontends,
  type ServiceRecord,
} from "../../model/record.js";

/**
 * One map's contents: key bytes → value bytes, each as a latin1 string (one char per byte). Two short
 * strings per entry instead of two Buffers and an object: a full sync holds hundreds of thousands.
 */
export type Contents = Map<string, string>;

export interface LbContents {
  services: Contents;
  backends: Contents;
  revNat: Contents;
  svcMeta: Contents;
  /** Maglev tables of the frontends that use Maglev, keyed by rev-NAT id and scope. */
  maglev: Contents;
  /** (backend, frontend, scope) for every backend a ClientIP-affinity frontend may send new flows to. */
  affinityMatch: Contents;
  /** IPv6 frontends (bpx_svc6_v1) and their backends (bpx_backend6_v1, ids from the same space as IPv4's). */
  services6: Contents;
  backends6: Contents;
}

export function emptyLbContents(): LbContents {
  return {
    services: new Map(),
    backends: new Map(),
    revNat: new Map(),
    svcMeta: new Map(),
    maglev: new Map(),
    affinityMatch: new Map(),
    services6: new Map(),
    backends6: new Map(),
  };
}

/** A service-map key of a master (slot 0: zero in either byte order), read without decoding the key. */
export function isMasterKey(key: string): boolean {
  return key.charCodeAt(SLOT_OFFSET) === 0 && key.charCodeAt(SLOT_OFFSET + 1) === 0;
}
const SLOT_OFFSET = svcKey.layout.find((m) => m.c === "slot")!.offset;

/** The bytes of a latin1 key or value, for the kernel. */
export function bytes(bin: string): Buffer {
  return Buffer.from(bin, "latin1");
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP, SCTP: IPPROTO_SCTP };

/**
 * The start of the skip reason of every SCTP frontend the BPF data plane leaves to the kernel's IPVS
 * (BpfDataplane hands them over when IPVS is there, docs/sctp.md). BPF rewrites an SCTP packet's addresses
 * only: its CRC32c covers the SCTP packet and no IP header, so a port change would mean recomputing it over
 * the whole packet.
 */
export const SCTP_IPVS_REASON = "SCTP, served by IPVS:";

/** Why BPF leaves an SCTP frontend to IPVS (IPv6, or a backend port unlike the frontend's), or undefined. */
export function sctpNotInBpf(v6: boolean, port: number, backendPorts: Iterable<number>): string | undefined {
  if (v6) return `${SCTP_IPVS_REASON} the IPv6 BPF path has no SCTP`;
  for (const p of backendPorts)
    if (p !== port) return `${SCTP_IPVS_REASON} port ${port} -> ${p} would need the CRC32c recomputed`;
  return undefined;
}

function* frontendBackendPorts(fe: Frontend, extras: FrontendExtras | undefined): Iterable<number> {
  for (const b of fe.backends) yield b.port;
  for (const b of extras?.retainedBackends ?? []) yield b.port;
}

function* recordBackendPorts(r: ServiceRecord, i: number): Iterable<number> {
  for (const set of [r.backendSet(i), r.retainedSet(i)])
    for (let j = r.setStart(set); j < r.setEnd(set); j++) yield r.backendPort(j);
}

/**
 * The id name of an IPv4 (address as a number, port, protocol): backendName's and frontendName's, without
 * the address's text for TCP and UDP (a number); SCTP's is their string.
 */
function numberName(a: number, port: number, proto: number): IdName {
  if (proto === IPPROTO_SCTP) return `${ipv4FromNumber(a)}:${port}/${proto}`;
  return a * 131072 + port * 2 + (proto === IPPROTO_UDP ? 1 : 0);
}

export function protoNumber(p: string): number | undefined {
  return PROTO[p];
}

/**
 * Stable small integer ids for backends and frontends. Ids already in the kernel are kept
 * (restored from the pins); new ones come from a rotating cursor and never reuse an id that
 * is in use or was freed in the same pass, so a slot or conntrack entry pointing at a just
 * removed id never reaches a different backend during the update.
 */
export class IdTable {
  /** Numeric names (IdName) → id. Typed arrays, no object per id: 100,000s of backends. */
  private readonly byNumber = new NumberTable();
  /** Id → its numeric name, or -1 when the name is a string (then in byString/strings). */
  private readonly byId = new NumberTable();
  private readonly byString = new Map<string, number>();
  private readonly strings = new Map<number, string>();
  private cursor = 0;

  constructor(private readonly max: number) {}

  private set(name: IdName, id: number): void {
    if (typeof name === "number") {
      this.byNumber.set(name, id);
      this.byId.set(id, name);
    } else {
      this.byString.set(name, id);
      this.strings.set(id, name);
      this.byId.set(id, -1);
    }
  }

  restore(name: IdName, id: number): void {
    this.set(name, id);
    if (id > this.cursor) this.cursor = id;
  }

  get(name: IdName): number | undefined {
    return typeof name === "number" ? this.byNumber.get(name) : this.byString.get(name);
  }

  /** Id for name, allocating one if needed. Throws when every id is taken. */
  acquire(name: IdName): number {
    // Numeric names (every backend of every encoded frontend): one probe for the lookup, reused by the insert.
    const at = typeof name === "number" ? this.byNumber.slotOf(name) : -1;
    if (at >= 0) return this.byNumber.valueAt(at);
    const have = typeof name === "number" ? undefined : this.byString.get(name);
    if (have !== undefined) return have;
    for (let i = 0; i < this.max; i++) {
      this.cursor = (this.cursor % this.max) + 1;
      const free = this.byId.slotOf(this.cursor);
      if (free < 0) {
        if (typeof name === "number") {
          this.byNumber.set(name, this.cursor, at);
          this.byId.set(this.cursor, name, free);
        } else this.set(name, this.cursor);
        return this.cursor;
      }
    }
    throw new RangeError(`no free id left (all ${this.max} in use)`);
  }

  /** Frees an id (its entry left the kernel). */
  releaseId(id: number): void {
    const name = this.byId.get(id);
    if (name === undefined) return;
    if (name === -1) {
      const s = this.strings.get(id);
      this.strings.delete(id);
      if (s !== undefined) this.byString.delete(s);
    } else this.byNumber.delete(name);
    this.byId.delete(id);
  }

  isTaken(id: number): boolean {
    return this.byId.has(id);
  }
}

export const MAX_BACKEND_ID = 0xffffffff - 1;
export const MAX_REV_NAT_ID = 0xffffffff - 1;

/**
 * What an id is allocated for: a number packing (IPv4 address, port, TCP or UDP) — a name per backend of
 * every frontend is looked up on every encoding, and a number hashes without building a string — or a
 * string for anything else (an IPv6 (address, port, protocol), ipv6Name; an orphaned id; a protocol the data
 * plane does not program).
 */
export type IdName = number | string;

function addressPortName(address: string, port: number, proto: number): IdName {
  const a = ipv4ToNumber(address);
  // 32 + 16 + 1 bits: exact in a double.
  if (!Number.isNaN(a) && (proto === IPPROTO_TCP || proto === IPPROTO_UDP))
    return a * 131072 + port * 2 + (proto === IPPROTO_UDP ? 1 : 0);
  return `${address}:${port}/${proto}`;
}

/** A backend's id name: its address, port and protocol. */
export function backendName(address: string, port: number, proto: number): IdName {
  return addressPortName(address, port, proto);
}

/** A frontend's rev-NAT id name: its address (the wildcard for NodePorts), port and protocol. */
export function frontendName(address: string, port: number, proto: number): IdName {
  return addressPortName(address, port, proto);
}

/**
 * The id name of an IPv6 backend or frontend: its 16 address bytes as hex (what the map holds, so a name
 * restored from the pins is the encoder's whatever text form the address had), port and protocol.
 */
export function ipv6Name(addressHex: string, port: number, proto: number): IdName {
  return `v6:${addressHex}:${port}/${proto}`;
}

export interface Ids {
  backends: IdTable;
  revNat: IdTable;
}

export function newIds(): Ids {
  return { backends: new IdTable(MAX_BACKEND_ID), revNat: new IdTable(MAX_REV_NAT_ID) };
}

export interface DesiredResult {
  contents: LbContents;
  /** Frontends the BPF data plane cannot serve (e.g. SCTP), with the reason. */
  skipped: { frontend: Frontend; reason: string }[];
}

function backendFlags(b: BackendModel): number {
  return (b.state === "terminating" ? BACKEND_F_TERMINATING : 0) | (b.nodeLocal ? BACKEND_F_NODE_LOCAL : 0);
}

/** The load-balancer maps the reconciler writes. */
export type LbMapName = keyof LbContents;

/**
 * Where encodeFrontend puts entries: key and value bytes in the kernel's layout. The buffers are scratch
 * space reused for the next entry, so a sink copies what it keeps. A key put twice keeps the last value.
 */
export interface EntrySink {
  put(m: LbMapName, key: Buffer, value: Buffer): void;
  /** True when a service-map key is already in this encoding (the NodePort of every node address is one). */
  hasService(key: Buffer): boolean;
}

/** A sink into latin1 maps (desiredContents, tests). */
export function contentsSink(out: LbContents): EntrySink {
  return {
    put: (m, key, value) => void out[m].set(key.toString("latin1"), value.toString("latin1")),
    hasService: (key) => out.services.has(key.toString("latin1")),
  };
}

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const offsetOf = (layout: readonly { c: string; offset: number }[], c: string) => layout.find((m) => m.c === c)!.offset;
const SVC_KEY_ADDRESS = offsetOf(svcKey.layout, "address");
const SVC_KEY_PORT = offsetOf(svcKey.layout, "port");
const SVC_KEY_PROTO = offsetOf(svcKey.layout, "proto");
const SVC_KEY_SCOPE = offsetOf(svcKey.layout, "scope");
const SVC_KEY_SLOT = offsetOf(svcKey.layout, "slot");
const SVC_VALUE_BACKEND = offsetOf(svcValue.layout, "backend_id");
const SVC_VALUE_REVNAT = offsetOf(svcValue.layout, "rev_nat_id");
const SVC_VALUE_COUNT = offsetOf(svcValue.layout, "count");
const SVC_VALUE_FLAGS = offsetOf(svcValue.layout, "flags");
const SVC_VALUE_XFLAGS = offsetOf(svcValue.layout, "xflags");
const SVC_VALUE_AFFINITY = offsetOf(svcValue.layout, "affinity_timeout");
const BACKEND_ADDRESS = offsetOf(backend.layout, "address");
const BACKEND_PORT = offsetOf(backend.layout, "port");
const BACKEND_PROTO = offsetOf(backend.layout, "proto");
const BACKEND_FLAGS = offsetOf(backend.layout, "flags");
const REVNAT_ADDRESS = offsetOf(revNat.layout, "address");
const REVNAT_PORT = offsetOf(revNat.layout, "port");
const META_SERVICE = offsetOf(svcMeta.layout, "service");
const META_PORT_NAME = offsetOf(svcMeta.layout, "port_name");
const META_TYPE = offsetOf(svcMeta.layout, "type");
const META_ALGORITHM = offsetOf(svcMeta.layout, "algorithm");
const META_AFFINITY = offsetOf(svcMeta.layout, "affinity");
const META_SERVICE_SIZE = svcMeta.layout.find((m) => m.c === "service")!.size;
const META_PORT_NAME_SIZE = svcMeta.layout.find((m) => m.c === "port_name")!.size;
const AFF_BACKEND = offsetOf(affinityMatchKey.layout, "backend_id");
const AFF_REVNAT = offsetOf(affinityMatchKey.layout, "rev_nat_id");
const AFF_SCOPE = offsetOf(affinityMatchKey.layout, "scope");
// Scratch entries in the kernel's layout, written field by field at fixed offsets (no codec object or Buffer
// per entry: a full sync encodes hundreds of thousands). Padding bytes are never written, so they stay zero.
const masterKey = Buffer.alloc(svcKey.size);
const masterValue = Buffer.alloc(svcValue.size);
const slotKey = Buffer.alloc(svcKey.size);
const slotValue = Buffer.alloc(svcValue.size);
const backendKey = Buffer.alloc(u32Key.size);
const backendValue = Buffer.alloc(backend.size);
const idKey = Buffer.alloc(u32Key.size);
const revNatValue = Buffer.alloc(revNat.size);
const metaValue = Buffer.alloc(svcMeta.size);
const affinityKey = Buffer.alloc(affinityMatchKey.size);
const one = u8Value.encode(1);

// Byte stores instead of Buffer's write methods (their range checks cost more than the store, and these run
// several times per backend of every encoded frontend). Offsets are the layout's: always in range.
function writeBE16(buf: Buffer, off: number, v: number): void {
  buf[off] = v >>> 8;
  buf[off + 1] = v;
}
function writeBE32(buf: Buffer, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = v >>> 16;
  buf[off + 2] = v >>> 8;
  buf[off + 3] = v;
}
function writeU16(buf: Buffer, off: number, v: number): void {
  if (LE) {
    buf[off] = v;
    buf[off + 1] = v >>> 8;
  } else writeBE16(buf, off, v);
}
function writeU32(buf: Buffer, off: number, v: number): void {
  if (LE) {
    buf[off] = v;
    buf[off + 1] = v >>> 8;
    buf[off + 2] = v >>> 16;
    buf[off + 3] = v >>> 24;
  } else writeBE32(buf, off, v);
}

/** A C string field: zero-filled, then the UTF-8 bytes; throws as the codec does when it does not fit. */
function writeCString(buf: Buffer, off: number, size: number, s: string): void {
  // At most 3 UTF-8 bytes per UTF-16 unit: a short string needs no byte count.
  if (s.length * 3 >= size && Buffer.byteLength(s, "utf8") >= size)
    throw new RangeError(`string longer than ${size - 1} bytes: ${JSON.stringify(s)}`);
  buf.fill(0, off, off + size);
  buf.write(s, off, size, "utf8");
}

/** A backend's entry (the id allocated in `ids`), added to `out`; returns its id. */
function putBackend(b: BackendModel, proto: number, ids: Ids, out: EntrySink): number {
  const a = ipv4ToNumber(b.address);
  // The codec's error names the field; nothing is allocated for it.
  if (Number.isNaN(a)) backend.encode({ address: b.address, port: b.port, proto, flags: backendFlags(b) });
  // backendName's, from the address already parsed.
  const id = ids.backends.acquire(numberName(a, b.port, proto));
  writeU32(backendKey, 0, id);
  writeBE32(backendValue, BACKEND_ADDRESS, a);
  writeBE16(backendValue, BACKEND_PORT, b.port);
  backendValue[BACKEND_PROTO] = proto;
  backendValue[BACKEND_FLAGS] = backendFlags(b);
  out.put("backends", backendKey, backendValue);
  return id;
}

/** An IPv6 frontend (IPv6 literals are the only addresses with a colon): the IPv6 maps. */
export function isIPv6Frontend(fe: Pick<Frontend, "address">): boolean {
  return fe.address.includes(":");
}

/**
 * An IPv6 frontend's entries (bpx_svc6_v1, bpx_backend6_v1 through lb6.ts, and its metadata), with ids from
 * the same tables as IPv4's. Not on IPv4's path: IPv4 frontends never reach it.
 */
function encodeFrontendIPv6(
  fe: Frontend,
  extras: FrontendExtras | undefined,
  ids: Ids,
  out: EntrySink,
): string | undefined {
  const proto = protoNumber(fe.protocol);
  if (proto === undefined) return `protocol ${fe.protocol} is not handled by the BPF data plane`;
  // An address that is not IPv6 gets a name no restore produces; encodeFrontend6 then throws for it.
  const hex = (a: string) => ipv6Hex(a) ?? a;
  const revNatId = ids.revNat.acquire(ipv6Name(hex(fe.address), fe.port, proto));
  const backendIds = fe.backends.map((b) => ids.backends.acquire(ipv6Name(hex(b.address), b.port, proto)));
  const c = encodeFrontend6(fe, { revNatId, backendIds }, extras);
  // Backends first: an entry shared with another frontend takes the last value, as IPv4's.
  for (const [k, v] of c.backends) out.put("backends6", bytes(k), bytes(v));
  for (const [k, v] of c.services) out.put("services6", bytes(k), bytes(v));
  // Maglev tables and affinity members are keyed by ids, which the families share: IPv4's maps.
  for (const [k, v] of c.maglev) out.put("maglev", bytes(k), bytes(v));
  for (const [k, v] of c.affinityMatch) out.put("affinityMatch", bytes(k), bytes(v));
  // The metadata names the frontend for status and explain; bpx_rev_nat_v1 holds IPv4 addresses only (an IPv6
  // reply takes the frontend from its conntrack entry).
  writeU32(idKey, 0, revNatId);
  out.put(
    "svcMeta",
    idKey,
    svcMeta.encode({
      service: fe.service,
      portName: fe.portName,
      type: SVC_TYPES.indexOf(fe.type),
      algorithm: ALGORITHMS.indexOf(fe.algorithm),
      affinity: fe.sessionAffinity.type === "ClientIP" ? 1 : 0,
    }),
  );
  return undefined;
}

/** One frontend's entries, added to `out` (the only other state touched is `ids`). */
export function encodeFrontend(
  fe: Frontend,
  extras: FrontendExtras | undefined,
  ids: Ids,
  out: EntrySink,
): string | undefined {
  // Before anything else: an IPv6 NodePort would otherwise land on the IPv4 wildcard entry.
  if (fe.protocol === "SCTP") {
    const ipvs = sctpNotInBpf(isIPv6Frontend(fe), fe.port, frontendBackendPorts(fe, extras));
    if (ipvs) return ipvs;
  }
  if (isIPv6Frontend(fe)) return encodeFrontendIPv6(fe, extras, ids, out);
  const proto = protoNumber(fe.protocol);
  if (proto === undefined) return `protocol ${fe.protocol} is not handled by the BPF data plane`;
  const address = dataplaneAddress(fe);
  const a = ipv4ToNumber(address);
  // The codec's error names the field.
  if (Number.isNaN(a)) svcKey.encode({ address, port: fe.port, proto, scope: 0, slot: 0 });
  const scope = fe.scope === "internal" ? SCOPE_INTERNAL : SCOPE_EXTERNAL;
  writeBE32(masterKey, SVC_KEY_ADDRESS, a);
  writeBE16(masterKey, SVC_KEY_PORT, fe.port);
  masterKey[SVC_KEY_PROTO] = proto;
  masterKey[SVC_KEY_SCOPE] = scope;
  writeU16(masterKey, SVC_KEY_SLOT, 0);
  // The NodePort of every node address is the same entry: written once.
  if (out.hasService(masterKey)) return undefined;
  const revNatId = ids.revNat.acquire(numberName(a, fe.port, proto));
  const affinity = fe.sessionAffinity.type === "ClientIP";
  const backends = fe.backends;
  const n = backends.length;
  // bpfproxy.io/backend-weights: runs of slots (slots.ts); undefined for the usual one slot per backend.
  const runs = backends.some((b) => b.weight !== undefined) ? slotRuns(backends.map((b) => b.weight ?? 1)) : undefined;
  const count = runs ? sumOf(runs) : n;

  masterKey.copy(slotKey);
  writeU32(slotValue, SVC_VALUE_REVNAT, revNatId);
  // Slots and the affinity members reuse the backend ids: kept only when a Maglev table needs them.
  const maglev = fe.algorithm === "maglev" && count > 0;
  const slotIds = maglev ? new Array<number>(n) : undefined;
  if (affinity) {
    writeU32(affinityKey, AFF_REVNAT, revNatId);
    affinityKey[AFF_SCOPE] = scope;
  }
  for (let slot = 0, at = 0; slot < n; slot++) {
    const backendId = putBackend(backends[slot]!, proto, ids, out);
    if (runs) at = putRun(out, backendId, at, runs[slot]!);
    else {
      writeU16(slotKey, SVC_KEY_SLOT, slot + 1);
      writeU32(slotValue, SVC_VALUE_BACKEND, backendId);
      out.put("services", slotKey, slotValue);
    }
    if (affinity) {
      writeU32(affinityKey, AFF_BACKEND, backendId);
      out.put("affinityMatch", affinityKey, one);
    }
    if (slotIds) slotIds[slot] = backendId;
  }
  // A frontend without backends rejects: it needs no table.
  if (slotIds) {
    const names = new Array<string>(n);
    for (let i = 0; i < n; i++) names[i] = maglevName(backends[i]!.address, backends[i]!.port);
    const table = maglevTable(names, undefined, runs);
    out.put(
      "maglev",
      maglevKey.encode({ revNatId, scope }),
      maglevCodec.encode(Uint32Array.from(table, (i) => slotIds[i]!)),
    );
  }
  // Backends kept only so that flows already pinned to them by conntrack keep working.
  const retained = extras?.retainedBackends;
  if (retained) for (let i = 0; i < retained.length; i++) putBackend(retained[i]!, proto, ids, out);

  writeU32(masterValue, SVC_VALUE_BACKEND, 0);
  writeU32(masterValue, SVC_VALUE_REVNAT, revNatId);
  writeU16(masterValue, SVC_VALUE_COUNT, count);
  masterValue[SVC_VALUE_FLAGS] =
    masterFlags(fe, extras) | (maglev ? SVC_F_MAGLEV : 0) | (fe.algorithm === "least-conn" ? SVC_F_LEAST_CONN : 0);
  masterValue[SVC_VALUE_XFLAGS] = masterXflags(fe);
  writeU32(masterValue, SVC_VALUE_AFFINITY, fe.sessionAffinity.type === "ClientIP" ? fe.sessionAffinity.timeoutSeconds : 0);
  out.put("services", masterKey, masterValue);
  writeU32(idKey, 0, revNatId);
  writeBE32(revNatValue, REVNAT_ADDRESS, a);
  writeBE16(revNatValue, REVNAT_PORT, fe.port);
  out.put("revNat", idKey, revNatValue);
  writeCString(metaValue, META_SERVICE, META_SERVICE_SIZE, fe.service);
  writeCString(metaValue, META_PORT_NAME, META_PORT_NAME_SIZE, fe.portName);
  metaValue[META_TYPE] = SVC_TYPES.indexOf(fe.type);
  metaValue[META_ALGORITHM] = ALGORITHMS.indexOf(fe.algorithm);
  metaValue[META_AFFINITY] = affinity ? 1 : 0;
  out.put("svcMeta", idKey, metaValue);
  return undefined;
}

/**
 * The address a frontend has in the service map: a NodePort is one wildcard entry per (port, protocol, scope),
 * served on the addresses of bpx_nodeport_addrs_v1, however many node addresses there are.
 */
export function dataplaneAddress(fe: Pick<Frontend, "type" | "address">): string {
  return fe.type === "NodePort" ? WILDCARD_ADDRESS : fe.address;
}

/** Direct server return for this frontend's flows to other nodes (docs/dsr.md): "hybrid" is DSR for TCP only. */
function usesDsr(fe: Pick<Frontend, "forwardingMode" | "protocol">): boolean {
  return fe.forwardingMode === "dsr" || (fe.forwardingMode === "hybrid" && fe.protocol === "TCP");
}

/** The master's xflags: DSR, and "hybrid" remembered for status (never read by BPF). */
function masterXflags(fe: Pick<Frontend, "forwardingMode" | "protocol">): number {
  return (usesDsr(fe) ? SVC_X_DSR : 0) | (fe.forwardingMode === "hybrid" ? SVC_X_HYBRID : 0);
}

/** Master flags: affinity, drop-when-empty, and kube-proxy's masquerade and source-range rules. */
function masterFlags(fe: Frontend, extras: FrontendExtras | undefined): number {
  return masterFlagsOf(
    fe.type,
    fe.sessionAffinity.type === "ClientIP",
    extras?.dropWhenEmpty === true,
    extras?.externalPolicyLocal === true,
    (extras?.sourceRanges.length ?? 0) > 0,
  );
}

function masterFlagsOf(
  type: Frontend["type"],
  affinity: boolean,
  dropWhenEmpty: boolean,
  externalPolicyLocal: boolean,
  sourceRanges: boolean,
): number {
  let flags = affinity ? SVC_F_AFFINITY : 0;
  if (dropWhenEmpty) flags |= SVC_F_DROP_WHEN_EMPTY;
  // ClusterIP: masquerade what comes from outside the cluster. NodePort/LB/externalIP: everything with the
  // Cluster policy (the reply must come back through this node); Local keeps the client's address.
  if (type === "ClusterIP") flags |= SVC_F_MASQ_OUTSIDE;
  else if (!externalPolicyLocal) flags |= SVC_F_MASQUERADE;
  if (sourceRanges) flags |= SVC_F_SOURCE_RANGES;
  return flags;
}

const sumOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** slotRuns for backends [first, first + n) of a record; undefined (one slot each) when none has a weight. */
function recordRuns(r: ServiceRecord, first: number, n: number): number[] | undefined {
  let weighted = false;
  for (let j = first; j < first + n && !weighted; j++) weighted = r.backendWeight(j) !== 1;
  if (!weighted) return undefined;
  return slotRuns(Array.from({ length: n }, (_, k) => r.backendWeight(first + k)));
}

/** A weighted backend's run of `len` slots from slot index `at` (slots.ts); returns the index after it. */
function putRun(out: EntrySink, backendId: number, at: number, len: number): number {
  writeU32(slotValue, SVC_VALUE_BACKEND, backendId);
  writeU16(slotValue, SVC_VALUE_COUNT, len);
  writeU32(slotValue, SVC_VALUE_AFFINITY, at);
  for (let k = 0; k < len; k++) {
    writeU16(slotKey, SVC_KEY_SLOT, at + k + 1);
    out.put("services", slotKey, slotValue);
  }
  // The scratch value is shared with the unweighted encoding, whose slots have both fields 0.
  writeU16(slotValue, SVC_VALUE_COUNT, 0);
  writeU32(slotValue, SVC_VALUE_AFFINITY, 0);
  return at + len;
}

/** A record backend's flags in the kernel's layout. */
function recordBackendFlags(f: number): number {
  return (f & BACKEND_TERMINATING ? BACKEND_F_TERMINATING : 0) | (f & BACKEND_NODE_LOCAL ? BACKEND_F_NODE_LOCAL : 0);
}

/** Backend j of a record (IPv4), as putBackend writes one. */
function putRecordBackend(r: ServiceRecord, j: number, proto: number, ids: Ids, out: EntrySink): number {
  const a = r.backendNumber(j);
  const port = r.backendPort(j);
  const id = ids.backends.acquire(numberName(a, port, proto));
  writeU32(backendKey, 0, id);
  writeBE32(backendValue, BACKEND_ADDRESS, a);
  writeBE16(backendValue, BACKEND_PORT, port);
  backendValue[BACKEND_PROTO] = proto;
  backendValue[BACKEND_FLAGS] = recordBackendFlags(r.backendFlags(j));
  out.put("backends", backendKey, backendValue);
  return id;
}

/**
 * Every frontend of a Service record, added to `out`; returns the skip reason per frontend (undefined: encoded).
 * IPv4 frontends of a compact record are encoded straight from its words (encodeRecordFrontend); anything else
 * (IPv6, a record of frontend objects) through encodeFrontend.
 */
export function encodeRecord(r: ServiceRecord, ids: Ids, out: EntrySink): (string | undefined)[] {
  const reasons: (string | undefined)[] = [];
  const fast = r.compact && r.allIPv4;
  for (let i = 0; i < r.size; i++)
    reasons.push(fast ? encodeRecordFrontend(r, i, ids, out) : encodeFrontend(r.frontend(i), r.extras(i), ids, out));
  return reasons;
}

const WILDCARD = ipv4ToNumber(WILDCARD_ADDRESS);

/** encodeFrontend for frontend i of a compact record whose addresses are all IPv4: the same entries. */
export function encodeRecordFrontend(r: ServiceRecord, i: number, ids: Ids, out: EntrySink): string | undefined {
  const protocol = r.protocol(i);
  const proto = protoNumber(protocol);
  if (proto === undefined) return `protocol ${protocol} is not handled by the BPF data plane`;
  if (proto === IPPROTO_SCTP) {
    const ipvs = sctpNotInBpf(false, r.port(i), recordBackendPorts(r, i));
    if (ipvs) return ipvs;
  }
  const typeIndex = r.typeIndex(i);
  const type = SVC_TYPES[typeIndex]!;
  const port = r.port(i);
  // A NodePort is one wildcard entry (dataplaneAddress).
  const a = type === "NodePort" ? WILDCARD : r.addressNumber(i);
  const scope = r.scope(i) === "internal" ? SCOPE_INTERNAL : SCOPE_EXTERNAL;
  writeBE32(masterKey, SVC_KEY_ADDRESS, a);
  writeBE16(masterKey, SVC_KEY_PORT, port);
  masterKey[SVC_KEY_PROTO] = proto;
  masterKey[SVC_KEY_SCOPE] = scope;
  writeU16(masterKey, SVC_KEY_SLOT, 0);
  // The NodePort of every node address is the same entry: written once.
  if (out.hasService(masterKey)) return undefined;
  const revNatId = ids.revNat.acquire(numberName(a, port, proto));
  const sa = r.sessionAffinity(i);
  const affinity = sa.type === "ClientIP";
  const algorithm = r.algorithm(i);
  const set = r.backendSet(i);
  const first = r.setStart(set);
  const n = r.setEnd(set) - first;
  const runs = recordRuns(r, first, n);
  const count = runs ? sumOf(runs) : n;

  masterKey.copy(slotKey);
  writeU32(slotValue, SVC_VALUE_REVNAT, revNatId);
  const maglev = algorithm === "maglev" && count > 0;
  const slotIds = maglev ? new Array<number>(n) : undefined;
  if (affinity) {
    writeU32(affinityKey, AFF_REVNAT, revNatId);
    affinityKey[AFF_SCOPE] = scope;
  }
  for (let slot = 0, at = 0; slot < n; slot++) {
    const backendId = putRecordBackend(r, first + slot, proto, ids, out);
    if (runs) at = putRun(out, backendId, at, runs[slot]!);
    else {
      writeU16(slotKey, SVC_KEY_SLOT, slot + 1);
      writeU32(slotValue, SVC_VALUE_BACKEND, backendId);
      out.put("services", slotKey, slotValue);
    }
    if (affinity) {
      writeU32(affinityKey, AFF_BACKEND, backendId);
      out.put("affinityMatch", affinityKey, one);
    }
    if (slotIds) slotIds[slot] = backendId;
  }
  if (slotIds) {
    const names = new Array<string>(n);
    for (let k = 0; k < n; k++) names[k] = maglevName(r.backendAddress(first + k), r.backendPort(first + k));
    const table = maglevTable(names, undefined, runs);
    out.put(
      "maglev",
      maglevKey.encode({ revNatId, scope }),
      maglevCodec.encode(Uint32Array.from(table, (k) => slotIds[k]!)),
    );
  }
  // Backends kept only so that flows already pinned to them by conntrack keep working.
  const retained = r.retainedSet(i);
  for (let j = r.setStart(retained); j < r.setEnd(retained); j++) putRecordBackend(r, j, proto, ids, out);

  writeU32(masterValue, SVC_VALUE_BACKEND, 0);
  writeU32(masterValue, SVC_VALUE_REVNAT, revNatId);
  writeU16(masterValue, SVC_VALUE_COUNT, count);
  masterValue[SVC_VALUE_FLAGS] =
    masterFlagsOf(type, affinity, r.dropWhenEmpty(i), r.externalPolicyLocal(i), r.sourceRanges(i).length > 0) |
    (maglev ? SVC_F_MAGLEV : 0) |
    (algorithm === "least-conn" ? SVC_F_LEAST_CONN : 0);
  writeU32(masterValue, SVC_VALUE_AFFINITY, sa.type === "ClientIP" ? sa.timeoutSeconds : 0);
  masterValue[SVC_VALUE_XFLAGS] = masterXflags({ forwardingMode: r.forwardingMode(i), protocol });
  out.put("services", masterKey, masterValue);
  writeU32(idKey, 0, revNatId);
  writeBE32(revNatValue, REVNAT_ADDRESS, a);
  writeBE16(revNatValue, REVNAT_PORT, port);
  out.put("revNat", idKey, revNatValue);
  writeCString(metaValue, META_SERVICE, META_SERVICE_SIZE, r.service);
  writeCString(metaValue, META_PORT_NAME, META_PORT_NAME_SIZE, r.portName(i));
  metaValue[META_TYPE] = typeIndex;
  metaValue[META_ALGORITHM] = ALGORITHMS.indexOf(algorithm);
  metaValue[META_AFFINITY] = affinity ? 1 : 0;
  out.put("svcMeta", idKey, metaValue);
  return undefined;
}

/**
 * The complete desired contents of the services, backends, rev-NAT and metadata maps.
 * Allocates ids in `ids` for new frontends and backends (the only state it touches).
 */
export function desiredContents(model: NodeModel, ids: Ids): DesiredResult {
  const contents = emptyLbContents();
  const skipped: DesiredResult["skipped"] = [];
  const sink = contentsSink(contents);
  model.frontends.forEach((fe, i) => {
    const reason = encodeFrontend(fe, model.extras[i], ids, sink);
    if (reason) skipped.push({ frontend: fe, reason });
  });
  return { contents, skipped };
}

/** The model's Services as records: the model's own index when it has one, else made over its frontends (O(frontends)). */
export function serviceGroups(model: NodeModel): ReadonlyMap<string, ServiceRecord> {
  if (model.delta) return model.delta.byService;
  return recordsFromFrontends(model.frontends, model.extras);
}

/** bpx_nodeport_addrs_v1: the node's addresses, flagged where NodePorts are served. */
export function desiredNodePortAddrs(model: NodeModel): Contents {
  const flags = new Map<string, number>();
  for (const ip of model.nodeIPs ?? []) flags.set(ip, (flags.get(ip) ?? 0) | NODEPORT_ADDR_F_LOCAL);
  for (const ip of model.nodePortIPs ?? []) flags.set(ip, (flags.get(ip) ?? 0) | NODEPORT_ADDR_F_SERVE);
  const c: Contents = new Map();
  for (const [ip, f] of flags) c.set(be32AddrKey.encodeBin({ address: ip }), nodePortAddr.encodeBin({ flags: f }));
  return c;
}

/**
 * bpx_srcrange_v1: (frontend id, CIDR) for every frontend with loadBalancerSourceRanges, kept per Service so
 * that a sync with the model's delta recomputes only the changed Services (and those whose frontend had no
 * id yet); the result is the union, O(ranges). `idOf` gives the rev-NAT id the service map holds for a
 * frontend (undefined when it is not programmed).
 */
export class SourceRangesCache {
  private readonly byService = new Map<string, Contents>();
  /** Services with a restricted frontend that had no rev-NAT id (not programmed yet). */
  private readonly waiting = new Set<string>();

  /** family 4: bpx_srcrange_v1 for IPv4 frontends; 6: bpx_srcrange6_v1 for IPv6 ones (srcrange6.ts). */
  constructor(private readonly family: 4 | 6 = 4) {}

  desired(
    model: NodeModel,
    changed: ReadonlySet<string> | undefined,
    idOf: (name: IdName) => number | undefined,
  ): Contents {
    const groups = serviceGroups(model);
    const visit = changed
      ? new Set([...changed, ...this.waiting])
      : new Set([...groups.keys(), ...this.byService.keys()]);
    for (const key of visit) {
      this.byService.delete(key);
      this.waiting.delete(key);
      const g = groups.get(key);
      if (!g) continue;
      const c: Contents = new Map();
      for (let i = 0; i < g.size; i++) {
        const ranges = g.sourceRanges(i);
        if (ranges.length === 0) continue;
        const proto = protoNumber(g.protocol(i));
        const address = g.address(i);
        const v6 = address.includes(":");
        if (proto === undefined || v6 !== (this.family === 6)) continue;
        const hex = v6 ? ipv6Hex(address) : undefined;
        if (v6 && hex === undefined) continue;
        const port = g.port(i);
        const id = idOf(
          v6 ? ipv6Name(hex!, port, proto) : frontendName(dataplaneAddress({ type: g.type(i), address }), port, proto),
        );
        if (id === undefined) {
          this.waiting.add(key);
          continue;
        }
        if (v6) {
          // The model gives an IPv6 frontend its own family's ranges only.
          for (const [k, e] of encodeSourceRanges6(id, ranges)) c.set(k, e);
          continue;
        }
        for (const r of ranges) {
          const { addr, bits } = parseCidr4(r);
          c.set(srcRangeKey.encodeBin({ prefixlen: 32 + bits, revNatId: id, addr }), u32Key.encodeBin(1));
        }
      }
      if (c.size) this.byService.set(key, c);
    }
    const out: Contents = new Map();
    for (const c of this.byService.values()) for (const [k, e] of c) out.set(k, e);
    return out;
  }
}
