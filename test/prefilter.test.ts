// The daemon's side of the pre-filter (src/dataplane/bpf/prefilter.ts) against a FakeMap with array semantics: the
// bitmap covers every frontend and backend, is a superset while a sync writes, and follows removals.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeMap } from "../src/native/fake-map.js";
import {
  PackedLists,
  Prefilter,
  PREFILTER_READY_SLOT,
  PREFILTER_WORDS,
  prefilterBit,
} from "../src/dataplane/bpf/prefilter.js";
import type { Frontend, NodeModel } from "../src/model/types.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { encodedBits } from "./fixtures/prefilter-bits.js";
import { MAP_CODECS, MAP_NAMES } from "../src/dataplane/bpf/abi.js";

const fe = (address: string, port: number, backend: string, type: Frontend["type"] = "ClusterIP"): Frontend => ({
  service: `default/s-${port}`,
  portName: "",
  type,
  address,
  port,
  protocol: "TCP",
  scope: "internal",
  sessionAffinity: { type: "None" },
  algorithm: "random",
  backends: [{ address: backend, port: 8080, state: "active", nodeLocal: false }],
});
const model = (frontends: Frontend[], nodePortIPs: string[] = []): NodeModel => ({
  node: "n",
  frontends,
  extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })),
  nodePortIPs,
});

function kernelBit(map: FakeMap, bit: number): boolean {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(bit >>> 6);
  const v = map.lookup(key);
  return !!v && ((v.readBigUInt64LE(0) >> BigInt(bit & 63)) & 1n) === 1n;
}
const newMap = () => new FakeMap({ type: 2, keySize: 4, valueSize: 8, maxEntries: PREFILTER_WORDS + 1 });
const lbMaps = (backends = 64) => {
  const lb = (name: keyof typeof MAP_CODECS, maxEntries = 64) =>
    new FakeMap({ name, keySize: MAP_CODECS[name].key.size, valueSize: MAP_CODECS[name].value.size, maxEntries });
  return {
    services: lb(MAP_NAMES.services),
    backends: lb(MAP_NAMES.backends, backends),
    revNat: lb(MAP_NAMES.revNat),
    svcMeta: lb(MAP_NAMES.svcMeta),
    maglev: lb(MAP_NAMES.maglev),
    affinityMatch: lb(MAP_NAMES.affinityMatch),
    services6: lb(MAP_NAMES.services6),
    backends6: lb(MAP_NAMES.backends6),
  };
};

/**
 * The data plane's order (BpfDataplane.sync): the reconciler encodes, hands the pre-filter the bits of what it
 * encoded (before()), writes, then after() with the Services it held back. `during` runs between before() and
 * the reconciler's writes.
 */
async function syncer(pf: Prefilter, backends = 64) {
  const maps = lbMaps(backends);
  const r = new LbReconciler(maps);
  await r.restore();
  const sync = async (m: NodeModel, during?: () => void, full = false) => {
    const res = await r.apply(m, {
      full,
      beforeWrite: async (bits, complete) => {
        await pf.before(bits, m.nodePortIPs ?? [], complete);
        during?.();
      },
    });
    await pf.after(res.heldBack);
    return res;
  };
  return { maps, sync };
}

describe("prefilter bitmap", () => {
  it("sets frontend and backend bits before the write, clears them only after, and marks itself ready", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { maps, sync } = await syncer(pf);
    const a = fe("10.96.0.10", 80, "10.244.1.5");
    const b = fe("10.96.0.11", 81, "10.244.1.6");
    const m1 = model([a, b]);
    const ready = Buffer.alloc(4);
    ready.writeUInt32LE(PREFILTER_READY_SLOT);
    await sync(m1, () => {
      assert.equal(maps.services.entries().count, 0, "before the service map is written");
      assert.ok(kernelBit(map, prefilterBit("10.96.0.10", 80, 6)));
      assert.ok(kernelBit(map, prefilterBit("10.244.1.6", 8080, 6)));
      assert.equal(map.lookup(ready)?.readBigUInt64LE(0) ?? 0n, 0n, "not ready before the first sync finished");
    });
    assert.equal(map.lookup(ready)!.readBigUInt64LE(0), 1n);

    // b goes away: still covered while the maps are being written, gone after.
    const m2 = model([a]);
    await sync(m2, () => assert.ok(kernelBit(map, prefilterBit("10.96.0.11", 81, 6)), "superset during the sync"));
    assert.ok(!kernelBit(map, prefilterBit("10.96.0.11", 81, 6)));
    assert.ok(!kernelBit(map, prefilterBit("10.244.1.6", 8080, 6)));
    assert.ok(kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)), "a's backend stays");
  });

  it("a full pass clears the bits of every Service it no longer encodes", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { maps, sync } = await syncer(pf);
    const a = fe("10.96.0.10", 80, "10.244.1.5");
    const b = fe("10.96.0.11", 81, "10.244.1.6");
    await sync(model([a, b]));
    await sync(model([a]), undefined, true);
    assert.equal(maps.services.entries().count, 2, "a's master and slot only");
    assert.ok(!kernelBit(map, prefilterBit("10.96.0.11", 81, 6)));
    assert.ok(!kernelBit(map, prefilterBit("10.244.1.6", 8080, 6)));
    assert.ok(kernelBit(map, prefilterBit("10.96.0.10", 80, 6)));
    assert.ok(kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)));
  });

  it("a backend shared by two frontends keeps its bit until neither names it", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { sync } = await syncer(pf);
    const a = fe("10.96.0.10", 80, "10.244.1.5");
    const b = fe("10.96.0.11", 81, "10.244.1.5");
    for (const m of [model([a, b]), model([b])]) await sync(m);
    assert.ok(kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)));
    await sync(model([]));
    assert.ok(!kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)));
  });

  it("NodePorts follow the addresses they are served on; a restart keeps the kernel's bits until its first sync", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { sync } = await syncer(pf);
    const np = fe("0.0.0.0", 30080, "10.244.1.5", "NodePort");
    await sync(model([np], ["192.168.1.2"]));
    assert.ok(kernelBit(map, prefilterBit("192.168.1.2", 30080, 6)));
    // Only the addresses change: the Service is not encoded again, its NodePort's bits move all the same.
    await sync(model([np], ["192.168.1.3", "192.168.1.4"]));
    assert.ok(kernelBit(map, prefilterBit("192.168.1.3", 30080, 6)));
    assert.ok(kernelBit(map, prefilterBit("192.168.1.4", 30080, 6)));
    assert.ok(!kernelBit(map, prefilterBit("192.168.1.2", 30080, 6)));
    assert.ok(kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)), "its backend keeps its bit");

    const restarted = new Prefilter(map);
    restarted.restore();
    const writes = map.writes;
    await (await syncer(restarted)).sync(model([np], ["192.168.1.3", "192.168.1.4"]));
    assert.equal(map.writes, writes, "a restart with the same model writes nothing");
  });

  it("NodePort addresses changing in the pass that re-encodes a NodePort Service: old bits all cleared, new ones all set", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { sync } = await syncer(pf);
    const a = fe("0.0.0.0", 30080, "10.244.1.5", "NodePort");
    const b = fe("0.0.0.0", 30081, "10.244.1.6", "NodePort");
    await sync(model([a, b], ["192.168.1.2"]));
    // b's port changes (re-encoded) and the addresses change in the same pass; a is not re-encoded.
    const b2 = { ...b, port: 30082, service: b.service };
    await sync(model([a, b2], ["192.168.1.3"]));
    assert.ok(kernelBit(map, prefilterBit("192.168.1.3", 30080, 6)), "a on the new address");
    assert.ok(kernelBit(map, prefilterBit("192.168.1.3", 30082, 6)), "b's new port on the new address");
    for (const port of [30080, 30081])
      assert.ok(!kernelBit(map, prefilterBit("192.168.1.2", port, 6)), `${port} on the old address cleared`);
    assert.ok(!kernelBit(map, prefilterBit("192.168.1.3", 30081, 6)), "b's old port never on the new address");
  });

  it("a Service handed over with the very same encoding while NodePort addresses change moves to the new addresses", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const bits = encodedBits(model([fe("0.0.0.0", 30080, "10.244.1.5", "NodePort")]));
    await pf.before(bits, ["192.168.1.2"], true);
    await pf.after();
    assert.ok(kernelBit(map, prefilterBit("192.168.1.2", 30080, 6)));
    await pf.before(bits, ["192.168.1.3"], true);
    await pf.after();
    assert.ok(kernelBit(map, prefilterBit("192.168.1.3", 30080, 6)), "counted on the new address");
    assert.ok(!kernelBit(map, prefilterBit("192.168.1.2", 30080, 6)), "uncounted on the old one");
    assert.ok(kernelBit(map, prefilterBit("10.244.1.5", 8080, 6)), "its backend keeps its bit");
  });

  it("a bit wanted by more Services than a byte counts (300) stays set until the last of them goes", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const bit = prefilterBit("10.244.1.5", 8080, 6);
    // ServiceBits: [bits, NodePorts, the bits…]: every Service names the one backend.
    const names = Array.from({ length: 300 }, (_, i) => `ns/s${i}`);
    await pf.before(new Map(names.map((n) => [n, Int32Array.from([1, 0, bit])])), []);
    await pf.after();
    assert.ok(kernelBit(map, bit));
    for (let k = 0; k < 299; k += 23) {
      const gone = names.slice(k, Math.min(k + 23, 299));
      await pf.before(new Map(gone.map((n) => [n, undefined])), []);
      await pf.after();
      assert.ok(kernelBit(map, bit), `still wanted after ${Math.min(k + 23, 299)} left`);
    }
    await pf.before(new Map([[names[299]!, undefined]]), []);
    await pf.after();
    assert.ok(!kernelBit(map, bit), "cleared with the last");
  });

  it("follows what the kernel holds: a Service the reconciler refused (map full) keeps its old backends' bits", async () => {
    const map = newMap();
    const pf = new Prefilter(map);
    pf.restore();
    const { maps, sync } = await syncer(pf, 3);
    const withBackends = (...ips: string[]): Frontend => ({
      ...fe("10.96.0.10", 80, ips[0]!),
      backends: ips.map((address) => ({ address, port: 8080, state: "active", nodeLocal: false })),
    });
    await sync(model([withBackends("10.244.1.1")]));
    // Four new backends in a map with room for three: refused, the kernel keeps the slot naming 10.244.1.1.
    const refused = await sync(model([withBackends("10.244.2.1", "10.244.2.2", "10.244.2.3", "10.244.2.4")]));
    assert.deepEqual(
      refused.notProgrammed!.map((n) => n.service),
      ["default/s-80"],
    );
    assert.equal(maps.backends.entries().count, 1, "the old backend is still in the kernel");
    assert.ok(
      kernelBit(map, prefilterBit("10.244.1.1", 8080, 6)),
      "the old backend's bit stays while the kernel still sends to it (else its replies skip translation)",
    );
    assert.ok(kernelBit(map, prefilterBit("10.244.2.1", 8080, 6)), "the wanted backends' bits are set too");
    // Refused again on the next pass (the model did not change): still covered.
    await sync(model([withBackends("10.244.2.1", "10.244.2.2", "10.244.2.3", "10.244.2.4")]));
    assert.ok(kernelBit(map, prefilterBit("10.244.1.1", 8080, 6)));
    // A change that fits: the old backend leaves the kernel, and only then its bit.
    const fits = await sync(model([withBackends("10.244.2.1")]));
    assert.deepEqual(fits.notProgrammed, []);
    assert.ok(!kernelBit(map, prefilterBit("10.244.1.1", 8080, 6)), "cleared once the kernel dropped it");
    assert.ok(kernelBit(map, prefilterBit("10.244.2.1", 8080, 6)));
    assert.ok(!kernelBit(map, prefilterBit("10.244.2.4", 8080, 6)));
  });
});

describe("PackedLists (the pre-filter's per-Service bits, back to back)", () => {
  it("random sets, replacements and deletes read back as a Map of the same lists would, across growth", () => {
    const lists = new PackedLists();
    const model = new Map<string, number[]>();
    let seed = 7;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
    for (let step = 0; step < 5000; step++) {
      const key = `k${rnd(400)}`;
      if (rnd(4) === 0) {
        lists.delete(key);
        model.delete(key);
      } else {
        const l = Array.from({ length: rnd(12) }, () => rnd(1 << 22));
        lists.set(key, Int32Array.from(l));
        model.set(key, l);
      }
    }
    assert.equal(lists.size, model.size);
    for (const [k, l] of model) assert.deepEqual([...lists.get(k)!], l, k);
    assert.deepEqual(new Map([...lists.entries()].map(([k, l]) => [k, [...l]])), model);
  });
});
