// In-memory stand-in for BpfMap with the kernel's semantics for the map types bpfproxy uses, so layers
// above (reconcile, status) can be tested without root. It validates arguments exactly like BpfMap and can
// be told to fail a chosen write, for error-path tests.
import { bpfError } from "./errors.js";
import type { MapEntries, MapHandle, MapInfo } from "./types.js";
import * as v from "./validate.js";

const HASH = 1,
  ARRAY = 2,
  PERCPU_HASH = 5,
  PERCPU_ARRAY = 6,
  LRU_HASH = 9,
  LRU_PERCPU_HASH = 10;
const SUPPORTED = new Set([HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH]);
const BPF_NOEXIST = 1,
  BPF_EXIST = 2;

export interface FakeMapOptions {
  name?: string;
  /** BPF_MAP_TYPE_*: HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH or LRU_PERCPU_HASH. Default HASH. */
  type?: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** CPUs a per-CPU value spans; default 1. */
  possibleCpus?: number;
  id?: number;
}

export class FakeMap implements MapHandle {
  readonly info: MapInfo;
  readonly valueSizeAll: number;
  /** Element writes (update/delete, each element of a batch) attempted so far. */
  writes = 0;
  // Insertion (for LRU: recency) order, like a kernel walk has some fixed order; hex key → value.
  readonly #data = new Map<string, Buffer>();
  readonly #isArray: boolean;
  readonly #isLru: boolean;
  #fail: { at: number; code: string } | undefined;

  constructor(o: FakeMapOptions) {
    const type = v.optInt("FakeMap: type", o.type, 0, 255, HASH);
    if (!SUPPORTED.has(type)) throw new RangeError(`FakeMap: map type ${type} is not modelled`);
    this.info = {
      name: o.name ?? "fake",
      type,
      keySize: v.int("FakeMap: keySize", o.keySize, 1, 512),
      valueSize: v.int("FakeMap: valueSize", o.valueSize, 1, 65536),
      maxEntries: v.int("FakeMap: maxEntries", o.maxEntries, 1, 0xffffffff),
      id: o.id ?? 0,
    };
    this.#isArray = type === ARRAY || type === PERCPU_ARRAY;
    this.#isLru = type === LRU_HASH || type === LRU_PERCPU_HASH;
    if (this.#isArray && this.info.keySize !== 4) throw new RangeError("FakeMap: array maps have 4-byte keys");
    const perCpu = type === PERCPU_HASH || type === PERCPU_ARRAY || type === LRU_PERCPU_HASH;
    const cpus = v.optInt("FakeMap: possibleCpus", o.possibleCpus, 1, 4096, 1);
    this.valueSizeAll = perCpu ? Math.ceil(this.info.valueSize / 8) * 8 * cpus : this.info.valueSize;
  }

  /** Makes the nth element write from now (1 = the next one) throw a BpfError with this errno name. */
  failNthWrite(n: number, code: string): void {
    v.int("FakeMap.failNthWrite: n", n, 1, Number.MAX_SAFE_INTEGER);
    v.str("FakeMap.failNthWrite: code", code);
    this.#fail = { at: this.writes + n, code };
  }

  /** Number of entries held (arrays: maxEntries). */
  get size(): number {
    return this.#isArray ? this.info.maxEntries : this.#data.size;
  }

  lookup(key: Buffer): Buffer | null {
    const k = v.keyOf("BpfMap.lookup", this.info.keySize, key);
    if (this.#isArray) {
      const i = k.readUInt32LE(0);
      if (i >= this.info.maxEntries) return null;
      return Buffer.from(this.#data.get(k.toString("hex")) ?? Buffer.alloc(this.valueSizeAll));
    }
    const val = this.#data.get(k.toString("hex"));
    return val ? Buffer.from(val) : null;
  }

  update(key: Buffer, value: Buffer, flags?: number): void {
    const k = v.keyOf("BpfMap.update", this.info.keySize, key);
    const val = v.valueOf("BpfMap.update", this.valueSizeAll, value);
    const f = v.mapFlags("BpfMap.update: flags", flags);
    this.#update("bpf_map_update_elem", k, val, f);
  }

  delete(key: Buffer): boolean {
    const k = v.keyOf("BpfMap.delete", this.info.keySize, key);
    return this.#delete("bpf_map_delete_elem", k);
  }

  updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void {
    const b = v.batch("BpfMap.updateBatch", this.info.keySize, this.valueSizeAll, keys, values, count);
    const f = v.mapFlags("BpfMap.updateBatch: flags", flags);
    // Like the kernel's generic batch: in order, stopping at the first failure with earlier ones applied.
    for (let i = 0; i < b.count; i++) {
      this.#update(
        "bpf_map_update_batch",
        b.keys.subarray(i * this.info.keySize, (i + 1) * this.info.keySize),
        b.values!.subarray(i * this.valueSizeAll, (i + 1) * this.valueSizeAll),
        f,
      );
    }
  }

  deleteBatch(keys: Buffer, count: number): number {
    const b = v.batch("BpfMap.deleteBatch", this.info.keySize, this.valueSizeAll, keys, null, count);
    let deleted = 0;
    for (let i = 0; i < b.count; i++) {
      if (this.#delete("bpf_map_delete_elem", b.keys.subarray(i * this.info.keySize, (i + 1) * this.info.keySize)))
        deleted++;
    }
    return deleted;
  }

  // The fake has no worker thread: the async forms run the same code and settle on a later tick.
  async entriesAsync(): Promise<MapEntries> {
    await Promise.resolve();
    return this.entries();
  }

  async updateBatchAsync(keys: Buffer, values: Buffer, count: number, flags?: number): Promise<void> {
    await Promise.resolve();
    this.updateBatch(keys, values, count, flags);
  }

  async deleteBatchAsync(keys: Buffer, count: number): Promise<number> {
    await Promise.resolve();
    return this.deleteBatch(keys, count);
  }

  entries(): MapEntries {
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    if (this.#isArray) {
      for (let i = 0; i < this.info.maxEntries; i++) {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(i, 0);
        keys.push(k);
        values.push(this.#data.get(k.toString("hex")) ?? Buffer.alloc(this.valueSizeAll));
      }
    } else {
      for (const [hex, val] of this.#data) {
        keys.push(Buffer.from(hex, "hex"));
        values.push(val);
      }
    }
    return { keys: Buffer.concat(keys), values: Buffer.concat(values), count: keys.length };
  }

  #write(op: string): void {
    this.writes++;
    if (this.#fail && this.writes === this.#fail.at) {
      const code = this.#fail.code;
      this.#fail = undefined;
      throw bpfError(op, code, "injected failure");
    }
  }

  #update(op: string, k: Buffer, val: Buffer, flags: number): void {
    this.#write(op);
    const hex = k.toString("hex");
    if (this.#isArray) {
      if (k.readUInt32LE(0) >= this.info.maxEntries) throw bpfError(op, "E2BIG", "index beyond max_entries");
      if (flags === BPF_NOEXIST) throw bpfError(op, "EEXIST", "array elements always exist");
      this.#data.set(hex, Buffer.from(val));
      return;
    }
    const exists = this.#data.has(hex);
    if (flags === BPF_NOEXIST && exists) throw bpfError(op, "EEXIST", "key exists");
    if (flags === BPF_EXIST && !exists) throw bpfError(op, "ENOENT", "key absent");
    if (!exists && this.#data.size >= this.info.maxEntries) {
      if (!this.#isLru) throw bpfError(op, "E2BIG", "map full");
      this.#data.delete(this.#data.keys().next().value as string); // evict the least recently written
    }
    if (this.#isLru) this.#data.delete(hex);
    this.#data.set(hex, Buffer.from(val));
  }

  #delete(op: string, k: Buffer): boolean {
    this.#write(op);
    if (this.#isArray) throw bpfError(op, "EINVAL", "array elements cannot be deleted");
    return this.#data.delete(k.toString("hex"));
  }
}
