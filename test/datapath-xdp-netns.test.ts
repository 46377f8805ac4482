// Packet tests of bpx_xdp's translations with exact output bytes. BPF_PROG_TEST_RUN runs in a network
// namespace this test makes (via test/fixtures/xdp-netns-run.ts), whose routes and permanent neighbours let
// the program's FIB lookup succeed as on a node: a new external flow is DNATed to a remote backend and
// masqueraded to the node with an allocated SNAT port, and the backend's reply is restored to the client.
// Expected frames are built from scratch by test/fixtures/packets.ts, checksums computed independently.
// The same over IPv6 (bpx_xdp tail-calls bpx_xdp_v6), expected frames from test/fixtures/packets6.ts, plus what
// IPv6's XDP leaves to tc (extension headers, hop limit 1, UDP without a checksum). Needs root. The namespace and the bpffs are removed after, also on failure.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { PrivateBpffs } from "../src/lab/proxy.js";
import {
  ETH_HLEN,
  IPPROTO_TCP,
  TCP_FLAGS,
  buildPacket,
  checksumsOk,
  describePacket,
  parsePacket,
  pseudoHeaderSum,
} from "./fixtures/packets.js";
import { buildFrame6, ipv6ChecksumsOk, pseudoHeaderSum6, type Packet6Spec } from "./fixtures/packets6.js";

const NS = `bpxxdp${process.pid}`;
const XDP_REDIRECT = 4;
const NODE = "192.0.2.11";
const NEXT_HOP_MAC = "02:00:00:00:00:12"; // node-b, which routes the backend's pod range
const ROUTER_MAC = "02:00:00:00:00:01"; // the router towards the clients
const CLIENT = "198.51.100.10";
const FRONTEND = "203.0.113.30";
const BACKEND = "10.244.2.5";
// IPv6: the node on 2001:db8::/64, node-b (routing the backends' fd00:10:244:2::/64) and the router toward the
// clients on the same link.
const NODE6 = "2001:db8::11";
const CLIENT6 = "2001:db8:5100::10";
const FRONTEND6 = "2001:db8:7100::30";
const BACKEND6 = "fd00:10:244:2::5";
let bpffs: PrivateBpffs | undefined;
let nsMade = false;
let ourMac = "";

const ip = (...args: string[]) => execFileSync("ip", ["-n", NS, ...args], { timeout: 10_000 });

before(() => {
  assert.equal(
    process.getuid?.(),
    0,
    "test/datapath-xdp-netns.test.ts loads BPF and makes a network namespace: run it as root",
  );
  execFileSync("ip", ["netns", "add", NS], { timeout: 10_000 });
  nsMade = true;
  ip("link", "set", "lo", "up");
  ip("link", "add", "xdp-a", "type", "veth", "peer", "name", "xdp-b");
  ip("addr", "add", `${NODE}/24`, "dev", "xdp-a");
  ip("link", "set", "xdp-a", "up");
  ip("link", "set", "xdp-b", "up");
  ip("neigh", "add", "192.0.2.12", "lladdr", NEXT_HOP_MAC, "dev", "xdp-a", "nud", "permanent");
  ip("neigh", "add", "192.0.2.1", "lladdr", ROUTER_MAC, "dev", "xdp-a", "nud", "permanent");
  ip("route", "add", "10.244.2.0/24", "via", "192.0.2.12", "dev", "xdp-a");
  ip("route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "xdp-a");
  ip("-6", "addr", "add", `${NODE6}/64`, "dev", "xdp-a", "nodad");
  ip("-6", "neigh", "add", "2001:db8::12", "lladdr", NEXT_HOP_MAC, "dev", "xdp-a", "nud", "permanent");
  ip("-6", "neigh", "add", "2001:db8::1", "lladdr", ROUTER_MAC, "dev", "xdp-a", "nud", "permanent");
  ip("-6", "route", "add", "fd00:10:244:2::/64", "via", "2001:db8::12", "dev", "xdp-a");
  ip("-6", "route", "add", "2001:db8:5100::/64", "via", "2001:db8::1", "dev", "xdp-a");
  execFileSync(
    "ip",
    [
      "netns",
      "exec",
      NS,
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.forwarding=1",
      "net.ipv4.conf.lo.forwarding=1",
      "net.ipv6.conf.all.forwarding=1",
      "net.ipv6.conf.lo.forwarding=1",
    ],
    { timeout: 10_000 },
  );
  ourMac = execFileSync("ip", ["netns", "exec", NS, "cat", "/sys/class/net/xdp-a/address"], {
    encoding: "utf8",
    timeout: 10_000,
  }).trim();
  bpffs = PrivateBpffs.create("xdpnetns");
});

after(() => {
  bpffs?.release();
  if (nsMade) execFileSync("ip", ["netns", "del", NS], { timeout: 10_000 });
});

interface Run {
  retval: number;
  data: string;
}
interface NatRow {
  key: { saddr: string; daddr: string; sport: number; dport: number; dir: number };
  value: { addr: string; port: number; frontendAddr: string; frontendPort: number };
}
interface Result {
  runs: Run[];
  nat: NatRow[];
  nat6: NatRow[];
  counters: Record<string, number>;
}

function runInNamespace(frames: Buffer[], xdpDevs = true): Result {
  const out = execFileSync(
    "ip",
    [
      "netns",
      "exec",
      NS,
      process.execPath,
      "--import",
      "tsx",
      "test/fixtures/xdp-netns-run.ts",
      bpffs!.path,
      JSON.stringify(frames.map((f) => f.toString("hex"))),
      xdpDevs ? "xdp-devs" : "no-xdp-devs",
    ],
    { encoding: "utf8", timeout: 30_000 },
  );
  return JSON.parse(out) as Result;
}

test("XDP: a new external flow is DNATed and masqueraded, and its reply restored, with exact bytes and checksums", () => {
  const syn = {
    proto: "tcp" as const,
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40000,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 7,
    ttl: 64,
  };
  const first = runInNamespace([buildPacket(syn)]);
  assert.equal(first.runs[0]!.retval, XDP_REDIRECT, "the flow is finished at XDP");
  const fwd = first.nat.find((e) => e.key.dir === 0 && e.key.saddr === CLIENT && e.key.sport === 40000);
  assert.ok(fwd, `NAT entry of the flow: ${JSON.stringify(first.nat)}`);
  const snatPort = fwd.value.port;
  assert.ok(snatPort >= 61000 && snatPort <= 65535, `SNAT port ${snatPort} from the configured range`);

  const out = Buffer.from(first.runs[0]!.data, "hex");
  const want = buildPacket({
    ...syn,
    srcMac: ourMac,
    dstMac: NEXT_HOP_MAC,
    saddr: NODE,
    daddr: BACKEND,
    sport: snatPort,
    dport: 8080,
    ttl: 63,
  });
  assert.ok(checksumsOk(out), `checksums of ${describePacket(out)}`);
  assert.equal(describePacket(out), describePacket(want));
  assert.equal(out.toString("hex"), want.toString("hex"), "exact bytes of the translated SYN");
});

test("XDP: the backend's reply to a masqueraded flow is restored to the client with exact bytes", () => {
  const syn = {
    proto: "tcp" as const,
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40001,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 9,
    ttl: 64,
  };
  // The maps are pinned in this test's bpffs, so the flow the SYN creates is there for the next run, as on a node.
  const first = runInNamespace([buildPacket(syn)]);
  assert.equal(first.runs[0]!.retval, XDP_REDIRECT);
  const fwd = first.nat.find((e) => e.key.dir === 0 && e.key.saddr === CLIENT && e.key.sport === 40001);
  assert.ok(fwd, `NAT entry of the flow: ${JSON.stringify(first.nat)}`);
  const synack = {
    proto: "tcp" as const,
    srcMac: NEXT_HOP_MAC,
    dstMac: ourMac,
    saddr: BACKEND,
    daddr: NODE,
    sport: 8080,
    dport: fwd.value.port,
    flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
    seq: 100,
    ack: 10,
    ttl: 64,
  };
  const second = runInNamespace([buildPacket(synack)]);
  assert.equal(second.runs[0]!.retval, XDP_REDIRECT, "the reply is finished at XDP");
  const out = Buffer.from(second.runs[0]!.data, "hex");
  const want = buildPacket({
    ...synack,
    srcMac: ourMac,
    dstMac: ROUTER_MAC,
    saddr: FRONTEND,
    daddr: CLIENT,
    sport: 80,
    dport: 40001,
    ttl: 63,
  });
  assert.ok(checksumsOk(out), `checksums of ${describePacket(out)}`);
  assert.equal(out.toString("hex"), want.toString("hex"), "exact bytes of the restored SYN-ACK");
});

test("XDP: a TCP segment that is not a SYN and has no flow is passed to tc (which resets or picks it up), nothing recorded", () => {
  const seg = (sport: number, flags: number) =>
    buildPacket({
      proto: "tcp",
      srcMac: ROUTER_MAC,
      dstMac: ourMac,
      saddr: CLIENT,
      daddr: FRONTEND,
      sport,
      dport: 80,
      flags,
      seq: 7,
      ack: 99,
      ttl: 64,
    });
  const XDP_PASS = 2;
  const r = runInNamespace([seg(40100, TCP_FLAGS.ACK), seg(40101, TCP_FLAGS.SYN)]);
  assert.equal(r.runs[0]!.retval, XDP_PASS, "the stray ACK goes on to tc untouched");
  assert.equal(r.runs[0]!.data, seg(40100, TCP_FLAGS.ACK).toString("hex"), "unchanged");
  assert.equal(r.runs[1]!.retval, XDP_REDIRECT, "a SYN on the same path is finished at XDP (the FIB would succeed)");
  assert.deepEqual(
    r.nat.filter((e) => e.key.sport === 40100 || e.key.dport === 40100),
    [],
    "no NAT entry for the stray ACK",
  );
});

test("XDP: a new flow whose next hop's device is not known to take XDP frames is passed to tc untouched, nothing recorded", () => {
  const syn = buildPacket({
    proto: "tcp",
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40200,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 11,
    ttl: 64,
  });
  const XDP_PASS = 2;
  const r = runInNamespace([syn], false);
  assert.equal(r.runs[0]!.retval, XDP_PASS, "bpx_xdp_devs_v1 does not list xdp-a: tc delivers");
  assert.equal(r.runs[0]!.data, syn.toString("hex"), "unchanged");
  assert.deepEqual(
    r.nat.filter((e) => e.key.sport === 40200 || e.value.port === 40200),
    [],
    "no NAT entry: tc will create the flow as without XDP",
  );
  assert.ok(r.counters.xdp_pass_no_xmit! >= 1, JSON.stringify(r.counters));
  // With the device listed the same flow is finished at XDP, by a redirect through the DEVMAP.
  const again = runInNamespace([syn]);
  assert.equal(again.runs[0]!.retval, XDP_REDIRECT);
  assert.ok(again.counters.xdp_redirect! >= 1, JSON.stringify(again.counters));
});

// A CHECKSUM_PARTIAL packet's L4 checksum field holds the folded pseudo-header sum (RFC 793/768 pseudo header:
// addresses, protocol, L4 length), not a checksum; XDP cannot see ip_summed, so it recognises the field by
// that value and leaves the packet to tc, which has the kernel's checksum helpers.
function asPartial(frame: Buffer): Buffer {
  const p = parsePacket(frame);
  const out = Buffer.from(frame);
  const l4 = ETH_HLEN + p.ip!.ihl * 4;
  const proto = p.ip!.proto;
  out.writeUInt16BE(
    pseudoHeaderSum(p.ip!.saddr, p.ip!.daddr, proto, p.ip!.totalLength - p.ip!.ihl * 4),
    l4 + (proto === IPPROTO_TCP ? 16 : 6),
  );
  return out;
}

test("XDP: a packet whose L4 checksum field is its pseudo-header sum (CHECKSUM_PARTIAL) is passed to tc untouched and counted, nothing recorded; the same packet with its full checksum is translated", () => {
  const XDP_PASS = 2;
  const synSpec = {
    proto: "tcp" as const,
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40300,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 13,
    ttl: 64,
    payload: Buffer.from("partial"),
  };
  const full = buildPacket(synSpec);
  const partial = asPartial(full);
  assert.notEqual(partial.toString("hex"), full.toString("hex"), "the two differ in the checksum field only");
  const before = runInNamespace([]).counters;

  const r = runInNamespace([partial]);
  assert.equal(r.runs[0]!.retval, XDP_PASS, "CHECKSUM_PARTIAL: tc translates it");
  assert.equal(r.runs[0]!.data, partial.toString("hex"), "unchanged");
  assert.deepEqual(
    r.nat.filter((e) => e.key.sport === 40300 || e.key.dport === 40300),
    [],
    "no NAT entry: tc creates the flow",
  );
  assert.equal(r.counters.xdp_pass_csum_partial! - before.xdp_pass_csum_partial!, 1, JSON.stringify(r.counters));
  assert.equal(r.counters.translated_new, before.translated_new, "XDP counted no translation");

  // The same SYN with its full checksum is finished at XDP, with a right checksum.
  const again = runInNamespace([full]);
  assert.equal(again.runs[0]!.retval, XDP_REDIRECT);
  const out = Buffer.from(again.runs[0]!.data, "hex");
  assert.ok(checksumsOk(out), `checksums of ${describePacket(out)}`);
  assert.equal(parsePacket(out).ip!.daddr, BACKEND);
  assert.equal(again.counters.xdp_pass_csum_partial, r.counters.xdp_pass_csum_partial, "not counted as partial");
});

test("XDP: the backend's CHECKSUM_PARTIAL reply of a flow XDP translated is passed to tc untouched; its full-checksum reply is restored", () => {
  const XDP_PASS = 2;
  const syn = buildPacket({
    proto: "tcp",
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40301,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 21,
    ttl: 64,
  });
  const first = runInNamespace([syn]);
  assert.equal(first.runs[0]!.retval, XDP_REDIRECT);
  const fwd = first.nat.find((e) => e.key.dir === 0 && e.key.saddr === CLIENT && e.key.sport === 40301);
  assert.ok(fwd, `NAT entry of the flow: ${JSON.stringify(first.nat)}`);
  const synack = buildPacket({
    proto: "tcp",
    srcMac: NEXT_HOP_MAC,
    dstMac: ourMac,
    saddr: BACKEND,
    daddr: NODE,
    sport: 8080,
    dport: fwd.value.port,
    flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
    seq: 300,
    ack: 22,
    ttl: 64,
    payload: Buffer.from("reply data"),
  });
  const partial = asPartial(synack);
  const r = runInNamespace([partial, synack]);
  assert.equal(r.runs[0]!.retval, XDP_PASS, "CHECKSUM_PARTIAL reply: tc restores it");
  assert.equal(r.runs[0]!.data, partial.toString("hex"), "unchanged");
  assert.equal(r.counters.xdp_pass_csum_partial! - first.counters.xdp_pass_csum_partial!, 1);
  assert.equal(r.runs[1]!.retval, XDP_REDIRECT, "the full-checksum reply is finished at XDP");
  const out = Buffer.from(r.runs[1]!.data, "hex");
  assert.ok(checksumsOk(out), `checksums of ${describePacket(out)}`);
  assert.equal(parsePacket(out).ip!.saddr, FRONTEND);
});

test("XDP: UDP with checksum 0 (none, RFC 768) is not CHECKSUM_PARTIAL: translated at XDP, checksum stays 0; a UDP datagram whose field is its pseudo-header sum is passed", () => {
  const XDP_PASS = 2;
  const spec = {
    proto: "udp" as const,
    srcMac: ROUTER_MAC,
    dstMac: ourMac,
    saddr: CLIENT,
    daddr: FRONTEND,
    sport: 40302,
    dport: 53,
    ttl: 64,
    payload: Buffer.from("query"),
  };
  const none = buildPacket({ ...spec, checksum: "zero" });
  const partial = asPartial(buildPacket({ ...spec, sport: 40303 }));
  const before = runInNamespace([]).counters;
  const r = runInNamespace([none, partial]);
  assert.equal(r.runs[0]!.retval, XDP_REDIRECT, "no checksum: translated at XDP");
  const out = parsePacket(Buffer.from(r.runs[0]!.data, "hex"));
  assert.equal(out.ip!.daddr, BACKEND);
  assert.equal(out.udp!.dport, 5353);
  assert.equal(out.udp!.checksum, 0, "still no checksum");
  assert.ok(checksumsOk(Buffer.from(r.runs[0]!.data, "hex"), true), "IPv4 checksum right, UDP none");
  assert.equal(r.runs[1]!.retval, XDP_PASS, "CHECKSUM_PARTIAL UDP: tc translates it");
  assert.equal(r.runs[1]!.data, partial.toString("hex"), "unchanged");
  assert.equal(r.counters.xdp_pass_csum_partial! - before.xdp_pass_csum_partial!, 1, JSON.stringify(r.counters));
});

// IPv6 (bpx_xdp_v6). A frame as the router sends it toward the node, and the same addresses' frames out.
const XDP_PASS = 2;
const toNode6 = (spec: Packet6Spec): Packet6Spec => ({ srcMac: ROUTER_MAC, dstMac: ourMac, hopLimit: 64, ...spec });

/** The SYN of a new flow from CLIENT6:sport to the frontend; its NAT forward entry after XDP finished it. */
function openFlow6(sport: number, extra: Partial<Packet6Spec> = {}): { syn: Packet6Spec; r: Result; snatPort: number } {
  const syn = toNode6({
    proto: "tcp",
    saddr: CLIENT6,
    daddr: FRONTEND6,
    sport,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 7,
    ...extra,
  } as Packet6Spec);
  const r = runInNamespace([buildFrame6(syn)]);
  assert.equal(r.runs[0]!.retval, XDP_REDIRECT, "the flow is finished at XDP");
  const fwd = r.nat6.find((e) => e.key.dir === 0 && e.key.saddr === CLIENT6 && e.key.sport === sport);
  assert.ok(fwd, `IPv6 NAT entry of the flow: ${JSON.stringify(r.nat6)}`);
  return { syn, r, snatPort: fwd.value.port };
}

test("XDP IPv6: a new external flow is DNATed and masqueraded, with exact bytes and checksums (hop limit 63)", () => {
  const { syn, r, snatPort } = openFlow6(41000, { payload: Buffer.from("hello over v6"), flowLabel: 0x12345 });
  assert.ok(snatPort >= 61000 && snatPort <= 65535, `SNAT port ${snatPort} from the configured range`);
  const out = Buffer.from(r.runs[0]!.data, "hex");
  const want = buildFrame6({
    ...syn,
    srcMac: ourMac,
    dstMac: NEXT_HOP_MAC,
    saddr: NODE6,
    daddr: BACKEND6,
    sport: snatPort,
    dport: 8080,
    hopLimit: 63,
  } as Packet6Spec);
  assert.ok(ipv6ChecksumsOk(out, { frame: true }), "TCP checksum over the new pseudo header");
  assert.equal(out.toString("hex"), want.toString("hex"), "exact bytes of the translated SYN");
  assert.ok(
    r.counters.translated_new! >= 1 && r.counters.xdp_tx! + r.counters.xdp_redirect! >= 1,
    JSON.stringify(r.counters),
  );
});

test("XDP IPv6: the backend's reply is restored to the client (frontend as source), and the client's next segment follows the flow, with exact bytes", () => {
  const { snatPort } = openFlow6(41001);
  const synack = {
    proto: "tcp" as const,
    srcMac: NEXT_HOP_MAC,
    dstMac: ourMac,
    saddr: BACKEND6,
    daddr: NODE6,
    sport: 8080,
    dport: snatPort,
    flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
    seq: 100,
    ack: 8,
    hopLimit: 64,
    payload: Buffer.from("reply"),
  };
  const ack = toNode6({
    proto: "tcp",
    saddr: CLIENT6,
    daddr: FRONTEND6,
    sport: 41001,
    dport: 80,
    flags: TCP_FLAGS.ACK,
    seq: 8,
    ack: 101,
    payload: Buffer.from("data"),
  });
  const r = runInNamespace([buildFrame6(synack), buildFrame6(ack)]);
  assert.equal(r.runs[0]!.retval, XDP_REDIRECT, "the reply is finished at XDP");
  const out = Buffer.from(r.runs[0]!.data, "hex");
  const want = buildFrame6({
    ...synack,
    srcMac: ourMac,
    dstMac: ROUTER_MAC,
    saddr: FRONTEND6,
    daddr: CLIENT6,
    sport: 80,
    dport: 41001,
    hopLimit: 63,
  });
  assert.ok(ipv6ChecksumsOk(out, { frame: true }));
  assert.equal(out.toString("hex"), want.toString("hex"), "exact bytes of the restored SYN-ACK");
  assert.equal(r.runs[1]!.retval, XDP_REDIRECT, "the tracked flow's ACK is finished at XDP");
  const out2 = Buffer.from(r.runs[1]!.data, "hex");
  const want2 = buildFrame6({
    ...ack,
    srcMac: ourMac,
    dstMac: NEXT_HOP_MAC,
    saddr: NODE6,
    daddr: BACKEND6,
    sport: snatPort,
    dport: 8080,
    hopLimit: 63,
  } as Packet6Spec);
  assert.equal(
    out2.toString("hex"),
    want2.toString("hex"),
    "exact bytes of the tracked ACK, masqueraded with the flow's port",
  );
});

test("XDP IPv6: UDP is translated with a right checksum; a datagram without one (illegal over IPv6) is left to tc untouched", () => {
  const spec = toNode6({
    proto: "udp",
    saddr: CLIENT6,
    daddr: FRONTEND6,
    sport: 41002,
    dport: 53,
    payload: Buffer.from("query"),
  });
  const zero = buildFrame6({ ...spec, sport: 41003, checksum: "zero" } as Packet6Spec);
  const r = runInNamespace([buildFrame6(spec), zero]);
  assert.equal(r.runs[0]!.retval, XDP_REDIRECT);
  const fwd = r.nat6.find((e) => e.key.dir === 0 && e.key.saddr === CLIENT6 && e.key.sport === 41002);
  assert.ok(fwd);
  const want = buildFrame6({
    ...spec,
    srcMac: ourMac,
    dstMac: NEXT_HOP_MAC,
    saddr: NODE6,
    daddr: BACKEND6,
    sport: fwd.value.port,
    dport: 5353,
    hopLimit: 63,
  } as Packet6Spec);
  assert.equal(r.runs[0]!.data, want.toString("hex"), "exact bytes of the translated datagram");
  assert.equal(r.runs[1]!.retval, XDP_PASS, "no checksum: tc drops it");
  assert.equal(r.runs[1]!.data, zero.toString("hex"), "unchanged");
});

test("XDP IPv6: what XDP cannot finish goes to tc untouched with nothing recorded: a stray ACK, an extension header, hop limit 1, no XDP-capable egress", () => {
  const seg = (sport: number, extra: Partial<Packet6Spec> = {}) =>
    buildFrame6(
      toNode6({
        proto: "tcp",
        saddr: CLIENT6,
        daddr: FRONTEND6,
        sport,
        dport: 80,
        flags: TCP_FLAGS.SYN,
        seq: 7,
        ...extra,
      } as Packet6Spec),
    );
  const frames = [
    seg(41100, { flags: TCP_FLAGS.ACK, ack: 99 }), // tc resets it
    seg(41101, { ext: [{ type: "destination" }] }),
    seg(41102, { hopLimit: 1 }), // the stack answers "time exceeded"
  ];
  const before = runInNamespace([]).counters;
  const r = runInNamespace(frames);
  for (const [i, f] of frames.entries()) {
    assert.equal(r.runs[i]!.retval, XDP_PASS, `frame ${i} goes to tc`);
    assert.equal(r.runs[i]!.data, f.toString("hex"), `frame ${i} unchanged`);
  }
  const noXmit = seg(41103);
  const r2 = runInNamespace([noXmit], false);
  assert.equal(r2.runs[0]!.retval, XDP_PASS, "bpx_xdp_devs_v1 does not list xdp-a: tc delivers");
  assert.equal(r2.runs[0]!.data, noXmit.toString("hex"));
  assert.equal(r2.counters.xdp_pass_no_xmit! - before.xdp_pass_no_xmit!, 1, JSON.stringify(r2.counters));
  const ports = new Set([41100, 41101, 41102, 41103]);
  assert.deepEqual(
    r2.nat6.filter((e) => ports.has(e.key.sport) || ports.has(e.value.port)),
    [],
    "no NAT entry",
  );
  assert.equal(r2.counters.translated_new, before.translated_new, "XDP counted no translation");
  // The same SYN with the device listed is finished at XDP.
  assert.equal(runInNamespace([noXmit]).runs[0]!.retval, XDP_REDIRECT);
});

test("XDP IPv6: a packet whose L4 checksum field is its pseudo-header sum (CHECKSUM_PARTIAL) is passed to tc untouched and counted; with its full checksum it is translated", () => {
  const spec = toNode6({
    proto: "tcp",
    saddr: CLIENT6,
    daddr: FRONTEND6,
    sport: 41200,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 3,
    payload: Buffer.from("partial"),
  });
  const full = buildFrame6(spec);
  const partial = Buffer.from(full);
  const l4 = 14 + 40;
  partial.writeUInt16BE(pseudoHeaderSum6(CLIENT6, FRONTEND6, IPPROTO_TCP, full.length - l4), l4 + 16);
  assert.notEqual(partial.toString("hex"), full.toString("hex"));
  const before = runInNamespace([]).counters;
  const r = runInNamespace([partial, full]);
  assert.equal(r.runs[0]!.retval, XDP_PASS, "CHECKSUM_PARTIAL: tc translates it");
  assert.equal(r.runs[0]!.data, partial.toString("hex"), "unchanged");
  assert.equal(r.counters.xdp_pass_csum_partial! - before.xdp_pass_csum_partial!, 1, JSON.stringify(r.counters));
  assert.equal(r.runs[1]!.retval, XDP_REDIRECT);
  assert.ok(ipv6ChecksumsOk(Buffer.from(r.runs[1]!.data, "hex"), { frame: true }));
});

test("XDP IPv6: a flow without masquerade keeps the client's address; the backend's reply gets the frontend as source, with exact bytes", () => {
  const syn = toNode6({
    proto: "tcp",
    saddr: CLIENT6,
    daddr: FRONTEND6,
    sport: 41300,
    dport: 81,
    flags: TCP_FLAGS.SYN,
    seq: 5,
  });
  const synack: Packet6Spec = {
    proto: "tcp",
    srcMac: NEXT_HOP_MAC,
    dstMac: ourMac,
    saddr: BACKEND6,
    daddr: CLIENT6,
    sport: 8081,
    dport: 41300,
    flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
    seq: 900,
    ack: 6,
    hopLimit: 64,
  };
  const r = runInNamespace([buildFrame6(syn), buildFrame6(synack)]);
  assert.equal(r.runs[0]!.retval, XDP_REDIRECT);
  const want = buildFrame6({
    ...syn,
    srcMac: ourMac,
    dstMac: NEXT_HOP_MAC,
    daddr: BACKEND6,
    dport: 8081,
    hopLimit: 63,
  } as Packet6Spec);
  assert.equal(r.runs[0]!.data, want.toString("hex"), "exact bytes of the DNATed SYN, source kept");
  assert.deepEqual(
    r.nat6.filter((e) => e.key.sport === 41300 || e.key.dport === 41300),
    [],
    "no NAT entry",
  );
  assert.equal(r.runs[1]!.retval, XDP_REDIRECT, "the reply is finished at XDP");
  const out = Buffer.from(r.runs[1]!.data, "hex");
  const wantReply = buildFrame6({
    ...synack,
    srcMac: ourMac,
    dstMac: ROUTER_MAC,
    saddr: FRONTEND6,
    sport: 81,
    hopLimit: 63,
  });
  assert.ok(ipv6ChecksumsOk(out, { frame: true }));
  assert.equal(out.toString("hex"), wantReply.toString("hex"), "exact bytes of the restored SYN-ACK");
});
