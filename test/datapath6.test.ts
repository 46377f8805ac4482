// Packet tests of the IPv6 path (bpf/lib/datapath6.h), run with BPF_PROG_TEST_RUN through the real tc entry
// programs of bpf/bpfproxy.o, which tail-call the IPv6 program through bpx_tail_v1 as the daemon fills it
// (src/dataplane/bpf/tail.ts). Maps are written by the IPv6 encoder (src/dataplane/bpf/lb6.ts). Expected packets
// are built independently by test/fixtures/packets6.ts (checked against scapy) and compared byte for byte,
// checksums included; every output's checksums are also verified on their own (ipv6ChecksumsOk). Needs root.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { deleteLb6, encodeFrontend6, writeLb6, type Lb6Contents } from "../src/dataplane/bpf/lb6.js";
import { fillTailCalls } from "../src/dataplane/bpf/tail.js";
import { BitCollector, Prefilter, bits6Of, prefilter6Bit } from "../src/dataplane/bpf/prefilter.js";
import { writeNat6Config } from "../src/dataplane/bpf/nat6.js";
import { encodeSourceRanges6, writeSourceRanges6 } from "../src/dataplane/bpf/srcrange6.js";
import { maglevFlowHash6, maglevIndex, maglevName, maglevTable } from "../src/dataplane/bpf/maglev.js";
import { readBackendStats, readFrontendStats } from "../src/dataplane/bpf/status.js";
import { BpfObject, mountBpffs, possibleCpus, umount } from "../src/native/index.js";
import type { Frontend } from "../src/model/types.js";
import { DEFAULT_DST_MAC, DEFAULT_SRC_MAC, TCP_FLAGS, buildPacket, onesComplementSum } from "./fixtures/packets.js";
import {
  ICMPV6,
  ICMPV6_EXC_HOPLIMIT,
  ICMPV6_NOROUTE,
  ICMPV6_PORT_UNREACH,
  IPV6_MIN_MTU,
  buildFrame6,
  buildIcmp6Error,
  buildIpv6,
  checkIpv6,
  ethernet6,
  fragmentIpv6,
  ipv6ChecksumsOk,
  pseudoHeaderSum6,
  type Packet6Spec,
} from "./fixtures/packets6.js";

const OBJECT = "bpf/bpfproxy.o";
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

const CLIENT = "fd00:10:244:1::a";
const VIP = "fd00:96::50";
const OTHER = "fd00:96::99";
const BE1 = "fd00:10:244:2::15";
const BE2 = "fd00:10:244:3::16";

type Reason = keyof typeof abi.COUNTER_REASONS;
type Program = "bpx_from_pod" | "bpx_from_device";

let bpffs: string | undefined;
let caseNo = 0;

before(() => {
  if (process.getuid?.() !== 0)
    throw new Error("test/datapath6.test.ts loads BPF programs and mounts a private bpffs: run it as root");
  bpffs = mkdtempSync("/tmp/bpx-datapath6-");
  mountBpffs(bpffs);
});

after(() => {
  if (!bpffs) return;
  try {
    umount(bpffs);
  } finally {
    rmSync(bpffs, { recursive: true, force: true });
  }
});

/** One loaded bpfproxy.o, its maps pinned in a private directory of the test bpffs. */
class Datapath {
  private constructor(
    readonly obj: BpfObject,
    readonly dir: string,
  ) {}

  static open(opts: { tailCalls: boolean }): Datapath {
    if (!bpffs) throw new Error("bpffs not mounted (did the root check fail?)");
    const dir = `${bpffs}/case-${++caseNo}`;
    mkdirSync(dir);
    const obj = new BpfObject(OBJECT, { pinRoot: dir });
    try {
      obj.load();
      if (opts.tailCalls) fillTailCalls(obj);
    } catch (e) {
      obj.close();
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return new Datapath(obj, dir);
  }

  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private maps() {
    return {
      services6: this.obj.map(abi.MAP_NAMES.services6),
      backends6: this.obj.map(abi.MAP_NAMES.backends6),
      maglev: this.obj.map(abi.MAP_NAMES.maglev),
      affinityMatch: this.obj.map(abi.MAP_NAMES.affinityMatch),
    };
  }

  setFrontend(
    fe: Frontend,
    ids: { revNatId: number; backendIds: number[] },
    extras?: { dropWhenEmpty?: boolean; externalPolicyLocal?: boolean; sourceRanges?: string[] },
  ): Lb6Contents {
    const c = encodeFrontend6(fe, ids, extras);
    writeLb6(this.maps(), c);
    return c;
  }

  removeFrontend(c: Lb6Contents): void {
    deleteLb6(this.maps(), c);
  }

  ct6(key: abi.CtKey): abi.Ct6Entry | null {
    const v = this.obj.map(abi.MAP_NAMES.conntrack6).lookup(abi.ct6Key.encode(key));
    return v ? abi.ct6Entry.decode(v) : null;
  }

  ct6Count(): number {
    return this.obj.map(abi.MAP_NAMES.conntrack6).entries().count;
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

  /** The tc ingress entry, then (passed up the stack) tc egress, bpx_reverse, as on the way out. */
  async run(data: Buffer, program: Program = "bpx_from_pod") {
    const r = await this.obj.program(program).testRun({ data });
    if (r.retval !== TC_ACT_OK) return r;
    const e = await this.obj.program("bpx_reverse").testRun({ data: r.data });
    assert.equal(e.retval, TC_ACT_OK, "tc egress passes IPv6");
    return e;
  }

  /** The tc ingress entry alone. */
  ingress(data: Buffer, program: Program = "bpx_from_pod") {
    return this.obj.program(program).testRun({ data });
  }
}

async function withDatapath(fn: (dp: Datapath) => Promise<void>, tailCalls = true): Promise<void> {
  const dp = Datapath.open({ tailCalls });
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
  assert.ok(ipv6ChecksumsOk(got, { frame: true }), `${what}: the output's checksums are right`);
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: packet bytes`);
}

function frontend(protocol: "TCP" | "UDP", port: number, backends: { address: string; port: number }[]): Frontend {
  return {
    service: "default/web6",
    portName: "",
    type: "ClusterIP",
    address: VIP,
    port,
    protocol,
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: backends.map((b) => ({ ...b, state: "active", nodeLocal: false })),
  };
}

const WEB = frontend("TCP", 80, [{ address: BE1, port: 8080 }]);
const DNS = frontend("UDP", 53, [{ address: BE1, port: 5353 }]);

const syn = (over: Partial<Packet6Spec> = {}): Packet6Spec =>
  ({
    proto: "tcp",
    saddr: CLIENT,
    daddr: VIP,
    sport: 40000,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 1000,
    ...over,
  }) as Packet6Spec;

describe("IPv6 ClusterIP through the tail-called program", () => {
  it("a SYN to the frontend is DNATed to the backend, checksum fixed over the IPv6 pseudo header, and tracked", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const r = await dp.run(buildFrame6(syn()));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(r.data, buildFrame6(syn({ daddr: BE1, dport: 8080 })), "DNAT");
      assertCounted(dp, { translated_new: 1 }, "new flow");
      const tuple = { saddr: CLIENT, daddr: VIP, sport: 40000, dport: 80, proto: abi.IPPROTO_TCP };
      const fwd = dp.ct6({ ...tuple, dir: abi.CT_DIR_FORWARD });
      assert.ok(fwd, "forward entry");
      assert.deepEqual([fwd.addr, fwd.port, fwd.backendId, fwd.revNatId], [BE1, 8080, 11, 7]);
      assert.equal(fwd.flags & abi.CT_F_STATE, 0, "SYN_SENT");
      const rep = dp.ct6({
        saddr: BE1,
        daddr: CLIENT,
        sport: 8080,
        dport: 40000,
        proto: abi.IPPROTO_TCP,
        dir: abi.CT_DIR_REPLY,
      });
      assert.ok(rep, "reply entry");
      assert.deepEqual([rep.addr, rep.port, rep.backendId], [VIP, 80, 11]);
    });
  });

  it("the backend's reply gets the frontend as its source; the client's next packets keep the backend", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      await dp.run(buildFrame6(syn()));
      const synack = (saddr: string, sport: number) =>
        buildFrame6({
          proto: "tcp",
          saddr,
          daddr: CLIENT,
          sport,
          dport: 40000,
          flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
          seq: 5000,
          ack: 1001,
        });
      // At ingress the reply passes as the backend sent it (netfilter's conntrack sees backend -> client);
      // tc egress gives it the frontend's source.
      const i = await dp.ingress(synack(BE1, 8080));
      assert.equal(i.retval, TC_ACT_OK);
      assert.equal(i.data.toString("hex"), synack(BE1, 8080).toString("hex"), "untouched at ingress");
      assertCounted(dp, { translated_new: 1 }, "a reply at ingress is not counted (egress counts it)");
      const r = await dp.run(synack(BE1, 8080));
      assert.equal(r.retval, TC_ACT_OK);
      assertSame(r.data, synack(VIP, 80), "reverse NAT");
      const payload = Buffer.from("GET / HTTP/1.1\r\n\r\n");
      const ack = (daddr: string, dport: number) =>
        buildFrame6(syn({ daddr, dport, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: 1001, ack: 5001, payload }));
      const e = await dp.run(ack(VIP, 80));
      assertSame(e.data, ack(BE1, 8080), "established DNAT");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1, translated_established: 1 }, "one flow");
      const fwd = dp.ct6({
        saddr: CLIENT,
        daddr: VIP,
        sport: 40000,
        dport: 80,
        proto: abi.IPPROTO_TCP,
        dir: abi.CT_DIR_FORWARD,
      });
      assert.ok(fwd && fwd.flags & abi.CT_F_SEEN_REPLY, "the client's ACK after the answer establishes the flow");
    });
  });

  it("a tracked flow stays on its backend while a new flow chooses among the slots", async () => {
    await withDatapath(async (dp) => {
      const two = frontend("TCP", 80, [
        { address: BE1, port: 8080 },
        { address: BE2, port: 8080 },
      ]);
      dp.setFrontend(two, { revNatId: 7, backendIds: [11, 12] });
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const r = await dp.run(buildFrame6(syn({ sport: 41000 + i })));
        assert.ok(ipv6ChecksumsOk(r.data, { frame: true }), `flow ${i}: checksums`);
        const chosen = r.data.subarray(14 + 24, 14 + 40).toString("hex");
        seen.add(chosen);
        // Retransmitted SYN of an unanswered flow: the same backend.
        const again = await dp.run(buildFrame6(syn({ sport: 41000 + i })));
        assert.equal(again.data.toString("hex"), r.data.toString("hex"), `flow ${i}: same backend again`);
      }
      assert.equal(seen.size, 2, "both backends chosen over 40 flows (random choice; 2^-39 to fail by chance)");
    });
  });

  it("UDP is DNATed and reverse-NATed with its checksum, and a result of zero is sent as 0xffff", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(DNS, { revNatId: 8, backendIds: [21] });
      const q = (daddr: string, dport: number, payload: Buffer) =>
        buildFrame6({ proto: "udp", saddr: CLIENT, daddr, sport: 33333, dport, payload });
      const r = await dp.run(q(VIP, 53, Buffer.from("query")));
      assertSame(r.data, q(BE1, 5353, Buffer.from("query")), "UDP DNAT");
      const a = (saddr: string, sport: number) =>
        buildFrame6({ proto: "udp", saddr, daddr: CLIENT, sport, dport: 33333, payload: Buffer.from("answer!!") });
      const back = await dp.run(a(BE1, 5353));
      assertSame(back.data, a(VIP, 53), "UDP reverse NAT");
      // A payload word that makes the translated datagram's sum 0xffff: its checksum computes to zero.
      const base = q(BE1, 5353, Buffer.alloc(2)).subarray(14 + 40);
      base.writeUInt16BE(33334, 0);
      base.writeUInt16BE(0, 6);
      const word = ~onesComplementSum(base, pseudoHeaderSum6(CLIENT, BE1, abi.IPPROTO_UDP, base.length)) & 0xffff;
      const payload = Buffer.alloc(2);
      payload.writeUInt16BE(word, 0);
      const z = await dp.run(
        buildFrame6({ proto: "udp", saddr: CLIENT, daddr: VIP, sport: 33334, dport: 53, payload }),
      );
      const want = q(BE1, 5353, payload);
      want.writeUInt16BE(33334, 14 + 40);
      want.writeUInt16BE(0xffff, 14 + 40 + 6);
      assertSame(z.data, want, "computed zero sent as 0xffff");
      assertCounted(dp, { translated_new: 2, reverse_translated: 1 }, "UDP");
    });
  });

  it("a UDP datagram with checksum zero (forbidden over IPv6) to a frontend is dropped as malformed", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(DNS, { revNatId: 8, backendIds: [21] });
      const r = await dp.run(
        buildFrame6({ proto: "udp", saddr: CLIENT, daddr: VIP, sport: 33333, dport: 53, checksum: "zero" }),
      );
      assert.equal(r.retval, TC_ACT_SHOT);
      assertCounted(dp, { drop_malformed: 1 }, "zero checksum");
      assert.equal(dp.ct6Count(), 0, "nothing tracked");
    });
  });

  it("hop-by-hop and destination options before TCP are walked: the packet is translated behind them", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const ext = [
        { type: "hop-by-hop" as const, options: Buffer.from([0x05, 0x02, 0, 0]) }, // router alert
        { type: "destination" as const, options: Buffer.alloc(12, 0) },
      ];
      const r = await dp.run(buildFrame6(syn({ ext })));
      assertSame(r.data, buildFrame6(syn({ ext, daddr: BE1, dport: 8080 })), "DNAT behind extension headers");
      assertCounted(dp, { translated_new: 1 }, "extension headers");
    });
  });

  it("passes untouched and uncounted what this version does not translate: routing headers with segments left", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      for (const [what, frame] of [
        [
          "routing header with a segment left",
          buildFrame6(syn({ ext: [{ type: "routing", routingType: 4, segmentsLeft: 1, addresses: [OTHER, VIP] }] })),
        ],
      ] as const) {
        const r = await dp.run(frame);
        assert.equal(r.retval, TC_ACT_OK, what);
        assert.equal(r.data.toString("hex"), frame.toString("hex"), `${what}: unchanged`);
      }
      assertCounted(dp, {}, "not translated");
      assert.equal(dp.ct6Count(), 0, "nothing tracked");
    });
  });

  it("IPv6 to no frontend passes untouched (counted NOT_SERVICE); a removed frontend no longer matches", async () => {
    await withDatapath(async (dp) => {
      const c = dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const other = buildFrame6(syn({ daddr: OTHER }));
      const r = await dp.run(other);
      assert.equal(r.data.toString("hex"), other.toString("hex"));
      dp.removeFrontend(c);
      const s = buildFrame6(syn({ sport: 40001 }));
      const r2 = await dp.run(s);
      assert.equal(r2.data.toString("hex"), s.toString("hex"));
      assertCounted(dp, { not_service: 2 }, "no frontend");
    });
  });

  it("from a device (bpx_from_device), an external client's SYN to the frontend is translated too", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const r = await dp.run(buildFrame6(syn({ saddr: "2001:db8::7" })), "bpx_from_device");
      assertSame(r.data, buildFrame6(syn({ saddr: "2001:db8::7", daddr: BE1, dport: 8080 })), "DNAT from a device");
      assertCounted(dp, { translated_new: 1 }, "device");
    });
  });

  it("without the IPv6 programs in their slots, IPv6 passes untouched and IPv4 is served as before", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const s = buildFrame6(syn());
      const r = await dp.run(s);
      assert.equal(r.retval, TC_ACT_OK);
      assert.equal(r.data.toString("hex"), s.toString("hex"));
      assertCounted(dp, {}, "nothing counted");
      const v4 = buildPacket({ proto: "tcp", saddr: "10.244.1.10", daddr: "10.96.0.10", sport: 40000, dport: 80 });
      const r4 = await dp.run(v4);
      assert.equal(r4.data.toString("hex"), v4.toString("hex"));
      assertCounted(dp, { not_service: 1 }, "IPv4 without frontends");
    }, false);
  });
});

describe("IPv6 rejects, as IPv4's (TCP RST, ICMPv6 port unreachable), sent back where the packet came from", () => {
  // The reply goes back out of the interface the packet came in on: the link-layer addresses swapped.
  const back = (packet: Buffer) => ethernet6(packet, DEFAULT_SRC_MAC, DEFAULT_DST_MAC);
  // RFC 793 Reset Generation: from the frontend to the client, no options, window 0.
  const rst = (over: { seq?: number; ack?: number; flags: number }) =>
    back(
      buildIpv6({
        proto: "tcp",
        saddr: VIP,
        daddr: CLIENT,
        sport: 80,
        dport: 40000,
        window: 0,
        seq: over.seq ?? 0,
        ack: over.ack ?? 0,
        flags: over.flags,
      }),
    );
  const EMPTY_WEB = frontend("TCP", 80, []);
  const EMPTY_DNS = frontend("UDP", 53, []);

  it("a SYN to a frontend without endpoints gets RST,ACK acknowledging the SYN (seq 0, ack = SEG.SEQ + 1)", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(EMPTY_WEB, { revNatId: 7, backendIds: [] });
      const r = await dp.ingress(buildFrame6(syn()));
      assert.equal(r.retval, TC_ACT_REDIRECT, "redirected back out of the interface it came in on");
      assertSame(r.data, rst({ flags: TCP_FLAGS.RST | TCP_FLAGS.ACK, ack: 1001 }), "RST");
      // Payload and FIN count in SEG.LEN; extension headers in front of TCP are not part of it.
      const payload = Buffer.from("hello");
      const ext = [{ type: "destination" as const, options: Buffer.alloc(4) }];
      const r2 = await dp.ingress(
        buildFrame6(syn({ ext, flags: TCP_FLAGS.SYN | TCP_FLAGS.FIN, seq: 0xfffffffe, payload })),
      );
      assert.equal(r2.retval, TC_ACT_REDIRECT);
      assertSame(r2.data, rst({ flags: TCP_FLAGS.RST | TCP_FLAGS.ACK, ack: (0xfffffffe + 7) >>> 0 }), "seq wraps");
      assertCounted(dp, { reject_no_backend: 2 }, "rejects counted as IPv4's");
      assert.equal(dp.ct6Count(), 0, "nothing tracked");
    });
  });

  it("a non-SYN segment of an unknown flow to a served frontend gets RST with seq = its ACK number", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const seg = buildFrame6(
        syn({ flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: 5, ack: 0x12345678, payload: Buffer.from("x") }),
      );
      const r = await dp.ingress(seg);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assertSame(r.data, rst({ flags: TCP_FLAGS.RST, seq: 0x12345678 }), "RST of an untracked segment");
      assertCounted(dp, { reject_no_conntrack: 1 }, "untracked");
    });
  });

  it("an RST is never answered: dropped, counted, no token taken", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(EMPTY_WEB, { revNatId: 7, backendIds: [] });
      for (let i = 0; i < 12; i++) {
        const r = await dp.ingress(buildFrame6(syn({ flags: TCP_FLAGS.RST })));
        assert.equal(r.retval, TC_ACT_SHOT);
      }
      const r = await dp.ingress(buildFrame6(syn()));
      assert.equal(r.retval, TC_ACT_REDIRECT, "the source still has its tokens");
      assertCounted(dp, { reject_no_backend: 13 }, "RSTs");
    });
  });

  it("a UDP datagram to a frontend without endpoints gets ICMPv6 port unreachable quoting it whole", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(EMPTY_DNS, { revNatId: 8, backendIds: [] });
      const q: Packet6Spec = {
        proto: "udp",
        saddr: CLIENT,
        daddr: VIP,
        sport: 33333,
        dport: 53,
        payload: Buffer.from("odd-length query"),
        ext: [{ type: "hop-by-hop", options: Buffer.from([0x05, 0x02, 0, 0]) }],
      };
      const quoted = buildIpv6(q);
      const r = await dp.ingress(buildFrame6(q));
      assert.equal(r.retval, TC_ACT_REDIRECT);
      const want = back(
        buildIcmp6Error({ saddr: VIP, daddr: CLIENT, type: ICMPV6.DEST_UNREACH, code: ICMPV6_PORT_UNREACH, quoted }),
      );
      assertSame(r.data, want, "port unreachable");
      for (const len of [1, 3, 255, 256, 257]) {
        const p = { ...q, ext: undefined, sport: 33400 + len, payload: Buffer.alloc(len, len & 0xff) };
        const rr = await dp.ingress(buildFrame6(p));
        const w = back(
          buildIcmp6Error({
            saddr: VIP,
            daddr: CLIENT,
            type: ICMPV6.DEST_UNREACH,
            code: ICMPV6_PORT_UNREACH,
            quoted: buildIpv6(p),
          }),
        );
        assertSame(rr.data, w, `payload of ${len} bytes`);
      }
      assertCounted(dp, { reject_no_backend: 6 }, "rejects");
    });
  });

  it("a datagram larger than fits is quoted to 1280 bytes in all (RFC 4443 2.4 (c))", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(EMPTY_DNS, { revNatId: 8, backendIds: [] });
      const payload = Buffer.alloc(1400);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
      const q: Packet6Spec = { proto: "udp", saddr: CLIENT, daddr: VIP, sport: 33333, dport: 53, payload };
      const r = await dp.ingress(buildFrame6(q));
      assert.equal(r.retval, TC_ACT_REDIRECT);
      const want = back(
        buildIcmp6Error({
          saddr: VIP,
          daddr: CLIENT,
          type: ICMPV6.DEST_UNREACH,
          code: ICMPV6_PORT_UNREACH,
          quoted: buildIpv6(q),
        }),
      );
      assert.equal(want.length, 14 + IPV6_MIN_MTU, "the expected error is exactly the minimum MTU");
      assertSame(r.data, want, "truncated quote");
    });
  });

  it("rejects are rate limited per source with IPv4's bucket: 10 at once, then suppressed; another source is answered", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(EMPTY_WEB, { revNatId: 7, backendIds: [] });
      const got: number[] = [];
      for (let i = 0; i < 12; i++) got.push((await dp.ingress(buildFrame6(syn({ sport: 40100 + i })))).retval);
      assert.deepEqual(got, [...Array<number>(10).fill(TC_ACT_REDIRECT), TC_ACT_SHOT, TC_ACT_SHOT]);
      const other = await dp.ingress(buildFrame6(syn({ saddr: "fd00:10:244:1::b" })));
      assert.equal(other.retval, TC_ACT_REDIRECT, "a bucket per source address");
      assertCounted(dp, { reject_no_backend: 11, reject_suppressed: 2 }, "suppressed");
      const bucket = dp.obj.map(abi.MAP_NAMES.reject6Limit).lookup(abi.v6AddrKey.encode({ address: CLIENT }));
      assert.ok(bucket, "the IPv6 limiter is keyed by the 16-byte source");
      assert.equal(abi.rejectBucket.decode(bucket).tokens, 0);
      assert.equal(dp.obj.map(abi.MAP_NAMES.rejectLimit).entries().count, 0, "IPv4's limiter untouched");
    });
  });

  it("a frontend whose backends did not fit the maps rejects as reject_map_full; externalTrafficPolicy Local without a local endpoint drops", async () => {
    await withDatapath(async (dp) => {
      const c = dp.setFrontend(EMPTY_WEB, { revNatId: 7, backendIds: [] });
      const master = abi.svc6Key.encode({
        address: VIP,
        port: 80,
        proto: abi.IPPROTO_TCP,
        scope: abi.SCOPE_INTERNAL,
        slot: 0,
      });
      const v = abi.svcValue.decode(dp.obj.map(abi.MAP_NAMES.services6).lookup(master)!);
      dp.obj
        .map(abi.MAP_NAMES.services6)
        .update(master, abi.svcValue.encode({ ...v, flags: v.flags | abi.SVC_F_MAP_FULL }));
      assert.equal((await dp.ingress(buildFrame6(syn()))).retval, TC_ACT_REDIRECT);
      dp.obj
        .map(abi.MAP_NAMES.services6)
        .update(master, abi.svcValue.encode({ ...v, flags: v.flags | abi.SVC_F_DROP_WHEN_EMPTY }));
      assert.equal((await dp.ingress(buildFrame6(syn({ sport: 40001 })))).retval, TC_ACT_SHOT);
      assertCounted(dp, { reject_map_full: 1, drop_no_local_backend: 1 }, "map full, no local endpoint");
      void c;
    });
  });
});

describe("IPv6 masquerade to the node's IPv6 address (hairpin), with IPv4's port range", () => {
  const NODE6 = "2001:db8::a";
  // A pod reaching itself through its Service: the client is the backend.
  const SELF = frontend("TCP", 80, [{ address: CLIENT, port: 8080 }]);
  const tcp = (saddr: string, sport: number, daddr: string, dport: number, flags: number, seq: number, ack = 0) =>
    buildFrame6({ proto: "tcp", saddr, daddr, sport, dport, flags, seq, ack });

  function configure(dp: Datapath, masq: string | undefined, ports: { min: number; max: number }): void {
    dp.obj.map(abi.MAP_NAMES.natConfig).update(
      abi.u32Key.encode(0),
      abi.natConfig.encode({
        masqAddr: "192.0.2.11",
        portMin: ports.min,
        portMax: ports.max,
        flags: 0,
        translatedMark: 0,
      }),
    );
    writeNat6Config(dp.obj.map(abi.MAP_NAMES.nat6Config), masq);
  }

  it("a pod reaching itself via the IPv6 ClusterIP: DNAT at ingress, source node:port at egress, the reply restored both ways", async () => {
    await withDatapath(async (dp) => {
      configure(dp, NODE6, { min: 30000, max: 30000 });
      dp.setFrontend(SELF, { revNatId: 7, backendIds: [11] });
      const i = await dp.ingress(tcp(CLIENT, 40000, VIP, 80, TCP_FLAGS.SYN, 1000));
      assertSame(i.data, tcp(CLIENT, 40000, CLIENT, 8080, TCP_FLAGS.SYN, 1000), "ingress: DNAT only");
      const r = await dp.run(tcp(CLIENT, 40000, VIP, 80, TCP_FLAGS.SYN, 1000));
      assertSame(r.data, tcp(NODE6, 30000, CLIENT, 8080, TCP_FLAGS.SYN, 1000), "egress: masqueraded");
      const synack = tcp(CLIENT, 8080, NODE6, 30000, TCP_FLAGS.SYN | TCP_FLAGS.ACK, 5000, 1001);
      const ri = await dp.ingress(synack);
      assert.equal(ri.retval, TC_ACT_OK);
      assertSame(
        ri.data,
        tcp(CLIENT, 8080, CLIENT, 40000, TCP_FLAGS.SYN | TCP_FLAGS.ACK, 5000, 1001),
        "reply at ingress",
      );
      const back = await dp.run(synack);
      assertSame(back.data, tcp(VIP, 80, CLIENT, 40000, TCP_FLAGS.SYN | TCP_FLAGS.ACK, 5000, 1001), "reply at egress");
      const est = await dp.run(tcp(CLIENT, 40000, VIP, 80, TCP_FLAGS.ACK, 1001, 5001));
      assertSame(est.data, tcp(NODE6, 30000, CLIENT, 8080, TCP_FLAGS.ACK, 1001, 5001), "established");
      const nat = dp.obj.map(abi.MAP_NAMES.nat6).lookup(
        abi.ct6Key.encode({
          saddr: CLIENT,
          daddr: NODE6,
          sport: 8080,
          dport: 30000,
          proto: abi.IPPROTO_TCP,
          dir: abi.CT_DIR_REPLY,
        }),
      );
      assert.ok(nat, "reply entry keyed by the masqueraded tuple");
      const e = abi.nat6Entry.decode(nat);
      assert.deepEqual([e.addr, e.port, e.frontendAddr, e.frontendPort, e.backendId], [CLIENT, 40000, VIP, 80, 11]);
      assertCounted(
        dp,
        { translated_new: 1, translated_established: 2, reverse_translated: 1 },
        "one new flow; the SYN again and the ACK tracked; the reply counted at egress",
      );
    });
  });

  it("with the one port held by a live flow a new flow is dropped (snat_exhausted); once that flow is gone it takes the port", async () => {
    await withDatapath(async (dp) => {
      configure(dp, NODE6, { min: 30000, max: 30000 });
      dp.setFrontend(SELF, { revNatId: 7, backendIds: [11] });
      await dp.run(tcp(CLIENT, 40000, VIP, 80, TCP_FLAGS.SYN, 1000));
      const second = await dp.run(tcp(CLIENT, 40001, VIP, 80, TCP_FLAGS.SYN, 1000));
      assert.equal(second.retval, TC_ACT_SHOT);
      dp.obj.map(abi.MAP_NAMES.conntrack6).delete(
        abi.ct6Key.encode({
          saddr: CLIENT,
          daddr: VIP,
          sport: 40000,
          dport: 80,
          proto: abi.IPPROTO_TCP,
          dir: abi.CT_DIR_FORWARD,
        }),
      );
      const third = await dp.run(tcp(CLIENT, 40001, VIP, 80, TCP_FLAGS.SYN, 1000));
      assertSame(third.data, tcp(NODE6, 30000, CLIENT, 8080, TCP_FLAGS.SYN, 1000), "the gone flow's port reused");
      // The old flow's late reply no longer passes for the new one's: its client's entry names no port now.
      assertCounted(dp, { translated_new: 2, drop_snat_exhausted: 1 }, "exhausted, then taken over");
    });
  });

  it("without an IPv6 masquerade address a flow that needs it is dropped; a flow that does not is DNATed only", async () => {
    await withDatapath(async (dp) => {
      configure(dp, undefined, { min: 30000, max: 30010 });
      dp.setFrontend(SELF, { revNatId: 7, backendIds: [11] });
      assert.equal((await dp.run(tcp(CLIENT, 40000, VIP, 80, TCP_FLAGS.SYN, 1000))).retval, TC_ACT_SHOT);
      dp.setFrontend(WEB, { revNatId: 8, backendIds: [12] });
      const r = await dp.run(tcp(CLIENT, 40002, VIP, 80, TCP_FLAGS.SYN, 1000));
      assertSame(r.data, tcp(CLIENT, 40002, BE1, 8080, TCP_FLAGS.SYN, 1000), "not masqueraded");
      assertCounted(dp, { drop_snat_exhausted: 1, translated_new: 1 }, "no address");
    });
  });

  it("masqueradeAll masquerades every new flow over IPv6 too, with a port from the range", async () => {
    await withDatapath(async (dp) => {
      configure(dp, NODE6, { min: 31000, max: 31003 });
      const cfg = dp.obj.map(abi.MAP_NAMES.config);
      const c = abi.config.decode(cfg.lookup(abi.u32Key.encode(0))!);
      cfg.update(abi.u32Key.encode(0), abi.config.encode({ ...c, flags: c.flags | abi.CFG_F_MASQUERADE_ALL }));
      dp.setFrontend(WEB, { revNatId: 8, backendIds: [12] });
      const r = await dp.run(tcp(CLIENT, 40003, VIP, 80, TCP_FLAGS.SYN, 1000));
      const port = r.data.readUInt16BE(14 + 40);
      assert.ok(port >= 31000 && port <= 31003, `port ${port} in range`);
      assertSame(r.data, tcp(NODE6, port, BE1, 8080, TCP_FLAGS.SYN, 1000), "masqueraded");
    });
  });

  it("a new flow that is not masqueraded, on the tuple of an earlier masqueraded one to the same backend, keeps its client's address", async () => {
    // The earlier flow's forward masquerade entry (client -> backend) outlives it until the collector runs;
    // tc egress, which masquerades by that tuple, must not apply it to a later flow of another frontend
    // (seen as an externalTrafficPolicy Local backend getting the node's address now and then).
    await withDatapath(async (dp) => {
      configure(dp, NODE6, { min: 31000, max: 31003 });
      const cfg = dp.obj.map(abi.MAP_NAMES.config);
      const c = abi.config.decode(cfg.lookup(abi.u32Key.encode(0))!);
      cfg.update(abi.u32Key.encode(0), abi.config.encode({ ...c, flags: c.flags | abi.CFG_F_MASQUERADE_ALL }));
      dp.setFrontend(WEB, { revNatId: 8, backendIds: [12] });
      const first = await dp.run(tcp(CLIENT, 40004, VIP, 80, TCP_FLAGS.SYN, 1000));
      assertSame(
        first.data,
        tcp(NODE6, first.data.readUInt16BE(14 + 40), BE1, 8080, TCP_FLAGS.SYN, 1000),
        "masqueraded",
      );
      cfg.update(abi.u32Key.encode(0), abi.config.encode(c));
      dp.setFrontend({ ...WEB, address: OTHER, port: 81 }, { revNatId: 9, backendIds: [12] });
      const second = await dp.run(tcp(CLIENT, 40004, OTHER, 81, TCP_FLAGS.SYN, 7000));
      assertSame(second.data, tcp(CLIENT, 40004, BE1, 8080, TCP_FLAGS.SYN, 7000), "DNAT only");
    });
  });
});

describe("IPv6 NodePort, externalIPs and LoadBalancer IPs from a device", () => {
  const NODE6 = "2001:db8::a";
  const EXT = "2001:db8:ff::7";
  const np = (over: Partial<Frontend>): Frontend => ({
    ...frontend("TCP", 30080, [{ address: BE2, port: 8080 }]),
    type: "NodePort",
    address: NODE6,
    scope: "external",
    ...over,
  });
  const tcp = (saddr: string, sport: number, daddr: string, dport: number, flags: number, seq: number, ack = 0) =>
    buildFrame6({ proto: "tcp", saddr, daddr, sport, dport, flags, seq, ack });
  function configure(dp: Datapath): void {
    dp.obj
      .map(abi.MAP_NAMES.natConfig)
      .update(
        abi.u32Key.encode(0),
        abi.natConfig.encode({ masqAddr: "192.0.2.11", portMin: 32000, portMax: 32000, flags: 0, translatedMark: 0 }),
      );
    writeNat6Config(dp.obj.map(abi.MAP_NAMES.nat6Config), NODE6);
  }

  it("externalTrafficPolicy Cluster: masqueraded to the node address toward a backend elsewhere, the reply back through the node", async () => {
    await withDatapath(async (dp) => {
      configure(dp);
      dp.setFrontend(np({}), { revNatId: 7, backendIds: [12] });
      const r = await dp.run(tcp(EXT, 50000, NODE6, 30080, TCP_FLAGS.SYN, 1), "bpx_from_device");
      assertSame(r.data, tcp(NODE6, 32000, BE2, 8080, TCP_FLAGS.SYN, 1), "DNAT and masquerade");
      const synack = tcp(BE2, 8080, NODE6, 32000, TCP_FLAGS.SYN | TCP_FLAGS.ACK, 9, 2);
      const back = await dp.run(synack, "bpx_from_device");
      assertSame(back.data, tcp(NODE6, 30080, EXT, 50000, TCP_FLAGS.SYN | TCP_FLAGS.ACK, 9, 2), "reply to the client");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1 }, "NodePort Cluster");
    });
  });

  it("externalTrafficPolicy Local: the client's address is kept; without a local endpoint the packet is dropped", async () => {
    await withDatapath(async (dp) => {
      configure(dp);
      const local = np({ type: "ExternalIP", address: "2001:db8:e::1", port: 80 });
      dp.setFrontend(local, { revNatId: 8, backendIds: [13] }, { externalPolicyLocal: true });
      const r = await dp.run(tcp(EXT, 50001, "2001:db8:e::1", 80, TCP_FLAGS.SYN, 1), "bpx_from_device");
      assertSame(r.data, tcp(EXT, 50001, BE2, 8080, TCP_FLAGS.SYN, 1), "DNAT only");
      const empty = np({ type: "LoadBalancer", address: "2001:db8:1b::1", port: 80, backends: [] });
      dp.setFrontend(empty, { revNatId: 9, backendIds: [] }, { externalPolicyLocal: true, dropWhenEmpty: true });
      const d = await dp.run(tcp(EXT, 50002, "2001:db8:1b::1", 80, TCP_FLAGS.SYN, 1), "bpx_from_device");
      assert.equal(d.retval, TC_ACT_SHOT);
      assertCounted(dp, { translated_new: 1, drop_no_local_backend: 1 }, "Local");
    });
  });
});

describe("IPv6 loadBalancerSourceRanges (an LPM trie keyed by frontend id and IPv6 prefix)", () => {
  const LB = "2001:db8:1b::1";
  const tcp = (saddr: string, sport: number, daddr: string, dport: number) =>
    buildFrame6({ proto: "tcp", saddr, daddr, sport, dport, flags: TCP_FLAGS.SYN, seq: 1 });

  it("a source inside a range is served, one outside is dropped (drop_source_range); the ranges are per frontend", async () => {
    await withDatapath(async (dp) => {
      const lb: Frontend = {
        ...frontend("TCP", 80, [{ address: BE2, port: 8080 }]),
        type: "LoadBalancer",
        address: LB,
        scope: "external",
      };
      dp.setFrontend(
        lb,
        { revNatId: 7, backendIds: [12] },
        { externalPolicyLocal: true, sourceRanges: ["2001:db8:ff::1/48"] },
      );
      writeSourceRanges6(dp.obj.map(abi.MAP_NAMES.sourceRanges6), encodeSourceRanges6(7, ["2001:db8:ff::1/48"]));
      // Another frontend's range must not open this one.
      writeSourceRanges6(dp.obj.map(abi.MAP_NAMES.sourceRanges6), encodeSourceRanges6(8, ["2001:db8:fe::/48"]));
      const ok = await dp.run(tcp("2001:db8:ff:12::7", 50000, LB, 80), "bpx_from_device");
      assertSame(ok.data, tcp("2001:db8:ff:12::7", 50000, BE2, 8080), "inside the range");
      for (const src of ["2001:db8:fe::7", "2001:db8:100::10"]) {
        const r = await dp.run(tcp(src, 50001, LB, 80), "bpx_from_device");
        assert.equal(r.retval, TC_ACT_SHOT, `${src} outside`);
      }
      assertCounted(dp, { translated_new: 1, drop_source_range: 2 }, "source ranges");
      assert.equal(dp.ct6Count(), 2, "only the allowed flow tracked");
    });
  });
});

/** The backend a translated frame was sent to (its destination address). */
const destOf = (frame: Buffer) => {
  const a = frame.subarray(14 + 24, 14 + 40).toString("hex");
  return [BE1, BE2, BE3].find(
    (b) =>
      buildFrame6(syn({ daddr: b }))
        .subarray(14 + 24, 14 + 40)
        .toString("hex") === a,
  );
};
const BE3 = "fd00:10:244:4::17";

describe("IPv6 ClientIP affinity (bpx_affinity6_v1, members in bpx_affinity_match_v1)", () => {
  const sticky = (timeoutSeconds: number, backends = [BE1, BE2]): Frontend => ({
    ...frontend(
      "TCP",
      80,
      backends.map((address) => ({ address, port: 8080 })),
    ),
    sessionAffinity: { type: "ClientIP", timeoutSeconds },
  });
  const affinity6 = (dp: Datapath, client: string, revNatId: number) => {
    const v = dp.obj.map(abi.MAP_NAMES.affinity6).lookup(abi.affinity6Key.encode({ client, revNatId }));
    return v ? abi.affinityValue.decode(v) : null;
  };

  it("every new flow of one client goes to the backend its first flow got, byte for byte; another client has its own entry", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(sticky(10800), { revNatId: 7, backendIds: [11, 12] });
      const first = await dp.run(buildFrame6(syn({ sport: 42000 })));
      assert.equal(first.retval, TC_ACT_OK);
      const chosen = destOf(first.data)!;
      assert.ok(chosen, "DNATed to one of the backends");
      const entry = affinity6(dp, CLIENT, 7);
      assert.ok(entry, "the client's affinity entry");
      assert.equal(entry.backendId, chosen === BE1 ? 11 : 12, "it names the chosen backend");
      for (let i = 1; i < 30; i++) {
        const r = await dp.run(buildFrame6(syn({ sport: 42000 + i })));
        assertSame(r.data, buildFrame6(syn({ sport: 42000 + i, daddr: chosen, dport: 8080 })), `flow ${i}`);
      }
      assertCounted(dp, { translated_new: 30, affinity_hit: 29 }, "30 flows, 29 by affinity");
      // Another client chooses for itself (its entry is its own); 30 other clients reach both backends.
      const others = new Set<string>();
      for (let i = 0; i < 30; i++) {
        const saddr = `fd00:10:244:1::${(0x100 + i).toString(16)}`;
        const r = await dp.run(buildFrame6(syn({ saddr, sport: 43000 })));
        others.add(destOf(r.data)!);
        assert.ok(affinity6(dp, saddr, 7), `client ${saddr}: an entry of its own`);
      }
      assert.equal(others.size, 2, "other clients spread over both backends (2^-29 to fail by chance)");
    });
  });

  it("an entry naming a backend the frontend no longer has (removed, or terminating with a ready one left) is ignored", async () => {
    await withDatapath(async (dp) => {
      const both = dp.setFrontend(sticky(10800), { revNatId: 7, backendIds: [11, 12] });
      // The client's entry names BE1 (id 11), as a first flow would have written it.
      const entry = (backendId: number, lastUsedNs: bigint) =>
        dp.obj
          .map(abi.MAP_NAMES.affinity6)
          .update(
            abi.affinity6Key.encode({ client: CLIENT, revNatId: 7 }),
            abi.affinityValue.encode({ backendId, lastUsedNs }),
          );
      const r0 = await dp.run(buildFrame6(syn({ sport: 44000 })));
      const first = destOf(r0.data)!;
      const firstId = first === BE1 ? 11 : 12;
      const lastUsed = affinity6(dp, CLIENT, 7)!.lastUsedNs;
      // The model drops BE1 (gone, or terminating while BE2 is ready): the frontend lists BE2 alone, and the
      // encoder's members with it; the client's entry still names its old backend.
      dp.removeFrontend(both);
      const keep = first === BE1 ? BE2 : BE1;
      dp.setFrontend(sticky(10800, [keep]), { revNatId: 7, backendIds: [firstId === 11 ? 12 : 11] });
      // The old backend's own entry stays (another Service still has it): only membership can rule it out.
      dp.setFrontend(
        {
          ...frontend(
            "TCP",
            81,
            [BE1, BE2].map((address) => ({ address, port: 8080 })),
          ),
          service: "default/other",
        },
        { revNatId: 9, backendIds: [11, 12] },
      );
      entry(firstId, lastUsed);
      const r = await dp.run(buildFrame6(syn({ sport: 44001 })));
      assertSame(r.data, buildFrame6(syn({ sport: 44001, daddr: keep, dport: 8080 })), "moved to the backend left");
      assert.equal(affinity6(dp, CLIENT, 7)!.backendId, firstId === 11 ? 12 : 11, "the entry follows the move");
      assertCounted(dp, { translated_new: 2 }, "no affinity hit for the stale entry");
    });
  });

  it("an entry older than timeoutSeconds is ignored; a frontend without ClientIP writes none", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(sticky(1, [BE1]), { revNatId: 7, backendIds: [11] });
      await dp.run(buildFrame6(syn({ sport: 45000 })));
      const e = affinity6(dp, CLIENT, 7)!;
      // Age it by more than the 1 s timeout, naming a backend id the frontend does have: still ignored.
      dp.obj
        .map(abi.MAP_NAMES.affinity6)
        .update(
          abi.affinity6Key.encode({ client: CLIENT, revNatId: 7 }),
          abi.affinityValue.encode({ backendId: 11, lastUsedNs: e.lastUsedNs - 2_000_000_000n }),
        );
      await dp.run(buildFrame6(syn({ sport: 45001 })));
      assertCounted(dp, { translated_new: 2 }, "the expired entry is not a hit");
      assert.ok(affinity6(dp, CLIENT, 7)!.lastUsedNs >= e.lastUsedNs, "rewritten by the new flow");
      dp.setFrontend({ ...WEB, port: 81 }, { revNatId: 9, backendIds: [11] });
      await dp.run(buildFrame6(syn({ dport: 81 })));
      assert.equal(affinity6(dp, CLIENT, 9), null, "no entry without ClientIP");
    });
  });
});

describe("Maglev over IPv6 (bpx_maglev_v1, hashed over the IPv6 5-tuple)", () => {
  const MAGLEV = (backends: string[]): Frontend => ({
    ...frontend(
      "UDP",
      53,
      backends.map((address) => ({ address, port: 5353 })),
    ),
    algorithm: "maglev",
  });

  it("every new flow goes to the backend the table (built by maglev.ts) gives its hash (maglevFlowHash6)", async () => {
    await withDatapath(async (dp) => {
      const backends = [BE1, BE2, BE3];
      const ids = [11, 12, 13];
      dp.setFrontend(MAGLEV(backends), { revNatId: 7, backendIds: ids });
      const table = maglevTable(backends.map((b) => maglevName(b, 5353)));
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const sport = 30000 + i * 7;
        const saddr = `fd00:10:244:1::${(0x10 + i).toString(16)}`;
        const q = (daddr: string, dport: number) =>
          buildFrame6({ proto: "udp", saddr, daddr, sport, dport, payload: Buffer.from("q") });
        const want = backends[table[maglevIndex(maglevFlowHash6(saddr, VIP, sport, 53, abi.IPPROTO_UDP))]!]!;
        const r = await dp.run(q(VIP, 53));
        assertSame(r.data, q(want, 5353), `flow ${i}: the table's backend`);
        seen.add(want);
      }
      assert.equal(seen.size, 3, "flows spread over the three backends");
      assertCounted(dp, { translated_new: 40 }, "40 flows");
    });
  });

  it("adding a backend moves only the flows whose table entries it takes (minimal disruption)", async () => {
    await withDatapath(async (dp) => {
      const flows = Array.from({ length: 60 }, (_, i) => ({
        saddr: `fd00:10:244:1::${(0x40 + i).toString(16)}`,
        sport: 31000 + i,
      }));
      const pick = async () => {
        const out: string[] = [];
        for (const f of flows) {
          const r = await dp.run(buildFrame6({ proto: "udp", ...f, daddr: VIP, dport: 53, payload: Buffer.from("q") }));
          out.push(destOf(r.data)!);
        }
        // Forget the flows: the next round chooses again.
        const ct = dp.obj.map(abi.MAP_NAMES.conntrack6);
        const { keys, count } = ct.entries();
        const ks = ct.info.keySize;
        for (let i = 0; i < count; i++) ct.delete(keys.subarray(i * ks, (i + 1) * ks));
        return out;
      };
      dp.setFrontend(MAGLEV([BE1, BE2]), { revNatId: 7, backendIds: [11, 12] });
      const before = await pick();
      dp.setFrontend(MAGLEV([BE1, BE2, BE3]), { revNatId: 7, backendIds: [11, 12, 13] });
      const after = await pick();
      const moved = before.filter((b, i) => after[i] !== b);
      assert.ok(
        moved.length > 0 && after.every((b, i) => b === before[i] || b === BE3),
        `a flow that moved went to the new backend: ${JSON.stringify({ before, after })}`,
      );
      assert.ok(moved.length < flows.length / 2, `about a third moved, not most: ${moved.length} of ${flows.length}`);
    });
  });
});

describe("IPv6 per-frontend and per-backend counters (bpx_fe_stats_v1, bpx_be_stats_v1)", () => {
  it("a flow's packets and bytes are counted on its frontend and backend, and a reject on its frontend", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      dp.setFrontend({ ...WEB, port: 81, backends: [] }, { revNatId: 8, backendIds: [] });
      const s = buildFrame6(syn());
      const payload = Buffer.alloc(100, 1);
      const a = buildFrame6(syn({ flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: 1001, ack: 1, payload }));
      await dp.run(s);
      await dp.run(a);
      const rej = await dp.ingress(buildFrame6(syn({ dport: 81 })));
      assert.equal(rej.retval, TC_ACT_REDIRECT, "rejected");
      const fe = readFrontendStats(dp.obj.map(abi.MAP_NAMES.frontendStats));
      const be = readBackendStats(dp.obj.map(abi.MAP_NAMES.backendStats));
      const bytes = BigInt(s.length + a.length);
      assert.deepEqual(
        fe.get(7),
        { conns: 1n, packets: 2n, bytes, drops: abi.FE_DROP_REASONS.map(() => 0n) },
        "frontend 7",
      );
      assert.deepEqual(be.get(11), { conns: 1n, packets: 2n, bytes }, "backend 11");
      assert.deepEqual(
        fe.get(8)?.drops,
        abi.FE_DROP_REASONS.map((r) => (r === "no_backend" ? 1n : 0n)),
        "frontend 8: one no_backend reject",
      );
    });
  });
});

describe("the IPv6 encoder (lb6.ts)", () => {
  it("takes IPv6 TCP/UDP frontends of the served kinds with IPv6 backends and matching ids, masquerade flags as IPv4's", () => {
    assert.throws(() => encodeFrontend6({ ...WEB, address: "10.96.0.10" }, { revNatId: 1, backendIds: [1] }), /IPv6/);
    for (const type of ["NodePort", "LoadBalancer", "ExternalIP"] as const) {
      const flags = (extras?: { externalPolicyLocal?: boolean }) => {
        const c = encodeFrontend6({ ...WEB, type, scope: "external" }, { revNatId: 1, backendIds: [1] }, extras);
        const master = [...c.services.entries()].find(([k]) => abi.svc6Key.decodeBin(k).slot === 0)!;
        return abi.svcValue.decodeBin(master[1]).flags;
      };
      assert.equal(flags(), abi.SVC_F_MASQUERADE, `${type}, Cluster policy: masqueraded`);
      assert.equal(flags({ externalPolicyLocal: true }), 0, `${type}, Local policy: the client's address kept`);
    }
    assert.throws(() => encodeFrontend6({ ...WEB, protocol: "SCTP" }, { revNatId: 1, backendIds: [1] }), /TCP and UDP/);
    assert.throws(() => encodeFrontend6(WEB, { revNatId: 1, backendIds: [] }), /backend ids/);
    const c = encodeFrontend6(WEB, { revNatId: 3, backendIds: [9] });
    assert.equal(c.services.size, 2, "master and one slot");
    const b = abi.backend6.decodeBin([...c.backends.values()][0]!);
    assert.deepEqual(b, { address: BE1, port: 8080, proto: abi.IPPROTO_TCP, flags: 0 });
  });
});

describe("ICMPv6 errors about translated flows, translated back (RFC 4443; icmp6.h)", () => {
  const ROUTER = "2001:db8:99::1";
  const NODE6 = "2001:db8::a";
  const EXT = "2001:db8:ff::7";
  // A full-size segment, the kind a Packet Too Big is about; its quote is cut to fit 1280 bytes.
  const big = Buffer.alloc(1400, 0x61);
  const seg = (saddr: string, sport: number, daddr: string, dport: number, flags = TCP_FLAGS.ACK) =>
    buildIpv6({ proto: "tcp", saddr, daddr, sport, dport, flags, seq: 1001, ack: 5001, payload: big });
  const error = (saddr: string, daddr: string, quoted: Buffer, type: number = ICMPV6.PKT_TOOBIG, code = 0) =>
    buildFrame6Raw(buildIcmp6Error({ saddr, daddr, type, code, mtu: 1400, quoted }));
  const buildFrame6Raw = (packet: Buffer) => ethernet6(packet);

  it("an error from a router about client -> backend (DNATed) reaches the client quoting client -> frontend: PTB, unreachable, time exceeded", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      await dp.run(buildFrame6(syn()));
      const cases = [
        [ICMPV6.PKT_TOOBIG, 0],
        [ICMPV6.DEST_UNREACH, ICMPV6_NOROUTE],
        [ICMPV6.TIME_EXCEED, ICMPV6_EXC_HOPLIMIT],
      ] as const;
      for (const [type, code] of cases) {
        const what = `type ${type} code ${code}`;
        const e = error(ROUTER, CLIENT, seg(CLIENT, 40000, BE1, 8080), type, code);
        // At the device's ingress the stack must see an error about the flow it forwards (client <-> backend):
        // untouched there; tc egress toward the client translates it.
        const i = await dp.ingress(e, "bpx_from_device");
        assert.equal(i.retval, TC_ACT_OK, what);
        assert.equal(i.data.toString("hex"), e.toString("hex"), `${what}: untouched at ingress`);
        const r = await dp.run(e, "bpx_from_device");
        assert.equal(r.retval, TC_ACT_OK, what);
        assertSame(r.data, error(ROUTER, CLIENT, seg(CLIENT, 40000, VIP, 80), type, code), what);
        assert.deepEqual(checkIpv6(r.data, { frame: true }).inner, {
          proto: abi.IPPROTO_TCP,
          truncated: true,
          l4: "n/a",
        });
      }
      assertCounted(dp, { translated_new: 1, icmp_translated: 3 }, "counted once each, at egress");
    });
  });

  it("a backend's own port unreachable about a UDP datagram comes from the frontend, quoting client -> frontend (checksums complete)", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(DNS, { revNatId: 8, backendIds: [21] });
      const q = (daddr: string, dport: number) =>
        buildIpv6({ proto: "udp", saddr: CLIENT, daddr, sport: 33333, dport, payload: Buffer.from("query?") });
      await dp.run(ethernet6(q(VIP, 53)));
      const e = buildIcmp6Error({
        saddr: BE1,
        daddr: CLIENT,
        type: ICMPV6.DEST_UNREACH,
        code: ICMPV6_PORT_UNREACH,
        quoted: q(BE1, 5353),
      });
      const r = await dp.run(ethernet6(e), "bpx_from_pod");
      const want = buildIcmp6Error({
        saddr: VIP,
        daddr: CLIENT,
        type: ICMPV6.DEST_UNREACH,
        code: ICMPV6_PORT_UNREACH,
        quoted: q(VIP, 53),
      });
      assertSame(r.data, ethernet6(want), "from the frontend");
      assert.deepEqual(checkIpv6(r.data, { frame: true }).inner, {
        proto: abi.IPPROTO_UDP,
        truncated: false,
        l4: "ok",
      });
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "port unreachable");
    });
  });

  it("masqueraded (NodePort Cluster): a PTB to the node address about node:port -> backend reaches the client quoting client -> NodePort", async () => {
    await withDatapath(async (dp) => {
      dp.obj
        .map(abi.MAP_NAMES.natConfig)
        .update(
          abi.u32Key.encode(0),
          abi.natConfig.encode({ masqAddr: "192.0.2.11", portMin: 32000, portMax: 32000, flags: 0, translatedMark: 0 }),
        );
      writeNat6Config(dp.obj.map(abi.MAP_NAMES.nat6Config), NODE6);
      const np: Frontend = {
        ...frontend("TCP", 30080, [{ address: BE2, port: 8080 }]),
        type: "NodePort",
        address: NODE6,
        scope: "external",
      };
      dp.setFrontend(np, { revNatId: 7, backendIds: [12] });
      const open = await dp.run(
        buildFrame6({ proto: "tcp", saddr: EXT, daddr: NODE6, sport: 50000, dport: 30080, flags: TCP_FLAGS.SYN }),
        "bpx_from_device",
      );
      assert.equal(open.data.readUInt16BE(14 + 40), 32000, "masqueraded to port 32000");
      // The error comes to the node's address: ingress gives it the client (the flow the stack knows),
      // egress toward the client the NodePort.
      const e = error(ROUTER, NODE6, seg(NODE6, 32000, BE2, 8080));
      const i = await dp.ingress(e, "bpx_from_device");
      assertSame(
        i.data,
        error(ROUTER, EXT, seg(EXT, 50000, BE2, 8080)),
        "ingress: to the client, about client -> backend",
      );
      const r = await dp.run(e, "bpx_from_device");
      assertSame(r.data, error(ROUTER, EXT, seg(EXT, 50000, NODE6, 30080)), "egress: about client -> NodePort");
      // An error about the backend's reply as it left (NodePort -> client), sent to the node: to the backend,
      // quoting what the backend sent (backend -> node address and port).
      const back = await dp.run(error(ROUTER, NODE6, seg(NODE6, 30080, EXT, 50000)), "bpx_from_device");
      assertSame(back.data, error(ROUTER, BE2, seg(BE2, 8080, NODE6, 32000)), "to the backend, quoting its packet");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 + 2 + 2 }, "translated at each hook that rewrites");
    });
  });

  it("an error about a backend's reply (frontend -> client), sent to the frontend, goes to the backend quoting backend -> client", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      await dp.run(buildFrame6(syn()));
      const r = await dp.run(error(ROUTER, VIP, seg(VIP, 80, CLIENT, 40000)), "bpx_from_device");
      assertSame(r.data, error(ROUTER, BE1, seg(BE1, 8080, CLIENT, 40000)), "to the backend");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "reply direction");
    });
  });

  it("an error about a masqueraded port whose flow moved on is dropped (drop_nat_not_owner); one about no flow passes untouched, uncounted", async () => {
    await withDatapath(async (dp) => {
      dp.obj
        .map(abi.MAP_NAMES.natConfig)
        .update(
          abi.u32Key.encode(0),
          abi.natConfig.encode({ masqAddr: "192.0.2.11", portMin: 32000, portMax: 32000, flags: 0, translatedMark: 0 }),
        );
      writeNat6Config(dp.obj.map(abi.MAP_NAMES.nat6Config), NODE6);
      const np: Frontend = {
        ...frontend("TCP", 30080, [{ address: BE2, port: 8080 }]),
        type: "NodePort",
        address: NODE6,
        scope: "external",
      };
      dp.setFrontend(np, { revNatId: 7, backendIds: [12] });
      await dp.run(
        buildFrame6({ proto: "tcp", saddr: EXT, daddr: NODE6, sport: 50000, dport: 30080, flags: TCP_FLAGS.SYN }),
        "bpx_from_device",
      );
      // The client's forward entry now names another port: the reply entry of 32000 is stale.
      const nat6 = dp.obj.map(abi.MAP_NAMES.nat6);
      const fwdKey = abi.ct6Key.encode({
        saddr: EXT,
        daddr: BE2,
        sport: 50000,
        dport: 8080,
        proto: abi.IPPROTO_TCP,
        dir: abi.CT_DIR_FORWARD,
      });
      const fwd = abi.nat6Entry.decode(nat6.lookup(fwdKey)!);
      nat6.update(fwdKey, abi.nat6Entry.encode({ ...fwd, port: 32001 }));
      const stale = await dp.run(error(ROUTER, NODE6, seg(NODE6, 32000, BE2, 8080)), "bpx_from_device");
      assert.equal(stale.retval, TC_ACT_SHOT, "stale port");
      const other = error(ROUTER, CLIENT, seg(CLIENT, 41000, OTHER, 80));
      const r = await dp.run(other, "bpx_from_device");
      assert.equal(r.retval, TC_ACT_OK);
      assert.equal(r.data.toString("hex"), other.toString("hex"), "untracked: untouched");
      const echo = ethernet6(
        buildIpv6({ proto: "icmpv6", saddr: CLIENT, daddr: VIP, type: ICMPV6.ECHO_REQUEST, code: 0 }),
      );
      const er = await dp.run(echo);
      assert.equal(er.data.toString("hex"), echo.toString("hex"), "not an error: untouched");
      assertCounted(dp, { translated_new: 1, drop_nat_not_owner: 1 }, "not owner, untracked");
    });
  });
});

describe("IPv6 fragments to frontends (RFC 8200 4.5; frag6.h)", () => {
  const ID = 0x1234abcd;
  const body = Buffer.alloc(3000);
  for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
  const udp = (saddr: string, sport: number, daddr: string, dport: number, payload = body) =>
    buildIpv6({ proto: "udp", saddr, daddr, sport, dport, payload });

  it("a UDP datagram in three fragments: the first records its ports, all are DNATed, the reply's fragments reverse-NATed", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(DNS, { revNatId: 8, backendIds: [21] });
      const frags = fragmentIpv6(udp(CLIENT, 33333, VIP, 53), 1232, ID);
      const want = fragmentIpv6(udp(CLIENT, 33333, BE1, 5353), 1232, ID);
      assert.equal(frags.length, 3);
      for (let i = 0; i < frags.length; i++) {
        const r = await dp.run(ethernet6(frags[i]!));
        assert.equal(r.retval, TC_ACT_OK, `fragment ${i}`);
        assertSame(r.data, ethernet6(want[i]!), `fragment ${i}`);
      }
      // The backend's answer, fragmented by the backend: its source becomes the frontend in every fragment.
      const reply = fragmentIpv6(udp(BE1, 5353, CLIENT, 33333), 1232, ID + 1);
      const wantReply = fragmentIpv6(udp(VIP, 53, CLIENT, 33333), 1232, ID + 1);
      for (let i = 0; i < reply.length; i++) {
        const r = await dp.run(ethernet6(reply[i]!));
        assertSame(r.data, ethernet6(wantReply[i]!), `reply fragment ${i}`);
      }
      assertCounted(
        dp,
        { translated_new: 1, translated_established: 2, reverse_translated: 3 },
        "one flow, every fragment",
      );
    });
  });

  it("a fragment chain behind a hop-by-hop header and a TCP first fragment are translated too", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(DNS, { revNatId: 8, backendIds: [21] });
      dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const ext = [{ type: "hop-by-hop" as const, options: Buffer.from([0x05, 0x02, 0, 0]) }];
      const pkt = (daddr: string, dport: number) =>
        buildIpv6({ proto: "udp", saddr: CLIENT, daddr, sport: 33334, dport, payload: body, ext });
      const frags = fragmentIpv6(pkt(VIP, 53), 1400, ID);
      const want = fragmentIpv6(pkt(BE1, 5353), 1400, ID);
      for (let i = 0; i < frags.length; i++)
        assertSame((await dp.run(ethernet6(frags[i]!))).data, ethernet6(want[i]!), `hop-by-hop fragment ${i}`);
      const t = buildFrame6(syn({ ext: [{ type: "fragment", offset: 0, more: false, id: 9 }] }));
      assertSame(
        (await dp.run(t)).data,
        buildFrame6(syn({ ext: [{ type: "fragment", offset: 0, more: false, id: 9 }], daddr: BE1, dport: 8080 })),
        "atomic TCP fragment",
      );
    });
  });

  it("a later fragment without its first passes untouched (fragment_no_entry); a fragment to a frontend without backends is dropped, not rejected", async () => {
    await withDatapath(async (dp) => {
      dp.setFrontend(frontend("UDP", 53, []), { revNatId: 8, backendIds: [] });
      const frags = fragmentIpv6(udp(CLIENT, 33333, VIP, 53), 1232, ID);
      const later = ethernet6(frags[1]!);
      const r = await dp.run(later);
      assert.equal(r.retval, TC_ACT_OK);
      assert.equal(r.data.toString("hex"), later.toString("hex"), "untouched");
      const first = await dp.run(ethernet6(frags[0]!));
      assert.equal(first.retval, TC_ACT_SHOT, "no ICMPv6 reply built from a fragment");
      assertCounted(dp, { fragment_no_entry: 1, drop_fragment: 1 }, "fragments");
    });
  });
});

describe("the IPv6 pre-filter (prefilter6.h, its own bitmap bpx_prefilter6_v1), as IPv4's", () => {
  it("with a complete bitmap, frontends and backends are served; anything else skips every lookup (not_service), even a tracked flow once its bits are gone", async () => {
    await withDatapath(async (dp) => {
      const c = dp.setFrontend(WEB, { revNatId: 7, backendIds: [11] });
      const col = new BitCollector();
      for (const k of c.services.keys()) col.service6(Buffer.from(k, "latin1"));
      for (const v of c.backends.values()) col.backend6(Buffer.from(v, "latin1"));
      const bits = col.take();
      assert.deepEqual(
        [...bits6Of(bits)].sort(),
        [prefilter6Bit(VIP, 80, abi.IPPROTO_TCP), prefilter6Bit(BE1, 8080, abi.IPPROTO_TCP)].sort(),
        "the bits are taken from the entries' bytes",
      );
      const pf = new Prefilter(dp.obj.map(abi.MAP_NAMES.prefilter6), 6);
      pf.restore();
      await pf.before(new Map([["default/web6", bits]]), [], true);
      await pf.after();
      const r = await dp.run(buildFrame6(syn()));
      assertSame(r.data, buildFrame6(syn({ daddr: BE1, dport: 8080 })), "to the frontend: served");
      const synack = (saddr: string, sport: number) =>
        buildFrame6({ proto: "tcp", saddr, daddr: CLIENT, sport, dport: 40000, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK });
      assertSame((await dp.run(synack(BE1, 8080))).data, synack(VIP, 80), "from the backend: reverse-translated");
      const other = buildFrame6(syn({ daddr: OTHER }));
      assert.equal((await dp.run(other)).data.toString("hex"), other.toString("hex"), "elsewhere: untouched");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1, not_service: 1 }, "with the bitmap");
      // The Service's bits cleared (its entries kept): the tracked flow's packets are no longer looked at.
      await pf.before(new Map([["default/web6", undefined]]), [], true);
      await pf.after();
      const again = buildFrame6(syn({ flags: TCP_FLAGS.ACK }));
      assert.equal((await dp.run(again)).data.toString("hex"), again.toString("hex"), "filtered out: untouched");
      assertCounted(dp, { translated_new: 1, reverse_translated: 1, not_service: 2 }, "filtered");
    });
  });
});
