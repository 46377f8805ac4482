// Tests of the native addon (native/) through its validated TS entry point (src/native/index.ts), and of
// FakeMap against the real thing. Needs root: loads BPF programs, mounts a private bpffs and cgroup2, and
// builds network namespaces. Nothing is attached in the root network namespace or the root cgroup.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { FakeMap } from "../src/native/fake-map.js";
import * as native from "../src/native/index.js";
import type { BpfError, MapHandle } from "../src/native/index.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FIXTURE = join(ROOT, "bpf/tests/addon_fixture.o");
const ATTACH_SCRIPT = join(ROOT, "test/fixtures/native-attach.ts");
// Targets that cannot exist, so a broken validator can't reach anything real.
const NO_IFINDEX = 0x7fffffff;
const NO_CGROUP = "/nonexistent/bpxtest-native-cgroup";
// What the bpffs tests pin (by name via pinRoot, or explicitly).
const PINS = ["pinned_hash", "extra_pin"];

before(() => {
  assert.equal(
    process.getuid?.(),
    0,
    "native tests must run as root: they load BPF programs, mount bpffs/cgroup2 and create network namespaces",
  );
  assert.ok(existsSync(FIXTURE), `${FIXTURE} is missing: run \`make -C bpf\``);
  assert.ok(existsSync(native.ADDON_PATH), `${native.ADDON_PATH} is missing: build the addon (npm run build)`);
});

function run(cmd: string, args: string[], timeout = 10_000): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Runs f, which must throw; returns the error. */
function caught(f: () => unknown): BpfError {
  try {
    f();
  } catch (e) {
    return e as BpfError;
  }
  assert.fail("expected an exception");
}

/** The BpfError's code, or the result when it didn't throw. */
function outcome(f: () => unknown): unknown {
  try {
    return f();
  } catch (e) {
    const code = (e as BpfError).code;
    if (typeof code !== "string") throw e;
    return { error: code };
  }
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
};
const u64 = (n: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
};

/** Entries as sorted [keyHex, valueHex] pairs, for order-free comparison. */
function sortedEntries(m: MapHandle): [string, string][] {
  const { keys, values, count } = m.entries();
  const ks = m.info.keySize;
  const vs = m.valueSizeAll;
  assert.equal(keys.length, count * ks);
  assert.equal(values.length, count * vs);
  const out: [string, string][] = [];
  for (let i = 0; i < count; i++) {
    out.push([
      keys.subarray(i * ks, (i + 1) * ks).toString("hex"),
      values.subarray(i * vs, (i + 1) * vs).toString("hex"),
    ]);
  }
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

test("a failed operation throws a BpfError with code, errno, op and message", () => {
  const e = caught(() => new native.BpfObject("/nonexistent/bpxtest.o"));
  assert.ok(e instanceof Error);
  assert.equal(e.code, "ENOENT");
  assert.equal(e.errno, 2);
  assert.equal(e.op, "bpf_object__open_file");
  assert.match(e.message, /^bpf_object__open_file: No such file or directory \(ENOENT\)/);
  assert.ok(native.isBpfError(e));

  const p = caught(() => native.BpfMap.openPinned("/nonexistent/bpxtest-pin"));
  assert.equal(p.code, "ENOENT");
  assert.equal(p.op, "bpf_obj_get");
});

test("a failed load carries libbpf's last log lines in its message", () => {
  // A pin root that is not a bpffs: libbpf refuses to pin pinned_hash there and says why.
  const dir = mkdtempSync("/tmp/bpxtest-native-nobpffs-");
  try {
    const obj = new native.BpfObject(FIXTURE, { pinRoot: dir });
    try {
      const e = caught(() => obj.load());
      assert.equal(e.op, "bpf_object__load");
      assert.equal(e.code, "EINVAL");
      assert.match(e.message, /^bpf_object__load: Invalid argument \(EINVAL\)\n/);
      assert.match(e.message, /not on BPF FS/);
    } finally {
      obj.close();
    }
  } finally {
    rmdirSync(dir);
  }
});

test("arguments are validated before native code runs, with errors naming the argument", () => {
  const cases: [() => unknown, ErrorConstructor, RegExp][] = [
    [() => new native.BpfObject(42 as unknown as string), TypeError, /BpfObject: path must be a string, got number/],
    [() => new native.BpfObject(""), RangeError, /BpfObject: path must not be empty/],
    [() => new native.BpfObject("a\0b"), RangeError, /path must not contain NUL/],
    [() => new native.BpfObject(FIXTURE, "x" as unknown as object), TypeError, /options must be an object/],
    [
      () => new native.BpfObject(FIXTURE, { pinRoot: 1 as unknown as string }),
      TypeError,
      /options\.pinRoot must be a string/,
    ],
    [() => native.BpfMap.openPinned(undefined as unknown as string), TypeError, /openPinned: path must be a string/],
    [() => native.tcAttach(0, "ingress", 0), RangeError, /tcAttach: ifindex must be in \[1, 2147483647\], got 0/],
    [() => native.tcAttach(1.5, "ingress", 0), RangeError, /tcAttach: ifindex must be an integer/],
    [
      () => native.tcAttach(NO_IFINDEX, "sideways" as "ingress", 0),
      TypeError,
      /tcAttach: direction must be "ingress" or "egress"/,
    ],
    [() => native.tcAttach(NO_IFINDEX, "ingress", -1), RangeError, /tcAttach: progFd/],
    [
      () => native.tcAttach(NO_IFINDEX, "ingress", "3" as unknown as number),
      TypeError,
      /tcAttach: progFd must be a number/,
    ],
    [() => native.tcAttach(NO_IFINDEX, "ingress", 0, { priority: 70000 }), RangeError, /tcAttach: options\.priority/],
    [() => native.tcAttach(NO_IFINDEX, "ingress", 0, { handle: 0 }), RangeError, /tcAttach: options\.handle/],
    [
      () => native.tcAttach(NO_IFINDEX, "ingress", 0, { replace: 1 as unknown as boolean }),
      TypeError,
      /options\.replace must be a boolean/,
    ],
    [() => native.tcDetach(NO_IFINDEX, "up" as "ingress"), TypeError, /tcDetach: direction/],
    [() => native.tcQuery(-3, "ingress"), RangeError, /tcQuery: ifindex/],
    [
      () => native.tcHookDestroy(null as unknown as number),
      TypeError,
      /tcHookDestroy: ifindex must be a number, got null/,
    ],
    [() => native.xdpAttach(NO_IFINDEX, 0, 0x100), RangeError, /xdpAttach: flags has unknown bits 0x100/],
    [() => native.xdpDetach(NO_IFINDEX, -1), RangeError, /xdpDetach: flags/],
    [() => native.xdpQuery(NaN), RangeError, /xdpQuery: ifindex must be an integer/],
    [() => native.cgroupAttach("", 0, 1), RangeError, /cgroupAttach: cgroupPath must not be empty/],
    [() => native.cgroupAttach(NO_CGROUP, 0, 1, 8), RangeError, /cgroupAttach: flags has unknown bits 0x8/],
    [() => native.cgroupAttach(NO_CGROUP, 0, 1000), RangeError, /cgroupAttach: attachType/],
    [() => native.cgroupDetach(NO_CGROUP, 0.5, 1), RangeError, /cgroupDetach: progFd/],
    [
      () => native.cgroupQuery(NO_CGROUP, "1" as unknown as number),
      TypeError,
      /cgroupQuery: attachType must be a number/,
    ],
    [() => native.programInfoById(0), RangeError, /programInfoById: id/],
    [() => native.ifNameToIndex("x".repeat(16)), RangeError, /ifNameToIndex: name must be shorter than 16/],
    [() => native.isBpffs(7 as unknown as string), TypeError, /isBpffs: path must be a string/],
    [() => native.mountBpffs(""), RangeError, /mountBpffs: path must not be empty/],
    [() => native.umount({} as unknown as string), TypeError, /umount: path must be a string, got object/],
  ];
  for (const [f, type, message] of cases) {
    const e = caught(f);
    assert.ok(
      e instanceof type,
      `${String(f)}: expected ${type.name}, got ${(e as Error).constructor.name}: ${(e as Error).message}`,
    );
    assert.match(e.message, message);
  }
});

test("constants agree with the addon's", () => {
  assert.deepEqual({ ...native.loadAddon().constants }, { ...native.constants });
});

test("host helpers: possibleCpus, ifNameToIndex, isBpffs", () => {
  const cpus = native.possibleCpus();
  assert.ok(Number.isInteger(cpus) && cpus >= 1);
  assert.equal(native.ifNameToIndex("bpxnosuchif0"), 0);
  assert.ok(native.ifNameToIndex("lo") >= 1);
  assert.equal(native.isBpffs("/tmp"), false);
  assert.equal(caught(() => native.isBpffs("/nonexistent/x")).code, "ENOENT");
  assert.equal(native.programInfoById(0xfffffff0), null);
});

describe("loaded fixture in a private bpffs", () => {
  let dir = "";
  let mounted = false;
  const objects: native.BpfObject[] = [];
  let obj: native.BpfObject;

  before(() => {
    dir = mkdtempSync("/tmp/bpxtest-native-bpffs-");
    native.mountBpffs(dir);
    mounted = true;
    obj = new native.BpfObject(FIXTURE, { pinRoot: dir });
    objects.push(obj);
    obj.load();
  });

  after(() => {
    for (const o of objects) o.close();
    if (mounted) {
      // Only our pins: a fresh bpffs may also hold the kernel's own maps.debug/progs.debug.
      for (const f of readdirSync(dir)) if (PINS.includes(f)) unlinkSync(join(dir, f));
      native.umount(dir);
    }
    if (dir) rmdirSync(dir);
  });

  test("object introspection: programs, maps, program info", () => {
    assert.ok(native.isBpffs(dir));
    assert.deepEqual(obj.programNames().sort(), ["cg_egress_count", "tc_count", "xdp_count"]);
    const maps = new Map(obj.maps().map((m) => [m.name, m]));
    for (const name of ["tc_counter", "xdp_counter", "cg_counter", "test_hash", "pinned_hash", "percpu_arr"]) {
      assert.ok(maps.get(name)!.id > 0, `${name} has a kernel id after load`);
    }
    assert.deepEqual(
      { ...maps.get("test_hash")!, id: 0 },
      { name: "test_hash", type: native.constants.BPF_MAP_TYPE_HASH, keySize: 4, valueSize: 8, maxEntries: 16, id: 0 },
    );
    const p = obj.program("tc_count");
    assert.equal(p.name, "tc_count");
    assert.ok(p.fd > 0);
    assert.equal(p.info.type, 3 /* BPF_PROG_TYPE_SCHED_CLS */);
    assert.match(p.info.tag, /^[0-9a-f]{16}$/);
    assert.notEqual(p.info.tag, "0".repeat(16));
    assert.deepEqual(native.programInfoById(p.info.id), { ...p.info, name: "tc_count" });
    assert.equal(caught(() => obj.map("nope")).code, "ENOENT");
    assert.equal(caught(() => obj.program("nope")).op, "bpf_object__find_program_by_name");
  });

  test("noPin: every map is the object's own, neither reused from nor pinned under pinRoot", () => {
    const pinsBefore = readdirSync(dir).sort();
    obj.map("pinned_hash").update(u32(7), u64(0xbeef));
    const copy = new native.BpfObject(FIXTURE, { pinRoot: dir, noPin: true });
    objects.push(copy);
    copy.load();
    assert.notEqual(copy.map("pinned_hash").info.id, obj.map("pinned_hash").info.id, "a new kernel map");
    assert.equal(copy.map("pinned_hash").lookup(u32(7)), null, "empty: not the pinned map's contents");
    assert.deepEqual(readdirSync(dir).sort(), pinsBefore, "nothing pinned");
    obj.map("pinned_hash").delete(u32(7));
    assert.throws(
      () => new native.BpfObject(FIXTURE, { noPin: "yes" as unknown as boolean }),
      /options\.noPin must be a boolean/,
    );
  });

  test("a pinned map is pinned under pinRoot and reused by the next load", () => {
    const pin = join(dir, "pinned_hash");
    assert.ok(existsSync(pin), "pinned_hash pinned by name under pinRoot");
    obj.map("pinned_hash").update(u32(5), u64(0xfeed));

    const second = new native.BpfObject(FIXTURE, { pinRoot: dir });
    objects.push(second);
    second.load();
    assert.equal(second.map("pinned_hash").info.id, obj.map("pinned_hash").info.id, "same kernel map");
    assert.deepEqual(second.map("pinned_hash").lookup(u32(5)), u64(0xfeed));
    assert.notEqual(second.map("test_hash").info.id, obj.map("test_hash").info.id, "unpinned maps are new");

    const opened = native.BpfMap.openPinned(pin);
    try {
      assert.equal(opened.info.id, obj.map("pinned_hash").info.id);
      assert.equal(opened.info.name, "pinned_hash");
      assert.deepEqual(opened.lookup(u32(5)), u64(0xfeed));
      opened.update(u32(6), u64(7));
      assert.deepEqual(obj.map("pinned_hash").lookup(u32(6)), u64(7));
    } finally {
      opened.close();
    }
    assert.equal(caught(() => opened.lookup(u32(5))).code, "EBADF");

    // An explicit pin of another map.
    obj.map("test_hash").pin(join(dir, "extra_pin"));
    const extra = native.BpfMap.openPinned(join(dir, "extra_pin"));
    assert.equal(extra.info.id, obj.map("test_hash").info.id);
    extra.close();
  });

  test("hash map: lookup/update(flags)/delete/batches/entries; FakeMap gives the same results", () => {
    const real = obj.map("test_hash");
    const fake = new FakeMap({
      name: "test_hash",
      type: native.constants.BPF_MAP_TYPE_HASH,
      keySize: 4,
      valueSize: 8,
      maxEntries: 16,
    });
    assert.deepEqual(fake.info, { ...real.info, id: 0 });
    assert.equal(fake.valueSizeAll, real.valueSizeAll);
    const { BPF_ANY, BPF_NOEXIST, BPF_EXIST } = native.constants;
    const keys = (...ns: number[]) => Buffer.concat(ns.map(u32));
    const vals = (...ns: number[]) => Buffer.concat(ns.map(u64));
    const seq: [string, (m: MapHandle) => unknown][] = [
      ["lookup absent", (m) => m.lookup(u32(1))],
      ["update", (m) => m.update(u32(1), u64(10))],
      ["lookup", (m) => m.lookup(u32(1))],
      ["noexist on present", (m) => m.update(u32(1), u64(11), BPF_NOEXIST)],
      ["exist on absent", (m) => m.update(u32(2), u64(20), BPF_EXIST)],
      ["exist on present", (m) => m.update(u32(1), u64(12), BPF_EXIST)],
      ["noexist on absent", (m) => m.update(u32(2), u64(20), BPF_NOEXIST)],
      ["any", (m) => m.update(u32(3), u64(30), BPF_ANY)],
      ["lookup updated", (m) => m.lookup(u32(1))],
      ["delete present", (m) => m.delete(u32(3))],
      ["delete absent", (m) => m.delete(u32(3))],
      ["updateBatch", (m) => m.updateBatch(keys(100, 101, 102, 103, 104), vals(0, 1, 2, 3, 4), 5)],
      ["updateBatch empty", (m) => m.updateBatch(Buffer.alloc(0), Buffer.alloc(0), 0)],
      ["deleteBatch with absent keys", (m) => m.deleteBatch(keys(100, 999, 102, 998, 104), 5)],
      ["deleteBatch all absent", (m) => m.deleteBatch(keys(500, 501), 2)],
      ["entries", (m) => sortedEntries(m)],
      [
        "fill to max",
        (m) =>
          m.updateBatch(
            keys(...Array.from({ length: 12 }, (_, i) => 200 + i)),
            vals(...Array.from({ length: 12 }, () => 9)),
            12,
          ),
      ],
      ["insert when full", (m) => m.update(u32(300), u64(1))],
      ["replace when full", (m) => m.update(u32(1), u64(13))],
      ["count when full", (m) => m.entries().count],
      ["updateBatch NOEXIST stops at existing", (m) => m.updateBatch(keys(1), vals(5), 1, BPF_NOEXIST)],
      ["final entries", (m) => sortedEntries(m)],
    ];
    const realOut = seq.map(([, f]) => outcome(() => f(real)));
    const fakeOut = seq.map(([, f]) => outcome(() => f(fake)));
    for (let i = 0; i < seq.length; i++) assert.deepEqual(fakeOut[i], realOut[i], `step "${seq[i]![0]}"`);

    // And the real results are the kernel's, as documented.
    const at = (name: string) => realOut[seq.findIndex(([n]) => n === name)];
    assert.equal(at("lookup absent"), null);
    assert.deepEqual(at("lookup"), u64(10));
    assert.deepEqual(at("noexist on present"), { error: "EEXIST" });
    assert.deepEqual(at("exist on absent"), { error: "ENOENT" });
    assert.deepEqual(at("lookup updated"), u64(12));
    assert.equal(at("delete present"), true);
    assert.equal(at("delete absent"), false);
    assert.equal(at("deleteBatch with absent keys"), 3);
    assert.equal(at("deleteBatch all absent"), 0);
    assert.deepEqual(
      at("entries"),
      [
        [1, 12],
        [2, 20],
        [101, 1],
        [103, 3],
      ].map(([k, v]) => [u32(k!).toString("hex"), u64(v!).toString("hex")]),
    );
    assert.deepEqual(at("insert when full"), { error: "E2BIG" });
    assert.equal(at("replace when full"), undefined);
    assert.equal(at("count when full"), 16);
    assert.deepEqual(at("updateBatch NOEXIST stops at existing"), { error: "EEXIST" });

    // Validation by the wrapper (and identically by FakeMap).
    for (const m of [real, fake] as MapHandle[]) {
      assert.throws(() => m.lookup(Buffer.alloc(3)), {
        name: "RangeError",
        message: /BpfMap\.lookup: key must be 4 bytes \(the map's keySize\), got 3/,
      });
      assert.throws(() => m.update(u32(1), Buffer.alloc(4)), {
        name: "RangeError",
        message: /BpfMap\.update: value must be 8 bytes/,
      });
      assert.throws(() => m.update(u32(1), u64(1), 3), {
        name: "RangeError",
        message: /BpfMap\.update: flags must be in \[0, 2\]/,
      });
      assert.throws(() => m.delete("k" as unknown as Buffer), {
        name: "TypeError",
        message: /BpfMap\.delete: key must be a Buffer, got string/,
      });
      assert.throws(() => m.updateBatch(keys(1, 2), vals(1), 2), {
        name: "RangeError",
        message: /updateBatch: values must be 16 bytes/,
      });
      assert.throws(() => m.deleteBatch(keys(1, 2), 3), {
        name: "RangeError",
        message: /deleteBatch: keys must be 12 bytes/,
      });
      assert.throws(() => m.deleteBatch(keys(1), -1), { name: "RangeError", message: /deleteBatch: count/ });
    }
  });

  test("per-CPU array: valueSizeAll, lookup length, array semantics; FakeMap agrees", () => {
    const cpus = native.possibleCpus();
    const real = obj.map("percpu_arr");
    assert.equal(real.info.valueSize, 4);
    assert.equal(real.valueSizeAll, 8 * cpus, "4-byte values round up to 8 per CPU");
    assert.equal(real.lookup(u32(0))!.length, 8 * cpus);
    const fake = new FakeMap({
      name: "percpu_arr",
      type: native.constants.BPF_MAP_TYPE_PERCPU_ARRAY,
      keySize: 4,
      valueSize: 4,
      maxEntries: 4,
      possibleCpus: cpus,
    });
    assert.equal(fake.valueSizeAll, real.valueSizeAll);
    const v = Buffer.alloc(real.valueSizeAll);
    for (let c = 0; c < cpus; c++) v.writeUInt32LE(c + 1, c * 8);
    const seq: [string, (m: MapHandle) => unknown][] = [
      ["update index 3", (m) => m.update(u32(3), v)],
      ["lookup index 3", (m) => m.lookup(u32(3))],
      ["lookup beyond", (m) => m.lookup(u32(4))],
      ["update beyond", (m) => m.update(u32(4), v)],
      ["noexist", (m) => m.update(u32(1), v, native.constants.BPF_NOEXIST)],
      ["delete", (m) => m.delete(u32(1))],
      ["deleteBatch", (m) => m.deleteBatch(u32(1), 1)],
      ["updateBatch", (m) => m.updateBatch(Buffer.concat([u32(1), u32(2)]), Buffer.concat([v, v]), 2)],
      ["entries", (m) => sortedEntries(m)],
    ];
    const realOut = seq.map(([, f]) => outcome(() => f(real)));
    const fakeOut = seq.map(([, f]) => outcome(() => f(fake)));
    for (let i = 0; i < seq.length; i++) assert.deepEqual(fakeOut[i], realOut[i], `step "${seq[i]![0]}"`);
    assert.deepEqual(realOut[1], v);
    assert.equal(realOut[2], null);
    assert.deepEqual(realOut[3], { error: "E2BIG" });
    assert.deepEqual(realOut[5], { error: "EINVAL" });
    assert.equal((realOut[8] as unknown[]).length, 4);
  });

  test("FakeMap: injected failures, LRU eviction", () => {
    const m = new FakeMap({ keySize: 4, valueSize: 8, maxEntries: 4 });
    m.failNthWrite(3, "ENOMEM");
    m.update(u32(1), u64(1));
    const keys = Buffer.concat([u32(2), u32(3), u32(4)]);
    const e = caught(() => m.updateBatch(keys, Buffer.concat([u64(2), u64(3), u64(4)]), 3));
    assert.equal(e.code, "ENOMEM");
    assert.equal(e.errno, 12);
    assert.equal(e.op, "bpf_map_update_batch");
    assert.deepEqual(
      sortedEntries(m).map(([k]) => k),
      [u32(1), u32(2)].map((b) => b.toString("hex")),
      "writes before the failing one stay",
    );
    m.update(u32(3), u64(3)); // only the nth write fails
    m.failNthWrite(1, "EPERM");
    assert.equal(caught(() => m.delete(u32(1))).op, "bpf_map_delete_elem");
    assert.equal(m.entries().count, 3);

    const lru = new FakeMap({ type: native.constants.BPF_MAP_TYPE_LRU_HASH, keySize: 4, valueSize: 8, maxEntries: 2 });
    lru.update(u32(1), u64(1));
    lru.update(u32(2), u64(2));
    lru.update(u32(3), u64(3));
    assert.equal(lru.lookup(u32(1)), null);
    assert.equal(lru.entries().count, 2);
  });

  test("testRun: tc program on an Ethernet+IPv4+UDP packet, 1000 times", async () => {
    const cpus = native.possibleCpus();
    const counter = obj.map("tc_counter");
    const perCpu = obj.map("percpu_arr");
    const sumPerCpu = () => {
      const b = perCpu.lookup(u32(0))!;
      let s = 0;
      for (let c = 0; c < cpus; c++) s += b.readUInt32LE(c * 8);
      return s;
    };
    const before = counter.lookup(u32(0))!.readBigUInt64LE(0);
    const perCpuBefore = sumPerCpu();
    const pkt = udpPacket();
    const r = await obj.program("tc_count").testRun({ data: pkt, repeat: 1000 });
    assert.equal(r.retval, native.constants.TC_ACT_OK);
    assert.deepEqual(r.data, pkt);
    assert.ok(r.durationNs > 0, `durationNs ${r.durationNs}`);
    assert.equal(counter.lookup(u32(0))!.readBigUInt64LE(0) - before, 1000n);
    assert.equal(sumPerCpu() - perCpuBefore, 1000);

    const x = await obj.program("xdp_count").testRun({ data: pkt });
    assert.equal(x.retval, native.constants.XDP_PASS);
    assert.deepEqual(x.data, pkt);

    // Too little room for the packet: the kernel's ENOSPC comes back as a rejected BpfError.
    await assert.rejects(obj.program("tc_count").testRun({ data: pkt, dataSizeOut: 10 }), {
      code: "ENOSPC",
      errno: 28,
      op: "bpf_prog_test_run_opts",
    });
    assert.throws(() => obj.program("tc_count").testRun({ data: "x" as unknown as Buffer }), {
      name: "TypeError",
      message: /options\.data must be a Buffer/,
    });
    assert.throws(() => obj.program("tc_count").testRun({ data: pkt, repeat: 0 }), {
      name: "RangeError",
      message: /options\.repeat/,
    });
  });

  test("map sizes set before load; batched reads of 20,000 entries; async batches off the event loop", async () => {
    const o = new native.BpfObject(FIXTURE, { pinRoot: dir });
    objects.push(o);
    o.setMapMaxEntries("test_hash", 20_000);
    o.load();
    assert.throws(() => o.setMapMaxEntries("test_hash", 10), { code: "EBUSY" }, "sizes are fixed once loaded");
    assert.throws(() => new native.BpfObject(FIXTURE).setMapMaxEntries("nope", 10), { code: "ENOENT" });
    const m = o.map("test_hash");
    assert.equal(m.info.maxEntries, 20_000);
    const n = 20_000;
    const keys = Buffer.alloc(4 * n);
    const values = Buffer.alloc(8 * n);
    for (let i = 0; i < n; i++) {
      keys.writeUInt32LE(i, 4 * i);
      values.writeBigUInt64LE(BigInt(i) * 3n, 8 * i);
    }
    await m.updateBatchAsync(keys, values, n);
    const read = (e: native.MapEntries) => {
      const got = new Map<number, bigint>();
      for (let i = 0; i < e.count; i++) got.set(e.keys.readUInt32LE(4 * i), e.values.readBigUInt64LE(8 * i));
      return got;
    };
    const sync = read(m.entries());
    assert.equal(sync.size, n);
    for (let i = 0; i < n; i += 997) assert.equal(sync.get(i), BigInt(i) * 3n);
    assert.deepEqual(read(await m.entriesAsync()), sync);
    // A full map refuses more (E2BIG) and the async form rejects with the kernel's error.
    await assert.rejects(m.updateBatchAsync(u32(n + 1), u64(1), 1), { code: "E2BIG" });
    assert.equal(await m.deleteBatchAsync(keys.subarray(0, 4 * 100), 100), 100);
    assert.equal(m.entries().count, n - 100);
  });

  test("handles fail cleanly (EBADF) after their object is closed", () => {
    const o = new native.BpfObject(FIXTURE, { pinRoot: dir });
    objects.push(o);
    const beforeLoad = o.map("test_hash");
    assert.equal(beforeLoad.info.id, 0);
    assert.equal(caught(() => beforeLoad.lookup(u32(1))).code, "EBADF", "not loaded yet");
    o.load();
    const m = o.map("test_hash");
    const p = o.program("xdp_count");
    m.update(u32(1), u64(1));
    o.close();
    o.close(); // idempotent
    for (const f of [
      () => m.lookup(u32(1)),
      () => m.update(u32(1), u64(1)),
      () => m.entries(),
      () => m.info,
      () => p.fd,
      () => p.info,
      () => o.map("test_hash"),
      () => o.programNames(),
      () => o.load(),
    ]) {
      const e = caught(f);
      assert.equal(e.code, "EBADF");
      assert.match(e.message, /is closed \(EBADF\)/);
    }
    assert.throws(() => p.testRun({ data: udpPacket() }), { code: "EBADF" });
    assert.equal(p.name, "xdp_count");
  });

  test("cgroup attach/query/detach on a child of a private cgroup2 mount", () => {
    const cgRoot = mkdtempSync("/tmp/bpxtest-native-cgroup-");
    let cgMounted = false;
    let child = "";
    let attached = false;
    const prog = obj.program("cg_egress_count");
    const type = native.constants.BPF_CGROUP_INET_EGRESS;
    try {
      run("mount", ["-t", "cgroup2", "none", cgRoot]);
      cgMounted = true;
      child = join(cgRoot, `bpxtest-${process.pid}`);
      mkdirSync(child);
      assert.notEqual(child, cgRoot, "never the root cgroup");
      assert.deepEqual(native.cgroupQuery(child, type), []);
      native.cgroupAttach(child, prog.fd, type, native.constants.BPF_F_ALLOW_MULTI);
      attached = true;
      assert.deepEqual(native.cgroupQuery(child, type), [prog.info.id]);
      assert.deepEqual(native.cgroupQuery(child, native.constants.BPF_CGROUP_INET_INGRESS), []);
      native.cgroupDetach(child, prog.fd, type);
      attached = false;
      assert.deepEqual(native.cgroupQuery(child, type), []);
      const e = caught(() => native.cgroupDetach(child, prog.fd, type));
      assert.equal(e.op, "bpf_prog_detach2");
      assert.equal(e.code, "ENOENT");
      assert.equal(caught(() => native.cgroupQuery(join(cgRoot, "nope"), type)).code, "ENOENT");
    } finally {
      if (attached) native.cgroupDetach(child, prog.fd, type);
      if (child && existsSync(child)) rmdirSync(child);
      if (cgMounted) native.umount(cgRoot);
      rmdirSync(cgRoot);
    }
  });
});

describe("tc and XDP attach inside test network namespaces", () => {
  const nsA = `bpxtest-native-${process.pid}-a`;
  const nsB = `bpxtest-native-${process.pid}-b`;

  before(() => {
    run("ip", ["netns", "add", nsA]);
    run("ip", ["netns", "add", nsB]);
    run("ip", ["-n", nsA, "link", "add", "name", "bpx0", "type", "veth", "peer", "name", "bpx1", "netns", nsB]);
    run("ip", ["-n", nsA, "addr", "add", "192.0.2.1/24", "dev", "bpx0"]);
    run("ip", ["-n", nsB, "addr", "add", "192.0.2.2/24", "dev", "bpx1"]);
    for (const [ns, dev] of [
      [nsA, "bpx0"],
      [nsB, "bpx1"],
      [nsA, "lo"],
      [nsB, "lo"],
    ] as const) {
      run("ip", ["-n", ns, "link", "set", dev, "up"]);
    }
  });

  after(() => {
    for (const ns of [nsA, nsB]) spawnSync("ip", ["netns", "del", ns], { timeout: 10_000 });
  });

  test("attach, query, traffic counted, close keeps attachment, detach, destroy", () => {
    const r = spawnSync(
      "ip",
      ["netns", "exec", nsA, process.execPath, "--import", "tsx", ATTACH_SCRIPT, FIXTURE, "bpx0", "192.0.2.2"],
      { cwd: ROOT, encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(r.error, undefined, `child: ${r.error}`);
    assert.equal(r.status, 0, `child exited ${r.status}: ${r.stderr}`);
    // What the attach script reports; the fields compared as opaque values stay unknown.
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as Record<string, unknown> & {
      error?: string;
      ifindex: number;
      tcProgInfo: { id: number; name: string };
      countersAfter: { tc: number; xdp: number };
    };
    assert.equal(out.error, undefined, out.error);
    assert.ok(out.ifindex > 0);
    assert.equal(out.tcQueryBefore, null);
    assert.equal(out.tcDetachBefore, false);
    assert.equal(out.xdpQueryBefore, 0);
    assert.equal(out.tcAttachNoReplace, "EEXIST");
    assert.deepEqual(out.tcQueryAttached, { progId: out.tcProgId });
    assert.equal(out.tcQueryEgress, null);
    assert.equal(out.tcQueryOtherPriority, null);
    assert.equal(out.tcProgInfo.id, out.tcProgId);
    assert.equal(out.tcProgInfo.name, "tc_count");
    assert.equal(out.xdpQueryAttached, out.xdpProgId);
    assert.equal(out.xdpAttachIfNoExist, "EBUSY");
    assert.equal(out.xdpReplaceWrongOld, "EEXIST", "XDP_FLAGS_REPLACE naming a program that is not attached");
    assert.equal(out.xdpQueryNotReplaced, out.xdpProgId, "the attached program stayed");
    assert.equal(out.xdpReplaceRightOld, null, "XDP_FLAGS_REPLACE naming the attached program");
    assert.equal(out.xdpQueryReplaced, true, "the new program replaced it");
    assert.deepEqual(out.countersBefore, { tc: 0, xdp: 0 });
    assert.ok(out.countersAfter.tc > 0, `tc counter rose: ${JSON.stringify(out.countersAfter)}`);
    assert.ok(out.countersAfter.xdp > 0, `xdp counter rose: ${JSON.stringify(out.countersAfter)}`);
    assert.deepEqual(out.tcQueryAfterClose, { progId: out.tcProgId });
    assert.equal(out.xdpQueryAfterClose, out.xdpProgId);
    assert.equal(out.tcDetach, true);
    assert.equal(out.tcQueryDetached, null);
    assert.equal(out.tcDetachAgain, false);
    assert.equal(out.tcHookDestroy, true);
    assert.equal(out.tcHookDestroyAgain, false);
    assert.equal(out.xdpQueryDetached, 0);
  });
});

/** 14-byte Ethernet + 20-byte IPv4 + 8-byte UDP + payload, checksums filled in. */
function udpPacket(): Buffer {
  const payload = Buffer.from("bpfproxy native test");
  const b = Buffer.alloc(14 + 20 + 8 + payload.length);
  Buffer.from("020000000002020000000001", "hex").copy(b, 0); // dst, src MAC
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + 8 + payload.length, 16);
  b[22] = 64;
  b[23] = 17;
  Buffer.from([10, 0, 0, 1]).copy(b, 26);
  Buffer.from([10, 96, 0, 10]).copy(b, 30);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  b.writeUInt16BE(~sum & 0xffff, 24);
  b.writeUInt16BE(40000, 34);
  b.writeUInt16BE(53, 36);
  b.writeUInt16BE(8 + payload.length, 38);
  payload.copy(b, 42);
  return b;
}
