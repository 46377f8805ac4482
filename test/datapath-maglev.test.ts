// Maglev on packets: frontends programmed by the real reconciler into the real maps, SYNs run
// through bpx_from_pod with BPF_PROG_TEST_RUN. The program must choose exactly the backend the
// TypeScript table predicts, two nodes with different backend ids must choose alike, a changed
// backend set must move only about 1/N of new flows, and tracked flows must never move. Needs root.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { maglevFlowHash, maglevIndex, maglevTable } from "../src/dataplane/bpf/maglev.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { BpfObject } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";
import { TCP_FLAGS, buildPacket, checksumsOk, parsePacket } from "./fixtures/packets.js";

const TC_ACT_OK = 0;
const VIP = "10.96.0.20";
const CLIENT = "10.244.1.10";
let bpffs: PrivateBpffs | undefined;
let n = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("test/datapath-maglev.test.ts loads BPF programs: run it as root");
  bpffs = PrivateBpffs.create("maglev");
});

after(() => bpffs?.release());

/** One "node": its own object, maps and reconciler. */
class Node {
  readonly obj: BpfObject;
  readonly rec: LbReconciler;
  private readonly restored: Promise<void>;
  private readonly dir: string;
  constructor() {
    this.dir = `${bpffs!.path}/node-${++n}`;
    mkdirSync(this.dir);
    this.obj = new BpfObject("bpf/bpfproxy.o", { pinRoot: this.dir });
    this.obj.load();
    const m = (name: string) => this.obj.map(name);
    this.rec = new LbReconciler({
      services: m(MAP_NAMES.services),
      backends: m(MAP_NAMES.backends),
      revNat: m(MAP_NAMES.revNat),
      svcMeta: m(MAP_NAMES.svcMeta),
      maglev: m(MAP_NAMES.maglev),
      affinityMatch: m(MAP_NAMES.affinityMatch),
      services6: m(MAP_NAMES.services6),
      backends6: m(MAP_NAMES.backends6),
    });
    this.restored = this.rec.restore();
  }
  async apply(m: NodeModel): Promise<void> {
    await this.restored;
    await this.rec.apply(m);
  }
  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
  /** The backend "address:port" a SYN from CLIENT:sport is DNATed to. */
  async choose(sport: number, flags: number = TCP_FLAGS.SYN): Promise<string> {
    const data = buildPacket({ proto: "tcp", saddr: CLIENT, daddr: VIP, sport, dport: 80, flags, seq: 1 });
    const r = await this.obj.program("bpx_from_pod").testRun({ data });
    assert.equal(r.retval, TC_ACT_OK);
    assert.ok(checksumsOk(r.data), "checksums after DNAT");
    const p = parsePacket(r.data);
    return `${p.ip!.daddr}:${p.tcp!.dport}`;
  }
}

const be = (i: number): BackendModel => ({ address: `10.244.2.${i}`, port: 8080, state: "active", nodeLocal: false });

function model(backends: BackendModel[], algorithm: Frontend["algorithm"] = "maglev"): NodeModel {
  const fe: Frontend = {
    service: "default/maglev",
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

async function withNodes(count: number, fn: (nodes: Node[]) => Promise<void>): Promise<void> {
  const nodes: Node[] = [];
  try {
    for (let i = 0; i < count; i++) nodes.push(new Node());
    await fn(nodes);
  } finally {
    for (const node of nodes) node.close();
  }
}

const SPORTS = Array.from({ length: 300 }, (_, i) => 20000 + i * 7);

describe("Maglev in the data plane", () => {
  test("every new flow goes to the backend the table predicts", async () => {
    await withNodes(1, async ([node]) => {
      const backends = [1, 2, 3, 4, 5].map(be);
      await node!.apply(model(backends));
      const names = backends.map((b) => `${b.address}:${b.port}`);
      const table = maglevTable(names);
      const seen = new Set<string>();
      for (const sport of SPORTS) {
        const want = names[table[maglevIndex(maglevFlowHash(CLIENT, VIP, sport, 80, 6))]!]!;
        const got = await node!.choose(sport);
        assert.equal(got, want, `flow from port ${sport}`);
        seen.add(got);
      }
      assert.equal(seen.size, 5, "flows spread over every backend");
    });
  });

  test("two nodes whose backend ids differ choose the same backend for every flow", async () => {
    await withNodes(2, async ([a, b]) => {
      const backends = [1, 2, 3, 4].map(be);
      await a!.apply(model(backends));
      // Node b allocated ids for other backends first, so its ids for the same backends differ.
      await b!.apply(model([10, 11, 12].map(be)));
      await b!.apply(model(backends));
      for (const sport of SPORTS)
        assert.equal(await b!.choose(sport), await a!.choose(sport), `flow from port ${sport}`);
    });
  });

  test("adding a backend moves about 1/N of new flows; tracked flows stay where they are", async () => {
    await withNodes(1, async ([node]) => {
      const before = [1, 2, 3, 4].map(be);
      await node!.apply(model(before));
      const first = new Map<number, string>();
      for (const sport of SPORTS) first.set(sport, await node!.choose(sport));

      await node!.apply(model([...before, be(5)]));
      // The same tuples again: tracked, so they keep their backend even where the table moved.
      for (const sport of SPORTS)
        assert.equal(await node!.choose(sport, TCP_FLAGS.ACK), first.get(sport), `tracked flow ${sport}`);
      // New flows (other client ports) against a fresh node with the old set vs the new set.
      let moved = 0;
      const fresh = SPORTS.map((p) => p + 1);
      const other = new Node();
      try {
        await other.apply(model(before));
        for (const sport of fresh) if ((await node!.choose(sport)) !== (await other.choose(sport))) moved++;
      } finally {
        other.close();
      }
      const share = moved / fresh.length;
      assert.ok(share > 0.08 && share < 0.35, `moved ${moved}/${fresh.length} (ideal 1/5)`);
    });
  });

  test("a frontend switched back to random keeps serving every backend", async () => {
    await withNodes(1, async ([node]) => {
      const backends = [1, 2].map(be);
      await node!.apply(model(backends));
      await node!.apply(model(backends, "random"));
      assert.equal(node!.obj.map(MAP_NAMES.maglev).entries().count, 0, "table removed");
      const seen = new Set<string>();
      for (const sport of SPORTS.slice(0, 60)) seen.add(await node!.choose(sport + 3));
      assert.equal(seen.size, 2);
    });
  });
});
