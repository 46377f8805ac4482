// bpfproxy.io/backend-weights on packets: frontends programmed by the real reconciler into the real maps, SYNs
// run through bpx_from_pod with BPF_PROG_TEST_RUN. Random picks by weight (runs of slots), least-conn over three
// backends keeps active flows per weight level (each SYN is a new flow that stays active: nothing ends it), a
// weight-0 backend gets no new flow, and a weighted Maglev frontend picks what the weighted table predicts.
// Needs root.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { maglevFlowHash, maglevIndex, maglevTable } from "../src/dataplane/bpf/maglev.js";
import { slotRuns } from "../src/dataplane/bpf/slots.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { BpfObject } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";
import { TCP_FLAGS, buildPacket, parsePacket } from "./fixtures/packets.js";

const TC_ACT_OK = 0;
const VIP = "10.96.0.21";
const CLIENT = "10.244.1.10";
let bpffs: PrivateBpffs | undefined;
let n = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("test/datapath-weights.test.ts loads BPF programs: run it as root");
  bpffs = PrivateBpffs.create("weights");
});

after(() => bpffs?.release());

async function withObject(
  fn: (apply: (m: NodeModel) => Promise<void>, choose: (sport: number) => Promise<string>) => Promise<void>,
) {
  const dir = `${bpffs!.path}/obj-${++n}`;
  mkdirSync(dir);
  const obj = new BpfObject("bpf/bpfproxy.o", { pinRoot: dir });
  try {
    obj.load();
    const m = (name: string) => obj.map(name);
    const rec = new LbReconciler({
      services: m(MAP_NAMES.services),
      backends: m(MAP_NAMES.backends),
      revNat: m(MAP_NAMES.revNat),
      svcMeta: m(MAP_NAMES.svcMeta),
      maglev: m(MAP_NAMES.maglev),
      affinityMatch: m(MAP_NAMES.affinityMatch),
      services6: m(MAP_NAMES.services6),
      backends6: m(MAP_NAMES.backends6),
    });
    await rec.restore();
    await fn(
      (model) => rec.apply(model).then(() => undefined),
      async (sport) => {
        const data = buildPacket({
          proto: "tcp",
          saddr: CLIENT,
          daddr: VIP,
          sport,
          dport: 80,
          flags: TCP_FLAGS.SYN,
          seq: 1,
        });
        const r = await obj.program("bpx_from_pod").testRun({ data });
        assert.equal(r.retval, TC_ACT_OK);
        const p = parsePacket(r.data);
        return p.ip!.daddr;
      },
    );
  } finally {
    obj.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const be = (i: number, weight?: number): BackendModel => ({
  address: `10.244.2.${i}`,
  port: 8080,
  state: "active",
  nodeLocal: false,
  ...(weight !== undefined ? { weight } : {}),
});

function model(backends: BackendModel[], algorithm: Frontend["algorithm"]): NodeModel {
  const fe: Frontend = {
    service: "default/weights",
    portName: "",
    type: "ClusterIP",
    address: VIP,
    port: 80,
    protocol: "TCP",
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm,
    backends,
  };
  return { node: "node-a", frontends: [fe], extras: [{ retainedBackends: [], sourceRanges: [] }] };
}

async function tally(choose: (sport: number) => Promise<string>, count: number, base: number) {
  const c: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const d = await choose(base + i);
    c[d] = (c[d] ?? 0) + 1;
  }
  return c;
}

describe("weighted backends in the data plane", () => {
  test("random: new flows by weight 3:1:1, none to weight 0", async () => {
    await withObject(async (apply, choose) => {
      await apply(model([be(1, 3), be(2), be(3), be(4, 0)], "random"));
      const c = await tally(choose, 1000, 20000);
      // 600 / 200 / 200 expected; one standard deviation 15.5 and 12.6: bounds at over 5.
      assert.equal(c["10.244.2.4"], undefined, JSON.stringify(c));
      assert.ok(c["10.244.2.1"]! >= 520 && c["10.244.2.1"]! <= 680, JSON.stringify(c));
      for (const b of ["10.244.2.2", "10.244.2.3"]) assert.ok(c[b]! >= 135 && c[b]! <= 265, JSON.stringify(c));
      // The same backends unweighted: about a quarter each (250, one standard deviation 13.7).
      await apply(model([be(1), be(2), be(3), be(4)], "random"));
      const u = await tally(choose, 1000, 30000);
      for (const b of ["10.244.2.1", "10.244.2.2", "10.244.2.3", "10.244.2.4"])
        assert.ok(u[b]! >= 180 && u[b]! <= 320, JSON.stringify(u));
    });
  });

  test("least-conn over three backends: active flows stay level per weight (3:1:1 of 100 open flows)", async () => {
    await withObject(async (apply, choose) => {
      await apply(model([be(1, 3), be(2), be(3)], "least-conn"));
      const c = await tally(choose, 100, 40000);
      // Power of two choices on active/weight: every backend near its share (60/20/20), far tighter than random.
      assert.ok(c["10.244.2.1"]! >= 56 && c["10.244.2.1"]! <= 64, JSON.stringify(c));
      for (const b of ["10.244.2.2", "10.244.2.3"]) assert.ok(c[b]! >= 17 && c[b]! <= 23, JSON.stringify(c));
    });
  });

  test("Maglev: every new flow goes to the backend the weighted table predicts", async () => {
    await withObject(async (apply, choose) => {
      const backends = [be(1, 4), be(2, 2), be(3, 0), be(4)];
      await apply(model(backends, "maglev"));
      const names = backends.map((b) => `${b.address}:${b.port}`);
      const table = maglevTable(names, undefined, slotRuns(backends.map((b) => b.weight ?? 1)));
      for (let i = 0; i < 200; i++) {
        const sport = 50000 + i * 3;
        const want = names[table[maglevIndex(maglevFlowHash(CLIENT, VIP, sport, 80, 6))]!]!;
        assert.equal(`${await choose(sport)}:8080`, want, `flow from port ${sport}`);
      }
    });
  });
});
