// The one reader of a BPF map into the latin1 mirror both reconcilers diff against (src/dataplane/bpf/map-contents.ts),
// on FakeMap, which test/native.test.ts checks against the kernel's maps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeMap } from "../src/native/fake-map.js";
import { readContents, readContentsAsync } from "../src/dataplane/bpf/map-contents.js";

const PERCPU_HASH = 5;

function filled(count: number, o: { type?: number; possibleCpus?: number } = {}): FakeMap {
  const m = new FakeMap({ keySize: 4, valueSize: 8, maxEntries: count, ...o });
  for (let i = 0; i < count; i++) {
    const k = Buffer.alloc(4);
    k.writeUInt32BE(i);
    const v = Buffer.alloc(m.valueSizeAll, i & 0xff);
    v[0] = 0xff; // a byte above 0x7f: latin1 keeps it, utf8 would not
    m.update(k, v);
  }
  return m;
}

test("every entry comes back byte for byte; per-CPU values span every CPU", () => {
  for (const m of [filled(300), filled(300, { type: PERCPU_HASH, possibleCpus: 3 })]) {
    const c = readContents(m);
    assert.equal(c.size, 300);
    const k = Buffer.alloc(4);
    k.writeUInt32BE(7);
    const v = c.get(k.toString("latin1"));
    assert.ok(v !== undefined);
    assert.deepEqual(Buffer.from(v, "latin1"), m.lookup(k));
    assert.equal(v.length, m.valueSizeAll);
  }
});

test("the async read gives the same contents and lets the event loop run between chunks", async () => {
  const m = filled(5000);
  const want = readContents(m);
  let done = false;
  let ranDuringRead = false;
  setImmediate(() => (ranDuringRead = !done));
  const got = await readContentsAsync(m, 1000);
  done = true;
  assert.deepEqual(got, want);
  assert.ok(ranDuringRead, "a callback queued on the event loop ran while 5000 entries were read 1000 at a time");

  // One chunk: nothing to yield between, so the queued callback waits for the read.
  done = false;
  ranDuringRead = false;
  setImmediate(() => (ranDuringRead = !done));
  assert.deepEqual(await readContentsAsync(m, 5000), want);
  done = true;
  assert.equal(ranDuringRead, false);
  await new Promise((resolve) => setImmediate(resolve));
});

test("a chunk size below 1 is refused, not looped on", async () => {
  await assert.rejects(readContentsAsync(filled(1), 0), /yieldEvery must be 1 or more/);
});
