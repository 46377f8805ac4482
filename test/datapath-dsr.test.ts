// Packet tests of direct server return (bpf/lib/dsr.h, docs/dsr.md) with BPF_PROG_TEST_RUN through the real tc
// entry programs of bpf/bpfproxy.o, which tail-call bpx_dsr_lb and bpx_dsr_backend through bpx_tail_v1 as the
// daemon fills it (src/dataplane/bpf/tail.ts). Two loaded objects stand for two nodes: A receives the client's
// packet (NodePort, backend on B), B hosts the backend. Expected frames are built from scratch by
// test/fixtures/packets.ts (checksums computed independently, IPv4 options included) and compared byte for byte.
// The test's network namespace has no route to the backend, so A's FIB lookup finds none and the packet takes the
// stack path (TC_ACT_OK, TTL untouched), as the MTU check finds loopback's 64 KiB (the MTU case is end to end,
// test/e2e-dsr.test.ts). Needs root.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { ipv4ToBytes } from "../src/dataplane/bpf/abi.js";
import { fillTailCalls } from "../src/dataplane/bpf/tail.js";
import { BpfObject, possibleCpus, type MapHandle } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { TCP_FLAGS, buildPacket, checksumsOk, describePacket, type TcpSpec, type UdpSpec } from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const OBJECT = "bpf/bpfproxy.o";
const TC_ACT_OK = 0;
const XDP_PASS = 2;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;

const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const EXT = "198.51.100.10";
const BE = "10.244.2.21";
const NODE_PORT = 30080;
const BE_PORT = 8080;
const REV_NAT_ID = 7;
const BE_ID = 3;

type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let caseNo = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-dsr.test.ts");
  bpffs = PrivateBpffs.create("datapath-dsr");
});

after(() => bpffs?.release());

function entries(m: MapHandle): { key: Buffer; value: Buffer }[] {
  const { keys, values, count } = m.entries();
  const ks = m.info.keySize;
  const vs = values.length / Math.max(count, 1);
  const out = [];
  for (let i = 0; i < count; i++)
    out.push({ key: keys.subarray(i * ks, (i + 1) * ks), value: values.subarray(i * vs, (i + 1) * vs) });
  return out;
}

/** One loaded bpfproxy.o with its tail calls filled, as one node's daemon has it. */
class Node {
  private constructor(
    readonly obj: BpfObject,
    readonly dir: string,
  ) {}

  static open(address: string, opts: { dsr: boolean; backendLocal: boolean }): Node {
    const dir = `${bpffs!.path}/case-${++caseNo}`;
    mkdirSync(dir);
    const obj = new BpfObject(OBJECT, { pinRoot: dir });
    try {
      obj.load();
      fillTailCalls(obj);
    } catch (e) {
      obj.close();
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const n = new Node(obj, dir);
    n.m(abi.MAP_NAMES.config).update(
      abi.u32Key.encode(0),
      abi.config.encode({ flags: abi.CFG_F_DETECT_LOCAL, clusterCidrs: ["10.244.0.0/16"], nodeName: "node" }),
    );
    n.m(abi.MAP_NAMES.natConfig).update(
      abi.u32Key.encode(0),
      abi.natConfig.encode({ masqAddr: address, portMin: 61000, portMax: 61010, flags: 0 }),
    );
    n.m(abi.MAP_NAMES.nodePortAddrs).update(
      abi.be32AddrKey.encode({ address }),
      abi.nodePortAddr.encode({ flags: abi.NODEPORT_ADDR_F_SERVE | abi.NODEPORT_ADDR_F_LOCAL }),
    );
    // The NodePort of both protocols, one backend (on B), as desired.ts writes it for forwardingMode dsr.
    for (const proto of [TCP, UDP]) {
      const key = (slot: number) =>
        abi.svcKey.encode({ address: abi.WILDCARD_ADDRESS, port: NODE_PORT, proto, scope: abi.SCOPE_EXTERNAL, slot });
      n.m(abi.MAP_NAMES.services).update(
        key(1),
        abi.svcValue.encode({
          backendId: BE_ID + proto,
          count: 0,
          revNatId: REV_NAT_ID + proto,
          flags: 0,
          affinityTimeout: 0,
        }),
      );
      n.m(abi.MAP_NAMES.services).update(
        key(0),
        abi.svcValue.encode({
          backendId: 0,
          count: 1,
          revNatId: REV_NAT_ID + proto,
          flags: abi.SVC_F_MASQUERADE,
          xflags: opts.dsr ? abi.SVC_X_DSR : 0,
          affinityTimeout: 0,
        }),
      );
      n.m(abi.MAP_NAMES.backends).update(
        abi.u32Key.encode(BE_ID + proto),
        abi.backend.encode({
          address: BE,
          port: BE_PORT,
          proto,
          flags: opts.backendLocal ? abi.BACKEND_F_NODE_LOCAL : 0,
        }),
      );
      n.m(abi.MAP_NAMES.revNat).update(
        abi.u32Key.encode(REV_NAT_ID + proto),
        abi.revNat.encode({ address: abi.WILDCARD_ADDRESS, port: NODE_PORT }),
      );
    }
    return n;
  }

  /** A second TCP NodePort, `port`, to the same backend, masqueraded (no DSR flag): another Service. */
  addSnatNodePort(port: number): void {
    const key = (slot: number) =>
      abi.svcKey.encode({ address: abi.WILDCARD_ADDRESS, port, proto: TCP, scope: abi.SCOPE_EXTERNAL, slot });
    const revNatId = REV_NAT_ID + 100;
    const value = (slot: number) =>
      abi.svcValue.encode({
        backendId: slot ? BE_ID + TCP : 0,
        count: slot ? 0 : 1,
        revNatId,
        flags: slot ? 0 : abi.SVC_F_MASQUERADE,
        affinityTimeout: 0,
      });
    this.m(abi.MAP_NAMES.services).update(key(1), value(1));
    this.m(abi.MAP_NAMES.services).update(key(0), value(0));
    this.m(abi.MAP_NAMES.revNat).update(
      abi.u32Key.encode(revNatId),
      abi.revNat.encode({ address: abi.WILDCARD_ADDRESS, port }),
    );
  }

  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  m(name: string) {
    return this.obj.map(name);
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

  conntrack() {
    return entries(this.m(abi.MAP_NAMES.conntrack)).map(({ key, value }) => ({
      k: abi.ctKey.decode(key),
      v: abi.ctEntry.decode(value),
    }));
  }

  nat() {
    return entries(this.m(abi.MAP_NAMES.nat)).map(({ key, value }) => ({
      k: abi.natKey.decode(key),
      v: abi.natEntry.decode(value),
    }));
  }

  /** tc ingress of a device (Ethernet). */
  async device(data: Buffer) {
    return this.obj.program("bpx_from_device").testRun({ data, ctx: Buffer.alloc(44) });
  }
}

async function withNodes(fn: (a: Node, b: Node) => Promise<void>, dsr = true): Promise<void> {
  const a = Node.open(NODE_A, { dsr, backendLocal: false });
  let b: Node | undefined;
  try {
    b = Node.open(NODE_B, { dsr, backendLocal: true });
    await fn(a, b);
  } finally {
    b?.close();
    a.close();
  }
}

function assertCounted(n: Node, expected: Partial<Record<Reason, number>>, what: string): void {
  const want = Object.fromEntries(Object.keys(abi.COUNTER_REASONS).map((r) => [r, BigInt(expected[r as Reason] ?? 0)]));
  assert.deepEqual(n.counters(), want, `${what}: counters`);
}

function assertSame(got: Buffer, want: Buffer, what: string): void {
  assert.equal(describePacket(got), describePacket(want), `${what}: packet summary`);
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: packet bytes`);
  assert.ok(checksumsOk(got), `${what}: checksums verify`);
}

const show = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));

/** The DSR option as the wire carries it: type 0x9e, length 8, the frontend's port and address. */
function dsrOption(address: string, port: number): Buffer {
  const o = Buffer.alloc(8);
  o[0] = 0x9e;
  o[1] = 8;
  o.writeUInt16BE(port, 2);
  ipv4ToBytes(address).copy(o, 4);
  return o;
}

const syn = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: EXT,
  daddr: NODE_A,
  sport: 40000,
  dport: NODE_PORT,
  flags: TCP_FLAGS.SYN,
  seq: 0x01020304,
  ...over,
});
const dgram = (over: Partial<UdpSpec> = {}): UdpSpec => ({
  proto: "udp",
  saddr: EXT,
  daddr: NODE_A,
  sport: 40001,
  dport: NODE_PORT,
  payload: Buffer.from("hello dsr"),
  ...over,
});

describe("direct server return: the node that receives the client's packet (bpx_dsr_lb)", () => {
  it("DNATs a SYN to the backend on the other node without SNAT, adding the option with the frontend the client used", () =>
    withNodes(async (a) => {
      const r = await a.device(buildPacket(syn()));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(
        r.data,
        buildPacket(syn({ daddr: BE, dport: BE_PORT, ipOptions: dsrOption(NODE_A, NODE_PORT) })),
        "SYN to the backend, 28-byte IPv4 header",
      );
      assertCounted(a, { translated_new: 1, dsr_option_sent: 1 }, "A");
      // One conntrack entry, the forward one (replies never come back here), marked DSR and NO_NAT; no NAT entries.
      const ct = a.conntrack();
      assert.equal(ct.length, 1, show(ct));
      assert.deepEqual(ct[0]!.k, { saddr: EXT, daddr: NODE_A, sport: 40000, dport: NODE_PORT, proto: TCP, dir: 0 });
      assert.equal(ct[0]!.v.xflags! & (abi.CT_X_DSR | abi.CT_X_NO_NAT), abi.CT_X_DSR | abi.CT_X_NO_NAT);
      assert.equal(ct[0]!.v.backendAddr, BE);
      assert.deepEqual(a.nat(), []);
    }));

  it("sends the flow's later segments to the same backend without the option, and counts them established", () =>
    withNodes(async (a) => {
      await a.device(buildPacket(syn()));
      const ack = syn({ flags: TCP_FLAGS.ACK, seq: 0x01020305, ack: 0x55, payload: Buffer.from("GET /\r\n") });
      const r = await a.device(buildPacket(ack));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(r.data, buildPacket({ ...ack, daddr: BE, dport: BE_PORT }), "ACK with data, 20-byte IPv4 header");
      assertCounted(a, { translated_new: 1, translated_established: 1, dsr_option_sent: 1 }, "A");
      // The client's ACK stands for the answer A never sees: the flow lives as an established one.
      const fwd = a.conntrack()[0]!.v;
      assert.equal(fwd.flags & abi.CT_F_SEEN_REPLY, abi.CT_F_SEEN_REPLY);
    }));

  it("adds the option to every UDP datagram (no first packet to count on)", () =>
    withNodes(async (a) => {
      for (let i = 0; i < 2; i++) {
        const r = await a.device(buildPacket(dgram()));
        assert.equal(r.retval, TC_ACT_OK);
        assertSame(
          r.data,
          buildPacket(dgram({ daddr: BE, dport: BE_PORT, ipOptions: dsrOption(NODE_A, NODE_PORT) })),
          `datagram ${i + 1}`,
        );
      }
      assertCounted(a, { translated_new: 1, translated_established: 1, dsr_option_sent: 2 }, "A");
    }));

  it("without the DSR flag the same flow is masqueraded as before (snat)", () =>
    withNodes(async (a) => {
      const r = await runThroughStack(a.obj, "bpx_from_device", buildPacket(syn()));
      assert.equal(r.retval, TC_ACT_OK);
      const out = r.data;
      assert.equal(out[14]! & 0x0f, 5, "no IPv4 option");
      assert.equal(out.subarray(26, 30).join("."), NODE_A, "source masqueraded to the node");
      assertCounted(a, { translated_new: 1 }, "A");
    }, false));

  // The client reuses its port for another Service with the same backend: after DNAT both flows are client ->
  // backend, the stack path's key for masquerading at tc egress. The DSR flow's packets must keep their source
  // there (this harness runs without the translated mark bit, so the stale entry itself must be gone).
  it("a DSR flow from the client port of an earlier masqueraded flow to the same backend keeps its source at tc egress", () =>
    withNodes(async (a) => {
      a.addSnatNodePort(NODE_PORT + 1);
      const masq = await runThroughStack(a.obj, "bpx_from_device", buildPacket(syn({ dport: NODE_PORT + 1 })));
      assert.equal(masq.retval, TC_ACT_OK);
      assert.equal(masq.data.subarray(26, 30).join("."), NODE_A, "the first flow is masqueraded");
      const r = await runThroughStack(a.obj, "bpx_from_device", buildPacket(syn()));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(
        r.data,
        buildPacket(syn({ daddr: BE, dport: BE_PORT, ipOptions: dsrOption(NODE_A, NODE_PORT) })),
        "the DSR SYN after tc egress: the client's source",
      );
    }));

  it("XDP leaves a DSR frontend's packet to tc untouched, with nothing written", () =>
    withNodes(async (a) => {
      const data = buildPacket(syn());
      const r = await a.obj.program("bpx_xdp").testRun({ data });
      assert.equal(r.retval, XDP_PASS);
      assert.equal(r.data.toString("hex"), data.toString("hex"));
      assert.deepEqual(a.conntrack(), []);
      assertCounted(a, {}, "A after XDP");
    }));
});

describe("direct server return: the backend's node (bpx_dsr_backend)", () => {
  it("strips the option, records the flow, and the backend's reply leaves with the frontend as source", () =>
    withNodes(async (a, b) => {
      const toB = (await a.device(buildPacket(syn()))).data;
      const r = await b.device(toB);
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(r.data, buildPacket(syn({ daddr: BE, dport: BE_PORT })), "SYN as the backend gets it");
      assertCounted(b, { dsr_received: 1 }, "B");
      const nat = b.nat();
      assert.equal(nat.length, 1, show(nat));
      assert.deepEqual(nat[0]!.k, { saddr: BE, daddr: EXT, sport: BE_PORT, dport: 40000, proto: TCP, dir: 1 });
      assert.equal(nat[0]!.v.frontendAddr, NODE_A);
      assert.equal(nat[0]!.v.frontendPort, NODE_PORT);

      // The SYN-ACK from the pod: B's pod ingress, then B's device egress (the stack path), source = A:NodePort.
      const synAck: TcpSpec = {
        proto: "tcp",
        saddr: BE,
        daddr: EXT,
        sport: BE_PORT,
        dport: 40000,
        flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
        seq: 0x55,
        ack: 0x01020305,
      };
      const reply = await runThroughStack(b.obj, "bpx_from_pod", buildPacket(synAck));
      assert.equal(reply.retval, TC_ACT_OK);
      assertSame(reply.data, buildPacket({ ...synAck, saddr: NODE_A, sport: NODE_PORT }), "SYN-ACK to the client");
      assertCounted(b, { dsr_received: 1, reverse_translated: 1 }, "B after the reply");
      // B never sees the client's ACKs: the backend's first segment after its SYN-ACK (ACK, no SYN) says the
      // handshake completed, and B's entries become established (a SYN-ACK alone, e.g. to a spoofed SYN, does not).
      const fwdB = () =>
        b
          .conntrack()
          .find((e) => e.k.dir === 0 && e.k.saddr === EXT && e.k.daddr === NODE_A && e.k.dport === NODE_PORT)!.v;
      assert.equal(fwdB().flags & abi.CT_F_SEEN_REPLY, 0, "after the SYN-ACK: not established");
      assert.equal(fwdB().xflags! & abi.CT_X_DSR, abi.CT_X_DSR);
      const data: TcpSpec = { ...synAck, flags: TCP_FLAGS.ACK, seq: 0x56, payload: Buffer.from("hi\n") };
      const r2 = await runThroughStack(b.obj, "bpx_from_pod", buildPacket(data));
      assertSame(r2.data, buildPacket({ ...data, saddr: NODE_A, sport: NODE_PORT }), "data to the client");
      assert.equal(fwdB().flags & abi.CT_F_SEEN_REPLY, abi.CT_F_SEEN_REPLY, "after the backend's data: established");
      // Nothing of the flow on A saw the reply.
      assertCounted(a, { translated_new: 1, dsr_option_sent: 1 }, "A");
    }));

  it("does the same for UDP, each datagram's option refreshing the flow", () =>
    withNodes(async (a, b) => {
      for (let i = 0; i < 2; i++) {
        const r = await b.device((await a.device(buildPacket(dgram()))).data);
        assert.equal(r.retval, TC_ACT_OK);
        assertSame(r.data, buildPacket(dgram({ daddr: BE, dport: BE_PORT })), `datagram ${i + 1} at the backend`);
      }
      const answer: UdpSpec = {
        proto: "udp",
        saddr: BE,
        daddr: EXT,
        sport: BE_PORT,
        dport: 40001,
        payload: Buffer.from("olleh"),
      };
      const reply = await runThroughStack(b.obj, "bpx_from_pod", buildPacket(answer));
      assert.equal(reply.retval, TC_ACT_OK);
      assertSame(reply.data, buildPacket({ ...answer, saddr: NODE_A, sport: NODE_PORT }), "answer to the client");
      assertCounted(b, { dsr_received: 2, reverse_translated: 1 }, "B");
    }));

  // Type 0x9e is RFC 4727's experimental option 30 (copied): anyone may send it. Only a packet shaped exactly as
  // bpx_dsr_lb sends it (length 8, a frontend this node knows, for TCP a SYN) is taken for DSR; anything else goes
  // the ordinary way untouched, or a reply carrying such an option would skip its reverse NAT (the flows
  // test/fuzz-csum lost).
  it("takes other IPv4 options, and a type-0x9e option not shaped as DSR's, the ordinary way, untouched", () =>
    withNodes(async (_a, b) => {
      const wrongLen = dsrOption(NODE_A, NODE_PORT);
      wrongLen[1] = 6;
      const cases: Array<[string, TcpSpec | UdpSpec]> = [
        // A NOP-padded router alert (RFC 2113).
        [
          "router alert",
          syn({ daddr: BE, dport: BE_PORT, ipOptions: Buffer.from([0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]) }),
        ],
        ["type 0x9e, length 6", syn({ daddr: BE, dport: BE_PORT, ipOptions: wrongLen })],
        ["a frontend B does not know", syn({ daddr: BE, dport: BE_PORT, ipOptions: dsrOption("203.0.113.9", 4242) })],
        [
          "a UDP port that is no NodePort",
          dgram({ daddr: BE, dport: BE_PORT, ipOptions: dsrOption(NODE_A, NODE_PORT + 1) }),
        ],
        [
          "a TCP segment other than SYN",
          syn({ daddr: BE, dport: BE_PORT, flags: TCP_FLAGS.ACK, ack: 1, ipOptions: dsrOption(NODE_A, NODE_PORT) }),
        ],
      ];
      for (const [what, spec] of cases) {
        const data = buildPacket(spec);
        const r = await b.device(data);
        assert.equal(r.retval, TC_ACT_OK, what);
        assert.equal(r.data.toString("hex"), data.toString("hex"), what);
      }
      assert.deepEqual(b.nat(), []);
      assertCounted(b, { not_service: cases.length }, "B: not a frontend");
    }));

  it("reverse-translates a masqueraded flow's reply that carries a type-0x9e option", () =>
    withNodes(async (a) => {
      const out = (await runThroughStack(a.obj, "bpx_from_device", buildPacket(dgram()))).data;
      assert.equal(out.subarray(26, 30).join("."), NODE_A, "source masqueraded to the node");
      const answer: UdpSpec = {
        proto: "udp",
        saddr: BE,
        daddr: NODE_A,
        sport: BE_PORT,
        dport: out.readUInt16BE(34),
        payload: Buffer.from("olleh"),
        ipOptions: dsrOption("203.0.113.9", 4242),
      };
      const r = await runThroughStack(a.obj, "bpx_from_device", buildPacket(answer));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(
        r.data,
        buildPacket({ ...answer, saddr: NODE_A, sport: NODE_PORT, daddr: EXT, dport: 40001 }),
        "answer to the client, option kept",
      );
      assertCounted(a, { translated_new: 1, reverse_translated: 1 }, "A");
    }, false));
});
