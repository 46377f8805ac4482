// The pre-filter bitmap (bpf/lib/prefilter.h): one bit per frontend (address, port, proto) — a NodePort
// once per address NodePorts are served on — and per backend (address, port, proto). The BPF programs skip
// every conntrack, NAT and service lookup for a packet whose destination and source both miss it, so the
// bitmap must always cover what the service and backend maps hold: bits are set before a sync writes its
// entries and cleared only after it removed them. The bits are taken from the entries themselves, in kernel
// layout, while the reconciler encodes a Service (ServiceBits; no second walk of the model, no address
// parsed again), and per-bit reference counts let a sync touch only the Services it re-encoded.
// IPv6 has a bitmap of its own (bpf/lib/prefilter6.h, bpx_prefilter6_v1, 2^20 bits): the same Prefilter on
// ServiceBits.bits6, the bits of the IPv6 entries (bpx_svc6_v1 masters, bpx_backend6_v1 values).
import type { MapHandle } from "../../native/index.js";
import { backend, backend6, svc6Key, svcKey } from "./abi.js";
import { ipv4ToNumber } from "../../k8s/ip.js";
import { ipv6ToBytes } from "../../k8s/ip.js";
import { updateBatch } from "./batch.js";

const le32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
const le16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);

export const PREFILTER_BITS_LOG2 = 22;
export const PREFILTER_WORDS = 1 << (PREFILTER_BITS_LOG2 - 6);
/** Index of the slot after the bitmap: nonzero once a complete bitmap is written. */
export const PREFILTER_READY_SLOT = PREFILTER_WORDS;

/** The bit of (address, port, proto): prefilter_bit() in bpf/lib/prefilter.h, on the same bytes. */
export function prefilterBit(address: string, port: number, proto: number): number {
  const n = ipv4ToNumber(address);
  // The address and port as the BPF program reads their network-order bytes into little-endian integers.
  const le = ((n >>> 24) | ((n >>> 8) & 0xff00) | ((n & 0xff00) << 8) | ((n & 0xff) << 24)) >>> 0;
  return prefilterBitLE(le, ((port >>> 8) | ((port & 0xff) << 8)) >>> 0, proto);
}

/** IPv6's bitmap (bpf/lib/prefilter6.h). */
export const PREFILTER6_BITS_LOG2 = 20;

/** The bit of an IPv6 (address, port, proto): prefilter6_bit() in bpf/lib/prefilter6.h, on the same bytes. */
export function prefilter6Bit(address: string, port: number, proto: number): number {
  const b = ipv6ToBytes(address);
  return prefilter6BitLE(le32(b, 0), le32(b, 4), le32(b, 8), le32(b, 12), le16(Buffer.from([port >>> 8, port & 0xff]), 0), proto);
}

/** prefilter6_bit() of the address's four groups and the port as little-endian reads of their bytes. */
function prefilter6BitLE(a0: number, a1: number, a2: number, a3: number, portLE: number, proto: number): number {
  let h = Math.imul(a0, 0x9e3779b1) >>> 0;
  h = (h ^ Math.imul(a1, 0x85ebca77)) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = (h ^ Math.imul(a2, 0xc2b2ae3d)) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = (h ^ Math.imul(a3, 0x27d4eb2f)) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = (h ^ Math.imul(((portLE << 8) | proto) >>> 0, 0x165667b1)) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0xc2b2ae3d) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  return h >>> (32 - PREFILTER6_BITS_LOG2);
}

/** prefilter_bit() of the address and port as little-endian reads of their network-order bytes. */
function prefilterBitLE(addressLE: number, portLE: number, proto: number): number {
  let h = Math.imul(addressLE, 0x9e3779b1) >>> 0;
  h = (h ^ Math.imul(((portLE << 8) | proto) >>> 0, 0x85ebca77)) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0xc2b2ae3d) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  return h >>> (32 - PREFILTER_BITS_LOG2);
}

const offsetOf = (layout: readonly { c: string; offset: number }[], c: string) => layout.find((m) => m.c === c)!.offset;
const KEY_ADDRESS = offsetOf(svcKey.layout, "address");
const KEY_PORT = offsetOf(svcKey.layout, "port");
const KEY_PROTO = offsetOf(svcKey.layout, "proto");
const KEY_SLOT = offsetOf(svcKey.layout, "slot");
const BACKEND_ADDRESS = offsetOf(backend.layout, "address");
const BACKEND_PORT = offsetOf(backend.layout, "port");
const BACKEND_PROTO = offsetOf(backend.layout, "proto");
const KEY6_ADDRESS = offsetOf(svc6Key.layout, "address");
const KEY6_PORT = offsetOf(svc6Key.layout, "port");
const KEY6_PROTO = offsetOf(svc6Key.layout, "proto");
const KEY6_SLOT = offsetOf(svc6Key.layout, "slot");
const BACKEND6_ADDRESS = offsetOf(backend6.layout, "address");
const BACKEND6_PORT = offsetOf(backend6.layout, "port");
const BACKEND6_PROTO = offsetOf(backend6.layout, "proto");

/**
 * What one Service's encoding needs covered, packed in one Int32Array (one small array per Service, no object:
 * the pre-filter keeps one per Service): [nBits, nNodePorts, bits…, nodePorts…, bits6…].
 * - bits: of every master with an address and of every backend (duplicates allowed: counted and uncounted alike);
 * - nodePorts: port << 8 | proto of every wildcard master (a NodePort): one bit per address NodePorts are served on;
 * - bits6: IPv6's bitmap, of every IPv6 master and backend (IPv6 NodePorts are keyed by address).
 */
export type ServiceBits = Int32Array;
const HEAD = 2;
/** The IPv4 bits of a ServiceBits (a view). */
export const bitsOf = (b: ServiceBits): Int32Array => b.subarray(HEAD, HEAD + b[0]!);
/** The NodePorts (port << 8 | proto) of a ServiceBits (a view). */
export const nodePortsOf = (b: ServiceBits): Int32Array => b.subarray(HEAD + b[0]!, HEAD + b[0]! + b[1]!);
/** The IPv6 bits of a ServiceBits (a view). */
export const bits6Of = (b: ServiceBits): Int32Array => b.subarray(HEAD + b[0]! + b[1]!);

/**
 * Collects a Service's ServiceBits from its map entries as the encoder puts them (service-map keys and
 * backend values, kernel layout). One collector, reused: take() copies what it gathered.
 */
export class BitCollector {
  private bits = new Int32Array(256);
  private n = 0;
  private nodePorts: number[] = [];
  private bits6: number[] = [];

  reset(): void {
    this.n = 0;
    this.nodePorts.length = 0;
    this.bits6.length = 0;
  }

  /** An IPv6 service-map entry (bpx_svc6_v1): its master names a frontend. */
  service6(key: Uint8Array): void {
    if (key[KEY6_SLOT] !== 0 || key[KEY6_SLOT + 1] !== 0) return;
    const a = KEY6_ADDRESS;
    this.bits6.push(
      prefilter6BitLE(le32(key, a), le32(key, a + 4), le32(key, a + 8), le32(key, a + 12), le16(key, KEY6_PORT), key[KEY6_PROTO]!),
    );
  }

  /** An IPv6 backend-map value (bpx_backend6_v1). */
  backend6(value: Uint8Array): void {
    const a = BACKEND6_ADDRESS;
    this.bits6.push(
      prefilter6BitLE(
        le32(value, a),
        le32(value, a + 4),
        le32(value, a + 8),
        le32(value, a + 12),
        le16(value, BACKEND6_PORT),
        value[BACKEND6_PROTO]!,
      ),
    );
  }

  /** A service-map entry: its master names a frontend (slots add nothing: their backends come as backends). */
  service(key: Uint8Array): void {
    if (key[KEY_SLOT] !== 0 || key[KEY_SLOT + 1] !== 0) return;
    const address = le32(key, KEY_ADDRESS);
    if (address === 0) this.nodePorts.push((((key[KEY_PORT]! << 8) | key[KEY_PORT + 1]!) << 8) | key[KEY_PROTO]!);
    else this.push(prefilterBitLE(address, le16(key, KEY_PORT), key[KEY_PROTO]!));
  }

  /** A backend-map value. */
  backend(value: Uint8Array): void {
    this.push(prefilterBitLE(le32(value, BACKEND_ADDRESS), le16(value, BACKEND_PORT), value[BACKEND_PROTO]!));
  }

  take(): ServiceBits {
    const np = this.nodePorts.length;
    const out = new Int32Array(HEAD + this.n + np + this.bits6.length);
    out[0] = this.n;
    out[1] = np;
    out.set(this.bits.subarray(0, this.n), HEAD);
    for (let j = 0; j < np; j++) out[HEAD + this.n + j] = this.nodePorts[j]!;
    for (let j = 0; j < this.bits6.length; j++) out[HEAD + this.n + np + j] = this.bits6[j]!;
    return out;
  }

  private push(b: number): void {
    if (this.n === this.bits.length) {
      const next = new Int32Array(this.n * 2);
      next.set(this.bits);
      this.bits = next;
    }
    this.bits[this.n++] = b;
  }
}

/** Bits counted for a Service that are to be uncounted after the write (short-lived). */
interface Contribution {
  service: string;
  bits: Int32Array;
}

/**
 * Every bit a Service's encoding needs, its NodePorts on `nodePortIPs` (IPv4's), or its IPv6 bits. A view of
 * `from` unless NodePorts add bits (made only while counting: the pre-filter keeps `from` alone per Service).
 */
function allBits(from: ServiceBits, nodePortIPs: readonly string[], family: 4 | 6): Int32Array {
  if (family === 6) return bits6Of(from);
  const bits = bitsOf(from);
  if (from[1] === 0 || nodePortIPs.length === 0) return bits;
  const nodePorts = nodePortsOf(from);
  const out = new Int32Array(bits.length + nodePorts.length * nodePortIPs.length);
  out.set(bits);
  let n = bits.length;
  for (const np of nodePorts)
    for (const ip of nodePortIPs) out[n++] = prefilterBit(ip, np >>> 8, np & 0xff);
  return out;
}

/**
 * Int32 lists by string key, back to back in one array (a Map entry per key, no typed array per key: ~180 bytes
 * less each). A replaced or deleted list's room is reclaimed when the array next grows.
 */
export class PackedLists {
  private data = new Int32Array(1024);
  private top = 0;
  /** Key → where its list starts (its length first). */
  private readonly at = new Map<string, number>();

  get size(): number {
    return this.at.size;
  }

  set(key: string, list: Int32Array): void {
    const n = list.length + 1;
    if (this.top + n > this.data.length) {
      let inUse = 0;
      for (const a of this.at.values()) inUse += this.data[a]! + 1;
      const next = new Int32Array(Math.max(1024, 2 * (inUse + n)));
      let top = 0;
      const data = this.data;
      for (const [k, a] of this.at) {
        const len = data[a]! + 1;
        for (let j = 0; j < len; j++) next[top + j] = data[a + j]!;
        this.at.set(k, top);
        top += len;
      }
      this.data = next;
      this.top = top;
    }
    this.data[this.top] = list.length;
    this.data.set(list, this.top + 1);
    this.at.set(key, this.top);
    this.top += n;
  }

  /** The key's list (a view: valid until the next set()). */
  get(key: string): Int32Array | undefined {
    const a = this.at.get(key);
    return a === undefined ? undefined : this.data.subarray(a + 1, a + 1 + this.data[a]!);
  }

  delete(key: string): void {
    this.at.delete(key);
  }

  /** Every key and list (views; deleting the current key while iterating is allowed, setting is not). */
  *entries(): IterableIterator<[string, Int32Array]> {
    for (const [k, a] of this.at) yield [k, this.data.subarray(a + 1, a + 1 + this.data[a]!)];
  }
}

const sameList = (a: Int32Array, b: Int32Array) => a.length === b.length && a.every((x, i) => x === b[i]);

export class Prefilter {
  /** References per bit, one byte each (4 MiB for IPv4's 2^22 bits); a bit wanted 255 times or more keeps the rest in `over`. */
  private readonly counts: Uint8Array;
  private readonly over = new Map<number, number>();
  /** The bitmap the counts spell, as 32-bit halves of the 64-bit words (little-endian, as BPF reads them). */
  private readonly bits: Uint32Array;
  /** What the kernel holds. */
  private readonly written: Uint32Array;
  /**
   * Per Service: the encoding whose bits are counted (on `nodePortIPs` for its NodePorts); only Services with
   * bits in this family (an IPv4-only Service is not kept by IPv6's pre-filter).
   */
  private readonly applied = new PackedLists();
  /** The NodePort addresses the applied NodePorts' bits are counted on. */
  private nodePortIPs: readonly string[] = [];
  private stale: Contribution[] = [];
  /** Old contributions of Services the reconciler held back (the kernel still has their old entries). */
  private readonly held = new Map<string, Contribution[]>();
  private nodePortKey = "";
  private ready = false;
  /** Words whose bits changed since the last write (all of them after a restore). */
  private readonly dirty: Uint8Array;
  private dirtyList: number[] = [];
  private allDirty = true;

  /** Words of the bitmap; the ready slot follows them. */
  private readonly words: number;

  /** `family` 6: IPv6's bitmap (bpx_prefilter6_v1, ServiceBits.bits6). */
  constructor(
    private readonly map: MapHandle,
    private readonly family: 4 | 6 = 4,
  ) {
    this.words = 1 << ((family === 6 ? PREFILTER6_BITS_LOG2 : PREFILTER_BITS_LOG2) - 6);
    this.counts = new Uint8Array(this.words * 64);
    this.bits = new Uint32Array(this.words * 2);
    this.written = new Uint32Array(this.words * 2);
    this.dirty = new Uint8Array(this.words);
  }

  /** Reads the kernel's bitmap: entries of an earlier run keep their bits until a sync removes them. */
  restore(): void {
    const { keys, values, count } = this.map.entries();
    this.written.fill(0);
    this.allDirty = true;
    for (let i = 0; i < count; i++) {
      const k = keys.readUInt32LE(i * 4);
      if (k === this.words) this.ready = values.readBigUInt64LE(i * 8) !== 0n;
      else if (k < this.words) {
        this.written[k * 2] = values.readUInt32LE(i * 8);
        this.written[k * 2 + 1] = values.readUInt32LE(i * 8 + 4);
      }
    }
  }

  private bump(bits: Int32Array, delta: 1 | -1): void {
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i]!;
      const c = this.counts[b]!;
      if (c === 255) {
        const o = this.over.get(b) ?? 0;
        if (delta > 0 || o > 0) {
          if (o + delta === 0) this.over.delete(b);
          else this.over.set(b, o + delta);
          continue;
        }
      }
      const n = c + delta;
      this.counts[b] = n;
      if (n === 0) this.bits[b >>> 5]! &= ~(1 << (b & 31));
      else if (c === 0) this.bits[b >>> 5]! |= 1 << (b & 31);
      else continue;
      const w = b >>> 6;
      if (!this.dirty[w]) {
        this.dirty[w] = 1;
        this.dirtyList.push(w);
      }
    }
  }

  /**
   * Before the maps are written: the bits of every Service the reconciler (re-)encoded are set. `changes`:
   * those Services' bits, undefined for a Service that has no encoding any more (its bits are cleared by
   * after()). Services not named keep their bits, except NodePorts when `nodePortIPs` changed — unless
   * `complete` (a full pass): then `changes` names every Service with an encoding, and the others lose theirs.
   * Returns words written.
   */
  async before(
    changes: ReadonlyMap<string, ServiceBits | undefined>,
    nodePortIPs: readonly string[],
    complete = false,
  ): Promise<number> {
    if (complete)
      for (const [key, from] of this.applied.entries())
        if (!changes.has(key)) {
          this.unapply(key, from);
          this.applied.delete(key);
        }
    const np = nodePortIPs.join(",");
    const npChanged = np !== this.nodePortKey && this.family === 4;
    if (npChanged) {
      // NodePort addresses changed: every NodePort frontend's bits change with them.
      for (const [key, from] of this.applied.entries()) {
        // (A Service handed over with the same encoding is not re-counted below: done here.)
        const next = changes.get(key);
        if (from[1]! > 0 && (next === undefined ? !changes.has(key) : sameList(next, from))) {
          this.unapply(key, from);
          this.bump(allBits(from, nodePortIPs, this.family), 1);
        }
      }
      this.nodePortKey = np;
    }
    // Bits of Services counted below, and the stale ones' of later passes, are on the new addresses.
    const oldIPs = this.nodePortIPs;
    this.nodePortIPs = nodePortIPs;
    for (const [key, from] of changes) {
      const cur = this.applied.get(key);
      if (cur && from && sameList(cur, from)) continue;
      if (cur) {
        this.stale.push({ service: key, bits: allBits(cur, oldIPs, this.family) });
        this.applied.delete(key);
      }
      if (from && this.hasBits(from)) {
        this.bump(allBits(from, nodePortIPs, this.family), 1);
        this.applied.set(key, from);
      }
    }
    return this.write(true);
  }

  /** The encoding has bits in this family (NodePorts count for IPv4 even while no address serves them). */
  private hasBits(from: ServiceBits): boolean {
    return this.family === 6 ? from.length > HEAD + from[0]! + from[1]! : from[0]! + from[1]! > 0;
  }

  /** Queues a counted encoding's bits (on the NodePort addresses they were counted on) to be uncounted by after(). */
  private unapply(service: string, from: ServiceBits): void {
    this.stale.push({ service, bits: allBits(from, this.nodePortIPs, this.family) });
  }

  /**
   * After the maps are written: bits nothing needs any more are cleared, and the bitmap is declared complete.
   * `heldBack`: Services whose old entries the kernel still holds (ApplyStats.heldBack): the bitmap follows
   * the kernel, so their old bits stay until they are no longer held back.
   */
  async after(heldBack: ReadonlySet<string> = new Set()): Promise<number> {
    for (const c of this.stale) {
      if (heldBack.has(c.service)) {
        const list = this.held.get(c.service);
        if (list) list.push(c);
        else this.held.set(c.service, [c]);
      } else this.bump(c.bits, -1);
    }
    this.stale = [];
    for (const [service, list] of this.held) {
      if (heldBack.has(service)) continue;
      for (const c of list) this.bump(c.bits, -1);
      this.held.delete(service);
    }
    const n = await this.write(false);
    if (!this.ready) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(this.words); // the ready slot
      const value = Buffer.alloc(8);
      value.writeBigUInt64LE(1n);
      this.map.update(key, value);
      this.ready = true;
    }
    return n;
  }

  /** Writes the words that differ; `keep` also keeps every bit the kernel already has (set only). */
  private async write(keep: boolean): Promise<number> {
    // Word numbers and values straight into the batch's arrays (a full sync writes most of the 65,536 words).
    const max = this.allDirty ? this.words : this.dirtyList.length;
    const keys = new Uint32Array(max);
    const values = new Uint32Array(max * 2);
    let n = 0;
    for (let j = 0; j < max; j++) {
      const w = this.allDirty ? j : this.dirtyList[j]!;
      const lo = keep ? (this.bits[w * 2]! | this.written[w * 2]!) >>> 0 : this.bits[w * 2]!;
      const hi = keep ? (this.bits[w * 2 + 1]! | this.written[w * 2 + 1]!) >>> 0 : this.bits[w * 2 + 1]!;
      if (lo !== this.written[w * 2] || hi !== this.written[w * 2 + 1]) {
        this.written[w * 2] = lo;
        this.written[w * 2 + 1] = hi;
        keys[n] = w;
        values[n * 2] = lo;
        values[n * 2 + 1] = hi;
        n++;
      }
    }
    // Words kept only for `keep` are still to be cleared by the next exact write.
    if (!keep) {
      for (const w of this.dirtyList) this.dirty[w] = 0;
      this.dirtyList = [];
      this.allDirty = false;
    }
    if (n === 0) return 0;
    try {
      // Host byte order: the key is a u32 and the value the u64 word as 32-bit halves, low first (little-endian
      // hosts, as `bits` and restore() assume).
      await updateBatch(
        this.map,
        Buffer.from(keys.buffer, 0, n * 4),
        Buffer.from(values.buffer, 0, n * 8),
        n,
      );
    } catch (err) {
      this.restore();
      throw err;
    }
    return n;
  }
}
