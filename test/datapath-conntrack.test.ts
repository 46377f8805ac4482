// The conntrack lifecycle on packets (docs/conntrack.md): TCP states with a close that needs FINs from both
// sides, RSTs accepted only in window (tcpBeLiberal turns the check off), lifetimes read from bpx_ct_config_v1,
// entries only for packets that may start a flow (a stray ACK is reset per RFC 793, a Maglev frontend picks the
// flow up mid-stream). Frontends are programmed by the real reconciler; packets run through bpx_from_pod with
// BPF_PROG_TEST_RUN; entries are aged by writing older last_seen_ns values (CLOCK_MONOTONIC). Needs root.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { ctConfigValue } from "../src/dataplane/bpf/index.js";
import { maglevFlowHash, maglevIndex, maglevTable } from "../src/dataplane/bpf/maglev.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { DEFAULT_CONNTRACK } from "../src/config.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";
import {
  TCP_FLAGS,
  buildPacket,
  checksumsOk,
  describePacket,
  expectedReject,
  parsePacket,
  type TcpSpec,
  type UdpSpec,
} from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;
const VIP = "10.96.0.30";
const CLIENT = "10.244.1.10";
const SEC = 1_000_000_000n;
const ISN_C = 0x11223344;
const ISN_B = 0x7000_0000;
type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let n = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("test/datapath-conntrack.test.ts loads BPF programs: run it as root");
  bpffs = PrivateBpffs.create("ct");
});
after(() => bpffs?.release());

const be = (i: number, port = 8080): BackendModel => ({
  address: `10.244.2.${i}`,
  port,
  state: "active",
  nodeLocal: false,
});

function frontend(proto: "TCP" | "UDP", port: number, backends: BackendModel[], algorithm: Frontend["algorithm"]) {
  const fe: Frontend = {
    service: `default/ct-${proto.toLowerCase()}-${algorithm}`,
    portName: "",
    type: "ClusterIP",
    address: VIP,
    port,
    protocol: proto,
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm,
    backends,
  };
  return fe;
}

class Node {
  readonly obj: BpfObject;
  private readonly dir: string;
  private readonly rec: LbReconciler;
  constructor() {
    this.dir = `${bpffs!.path}/node-${++n}`;
    mkdirSync(this.dir);
    this.obj = new BpfObject("bpf/bpfproxy.o", { pinRoot: this.dir });
    this.obj.load();
    const m = (name: string) => this.obj.map(name);
    this.rec = new LbReconciler({
      services: m(abi.MAP_NAMES.services),
      backends: m(abi.MAP_NAMES.backends),
      revNat: m(abi.MAP_NAMES.revNat),
      svcMeta: m(abi.MAP_NAMES.svcMeta),
      maglev: m(abi.MAP_NAMES.maglev),
      affinityMatch: m(abi.MAP_NAMES.affinityMatch),
      services6: m(abi.MAP_NAMES.services6),
      backends6: m(abi.MAP_NAMES.backends6),
    });
  }
  async apply(frontends: Frontend[]): Promise<void> {
    await this.rec.restore();
    const model: NodeModel = {
      node: "node-a",
      frontends,
      extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })),
    };
    await this.rec.apply(model);
  }
  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
  setCtConfig(cfg: abi.CtConfig): void {
    this.obj.map(abi.MAP_NAMES.ctConfig).update(abi.u32Key.encode(0), abi.ctConfig.encode(cfg));
  }
  ct(key: abi.CtKey): abi.CtEntry | null {
    const v = this.obj.map(abi.MAP_NAMES.conntrack).lookup(abi.ctKey.encode(key));
    return v ? abi.ctEntry.decode(v) : null;
  }
  ctCount(): number {
    return this.obj.map(abi.MAP_NAMES.conntrack).entries().count;
  }
  /** Moves both entries of a flow `sec` seconds into the past. */
  age(keys: abi.CtKey[], sec: number): void {
    const map = this.obj.map(abi.MAP_NAMES.conntrack);
    for (const k of keys) {
      const e = this.ct(k);
      assert.ok(e, `entry ${JSON.stringify(k)} exists`);
      map.update(
        abi.ctKey.encode(k),
        abi.ctEntry.encode({ ...e, lastSeenNs: process.hrtime.bigint() - BigInt(sec) * SEC }),
      );
    }
  }
  counters(): Record<Reason, bigint> {
    const map = this.obj.map(abi.MAP_NAMES.counters);
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
  async run(data: Buffer) {
    return runThroughStack(this.obj, "bpx_from_pod", data);
  }
}

async function withNode(fn: (node: Node) => Promise<void>): Promise<void> {
  const node = new Node();
  try {
    await fn(node);
  } finally {
    node.close();
  }
}

function assertCounted(node: Node, want: Partial<Record<Reason, number>>, what: string): void {
  const got = node.counters();
  const exp = Object.fromEntries(Object.keys(abi.COUNTER_REASONS).map((r) => [r, BigInt(want[r as Reason] ?? 0)]));
  assert.deepEqual(got, exp, `${what}: counters`);
}

const cseg = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40000,
  dport: 80,
  flags: TCP_FLAGS.SYN,
  seq: ISN_C,
  ...over,
});

const fwdKey = (sport = 40000, proto = TCP, dport = 80): abi.CtKey => ({
  saddr: CLIENT,
  daddr: VIP,
  sport,
  dport,
  proto,
  dir: abi.CT_DIR_FORWARD,
});
const replyKey = (backend: string, bport: number, sport = 40000, proto = TCP): abi.CtKey => ({
  saddr: backend,
  daddr: CLIENT,
  sport: bport,
  dport: sport,
  proto,
  dir: abi.CT_DIR_REPLY,
});

/** Client segment -> the backend it was DNATed to ("" when not translated). */
async function fromClient(node: Node, spec: TcpSpec | UdpSpec, what: string): Promise<string> {
  const r = await node.run(buildPacket(spec));
  assert.equal(r.retval, TC_ACT_OK, `${what}: verdict`);
  assert.ok(checksumsOk(r.data), `${what}: checksums`);
  const p = parsePacket(r.data);
  return p.ip!.daddr === VIP ? "" : p.ip!.daddr;
}

/** Backend segment -> must come out with the frontend as its source. */
async function fromBackend(node: Node, backend: string, over: Partial<TcpSpec>, what: string): Promise<void> {
  const spec: TcpSpec = { proto: "tcp", saddr: backend, daddr: CLIENT, sport: 8080, dport: 40000, ...over };
  const r = await node.run(buildPacket(spec));
  assert.equal(r.retval, TC_ACT_OK, `${what}: verdict`);
  assert.equal(
    describePacket(r.data),
    describePacket(buildPacket({ ...spec, saddr: VIP, sport: 80 })),
    `${what}: reverse-translated`,
  );
}

// REPLIED (the backend answered) is asserted on its own where it matters; `state` is the rest.
const state = (e: abi.CtEntry | null) => (e ? e.flags & abi.CT_F_STATE & ~abi.CT_F_REPLIED : -1);
const replied = (e: abi.CtEntry | null) => (e ? e.flags & abi.CT_F_REPLIED : -1);

/** A random-algorithm TCP frontend with one backend, and an established connection through it. */
async function established(node: Node): Promise<string> {
  await node.apply([frontend("TCP", 80, [be(21)], "random")]);
  const b = await fromClient(node, cseg(), "SYN");
  assert.equal(b, "10.244.2.21");
  await fromBackend(node, b, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, seq: ISN_B, ack: ISN_C + 1 }, "SYN-ACK");
  assert.equal(await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }), "ACK"), b);
  return b;
}

describe("conntrack lifecycle (bpx_from_pod)", () => {
  test("SYN -> SYN-ACK -> ACK: SYN_SENT, then ESTABLISHED on both entries; each entry follows its sender's sequence", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("TCP", 80, [be(21)], "random")]);
      const b = await fromClient(node, cseg(), "SYN");
      assert.equal(state(node.ct(fwdKey())), 0, "SYN_SENT after the SYN");
      assert.equal(node.ct(fwdKey())!.nextSeq, ISN_C + 1, "client's next sequence number: ISN + 1");
      await fromBackend(node, b, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, seq: ISN_B, ack: ISN_C + 1 }, "SYN-ACK");
      assert.equal(state(node.ct(fwdKey())), 0, "SYN_RECV after the SYN-ACK: not established");
      assert.equal(replied(node.ct(fwdKey())), abi.CT_F_REPLIED, "the forward entry knows the backend answered");
      const payload = Buffer.from("GET / HTTP/1.1\r\n\r\n");
      await fromClient(
        node,
        cseg({ flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: ISN_C + 1, ack: ISN_B + 1, payload }),
        "data",
      );
      const f = node.ct(fwdKey())!;
      const r = node.ct(replyKey(b, 8080))!;
      assert.equal(state(f), abi.CT_F_SEEN_REPLY, "forward ESTABLISHED");
      assert.equal(state(r), abi.CT_F_SEEN_REPLY, "reply ESTABLISHED");
      assert.equal(f.nextSeq, ISN_C + 1 + payload.length, "forward: client's next sequence number after the data");
      assert.equal(r.nextSeq, ISN_B + 1, "reply: backend's next sequence number after its SYN");
    });
  });

  test("a FIN from one side keeps the close-wait lifetime (1 h): idle 15 s, then both sides still get through", async () => {
    await withNode(async (node) => {
      const b = await established(node);
      await fromClient(
        node,
        cseg({ flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }),
        "client FIN",
      );
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FORWARD, "half closed");
      assert.equal(state(node.ct(replyKey(b, 8080))), abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FORWARD, "reply too");
      node.age([fwdKey(), replyKey(b, 8080)], 15);
      await fromBackend(
        node,
        b,
        { flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: ISN_B + 1, ack: ISN_C + 2, payload: Buffer.from("late") },
        "server data after 15 s",
      );
      // The close-wait lifetime is tcpCloseWaitTimeout (here 100 s, so the test needs no hour of uptime).
      node.setCtConfig(ctConfigValue({ ...DEFAULT_CONNTRACK, tcpCloseWaitMs: 100_000 }));
      node.age([fwdKey(), replyKey(b, 8080)], 99);
      assert.equal(
        await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 2, ack: ISN_B + 5 }), "client ACK after 99 s"),
        b,
        "still tracked just inside tcpCloseWaitTimeout",
      );
      node.age([fwdKey(), replyKey(b, 8080)], 101);
      const ack = cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 2, ack: ISN_B + 5 });
      const r = await node.run(buildPacket(ack));
      assert.equal(r.retval, TC_ACT_REDIRECT, "past tcpCloseWaitTimeout the flow is gone: reset");
      assert.equal(r.data.toString("hex"), expectedReject(ack)!.toString("hex"), "RST bytes");
    });
  });

  test("FINs from both sides: TIME_WAIT lifetime (120 s)", async () => {
    await withNode(async (node) => {
      const b = await established(node);
      await fromClient(
        node,
        cseg({ flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }),
        "client FIN",
      );
      await fromBackend(
        node,
        b,
        { flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK, seq: ISN_B + 1, ack: ISN_C + 2 },
        "server FIN",
      );
      const both = abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FORWARD | abi.CT_F_FIN_REPLY;
      assert.equal(state(node.ct(fwdKey())), both, "forward: FIN both ways");
      assert.equal(state(node.ct(replyKey(b, 8080))), both, "reply: FIN both ways");
      node.age([fwdKey(), replyKey(b, 8080)], 119);
      assert.equal(
        await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 2, ack: ISN_B + 2 }), "last ACK"),
        b,
      );
      node.age([fwdKey(), replyKey(b, 8080)], 121);
      const r = await node.run(buildPacket(cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 2, ack: ISN_B + 2 })));
      assert.equal(r.retval, TC_ACT_REDIRECT, "past 120 s the flow is gone (reset)");
    });
  });

  test("an out-of-window RST is forwarded but ignored (counted); an in-window RST closes (10 s)", async () => {
    await withNode(async (node) => {
      const b = await established(node);
      const far = (ISN_C + 1 + 0x200000) >>> 0;
      assert.equal(await fromClient(node, cseg({ flags: TCP_FLAGS.RST, seq: far }), "blind RST"), b, "forwarded");
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY, "state unchanged");
      assert.equal(state(node.ct(replyKey(b, 8080))), abi.CT_F_SEEN_REPLY, "reply state unchanged");
      assert.equal(node.ct(fwdKey())!.nextSeq, ISN_C + 1, "an RST never moves the sequence number");
      // Spoofed "from the backend" far off its sequence: ignored as well.
      await fromBackend(
        node,
        b,
        { flags: TCP_FLAGS.RST, seq: (ISN_B - 0x300000) >>> 0 },
        "blind RST from the backend side",
      );
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY, "still established");
      node.age([fwdKey(), replyKey(b, 8080)], 11);
      assert.equal(
        await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }), "ACK 11 s later"),
        b,
        "the ignored RSTs did not shorten the lifetime",
      );
      await fromBackend(node, b, { flags: TCP_FLAGS.RST, seq: ISN_B + 1 }, "backend's own RST");
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING, "CLOSE");
      assert.equal(state(node.ct(replyKey(b, 8080))), abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING, "CLOSE (reply)");
      node.age([fwdKey(), replyKey(b, 8080)], 11);
      const r = await node.run(buildPacket(cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 })));
      assert.equal(r.retval, TC_ACT_REDIRECT, "11 s after the RST the flow is gone");
      assertCounted(
        node,
        {
          translated_new: 1,
          translated_established: 3,
          reverse_translated: 3,
          ct_rst_ignored: 2,
          reject_no_conntrack: 1,
        },
        "flow",
      );
    });
  });

  test("conntrack.tcpBeLiberal: an RST far off the window is accepted", async () => {
    await withNode(async (node) => {
      node.setCtConfig(ctConfigValue({ ...DEFAULT_CONNTRACK, beLiberal: true }));
      const b = await established(node);
      await fromClient(node, cseg({ flags: TCP_FLAGS.RST, seq: (ISN_C + 0x40000000) >>> 0 }), "far RST");
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING, "accepted: CLOSE");
      assert.equal(state(node.ct(replyKey(b, 8080))), abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING, "reply CLOSE");
      assert.equal(node.counters().ct_rst_ignored, 0n);
    });
  });

  test("a stray ACK to a random-algorithm frontend creates no entry and is answered with RST (seq = its ACK, no ACK flag)", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("TCP", 80, [be(21), be(22)], "random")]);
      const stray = cseg({
        flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
        seq: 5000,
        ack: 0xdeadbeef,
        payload: Buffer.from("hello"),
      });
      const r = await node.run(buildPacket(stray));
      assert.equal(r.retval, TC_ACT_REDIRECT, "sent back where it came from");
      const want = expectedReject(stray)!;
      assert.equal(describePacket(r.data), describePacket(want));
      assert.equal(r.data.toString("hex"), want.toString("hex"), "RST bytes");
      const p = parsePacket(r.data);
      assert.equal(p.tcp!.seq, 0xdeadbeef, "seq = the segment's ACK number");
      assert.equal(p.tcp!.flags, TCP_FLAGS.RST, "RST only");
      assert.equal(node.ctCount(), 0, "no conntrack entry");
      // A stray RST gets no answer and no entry either.
      const rst = await node.run(buildPacket(cseg({ flags: TCP_FLAGS.RST, seq: 1 })));
      assert.notEqual(rst.retval, TC_ACT_REDIRECT, "an RST is never answered");
      assert.equal(node.ctCount(), 0, "still no entry");
      assertCounted(node, { reject_no_conntrack: 2 }, "stray segments");
    });
  });

  test("a Maglev frontend picks a mid-stream segment up: the table's backend, tracked as SYN_RECV until the client's next ACK", async () => {
    await withNode(async (node) => {
      const backends = [1, 2, 3, 4].map((i) => be(i));
      await node.apply([frontend("TCP", 80, backends, "maglev")]);
      const names = backends.map((x) => `${x.address}:${x.port}`);
      const table = maglevTable(names);
      for (const sport of [41000, 41007, 41014, 41021]) {
        const want = names[table[maglevIndex(maglevFlowHash(CLIENT, VIP, sport, 80, TCP))]!]!.split(":")[0];
        const got = await fromClient(
          node,
          cseg({ sport, flags: TCP_FLAGS.ACK, seq: 9000, ack: 1 }),
          `ACK from ${sport}`,
        );
        assert.equal(got, want, `mid-stream segment from ${sport} goes where every node sends it`);
        const e = node.ct(fwdKey(sport))!;
        assert.equal(state(e), 0, "not established by one segment (a spoofed one would pin it 24 h)");
        assert.equal(replied(e), abi.CT_F_REPLIED, "answered: SYN_RECV");
        assert.equal(e.nextSeq, 9000, "its sequence number is followed from here");
        assert.ok(node.ct(replyKey(want!, 8080, sport)), "reply entry");
        await fromClient(node, cseg({ sport, flags: TCP_FLAGS.ACK, seq: 9000, ack: 1 }), `next ACK from ${sport}`);
        assert.equal(state(node.ct(fwdKey(sport))), abi.CT_F_SEEN_REPLY, "the client's next ACK establishes it");
      }
      assertCounted(node, { translated_new: 4, translated_established: 4 }, "picked up");
    });
  });

  test("lifetimes come from bpx_ct_config_v1 (udpTimeout, udpStreamTimeout, tcpEstablishedTimeout)", async () => {
    await withNode(async (node) => {
      node.setCtConfig(
        ctConfigValue({ ...DEFAULT_CONNTRACK, udpMs: 5_000, udpStreamMs: 20_000, tcpEstablishedMs: 100_000 }),
      );
      await node.apply([frontend("UDP", 53, [be(21, 5353)], "random"), frontend("TCP", 80, [be(21)], "random")]);
      const dg = (sport: number): UdpSpec => ({
        proto: "udp",
        saddr: CLIENT,
        daddr: VIP,
        sport,
        dport: 53,
        payload: Buffer.from("q"),
      });
      // One-way UDP flow: udpTimeout (5 s).
      await fromClient(node, dg(50000), "datagram");
      const k = [fwdKey(50000, UDP, 53), replyKey("10.244.2.21", 5353, 50000, UDP)];
      node.age(k, 4);
      await fromClient(node, dg(50000), "4 s later");
      assert.equal(node.counters().translated_established, 1n, "tracked within udpTimeout");
      node.age(k, 6);
      await fromClient(node, dg(50000), "6 s later");
      assert.equal(node.counters().translated_new, 2n, "past udpTimeout: a new flow");
      // A reply makes it a stream: udpStreamTimeout (20 s).
      const reply = buildPacket({
        proto: "udp",
        saddr: "10.244.2.21",
        daddr: CLIENT,
        sport: 5353,
        dport: 50000,
        payload: Buffer.from("a"),
      });
      assert.equal((await node.run(reply)).retval, TC_ACT_OK);
      node.age(k, 19);
      await fromClient(node, dg(50000), "19 s after the reply");
      assert.equal(node.counters().translated_established, 2n, "tracked within udpStreamTimeout");
      node.age(k, 21);
      await fromClient(node, dg(50000), "21 s after");
      assert.equal(node.counters().translated_new, 3n, "past udpStreamTimeout: a new flow");
      // TCP established: tcpEstablishedTimeout (100 s).
      const b = await fromClient(node, cseg(), "SYN");
      await fromBackend(node, b, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, seq: ISN_B, ack: ISN_C + 1 }, "SYN-ACK");
      await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }), "ACK");
      node.age([fwdKey(), replyKey(b, 8080)], 99);
      assert.equal(await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }), "99 s"), b);
      node.age([fwdKey(), replyKey(b, 8080)], 101);
      const r = await node.run(buildPacket(cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 })));
      assert.equal(r.retval, TC_ACT_REDIRECT, "past tcpEstablishedTimeout: gone (reset)");
    });
  });

  test("a SYN-ACK the client never acknowledges keeps the flow 60 s (SYN_RECV), not 24 h; a retransmitted SYN keeps its backend", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("TCP", 80, [be(21), be(22), be(23), be(24)], "random")]);
      const b = await fromClient(node, cseg(), "SYN");
      await fromBackend(node, b, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, seq: ISN_B, ack: ISN_C + 1 }, "SYN-ACK");
      node.age([fwdKey(), replyKey(b, 8080)], 30);
      assert.equal(await fromClient(node, cseg(), "SYN retransmitted after the SYN-ACK"), b);
      assert.equal(node.counters().translated_established, 1n, "the same flow, not a new choice");
      assert.equal(node.counters().translated_new, 1n, "no new flow");
      node.age([fwdKey(), replyKey(b, 8080)], 61);
      const r = await node.run(buildPacket(cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 })));
      assert.equal(r.retval, TC_ACT_REDIRECT, "61 s after the SYN-ACK the flow is gone (reset)");
    });
  });

  test("only an ACK of the SYN-ACK establishes a flow; a blind ACK leaves it SYN_RECV", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("TCP", 80, [be(21)], "random")]);
      const b = await fromClient(node, cseg(), "SYN");
      await fromBackend(node, b, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK, seq: ISN_B, ack: ISN_C + 1 }, "SYN-ACK");
      await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 5000 }), "blind ACK");
      assert.equal(state(node.ct(fwdKey())), 0, "a wrong acknowledgment number: still SYN_RECV");
      assert.equal(state(node.ct(replyKey(b, 8080))), 0, "reply entry too");
      await fromClient(node, cseg({ flags: TCP_FLAGS.ACK, seq: ISN_C + 1, ack: ISN_B + 1 }), "ACK");
      assert.equal(state(node.ct(fwdKey())), abi.CT_F_SEEN_REPLY, "ESTABLISHED");
      assert.equal(state(node.ct(replyKey(b, 8080))), abi.CT_F_SEEN_REPLY, "reply entry ESTABLISHED");
    });
  });

  test("a flow's two entries age together: a one-way stream refreshes the other direction's entry", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("UDP", 53, [be(21, 5353)], "random")]);
      const dg: UdpSpec = {
        proto: "udp",
        saddr: CLIENT,
        daddr: VIP,
        sport: 50002,
        dport: 53,
        payload: Buffer.from("q"),
      };
      await fromClient(node, dg, "datagram");
      const fk = fwdKey(50002, UDP, 53);
      const rk = replyKey("10.244.2.21", 5353, 50002, UDP);
      node.age([fk, rk], 20);
      // The data path's clock is CLOCK_MONOTONIC at tick resolution (bpf_ktime_get_coarse_ns): up to a
      // tick behind hrtime, against entries aged by 20 s.
      const TICK_SLACK = 100_000_000n;
      const before = process.hrtime.bigint() - TICK_SLACK;
      await fromClient(node, dg, "20 s later");
      assert.ok(
        node.ct(rk)!.lastSeenNs >= before,
        "client-only stream: the reply entry is refreshed with the forward one",
      );
      node.age([fk, rk], 20);
      const before2 = process.hrtime.bigint() - TICK_SLACK;
      const reply = buildPacket({
        proto: "udp",
        saddr: "10.244.2.21",
        daddr: CLIENT,
        sport: 5353,
        dport: 50002,
        payload: Buffer.from("a"),
      });
      assert.equal((await node.run(reply)).retval, TC_ACT_OK);
      assert.ok(
        node.ct(fk)!.lastSeenNs >= before2,
        "backend-only stream: the forward entry is refreshed with the reply one",
      );
    });
  });

  test("without a written config the kernel/kube-proxy defaults hold: one-way UDP 30 s", async () => {
    await withNode(async (node) => {
      await node.apply([frontend("UDP", 53, [be(21, 5353)], "random")]);
      const dg: UdpSpec = {
        proto: "udp",
        saddr: CLIENT,
        daddr: VIP,
        sport: 50001,
        dport: 53,
        payload: Buffer.from("q"),
      };
      await fromClient(node, dg, "datagram");
      const k = [fwdKey(50001, UDP, 53), replyKey("10.244.2.21", 5353, 50001, UDP)];
      node.age(k, 29);
      await fromClient(node, dg, "29 s later");
      node.age(k, 31);
      await fromClient(node, dg, "31 s later");
      assertCounted(node, { translated_new: 2, translated_established: 1 }, "udp default");
    });
  });
});
