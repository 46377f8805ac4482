// bpfproxy.io/backend-weights (docs/leastconn.md, "Weighted backends"): the annotation's values, the weights the
// model gives backends, and how the BPF maps hold them (runs of service-map slots, weighted Maglev tables).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel } from "../src/model/build.js";
import { invalidBackendWeights, parseBackendWeights } from "../src/model/weights.js";
import type { BackendModel, Frontend } from "../src/model/types.js";
import { slotRuns } from "../src/dataplane/bpf/slots.js";
import { maglevTable } from "../src/dataplane/bpf/maglev.js";
import { contentsSink, emptyLbContents, encodeFrontend, newIds } from "../src/dataplane/bpf/desired.js";
import { encodeFrontend6 } from "../src/dataplane/bpf/lb6.js";
import { svc6Key, svcKey, svcValue } from "../src/dataplane/bpf/abi.js";
import { ep, slice, svc } from "./model-helpers.js";

describe("bpfproxy.io/backend-weights values", () => {
  const table: Array<[string, Record<string, number> | RegExp]> = [
    ["10.0.0.1=3,10.0.0.2=1", { "10.0.0.1": 3, "10.0.0.2": 1 }],
    [" 10.0.0.1=3 ,  10.0.0.2=0 ", { "10.0.0.1": 3, "10.0.0.2": 0 }],
    ["10.0.0.1=3 10.0.0.2=1000", { "10.0.0.1": 3, "10.0.0.2": 1000 }],
    // IPv6 in any text form names the canonical address.
    ["fd00:10:244:0:0::5=2", { "fd00:10:244::5": 2 }],
    ["", /empty/],
    ["10.0.0.1", /not ADDRESS=WEIGHT/],
    ["=3", /not ADDRESS=WEIGHT/],
    ["web-1=3", /not an IP address/],
    ["10.0.0.1=1001", /0 to 1000/],
    ["10.0.0.1=-1", /0 to 1000/],
    ["10.0.0.1=1.5", /0 to 1000/],
    ["10.0.0.1=", /0 to 1000/],
    ["10.0.0.1=2,10.0.0.1=3", /twice/],
  ];
  for (const [value, want] of table)
    test(JSON.stringify(value), () => {
      const p = parseBackendWeights(value);
      if (want instanceof RegExp) assert.ok("error" in p && want.test(p.error), JSON.stringify(p));
      else assert.deepEqual("weights" in p ? Object.fromEntries(p.weights) : p, want);
    });
});

describe("the model's weights", () => {
  const slices = [slice([ep("10.244.1.1"), ep("10.244.1.2"), ep("10.244.1.3")])];
  const build = (weights: string | undefined) =>
    buildNodeModel({
      services: [svc(weights === undefined ? {} : { annotations: { "bpfproxy.io/backend-weights": weights } })],
      endpointSlices: slices,
      nodeName: "node-a",
    });

  test("named endpoints get their weight, others weigh 1 (absent), addresses no endpoint has are ignored", () => {
    const m = build("10.244.1.1=5, 10.244.1.3=0, 10.9.9.9=7");
    assert.deepEqual(
      m.frontends[0]!.backends.map((b) => [b.address, b.weight]),
      [
        ["10.244.1.1", 5],
        ["10.244.1.2", undefined],
        ["10.244.1.3", 0],
      ],
    );
  });

  test("an invalid value is reported with the Service, which is served with weight 1 everywhere", () => {
    const s = svc({ annotations: { "bpfproxy.io/backend-weights": "10.244.1.1=3,10.244.1.2=x" } });
    assert.match(invalidBackendWeights(s)!, /weight "x" of 10.244.1.2/);
    const m = build("10.244.1.1=3,10.244.1.2=x");
    assert.equal(m.frontends[0]!.backends.length, 3, "served");
    assert.ok(m.frontends[0]!.backends.every((b) => b.weight === undefined));
    assert.equal(invalidBackendWeights(svc()), undefined);
    assert.equal(
      invalidBackendWeights(svc({ annotations: { "bpfproxy.io/backend-weights": "10.0.0.1=2" } })),
      undefined,
    );
  });
});

describe("slot runs", () => {
  test("reduced by the common divisor, exact in ratio; undefined when every weight is 1", () => {
    assert.equal(slotRuns([1, 1, 1]), undefined);
    assert.deepEqual(slotRuns([3, 1]), [3, 1]);
    assert.deepEqual(slotRuns([300, 100, 0]), [3, 1, 0]);
    assert.deepEqual(slotRuns([0, 0]), [0, 0]);
    assert.deepEqual(slotRuns([2, 1, 1]), [2, 1, 1]);
  });
  test("past the bound: scaled to about the bound, every weighted backend keeps a slot", () => {
    const runs = slotRuns([1000, 999, 1, 0], 1024)!;
    const total = runs.reduce((a, b) => a + b, 0);
    assert.ok(total <= 1024 + 3, `total ${total}`);
    assert.equal(runs[3], 0);
    assert.ok(runs[2]! >= 1);
    assert.ok(Math.abs(runs[0]! / runs[1]! - 1000 / 999) < 0.01, JSON.stringify(runs));
  });
});

const backend = (address: string, weight?: number): BackendModel => ({
  address,
  port: 8080,
  state: "active",
  nodeLocal: false,
  ...(weight !== undefined ? { weight } : {}),
});
const frontend = (
  address: string,
  backends: BackendModel[],
  algorithm: Frontend["algorithm"] = "random",
): Frontend => ({
  service: "default/web",
  portName: "http",
  type: "ClusterIP",
  address,
  port: 80,
  protocol: "TCP",
  scope: "internal",
  sessionAffinity: { type: "None" },
  algorithm,
  backends,
});

/** The master and the slots (in slot order) of the IPv4 frontend encoded into `c`. */
function slotsOf(c: ReturnType<typeof emptyLbContents>) {
  const all = [...c.services].map(([k, v]) => ({ k: svcKey.decodeBin(k), v: svcValue.decodeBin(v) }));
  const master = all.find((e) => e.k.slot === 0)!.v;
  const slots = all.filter((e) => e.k.slot > 0).sort((a, b) => a.k.slot - b.k.slot);
  return { master, slots };
}

describe("weights in the service map (IPv4)", () => {
  test("a backend's run of slots: as many as its reduced weight, each naming the run; weight 0 has none", () => {
    const c = emptyLbContents();
    const ids = newIds();
    encodeFrontend(
      frontend("10.96.0.9", [backend("10.244.1.1", 6), backend("10.244.1.2", 0), backend("10.244.1.3", 2)]),
      undefined,
      ids,
      contentsSink(c),
    );
    const { master, slots } = slotsOf(c);
    assert.equal(master.count, 4, "3 + 0 + 1 slots");
    assert.deepEqual(
      slots.map((s) => [s.k.slot, s.v.count, s.v.affinityTimeout]),
      [
        [1, 3, 0],
        [2, 3, 0],
        [3, 3, 0],
        [4, 1, 3],
      ],
    );
    assert.equal(new Set(slots.slice(0, 3).map((s) => s.v.backendId)).size, 1, "one backend's run");
    assert.notEqual(slots[3]!.v.backendId, slots[0]!.v.backendId);
    // The weight-0 backend stays in the backend map: flows already tracked to it keep their translation.
    assert.equal(c.backends.size, 3);
  });

  test("unweighted: one slot per backend with count and first slot 0, as before weights", () => {
    const c = emptyLbContents();
    encodeFrontend(
      frontend("10.96.0.9", [backend("10.244.1.1"), backend("10.244.1.2")]),
      undefined,
      newIds(),
      contentsSink(c),
    );
    const { master, slots } = slotsOf(c);
    assert.equal(master.count, 2);
    assert.deepEqual(
      slots.map((s) => [s.v.count, s.v.affinityTimeout]),
      [
        [0, 0],
        [0, 0],
      ],
    );
  });

  test("every weight 0: no slot, the frontend has no backend for new flows (rejects, as IPVS with no weight left)", () => {
    const c = emptyLbContents();
    encodeFrontend(frontend("10.96.0.9", [backend("10.244.1.1", 0)], "maglev"), undefined, newIds(), contentsSink(c));
    const { master, slots } = slotsOf(c);
    assert.equal(master.count, 0);
    assert.equal(slots.length, 0);
    assert.equal(c.maglev.size, 0, "no table for no backend");
  });
});

test("weights in the IPv6 service map: the same runs", () => {
  const out = encodeFrontend6(frontend("fd00::9", [backend("fd00::1", 3), backend("fd00::2", 1)]), {
    revNatId: 7,
    backendIds: [11, 12],
  });
  const all = [...out.services].map(([k, v]) => ({ k: svc6Key.decodeBin(k), v: svcValue.decodeBin(v) }));
  assert.equal(all.find((e) => e.k.slot === 0)!.v.count, 4);
  assert.deepEqual(
    all
      .filter((e) => e.k.slot > 0)
      .sort((a, b) => a.k.slot - b.k.slot)
      .map((e) => [e.v.backendId, e.v.count, e.v.affinityTimeout]),
    [
      [11, 3, 0],
      [11, 3, 0],
      [11, 3, 0],
      [12, 1, 3],
    ],
  );
});

describe("weighted Maglev tables", () => {
  const names = ["10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"];
  const share = (t: Int32Array) => {
    const c = [0, 0, 0];
    for (const i of t) c[i]!++;
    return c;
  };
  test("entries in the ratio of the turns; weight 0 has none", () => {
    const c = share(maglevTable(names, 65537, [3, 1, 0]));
    assert.equal(c[2], 0);
    assert.ok(Math.abs(c[0]! - 3 * c[1]!) <= 3, JSON.stringify(c));
  });
  test("turns of 1 build the unweighted table", () => {
    assert.deepEqual(maglevTable(names, 251, [1, 1, 1]), maglevTable(names, 251));
  });
  test("a weight change moves few entries of the others (Maglev's minimal disruption, roughly)", () => {
    const a = maglevTable(names, 65537, [1, 1, 1]);
    const b = maglevTable(names, 65537, [2, 1, 1]);
    let moved = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && b[i] !== 0) moved++;
    // Backend 0 gains a sixth of the table (1/3 → 1/2); entries moving between the other two stay few.
    assert.ok(moved < a.length * 0.1, `${moved} of ${a.length} moved between the unchanged backends`);
  });
});
