// Packet tests of the IPv6 path's delivery at tc (bpf/lib/fib6.h), with exact output bytes. BPF_PROG_TEST_RUN
// runs in a network namespace this test makes (via test/fixtures/tc6-netns-run.ts), on its device tc6-a, whose
// routes and permanent neighbours let the FIB lookup answer as on a node. With bypassNetfilter a packet the
// lookup can send is translated completely at tc ingress (DNAT, masquerade, or a reply's client and frontend),
// its hop limit decremented like a router's, and redirected (TC_ACT_REDIRECT, bpf_redirect_neigh); where IPv4
// falls back to the stack (hop limit 1, no route, too big for the device) the packet goes up the stack as in
// the default mode, with only the ingress half of the translation (the stack answers time exceeded or packet
// too big). Expected frames are built from scratch by test/fixtures/packets6.ts. Needs root; the namespace and
// the bpffs are removed after, also on failure.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { TCP_FLAGS } from "./fixtures/packets.js";
import { buildFrame6, ipv6ChecksumsOk } from "./fixtures/packets6.js";

const NS = `bpxtc6${process.pid}`;
const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;
const TRANSLATED_MARK = 0x4000; // tc6-netns-run.ts's in bypass
const NODE = "2001:db8::a";
const NODE_B = "2001:db8::b"; // routes the backend's pod range
const ROUTER = "2001:db8::1"; // towards the clients
const CLIENT = "2001:db8:ff::7";
const BACKEND = "fd00:10:244:2::16";
const LOCAL_FE = "2001:db8:e::1"; // Local policy: the client kept
const UNROUTED_FE = "2001:db8:e::2"; // its backend fd00:99::5 has no route here
const SNAT_PORT = 32000;

const ip = (...args: string[]) => execFileSync("ip", ["-n", NS, ...args], { timeout: 10_000 });
let nsMade = false;

before(() => {
  assert.equal(
    process.getuid?.(),
    0,
    "test/datapath6-fib.test.ts loads BPF and makes a network namespace: run it as root",
  );
  execFileSync("ip", ["netns", "add", NS], { timeout: 10_000 });
  nsMade = true;
  execFileSync("ip", ["netns", "exec", NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"], {
    timeout: 10_000,
  });
  ip("link", "set", "lo", "up");
  ip("link", "add", "tc6-a", "type", "veth", "peer", "name", "tc6-b");
  ip("link", "set", "tc6-a", "mtu", "1400"); // the too-big case; every other frame is small
  ip("addr", "add", `${NODE}/64`, "dev", "tc6-a", "nodad");
  ip("link", "set", "tc6-a", "up");
  ip("link", "set", "tc6-b", "up");
  ip("-6", "neigh", "add", NODE_B, "lladdr", "02:00:00:00:00:12", "dev", "tc6-a", "nud", "permanent");
  ip("-6", "neigh", "add", ROUTER, "lladdr", "02:00:00:00:00:01", "dev", "tc6-a", "nud", "permanent");
  ip("-6", "route", "add", "fd00:10:244:2::/64", "via", NODE_B, "dev", "tc6-a");
  ip("-6", "route", "add", "2001:db8:ff::/64", "via", ROUTER, "dev", "tc6-a");
});

let bpffs: PrivateBpffs | undefined;
after(() => {
  bpffs?.release();
  if (nsMade) execFileSync("ip", ["netns", "del", NS], { timeout: 10_000 });
});

interface Run {
  retval: number;
  data: string;
  mark: number;
}

/** Runs the frames in order through bpx_from_device on tc6-a, in a fresh bpffs (fresh maps) per call. */
function runInNamespace(mode: "bypass" | "stack", frames: Buffer[]): { runs: Run[]; counters: Record<string, number> } {
  bpffs?.release();
  bpffs = PrivateBpffs.create(`tc6${mode}`);
  const out = execFileSync(
    "ip",
    [
      "netns",
      "exec",
      NS,
      process.execPath,
      "--import",
      "tsx",
      "test/fixtures/tc6-netns-run.ts",
      bpffs.path,
      JSON.stringify(frames.map((f) => f.toString("hex"))),
      mode,
    ],
    { encoding: "utf8", timeout: 30_000 },
  );
  return JSON.parse(out) as { runs: Run[]; counters: Record<string, number> };
}

const tcp = (
  saddr: string,
  sport: number,
  daddr: string,
  dport: number,
  flags: number,
  seq: number,
  ack = 0,
  hopLimit = 64,
  payload?: Buffer,
) =>
  buildFrame6({ proto: "tcp", saddr, daddr, sport, dport, flags, seq, ack, hopLimit, ...(payload ? { payload } : {}) });
const SA = TCP_FLAGS.SYN | TCP_FLAGS.ACK;

function assertRun(run: Run, verdict: number, want: Buffer, what: string): void {
  const got = Buffer.from(run.data, "hex");
  assert.equal(run.retval, verdict, `${what}: verdict`);
  assert.ok(ipv6ChecksumsOk(got, { frame: true }), `${what}: the output's checksums are right`);
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: packet bytes`);
}

test("bypass: a masqueraded NodePort flow is translated completely at tc ingress both ways, hop limit decremented, redirected and marked", () => {
  const { runs, counters } = runInNamespace("bypass", [
    tcp(CLIENT, 50000, NODE, 30080, TCP_FLAGS.SYN, 1),
    tcp(BACKEND, 8080, NODE, SNAT_PORT, SA, 9, 2),
    tcp(CLIENT, 50000, NODE, 30080, TCP_FLAGS.ACK, 2, 10),
  ]);
  assertRun(runs[0]!, TC_ACT_REDIRECT, tcp(NODE, SNAT_PORT, BACKEND, 8080, TCP_FLAGS.SYN, 1, 0, 63), "new flow");
  assertRun(runs[1]!, TC_ACT_REDIRECT, tcp(NODE, 30080, CLIENT, 50000, SA, 9, 2, 63), "the backend's reply");
  assertRun(runs[2]!, TC_ACT_REDIRECT, tcp(NODE, SNAT_PORT, BACKEND, 8080, TCP_FLAGS.ACK, 2, 10, 63), "tracked");
  for (const r of runs) assert.equal(r.mark & TRANSLATED_MARK, TRANSLATED_MARK, "tc egress skips it by the mark");
  assert.deepEqual(counters, { translated_new: 1, reverse_translated: 1, translated_established: 1 });
});

test("bypass: a flow that keeps the client's address (Local) and its reply, redirected with the frontend restored", () => {
  const { runs, counters } = runInNamespace("bypass", [
    tcp(CLIENT, 50001, LOCAL_FE, 80, TCP_FLAGS.SYN, 1),
    tcp(BACKEND, 8080, CLIENT, 50001, SA, 9, 2),
  ]);
  assertRun(runs[0]!, TC_ACT_REDIRECT, tcp(CLIENT, 50001, BACKEND, 8080, TCP_FLAGS.SYN, 1, 0, 63), "new flow");
  assertRun(runs[1]!, TC_ACT_REDIRECT, tcp(LOCAL_FE, 80, CLIENT, 50001, SA, 9, 2, 63), "reply");
  assert.deepEqual(counters, { translated_new: 1, reverse_translated: 1 });
});

test("bypass falls back to the stack where IPv4 does: hop limit 1, no route, too big for the device; only the ingress half is written", () => {
  const big = Buffer.alloc(1400, 0x61); // 14 + 40 + 20 + 1400 bytes: past tc6-a's MTU of 1400
  const { runs, counters } = runInNamespace("bypass", [
    tcp(CLIENT, 50002, NODE, 30080, TCP_FLAGS.SYN, 1),
    // Hop limit 1 both ways: the stack answers "time exceeded" (RFC 4443 3.3) about it, nothing decremented.
    tcp(CLIENT, 50002, NODE, 30080, TCP_FLAGS.ACK, 2, 10, 1),
    tcp(BACKEND, 8080, NODE, SNAT_PORT, TCP_FLAGS.ACK, 10, 2, 1),
    // Too big for the egress device: the stack answers "packet too big" (RFC 4443 3.2).
    tcp(CLIENT, 50002, NODE, 30080, TCP_FLAGS.ACK, 2, 10, 64, big),
    // No route to the backend: the stack answers (unreachable).
    tcp(CLIENT, 50003, UNROUTED_FE, 80, TCP_FLAGS.SYN, 1),
  ]);
  assert.equal(runs[0]!.retval, TC_ACT_REDIRECT);
  // The stack path: DNAT only (tc egress masquerades), the reply's client restored only (egress restores the
  // frontend), unmarked.
  assertRun(runs[1]!, TC_ACT_OK, tcp(CLIENT, 50002, BACKEND, 8080, TCP_FLAGS.ACK, 2, 10, 1), "hop limit 1");
  assertRun(runs[2]!, TC_ACT_OK, tcp(BACKEND, 8080, CLIENT, 50002, TCP_FLAGS.ACK, 10, 2, 1), "reply, hop limit 1");
  assertRun(runs[3]!, TC_ACT_OK, tcp(CLIENT, 50002, BACKEND, 8080, TCP_FLAGS.ACK, 2, 10, 64, big), "too big");
  assertRun(runs[4]!, TC_ACT_OK, tcp(CLIENT, 50003, "fd00:99::5", 8080, TCP_FLAGS.SYN, 1), "no route");
  for (const r of runs.slice(1)) assert.equal(r.mark, 0, "not marked: tc egress finishes it");
  assert.deepEqual(counters, { translated_new: 2, translated_established: 2 });
});

test("without bypass (the default) the same flow goes up the stack: DNAT only at ingress, the reply's client restored, hop limit untouched", () => {
  const { runs, counters } = runInNamespace("stack", [
    tcp(CLIENT, 50000, NODE, 30080, TCP_FLAGS.SYN, 1),
    tcp(BACKEND, 8080, NODE, SNAT_PORT, SA, 9, 2),
    tcp(CLIENT, 50001, LOCAL_FE, 80, TCP_FLAGS.SYN, 1),
    tcp(BACKEND, 8080, CLIENT, 50001, SA, 9, 2),
  ]);
  assertRun(runs[0]!, TC_ACT_OK, tcp(CLIENT, 50000, BACKEND, 8080, TCP_FLAGS.SYN, 1), "new flow");
  assertRun(runs[1]!, TC_ACT_OK, tcp(BACKEND, 8080, CLIENT, 50000, SA, 9, 2), "masqueraded reply");
  assertRun(runs[2]!, TC_ACT_OK, tcp(CLIENT, 50001, BACKEND, 8080, TCP_FLAGS.SYN, 1), "Local flow");
  assertRun(runs[3]!, TC_ACT_OK, tcp(BACKEND, 8080, CLIENT, 50001, SA, 9, 2), "its reply, untouched at ingress");
  for (const r of runs) assert.equal(r.mark, 0);
  // Replies are counted at tc egress (not run here).
  assert.deepEqual(counters, { translated_new: 2 });
});
