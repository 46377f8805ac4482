// Maglev table and flow hash: the properties users rely on (even shares, the same table on every
// node whatever the backends' order, minimal disruption when the set changes), and the hash twin
// of bpf/lib/maglev.h (its agreement with the program is checked on packets in datapath.test.ts).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { maglevFlowHash, maglevTable, MAGLEV_TABLE_SIZE } from "../src/dataplane/bpf/maglev.js";

const names = (n: number, base = 0) =>
  Array.from({ length: n }, (_, i) => `10.244.${(base + i) >> 8}.${(base + i) & 255}:8080`);

function shares(table: Int32Array, n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const i of table) c[i]!++;
  return c;
}

/** Fraction of entries whose backend (by name) differs between two tables. */
function changed(a: Int32Array, an: string[], b: Int32Array, bn: string[]): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) if (an[a[i]!] !== bn[b[i]!]) d++;
  return d / a.length;
}

describe("Maglev table", () => {
  test("refuses a size that is not prime", () => {
    assert.throws(() => maglevTable(["a"], 16384), /prime/);
  });

  test("no backends: every entry is -1", () => {
    assert.ok(maglevTable([], 251).every((x) => x === -1));
  });

  for (const n of [1, 2, 3, 7, 10, 100, 1000]) {
    test(`${n} backends: every entry names a backend and shares differ by at most one entry`, () => {
      const t = maglevTable(names(n));
      assert.equal(t.length, MAGLEV_TABLE_SIZE);
      const s = shares(t, n);
      assert.ok(
        s.every((x) => x > 0),
        "every backend owns entries",
      );
      assert.ok(Math.max(...s) - Math.min(...s) <= 1, `shares ${Math.min(...s)}..${Math.max(...s)}`);
    });
  }

  test("the table depends on the set of backends, not on their order (every node builds the same)", () => {
    const a = names(20);
    const b = [...a].reverse();
    const ta = maglevTable(a);
    const tb = maglevTable(b);
    assert.equal(changed(ta, a, tb, b), 0);
  });

  for (const n of [2, 10, 50]) {
    test(`adding a backend to ${n} moves about 1/${n + 1} of the entries, nearly all to the new one`, () => {
      const a = names(n);
      const b = [...a, "10.250.0.1:8080"];
      const ta = maglevTable(a);
      const tb = maglevTable(b);
      const moved = changed(ta, a, tb, b);
      const ideal = 1 / (n + 1);
      assert.ok(moved >= ideal * 0.95 && moved <= ideal + 0.03, `moved ${moved.toFixed(4)}, ideal ${ideal.toFixed(4)}`);
      let betweenOld = 0;
      for (let i = 0; i < ta.length; i++) if (tb[i] !== n && a[ta[i]!] !== b[tb[i]!]) betweenOld++;
      assert.ok(betweenOld / ta.length < 0.03, `entries moved between old backends: ${betweenOld}`);
    });

    test(`removing one of ${n} backends moves its entries and few others`, () => {
      const a = names(n);
      const b = a.slice(1);
      const ta = maglevTable(a);
      const tb = maglevTable(b);
      let others = 0;
      for (let i = 0; i < ta.length; i++) if (ta[i] !== 0 && a[ta[i]!] !== b[tb[i]!]) others++;
      assert.ok(others / ta.length < 0.03, `entries of surviving backends moved: ${others}`);
    });
  }
});

describe("Maglev flow hash", () => {
  test("the hash covers every part of the 5-tuple", () => {
    const h = maglevFlowHash("10.244.1.10", "10.96.0.10", 40000, 80, 6);
    assert.notEqual(h, maglevFlowHash("10.244.1.11", "10.96.0.10", 40000, 80, 6));
    assert.notEqual(h, maglevFlowHash("10.244.1.10", "10.96.0.11", 40000, 80, 6));
    assert.notEqual(h, maglevFlowHash("10.244.1.10", "10.96.0.10", 40001, 80, 6));
    assert.notEqual(h, maglevFlowHash("10.244.1.10", "10.96.0.10", 40000, 81, 6));
    assert.notEqual(h, maglevFlowHash("10.244.1.10", "10.96.0.10", 40000, 80, 17));
  });
});
