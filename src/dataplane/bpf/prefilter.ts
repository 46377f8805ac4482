// The pre-filter bitmap (bpf/lib/prefilter.h): one bit per frontend (address, port, proto) — a NodePort
// once per address NodePorts are served on — and per backend (address, port, proto). The BPF programs skip
// every conntrack, NAT and service lookup for a packet whose destination and source both miss it, so the
// bitmap must always cover what the service and backend maps hold: bits are set before a sync writes its
// entries and cleared only after it removed them. Per-bit reference counts let a sync touch only the
// Services whose frontends changed (unchanged model objects are skipped by identity; with the model's
// delta only the changed Services are looked at).
import { sameRefs } from "../../model/build.js";
import type { MapHandle } from "../../native/index.js";
import type { BackendModel, Frontend, FrontendExtras, NodeModel } from "../../model/types.js";
import { dataplaneAddress, protoNumber, serviceGroups } from "./desired.js";
import { WILDCARD_ADDRESS } from "./abi.js";
import { ipv4ToNumber } from "../../k8s/ip.js";
import { updateBatch } from "./batch.js";

export const PREFILTER_BITS_LOG2 = 22;
export const PREFILTER_WORDS = 1 << (PREFILTER_BITS_LOG2 - 6);
/** Index of the slot after the bitmap: nonzero once a complete bitmap is written. */
export const PREFILTER_READY_SLOT = PREFILTER_WORDS;

/** The bit of (address, port, proto): prefilter_bit() in bpf/lib/prefilter.h, on the same bytes. */
export function prefilterBit(address: string, port: number, proto: number): number {
  return prefilterBitOf(ipv4ToNumber(address), port, proto);
}

/** prefilterBit of an address as a number (ipv4ToNumber): every backend's bit on a full sync, so no re-parse. */
function prefilterBitOf(address: number, port: number, proto: number): number {
  // The address as the BPF program reads its network-order bytes into a little-endian u32.
  const n = address;
  const le = ((n >>> 24) | ((n >>> 8) & 0xff00) | ((n & 0xff00) << 8) | ((n & 0xff) << 24)) >>> 0;
  const portLE = ((port >>> 8) | ((port & 0xff) << 8)) >>> 0;
  let h = Math.imul(le, 0x9e3779b1) >>> 0;
  h = (h ^ Math.imul(((portLE << 8) | proto) >>> 0, 0x85ebca77)) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0xc2b2ae3d) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  return h >>> (32 - PREFILTER_BITS_LOG2);
}

/** Bits collected for one Service (scratch, grown as needed). */
let scratch = new Int32Array(256);
let scratchN = 0;
function pushBit(b: number): void {
  if (scratchN === scratch.length) {
    const next = new Int32Array(scratch.length * 2);
    next.set(scratch);
    scratch = next;
  }
  scratch[scratchN++] = b;
}

function pushBackends(list: readonly BackendModel[], proto: number): void {
  for (let i = 0; i < list.length; i++) pushBit(prefilterBitOf(ipv4ToNumber(list[i]!.address), list[i]!.port, proto));
}

/** Every bit one frontend needs: its own key(s) and every backend it may hold flows to (into the scratch). */
function pushFrontendBits(fe: Frontend, extras: FrontendExtras | undefined, nodePortIPs: readonly string[]): void {
  const proto = protoNumber(fe.protocol);
  if (proto === undefined) return;
  const addr = dataplaneAddress(fe);
  if (addr === WILDCARD_ADDRESS) for (const ip of nodePortIPs) pushBit(prefilterBit(ip, fe.port, proto));
  else pushBit(prefilterBit(addr, fe.port, proto));
  pushBackends(fe.backends, proto);
  if (extras) pushBackends(extras.retainedBackends, proto);
}

interface Contribution {
  service: string;
  frontends: readonly Frontend[];
  extras: readonly (FrontendExtras | undefined)[];
  bits: Int32Array;
}

export class Prefilter {
  /** References per bit; saturates at 65535, after which the bit stays set (a false positive is safe). */
  private readonly counts = new Uint16Array(1 << PREFILTER_BITS_LOG2);
  /** The bitmap the counts spell, as 32-bit halves of the 64-bit words (little-endian, as BPF reads them). */
  private readonly bits = new Uint32Array(PREFILTER_WORDS * 2);
  /** What the kernel holds. */
  private readonly written = new Uint32Array(PREFILTER_WORDS * 2);
  /** Per Service: the frontends whose bits are counted. */
  private readonly applied = new Map<string, Contribution>();
  private stale: Contribution[] = [];
  /** Old contributions of Services the reconciler held back (the kernel still has their old entries). */
  private readonly held = new Map<string, Contribution[]>();
  private nodePortKey = "";
  private ready = false;
  /** Words whose bits changed since the last write (all of them after a restore). */
  private readonly dirty = new Uint8Array(PREFILTER_WORDS);
  private dirtyList: number[] = [];
  private allDirty = true;

  constructor(private readonly map: MapHandle) {}

  /** Reads the kernel's bitmap: entries of an earlier run keep their bits until a sync removes them. */
  restore(): void {
    const { keys, values, count } = this.map.entries();
    this.written.fill(0);
    this.allDirty = true;
    for (let i = 0; i < count; i++) {
      const k = keys.readUInt32LE(i * 4);
      if (k === PREFILTER_READY_SLOT) this.ready = values.readBigUInt64LE(i * 8) !== 0n;
      else if (k < PREFILTER_WORDS) {
        this.written[k * 2] = values.readUInt32LE(i * 8);
        this.written[k * 2 + 1] = values.readUInt32LE(i * 8 + 4);
      }
    }
  }

  private bump(bits: Int32Array, delta: 1 | -1): void {
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i]!;
      const c = this.counts[b]!;
      if (c === 0xffff) continue;
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
   * Before the maps are written: the bits of every new or changed Service's frontends are set. `changed`: the
   * only Services that may differ from the last model (the model's delta); without it every Service is
   * compared by identity. Returns words written.
   */
  async before(model: NodeModel, changed?: ReadonlySet<string>): Promise<number> {
    const groups = serviceGroups(model);
    const ips = model.nodePortIPs ?? [];
    const np = ips.join(",");
    let visit: Iterable<string> | undefined = changed;
    if (np !== this.nodePortKey) {
      // NodePort addresses changed: every NodePort frontend's bits change with them.
      for (const [key, c] of this.applied)
        if (c.frontends.some((fe) => fe.type === "NodePort")) {
          this.stale.push(c);
          this.applied.delete(key);
        }
      this.nodePortKey = np;
      visit = undefined;
    }
    for (const key of visit ?? new Set([...groups.keys(), ...this.applied.keys()])) {
      const g = groups.get(key);
      const cur = this.applied.get(key);
      if (cur && g && sameRefs(cur.frontends, g.frontends) && sameRefs(cur.extras, g.extras)) continue;
      if (cur) {
        this.stale.push(cur);
        this.applied.delete(key);
      }
      if (!g) continue;
      scratchN = 0;
      for (let i = 0; i < g.frontends.length; i++) pushFrontendBits(g.frontends[i]!, g.extras[i], ips);
      const bits = scratch.slice(0, scratchN);
      this.bump(bits, 1);
      this.applied.set(key, { service: key, frontends: g.frontends, extras: g.extras, bits });
    }
    return this.write(true);
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
      key.writeUInt32LE(PREFILTER_READY_SLOT);
      const value = Buffer.alloc(8);
      value.writeBigUInt64LE(1n);
      this.map.update(key, value);
      this.ready = true;
    }
    return n;
  }

  /** Writes the words that differ; `keep` also keeps every bit the kernel already has (set only). */
  private async write(keep: boolean): Promise<number> {
    const idx: number[] = [];
    const words = this.allDirty ? Array.from({ length: PREFILTER_WORDS }, (_, w) => w) : this.dirtyList;
    for (const w of words) {
      const lo = keep ? (this.bits[w * 2]! | this.written[w * 2]!) >>> 0 : this.bits[w * 2]!;
      const hi = keep ? (this.bits[w * 2 + 1]! | this.written[w * 2 + 1]!) >>> 0 : this.bits[w * 2 + 1]!;
      if (lo !== this.written[w * 2] || hi !== this.written[w * 2 + 1]) {
        this.written[w * 2] = lo;
        this.written[w * 2 + 1] = hi;
        idx.push(w);
      }
    }
    // Words kept only for `keep` are still to be cleared by the next exact write.
    if (!keep) {
      for (const w of this.dirtyList) this.dirty[w] = 0;
      this.dirtyList = [];
      this.allDirty = false;
    }
    if (idx.length === 0) return 0;
    const keys = Buffer.alloc(idx.length * 4);
    const values = Buffer.alloc(idx.length * 8);
    idx.forEach((w, i) => {
      keys.writeUInt32LE(w, i * 4);
      values.writeUInt32LE(this.written[w * 2]!, i * 8);
      values.writeUInt32LE(this.written[w * 2 + 1]!, i * 8 + 4);
    });
    try {
      await updateBatch(this.map, keys, values, idx.length);
    } catch (err) {
      this.restore();
      throw err;
    }
    return idx.length;
  }
}
