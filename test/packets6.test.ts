// The IPv6 packet fixtures (test/fixtures/packets6.ts) against scapy, a well-kept independent implementation
// (Debian's python3-scapy, installed by scripts/setup.sh --tests): scapy builds the same packets byte for byte,
// recomputes the same checksums on ours, and reassembles our fragments into the original; and the checkers
// catch every corruption the checksums cover. No kernel, no root.

import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { TCP_FLAGS, internetChecksum } from "./fixtures/packets.js";
import {
  ICMPV6,
  ICMPV6_EXC_HOPLIMIT,
  ICMPV6_PORT_UNREACH,
  IPV6_HLEN,
  IPV6_MIN_MTU,
  MAX_EXT_HEADERS,
  NEXTHDR_FRAGMENT,
  NEXTHDR_ICMPV6,
  buildFrame6,
  buildIcmp6Error,
  buildIpv6,
  checkIpv6,
  fragmentIpv6,
  ipv6ChecksumsOk,
  pseudoHeaderSum6,
  walkHeaders,
  type Packet6Spec,
} from "./fixtures/packets6.js";

// Debian's interpreter by path: the one python3-scapy installs into (a python3 earlier in PATH may not have it).
const PYTHON = "/usr/bin/python3";
const SCAPY_HELPER = fileURLToPath(new URL("./fixtures/scapy6.py", import.meta.url));

function scapy(cases: unknown[]): Array<{ hex: string; layers?: string[] }> {
  let out: string;
  try {
    out = execFileSync(PYTHON, [SCAPY_HELPER], { input: JSON.stringify(cases), encoding: "utf8", timeout: 60_000 });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? "";
    if (/No module named .?scapy/.test(stderr))
      throw new Error("scapy is missing: install python3-scapy (scripts/setup.sh --tests does)", { cause: e });
    throw e;
  }
  return JSON.parse(out) as Array<{ hex: string; layers?: string[] }>;
}

const A = "2001:db8::a";
const SVC = "fd00:96::50";
const POD = "fd00:10:244:2::10";
const MSS = Buffer.from([2, 4, 0x05, 0xa0]); // MSS 1440

/** A UDP payload whose checksum computes to zero, so the field must carry 0xffff (RFC 8200 8.1). */
function zeroSumPayload(): Buffer {
  const payload = Buffer.from("zero-sum..");
  const spec: Packet6Spec = { proto: "udp", saddr: A, daddr: SVC, sport: 40002, dport: 8053, payload };
  const c = buildIpv6(spec).readUInt16BE(IPV6_HLEN + 6);
  payload.writeUInt16BE(c, 8); // adds exactly what was missing from 0xffff to the sum
  return payload;
}

interface Case {
  name: string;
  ours: Buffer;
  /** The same packet as a scapy expression. */
  scapy: string;
  layers: string[];
}

const bigTcp: Packet6Spec = {
  proto: "tcp",
  saddr: POD,
  daddr: A,
  sport: 80,
  dport: 40000,
  flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
  seq: 7,
  ack: 9,
  window: 512,
  payload: Buffer.alloc(1400, 0x61),
};
const smallUdp: Packet6Spec = {
  proto: "udp",
  saddr: A,
  daddr: POD,
  sport: 40001,
  dport: 8053,
  payload: Buffer.from("query"),
};
const chained: Packet6Spec = {
  proto: "tcp",
  saddr: A,
  daddr: "fd00:10:244:1::1",
  hopLimit: 9,
  sport: 1234,
  dport: 80,
  seq: 1,
  window: 65535,
  ext: [
    { type: "hop-by-hop", options: Buffer.from([5, 2, 0, 0]) },
    { type: "destination", options: Buffer.from([0x1e, 1, 0xaa]) },
    { type: "routing", routingType: 0, segmentsLeft: 1, addresses: [SVC] },
  ],
};

const cases: Case[] = [
  {
    name: "TCP SYN with MSS",
    ours: buildIpv6({
      proto: "tcp",
      saddr: A,
      daddr: SVC,
      sport: 40000,
      dport: 80,
      seq: 1,
      window: 64240,
      tcpOptions: MSS,
    }),
    scapy: `IPv6(src="${A}",dst="${SVC}",hlim=64)/TCP(sport=40000,dport=80,seq=1,flags="S",window=64240,options=[("MSS",1440)])`,
    layers: ["IPv6", "TCP"],
  },
  {
    name: "TCP with payload, traffic class and flow label",
    ours: buildIpv6({ ...bigTcp, trafficClass: 0x2e, flowLabel: 0x12345, payload: Buffer.from("hello") }),
    scapy: `IPv6(src="${POD}",dst="${A}",tc=0x2e,fl=0x12345,hlim=64)/TCP(sport=80,dport=40000,seq=7,ack=9,flags="PA",window=512)/Raw(b"hello")`,
    layers: ["IPv6", "TCP", "Raw"],
  },
  {
    name: "UDP",
    ours: buildIpv6(smallUdp),
    scapy: `IPv6(src="${A}",dst="${POD}",hlim=64)/UDP(sport=40001,dport=8053)/Raw(b"query")`,
    layers: ["IPv6", "UDP", "Raw"],
  },
  {
    name: "UDP whose checksum computes to zero (sent as 0xffff)",
    ours: buildIpv6({ proto: "udp", saddr: A, daddr: SVC, sport: 40002, dport: 8053, payload: zeroSumPayload() }),
    scapy: `IPv6(src="${A}",dst="${SVC}",hlim=64)/UDP(sport=40002,dport=8053)/Raw(bytes.fromhex("${zeroSumPayload().toString("hex")}"))`,
    layers: ["IPv6", "UDP", "Raw"],
  },
  {
    name: "ICMPv6 echo request",
    ours: buildIpv6({
      proto: "icmpv6",
      saddr: A,
      daddr: SVC,
      type: ICMPV6.ECHO_REQUEST,
      code: 0,
      rest: Buffer.from([0x12, 0x34, 0, 1]),
      body: Buffer.from("ping6"),
    }),
    scapy: `IPv6(src="${A}",dst="${SVC}",hlim=64)/ICMPv6EchoRequest(id=0x1234,seq=1,data=b"ping6")`,
    layers: ["IPv6", "ICMPv6 Echo Request"],
  },
  {
    name: "hop-by-hop, destination options and a type 0 routing header: checksum over the final destination",
    ours: buildIpv6(chained),
    scapy:
      `IPv6(src="${A}",dst="fd00:10:244:1::1",hlim=9)/IPv6ExtHdrHopByHop(options=[RouterAlert()])` +
      `/IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e,optdata=b"\\xaa")])` +
      `/IPv6ExtHdrRouting(type=0,segleft=1,addresses=["${SVC}"])/TCP(sport=1234,dport=80,seq=1,flags="S",window=65535)`,
    layers: [
      "IPv6",
      "IPv6 Extension Header - Hop-by-Hop Options Header",
      "IPv6 Extension Header - Destination Options Header",
      "IPv6 Option Header Routing",
      "TCP",
    ],
  },
  {
    name: "segment routing header (RFC 8754): checksum over segment 0",
    ours: buildIpv6({
      ...smallUdp,
      daddr: "fd00:10:244:1::1",
      ext: [{ type: "routing", routingType: 4, segmentsLeft: 1, addresses: [SVC, "fd00:10:244:1::1"] }],
    }),
    scapy:
      `IPv6(src="${A}",dst="fd00:10:244:1::1",hlim=64)/IPv6ExtHdrSegmentRouting(segleft=1,lastentry=1,addresses=["${SVC}","fd00:10:244:1::1"])` +
      `/UDP(sport=40001,dport=8053)/Raw(b"query")`,
    layers: ["IPv6", "IPv6 Option Header Segment Routing", "UDP", "Raw"],
  },
  {
    name: "atomic fragment (offset 0, no more fragments) carrying UDP",
    ours: buildIpv6({ ...smallUdp, ext: [{ type: "fragment", offset: 0, more: false, id: 0xdeadbeef }] }),
    scapy: `IPv6(src="${A}",dst="${POD}",hlim=64)/IPv6ExtHdrFragment(offset=0,m=0,id=0xdeadbeef)/UDP(sport=40001,dport=8053)/Raw(b"query")`,
    layers: ["IPv6", "IPv6 Extension Header - Fragmentation header", "UDP", "Raw"],
  },
  {
    name: "Packet Too Big quoting a full-size TCP segment, cut to 1280 bytes",
    ours: buildIcmp6Error({
      saddr: "2001:db8::1",
      daddr: POD,
      type: ICMPV6.PKT_TOOBIG,
      code: 0,
      mtu: 1400,
      quoted: buildIpv6(bigTcp),
    }),
    scapy: `IPv6(src="2001:db8::1",dst="${POD}",hlim=64)/ICMPv6PacketTooBig(mtu=1400)/Raw(bytes.fromhex("${buildIpv6(
      bigTcp,
    )
      .subarray(0, IPV6_MIN_MTU - 48)
      .toString("hex")}"))`,
    layers: ["IPv6", "ICMPv6 Packet Too Big", "IPv6 in ICMPv6", "TCP in ICMP"],
  },
  {
    name: "destination unreachable (port) quoting a whole UDP datagram",
    ours: buildIcmp6Error({
      saddr: POD,
      daddr: A,
      type: ICMPV6.DEST_UNREACH,
      code: ICMPV6_PORT_UNREACH,
      quoted: buildIpv6(smallUdp),
    }),
    scapy: `IPv6(src="${POD}",dst="${A}",hlim=64)/ICMPv6DestUnreach(code=4)/IPerror6(src="${A}",dst="${POD}",hlim=64)/UDPerror(sport=40001,dport=8053)/Raw(b"query")`,
    layers: ["IPv6", "ICMPv6 Destination Unreachable", "IPv6 in ICMPv6", "UDP in ICMP", "Raw"],
  },
  {
    name: "time exceeded quoting a packet with an extension header chain",
    ours: buildIcmp6Error({
      saddr: "2001:db8::b",
      daddr: A,
      type: ICMPV6.TIME_EXCEED,
      code: ICMPV6_EXC_HOPLIMIT,
      quoted: buildIpv6(chained),
    }),
    scapy: `IPv6(src="2001:db8::b",dst="${A}",hlim=64)/ICMPv6TimeExceeded(code=0)/Raw(bytes.fromhex("${buildIpv6(chained).toString("hex")}"))`,
    layers: ["IPv6", "ICMPv6 Time Exceeded", "IPv6 in ICMPv6"],
  },
];

describe("IPv6 packet fixtures against scapy", () => {
  let built: Array<{ hex: string }> = [];
  let recomputed: Array<{ hex: string; layers?: string[] }> = [];

  before(() => {
    const r = scapy([
      ...cases.map((c) => ({ scapy: c.scapy })),
      ...cases.map((c) => ({ recompute: c.ours.toString("hex") })),
    ]);
    built = r.slice(0, cases.length);
    recomputed = r.slice(cases.length);
  });

  for (const [i, c] of cases.entries()) {
    test(`${c.name}: byte for byte what scapy builds, and scapy's checksum on ours`, () => {
      assert.equal(c.ours.toString("hex"), built[i]!.hex, "scapy builds the same bytes");
      assert.equal(c.ours.toString("hex"), recomputed[i]!.hex, "scapy recomputes the same checksum");
      assert.deepEqual(recomputed[i]!.layers!.slice(0, c.layers.length), c.layers, "scapy parses the same layers");
      const chk = checkIpv6(c.ours);
      assert.deepEqual(chk.problems, []);
      assert.equal(chk.l4, "ok");
      assert.equal(ipv6ChecksumsOk(c.ours), true);
    });
  }

  test("ICMPv6 errors: the whole error fits the minimum MTU; a complete quote's checksum is checked", () => {
    const ptb = cases.find((c) => c.name.startsWith("Packet Too Big"))!.ours;
    assert.equal(ptb.length, IPV6_MIN_MTU);
    assert.equal(ptb.readUInt32BE(IPV6_HLEN + 4), 1400, "MTU field");
    assert.deepEqual(checkIpv6(ptb).inner, { l4: "n/a", proto: 6, truncated: true });
    const unreach = cases.find((c) => c.name.startsWith("destination unreachable"))!.ours;
    assert.deepEqual(checkIpv6(unreach).inner, { l4: "ok", proto: 17, truncated: false });
    const te = cases.find((c) => c.name.startsWith("time exceeded"))!.ours;
    assert.deepEqual(checkIpv6(te).inner, { l4: "ok", proto: 6, truncated: false });
    // Break the quoted UDP checksum and re-checksum the outer message: only the quote is bad.
    const bad = Buffer.from(unreach);
    const q = IPV6_HLEN + 8;
    bad[q + IPV6_HLEN + 6]! ^= 0x01;
    bad.writeUInt16BE(0, IPV6_HLEN + 2);
    const l4 = bad.subarray(IPV6_HLEN);
    bad.writeUInt16BE(internetChecksum(l4, pseudoHeaderSum6(POD, A, NEXTHDR_ICMPV6, l4.length)), IPV6_HLEN + 2);
    const r = checkIpv6(bad);
    assert.equal(r.l4, "ok");
    assert.equal(r.inner?.l4, "bad");
    assert.equal(ipv6ChecksumsOk(bad), false);
  });

  test("fragments: ours reassemble (scapy's defragment6) into the original, unfragmentable part repeated", () => {
    const whole = buildIpv6({
      ...smallUdp,
      ext: [
        { type: "hop-by-hop", options: Buffer.from([5, 2, 0, 0]) },
        { type: "destination", options: Buffer.from([0x1e, 1, 0xaa]) },
      ],
      payload: Buffer.alloc(3000, 0x5a),
    });
    // What fits a 1280-byte path: 1280 - 40 (IPv6) - 8 (hop-by-hop) - 8 (Fragment header).
    const frags = fragmentIpv6(whole, 1224, 0x01020304);
    assert.equal(frags.length, 3);
    for (const [i, f] of frags.entries()) {
      assert.ok(f.length <= IPV6_MIN_MTU, `fragment ${i} is ${f.length} bytes`);
      const c = walkHeaders(f, 0);
      // Hop-by-hop stays in front (unfragmentable); the destination options travel in the first fragment.
      assert.deepEqual(
        c.ext.map((e) => e.nexthdr),
        [0, NEXTHDR_FRAGMENT, ...(i === 0 ? [60] : [])],
      );
      const fh = c.ext[1]!.fragment!;
      assert.equal(fh.id, 0x01020304);
      assert.equal(fh.more, i < 2);
      assert.equal(fh.offset * 8, i * 1224);
      assert.equal(checkIpv6(f).l4, "n/a", "a fragment's upper-layer checksum cannot be checked alone");
      assert.deepEqual(checkIpv6(f).problems, []);
    }
    const [re] = scapy([{ defragment: frags.map((f) => f.toString("hex")) }]);
    // scapy leaves the reassembled packet without a Fragment header, as RFC 8200 4.5 does.
    assert.equal(re!.hex, whole.toString("hex"));
    assert.equal(ipv6ChecksumsOk(whole), true);
  });
});

describe("IPv6 checkers catch what the checksums cover", () => {
  const frame = buildFrame6({ ...bigTcp, payload: Buffer.from("hello") });

  test("a frame with correct checksums passes; an Ethernet offset is honoured", () => {
    assert.equal(ipv6ChecksumsOk(frame, { frame: true }), true);
    assert.equal(ipv6ChecksumsOk(frame), false, "read as a bare packet it is not IPv6");
  });

  test("every single-bit change in the pseudo header or the segment is detected; hop limit and flow label are not covered", () => {
    assert.equal(checkIpv6(frame, { frame: true }).proto, 6);
    const pkt = frame.subarray(14);
    for (let at = 0; at < pkt.length; at++) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(pkt);
        bad[at]! ^= bit;
        const ok = ipv6ChecksumsOk(bad);
        if (at === 6) {
          // The next header: no longer TCP, so no TCP checksum to fail; the change shows as the protocol.
          assert.notEqual(checkIpv6(bad).proto, 6);
          continue;
        }
        // Not covered: traffic class and flow label (bytes 0-3 but the version nibble) and the hop limit.
        const uncovered = (at === 0 && bit === 0x01) || at === 1 || at === 2 || at === 3 || at === 7;
        assert.equal(ok, uncovered, `byte ${at} bit ${bit.toString(16)}: ${JSON.stringify(checkIpv6(bad).problems)}`);
      }
    }
  });

  test("the routing header's final destination is the one checksummed, not the address in the header", () => {
    const wrong = buildIpv6({ ...chained, ext: chained.ext!.slice(0, 2) }); // same bytes up to the routing header
    const right = buildIpv6(chained);
    assert.notEqual(right.readUInt16BE(right.length - 20 + 16), wrong.readUInt16BE(wrong.length - 20 + 16));
    const swapped = Buffer.from(right);
    wrong.copy(swapped, swapped.length - 20 + 16, wrong.length - 20 + 16, wrong.length - 20 + 18);
    assert.equal(ipv6ChecksumsOk(swapped), false);
  });

  test("UDP with a zero checksum, a short payload length, trailing bytes and a long chain are reported", () => {
    const zero = buildIpv6({ ...smallUdp, checksum: "zero" });
    assert.match(checkIpv6(zero).problems.join(), /zero/);
    const short = Buffer.from(buildIpv6(smallUdp));
    short.writeUInt16BE(short.readUInt16BE(4) + 1, 4);
    assert.match(checkIpv6(short).problems.join(), /beyond/);
    const trailing = Buffer.concat([buildIpv6(smallUdp), Buffer.alloc(2)]);
    assert.match(checkIpv6(trailing).problems.join(), /after the payload/);
    const long = buildIpv6({
      ...smallUdp,
      ext: Array.from({ length: MAX_EXT_HEADERS + 1 }, () => ({ type: "destination" as const })),
    });
    assert.match(checkIpv6(long).problems.join(), /more than/);
    const hopLate = buildIpv6({ ...smallUdp, ext: [{ type: "destination" }, { type: "hop-by-hop" }] });
    assert.match(checkIpv6(hopLate).problems.join(), /not first/);
  });
});
