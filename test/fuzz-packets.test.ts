// Packet fuzzing of the real tc programs (bpf/bpfproxy.o) through BPF_PROG_TEST_RUN, with fast-check:
// well-formed TCP/UDP/ICMP frames towards and from a ClusterIP and masqueraded NodePorts (SNAT to the node
// from a 4-port range, and backends' replies to those ports) with random fields, then truncated or with
// bytes overwritten, and frames of random bytes. Whatever comes in: the run succeeds with a tc verdict
// the program is meant to give, a frame it rewrites or answers with never carries a bad checksum that the
// input did not already have, and every dropped frame is counted under a drop reason.
// Needs root (BPF + a private bpffs, removed after).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { buildPacket, parsePacket, TCP_FLAGS, IP_MF, type PacketSpec } from "./fixtures/packets.js";
import { checksums } from "./fixtures/checksums.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const VIP = "10.96.0.10";
const CLIENT = "10.244.1.10";
const BE1 = "10.244.2.21";
const BE2 = "10.244.2.22";
const OUTSIDE = "198.51.100.10";
// NodePorts on this node's address, masqueraded to it (SNAT) from a small port range, so that fuzzed replies
// to the node often hit a live SNAT entry.
const NODE = "192.0.2.11";
const SNAT_MIN = 61000;
const SNAT_MAX = 61003;
const SNAT_PORTS = [61000, 61001, 61002, 61003];
type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let obj: BpfObject | undefined;

before(() => {
  assert.equal(process.getuid?.(), 0, "loads BPF programs and mounts a private bpffs: run as root");
  bpffs = PrivateBpffs.create("fuzz-packets");
  obj = new BpfObject("bpf/bpfproxy.o", { pinRoot: bpffs.path });
  obj.load();
  const m = (n: string) => obj!.map(n);
  m(abi.MAP_NAMES.config).update(
    abi.u32Key.encode(0),
    abi.config.encode({ flags: 0, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-fuzz" }),
  );
  // A TCP and a UDP frontend with two backends, and an empty one (rejects).
  const svc = (port: number, proto: number, revNatId: number, backends: Array<[number, string, number]>) => {
    for (const [id, address, bport] of backends)
      m(abi.MAP_NAMES.backends).update(
        abi.u32Key.encode(id),
        abi.backend.encode({ address, port: bport, proto, flags: 0 }),
      );
    m(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(revNatId), abi.revNat.encode({ address: VIP, port }));
    const key = (slot: number) => abi.svcKey.encode({ address: VIP, port, proto, scope: abi.SCOPE_INTERNAL, slot });
    backends.forEach(([id], i) =>
      m(abi.MAP_NAMES.services).update(
        key(i + 1),
        abi.svcValue.encode({ backendId: id, count: 0, revNatId, flags: 0, affinityTimeout: 0 }),
      ),
    );
    m(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({ backendId: 0, count: backends.length, revNatId, flags: 0, affinityTimeout: 0 }),
    );
  };
  svc(80, abi.IPPROTO_TCP, 1, [
    [1, BE1, 8080],
    [2, BE2, 8080],
  ]);
  svc(53, abi.IPPROTO_UDP, 2, [
    [3, BE1, 5353],
    [4, BE2, 5353],
  ]);
  svc(81, abi.IPPROTO_TCP, 3, []);
  // NodePort/SNAT: a TCP and a UDP NodePort (wildcard entries, external scope, masqueraded) on NODE.
  m(abi.MAP_NAMES.natConfig).update(
    abi.u32Key.encode(0),
    abi.natConfig.encode({ masqAddr: NODE, portMin: SNAT_MIN, portMax: SNAT_MAX, flags: 0 }),
  );
  m(abi.MAP_NAMES.nodePortAddrs).update(
    abi.be32AddrKey.encode({ address: NODE }),
    abi.nodePortAddr.encode({ flags: abi.NODEPORT_ADDR_F_SERVE | abi.NODEPORT_ADDR_F_LOCAL }),
  );
  const nodePort = (port: number, proto: number, revNatId: number, backends: Array<[number, string, number]>) => {
    for (const [id, address, bport] of backends)
      m(abi.MAP_NAMES.backends).update(
        abi.u32Key.encode(id),
        abi.backend.encode({ address, port: bport, proto, flags: 0 }),
      );
    m(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(revNatId), abi.revNat.encode({ address: NODE, port }));
    const key = (slot: number) =>
      abi.svcKey.encode({ address: abi.WILDCARD_ADDRESS, port, proto, scope: abi.SCOPE_EXTERNAL, slot });
    backends.forEach(([id], i) =>
      m(abi.MAP_NAMES.services).update(
        key(i + 1),
        abi.svcValue.encode({ backendId: id, count: 0, revNatId, flags: 0, affinityTimeout: 0 }),
      ),
    );
    m(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({
        backendId: 0,
        count: backends.length,
        revNatId,
        flags: abi.SVC_F_MASQUERADE,
        affinityTimeout: 0,
      }),
    );
  };
  nodePort(30080, abi.IPPROTO_TCP, 4, [
    [5, BE1, 8080],
    [6, BE2, 8080],
  ]);
  nodePort(30053, abi.IPPROTO_UDP, 5, [
    [7, BE1, 5353],
    [8, BE2, 5353],
  ]);
});

after(() => {
  obj?.close();
  bpffs?.release();
});

function counters(): Record<Reason, number> {
  const map = obj!.map(abi.MAP_NAMES.counters);
  const cpus = possibleCpus();
  const stride = map.valueSizeAll / cpus;
  const out = {} as Record<Reason, number>;
  for (const [name, slot] of Object.entries(abi.COUNTER_REASONS) as [Reason, number][]) {
    const v = map.lookup(abi.u32Key.encode(slot));
    let n = 0n;
    for (let cpu = 0; v && cpu < cpus; cpu++) n += abi.counter.decode(v, cpu * stride).packets;
    out[name] = Number(n);
  }
  return out;
}

/** Empties the NAT and conntrack tables. */
function forgetFlows(): void {
  for (const name of [abi.MAP_NAMES.nat, abi.MAP_NAMES.conntrack]) {
    const map = obj!.map(name);
    const e = map.entries();
    if (e.count > 0) map.deleteBatch(e.keys, e.count);
  }
}

// Biased towards the frontends, their backends and one client port, so that many frames hit a service,
// a tracked flow or its replies; the rest is anything.
const addr = fc.oneof(
  // NODE only as a destination (daddr below): frames spoofing the node's own SNAT ports cross NodePort flows
  // today (issue 16 item 5: seed 16 gave a NodePort datagram the SNAT port of a forged NODE:61000 → VIP:53
  // flow, so its reply went to the wrong place); the NAT owner checks are another change's.
  { weight: 8, arbitrary: fc.constantFrom(VIP, CLIENT, BE1, BE2, OUTSIDE) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join(".")) },
);
const daddr = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(VIP, NODE) }, { weight: 2, arbitrary: addr });
const port = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(80, 81, 53, 8080, 5353, 40000, 30080, 30053, ...SNAT_PORTS) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 65535 }) },
);
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const padded = (max: number) =>
  fc
    .integer({ min: 0, max: max / 4 })
    .chain((n) => fc.uint8Array({ minLength: n * 4, maxLength: n * 4 }))
    .map((a) => Buffer.from(a));
const ipFields = fc.record({
  saddr: addr,
  daddr,
  ttl: fc.integer({ min: 0, max: 255 }),
  id: fc.nat(65535),
  fragFlags: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(0, 0x4000) },
    { weight: 1, arbitrary: fc.constant(IP_MF) },
  ),
  fragOffset: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(8191) }),
  ipOptions: fc.oneof({ weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: padded(40) }),
});
const spec: fc.Arbitrary<PacketSpec> = fc.oneof(
  fc
    .tuple(ipFields, port, port, fc.nat(255), padded(40), bytes(64))
    .map(([ip, sport, dport, flags, tcpOptions, payload]): PacketSpec => ({
      ...ip,
      proto: "tcp",
      sport,
      dport,
      flags: flags || TCP_FLAGS.SYN,
      tcpOptions,
      payload,
    })),
  fc
    .tuple(ipFields, port, port, bytes(64), fc.constantFrom<"compute" | "zero">("compute", "zero"))
    .map(([ip, sport, dport, payload, checksum]): PacketSpec => ({
      ...ip,
      proto: "udp",
      sport,
      dport,
      payload,
      checksum,
    })),
  fc
    .tuple(ipFields, fc.nat(255), fc.nat(255), bytes(64))
    .map(([ip, type, code, body]): PacketSpec => ({ ...ip, proto: "icmp", type, code, body })),
);
/** A well-formed frame, then maybe truncated and/or with some bytes overwritten. */
const frame = fc.oneof(
  { weight: 3, arbitrary: spec.map((s) => buildPacket(s)) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(spec, fc.nat(), fc.boolean(), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }))
      .map(([s, cut, keepIp, pokes]) => {
        const f = Buffer.from(buildPacket(s));
        for (const [at, v] of pokes) f[at % f.length] = v;
        // Mostly cut inside the L4 header or payload; sometimes inside the IP header (the kernel refuses those).
        const min = keepIp ? 34 : 14;
        return f.subarray(0, min + (cut % (f.length - min + 1)));
      }),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.uint8Array({ minLength: 20, maxLength: 120 }), fc.boolean()).map(([rest, ipv4]) => {
      const f = Buffer.concat([Buffer.alloc(14), Buffer.from(rest)]);
      if (ipv4) f.writeUInt16BE(0x0800, 12);
      if (ipv4 && f.length > 14) f[14] = 0x40 | (f[14]! & 0x0f);
      return f;
    }),
  },
);

const DROP_REASONS = (Object.keys(abi.COUNTER_REASONS) as Reason[]).filter((r) => r.startsWith("drop_"));

test(
  "random, truncated and corrupted frames: no failure, no checksum made bad, every drop counted by reason",
  { timeout: 120_000 },
  async () => {
    const totals = {
      runs: 0,
      verdicts: {} as Record<string, number>,
      counted: {} as Record<string, number>,
      rewritten: 0,
      answered: 0,
      refusedByKernel: 0,
      masqueraded: 0,
      snatReplies: 0,
    };
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(frame, fc.constantFrom("bpx_from_pod", "bpx_from_device"), async (input, program) => {
        // Four SNAT ports fill up fast: every 300 frames the flows are forgotten (as GC would), so NodePort
        // flows keep being masqueraded and their replies keep finding live entries.
        if (totals.runs % 300 === 299) forgetFlows();
        const before = counters();
        if (input.readUInt16BE(12) === 0x0800 && input.length < 34) {
          // BPF_PROG_TEST_RUN refuses an IPv4 frame shorter than an IP header (EINVAL): no skb to run on.
          await assert.rejects(obj!.program(program).testRun({ data: input }), /EINVAL/);
          totals.refusedByKernel++;
          return;
        }
        // Then tc egress, as on the default (stack) path, which finishes the NAT there (bpf/lib/fib.h).
        const r = await runThroughStack(obj!, program, input);
        const after = counters();
        totals.runs++;
        totals.verdicts[r.retval] = (totals.verdicts[r.retval] ?? 0) + 1;
        assert.ok([TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].includes(r.retval), `verdict ${r.retval}`);
        const delta = Object.fromEntries(
          (Object.keys(after) as Reason[]).map((k) => [k, after[k] - before[k]]).filter(([, d]) => d !== 0),
        ) as Record<string, number>;
        for (const [k, d] of Object.entries(delta)) totals.counted[k] = (totals.counted[k] ?? 0) + d;
        const dropped = DROP_REASONS.reduce((n, k) => n + (delta[k] ?? 0), 0);
        if (r.retval === TC_ACT_SHOT)
          assert.ok(
            dropped >= 1 || (delta.reject_no_backend ?? 0) >= 1 || (delta.reject_no_conntrack ?? 0) >= 1,
            `a dropped frame was not counted: ${JSON.stringify(delta)}`,
          );
        else assert.equal(dropped, 0, `a frame passed but was counted as dropped: ${JSON.stringify(delta)}`);
        if (r.retval === TC_ACT_SHOT || r.data.equals(input)) return;
        const inSum = checksums(input);
        const outSum = checksums(r.data);
        if (r.retval === TC_ACT_REDIRECT) {
          // An answer the program built (TCP RST, ICMP port unreachable): its checksums must be right.
          totals.answered++;
          assert.equal(outSum.ip, "ok", `answer IP checksum: ${r.data.toString("hex")}`);
          assert.ok(outSum.l4 === "ok", `answer L4 checksum ${outSum.l4}: ${r.data.toString("hex")}`);
          return;
        }
        totals.rewritten++;
        const parsed = (f: Buffer) => {
          try {
            return parsePacket(f);
          } catch {
            return undefined;
          }
        };
        const pin = parsed(input);
        const pout = parsed(r.data);
        // A NodePort flow (unfragmented) masqueraded to the node: the backend answers at once (addresses and ports swapped,
        // which keeps every checksum valid), arriving from the network. The answer must go back to the
        // client from the NodePort, with good checksums.
        const inDport = pin?.tcp?.dport ?? pin?.udp?.dport;
        if (
          pout?.ip?.saddr === NODE &&
          pin?.ip?.daddr === NODE &&
          pin.ip.saddr !== NODE &&
          (inDport === 30080 || inDport === 30053) &&
          !(pin.ip.fragFlags & IP_MF) &&
          pin.ip.fragOffset === 0 &&
          (pout.tcp || pout.udp)
        ) {
          totals.masqueraded++;
          const ihl = (r.data[14]! & 0x0f) * 4;
          const reply = Buffer.from(r.data);
          r.data.copy(reply, 26, 30, 34);
          r.data.copy(reply, 30, 26, 30);
          r.data.copy(reply, 14 + ihl, 16 + ihl, 18 + ihl);
          r.data.copy(reply, 16 + ihl, 14 + ihl, 16 + ihl);
          const rb = counters();
          const rr = await runThroughStack(obj!, "bpx_from_device", reply); // the stack path finishes NAT at egress
          const ra = counters();
          for (const k of Object.keys(ra) as Reason[])
            if (ra[k] !== rb[k]) totals.counted[k] = (totals.counted[k] ?? 0) + ra[k] - rb[k];
          const back = parsed(rr.data);
          assert.ok([TC_ACT_OK, TC_ACT_REDIRECT].includes(rr.retval), `reply verdict ${rr.retval}`);
          assert.equal(back?.ip?.daddr, pin.ip.saddr, `reply to the client: ${rr.data.toString("hex")}`);
          assert.equal(back?.ip?.saddr, NODE, `reply from the node: ${rr.data.toString("hex")}`);
          assert.equal(back?.tcp?.sport ?? back?.udp?.sport, pin.tcp?.dport ?? pin.udp?.dport, "from the NodePort");
          totals.snatReplies++;
          // Checksums the answer came with (a poked input may carry bad ones through) are never made bad.
          const sums = checksums(rr.data);
          const had = checksums(reply);
          if (had.ip === "ok") assert.equal(sums.ip, "ok", `reply IP checksum: ${rr.data.toString("hex")}`);
          if (had.l4 === "ok") assert.equal(sums.l4, "ok", `reply L4 checksum: ${rr.data.toString("hex")}`);
        }
        if (inSum.ip === "ok")
          assert.equal(
            outSum.ip,
            "ok",
            `IP checksum made bad: in ${input.toString("hex")} out ${r.data.toString("hex")}`,
          );
        if (inSum.l4 === "ok")
          assert.equal(
            outSum.l4,
            "ok",
            `L4 checksum made bad: in ${input.toString("hex")} out ${r.data.toString("hex")}`,
          );
        if (inSum.l4 === "none") assert.ok(outSum.l4 === "none", "a UDP datagram without checksum keeps none");
      }),
      { numRuns: 20_000, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31), endOnFailure: true },
    );
    console.log(`# figures fuzz-packets: ${JSON.stringify({ ...totals, ms: Date.now() - started })}`);
    // The generators must reach every interesting outcome, or the properties above prove little. (Malformed
    // frames not bound to a frontend pass untouched for the kernel's own checks, uncounted, by design.)
    assert.ok(totals.rewritten > 100, `only ${totals.rewritten} rewritten frames`);
    assert.ok(totals.answered > 20, `only ${totals.answered} answers`);
    assert.ok((totals.verdicts[TC_ACT_SHOT] ?? 0) > 10, `only ${totals.verdicts[TC_ACT_SHOT] ?? 0} drops`);
    for (const r of ["translated_new", "reverse_translated", "reject_no_backend"])
      assert.ok((totals.counted[r] ?? 0) > 0, `${r} never reached`);
    assert.ok(totals.masqueraded > 20, `only ${totals.masqueraded} NodePort frames masqueraded to the node`);
    assert.ok(totals.snatReplies > 5, `only ${totals.snatReplies} replies to a SNAT port translated back`);
  },
);
