// One BPF map's entries held densely: keys and values back to back in two buffers, in the kernel's byte
// layout, with an open-addressing index over the key bytes. An entry costs its key and value bytes plus
// about 20 bytes of index and bookkeeping, and no JavaScript object or string: the reconciler keeps
// hundreds of thousands of them (what it wants written and its mirror of what the kernel holds), and a
// full sync builds them without garbage. Entry numbers are stable until the entry is removed, so a
// Service can list its entries as numbers.

/** Hash of `size` bytes at `off` (FNV-1a, then a finaliser: keys differ in a few low-entropy bytes). */
function hashBytes(buf: Uint8Array, off: number, size: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < size; i++) h = Math.imul(h ^ buf[off + i]!, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/** Copies n bytes; a loop for the short keys and values that dominate (Buffer.copy costs a native call). */
export function copyBytes(src: Uint8Array, from: number, dst: Uint8Array, to: number, n: number): void {
  if (n > 64) dst.set(src.subarray(from, from + n), to);
  else for (let j = 0; j < n; j++) dst[to + j] = src[from + j]!;
}

export class EntryTable {
  /** Keys of entries 0 .. top-1, `keySize` bytes each (a removed entry's bytes stay until reused). */
  keys: Buffer;
  /** Values, `valueSize` bytes each. */
  values: Buffer;
  /** References per entry (how many Services want it); empty unless the table is `counted`. */
  refs: Uint32Array;
  /** A stamp per entry for the owner's use (the reconciler marks entries seen in one encoding); empty unless `counted`. */
  mark: Uint32Array;
  /**
   * Per entry (counted tables): 1 when the kernel holds this key with exactly this value. The entry's bytes then
   * stand for the kernel's too: no mirror copy of them is kept. Before such an entry's value changes or it is
   * removed, its key and value move to `spill` (the kernel still has them until a write says otherwise).
   */
  held: Uint8Array;
  /** Entries with held[i] set. */
  heldCount = 0;
  /** Where held entries go before they change (the reconciler's table of other kernel entries). */
  spill: EntryTable | undefined;
  /** Hash of each entry's key (the same function for every table: another table's hash can be reused). */
  hashes: Uint32Array;
  private used: Uint8Array;
  /** Index: entry + 1 per slot, 0 when empty; linear probing, at most half full. */
  private slots: Int32Array;
  private mask: number;
  private freeList: number[] = [];
  /** Entries ever allocated (the live ones are those with used[i]). */
  top = 0;
  size = 0;

  constructor(
    readonly keySize: number,
    readonly valueSize: number,
    capacity = 16,
    /** Keeps `refs` and `mark` (a mirror of the kernel needs neither: 8 bytes an entry less). */
    readonly counted = true,
  ) {
    const cap = Math.max(4, capacity);
    this.keys = Buffer.alloc(cap * keySize);
    this.values = Buffer.alloc(cap * valueSize);
    this.refs = new Uint32Array(counted ? cap : 0);
    this.mark = new Uint32Array(counted ? cap : 0);
    this.held = new Uint8Array(counted ? cap : 0);
    this.hashes = new Uint32Array(cap);
    this.used = new Uint8Array(cap);
    let n = 16;
    while (n < cap * 2) n *= 2;
    this.slots = new Int32Array(n);
    this.mask = n - 1;
  }

  /** A table holding a map dump (`keys`/`values`: `count` entries back to back). */
  static fromDump(
    keySize: number,
    valueSize: number,
    keys: Buffer,
    values: Buffer,
    count: number,
    counted = true,
  ): EntryTable {
    const t = new EntryTable(keySize, valueSize, count, counted);
    keys.copy(t.keys, 0, 0, count * keySize);
    values.copy(t.values, 0, 0, count * valueSize);
    for (let i = 0; i < count; i++) {
      const h = hashBytes(t.keys, i * keySize, keySize);
      let s = h & t.mask;
      let dup = false;
      for (let e = t.slots[s]!; e !== 0; e = t.slots[(s = (s + 1) & t.mask)]!) {
        if (t.hashes[e - 1] === h && t.keyAt(e - 1, t.keys, i * keySize)) {
          dup = true; // a dump lists each key once; kept defensive so the index stays a set
          break;
        }
      }
      t.top = i + 1;
      if (dup) {
        t.freeList.push(i);
        continue;
      }
      t.hashes[i] = h;
      t.used[i] = 1;
      t.slots[s] = i + 1;
      t.size++;
    }
    return t;
  }

  isUsed(i: number): boolean {
    return this.used[i] === 1;
  }

  /** True when entry i's key equals the `keySize` bytes of buf at off. */
  private keyAt(i: number, buf: Uint8Array, off: number): boolean {
    const ks = this.keySize;
    const k = this.keys;
    const at = i * ks;
    for (let j = 0; j < ks; j++) if (k[at + j] !== buf[off + j]) return false;
    return true;
  }

  /** The entry with the key at buf[off..], or -1. */
  find(buf: Uint8Array, off = 0): number {
    const h = hashBytes(buf, off, this.keySize);
    for (let s = h & this.mask, e = this.slots[s]!; e !== 0; e = this.slots[(s = (s + 1) & this.mask)]!) {
      if (this.hashes[e - 1] === h && this.keyAt(e - 1, buf, off)) return e - 1;
    }
    return -1;
  }

  /** The entry with the key at buf[off..], added (refs 0, value to be set by the caller) when absent. */
  add(buf: Uint8Array, off = 0, hash?: number): number {
    const ks = this.keySize;
    const h = hash ?? hashBytes(buf, off, ks);
    let s = h & this.mask;
    for (let e = this.slots[s]!; e !== 0; e = this.slots[(s = (s + 1) & this.mask)]!) {
      if (this.hashes[e - 1] === h && this.keyAt(e - 1, buf, off)) return e - 1;
    }
    let i = this.freeList.pop();
    if (i === undefined) {
      if (this.top === this.used.length) this.grow();
      i = this.top++;
    }
    if ((this.size + 1) * 2 > this.slots.length) {
      this.rehash(this.slots.length * 2);
      s = h & this.mask;
      while (this.slots[s] !== 0) s = (s + 1) & this.mask;
    }
    copyBytes(buf, off, this.keys, i * ks, ks);
    if (this.counted) {
      this.refs[i] = 0;
      this.mark[i] = 0;
      this.held[i] = 0;
    }
    this.hashes[i] = h;
    this.used[i] = 1;
    this.slots[s] = i + 1;
    this.size++;
    return i;
  }

  /** Removes entry i (its number may be reused by a later add). */
  remove(i: number): void {
    if (this.used[i] !== 1) return;
    if (this.held[i] === 1) this.unhold(i);
    const mask = this.mask;
    let s = this.hashes[i]! & mask;
    while (this.slots[s] !== i + 1) s = (s + 1) & mask;
    // Backward-shift deletion: later entries of the probe run move up so lookups never stop short.
    let j = s;
    for (;;) {
      j = (j + 1) & mask;
      const e = this.slots[j]!;
      if (e === 0) break;
      const home = this.hashes[e - 1]! & mask;
      const between = s <= j ? s < home && home <= j : s < home || home <= j;
      if (between) continue;
      this.slots[s] = e;
      s = j;
    }
    this.slots[s] = 0;
    this.used[i] = 0;
    if (this.counted) this.refs[i] = 0;
    this.size--;
    this.freeList.push(i);
  }

  /** True when entry i's value equals entry j of `other` (same value size). */
  sameValue(i: number, other: EntryTable, j: number): boolean {
    const vs = this.valueSize;
    if (vs > 64) return this.values.compare(other.values, j * vs, (j + 1) * vs, i * vs, (i + 1) * vs) === 0;
    const a = this.values;
    const b = other.values;
    for (let x = 0; x < vs; x++) if (a[i * vs + x] !== b[j * vs + x]) return false;
    return true;
  }

  /** The entry of `other`'s entry j's key here (same key size), or -1; reuses other's hash. */
  findOf(other: EntryTable, j: number): number {
    const h = other.hashes[j]!;
    const off = j * other.keySize;
    for (let s = h & this.mask, e = this.slots[s]!; e !== 0; e = this.slots[(s = (s + 1) & this.mask)]!) {
      if (this.hashes[e - 1] === h && this.keyAt(e - 1, other.keys, off)) return e - 1;
    }
    return -1;
  }

  /** Entries the table has room for before it grows (copies its arrays). */
  get capacity(): number {
    return this.used.length;
  }

  /** Makes room for `n` entries without growing again. */
  reserve(n: number): void {
    // To n exactly (a full sync reserves what it will fill): doubling would leave up to half of it unused.
    if (this.used.length < n) this.grow(n);
    let slots = this.slots.length;
    while (n * 2 > slots) slots *= 2;
    if (slots !== this.slots.length) this.rehash(slots);
  }

  /** Sets entry i's value from buf[off..]. A held entry whose value changes moves the kernel's value to `spill` first. */
  setValue(i: number, buf: Uint8Array, off = 0): void {
    const vs = this.valueSize;
    if (this.held[i] === 1) {
      const v = this.values;
      let same = true;
      for (let x = 0; x < vs; x++)
        if (v[i * vs + x] !== buf[off + x]) {
          same = false;
          break;
        }
      if (same) return;
      this.unhold(i);
    }
    copyBytes(buf, off, this.values, i * vs, vs);
  }

  /** The kernel now holds entry i's key with this value (a write succeeded). */
  markHeld(i: number): void {
    if (this.held[i] === 1) return;
    this.held[i] = 1;
    this.heldCount++;
  }

  /** Entry i is no longer what the kernel holds: its key and current value (the kernel's) move to `spill`. */
  unhold(i: number): void {
    if (this.held[i] !== 1) return;
    this.held[i] = 0;
    this.heldCount--;
    this.spill!.put(this, i);
  }

  /** Every held entry moves to `spill` (the table is about to be replaced by a new one). */
  unholdAll(): void {
    if (this.heldCount === 0) return;
    this.spill!.reserve(this.spill!.size + this.heldCount);
    for (let i = 0; i < this.top; i++) if (this.held[i] === 1) this.unhold(i);
  }

  /** Adds or overwrites the entry of `other`'s entry j (key and value). Returns its number here. */
  put(other: EntryTable, j: number): number {
    const i = this.add(other.keys, j * other.keySize, other.hashes[j]);
    copyBytes(other.values, j * other.valueSize, this.values, i * this.valueSize, this.valueSize);
    return i;
  }

  /** Entry i's key as a latin1 string (one char per byte). */
  keyString(i: number): string {
    return this.keys.toString("latin1", i * this.keySize, (i + 1) * this.keySize);
  }

  /** Entry i's value as a latin1 string. */
  valueString(i: number): string {
    return this.values.toString("latin1", i * this.valueSize, (i + 1) * this.valueSize);
  }

  /** Every live entry as latin1 key → value (tests, debugging, small maps). */
  toMap(): Map<string, string> {
    const out = new Map<string, string>();
    for (let i = 0; i < this.top; i++) if (this.used[i] === 1) out.set(this.keyString(i), this.valueString(i));
    return out;
  }

  private grow(cap = this.used.length * 2): void {
    const keys = Buffer.alloc(cap * this.keySize);
    this.keys.copy(keys);
    this.keys = keys;
    const values = Buffer.alloc(cap * this.valueSize);
    this.values.copy(values);
    this.values = values;
    const widen = <A extends Uint32Array | Uint8Array>(a: A, make: (n: number) => A): A => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    if (this.counted) {
      this.refs = widen(this.refs, (n) => new Uint32Array(n));
      this.mark = widen(this.mark, (n) => new Uint32Array(n));
      this.held = widen(this.held, (n) => new Uint8Array(n));
    }
    this.hashes = widen(this.hashes, (n) => new Uint32Array(n));
    this.used = widen(this.used, (n) => new Uint8Array(n));
  }

  private rehash(n: number): void {
    this.slots = new Int32Array(n);
    this.mask = n - 1;
    for (let i = 0; i < this.top; i++) {
      if (this.used[i] !== 1) continue;
      let s = this.hashes[i]! & this.mask;
      while (this.slots[s] !== 0) s = (s + 1) & this.mask;
      this.slots[s] = i + 1;
    }
  }
}

/**
 * Integer keys (0 .. 2^53) → numbers, open addressing over typed arrays (linear probing, backward-shift
 * deletion, at most half full): the id tables look up one key per backend of every encoded frontend, and a
 * byte-keyed EntryTable or a Map of non-Smi numbers costs several times more per lookup.
 */
export class NumberTable {
  private lo: Uint32Array;
  private hi: Uint32Array;
  private vals: Float64Array;
  private used: Uint8Array;
  private mask: number;
  size = 0;

  constructor(capacity = 16) {
    let n = 16;
    while (n < capacity * 2) n *= 2;
    this.lo = new Uint32Array(n);
    this.hi = new Uint32Array(n);
    this.vals = new Float64Array(n);
    this.used = new Uint8Array(n);
    this.mask = n - 1;
  }

  private static hash(lo: number, hi: number): number {
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 15;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  /** The slot holding `key` (>= 0), or -1 - the slot it would go to. */
  slotOf(key: number): number {
    const lo = key >>> 0;
    const hi = (key - lo) / 0x100000000;
    const mask = this.mask;
    let s = NumberTable.hash(lo, hi) & mask;
    while (this.used[s] === 1) {
      if (this.lo[s] === lo && this.hi[s] === hi) return s;
      s = (s + 1) & mask;
    }
    return -1 - s; // absent: where it would go
  }

  /** The value in slot `s` (slotOf's non-negative answer). */
  valueAt(s: number): number {
    return this.vals[s]!;
  }

  /** The value of `key`, or undefined. */
  get(key: number): number | undefined {
    const s = this.slotOf(key);
    return s < 0 ? undefined : this.vals[s];
  }

  has(key: number): boolean {
    return this.slotOf(key) >= 0;
  }

  /** Sets `key`; `at`: slotOf(key) when the caller just asked (saves a probe). */
  set(key: number, value: number, at?: number): void {
    let s = at ?? this.slotOf(key);
    if (s < 0) {
      if ((this.size + 1) * 2 > this.used.length) {
        this.resize(this.used.length * 2);
        s = this.slotOf(key);
      }
      s = -1 - s;
      const lo = key >>> 0;
      this.lo[s] = lo;
      this.hi[s] = (key - lo) / 0x100000000;
      this.used[s] = 1;
      this.size++;
    }
    this.vals[s] = value;
  }

  delete(key: number): boolean {
    let s = this.slotOf(key);
    if (s < 0) return false;
    const mask = this.mask;
    // Backward-shift deletion: later entries of the probe run move up so lookups never stop short.
    let j = s;
    for (;;) {
      j = (j + 1) & mask;
      if (this.used[j] !== 1) break;
      const home = NumberTable.hash(this.lo[j]!, this.hi[j]!) & mask;
      const between = s <= j ? s < home && home <= j : s < home || home <= j;
      if (between) continue;
      this.lo[s] = this.lo[j]!;
      this.hi[s] = this.hi[j]!;
      this.vals[s] = this.vals[j]!;
      s = j;
    }
    this.used[s] = 0;
    this.size--;
    return true;
  }

  private resize(n: number): void {
    const { lo, hi, vals, used } = this;
    this.lo = new Uint32Array(n);
    this.hi = new Uint32Array(n);
    this.vals = new Float64Array(n);
    this.used = new Uint8Array(n);
    this.mask = n - 1;
    for (let i = 0; i < used.length; i++) {
      if (used[i] !== 1) continue;
      let s = NumberTable.hash(lo[i]!, hi[i]!) & this.mask;
      while (this.used[s] === 1) s = (s + 1) & this.mask;
      this.lo[s] = lo[i]!;
      this.hi[s] = hi[i]!;
      this.vals[s] = vals[i]!;
      this.used[s] = 1;
    }
  }
}
