// Packet tests of the pre-filter (bpf/lib/prefilter.h, src/dataplane/bpf/prefilter.ts) and of the rule that a flow
// straight to a backend on a reused Service tuple releases the old flow's entries. BPF_PROG_TEST_RUN on the
// real object; the bitmap is written by the daemon's own Prefilter class, so the TypeScript and BPF hashes
// are checked against each other. Needs root (BPF + a private bpffs).
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { Prefilter, PREFILTER_READY_SLOT } from "../src/dataplane/bpf/prefilter.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import type { Frontend, FrontendExtras, NodeModel } from "../src/model/types.js";
import { TCP_FLAGS, buildPacket, type TcpSpec, type UdpSpec } from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";
import { encodedBits } from "./fixtures/prefilter-bits.js";

const OBJECT = "bpf/bpfproxy.o";
const TC_ACT_OK = 0;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;
const CLIENT = "10.244.1.10";
const VIP = "10.96.0.10";
const UNLISTED_VIP = "10.96.0.77";
const BE = "10.244.2.21";
const NODE_IP = "192.168.50.2";
type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let caseNo = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-prefilter.test.ts");
  bpffs = PrivateBpffs.create("prefilter");
});
after(() => bpffs?.release());

function frontend(over: Partial<Frontend>): Frontend {
  return {
    service: "default/web",
    portName: "",
    type: "ClusterIP",
    address: VIP,
    port: 80,
    protocol: "TCP",
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: [{ address: BE, port: 8080, state: "active", nodeLocal: true }],
    ...over,
  };
}
const extras = (): FrontendExtras => ({ retainedBackends: [], sourceRanges: [] });
function model(frontends: Frontend[], nodePortIPs: string[] = []): NodeModel {
  return { node: "node-test", frontends, extras: frontends.map(extras), nodePortIPs, nodeIPs: nodePortIPs };
}

class Dp {
  readonly obj: BpfObject;
  readonly dir: string;
  constructor() {
    this.dir = `${bpffs!.path}/case-${++caseNo}`;
    mkdirSync(this.dir);
    this.obj = new BpfObject(OBJECT, { pinRoot: this.dir });
    this.obj.load();
  }
  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
  map(name: string) {
    return this.obj.map(name);
  }
  /** One frontend with one backend (id 1), written as the reconciler would. */
  service(vip: string, port: number, proto: number, revNatId: number, bePort: number): void {
    this.map(abi.MAP_NAMES.backends).update(
      abi.u32Key.encode(revNatId),
      abi.backend.encode({ address: BE, port: bePort, proto, flags: 0 }),
    );
    this.map(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(revNatId), abi.revNat.encode({ address: vip, port }));
    const key = (slot: number) => abi.svcKey.encode({ address: vip, port, proto, scope: abi.SCOPE_INTERNAL, slot });
    const v = (count: number, backendId: number) =>
      abi.svcValue.encode({ backendId, count, revNatId, flags: 0, affinityTimeout: 0 });
    this.map(abi.MAP_NAMES.services).update(key(1), v(0, revNatId));
    this.map(abi.MAP_NAMES.services).update(key(0), v(1, 0));
  }
  ready(): boolean {
    const v = this.map(abi.MAP_NAMES.prefilter).lookup(abi.u32Key.encode(PREFILTER_READY_SLOT));
    return !!v && v.readBigUInt64LE(0) !== 0n;
  }
  ct(key: abi.CtKey): abi.CtEntry | null {
    const v = this.map(abi.MAP_NAMES.conntrack).lookup(abi.ctKey.encode(key));
    return v ? abi.ctEntry.decode(v) : null;
  }
  counters(): Record<Reason, bigint> {
    const map = this.map(abi.MAP_NAMES.counters);
    const cpus = possibleCpus();
    const stride = map.valueSizeAll / cpus;
    const out = {} as Record<Reason, bigint>;
    for (const [name, slot] of Object.entries(abi.COUNTER_REASONS) as [Reason, number][]) {
      const v = map.lookup(abi.u32Key.encode(slot));
      let n = 0n;
      for (let cpu = 0; v && cpu < cpus; cpu++) n += abi.counter.decode(v, cpu * stride).packets;
      out[name] = n;
    }
    return out;
  }
  run(data: Buffer, program = "bpx_from_pod") {
    return runThroughStack(this.obj, program, data);
  }
}

async function withDp(fn: (dp: Dp) => Promise<void>): Promise<void> {
  const dp = new Dp();
  try {
    await fn(dp);
  } finally {
    dp.close();
  }
}

async function program(dp: Dp, m: NodeModel): Promise<Prefilter> {
  const pf = new Prefilter(dp.map(abi.MAP_NAMES.prefilter));
  pf.restore();
  await pf.before(encodedBits(m), m.nodePortIPs ?? []);
  await pf.after();
  return pf;
}

const syn = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40000,
  dport: 80,
  flags: TCP_FLAGS.SYN,
  seq: 1000,
  ...over,
});
const dgram = (over: Partial<UdpSpec> = {}): UdpSpec => ({
  proto: "udp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40001,
  dport: 53,
  payload: Buffer.from("query"),
  ...over,
});

describe("pre-filter", () => {
  it("is off until the daemon wrote a complete bitmap: a frontend missing from it still translates", () =>
    withDp(async (dp) => {
      dp.service(UNLISTED_VIP, 80, TCP, 2, 8080);
      assert.equal(dp.ready(), false);
      const res = await dp.run(buildPacket(syn({ daddr: UNLISTED_VIP })));
      assert.equal(res.data.toString("hex"), buildPacket(syn({ daddr: BE, dport: 8080 })).toString("hex"));
      assert.equal(dp.counters().translated_new, 1n);
    }));

  it("once written: frontends in it translate, anything else skips every lookup (even a frontend left out)", () =>
    withDp(async (dp) => {
      dp.service(VIP, 80, TCP, 1, 8080);
      // A frontend the bitmap does not name: with the filter on, the program must not even look it up.
      dp.service(UNLISTED_VIP, 81, TCP, 2, 8081);
      await program(dp, model([frontend({})]));
      assert.equal(dp.ready(), true);

      let res = await dp.run(buildPacket(syn()));
      assert.equal(res.retval, TC_ACT_OK);
      assert.equal(res.data.toString("hex"), buildPacket(syn({ daddr: BE, dport: 8080 })).toString("hex"), "DNAT");

      // The backend's reply is recognised by its source and reverse-translated.
      const synAck = syn({ saddr: BE, sport: 8080, daddr: CLIENT, dport: 40000, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK });
      res = await dp.run(buildPacket(synAck));
      assert.equal(res.data.toString("hex"), buildPacket({ ...synAck, saddr: VIP, sport: 80 }).toString("hex"));

      const left = buildPacket(syn({ daddr: UNLISTED_VIP, dport: 81, sport: 40010 }));
      res = await dp.run(left);
      assert.equal(res.data.toString("hex"), left.toString("hex"), "a frontend outside the bitmap is not looked up");
      const other = buildPacket(syn({ daddr: "10.244.3.3", dport: 9999, sport: 40011 }));
      res = await dp.run(other);
      assert.equal(res.data.toString("hex"), other.toString("hex"));
      const c = dp.counters();
      assert.equal(c.translated_new, 1n);
      assert.equal(c.reverse_translated, 1n);
      assert.equal(c.not_service, 2n);
      assert.equal(
        dp.ct({ saddr: CLIENT, daddr: UNLISTED_VIP, sport: 40010, dport: 81, proto: TCP, dir: abi.CT_DIR_FORWARD }),
        null,
      );
    }));

  it("serves a NodePort on each address NodePorts are served on, and follows removals", () =>
    withDp(async (dp) => {
      const np = frontend({ type: "NodePort", address: "0.0.0.0", port: 30080, scope: "external" });
      dp.map(abi.MAP_NAMES.nodePortAddrs).update(
        abi.be32AddrKey.encode({ address: NODE_IP }),
        abi.nodePortAddr.encode({ flags: abi.NODEPORT_ADDR_F_SERVE }),
      );
      dp.service("0.0.0.0", 30080, TCP, 1, 8080);
      const pf = await program(dp, model([np], [NODE_IP]));
      const pkt = syn({ saddr: "198.51.100.7", daddr: NODE_IP, dport: 30080 });
      let res = await dp.run(buildPacket(pkt), "bpx_from_device");
      assert.equal(res.retval, TC_ACT_OK);
      assert.equal(dp.counters().translated_new, 1n, "NodePort through the filter");

      // The Service goes away: its bits are cleared after the sync, and the packet is no longer looked up.
      const empty = model([], [NODE_IP]);
      await pf.before(encodedBits(empty, ["default/web"]), [NODE_IP]);
      await pf.after();
      res = await dp.run(buildPacket({ ...pkt, sport: 40100 }), "bpx_from_device");
      assert.equal(res.retval, TC_ACT_OK);
      assert.equal(dp.counters().translated_new, 1n, "no new translation once the bit is gone");
      assert.equal(dp.counters().not_service, 1n);
    }));
});

describe("a flow straight to a backend on a reused Service tuple", () => {
  for (const proto of ["tcp", "udp"] as const) {
    it(`${proto}: is not translated, and the old Service flow's entries are released`, () =>
      withDp(async (dp) => {
        const p = proto === "tcp" ? TCP : UDP;
        const fe = frontend({ protocol: proto === "tcp" ? "TCP" : "UDP", port: proto === "tcp" ? 80 : 53 });
        const bePort = 8080;
        fe.backends = [{ address: BE, port: bePort, state: "active", nodeLocal: true }];
        dp.service(VIP, fe.port, p, 1, bePort);
        await program(dp, model([fe]));
        const first = proto === "tcp" ? syn() : dgram({ dport: 53 });
        let res = await dp.run(buildPacket(first));
        assert.equal(res.data.toString("hex"), buildPacket({ ...first, daddr: BE, dport: bePort }).toString("hex"));
        const reply: abi.CtKey = {
          saddr: BE,
          daddr: CLIENT,
          sport: bePort,
          dport: first.sport,
          proto: p,
          dir: abi.CT_DIR_REPLY,
        };
        const fwd: abi.CtKey = {
          saddr: CLIENT,
          daddr: VIP,
          sport: first.sport,
          dport: fe.port,
          proto: p,
          dir: abi.CT_DIR_FORWARD,
        };
        assert.ok(dp.ct(reply) && dp.ct(fwd), "the Service flow is tracked");

        // The same client port, straight to the backend.
        const direct = { ...first, daddr: BE, dport: bePort };
        res = await dp.run(buildPacket(direct));
        assert.equal(res.data.toString("hex"), buildPacket(direct).toString("hex"), "untranslated");
        assert.equal(dp.ct(reply), null, "reply entry released");
        assert.equal(dp.ct(fwd), null, "forward entry released");
        assert.equal(dp.counters().tuple_released, 1n);

        // Its answer now reaches the client as the backend sent it.
        const answer =
          proto === "tcp"
            ? syn({ saddr: BE, sport: bePort, daddr: CLIENT, dport: first.sport, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK })
            : dgram({ saddr: BE, sport: bePort, daddr: CLIENT, dport: first.sport });
        res = await dp.run(buildPacket(answer));
        assert.equal(
          res.data.toString("hex"),
          buildPacket(answer).toString("hex"),
          "the direct flow's reply untouched",
        );
      }));
  }

  it("tcp: a SYN on the tuple of an ESTABLISHED Service flow releases nothing, from any source", () =>
    withDp(async (dp) => {
      dp.service(VIP, 80, TCP, 1, 8080);
      await program(dp, model([frontend({})]));
      await dp.run(buildPacket(syn()));
      // The backend answers and the client acknowledges: the flow is established.
      await dp.run(
        buildPacket(syn({ saddr: BE, sport: 8080, daddr: CLIENT, dport: 40000, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK })),
      );
      await dp.run(buildPacket(syn({ flags: TCP_FLAGS.ACK, seq: 1001, ack: 1001 })));
      const reply: abi.CtKey = {
        saddr: BE,
        daddr: CLIENT,
        sport: 8080,
        dport: 40000,
        proto: TCP,
        dir: abi.CT_DIR_REPLY,
      };
      assert.ok((dp.ct(reply)!.flags & abi.CT_F_SEEN_REPLY) !== 0, "established");
      for (const prog of ["bpx_from_pod", "bpx_from_device"]) {
        await dp.run(buildPacket(syn({ daddr: BE, dport: 8080 })), prog);
        assert.ok(dp.ct(reply), `${prog}: the established flow's reply entry stays`);
      }
      assert.equal(dp.counters().tuple_released, 0n);

      // Once both sides closed (FIN each way), the tuple is free for a new flow.
      await dp.run(buildPacket(syn({ flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK, seq: 1001 })));
      await dp.run(
        buildPacket(syn({ saddr: BE, sport: 8080, daddr: CLIENT, dport: 40000, flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK })),
      );
      await dp.run(buildPacket(syn({ daddr: BE, dport: 8080 })), "bpx_from_device");
      assert.equal(dp.ct(reply), null, "a closed flow's entries are released");
      assert.equal(dp.counters().tuple_released, 1n);
    }));

  it("tcp: a segment that does not start a connection releases nothing", () =>
    withDp(async (dp) => {
      dp.service(VIP, 80, TCP, 1, 8080);
      await program(dp, model([frontend({})]));
      await dp.run(buildPacket(syn()));
      const ack = syn({ daddr: BE, dport: 8080, flags: TCP_FLAGS.ACK });
      await dp.run(buildPacket(ack));
      assert.ok(dp.ct({ saddr: BE, daddr: CLIENT, sport: 8080, dport: 40000, proto: TCP, dir: abi.CT_DIR_REPLY }));
      assert.equal(dp.counters().tuple_released, 0n);
    }));
});
