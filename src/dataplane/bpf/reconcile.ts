// Writes the desired load-balancer map contents into the kernel, touching only what differs.
//
// Cost O(change): the entries of each Service are encoded once and kept; a sync re-encodes only the
// Services whose frontends changed (the model cache hands back the very same Frontend objects for an
// unchanged Service) and diffs only their keys. A full sync (start, hourly, after an error) re-reads
// the kernel and compares everything.
//
// State is dense (entry-table.ts): per map, the union of what the Services want, as key and value bytes in
// kernel layout with a reference count and a "the kernel holds exactly this" flag; a Service lists its
// entries as numbers into the wanted tables. What the kernel holds otherwise (keys nothing wants any more,
// older values, what a restart found) is a second table per map, `actual`, empty in the steady state: the
// kernel's state is not kept twice. No string or object per entry.
//
// Order: removals first, so a full map never blocks the changes that would make room; then
// make-before-break so a lookup racing the update never finds a slot pointing nowhere:
//   removed masters → masters whose count shrinks → stale slots → stale rev-NAT/metadata →
//   stale Maglev tables and affinity members → unreferenced backends → new backends →
//   rev-NAT/metadata → slots → Maglev tables and affinity members → masters (their count and flags
//   make them live) → backends that slots or Maglev tables named until this pass.
//
// Capacity: before writing, the new keys of each changed Service are counted against the room each
// map has after the removals. A Service that does not fit is not written at all (its frontends keep
// what they had, or stay absent when new), is reported with the map that is full, and is tried again
// on the next sync; every other Service is applied. So no frontend is ever half written and a full
// map never stops removals or other Services' changes. Keys can be shared (a backend of two Services): such
// a key is charged once, to the first admitted Service wanting it, and written whenever any admitted Service
// wants it.
//
// IPv6 frontends have maps of their own (bpx_svc6_v1, bpx_backend6_v1) in the same tables, diff, order and
// admission as IPv4's: their backend ids come from the one id space, their frontend ids from the one rev-NAT
// id space (an IPv6 frontend has metadata but no rev-NAT entry: its replies take the frontend from conntrack).
//
// A Service whose new encoding throws (a field the map layout cannot hold) keeps its old encoding and is
// reported with its frontends as skipped: encoding happens before the old encoding is released.
//
// The in-memory mirror of the kernel (held flags and the side table) changes only after a write succeeded;
// after a failed write it is re-read from the kernel, so the next pass is a correct full diff.
import type { MapHandle } from "../../native/index.js";
import { IPPROTO_UDP, SVC_F_MAP_FULL, backend, backend6, svc6Key, svcKey, svcValue } from "./abi.js";
import {
  backendName,
  encodeRecord,
  frontendName,
  ipv6Name,
  newIds,
  serviceGroups,
  type EntrySink,
  type IdName,
  type Ids,
  type LbContents,
} from "./desired.js";
import { EntryTable, copyBytes } from "./entry-table.js";
import { deleteBatch, updateBatch } from "./batch.js";
import { BitCollector, type ServiceBits } from "./prefilter.js";
import type { NodeModel } from "../../model/types.js";
import type { ServiceRecord } from "../../model/record.js";

export interface LbMaps {
  services: MapHandle;
  backends: MapHandle;
  revNat: MapHandle;
  svcMeta: MapHandle;
  maglev: MapHandle;
  affinityMatch: MapHandle;
  services6: MapHandle;
  backends6: MapHandle;
}
type MapName = keyof LbMaps;
const MAPS: readonly MapName[] = [
  "services",
  "backends",
  "revNat",
  "svcMeta",
  "maglev",
  "affinityMatch",
  "services6",
  "backends6",
];
/** The service maps (masters and slots) and the backend map each one's slots name, per family. */
const SERVICE_MAPS = ["services", "services6"] as const;
const BACKEND_MAPS: readonly MapName[] = ["backends", "backends6"];
type ServiceMap = (typeof SERVICE_MAPS)[number];

/** One empty record per map. */
function perMap<T>(make: () => T): Record<MapName, T> {
  return perMap0(() => make());
}

export interface NotProgrammed {
  service: string;
  /** The maps without room for the Service's new entries. */
  maps: string[];
  /** New entries the Service needed in each of those maps. */
  needed: Record<string, number>;
}

export interface ApplyStats {
  upserts: number;
  deletes: number;
  /** Frontends present in the model but not programmable (e.g. SCTP). */
  skipped: { service: string; address: string; port: number; protocol: string; reason: string }[];
  /** Map entries encoded by this pass (O(change) for incremental passes). */
  encoded?: number;
  /** Services re-encoded by this pass. */
  servicesEncoded?: number;
  /** Services left out because a map was full (kept as before; retried on the next sync). */
  notProgrammed?: NotProgrammed[];
  /**
   * "revNatId/backendId" pairs of UDP frontends (a frontend sending new flows to a backend) that changed or
   * removed Services no longer have: flows of such a pair went to a backend that stopped serving that frontend. O(change).
   */
  lostServing?: Set<string>;
  /**
   * Services whose kernel entries may still be an older encoding than the model's (refused for room, or an
   * encoding that threw): whatever covers their old entries (the pre-filter's bits) must stay until they leave.
   */
  heldBack?: ReadonlySet<string>;
}


const NONE_SKIPPED: ApplyStats["skipped"] = [];
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const offsetOf = (layout: readonly { c: string; offset: number }[], c: string) => layout.find((m) => m.c === c)!.offset;
const KEY_SLOT = offsetOf(svcKey.layout, "slot");
const KEY6_SLOT = offsetOf(svc6Key.layout, "slot");
const KEY6_PROTO = offsetOf(svc6Key.layout, "proto");
const KEY6_PORT = offsetOf(svc6Key.layout, "port");
const KEY6_ADDRESS = offsetOf(svc6Key.layout, "address");
const BACKEND6_ADDRESS = offsetOf(backend6.layout, "address");
const BACKEND6_PORT = offsetOf(backend6.layout, "port");
const BACKEND6_PROTO = offsetOf(backend6.layout, "proto");
const KEY_PROTO = offsetOf(svcKey.layout, "proto");
const KEY_PORT = offsetOf(svcKey.layout, "port");
const KEY_ADDRESS = offsetOf(svcKey.layout, "address");
const VALUE_BACKEND = offsetOf(svcValue.layout, "backend_id");
const VALUE_REVNAT = offsetOf(svcValue.layout, "rev_nat_id");
const VALUE_COUNT = offsetOf(svcValue.layout, "count");
const BACKEND_ADDRESS = offsetOf(backend.layout, "address");
const BACKEND_PORT = offsetOf(backend.layout, "port");
const BACKEND_PROTO = offsetOf(backend.layout, "proto");
const u16 = (b: Buffer, off: number) => (LE ? b.readUInt16LE(off) : b.readUInt16BE(off));
const u32 = (b: Buffer, off: number) => (LE ? b.readUInt32LE(off) : b.readUInt32BE(off));

/** Entry i of a service-map table is a master (slot 0). */
const isMaster = (t: EntryTable, i: number) => u16(t.keys, i * t.keySize + KEY_SLOT) === 0;
/** The same for either family's service map. */
const isMasterIn = (m: ServiceMap, t: EntryTable, i: number) =>
  u16(t.keys, i * t.keySize + (m === "services" ? KEY_SLOT : KEY6_SLOT)) === 0;
/** The count of a service-map value (a master's number of slots). */
const countOf = (t: EntryTable, i: number) => u16(t.values, i * t.valueSize + VALUE_COUNT);
/** The backend id of a service-map value (a slot's backend). */
const backendOf = (t: EntryTable, i: number) => u32(t.values, i * t.valueSize + VALUE_BACKEND);
/** The u32 id of a u32-keyed table's entry i (backends, rev-NAT, metadata). */
const idOf = (t: EntryTable, i: number) => u32(t.keys, i * t.keySize);

/** A service-map entry's "revNatId/backendId" when it is a slot of `proto` (UDP flow bookkeeping), either family. */
function slotPair(m: ServiceMap, t: EntryTable, i: number, proto: number | undefined): string | undefined {
  if (isMasterIn(m, t, i)) return undefined;
  if (proto !== undefined && t.keys[i * t.keySize + (m === "services" ? KEY_PROTO : KEY6_PROTO)] !== proto)
    return undefined;
  const v = i * t.valueSize;
  return `${u32(t.values, v + VALUE_REVNAT)}/${u32(t.values, v + VALUE_BACKEND)}`;
}

/** Adds the backend ids a Maglev table value (u32 per entry) names. */
function tableBackends(t: EntryTable, i: number, into: Set<number>): void {
  let last = -1;
  const at = i * t.valueSize;
  for (let j = 0; j + 3 < t.valueSize; j += 4) {
    const id = u32(t.values, at + j);
    if (id !== last) into.add((last = id));
  }
}

/** Map number (high bits) and entry number (low bits) of one of a Service's entries. */
const ENTRY_BITS = 28;
const ENTRY_MASK = (1 << ENTRY_BITS) - 1;

interface ServiceState {
  /** The model's record this encoding is of (an unchanged Service hands over the very same record). */
  record: ServiceRecord;
  /** This Service's entries in the wanted tables (map index << ENTRY_BITS | entry number): `n` from `at` in EntryLists. */
  at: number;
  n: number;
  /** Some frontend is UDP (only UDP slots are followed for stale flows). */
  udp: boolean;
  skipped: ApplyStats["skipped"];
}

/**
 * Every Service's entry list back to back in one array: no typed array (and its ArrayBuffer, ~180 bytes) per
 * Service. A replaced or removed Service's range is reclaimed when the array next grows: the lists in use are
 * then copied together.
 */
class EntryLists {
  data = new Int32Array(1024);
  private top = 0;

  /** Copies list[0..n) in and returns where it starts; `live`: every state with a range in use (moved when growing). */
  add(list: Int32Array, n: number, live: ReadonlyMap<string, ServiceState>): number {
    if (this.top + n > this.data.length) {
      let inUse = 0;
      for (const st of live.values()) inUse += st.n;
      const next = new Int32Array(Math.max(1024, 2 * (inUse + n)));
      let at = 0;
      const data = this.data;
      // Element by element: a subarray and set() per Service cost more than the copy (30k Services: ~80 ms).
      for (const st of live.values()) {
        for (let j = 0; j < st.n; j++) next[at + j] = data[st.at + j]!;
        st.at = at;
        at += st.n;
      }
      this.data = next;
      this.top = at;
    }
    const at = this.top;
    this.data.set(list.subarray(0, n), at);
    this.top += n;
    return at;
  }

  /** Empty, with room for `n` entries (a full pass: every Service encoded again). */
  clear(n = 1024): void {
    this.data = new Int32Array(Math.max(1024, n));
    this.top = 0;
  }

  /** A Service's entries (a view: valid until the next add()). */
  of(st: ServiceState): Int32Array {
    return this.data.subarray(st.at, st.at + st.n);
  }
}

/**
 * Where one Service's encoding goes: straight into the wanted tables (no staged copy per entry), each entry
 * referenced once by the Service however often it is put. Until commit() the encoding can be undone: an
 * encoding that throws midway (an id space exhausted, a field the layout cannot hold) leaves the tables as
 * they were, so apply() stays transactional.
 */
class TableSink implements EntrySink {
  /** This encoding's entries: map index << ENTRY_BITS | entry number, in first-put order. */
  list = new Int32Array(64);
  n = 0;
  private stamp = 0;
  private tables: EntryTable[] = [];
  /** Entries other Services already wanted, with their value before this encoding overwrote it. */
  private undo: number[] = [];
  private undoValues: Buffer[];
  /** The pre-filter bits of what was put (computed from the entry bytes in the same walk). */
  readonly bits = new BitCollector();

  constructor(private readonly sizes: readonly { key: number; value: number }[]) {
    this.undoValues = sizes.map((s) => Buffer.alloc(s.value * 16));
  }

  begin(tables: EntryTable[], stamp: number): void {
    this.tables = tables;
    this.stamp = stamp;
    this.n = 0;
    this.undo.length = 0;
    this.bits.reset();
  }

  put(name: MapName, key: Buffer, value: Buffer): void {
    const m = MAP_INDEX[name];
    const t = this.tables[m]!;
    const i = t.add(key, 0);
    if (t.mark[i] !== this.stamp) {
      t.mark[i] = this.stamp;
      if (t.refs[i]! > 0) this.saveValue(m, t, i);
      t.refs[i]!++;
      if (this.n === this.list.length) {
        const l = new Int32Array(this.n * 2);
        l.set(this.list);
        this.list = l;
      }
      this.list[this.n++] = (m << ENTRY_BITS) | i;
    }
    // A key put twice keeps the last value; a key another Service shares takes this encoder's value.
    t.setValue(i, value, 0);
    if (m === 0) this.bits.service(key);
    else if (m === 1) this.bits.backend(value);
    else if (m === MAP_INDEX.services6) this.bits.service6(key);
    else if (m === MAP_INDEX.backends6) this.bits.backend6(value);
  }

  hasService(key: Buffer): boolean {
    const t = this.tables[0]!;
    const i = t.find(key, 0);
    return i >= 0 && t.mark[i] === this.stamp;
  }

  private saveValue(m: number, t: EntryTable, i: number): void {
    const vs = this.sizes[m]!.value;
    const j = this.undo.length / 2;
    let buf = this.undoValues[m]!;
    if ((j + 1) * vs > buf.length) buf = this.undoValues[m] = grow(buf, (j + 1) * vs);
    copyBytes(t.values, i * vs, buf, j * vs, vs);
    this.undo.push(m, i);
  }

  /** Takes this encoding out of the tables again (it threw): references dropped, shared values restored. */
  rollback(): void {
    for (let j = 0; j < this.undo.length; j += 2) {
      const m = this.undo[j]!;
      const t = this.tables[m]!;
      t.setValue(this.undo[j + 1]!, this.undoValues[m]!, (j / 2) * this.sizes[m]!.value);
    }
    for (let j = 0; j < this.n; j++) {
      const e = this.list[j]!;
      const t = this.tables[e >>> ENTRY_BITS]!;
      const i = e & ENTRY_MASK;
      if (--t.refs[i]! === 0) t.remove(i);
    }
    this.n = 0;
    this.undo.length = 0;
  }
}

function grow(b: Buffer, atLeast: number): Buffer {
  const n = Buffer.alloc(Math.max(atLeast, b.length * 2));
  b.copy(n);
  return n;
}

const MAP_INDEX: Record<MapName, number> = {
  services: 0,
  backends: 1,
  revNat: 2,
  svcMeta: 3,
  maglev: 4,
  affinityMatch: 5,
  services6: 6,
  backends6: 7,
};

export interface ReconcilerOptions {
  /** Frontends encoded between yields to the event loop (keeps /healthz answering during big syncs). */
  yieldEvery?: number;
  /** An id was released (its entries are gone): the per-id traffic counters start over for its next owner. */
  onIdReleased?: (kind: "frontend" | "backend", id: number, family?: 4 | 6) => void;
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Map entries handled between yields in the loops over whole maps. */
const YIELD_ENTRIES = 20_000;

/** A table's key as a scratch buffer, for looking up a candidate (latin1) key. */
function keyBytes(scratch: Buffer, key: string): Buffer {
  scratch.write(key, 0, key.length, "latin1");
  return scratch;
}

export class LbReconciler {
  /**
   * What the kernel holds as far as this reconciler knows, per map, beyond the wanted tables' held entries:
   * keys no Service wants, or held with another value than the wanted one. A key is in one of the two, never
   * both; the wanted tables spill a held entry here before it changes.
   */
  private actual: Record<MapName, EntryTable>;
  private ids: Ids = newIds();
  /** Union of every Service's encoding (refs: how many Services want the entry); undefined until a full pass. */
  private wanted: Record<MapName, EntryTable> | undefined;
  private services = new Map<string, ServiceState>();
  /** The Services' entry lists (ServiceState.at, .n). */
  private readonly lists = new EntryLists();
  /** Services with frontends the data plane cannot serve (their ServiceState.skipped is not empty). */
  private withSkipped = new Set<string>();
  /** Keys (latin1) whose kernel state may still differ from `wanted` (a Service that did not fit). */
  private pending: Record<MapName, Set<string>> = perMap(() => new Set<string>());
  /** Services the kernel may still hold an older encoding of, and why (ApplyStats.heldBack). */
  private readonly heldBack = new Map<string, "room" | "encoding">();
  private readonly yieldEvery: number;
  private readonly onIdReleased: ReconcilerOptions["onIdReleased"];
  private readonly sizes: { key: number; value: number }[];
  private readonly sink: TableSink;
  private stamp = 0;
  private readonly scratch: Buffer;
  /** The last restore() found every map empty and nothing was applied since: a full sync need not read them again. */
  private emptySinceRestore = false;

  constructor(
    private readonly maps: LbMaps,
    opts: ReconcilerOptions = {},
  ) {
    this.yieldEvery = opts.yieldEvery ?? 500;
    this.onIdReleased = opts.onIdReleased;
    this.sizes = MAPS.map((m) => ({ key: maps[m].info.keySize, value: maps[m].valueSizeAll }));
    this.sink = new TableSink(this.sizes);
    this.actual = this.emptyTables(false);
    this.scratch = Buffer.alloc(Math.max(...this.sizes.map((s) => s.key)));
  }

  /** Empty tables for every map: `counted` for the wanted union, not for the side table of other kernel entries. */
  private emptyTables(counted: boolean): Record<MapName, EntryTable> {
    return perMap0((m) => {
      const { key, value } = this.sizes[MAP_INDEX[m]]!;
      // A Maglev table's value is 64 KiB: an empty table starts with room for 4 of them, not 16.
      const t = new EntryTable(key, value, value > 4096 ? 4 : 16, counted);
      if (counted) t.spill = this.actual[m];
      return t;
    });
  }

  /** Entries the kernel holds in map m. */
  private kernelSize(m: MapName): number {
    return (this.wanted?.[m].heldCount ?? 0) + this.actual[m].size;
  }

  /** True when the kernel holds the key of wanted entry w (held, or with another value). */
  private kernelHas(m: MapName, w: number): boolean {
    const W = this.wanted![m];
    return W.held[w] === 1 || this.actual[m].findOf(W, w) >= 0;
  }

  /** Calls f(table, i) for every entry the kernel holds in map m (held wanted entries and the others). */
  private eachKernelEntry(m: MapName, f: (t: EntryTable, i: number) => void): void {
    const W = this.wanted?.[m];
    if (W) for (let i = 0; i < W.top; i++) if (W.held[i] === 1) f(W, i);
    const A = this.actual[m];
    for (let i = 0; i < A.top; i++) if (A.isUsed(i)) f(A, i);
  }

  /** Rebuilds the mirror and the id tables from what the kernel holds (start-up, full syncs, after errors). */
  async restore(): Promise<void> {
    this.emptySinceRestore = false;
    const actual = this.emptyTables(false);
    for (const m of MAPS) {
      const e = await this.maps[m].entriesAsync();
      const { key, value } = this.sizes[MAP_INDEX[m]]!;
      actual[m] = EntryTable.fromDump(key, value, e.keys, e.values, e.count, false);
      await yieldToLoop();
    }
    this.actual = actual;
    this.ids = newIds();
    const be = actual.backends;
    for (let i = 0; i < be.top; i++) {
      if (!be.isUsed(i)) continue;
      const v = i * be.valueSize;
      this.ids.backends.restore(
        nameOf(
          be.values,
          v + BACKEND_ADDRESS,
          be.values.readUInt16BE(v + BACKEND_PORT),
          be.values[v + BACKEND_PROTO]!,
          backendName,
        ),
        idOf(be, i),
      );
    }
    const be6 = actual.backends6;
    for (let i = 0; i < be6.top; i++) {
      if (!be6.isUsed(i)) continue;
      const v = i * be6.valueSize;
      this.ids.backends.restore(
        ipv6Name(
          be6.values.toString("hex", v + BACKEND6_ADDRESS, v + BACKEND6_ADDRESS + 16),
          be6.values.readUInt16BE(v + BACKEND6_PORT),
          be6.values[v + BACKEND6_PROTO]!,
        ),
        idOf(be6, i),
      );
    }
    const svc = actual.services;
    for (let i = 0; i < svc.top; i++) {
      if (!svc.isUsed(i) || !isMaster(svc, i)) continue; // a slot: only masters name rev-NAT ids
      const k = i * svc.keySize;
      this.ids.revNat.restore(
        nameOf(svc.keys, k + KEY_ADDRESS, svc.keys.readUInt16BE(k + KEY_PORT), svc.keys[k + KEY_PROTO]!, frontendName),
        u32(svc.values, i * svc.valueSize + VALUE_REVNAT),
      );
    }
    const svc6 = actual.services6;
    for (let i = 0; i < svc6.top; i++) {
      if (!svc6.isUsed(i) || !isMasterIn("services6", svc6, i)) continue;
      const k = i * svc6.keySize;
      this.ids.revNat.restore(
        ipv6Name(
          svc6.keys.toString("hex", k + KEY6_ADDRESS, k + KEY6_ADDRESS + 16),
          svc6.keys.readUInt16BE(k + KEY6_PORT),
          svc6.keys[k + KEY6_PROTO]!,
        ),
        u32(svc6.values, i * svc6.valueSize + VALUE_REVNAT),
      );
    }
    // Frontend ids whose master is gone but whose rev-NAT or metadata entry survived (an interrupted pass; an
    // IPv6 frontend has metadata only) stay reserved.
    for (const t of [actual.revNat, actual.svcMeta]) {
      for (let i = 0; i < t.top; i++) {
        if (!t.isUsed(i)) continue;
        const id = idOf(t, i);
        if (!this.ids.revNat.isTaken(id)) this.ids.revNat.restore(`orphan:${id}`, id);
      }
    }
    // The next pass compares everything.
    this.wanted = undefined;
    this.services.clear();
    this.lists.clear();
    this.withSkipped.clear();
    this.heldBack.clear();
    for (const m of MAPS) this.pending[m].clear();
    this.emptySinceRestore = MAPS.every((m) => actual[m].size === 0);
  }

  /**
   * restore(), unless the last one found the maps empty and nothing was applied since (the first full sync
   * after a start with fresh pins): this process alone writes its pins, so they are still empty.
   */
  async restoreUnlessEmpty(): Promise<boolean> {
    if (this.emptySinceRestore) return false;
    await this.restore();
    return true;
  }

  /** Current mirror as latin1 maps (what the kernel holds as far as this reconciler knows). Builds them: tests, debugging. */
  get contents(): LbContents {
    return perMap0((m) => {
      const out = new Map<string, string>();
      this.eachKernelEntry(m, (t, i) => out.set(t.keyString(i), t.valueString(i)));
      return out;
    });
  }

  /**
   * Kernel entries the reconciler keeps apart from its wanted tables (keys nothing wants, other values than the
   * wanted ones, a restart's dump until it is matched): 0 once the kernel holds what is wanted.
   */
  otherKernelEntries(): number {
    return MAPS.reduce((n, m) => n + this.actual[m].size, 0);
  }

  /** Entries of each map the kernel holds (as far as this reconciler knows). */
  entryCounts(): Record<MapName, number> {
    return perMap0((m) => this.kernelSize(m));
  }

  /** Entries each wanted table has room for before it grows (0 before the first full pass). */
  tableRoom(): Record<MapName, number> {
    return perMap0((m) => this.wanted?.[m].capacity ?? 0);
  }

  /**
   * Every backend held, IPv4 and IPv6, as its value with the flags byte zeroed (latin1): address, port and
   * protocol, in the backend's own codec size (8 or 20 bytes), as the socket terminator takes them.
   */
  backendAddresses(): Set<string> {
    const out = new Set<string>();
    for (const m of BACKEND_MAPS)
      this.eachKernelEntry(m, (be, i) => {
        const n = be.valueSize - 1; // the flags byte is last (abi.ts backend, backend6)
        out.add(be.values.toString("latin1", i * be.valueSize, i * be.valueSize + n) + "\0");
      });
    return out;
  }

  /** "revNatId/backendId" of every backend slot held (of one protocol's frontends when `proto` is given). */
  servingPairs(proto?: number): Set<string> {
    const out = new Set<string>();
    for (const m of SERVICE_MAPS)
      this.eachKernelEntry(m, (svc, i) => {
        const p = slotPair(m, svc, i, proto);
        if (p !== undefined) out.add(p);
      });
    return out;
  }

  /** The rev-NAT id of a frontend ("address:port/proto", frontendName), once one is allocated. */
  revNatIdOf(name: IdName): number | undefined {
    return this.ids.revNat.get(name);
  }

  /** UDP "revNatId/backendId" pairs of one Service's slots in the wanted tables. */
  private udpPairs(st: ServiceState): Set<string> {
    const out = new Set<string>();
    if (!st.udp) return out;
    for (const e of this.lists.of(st)) {
      const m = MAPS[e >>> ENTRY_BITS];
      if (m !== "services" && m !== "services6") continue;
      const p = slotPair(m, this.wanted![m], e & ENTRY_MASK, IPPROTO_UDP);
      if (p !== undefined) out.add(p);
    }
    return out;
  }

  /**
   * Makes the maps hold the model. Incremental unless `full` (or nothing was applied since the last
   * restore): then every key is compared. `changed`: the only Services whose frontends may differ from
   * the model this reconciler applied last (the model's delta); without it every Service is compared by
   * identity.
   */
  async apply(
    model: NodeModel,
    opts: {
      full?: boolean;
      changed?: ReadonlySet<string>;
      /**
       * Called once the Services are encoded and before anything is written, with the pre-filter bits of every
       * Service encoded in this pass (undefined: no encoding any more) — the pre-filter covers new entries
       * before they land. `complete`: a full pass, which names every Service that has an encoding.
       */
      beforeWrite?: (bits: ReadonlyMap<string, ServiceBits | undefined>, complete: boolean) => Promise<unknown>;
    } = {},
  ): Promise<ApplyStats> {
    const full = opts.full || this.wanted === undefined;
    /** Pre-filter bits of the Services this pass encoded or dropped. */
    const bitChanges = new Map<string, ServiceBits | undefined>();
    this.emptySinceRestore = false;
    const candidates: Record<MapName, Set<string>> = perMap(() => new Set<string>());
    // Which Services changed: new, gone, or their frontends are not the very same objects as last time.
    const groups = serviceGroups(model);
    if (full) {
      const before = perMap0((m) => this.kernelSize(m));
      // The new tables hold nothing the kernel has yet: the old ones' held entries join the other kernel entries.
      if (this.wanted) for (const m of MAPS) this.wanted[m].unholdAll();
      this.wanted = this.emptyTables(true);
      // Sized once for what the model needs (an upper bound: shared keys are counted per frontend), so the
      // tables do not grow and re-index step by step while a full sync fills them. With an eighth more room:
      // a change adds its new keys before it drops the old ones, and a table filled to the last entry doubled
      // (copied whole: 22 ms for 300,000 backends) at the first change after the sync.
      const need = expectedEntries(groups);
      for (const m of MAPS) {
        const n = Math.max(before[m], need[m]);
        this.wanted[m].reserve(n + (n >> 3));
      }
      this.services.clear();
      // With an eighth more room: the changes after a full sync add lists before the first compaction.
      const all = MAPS.reduce((n, m) => n + need[m], 0);
      this.lists.clear(all + (all >> 3));
      this.withSkipped.clear();
      // Every key is compared (write() walks wanted and actual directly; no candidate sets).
      for (const m of MAPS) this.pending[m].clear();
    }
    const wanted = this.wanted!;
    for (const m of MAPS) for (const k of this.pending[m]) candidates[m].add(k);

    const visit = !full && opts.changed ? opts.changed : undefined;
    let encoded = 0;
    let servicesEncoded = 0;
    let sinceYield = 0;
    const lostServing = new Set<string>();
    /** Frontends of Services whose new encoding threw (kept as they were; tried again when they change). */
    const notEncoded: ApplyStats["skipped"] = [];
    const lose = (before: Set<string>, after: Set<string>): void => {
      for (const p of before) if (!after.has(p)) lostServing.add(p);
    };
    const none = new Set<string>();
    for (const [name, st] of visit ? [...visit].map((n) => [n, this.services.get(n)] as const) : this.services) {
      if (!st || groups.has(name)) continue;
      const before = this.udpPairs(st);
      this.unref(st, candidates);
      this.services.delete(name);
      this.withSkipped.delete(name);
      this.heldBack.delete(name);
      lose(before, none);
      bitChanges.set(name, undefined);
    }
    const sink = this.sink;
    const tables = MAPS.map((m) => wanted[m]);
    for (const [name, g] of visit ? [...visit].map((n) => [n, groups.get(n)] as const) : groups) {
      if (!g) continue;
      const prev = this.services.get(name);
      if (prev && g.sameAs(prev.record)) continue;
      // Encoded whole before the old encoding is released: an encoding that throws (a field the map layout
      // cannot hold) is rolled back and leaves the Service as it was, and a later pass cannot release the
      // old encoding twice. The UDP pairs are read before the encoding overwrites the slots both encodings have.
      const before = prev ? this.udpPairs(prev) : none;
      const stamp = (this.stamp = (this.stamp + 1) >>> 0 || 1);
      sink.begin(tables, stamp);
      const skipped: ApplyStats["skipped"] = [];
      let udp = false;
      try {
        const reasons = encodeRecord(g, this.ids, sink);
        for (let i = 0; i < g.size; i++) {
          if (g.protocol(i) === "UDP") udp = true;
          const reason = reasons[i];
          if (reason)
            skipped.push({ service: g.service, address: g.address(i), port: g.port(i), protocol: g.protocol(i), reason });
        }
      } catch (err) {
        sink.rollback();
        const reason = `cannot be encoded for the BPF maps: ${(err as Error).message}`;
        for (let i = 0; i < g.size; i++)
          notEncoded.push({ service: g.service, address: g.address(i), port: g.port(i), protocol: g.protocol(i), reason });
        if (prev) this.heldBack.set(name, "encoding");
        continue;
      }
      const n = sink.n;
      if (!full)
        for (let j = 0; j < n; j++) {
          const e = sink.list[j]!;
          candidates[MAPS[e >>> ENTRY_BITS]!].add(tables[e >>> ENTRY_BITS]!.keyString(e & ENTRY_MASK));
        }
      if (prev) this.unref(prev, candidates);
      const bits = sink.bits.take();
      bitChanges.set(name, bits);
      // The pre-filter keeps the bits (Prefilter.before); no empty list kept per Service.
      const st: ServiceState = { record: g, at: 0, n, udp, skipped: skipped.length ? skipped : NONE_SKIPPED };
      // Before prev's range is let go: growing the lists moves every range still in the map, prev's too.
      st.at = this.lists.add(sink.list, n, this.services);
      encoded += n;
      this.services.set(name, st);
      this.heldBack.delete(name);
      if (skipped.length) this.withSkipped.add(name);
      else this.withSkipped.delete(name);
      if (prev) lose(before, this.udpPairs(st));
      servicesEncoded++;
      sinceYield += g.size;
      if (sinceYield >= this.yieldEvery) {
        sinceYield = 0;
        await yieldToLoop();
      }
    }

    try {
      // A failure here leaves encoded Services unwritten: the restore below makes the next pass compare everything.
      await opts.beforeWrite?.(bitChanges, full);
      const res = await this.write(full ? undefined : candidates);
      // Refused for room: retried (and reported again while refused) on every pass, so one not named now is whole.
      const refused = new Set(res.notProgrammed?.map((n) => n.service));
      for (const [name, why] of this.heldBack) if (why === "room" && !refused.has(name)) this.heldBack.delete(name);
      for (const name of refused) this.heldBack.set(name, "room");
      const skipped = [...[...this.withSkipped].flatMap((n) => this.services.get(n)!.skipped), ...notEncoded];
      return { ...res, skipped, encoded, servicesEncoded, lostServing, heldBack: new Set(this.heldBack.keys()) };
    } catch (err) {
      await this.restore();
      throw err;
    }
  }

  /** Drops one reference per entry of a Service; an entry no Service wants any more leaves the wanted tables. */
  private unref(st: ServiceState, candidates: Record<MapName, Set<string>>): void {
    const wanted = this.wanted!;
    for (const e of this.lists.of(st)) {
      const m = MAPS[e >>> ENTRY_BITS]!;
      const t = wanted[m];
      const i = e & ENTRY_MASK;
      candidates[m].add(t.keyString(i));
      if (--t.refs[i]! === 0) t.remove(i);
    }
  }

  /** Plans and performs the writes for the candidate keys (undefined: every key wanted or held). */
  private async write(candidates: Record<MapName, Set<string>> | undefined): Promise<Omit<ApplyStats, "skipped">> {
    const wanted = this.wanted!;
    /** Entries of the mirror to delete. */
    const deletes: Record<MapName, number[]> = perMap(() => []);
    /** Entries of the wanted tables to write, and whether the kernel holds their key (with another value). */
    const upserts: Record<MapName, number[]> = perMap(() => []);
    const existing: Record<MapName, number[]> = perMap(() => []);
    let n = 0;
    for (const m of MAPS) {
      const want = wanted[m];
      const actual = this.actual[m];
      const compareWanted = (w: number): void => {
        if (want.held[w] === 1) return;
        const a = actual.findOf(want, w);
        if (a >= 0 && want.sameValue(w, actual, a)) {
          // The kernel has this value already (after a restart, or an encoding undone): held from now on.
          actual.remove(a);
          want.markHeld(w);
          return;
        }
        upserts[m].push(w);
        existing[m].push(a);
      };
      if (candidates) {
        for (const k of candidates[m]) {
          if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
          const key = keyBytes(this.scratch, k);
          const w = want.find(key);
          if (w >= 0) compareWanted(w);
          else {
            const a = actual.find(key);
            if (a >= 0) deletes[m].push(a);
            else this.releaseId(m, key);
          }
        }
        continue;
      }
      // Every key: the wanted ones, then the other kernel entries nothing wants.
      for (let w = 0; w < want.top; w++) {
        if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
        if (want.isUsed(w)) compareWanted(w);
      }
      for (let a = 0; a < actual.top; a++) {
        if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
        if (actual.isUsed(a) && want.findOf(actual, a) < 0) deletes[m].push(a);
      }
    }

    // Upserts and deletes name entries of `actual` (a held entry is never written or deleted): indices into it
    // stay valid until the end of this pass (upsert() only removes entries from it, writeMapFull() adds last).
    const A = this.actual;
    const W = wanted;
    // Masters whose count shrinks are lowered before their stale slots go (in place: no room needed).
    const shrinking = { services: [] as number[], services6: [] as number[] };
    // Backends a slot in the kernel still names until its rewrite: deleted last (one id space, both families).
    const namedBySlots = new Set<number>();
    for (const sm of SERVICE_MAPS) {
      upserts[sm].forEach((w, j) => {
        const a = existing[sm][j]!;
        if (a < 0) return;
        if (!isMasterIn(sm, W[sm], w)) namedBySlots.add(backendOf(A[sm], a));
        else if (countOf(W[sm], w) < countOf(A[sm], a)) shrinking[sm].push(w);
      });
    }
    const shrinkingSet = { services: new Set(shrinking.services), services6: new Set(shrinking.services6) };
    // A Maglev table in the kernel names backends too: a pick-up between a backend's delete and its table's
    // rewrite would find no backend (issue 16 item 6).
    for (const a of existing.maglev) if (a >= 0) tableBackends(A.maglev, a, namedBySlots);
    const earlyBackendDeletes = perMap0((m) =>
      BACKEND_MAPS.includes(m) ? deletes[m].filter((a) => !namedBySlots.has(idOf(A[m], a))) : [],
    );
    const lateBackendDeletes = perMap0((m) =>
      BACKEND_MAPS.includes(m) ? deletes[m].filter((a) => namedBySlots.has(idOf(A[m], a))) : [],
    );

    // Admission per Service: new keys must fit the room left after the removals.
    const room = perMap0(
      (m) =>
        this.maps[m].info.maxEntries -
        (this.kernelSize(m) - (BACKEND_MAPS.includes(m) ? earlyBackendDeletes[m].length : deletes[m].length)),
    );
    const added = (m: MapName) => existing[m].reduce((c, a) => c + (a < 0 ? 1 : 0), 0);
    // Per-Service accounting only when the new keys together do not fit (a full sync usually fits whole).
    const fitsWhole = MAPS.every((m) => added(m) <= room[m]);
    const notProgrammed: NotProgrammed[] = [];
    const admittedKeys = fitsWhole ? undefined : this.admit(upserts, existing, room, notProgrammed);
    /** Admission is per key: a key is written when any admitted Service wants it (keys can be shared). */
    const admitted = (m: MapName) => (w: number) => !admittedKeys || admittedKeys[m].has(w);

    let nUp = 0;
    let nDel = 0;
    const up = async (m: MapName, list: number[]) => {
      nUp += list.length;
      await this.upsert(m, list);
    };
    const del = async (m: MapName, list: number[]) => {
      nDel += list.length;
      await this.remove(m, list);
    };
    // Removals (and lowered counts) first.
    for (const sm of SERVICE_MAPS) await del(sm, deletes[sm].filter((a) => isMasterIn(sm, A[sm], a)));
    for (const sm of SERVICE_MAPS) await up(sm, shrinking[sm]);
    for (const sm of SERVICE_MAPS) await del(sm, deletes[sm].filter((a) => !isMasterIn(sm, A[sm], a)));
    // A Maglev table or affinity member only matters while a master names it: a missing table falls back
    // to a random slot, a missing member to a new choice.
    await del("maglev", deletes.maglev);
    await del("affinityMatch", deletes.affinityMatch);
    await del("revNat", deletes.revNat);
    await del("svcMeta", deletes.svcMeta);
    for (const bm of BACKEND_MAPS) await del(bm, earlyBackendDeletes[bm]);
    // Then the admitted Services, make-before-break.
    for (const bm of BACKEND_MAPS) await up(bm, upserts[bm].filter(admitted(bm)));
    await up("revNat", upserts.revNat.filter(admitted("revNat")));
    await up("svcMeta", upserts.svcMeta.filter(admitted("svcMeta")));
    for (const sm of SERVICE_MAPS)
      await up(
        sm,
        upserts[sm].filter((w) => admitted(sm)(w) && !isMasterIn(sm, W[sm], w)),
      );
    await up("maglev", upserts.maglev.filter(admitted("maglev")));
    await up("affinityMatch", upserts.affinityMatch.filter(admitted("affinityMatch")));
    for (const sm of SERVICE_MAPS)
      await up(
        sm,
        upserts[sm].filter((w) => admitted(sm)(w) && isMasterIn(sm, W[sm], w) && !shrinkingSet[sm].has(w)),
      );
    // A slot of a Service left out still names its old backend: that backend stays.
    const stillNamed = new Set<number>();
    for (const sm of SERVICE_MAPS)
      upserts[sm].forEach((w, j) => {
        const a = existing[sm][j]!;
        if (!admitted(sm)(w) && a >= 0 && !isMasterIn(sm, A[sm], a)) stillNamed.add(backendOf(A[sm], a));
      });
    upserts.maglev.forEach((w, j) => {
      const a = existing.maglev[j]!;
      if (!admitted("maglev")(w) && a >= 0) tableBackends(A.maglev, a, stillNamed);
    });
    // What was left out is compared again on the next pass (every pending key was a candidate now).
    for (const m of MAPS)
      this.pending[m] = new Set(upserts[m].filter((w) => !admitted(m)(w)).map((w) => W[m].keyString(w)));
    for (const bm of BACKEND_MAPS) {
      for (const a of lateBackendDeletes[bm])
        if (stillNamed.has(idOf(A[bm], a))) this.pending[bm].add(A[bm].keyString(a));
      await del(
        bm,
        lateBackendDeletes[bm].filter((a) => !stillNamed.has(idOf(A[bm], a))),
      );
    }
    nUp += await this.writeMapFull(notProgrammed);
    // A restart's dump, once every entry of it is matched or deleted, gives its room back.
    for (const m of MAPS)
      if (this.actual[m].size === 0 && this.actual[m].top > 1024) {
        this.actual[m] = new EntryTable(this.sizes[MAP_INDEX[m]]!.key, this.sizes[MAP_INDEX[m]]!.value, 4, false);
        W[m].spill = this.actual[m];
      }
    return { upserts: nUp, deletes: nDel, notProgrammed };
  }

  /**
   * Which of the entries to write fit, decided per Service in name order: a Service is admitted when the new
   * keys it wants that no Service admitted before it already brought fit the room left; every key it wants is
   * then written. So a key shared by an admitted and a refused Service (a backend, say) is written for the
   * admitted one and charged once. Walks every Service's entries: only when the new keys together do not fit.
   */
  private admit(
    upserts: Record<MapName, number[]>,
    existing: Record<MapName, number[]>,
    room: Record<MapName, number>,
    notProgrammed: NotProgrammed[],
  ): Record<MapName, Set<number>> {
    const isNew = perMap(() => new Set<number>());
    const toWrite = perMap(() => new Set<number>());
    for (const m of MAPS) {
      upserts[m].forEach((w, j) => {
        toWrite[m].add(w);
        if (existing[m][j]! < 0) isNew[m].add(w);
      });
    }
    const admittedKeys = perMap(() => new Set<number>());
    const names = [...this.services.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const entries = this.lists.of(this.services.get(name)!);
      const need = perMap(() => 0);
      let wants = false;
      for (const e of entries) {
        const m = MAPS[e >>> ENTRY_BITS]!;
        const w = e & ENTRY_MASK;
        if (!toWrite[m].has(w)) continue;
        wants = true;
        if (isNew[m].has(w) && !admittedKeys[m].has(w)) need[m]++;
      }
      if (!wants) continue;
      const full = MAPS.filter((m) => need[m] > room[m]);
      if (full.length) {
        notProgrammed.push({
          service: name,
          maps: full.map((m) => mapLabel(this.maps[m])),
          needed: Object.fromEntries(full.map((m) => [mapLabel(this.maps[m]), need[m]])),
        });
        continue;
      }
      for (const m of MAPS) room[m] -= need[m];
      for (const e of entries) {
        const m = MAPS[e >>> ENTRY_BITS]!;
        const w = e & ENTRY_MASK;
        if (toWrite[m].has(w)) admittedKeys[m].add(w);
      }
    }
    return admittedKeys;
  }

  /**
   * A new Service refused for room gets its frontends anyway, with no backends and BPX_SVC_F_MAP_FULL: its
   * packets are rejected and reported as reject_map_full (bpf/lib/datapath.h) instead of falling through
   * to the stack (docs/observability.md). Its masters (count 0) and metadata only, when the services and
   * metadata maps have room; a Service the kernel already holds keeps its old entries. The mirror records
   * what was written, so the next pass replaces the masters once the Service fits, and removes them with it.
   */
  private async writeMapFull(refused: readonly NotProgrammed[]): Promise<number> {
    if (!refused.length) return 0;
    const W = this.wanted!;
    const A = this.actual;
    let written = 0;
    for (const { service } of refused) {
      const st = this.services.get(service);
      if (!st) continue;
      const masters = { services: [] as number[], services6: [] as number[] };
      const metas: number[] = [];
      for (const e of this.lists.of(st)) {
        const m = MAPS[e >>> ENTRY_BITS]!;
        const w = e & ENTRY_MASK;
        if ((m === "services" || m === "services6") && isMasterIn(m, W[m], w)) masters[m].push(w);
        else if (m === "svcMeta") metas.push(w);
      }
      // Held already (an older encoding is serving): left as it is.
      if (SERVICE_MAPS.some((sm) => masters[sm].some((w) => this.kernelHas(sm, w)))) continue;
      const newMetas = metas.filter((w) => !this.kernelHas("svcMeta", w));
      if (
        !(masters.services.length + masters.services6.length) ||
        SERVICE_MAPS.some((sm) => this.kernelSize(sm) + masters[sm].length > this.maps[sm].info.maxEntries) ||
        this.kernelSize("svcMeta") + newMetas.length > this.maps.svcMeta.info.maxEntries
      )
        continue;
      await this.upsert("svcMeta", newMetas);
      for (const sm of SERVICE_MAPS) {
        const list = masters[sm];
        if (!list.length) continue;
        const ks = W[sm].keySize;
        const vs = W[sm].valueSize;
        const keys = Buffer.alloc(list.length * ks);
        const values = Buffer.alloc(list.length * vs);
        list.forEach((w, j) => {
          copyBytes(W[sm].keys, w * ks, keys, j * ks, ks);
          const revNatId = u32(W[sm].values, w * vs + VALUE_REVNAT);
          svcValue
            .encode({ backendId: 0, revNatId, count: 0, flags: SVC_F_MAP_FULL, affinityTimeout: 0 })
            .copy(values, j * vs);
        });
        await updateBatch(this.maps[sm], keys, values, list.length);
        A[sm].reserve(A[sm].size + list.length);
        list.forEach((w, j) => A[sm].setValue(A[sm].put(W[sm], w), values, j * vs));
        written += list.length;
      }
      written += newMetas.length;
    }
    return written;
  }

  /** An id whose entry is not in the kernel and no Service wants is free again (its traffic slot too). */
  private releaseId(m: MapName, key: Buffer): void {
    if (m === "backends" || m === "backends6") {
      this.ids.backends.releaseId(u32(key, 0));
      this.onIdReleased?.("backend", u32(key, 0), m === "backends6" ? 6 : 4);
    } else if (m === "revNat" && this.wanted!.svcMeta.find(key) < 0) {
      this.ids.revNat.releaseId(u32(key, 0));
      this.onIdReleased?.("frontend", u32(key, 0));
    } else if (
      // An IPv6 frontend's id has metadata only: free once that is gone (an IPv4 one's went with its rev-NAT entry).
      m === "svcMeta" &&
      this.ids.revNat.isTaken(u32(key, 0)) &&
      this.wanted!.revNat.find(key) < 0 && // not wanted, so not held either
      this.actual.revNat.find(key) < 0
    ) {
      this.ids.revNat.releaseId(u32(key, 0));
      this.onIdReleased?.("frontend", u32(key, 0));
    }
  }

  /** Writes entries of the wanted table in chunks, yielding between them: a 150,000-entry phase must not hold the loop. */
  private async upsert(map: MapName, list: readonly number[]): Promise<void> {
    const m = this.maps[map];
    const W = this.wanted![map];
    const A = this.actual[map];
    const ks = W.keySize;
    const vs = W.valueSize;
    for (let at = 0; at < list.length; at += YIELD_ENTRIES) {
      const chunk = list.slice(at, at + YIELD_ENTRIES);
      const first = chunk[0]!;
      let keys: Buffer;
      let values: Buffer;
      if (chunk[chunk.length - 1]! - first === chunk.length - 1) {
        // Entries first..first+n-1 (a full sync from empty maps writes every wanted entry in order): the
        // table's own bytes are the batch, no copy. Nothing changes the wanted tables while write() runs.
        keys = W.keys.subarray(first * ks, (first + chunk.length) * ks);
        values = W.values.subarray(first * vs, (first + chunk.length) * vs);
      } else {
        keys = Buffer.allocUnsafe(chunk.length * ks);
        values = Buffer.allocUnsafe(chunk.length * vs);
        for (let j = 0; j < chunk.length; j++) {
          const w = chunk[j]!;
          copyBytes(W.keys, w * ks, keys, j * ks, ks);
          copyBytes(W.values, w * vs, values, j * vs, vs);
        }
      }
      await updateBatch(m, keys, values, chunk.length);
      // The kernel holds these values now: marked held, and whatever else it held for the keys is forgotten.
      for (const w of chunk) {
        if (A.size > 0) {
          const a = A.findOf(W, w);
          if (a >= 0) A.remove(a);
        }
        W.markHeld(w);
      }
    }
  }

  /** Deletes entries of `actual` (never held ones: a wanted key is written, not deleted) from the kernel. */
  private async remove(map: MapName, list: readonly number[]): Promise<void> {
    const A = this.actual[map];
    const ks = A.keySize;
    for (let at = 0; at < list.length; at += YIELD_ENTRIES) {
      const chunk = list.slice(at, at + YIELD_ENTRIES);
      const keys = Buffer.allocUnsafe(chunk.length * ks);
      chunk.forEach((a, j) => copyBytes(A.keys, a * ks, keys, j * ks, ks));
      await deleteBatch(this.maps[map], keys, chunk.length);
      chunk.forEach((a, j) => {
        A.remove(a);
        this.releaseId(map, keys.subarray(j * ks, (j + 1) * ks));
      });
    }
  }
}

/** Entries each map needs at most for these Services (shared keys, e.g. backends, counted per frontend). */
function expectedEntries(groups: ReadonlyMap<string, ServiceRecord>): Record<MapName, number> {
  const n = perMap(() => 0);
  for (const g of groups.values()) {
    for (let i = 0; i < g.size; i++) {
      const b = g.backendCount(i);
      if (!g.addressIsIPv4(i)) {
        n.services6 += 1 + b;
        n.backends6 += b;
        n.svcMeta++;
        if (g.sessionAffinity(i).type === "ClientIP") n.affinityMatch += b;
        if (g.algorithm(i) === "maglev" && b > 0) n.maglev++;
        continue;
      }
      n.services += 1 + b;
      n.backends += b + g.retainedCount(i);
      n.revNat++;
      n.svcMeta++;
      if (g.sessionAffinity(i).type === "ClientIP") n.affinityMatch += b;
      if (g.algorithm(i) === "maglev" && b > 0) n.maglev++;
    }
  }
  return n;
}

/** One value per map, computed from the map's name. */
function perMap0<T>(make: (m: MapName) => T): Record<MapName, T> {
  return {
    services: make("services"),
    backends: make("backends"),
    revNat: make("revNat"),
    svcMeta: make("svcMeta"),
    maglev: make("maglev"),
    affinityMatch: make("affinityMatch"),
    services6: make("services6"),
    backends6: make("backends6"),
  };
}

/** The id name of (address bytes at off, port, proto), as desired.ts names them. */
function nameOf(
  buf: Buffer,
  off: number,
  port: number,
  proto: number,
  name: (address: string, port: number, proto: number) => IdName,
): IdName {
  const address = `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
  return name(address, port, proto);
}

function mapLabel(m: MapHandle): string {
  return m.info.name;
}
