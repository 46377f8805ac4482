// Packet tests of bpx_xdp's translations with exact output bytes. BPF_PROG_TEST_RUN runs in a network
// namespace this test makes (via test/fixtures/xdp-netns-run.ts), whose routes and permanent neighbours let
// the program's FIB lookup succeed as on a node: a new external flow is DNATed to a remote backend and
// masqueraded to the node with an allocated SNAT port, and the backend's reply is restored to the client.
// Expected frames are built from scratch by test/fixtures/packets.ts, checksums computed independently.
// Needs root. The namespace and the bpffs are removed after, also on failure.
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

const NS = `bpxxdp${process.pid}`;
const XDP_REDIRECT = 4;
const NODE = "192.0.2.11";
const NEXT_HOP_MAC = "02:00:00:00:00:12"; // node-b, which routes the backend's pod range
const ROUTER_MAC = "02:00:00:00:00:01"; // the router towards the clients
const CLIENT = "198.51.100.10";
const FRONTEND = "203.0.113.30";
const BACKEND = "10.244.2.5";
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

function runInNamespace(
  frames: Buffer[],
  xdpDevs = true,
): { runs: Run[]; nat: NatRow[]; counters: Record<string, number> } {
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
  return JSON.parse(out) as { runs: Run[]; nat: NatRow[]; counters: Record<string, number> };
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
