// Packet tests of the north–south paths of bpf/bpfproxy.o with BPF_PROG_TEST_RUN: NodePort wildcard entries,
// masquerade (SNAT) and its reverse, SNAT port allocation that never collides, loadBalancerSourceRanges,
// hairpin, and the tc egress reverse translation. Expected frames are built from scratch by the fixtures
// (checksums computed independently), and compared byte for byte. FIB redirect is left off (it would read
// the test host's routes), so translated packets come back with TC_ACT_OK.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import {
  TCP_FLAGS,
  buildPacket,
  checksumsOk,
  describePacket,
  parsePacket,
  type TcpSpec,
  type UdpSpec,
} from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const OBJECT = "bpf/bpfproxy.o";
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;

const NODE = "192.0.2.11";
const NODE_2 = "192.0.2.111";
const EXT = "198.51.100.10";
const EXT_2 = "198.51.100.11";
const EXT_3 = "198.51.100.12";
const REMOTE_BE = "10.244.2.21";
const LOCAL_BE = "10.244.1.5";
const VIP = "10.96.0.10";
const LB_IP = "203.0.113.20";
const PORT_MIN = 61000;

type Program = "bpx_from_pod" | "bpx_from_device" | "bpx_reverse";
type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let caseNo = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-northsouth.test.ts");
  bpffs = PrivateBpffs.create("datapath-ns");
});

after(() => bpffs?.release());

interface Frontend {
  address: string;
  port: number;
  proto: number;
  revNatId: number;
  backend: { id: number; address: string; port: number };
  scope?: number;
  flags?: number;
}

class Datapath {
  private constructor(
    readonly obj: BpfObject,
    readonly dir: string,
  ) {}

  static open(portMax = PORT_MIN + 3): Datapath {
    const dir = `${bpffs!.path}/case-${++caseNo}`;
    mkdirSync(dir);
    const obj = new BpfObject(OBJECT, { pinRoot: dir });
    try {
      obj.load();
    } catch (e) {
      obj.close();
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const dp = new Datapath(obj, dir);
    dp.m(abi.MAP_NAMES.config).update(
      abi.u32Key.encode(0),
      abi.config.encode({ flags: abi.CFG_F_DETECT_LOCAL, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-test" }),
    );
    dp.m(abi.MAP_NAMES.natConfig).update(
      abi.u32Key.encode(0),
      abi.natConfig.encode({ masqAddr: NODE, portMin: PORT_MIN, portMax, flags: 0 }),
    );
    for (const ip of [NODE, NODE_2]) {
      dp.m(abi.MAP_NAMES.nodePortAddrs).update(
        abi.be32AddrKey.encode({ address: ip }),
        abi.nodePortAddr.encode({ flags: abi.NODEPORT_ADDR_F_SERVE | abi.NODEPORT_ADDR_F_LOCAL }),
      );
    }
    return dp;
  }

  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  m(name: string) {
    return this.obj.map(name);
  }

  setFrontend(f: Frontend): void {
    const b = f.backend;
    this.m(abi.MAP_NAMES.backends).update(
      abi.u32Key.encode(b.id),
      abi.backend.encode({ address: b.address, port: b.port, proto: f.proto, flags: 0 }),
    );
    this.m(abi.MAP_NAMES.revNat).update(
      abi.u32Key.encode(f.revNatId),
      abi.revNat.encode({ address: f.address, port: f.port }),
    );
    const key = (slot: number) =>
      abi.svcKey.encode({
        address: f.address,
        port: f.port,
        proto: f.proto,
        scope: f.scope ?? abi.SCOPE_EXTERNAL,
        slot,
      });
    this.m(abi.MAP_NAMES.services).update(
      key(1),
      abi.svcValue.encode({ backendId: b.id, count: 0, revNatId: f.revNatId, flags: 0, affinityTimeout: 0 }),
    );
    this.m(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({ backendId: 0, count: 1, revNatId: f.revNatId, flags: f.flags ?? 0, affinityTimeout: 0 }),
    );
  }

  allowSource(revNatId: number, cidr: string): void {
    const { addr, bits } = abi.parseCidr4(cidr);
    this.m(abi.MAP_NAMES.sourceRanges).update(
      abi.srcRangeKey.encode({ prefixlen: 32 + bits, revNatId, addr }),
      abi.u32Key.encode(1),
    );
  }

  counters(): Record<Reason, bigint> {
    const map = this.m(abi.MAP_NAMES.counters);
    const cpus = possibleCpus();
    const stride = map.valueSizeAll / cpus;
    const out = {} as Record<Reason, bigint>;
    for (const [name, slot] of Object.entries(abi.COUNTER_REASONS) as [Reason, number][]) {
      const v = map.lookup(abi.u32Key.encode(slot));
      let packets = 0n;
      for (let cpu = 0; v && cpu < cpus; cpu++) packets += abi.counter.decode(v, cpu * stride).packets;
      out[name] = packets;
    }
    return out;
  }

  natEntries(): number {
    return this.m(abi.MAP_NAMES.nat).entries().count;
  }

  async run(data: Buffer, program: Program) {
    return runThroughStack(this.obj, program, data);
  }
}

async function withDatapath(fn: (dp: Datapath) => Promise<void>, portMax?: number): Promise<void> {
  const dp = Datapath.open(portMax);
  try {
    await fn(dp);
  } finally {
    dp.close();
  }
}

function assertCounted(dp: Datapath, expected: Partial<Record<Reason, number>>, what: string): void {
  const want = Object.fromEntries(Object.keys(abi.COUNTER_REASONS).map((r) => [r, BigInt(expected[r as Reason] ?? 0)]));
  assert.deepEqual(dp.counters(), want, `${what}: counters`);
}

function assertSame(got: Buffer, want: Buffer, what: string): void {
  assert.equal(describePacket(got), describePacket(want), `${what}: packet summary`);
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: packet bytes`);
  assert.ok(checksumsOk(got), `${what}: checksums verify`);
}

const syn = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: EXT,
  daddr: NODE,
  sport: 40000,
  dport: 30080,
  flags: TCP_FLAGS.SYN,
  seq: 0x01020304,
  ...over,
});
const synAck = (over: Partial<TcpSpec>): TcpSpec => ({
  proto: "tcp",
  saddr: REMOTE_BE,
  daddr: NODE,
  sport: 8080,
  dport: 0,
  flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
  seq: 0x0a0b0c0d,
  ack: 0x01020305,
  ...over,
});
const dgram = (over: Partial<UdpSpec> = {}): UdpSpec => ({
  proto: "udp",
  saddr: EXT,
  daddr: NODE,
  sport: 40001,
  dport: 30053,
  payload: Buffer.from("query-0123456789"),
  ...over,
});

const NODEPORT_TCP: Frontend = {
  address: abi.WILDCARD_ADDRESS,
  port: 30080,
  proto: TCP,
  revNatId: 1,
  backend: { id: 1, address: REMOTE_BE, port: 8080 },
  flags: abi.SVC_F_MASQUERADE,
};
const NODEPORT_UDP: Frontend = {
  address: abi.WILDCARD_ADDRESS,
  port: 30053,
  proto: UDP,
  revNatId: 2,
  backend: { id: 2, address: REMOTE_BE, port: 5353 },
  flags: abi.SVC_F_MASQUERADE,
};

/** The source port the program chose (and checks it is in the SNAT range). */
function snatPort(frame: Buffer, max = PORT_MIN + 3): number {
  const p = parsePacket(frame);
  const port = (p.tcp ?? p.udp)!.sport;
  assert.ok(port >= PORT_MIN && port <= max, `SNAT port ${port} in ${PORT_MIN}..${max}`);
  return port;
}

describe("NodePort with masquerade (Cluster policy, remote backend)", () => {
  it("TCP: SYN to a node address is DNATed to the backend and SNATed to the node; the SYN-ACK is restored to the NodePort", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_TCP);
      const out = await dp.run(buildPacket(syn()), "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      const port = snatPort(out.data);
      assertSame(out.data, buildPacket(syn({ saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 })), "forward");
      // forward, reply (to the masquerade) and the key tc egress masquerades by on the stack path (backend -> client)
      assert.equal(dp.natEntries(), 3, "forward and reply NAT entries, and the stack path's");

      const back = await dp.run(buildPacket(synAck({ dport: port })), "bpx_from_device");
      assert.equal(back.retval, TC_ACT_OK);
      assertSame(back.data, buildPacket(synAck({ saddr: NODE, sport: 30080, daddr: EXT, dport: 40000 })), "reply");

      // The next client segment of the flow keeps its backend and its SNAT port.
      const ack = syn({ flags: TCP_FLAGS.ACK, seq: 0x01020305, ack: 0x0a0b0c0e });
      const again = await dp.run(buildPacket(ack), "bpx_from_device");
      assertSame(
        again.data,
        buildPacket({ ...ack, saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 }),
        "established",
      );
      assertCounted(dp, { translated_new: 1, reverse_translated: 1, translated_established: 1 }, "flow");
    }));

  it("UDP: a datagram to a second node address is masqueraded; the reply comes from that address", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_UDP);
      const out = await dp.run(buildPacket(dgram({ daddr: NODE_2 })), "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      const port = snatPort(out.data);
      assertSame(out.data, buildPacket(dgram({ saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 5353 })), "forward");
      const reply: UdpSpec = {
        proto: "udp",
        saddr: REMOTE_BE,
        daddr: NODE,
        sport: 5353,
        dport: port,
        payload: Buffer.from("answer"),
      };
      const back = await dp.run(buildPacket(reply), "bpx_from_device");
      assertSame(back.data, buildPacket({ ...reply, saddr: NODE_2, sport: 30053, daddr: EXT, dport: 40001 }), "reply");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1 }, "flow");
    }));

  it("an address that is not the node's is not a NodePort: the packet passes untouched", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_TCP);
      const pkt = buildPacket(syn({ daddr: "192.0.2.99" }));
      const out = await dp.run(pkt, "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      assert.equal(out.data.toString("hex"), pkt.toString("hex"));
      assertCounted(dp, { not_service: 1 }, "pass");
    }));
});

describe("SNAT port allocation", () => {
  /** The client's ACK of the SYN-ACK: the flow is established. */
  const ackOf = (client: string) =>
    buildPacket(syn({ saddr: client, flags: TCP_FLAGS.ACK, seq: 0x01020305, ack: 0x0a0b0c0e }));
  const ctFwd = (client: string, proto = TCP, sport = 40000, dport = 30080): abi.CtKey => ({
    saddr: client,
    daddr: NODE,
    sport,
    dport,
    proto,
    dir: abi.CT_DIR_FORWARD,
  });
  /** Moves a conntrack entry `sec` seconds into the past. */
  const age = (dp: Datapath, key: abi.CtKey, sec: number) => {
    const ct = dp.m(abi.MAP_NAMES.conntrack);
    const raw = ct.lookup(abi.ctKey.encode(key));
    assert.ok(raw, `conntrack entry ${JSON.stringify(key)}`);
    const e = abi.ctEntry.decode(raw);
    ct.update(
      abi.ctKey.encode(key),
      abi.ctEntry.encode({ ...e, lastSeenNs: process.hrtime.bigint() - BigInt(sec) * 1_000_000_000n }),
    );
  };

  it("clients with the same source port get different SNAT ports; with every port held by an established flow, a new flow is dropped and counted", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_TCP);
      const max = PORT_MIN + 1; // two ports
      const a = await dp.run(buildPacket(syn({ saddr: EXT })), "bpx_from_device");
      const b = await dp.run(buildPacket(syn({ saddr: EXT_2 })), "bpx_from_device");
      const pa = snatPort(a.data, max);
      const pb = snatPort(b.data, max);
      assert.notEqual(pa, pb, "no collision");
      // Each reply goes back to its own client, whose ACK establishes the flow.
      for (const [port, client] of [
        [pa, EXT],
        [pb, EXT_2],
      ] as const) {
        const back = await dp.run(buildPacket(synAck({ dport: port })), "bpx_from_device");
        assertSame(
          back.data,
          buildPacket(synAck({ saddr: NODE, sport: 30080, daddr: client, dport: 40000 })),
          `reply to ${client}`,
        );
        assert.equal((await dp.run(ackOf(client), "bpx_from_device")).retval, TC_ACT_OK, `${client}: ACK`);
      }
      const c = await dp.run(buildPacket(syn({ saddr: EXT_3 })), "bpx_from_device");
      assert.equal(c.retval, TC_ACT_SHOT, "no free port: dropped rather than colliding or evicting");
      assertCounted(
        dp,
        { translated_new: 2, reverse_translated: 2, translated_established: 2, drop_snat_exhausted: 1 },
        "allocation",
      );
    }, PORT_MIN + 1));

  it("when every port is held, a new flow takes one from an unestablished (SYN-only) flow, never from an established one", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_TCP);
      const max = PORT_MIN + 1;
      const a = await dp.run(buildPacket(syn({ saddr: EXT })), "bpx_from_device");
      const b = await dp.run(buildPacket(syn({ saddr: EXT_2 })), "bpx_from_device");
      const pa = snatPort(a.data, max);
      const pb = snatPort(b.data, max);
      // EXT's flow is established; EXT_2 only sent a SYN (a flood's spoofed source never answers).
      await dp.run(buildPacket(synAck({ dport: pa })), "bpx_from_device");
      await dp.run(ackOf(EXT), "bpx_from_device");
      const c = await dp.run(buildPacket(syn({ saddr: EXT_3 })), "bpx_from_device");
      assert.equal(c.retval, TC_ACT_OK, "the new flow is served");
      assert.equal(snatPort(c.data, max), pb, "with the SYN-only flow's port");
      assert.equal(dp.counters().snat_evicted, 1n, "counted");
      const back = await dp.run(buildPacket(synAck({ dport: pb })), "bpx_from_device");
      assertSame(
        back.data,
        buildPacket(synAck({ saddr: NODE, sport: 30080, daddr: EXT_3, dport: 40000 })),
        "reply to the new flow",
      );
      // The evicted flow starts over: its retransmitted SYN finds every port established or new, and is dropped.
      await dp.run(ackOf(EXT_3), "bpx_from_device");
      const again = await dp.run(buildPacket(syn({ saddr: EXT_2 })), "bpx_from_device");
      assert.equal(again.retval, TC_ACT_SHOT, "nothing left to take: both ports are established");
      const est = await dp.run(ackOf(EXT), "bpx_from_device");
      assert.equal(snatPort(est.data, max), pa, "the established flow keeps its port");
    }, PORT_MIN + 1));

  it("a port is given to a new flow only once its flow's conntrack entry is gone (collected after expiring); replies then reach the new client only", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_UDP);
      const first = await dp.run(buildPacket(dgram({ saddr: EXT })), "bpx_from_device");
      const port = snatPort(first.data, PORT_MIN);
      const reply: UdpSpec = {
        proto: "udp",
        saddr: REMOTE_BE,
        daddr: NODE,
        sport: 5353,
        dport: port,
        payload: Buffer.from("a"),
      };
      // Answered: a UDP stream (120 s), never evicted.
      const toExt = await dp.run(buildPacket(reply), "bpx_from_device");
      assertSame(
        toExt.data,
        buildPacket({ ...reply, saddr: NODE, sport: 30053, daddr: EXT, dport: 40001 }),
        "reply to EXT",
      );
      const early = await dp.run(buildPacket(dgram({ saddr: EXT_2 })), "bpx_from_device");
      assert.equal(early.retval, TC_ACT_SHOT, "the port's flow is alive: no port for EXT_2");
      age(dp, ctFwd(EXT, UDP, 40001, 30053), 121);
      const still = await dp.run(buildPacket(dgram({ saddr: EXT_2 })), "bpx_from_device");
      assert.equal(still.retval, TC_ACT_SHOT, "expired but not collected yet: the port still counts as EXT's");
      // The collector deletes the expired flow (ct-gc.ts), as it would within conntrackGCInterval.
      dp.m(abi.MAP_NAMES.conntrack).delete(abi.ctKey.encode(ctFwd(EXT, UDP, 40001, 30053)));
      const second = await dp.run(buildPacket(dgram({ saddr: EXT_2 })), "bpx_from_device");
      assert.equal(second.retval, TC_ACT_OK);
      assert.equal(snatPort(second.data, PORT_MIN), port, "reclaimed once its flow is gone");
      const back = await dp.run(buildPacket(reply), "bpx_from_device");
      assertSame(
        back.data,
        buildPacket({ ...reply, saddr: NODE, sport: 30053, daddr: EXT_2, dport: 40001 }),
        "reply goes to the new flow's client",
      );
      // EXT talks again: a new flow, but the only port is EXT_2's now.
      const late = await dp.run(buildPacket(dgram({ saddr: EXT })), "bpx_from_device");
      assert.equal(late.retval, TC_ACT_SHOT, "EXT never gets EXT_2's port while EXT_2's flow lives");
    }, PORT_MIN));

  it("owner checks: a flow whose port another flow holds is not sent with it, and a stale reply entry translates nothing", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_UDP);
      const first = await dp.run(buildPacket(dgram({ saddr: EXT })), "bpx_from_device");
      const port = snatPort(first.data, PORT_MIN);
      // Another flow's entry over the reply key (what a lost race or a stale entry would leave).
      const nat = dp.m(abi.MAP_NAMES.nat);
      const rkey = abi.natKey.encode({
        saddr: REMOTE_BE,
        daddr: NODE,
        sport: 5353,
        dport: port,
        proto: UDP,
        dir: abi.NAT_DIR_REPLY,
      });
      const e = abi.natEntry.decode(nat.lookup(rkey)!);
      nat.update(rkey, abi.natEntry.encode({ ...e, addr: EXT_2 }));
      const next = await dp.run(buildPacket(dgram({ saddr: EXT })), "bpx_from_device");
      assert.equal(next.retval, TC_ACT_SHOT, "not sent with a port another client owns");
      assert.equal(dp.counters().drop_nat_not_owner, 1n, "counted");
      const reply: UdpSpec = {
        proto: "udp",
        saddr: REMOTE_BE,
        daddr: NODE,
        sport: 5353,
        dport: port,
        payload: Buffer.from("a"),
      };
      const back = await dp.run(buildPacket(reply), "bpx_from_device");
      assertSame(
        back.data,
        buildPacket(reply),
        "EXT_2 has no forward entry naming the port: the reply is not translated",
      );
    }, PORT_MIN));

  it("owner checks on the stack path: tc egress masquerades and restores the frontend by the third entry only while the flow owns its port", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_UDP);
      const first = await dp.run(buildPacket(dgram({ saddr: EXT })), "bpx_from_device");
      const port = snatPort(first.data, PORT_MIN);
      // What the stack forwards between tc ingress and tc egress: the client's packet DNATed only, and the
      // backend's answer with only the masquerade undone.
      const forwarded = buildPacket(dgram({ saddr: EXT, daddr: REMOTE_BE, dport: 5353 }));
      const answer: UdpSpec = {
        proto: "udp",
        saddr: REMOTE_BE,
        daddr: EXT,
        sport: 5353,
        dport: 40001,
        payload: Buffer.from("a"),
      };
      const out = await dp.obj.program("bpx_reverse").testRun({ data: forwarded });
      assertSame(
        out.data,
        buildPacket(dgram({ saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 5353 })),
        "masqueraded at egress while the flow owns the port",
      );
      const back = await dp.obj.program("bpx_reverse").testRun({ data: buildPacket(answer) });
      assertSame(back.data, buildPacket({ ...answer, saddr: NODE, sport: 30053 }), "frontend restored at egress");
      // The port's reply entry now names another client: the third entry no longer belongs to a flow.
      const nat = dp.m(abi.MAP_NAMES.nat);
      const rkey = abi.natKey.encode({
        saddr: REMOTE_BE,
        daddr: NODE,
        sport: 5353,
        dport: port,
        proto: UDP,
        dir: abi.NAT_DIR_REPLY,
      });
      nat.update(rkey, abi.natEntry.encode({ ...abi.natEntry.decode(nat.lookup(rkey)!), addr: EXT_2 }));
      const out2 = await dp.obj.program("bpx_reverse").testRun({ data: forwarded });
      assertSame(out2.data, forwarded, "not sent with a port another client owns");
      const back2 = await dp.obj.program("bpx_reverse").testRun({ data: buildPacket(answer) });
      assertSame(back2.data, buildPacket(answer), "no frontend written from a stale third entry");
    }, PORT_MIN));
});

describe("externalTrafficPolicy Local (no masquerade)", () => {
  it("the backend sees the client; the reply leaves from the node address the client used", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...NODEPORT_TCP, backend: { id: 1, address: LOCAL_BE, port: 8080 }, flags: 0 });
      const out = await dp.run(buildPacket(syn({ daddr: NODE_2 })), "bpx_from_device");
      assertSame(out.data, buildPacket(syn({ daddr: LOCAL_BE, dport: 8080 })), "forward");
      const reply = synAck({ saddr: LOCAL_BE, daddr: EXT, dport: 40000 });
      const back = await dp.run(buildPacket(reply), "bpx_from_pod");
      assertSame(back.data, buildPacket({ ...reply, saddr: NODE_2, sport: 30080 }), "reply");
    }));
});

describe("loadBalancerSourceRanges", () => {
  it("a source inside the ranges is served; outside it is dropped and counted; another frontend's ranges do not count", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: LB_IP,
        port: 80,
        proto: TCP,
        revNatId: 5,
        backend: { id: 1, address: REMOTE_BE, port: 8080 },
        flags: abi.SVC_F_SOURCE_RANGES,
      });
      // Frontend 5 allows .0-.3, .8-.9 and .11; frontend 6 allows .10 (EXT), which must not open frontend 5.
      dp.allowSource(5, "198.51.100.0/30");
      dp.allowSource(5, "198.51.100.8/31");
      dp.allowSource(6, "198.51.100.10/32");
      dp.allowSource(5, "198.51.100.11/32");
      const inside = await dp.run(buildPacket(syn({ saddr: EXT_2, daddr: LB_IP, dport: 80 })), "bpx_from_device");
      assert.equal(inside.retval, TC_ACT_OK);
      assertSame(inside.data, buildPacket(syn({ saddr: EXT_2, daddr: REMOTE_BE, dport: 8080 })), "allowed");
      const outside = await dp.run(buildPacket(syn({ saddr: EXT, daddr: LB_IP, dport: 80 })), "bpx_from_device");
      assert.equal(outside.retval, TC_ACT_SHOT);
      const far = await dp.run(buildPacket(syn({ saddr: "203.0.113.9", daddr: LB_IP, dport: 80 })), "bpx_from_device");
      assert.equal(far.retval, TC_ACT_SHOT);
      assertCounted(dp, { translated_new: 1, drop_source_range: 2 }, "ranges");
    }));
});

describe("hairpin", () => {
  it("a backend reaching its own ClusterIP and landing on itself is masqueraded to the node, and the reply restored", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: VIP,
        port: 80,
        proto: TCP,
        revNatId: 7,
        backend: { id: 1, address: LOCAL_BE, port: 8080 },
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
      });
      const out = await dp.run(buildPacket(syn({ saddr: LOCAL_BE, daddr: VIP, dport: 80 })), "bpx_from_pod");
      const port = snatPort(out.data);
      assertSame(out.data, buildPacket(syn({ saddr: NODE, sport: port, daddr: LOCAL_BE, dport: 8080 })), "forward");
      const reply = synAck({ saddr: LOCAL_BE, daddr: NODE, dport: port });
      const back = await dp.run(buildPacket(reply), "bpx_from_pod");
      assertSame(back.data, buildPacket({ ...reply, saddr: VIP, sport: 80, daddr: LOCAL_BE, dport: 40000 }), "reply");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1 }, "hairpin");
    }));

  it("another pod's ClusterIP flow is not masqueraded (pod traffic keeps its address)", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: VIP,
        port: 80,
        proto: TCP,
        revNatId: 7,
        backend: { id: 1, address: LOCAL_BE, port: 8080 },
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
      });
      const out = await dp.run(buildPacket(syn({ saddr: "10.244.1.20", daddr: VIP, dport: 80 })), "bpx_from_pod");
      assertSame(out.data, buildPacket(syn({ saddr: "10.244.1.20", daddr: LOCAL_BE, dport: 8080 })), "forward");
      assert.equal(dp.natEntries(), 0);
    }));
});

describe("the translated mark (bpfproxy.translatedMarkBit)", () => {
  const MARK = 0x1000;
  const skb = (mark = 0) => {
    const ctx = Buffer.alloc(44);
    ctx.writeUInt32LE(mark, 8);
    return ctx;
  };
  const markOf = (ctx: Buffer | undefined) => ctx!.readUInt32LE(8);

  it("ingress marks a pod's ClusterIP packet it translated completely; egress clears the bit and passes it untouched and uncounted; a masqueraded flow's packet and one to a host-network backend are not marked", () =>
    withDatapath(async (dp) => {
      dp.m(abi.MAP_NAMES.natConfig).update(
        abi.u32Key.encode(0),
        abi.natConfig.encode({
          masqAddr: NODE,
          portMin: PORT_MIN,
          portMax: PORT_MIN + 3,
          flags: 0,
          translatedMark: MARK,
        }),
      );
      dp.setFrontend({
        address: VIP,
        port: 80,
        proto: TCP,
        revNatId: 7,
        backend: { id: 1, address: LOCAL_BE, port: 8080 },
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
      });
      const pod = "10.244.1.20";
      // Other mark bits (a CNI's) are kept at both ends.
      const other = 0x40000;
      for (const flags of [TCP_FLAGS.SYN, TCP_FLAGS.ACK]) {
        const want = buildPacket(syn({ saddr: pod, daddr: LOCAL_BE, dport: 8080, flags }));
        const inn = await dp.obj
          .program("bpx_from_pod")
          .testRun({ data: buildPacket(syn({ saddr: pod, daddr: VIP, dport: 80, flags })), ctx: skb(other) });
        assertSame(inn.data, want, "DNATed at ingress");
        assert.equal(markOf(inn.ctx), other | MARK, "ingress set the bit");
        const before = dp.counters();
        const out = await dp.obj.program("bpx_reverse").testRun({ data: inn.data, ctx: skb(markOf(inn.ctx)) });
        assert.equal(out.retval, TC_ACT_OK);
        assertSame(out.data, want, "egress passes it untouched");
        assert.equal(markOf(out.ctx), other, "egress cleared the bit, and only it");
        assert.deepEqual(dp.counters(), before, "egress counted nothing");
      }
      // Hairpin: masqueraded at egress, so ingress leaves it unmarked and egress does its work.
      const hp = await dp.obj
        .program("bpx_from_pod")
        .testRun({ data: buildPacket(syn({ saddr: LOCAL_BE, daddr: VIP, dport: 80 })), ctx: skb() });
      assert.equal(markOf(hp.ctx), 0, "a flow egress must masquerade is not marked");
      assertSame(hp.data, buildPacket(syn({ saddr: LOCAL_BE, daddr: LOCAL_BE, dport: 8080 })), "DNAT only at ingress");
      const hpOut = await dp.obj.program("bpx_reverse").testRun({ data: hp.data, ctx: skb(markOf(hp.ctx)) });
      const port = snatPort(hpOut.data);
      assertSame(
        hpOut.data,
        buildPacket(syn({ saddr: NODE, sport: port, daddr: LOCAL_BE, dport: 8080 })),
        "egress masqueraded it",
      );
      // A host-network backend on this node (a node address): delivered to a local socket, which must not get
      // the bit (with tcp_fwmark_accept or fwmark_reflect its answers would carry it past egress).
      dp.setFrontend({
        address: "10.96.0.11",
        port: 80,
        proto: TCP,
        revNatId: 8,
        backend: { id: 2, address: NODE, port: 8080 },
        scope: abi.SCOPE_INTERNAL,
      });
      dp.m(abi.MAP_NAMES.backends).update(
        abi.u32Key.encode(2),
        abi.backend.encode({ address: NODE, port: 8080, proto: TCP, flags: abi.BACKEND_F_NODE_LOCAL }),
      );
      for (const flags of [TCP_FLAGS.SYN, TCP_FLAGS.ACK]) {
        const local = await dp.obj.program("bpx_from_pod").testRun({
          data: buildPacket(syn({ saddr: pod, sport: 40001, daddr: "10.96.0.11", dport: 80, flags })),
          ctx: skb(),
        });
        assertSame(
          local.data,
          buildPacket(syn({ saddr: pod, sport: 40001, daddr: NODE, dport: 8080, flags })),
          "to the host-network backend",
        );
        assert.equal(markOf(local.ctx), 0, "a locally delivered packet is not marked");
      }
      // A reply (restored at egress on the stack path) is never marked.
      const reply = synAck({ saddr: LOCAL_BE, sport: 8080, daddr: pod, dport: 40000 });
      const rin = await dp.obj.program("bpx_from_pod").testRun({ data: buildPacket(reply), ctx: skb() });
      assert.equal(markOf(rin.ctx), 0, "a reply is not marked");
      const rout = await dp.obj.program("bpx_reverse").testRun({ data: rin.data, ctx: skb(markOf(rin.ctx)) });
      assertSame(rout.data, buildPacket({ ...reply, saddr: VIP, sport: 80 }), "egress restored the reply's frontend");
    }));

  it("with the bit off (0) nothing is marked and a packet carrying bit 12 gets egress's full treatment", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: VIP,
        port: 80,
        proto: TCP,
        revNatId: 7,
        backend: { id: 1, address: LOCAL_BE, port: 8080 },
        scope: abi.SCOPE_INTERNAL,
      });
      const pod = "10.244.1.20";
      const inn = await dp.obj
        .program("bpx_from_pod")
        .testRun({ data: buildPacket(syn({ saddr: pod, daddr: VIP, dport: 80 })), ctx: skb() });
      assert.equal(markOf(inn.ctx), 0);
      const reply = synAck({ saddr: LOCAL_BE, sport: 8080, daddr: pod, dport: 40000 });
      const rout = await dp.obj.program("bpx_reverse").testRun({ data: buildPacket(reply), ctx: skb(MARK) });
      assertSame(rout.data, buildPacket({ ...reply, saddr: VIP, sport: 80 }), "restored although marked");
      assert.equal(markOf(rout.ctx), MARK, "a bit bpfproxy does not own is left alone");
    }));
});

describe("tc egress reverse translation", () => {
  it("a reply from a host-network backend is restored on its way out; other packets pass uncounted", () =>
    withDatapath(async (dp) => {
      // A pod's flow to a ClusterIP whose backend is a socket on the node itself.
      dp.setFrontend({
        address: VIP,
        port: 443,
        proto: TCP,
        revNatId: 8,
        backend: { id: 3, address: NODE, port: 6443 },
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
      });
      const fwd = await dp.run(buildPacket(syn({ saddr: "10.244.1.20", daddr: VIP, dport: 443 })), "bpx_from_pod");
      assertSame(fwd.data, buildPacket(syn({ saddr: "10.244.1.20", daddr: NODE, dport: 6443 })), "forward");
      const reply = synAck({ saddr: NODE, sport: 6443, daddr: "10.244.1.20", dport: 40000 });
      const back = await dp.run(buildPacket(reply), "bpx_reverse");
      assert.equal(back.retval, TC_ACT_OK);
      assertSame(back.data, buildPacket({ ...reply, saddr: VIP, sport: 443 }), "reply");
      const other = buildPacket(syn({ saddr: NODE, daddr: "10.244.1.20", sport: 1234, dport: 80 }));
      const passed = await dp.run(other, "bpx_reverse");
      assert.equal(passed.data.toString("hex"), other.toString("hex"));
      assertCounted(dp, { translated_new: 1, reverse_translated: 1 }, "egress");
    }));

  it("a NodePort flow to a host-network backend on this node is not masqueraded (delivered locally)", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...NODEPORT_TCP, backend: { id: 4, address: NODE, port: 8081 } });
      const out = await dp.run(buildPacket(syn()), "bpx_from_device");
      assertSame(out.data, buildPacket(syn({ daddr: NODE, dport: 8081 })), "forward");
      const reply = synAck({ saddr: NODE, sport: 8081, daddr: EXT, dport: 40000 });
      const back = await dp.run(buildPacket(reply), "bpx_reverse");
      assertSame(back.data, buildPacket({ ...reply, sport: 30080 }), "reply");
    }));
});

describe("masquerade settings (kube-proxy's detectLocal and masqueradeAll)", () => {
  const CIP: Frontend = {
    address: VIP,
    port: 80,
    proto: TCP,
    revNatId: 9,
    backend: { id: 1, address: REMOTE_BE, port: 8080 },
    scope: abi.SCOPE_INTERNAL,
    flags: abi.SVC_F_MASQ_OUTSIDE,
  };
  const setFlags = (dp: Datapath, flags: number) =>
    dp
      .m(abi.MAP_NAMES.config)
      .update(
        abi.u32Key.encode(0),
        abi.config.encode({ flags, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-test" }),
      );

  it("ClusterIP traffic from outside the cluster CIDR is masqueraded; from inside it keeps its source", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(CIP);
      const outside = await dp.run(buildPacket(syn({ daddr: VIP, dport: 80 })), "bpx_from_device");
      const port = snatPort(outside.data);
      assertSame(
        outside.data,
        buildPacket(syn({ saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 })),
        "from outside",
      );
      const inside = await dp.run(buildPacket(syn({ saddr: "10.244.3.7", daddr: VIP, dport: 80 })), "bpx_from_device");
      assertSame(
        inside.data,
        buildPacket(syn({ saddr: "10.244.3.7", daddr: REMOTE_BE, dport: 8080 })),
        "from a pod elsewhere",
      );
    }));

  it("without a local-traffic detector ClusterIP traffic is not masqueraded (kube-proxy without clusterCIDR)", () =>
    withDatapath(async (dp) => {
      setFlags(dp, 0);
      dp.setFrontend(CIP);
      const out = await dp.run(buildPacket(syn({ daddr: VIP, dport: 80 })), "bpx_from_device");
      assertSame(out.data, buildPacket(syn({ daddr: REMOTE_BE, dport: 8080 })), "kept");
    }));

  it("masqueradeAll masquerades pod-to-ClusterIP traffic too", () =>
    withDatapath(async (dp) => {
      setFlags(dp, abi.CFG_F_DETECT_LOCAL | abi.CFG_F_MASQUERADE_ALL);
      dp.setFrontend(CIP);
      const out = await dp.run(buildPacket(syn({ saddr: "10.244.1.20", daddr: VIP, dport: 80 })), "bpx_from_pod");
      const port = snatPort(out.data);
      assertSame(
        out.data,
        buildPacket(syn({ saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 })),
        "masqueraded",
      );
      const back = await dp.run(buildPacket(synAck({ dport: port })), "bpx_from_device");
      assertSame(
        back.data,
        buildPacket(synAck({ saddr: VIP, sport: 80, daddr: "10.244.1.20", dport: 40000 })),
        "reply",
      );
    }));

  it("a flow keeps what its first packet chose: a masqueraded flow's next packets are masqueraded the same, an unmasqueraded one's are not (also after masqueradeAll changes)", () =>
    withDatapath(async (dp) => {
      setFlags(dp, abi.CFG_F_DETECT_LOCAL | abi.CFG_F_MASQUERADE_ALL);
      dp.setFrontend(CIP);
      const ctFlags = (saddr: string) =>
        abi.ctEntry.decode(
          dp
            .m(abi.MAP_NAMES.conntrack)
            .lookup(
              abi.ctKey.encode({ saddr, daddr: VIP, sport: 40000, dport: 80, proto: TCP, dir: abi.CT_DIR_FORWARD }),
            )!,
        ).xflags ?? 0;
      const ack = (saddr: string) => syn({ saddr, daddr: VIP, dport: 80, flags: TCP_FLAGS.ACK, seq: 0x01020305 });
      const masqd = "10.244.1.20";
      const first = await dp.run(buildPacket(syn({ saddr: masqd, daddr: VIP, dport: 80 })), "bpx_from_pod");
      const port = snatPort(first.data);
      assert.equal(ctFlags(masqd) & abi.CT_X_NO_NAT, 0, "a masqueraded flow looks up its NAT entry");
      const next = await dp.run(buildPacket(ack(masqd)), "bpx_from_pod");
      assertSame(
        next.data,
        buildPacket({ ...ack(masqd), saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 }),
        "tracked packet of the masqueraded flow",
      );

      setFlags(dp, abi.CFG_F_DETECT_LOCAL);
      const plain = "10.244.1.21";
      const second = await dp.run(buildPacket(syn({ saddr: plain, daddr: VIP, dport: 80 })), "bpx_from_pod");
      assertSame(second.data, buildPacket(syn({ saddr: plain, daddr: REMOTE_BE, dport: 8080 })), "new flow, kept");
      assert.equal(ctFlags(plain) & abi.CT_X_NO_NAT, abi.CT_X_NO_NAT, "an unmasqueraded flow skips the NAT table");
      const plainNext = await dp.run(buildPacket(ack(plain)), "bpx_from_pod");
      assertSame(
        plainNext.data,
        buildPacket({ ...ack(plain), daddr: REMOTE_BE, dport: 8080 }),
        "tracked packet of the unmasqueraded flow",
      );
      const still = await dp.run(buildPacket(ack(masqd)), "bpx_from_pod");
      assertSame(
        still.data,
        buildPacket({ ...ack(masqd), saddr: NODE, sport: port, daddr: REMOTE_BE, dport: 8080 }),
        "the masqueraded flow stays masqueraded after masqueradeAll is turned off",
      );
      setFlags(dp, abi.CFG_F_DETECT_LOCAL | abi.CFG_F_MASQUERADE_ALL);
      const plainLater = await dp.run(buildPacket(ack(plain)), "bpx_from_pod");
      assertSame(
        plainLater.data,
        buildPacket({ ...ack(plain), daddr: REMOTE_BE, dport: 8080 }),
        "the unmasqueraded flow stays so after masqueradeAll is turned on",
      );
    }));
});

describe("XDP program (bpx_xdp)", () => {
  const XDP_DROP = 1;
  const XDP_PASS = 2;
  const runXdp = (dp: Datapath, data: Buffer) => dp.obj.program("bpx_xdp").testRun({ data });
  const ctEntries = (dp: Datapath) => dp.m(abi.MAP_NAMES.conntrack).entries().count;

  it("drops a source outside loadBalancerSourceRanges itself, counted as in tc", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: LB_IP,
        port: 80,
        proto: TCP,
        revNatId: 5,
        backend: { id: 1, address: REMOTE_BE, port: 8080 },
        flags: abi.SVC_F_SOURCE_RANGES,
      });
      dp.allowSource(5, "198.51.100.11/32");
      const out = await runXdp(dp, buildPacket(syn({ saddr: EXT, daddr: LB_IP, dport: 80 })));
      assert.equal(out.retval, XDP_DROP);
      assertCounted(dp, { drop_source_range: 1 }, "xdp drop");
    }));

  it("passes, untouched and without state, what it cannot send itself: no known next hop, no backends, IP options, not a service", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(NODEPORT_TCP);
      dp.setFrontend({ ...NODEPORT_UDP, address: VIP, scope: abi.SCOPE_INTERNAL });
      dp.m(abi.MAP_NAMES.services).update(
        abi.svcKey.encode({ address: LB_IP, port: 80, proto: TCP, scope: abi.SCOPE_EXTERNAL, slot: 0 }),
        abi.svcValue.encode({ backendId: 0, count: 0, revNatId: 9, flags: 0, affinityTimeout: 0 }),
      );
      // A test run has no ingress device, so the FIB cannot give a next hop: the NodePort SYN goes to tc.
      for (const pkt of [
        buildPacket(syn()),
        buildPacket(syn({ daddr: LB_IP, dport: 80 })),
        buildPacket(syn({ ipOptions: Buffer.from([1, 1, 1, 1]) })),
        buildPacket(dgram({ daddr: "192.0.2.99" })),
      ]) {
        const out = await runXdp(dp, pkt);
        assert.equal(out.retval, XDP_PASS, describePacket(pkt));
        assert.equal(out.data.toString("hex"), pkt.toString("hex"), describePacket(pkt));
      }
      assert.equal(ctEntries(dp), 0, "no conntrack state");
      assert.equal(dp.natEntries(), 0, "no NAT state");
      assertCounted(dp, {}, "passed packets are counted by tc, not twice");
    }));
});
