// Packet tests (BPF_PROG_TEST_RUN) of ICMP errors about translated flows (bpf/lib/icmp.h) and of IPv4
// fragments (bpf/lib/frag.h). Every expected frame is built from scratch by the fixtures, checksums computed
// independently (RFC 1071), and compared byte for byte: an ICMP error must come out exactly as if the client's
// own packet (client -> frontend) had been quoted, and each fragment exactly as the fragments of the translated
// datagram. FIB redirect is left off, so translated packets come back with TC_ACT_OK.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import {
  DEFAULT_DST_MAC,
  DEFAULT_SRC_MAC,
  ETH_HLEN,
  ETH_P_IP,
  IP_MF,
  TCP_FLAGS,
  buildEthernet,
  buildIpv4Header,
  buildPacket,
  checksumsOk,
  describePacket,
  internetChecksum,
  ipv4ChecksumOk,
  parsePacket,
  pseudoHeaderSum,
  type TcpSpec,
  type UdpSpec,
} from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";
import { loadCaseObject } from "./fixtures/case-object.js";

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;

const CLIENT = "10.244.1.10";
const NODE = "192.0.2.11";
const ROUTER = "10.244.2.1";
const VIP = "10.96.0.10";
const BE1 = "10.244.2.21";
const PORT_MIN = 61000;

const ICMP_DEST_UNREACH = 3;
const ICMP_PORT_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;
const ICMP_TIME_EXCEEDED = 11;

type Program = "bpx_from_pod" | "bpx_from_device" | "bpx_reverse";
type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-icmp-frag.test.ts");
  bpffs = PrivateBpffs.create("datapath-icmpfrag");
});

after(() => bpffs?.release());

interface Frontend {
  port: number;
  proto: number;
  revNatId: number;
  backendPort: number;
  flags?: number;
}

class Datapath {
  private constructor(
    readonly obj: BpfObject,
    readonly dir: string,
  ) {}

  static open(): Datapath {
    const { obj, dir } = loadCaseObject(bpffs!.path);
    const dp = new Datapath(obj, dir);
    dp.m(abi.MAP_NAMES.config).update(
      abi.u32Key.encode(0),
      abi.config.encode({ flags: 0, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-test" }),
    );
    dp.m(abi.MAP_NAMES.natConfig).update(
      abi.u32Key.encode(0),
      abi.natConfig.encode({ masqAddr: NODE, portMin: PORT_MIN, portMax: PORT_MIN + 3, flags: 0 }),
    );
    return dp;
  }

  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  m(name: string) {
    return this.obj.map(name);
  }

  /** A ClusterIP (internal scope) with backend 1 at BE1. */
  setFrontend(f: Frontend): void {
    this.m(abi.MAP_NAMES.backends).update(
      abi.u32Key.encode(1),
      abi.backend.encode({ address: BE1, port: f.backendPort, proto: f.proto, flags: 0 }),
    );
    this.m(abi.MAP_NAMES.revNat).update(
      abi.u32Key.encode(f.revNatId),
      abi.revNat.encode({ address: VIP, port: f.port }),
    );
    const key = (slot: number) =>
      abi.svcKey.encode({ address: VIP, port: f.port, proto: f.proto, scope: abi.SCOPE_INTERNAL, slot });
    this.m(abi.MAP_NAMES.services).update(
      key(1),
      abi.svcValue.encode({ backendId: 1, count: 0, revNatId: f.revNatId, flags: 0, affinityTimeout: 0 }),
    );
    this.m(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({ backendId: 0, count: 1, revNatId: f.revNatId, flags: f.flags ?? 0, affinityTimeout: 0 }),
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

  fragEntry(key: abi.FragKey): abi.FragPorts | null {
    const v = this.m(abi.MAP_NAMES.fragments).lookup(abi.fragKey.encode(key));
    return v ? abi.fragPorts.decode(v) : null;
  }

  async run(data: Buffer, program: Program) {
    return runThroughStack(this.obj, program, data);
  }
}

async function withDatapath(fn: (dp: Datapath) => Promise<void>): Promise<void> {
  const dp = Datapath.open();
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
}

const SVC_UDP: Frontend = { port: 53, proto: UDP, revNatId: 2, backendPort: 5353 };
const SVC_TCP: Frontend = { port: 80, proto: TCP, revNatId: 1, backendPort: 8080 };

const dgram = (over: Partial<UdpSpec> = {}): UdpSpec => ({
  proto: "udp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40001,
  dport: 53,
  id: 0x4321,
  payload: Buffer.from("query-0123456789"),
  ...over,
});

const syn = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40000,
  dport: 80,
  flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
  seq: 0x01020304,
  ack: 0x0a0b0c0d,
  payload: Buffer.alloc(200, 0x61),
  ...over,
});

/** The IP datagram of a frame (what an ICMP error quotes), optionally only its first `len` bytes. */
function ipBytes(frame: Buffer, len?: number): Buffer {
  const ip = frame.subarray(ETH_HLEN);
  return Buffer.from(len === undefined ? ip : ip.subarray(0, len));
}

/** An ICMP error frame from `saddr` to `daddr` quoting `quote`; `rest` is bytes 4..7 (next-hop MTU). */
function icmpError(saddr: string, daddr: string, type: number, code: number, quote: Buffer, mtu = 0): Buffer {
  const rest = Buffer.alloc(4);
  rest.writeUInt16BE(mtu, 2);
  return buildPacket({ proto: "icmp", saddr, daddr, tos: 0xc0, id: 0, type, code, rest, body: quote });
}

/** Independent checks of the quote of an ICMP error frame: IPv4 header checksum, and the L4 checksum
 * (pseudo header from the quoted addresses) when the whole quoted datagram is present. */
function assertQuoteChecksums(frame: Buffer, what: string): void {
  assert.ok(checksumsOk(frame), `${what}: outer IPv4 and ICMP checksums verify`);
  const quote = parsePacket(frame).icmp!.body;
  const ihl = (quote[0]! & 0x0f) * 4;
  assert.equal(internetChecksum(quote.subarray(0, ihl)), 0, `${what}: quoted IPv4 header checksum verifies`);
  const total = quote.readUInt16BE(2);
  if (quote.length >= total) {
    const l4 = quote.subarray(ihl, total);
    const saddr = [...quote.subarray(12, 16)].join(".");
    const daddr = [...quote.subarray(16, 20)].join(".");
    assert.equal(
      internetChecksum(l4, pseudoHeaderSum(saddr, daddr, quote[9]!, l4.length)),
      0,
      `${what}: quoted L4 checksum verifies`,
    );
  }
}

/** The frames of `spec`'s datagram cut into IPv4 fragments: the L4 bytes split at the given sizes (multiples of 8). */
function fragments(spec: UdpSpec | TcpSpec, sizes: number[]): Buffer[] {
  const whole = parsePacket(buildPacket(spec));
  const l4 = whole.l4Bytes!;
  const frames: Buffer[] = [];
  let off = 0;
  for (let i = 0; i <= sizes.length; i++) {
    const last = i === sizes.length;
    const chunk = l4.subarray(off, last ? l4.length : off + sizes[i]!);
    const ip = buildIpv4Header(
      { ...spec, fragFlags: last ? 0 : IP_MF, fragOffset: off / 8 },
      whole.ip!.proto,
      chunk.length,
    );
    frames.push(
      Buffer.concat([
        buildEthernet(spec.dstMac ?? DEFAULT_DST_MAC, spec.srcMac ?? DEFAULT_SRC_MAC, ETH_P_IP),
        ip,
        chunk,
      ]),
    );
    off += chunk.length;
  }
  return frames;
}

/** The SNAT port a masqueraded packet got. */
function sourcePort(frame: Buffer): number {
  const p = parsePacket(frame);
  return (p.tcp ?? p.udp)!.sport;
}

describe("ICMP errors about translated flows", () => {
  it("port unreachable from the backend about a ClusterIP UDP datagram becomes one from the frontend about client -> frontend", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      const fwd = await dp.run(buildPacket(dgram()), "bpx_from_pod");
      const translated = buildPacket(dgram({ daddr: BE1, dport: 5353 }));
      assertSame(fwd.data, translated, "datagram DNATed");

      // The backend's kernel quotes the whole datagram it received.
      const err = icmpError(BE1, CLIENT, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ipBytes(translated));
      const out = await dp.run(err, "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_OK);
      const want = icmpError(VIP, CLIENT, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ipBytes(buildPacket(dgram())));
      assertSame(out.data, want, "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "flow");
    }));

  it("a zero UDP checksum in the quote stays zero", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      await dp.run(buildPacket(dgram({ checksum: "zero" })), "bpx_from_pod");
      const quote = ipBytes(buildPacket(dgram({ daddr: BE1, dport: 5353, checksum: "zero" })));
      const out = await dp.run(icmpError(BE1, CLIENT, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, quote), "bpx_from_pod");
      const want = icmpError(
        VIP,
        CLIENT,
        ICMP_DEST_UNREACH,
        ICMP_PORT_UNREACH,
        ipBytes(buildPacket(dgram({ checksum: "zero" }))),
      );
      assertSame(out.data, want, "ICMP error");
    }));

  it("fragmentation needed from a router about a masqueraded TCP flow goes to the client, quoting client -> frontend (IP header + 8 bytes)", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...SVC_TCP, flags: abi.SVC_F_MASQUERADE });
      const fwd = await dp.run(buildPacket(syn({ flags: TCP_FLAGS.SYN, payload: Buffer.alloc(0) })), "bpx_from_pod");
      const port = sourcePort(fwd.data);
      assert.ok(port >= PORT_MIN && port <= PORT_MIN + 3, `masqueraded to an SNAT port (${port})`);

      // A data segment of the flow as it left the node; a router past the node has a 1400-byte MTU.
      const sent = buildPacket(syn({ saddr: NODE, sport: port, daddr: BE1, dport: 8080 }));
      const err = icmpError(ROUTER, NODE, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ipBytes(sent, 28), 1400);
      const out = await dp.run(err, "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      const want = icmpError(
        ROUTER,
        CLIENT,
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        ipBytes(buildPacket(syn()), 28),
        1400,
      );
      assertSame(out.data, want, "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
      assert.equal(parsePacket(out.data).icmp!.rest.readUInt16BE(2), 1400, "next-hop MTU kept");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "flow");
    }));

  it("link-layer padding after a quote of 8 TCP bytes is not mistaken for the TCP checksum", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_TCP);
      await dp.run(buildPacket(syn({ flags: TCP_FLAGS.SYN, payload: Buffer.alloc(0) })), "bpx_from_pod");
      const sent = buildPacket(syn({ daddr: BE1, dport: 8080 }));
      const padding = Buffer.alloc(16, 0xab); // beyond the IPv4 total length: not part of the datagram
      const err = icmpError(ROUTER, CLIENT, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ipBytes(sent, 28), 1400);
      const out = await dp.run(Buffer.concat([err, padding]), "bpx_from_device");
      const want = icmpError(
        ROUTER,
        CLIENT,
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        ipBytes(buildPacket(syn()), 28),
        1400,
      );
      assertSame(out.data, Buffer.concat([want, padding]), "ICMP error, padding untouched");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "flow");
    }));

  it("fragmentation needed from the backend itself about a masqueraded flow, whole TCP header quoted: outer source becomes the frontend", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...SVC_TCP, flags: abi.SVC_F_MASQUERADE });
      const fwd = await dp.run(buildPacket(syn({ flags: TCP_FLAGS.SYN, payload: Buffer.alloc(0) })), "bpx_from_pod");
      const port = sourcePort(fwd.data);
      const sent = buildPacket(syn({ saddr: NODE, sport: port, daddr: BE1, dport: 8080 }));
      const out = await dp.run(
        icmpError(BE1, NODE, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ipBytes(sent), 1280),
        "bpx_from_device",
      );
      const want = icmpError(VIP, CLIENT, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ipBytes(buildPacket(syn())), 1280);
      assertSame(out.data, want, "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
    }));

  // A backend's reply as it left the node (frontend -> client), too big for a hop toward the client.
  const replySeg = (over: Partial<TcpSpec> = {}): TcpSpec =>
    syn({ saddr: VIP, sport: 80, daddr: CLIENT, dport: 40000, seq: 0x55667788, ack: 0x01020305, ...over });

  it("fragmentation needed about a backend's reply (quoting frontend -> client) goes to the backend, quoting backend -> client", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_TCP);
      await dp.run(buildPacket(syn({ flags: TCP_FLAGS.SYN, payload: Buffer.alloc(0) })), "bpx_from_pod");
      const err = icmpError(ROUTER, VIP, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ipBytes(buildPacket(replySeg())), 1400);
      const out = await dp.run(err, "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      const quote = ipBytes(buildPacket(replySeg({ saddr: BE1, sport: 8080 })));
      assertSame(out.data, icmpError(ROUTER, BE1, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, quote, 1400), "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "flow");
    }));

  it("fragmentation needed about a masqueraded flow's reply goes to the backend, quoting backend -> masquerade address and port", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...SVC_TCP, flags: abi.SVC_F_MASQUERADE });
      const fwd = await dp.run(buildPacket(syn({ flags: TCP_FLAGS.SYN, payload: Buffer.alloc(0) })), "bpx_from_pod");
      const port = sourcePort(fwd.data);
      const err = icmpError(
        ROUTER,
        VIP,
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        ipBytes(buildPacket(replySeg()), 28),
        1400,
      );
      const out = await dp.run(err, "bpx_from_device");
      const quote = ipBytes(buildPacket(replySeg({ saddr: BE1, sport: 8080, daddr: NODE, dport: port })), 28);
      assertSame(out.data, icmpError(ROUTER, BE1, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, quote, 1400), "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
    }));

  it("time exceeded generated by the node about a DNATed datagram is translated at tc egress", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      await dp.run(buildPacket(dgram()), "bpx_from_pod");
      // The node's own error: from the node's address, about the datagram after DNAT (TTL 1 quoted as received).
      const quote = ipBytes(buildPacket(dgram({ daddr: BE1, dport: 5353, ttl: 1 })));
      const out = await dp.run(icmpError(NODE, CLIENT, ICMP_TIME_EXCEEDED, 0, quote), "bpx_reverse");
      assert.equal(out.retval, TC_ACT_OK);
      const want = icmpError(NODE, CLIENT, ICMP_TIME_EXCEEDED, 0, ipBytes(buildPacket(dgram({ ttl: 1 }))));
      assertSame(out.data, want, "ICMP error");
      assertQuoteChecksums(out.data, "ICMP error");
      assertCounted(dp, { translated_new: 1, icmp_translated: 1 }, "flow");
    }));

  it("an ICMP error about a flow that was not translated passes untouched and is counted", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      await dp.run(buildPacket(dgram()), "bpx_from_pod");
      // Same client, another destination port: no conntrack entry matches the quote.
      const quote = ipBytes(buildPacket(dgram({ daddr: BE1, dport: 5354 })));
      const err = icmpError(BE1, CLIENT, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, quote);
      const out = await dp.run(err, "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_OK);
      assertSame(out.data, err, "untouched");
      const egress = await dp.run(err, "bpx_reverse");
      assertSame(egress.data, err, "untouched at egress");
      assertCounted(dp, { translated_new: 1, icmp_not_tracked: 1 }, "flow (egress counts nothing)");
    }));

  it("ICMP echo is not an error: passes untouched and uncounted", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      const echo = buildPacket({
        proto: "icmp",
        saddr: CLIENT,
        daddr: VIP,
        type: 8,
        code: 0,
        body: Buffer.from("ping"),
      });
      const out = await dp.run(echo, "bpx_from_pod");
      assertSame(out.data, echo, "untouched");
      assertCounted(dp, {}, "nothing");
    }));
});

describe("IPv4 fragments", () => {
  const SIZES = [72, 80]; // first (UDP header + 64 bytes), middle, last (the rest)
  const big = (over: Partial<UdpSpec> = {}) => dgram({ payload: Buffer.alloc(200, 0x5a), ...over });

  it("first, middle and last fragment of a datagram to a ClusterIP are DNATed consistently; the fragmented reply is reverse-translated", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      const ins = fragments(big(), SIZES);
      const wants = fragments(big({ daddr: BE1, dport: 5353 }), SIZES);
      for (const [i, f] of ins.entries()) {
        const out = await dp.run(f, "bpx_from_pod");
        assert.equal(out.retval, TC_ACT_OK, `fragment ${i}`);
        assertSame(out.data, wants[i]!, `fragment ${i}`);
        assert.ok(ipv4ChecksumOk(out.data), `fragment ${i}: IPv4 checksum`);
      }
      assert.deepEqual(dp.fragEntry({ saddr: CLIENT, daddr: VIP, id: 0x4321, proto: UDP }), {
        sport: 40001,
        dport: 53,
      });
      assertCounted(dp, { translated_new: 1, translated_established: 2 }, "forward");

      const reply = (over: Partial<UdpSpec> = {}) =>
        big({
          saddr: BE1,
          sport: 5353,
          daddr: CLIENT,
          dport: 40001,
          id: 0x0777,
          payload: Buffer.alloc(180, 0x42),
          ...over,
        });
      const backs = fragments(reply(), SIZES);
      const backWants = fragments(reply({ saddr: VIP, sport: 53 }), SIZES);
      // Delivered out of order after the first: the entry is keyed by the datagram, not by arrival.
      for (const i of [0, 2, 1]) {
        const out = await dp.run(backs[i]!, "bpx_from_pod");
        assertSame(out.data, backWants[i]!, `reply fragment ${i}`);
      }
      assertCounted(dp, { translated_new: 1, translated_established: 2, reverse_translated: 3 }, "both ways");
    }));

  it("a masqueraded datagram's fragments get the SNAT address too, and its fragmented reply is restored (bpx_snat path)", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({ ...SVC_UDP, flags: abi.SVC_F_MASQUERADE });
      const ins = fragments(big(), SIZES);
      const first = await dp.run(ins[0]!, "bpx_from_pod");
      const port = sourcePort(first.data);
      const wants = fragments(big({ saddr: NODE, sport: port, daddr: BE1, dport: 5353 }), SIZES);
      assertSame(first.data, wants[0]!, "first fragment");
      for (const i of [1, 2]) assertSame((await dp.run(ins[i]!, "bpx_from_pod")).data, wants[i]!, `fragment ${i}`);

      const reply = (over: Partial<UdpSpec> = {}) =>
        big({ saddr: BE1, sport: 5353, daddr: NODE, dport: port, id: 0x0778, ...over });
      const backs = fragments(reply(), SIZES);
      const backWants = fragments(reply({ saddr: VIP, sport: 53, daddr: CLIENT, dport: 40001 }), SIZES);
      for (const [i, f] of backs.entries())
        assertSame((await dp.run(f, "bpx_from_device")).data, backWants[i]!, `reply fragment ${i}`);
      assertCounted(dp, { translated_new: 1, translated_established: 2, reverse_translated: 3 }, "both ways");
    }));

  it("a host-network backend's fragmented reply is reverse-translated at tc egress", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      await dp.run(buildPacket(dgram()), "bpx_from_pod");
      const reply = (over: Partial<UdpSpec> = {}) =>
        big({ saddr: BE1, sport: 5353, daddr: CLIENT, dport: 40001, id: 0x0999, ...over });
      const backs = fragments(reply(), SIZES);
      const backWants = fragments(reply({ saddr: VIP, sport: 53 }), SIZES);
      for (const [i, f] of backs.entries())
        assertSame((await dp.run(f, "bpx_reverse")).data, backWants[i]!, `reply fragment ${i}`);
      assertCounted(dp, { translated_new: 1, reverse_translated: 3 }, "flow");
    }));

  it("a later fragment whose first was never seen passes untouched and is counted", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      const ins = fragments(big(), SIZES);
      const out = await dp.run(ins[1]!, "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_OK);
      assertSame(out.data, ins[1]!, "untouched");
      assertCounted(dp, { fragment_no_entry: 1 }, "counted");
    }));

  it("fragments of a datagram that is not Service traffic pass untouched", () =>
    withDatapath(async (dp) => {
      dp.setFrontend(SVC_UDP);
      const ins = fragments(big({ daddr: BE1, dport: 9999 }), SIZES);
      for (const [i, f] of ins.entries()) assertSame((await dp.run(f, "bpx_from_pod")).data, f, `fragment ${i}`);
      assertCounted(dp, { not_service: 3 }, "counted as not Service");
    }));

  it("a first fragment to a frontend without backends is dropped, not answered", () =>
    withDatapath(async (dp) => {
      dp.m(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(2), abi.revNat.encode({ address: VIP, port: 53 }));
      dp.m(abi.MAP_NAMES.services).update(
        abi.svcKey.encode({ address: VIP, port: 53, proto: UDP, scope: abi.SCOPE_INTERNAL, slot: 0 }),
        abi.svcValue.encode({ backendId: 0, count: 0, revNatId: 2, flags: 0, affinityTimeout: 0 }),
      );
      const out = await dp.run(fragments(big(), SIZES)[0]!, "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_SHOT);
      assertCounted(dp, { drop_fragment: 1 }, "counted");
    }));
});
