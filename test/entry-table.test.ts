// The reconciler's dense entry tables (src/dataplane/bpf/entry-table.ts) hold what the kernel's maps hold and
// what the Services want: a lookup that stops short or a removal that loses a neighbour would make a sync
// write the wrong entries. Checked against a Map under random adds and removes, with a small index so that
// probe runs collide and wrap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EntryTable, NumberTable } from "../src/dataplane/bpf/entry-table.js";
import { IdTable } from "../src/dataplane/bpf/desired.js";

/** A tiny deterministic generator (xorshift32): the same sequence on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

test("an entry table agrees with a Map under random adds, value changes and removes", () => {
  const t = new EntryTable(12, 8, 4);
  const m = new Map<string, string>();
  const next = rng(42);
  const key = Buffer.alloc(12);
  const value = Buffer.alloc(8);
  for (let step = 0; step < 20_000; step++) {
    // Few distinct keys (600): many hits, removals of present keys and re-adds.
    key.fill(0);
    key.writeUInt32LE(next() % 600, 0);
    key[6] = next() % 2 === 0 ? 6 : 17;
    const k = key.toString("latin1");
    if (next() % 3 === 0) {
      const i = t.find(key);
      assert.equal(i >= 0, m.has(k), `find at step ${step}`);
      if (i >= 0) t.remove(i);
      m.delete(k);
    } else {
      value.writeUInt32LE(next(), 0);
      value.writeUInt32LE(step, 4);
      const i = t.add(key);
      t.setValue(i, value);
      m.set(k, value.toString("latin1"));
    }
    assert.equal(t.size, m.size);
  }
  assert.deepEqual(t.toMap(), m);
  for (const [k, v] of m) {
    const i = t.find(Buffer.from(k, "latin1"));
    assert.ok(i >= 0);
    assert.equal(t.valueString(i), v);
  }
});

test("a table loaded from a map dump finds every entry, and another table's entries by their hash", () => {
  const n = 5000;
  const keys = Buffer.alloc(n * 4);
  const values = Buffer.alloc(n * 4);
  for (let i = 0; i < n; i++) {
    keys.writeUInt32LE(i * 7919, i * 4);
    values.writeUInt32LE(i, i * 4);
  }
  const t = EntryTable.fromDump(4, 4, keys, values, n);
  assert.equal(t.size, n);
  const other = new EntryTable(4, 4);
  for (let i = 0; i < n; i += 3) other.setValue(other.add(keys, i * 4), values, i * 4);
  for (let j = 0; j < other.top; j++) {
    const i = t.findOf(other, j);
    assert.ok(i >= 0);
    assert.ok(t.sameValue(i, other, j));
  }
  // Removing half keeps the other half findable (backward-shift deletion).
  for (let i = 0; i < n; i += 2) t.remove(t.find(keys, i * 4));
  for (let i = 0; i < n; i++) assert.equal(t.find(keys, i * 4) >= 0, i % 2 === 1, `key ${i}`);
});

test("the id table hands out stable ids, frees them, and never reuses one still taken", () => {
  const ids = new IdTable(5);
  const a = ids.acquire(10.5e12); // names above 2^32 (address × 2^17 + port × 2 + proto)
  const b = ids.acquire("orphan:9");
  assert.equal(ids.acquire(10.5e12), a);
  assert.equal(ids.get("orphan:9"), b);
  assert.notEqual(a, b);
  ids.restore(123, 5);
  assert.equal(ids.get(123), 5);
  assert.ok(ids.isTaken(5));
  ids.releaseId(a);
  assert.equal(ids.get(10.5e12), undefined);
  assert.ok(!ids.isTaken(a));
  ids.releaseId(b);
  assert.equal(ids.get("orphan:9"), undefined);
  const got = [ids.acquire(1), ids.acquire(2), ids.acquire(3), ids.acquire(4)];
  assert.equal(new Set([...got, 5]).size, 5, "five distinct ids");
  assert.throws(() => ids.acquire(6), /no free id left/);
});

test("the number table (ids by name, names by id) agrees with a Map under random sets and deletes", () => {
  const r = rng(7);
  const t = new NumberTable(4);
  const ref = new Map<number, number>();
  // Keys above 2^32 (id names: address × 2^17 + port × 2 + proto) and small ones; few distinct: many collisions.
  const key = () => (r() % 3 === 0 ? r() % 64 : (r() % 512) * 131072 * 256 + (r() % 4));
  for (let op = 0; op < 20_000; op++) {
    const k = key();
    const what = r() % 3;
    if (what === 0) {
      assert.equal(t.delete(k), ref.delete(k), `delete ${k}`);
    } else {
      const v = r() % 1000;
      t.set(k, v);
      ref.set(k, v);
    }
    if (op % 97 === 0) for (const [rk, rv] of ref) assert.equal(t.get(rk), rv, `get ${rk} after op ${op}`);
    assert.equal(t.size, ref.size);
  }
  for (const [k, v] of ref) assert.equal(t.get(k), v);
  for (let i = 0; i < 2000; i++) {
    const k = key();
    assert.equal(t.has(k), ref.has(k), `has ${k}`);
  }
});

test("a held entry's key and value move to the spill table before its value changes or it goes, and only then", () => {
  const spill = new EntryTable(4, 2, 4, false);
  const t = new EntryTable(4, 2, 4, true);
  t.spill = spill;
  const k = Buffer.alloc(4);
  const v = Buffer.alloc(2);
  const put = (key: number, value: number) => {
    k.writeUInt32LE(key);
    v.writeUInt16LE(value);
    const i = t.add(k);
    t.setValue(i, v);
    return i;
  };
  for (let i = 0; i < 300; i++) t.markHeld(put(i * 7919, i));
  assert.equal(t.heldCount, 300);
  put(0, 0);
  assert.equal(spill.size, 0, "the same value again: still held, nothing spilled");
  put(7919, 99);
  assert.equal(spill.size, 1);
  k.writeUInt32LE(7919);
  assert.equal(spill.toMap().get(k.toString("latin1")), Buffer.from([1, 0]).toString("latin1"), "the kernel's value");
  assert.equal(t.held[t.find(k)], 0);
  k.writeUInt32LE(2 * 7919);
  t.remove(t.find(k));
  assert.equal(spill.size, 2, "a removed held entry moves too");
  assert.equal(t.heldCount, 298);
  // A new key reusing a removed entry's number is not held.
  const i = put(123456, 5);
  assert.equal(t.held[i], 0);
  t.unholdAll();
  assert.equal(t.heldCount, 0);
  assert.equal(spill.size, 300, "the 298 still held, then: every key the kernel had, once");
  for (let j = 0; j < 300; j++) {
    k.writeUInt32LE(j * 7919);
    const s = spill.find(k);
    assert.ok(s >= 0, `key ${j}`);
    assert.equal(spill.values.readUInt16LE(s * 2), j, `the kernel's value of key ${j}`);
  }
});
