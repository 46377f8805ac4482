// Checksum fuzz of the IPv6 tc path: random TCP/UDP flows to IPv6 frontends (ClusterIP from a pod, a pod
// reaching itself through its Service (masqueraded to the node address), NodePort with externalTrafficPolicy
// Cluster (masqueraded) and an externalIP with Local (not)), each a new packet, tracked packets and replies,
// with random payload sizes, TCP options and extension header chains (hop-by-hop, destination options, a
// routing header with no segments left, and a Fragment header: the datagram cut into fragments, all sent).
// Every packet goes through bpx_from_pod or bpx_from_device (tail-called to the IPv6 program) and then
// bpx_reverse, as through a node. Each output must be byte for byte the packet built independently by
// test/fixtures/packets6.ts with the translated addresses and ports (so its upper-layer checksum is the one
// RFC 8200 8.1 gives), and its checksum is checked on its own too (fragments: the reassembled datagram's).
// Seeded: the seed is printed, FUZZ_SEED replays it, FUZZ_FLOWS sets the number of flows. Needs root.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Frontend } from "../src/model/types.js";
import { Datapath6, TC_ACT_OK, type EntryProgram, type Reason } from "./fixtures/datapath6-run.js";
import { ETH_HLEN, TCP_FLAGS, onesComplementSum } from "./fixtures/packets.js";
import {
  IPV6_HLEN,
  NEXTHDR_FRAGMENT,
  buildIpv6,
  ethernet6,
  fragmentIpv6,
  ipv6ChecksumsOk,
  pseudoHeaderSum6,
  walkHeaders,
  type ExtHeader,
  type Packet6Spec,
} from "./fixtures/packets6.js";

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const FLOWS = Number(process.env.FUZZ_FLOWS ?? 8000);

/** mulberry32: small, seedable, good enough to pick cases. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return {
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(0, 255))),
  };
}
type Rng = ReturnType<typeof prng>;

const NODE6 = "2001:db8::a";
const VIP = "fd00:96::50";
const VIP_SELF = "fd00:96::51";
const EIP = "2001:db8:e::1";
const POD = "fd00:10:244:1::a";
const SELF_POD = "fd00:10:244:1::b";
const EXT = "2001:db8:ff::7";
const BACKENDS = ["fd00:10:244:2::15", "fd00:10:244:3::16", "fd00:10:244:4::17"];
const MASQ_PORTS = { min: 40000, max: 59999 };

type Proto = "TCP" | "UDP";
type Kind = "clusterip" | "hairpin" | "nodeport-cluster" | "externalip-local";

interface Service {
  kind: Kind;
  fe: Frontend;
  /** Where clients send from and which entry program sees them. */
  clients: { address: string; program: EntryProgram }[];
  /** Where a backend's reply enters. */
  replyProgram: EntryProgram;
  masquerade: boolean;
}

function frontend(kind: Kind, proto: Proto, address: string, port: number, backends: string[]): Frontend {
  return {
    service: `default/fuzz6-${kind}`,
    portName: proto.toLowerCase(),
    type:
      kind === "clusterip" || kind === "hairpin"
        ? "ClusterIP"
        : kind === "nodeport-cluster"
          ? "NodePort"
          : "ExternalIP",
    address,
    port,
    protocol: proto,
    scope: kind === "clusterip" || kind === "hairpin" ? "internal" : "external",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: backends.map((a, i) => ({ address: a, port: 8080 + i, state: "active", nodeLocal: false })),
  };
}

function services(): Service[] {
  const out: Service[] = [];
  for (const proto of ["TCP", "UDP"] as const) {
    out.push(
      {
        kind: "clusterip",
        fe: frontend("clusterip", proto, VIP, proto === "TCP" ? 80 : 53, BACKENDS),
        // A pod, or a client beyond the node's device (DNAT only, as kube-proxy without masqueradeAll).
        clients: [
          { address: POD, program: "bpx_from_pod" },
          { address: EXT, program: "bpx_from_device" },
        ],
        replyProgram: "bpx_from_pod",
        masquerade: false,
      },
      {
        kind: "hairpin",
        fe: frontend("hairpin", proto, VIP_SELF, 81, [SELF_POD]),
        clients: [{ address: SELF_POD, program: "bpx_from_pod" }],
        replyProgram: "bpx_from_pod",
        masquerade: true,
      },
      {
        kind: "nodeport-cluster",
        fe: frontend("nodeport-cluster", proto, NODE6, 30080, BACKENDS.slice(0, 2)),
        clients: [{ address: EXT, program: "bpx_from_device" }],
        // The backend is elsewhere: its answer comes back through the device to the masquerade address.
        replyProgram: "bpx_from_device",
        masquerade: true,
      },
      {
        kind: "externalip-local",
        fe: frontend("externalip-local", proto, EIP, 443, BACKENDS.slice(1)),
        clients: [{ address: EXT, program: "bpx_from_device" }],
        replyProgram: "bpx_from_pod",
        masquerade: false,
      },
    );
  }
  return out;
}

/** Random TCP options (RFC 9293 3.2, RFC 7323, RFC 2018), padded to 4 bytes with NOPs then EOL. */
function tcpOptions(rng: Rng, syn: boolean): Buffer | undefined {
  if (rng.chance(0.25)) return undefined;
  const parts: Buffer[] = [];
  let len = 0;
  for (let n = rng.int(1, 6); n > 0; n--) {
    const kind = rng.pick(syn ? ["mss", "sackok", "ws", "ts", "nop"] : ["ts", "sack", "nop", "unknown"]);
    let o: Buffer;
    if (kind === "mss") o = Buffer.from([2, 4, rng.int(0, 255), rng.int(0, 255)]);
    else if (kind === "sackok") o = Buffer.from([4, 2]);
    else if (kind === "ws") o = Buffer.from([3, 3, rng.int(0, 14)]);
    else if (kind === "ts") o = Buffer.concat([Buffer.from([8, 10]), rng.bytes(8)]);
    else if (kind === "sack") {
      const blocks = rng.int(1, 3);
      o = Buffer.concat([Buffer.from([5, 2 + 8 * blocks]), rng.bytes(8 * blocks)]);
    } else if (kind === "unknown") {
      const d = rng.int(0, 6);
      o = Buffer.concat([Buffer.from([rng.int(30, 253), 2 + d]), rng.bytes(d)]);
    } else o = Buffer.from([1]);
    if (len + o.length > 40) break;
    parts.push(o);
    len += o.length;
  }
  const pad = (4 - (len % 4)) % 4;
  if (pad > 0) parts.push(Buffer.from([...Array<number>(pad - 1).fill(1), 0]));
  return Buffer.concat(parts);
}

/** TLV options for hop-by-hop or destination options (skippable types: high bits 00, RFC 8200 4.2). */
function tlvOptions(rng: Rng): Buffer {
  const parts: Buffer[] = [];
  for (let n = rng.int(0, 3); n > 0; n--) {
    if (rng.chance(0.3))
      parts.push(Buffer.from([5, 2, rng.int(0, 255), rng.int(0, 255)])); // router alert
    else {
      const d = rng.int(0, 20);
      // Experimental types (RFC 4727), skipped by a node that does not know them.
      parts.push(Buffer.concat([Buffer.from([rng.pick([0x1e, 0x3e]), d]), rng.bytes(d)]));
    }
  }
  return Buffer.concat(parts);
}

/**
 * A chain in RFC 8200 4.1's order, at most the data plane's 5 (BPX_IP6_MAX_EXT): hop-by-hop, destination
 * options, a routing header with no segments left (its checksum destination is the IPv6 header's), and a
 * destination options header for the final destination. A Fragment header is added by cutting the packet.
 */
function extChain(rng: Rng, daddr: string): ExtHeader[] {
  const ext: ExtHeader[] = [];
  if (rng.chance(0.3)) ext.push({ type: "hop-by-hop", options: tlvOptions(rng) });
  if (rng.chance(0.2)) ext.push({ type: "destination", options: tlvOptions(rng) });
  if (rng.chance(0.25)) {
    const routingType = rng.pick([0, 2, 4] as const);
    const n = routingType === 2 ? 1 : rng.int(1, 3);
    const addresses = Array.from({ length: n }, (_, i) =>
      i === 0 ? daddr : `fd00:5e9::${rng.int(1, 0xffff).toString(16)}`,
    );
    ext.push({ type: "routing", routingType, segmentsLeft: 0, addresses });
  }
  if (rng.chance(0.2)) ext.push({ type: "destination", options: tlvOptions(rng) });
  return ext;
}

interface Tuple {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

/** One packet: its L4 fields (addresses and ports come from a tuple), its chain and how it is cut. */
interface Shape {
  proto: "tcp" | "udp";
  flags: number;
  seq: number;
  ack: number;
  window: number;
  tcpOptions?: Buffer;
  payload: Buffer;
  ext: ExtHeader[];
  /** Not covered by the checksum, and never changed by the translation. */
  trafficClass: number;
  flowLabel: number;
  hopLimit: number;
  /** Cut into fragments of at most this many fragmentable bytes, with this identification. */
  frag?: { size: number; id: number };
}

function packet(s: Shape, t: Tuple): Buffer {
  const spec: Packet6Spec =
    s.proto === "tcp"
      ? {
          proto: "tcp",
          ...t,
          flags: s.flags,
          seq: s.seq,
          ack: s.ack,
          window: s.window,
          tcpOptions: s.tcpOptions,
          payload: s.payload,
        }
      : { proto: "udp", ...t, payload: s.payload };
  return buildIpv6({ ...spec, ext: s.ext, trafficClass: s.trafficClass, flowLabel: s.flowLabel, hopLimit: s.hopLimit });
}

/** The frames a shape is sent as: one, or its fragments (RFC 8200 4.5). */
function frames(s: Shape, t: Tuple): Buffer[] {
  const p = packet(s, t);
  if (!s.frag) return [ethernet6(p)];
  // The first fragment holds the whole upper-layer header (RFC 8200 4.5, RFC 7112): never cut smaller.
  const c = walkHeaders(p, 0);
  const l4Header = s.proto === "tcp" ? 20 + (s.tcpOptions?.length ?? 0) : 8;
  const least = Math.ceil((c.l4Offset - IPV6_HLEN + l4Header) / 8) * 8;
  return fragmentIpv6(p, Math.max(s.frag.size, least), s.frag.id).map((f) => ethernet6(f));
}

/** Reassembles fragment frames into the datagram (Fragment header removed, as RFC 8200 4.5 does). */
function reassemble(fragments: Buffer[]): Buffer {
  let head: Buffer | undefined;
  const parts: { offset: number; data: Buffer }[] = [];
  for (const f of fragments) {
    const pkt = f.subarray(ETH_HLEN);
    const c = walkHeaders(pkt, 0);
    const i = c.ext.findIndex((e) => e.fragment);
    const fh = c.ext[i]!;
    const end = IPV6_HLEN + pkt.readUInt16BE(4);
    parts.push({ offset: fh.fragment!.offset * 8, data: pkt.subarray(fh.offset + 8, end) });
    if (fh.fragment!.offset === 0) {
      head = Buffer.from(pkt.subarray(0, fh.offset));
      head[i === 0 ? 6 : c.ext[i - 1]!.offset] = pkt[fh.offset]!;
    }
  }
  assert.ok(head, "the first fragment came out");
  parts.sort((a, b) => a.offset - b.offset);
  const whole = Buffer.concat([head, ...parts.map((p) => p.data)]);
  whole.writeUInt16BE(whole.length - IPV6_HLEN, 4);
  return whole;
}

function randomShape(rng: Rng, proto: "tcp" | "udp", flags: number, daddr: string, nextFragId: () => number): Shape {
  const ext = extChain(rng, daddr);
  const fragment = rng.chance(0.3);
  const payload = rng.bytes(fragment ? rng.int(1, 2400) : rng.pick([0, 1, 2, 3, rng.int(0, 64), rng.int(0, 1300)]));
  return {
    proto,
    flags,
    seq: rng.int(0, 2 ** 32 - 1),
    ack: flags & TCP_FLAGS.ACK ? rng.int(0, 2 ** 32 - 1) : 0,
    window: rng.int(0, 65535),
    tcpOptions: proto === "tcp" ? tcpOptions(rng, (flags & TCP_FLAGS.SYN) !== 0) : undefined,
    payload,
    ext,
    trafficClass: rng.chance(0.7) ? 0 : rng.int(0, 255),
    flowLabel: rng.chance(0.5) ? 0 : rng.int(0, 0xfffff),
    hopLimit: rng.int(2, 255),
    // Fragmentable bytes per fragment: a multiple of 8 at least as large as the first fragment's headers.
    frag: fragment ? { size: rng.int(10, 160) * 8, id: nextFragId() } : undefined,
  };
}

/**
 * Sets a 16-bit word of a UDP payload so that the datagram as sent to `t` sums to 0xffff without its checksum:
 * its checksum computes to zero, sent as 0xffff (RFC 8200 8.1), the case an incremental update gets wrong.
 */
function zeroSumPayload(s: Shape, t: Tuple): void {
  const at = s.payload.length - 2 - (s.payload.length % 2); // 16-bit aligned within the UDP message
  s.payload.writeUInt16BE(0, at);
  const p = packet(s, t);
  const l4 = Buffer.from(p.subarray(walkHeaders(p, 0).l4Offset));
  l4.writeUInt16BE(0, 6);
  s.payload.writeUInt16BE(~onesComplementSum(l4, pseudoHeaderSum6(t.saddr, t.daddr, 17, l4.length)) & 0xffff, at);
  const c = packet(s, t);
  assert.equal(c.readUInt16BE(walkHeaders(c, 0).l4Offset + 6), 0xffff, "a zero-sum datagram");
}

const hex = (b: Buffer) => b.toString("hex");

describe(`IPv6 checksum fuzz through the tc programs (seed ${SEED}, ${FLOWS} flows; FUZZ_SEED=${SEED} replays)`, () => {
  let dp: Datapath6 | undefined;
  const svcs = services();

  before(() => {
    assert.equal(process.getuid?.(), 0, "loads BPF programs and mounts a private bpffs: run as root");
    console.log(`# fuzz-csum6: seed ${SEED} (FUZZ_SEED=${SEED} sends the same packets again), ${FLOWS} flows`);
    dp = Datapath6.open("bpx-fuzz-csum6");
    dp.configureNat(NODE6, MASQ_PORTS);
    let id = 100;
    for (const [i, s] of svcs.entries())
      dp.setFrontend(
        s.fe,
        { revNatId: 40 + i, backendIds: s.fe.backends.map(() => id++) },
        s.kind === "externalip-local" ? { externalPolicyLocal: true } : undefined,
      );
  });

  after(() => dp?.close());

  it("every output is the expected translated packet byte for byte with a correct IPv6 upper-layer checksum", async () => {
    const rng = prng(SEED);
    let fragId = 0x10000;
    const nextFragId = () => fragId++;
    const want: Partial<Record<Reason, number>> = {};
    const count = (r: Reason, n: number) => (want[r] = (want[r] ?? 0) + n);
    const stats = { zeroSums: 0, packets: 0, fragments: 0, chains: 0, routing: 0, masqueraded: 0 };

    for (let flow = 0; flow < FLOWS; flow++) {
      const svc = rng.pick(svcs);
      const proto = svc.fe.protocol === "TCP" ? "tcp" : "udp";
      const sport = 10000 + flow; // unique per flow: no flow meets another's conntrack entry
      const from = rng.pick(svc.clients);
      const client: Tuple = { saddr: from.address, sport, daddr: svc.fe.address, dport: svc.fe.port };
      let backend: Tuple | undefined; // what the forward packets become
      let masqPort: number | undefined;
      const steps = rng.int(1, 5);
      for (let step = 0; step < steps; step++) {
        const reply = step > 0 && rng.chance(0.5);
        const what = `seed ${SEED} flow ${flow} (${svc.kind} ${svc.fe.protocol}) step ${step}${reply ? " reply" : ""}`;
        const flags =
          proto === "udp"
            ? 0
            : step === 0
              ? TCP_FLAGS.SYN
              : reply
                ? rng.pick([TCP_FLAGS.SYN | TCP_FLAGS.ACK, TCP_FLAGS.ACK, TCP_FLAGS.ACK | TCP_FLAGS.PSH])
                : rng.pick([TCP_FLAGS.ACK, TCP_FLAGS.ACK | TCP_FLAGS.PSH, TCP_FLAGS.SYN]);
        // A reply as the backend sends it, and as the client must receive it.
        const sent: Tuple = reply
          ? { saddr: backend!.daddr, sport: backend!.dport, daddr: backend!.saddr, dport: backend!.sport }
          : client;
        const shape = randomShape(rng, proto, flags, sent.daddr, nextFragId);
        const received: Tuple = reply
          ? { saddr: client.daddr, sport: client.dport, daddr: client.saddr, dport: client.sport }
          : (backend ?? client);
        // Now and then a datagram whose translated checksum computes to zero: it must go out as 0xffff.
        if (proto === "udp" && (reply || backend) && shape.payload.length >= 2 && rng.chance(0.1)) {
          zeroSumPayload(shape, received);
          stats.zeroSums++;
        }
        const input = frames(shape, sent);
        const outputs: Buffer[] = [];
        for (const [i, f] of input.entries()) {
          const r = await dp!.run(f, reply ? svc.replyProgram : from.program);
          assert.equal(r.ingress.retval, TC_ACT_OK, `${what} fragment ${i}: passed at ingress`);
          assert.equal(r.egress!.retval, TC_ACT_OK, `${what} fragment ${i}: passed at egress`);
          outputs.push(r.egress!.data);
        }
        stats.packets += input.length;
        if (shape.frag) stats.fragments += input.length;
        if (shape.ext.length > 0) stats.chains++;
        if (shape.ext.some((e) => e.type === "routing")) stats.routing++;

        if (!reply && !backend) {
          // The new flow's first output names its backend (and masquerade port): learn them, then check.
          const first = walkHeaders(outputs[0]!.subarray(ETH_HLEN), 0);
          const l4 = ETH_HLEN + first.l4Offset;
          const daddr = first.daddr;
          const dport = outputs[0]!.readUInt16BE(l4 + 2);
          const be = svc.fe.backends.find((b) => b.address === daddr && b.port === dport);
          assert.ok(be, `${what}: ${daddr} port ${dport} is one of the frontend's backends`);
          if (svc.masquerade) {
            masqPort = outputs[0]!.readUInt16BE(l4);
            assert.equal(first.saddr, NODE6, `${what}: masqueraded to the node address`);
            assert.ok(masqPort >= MASQ_PORTS.min && masqPort <= MASQ_PORTS.max, `${what}: port ${masqPort} in range`);
            stats.masqueraded++;
          }
          backend = svc.masquerade
            ? { saddr: NODE6, sport: masqPort!, daddr: be.address, dport: be.port }
            : { saddr: client.saddr, sport: client.sport, daddr: be.address, dport: be.port };
          count("translated_new", 1);
          count("translated_established", input.length - 1);
        } else if (!reply) count("translated_established", input.length);
        else count("reverse_translated", input.length);

        const expected = frames(shape, reply ? received : backend!);
        assert.equal(outputs.length, expected.length, `${what}: as many fragments out as in`);
        for (const [i, out] of outputs.entries()) {
          assert.ok(ipv6ChecksumsOk(out, { frame: true }), `${what} fragment ${i}: checksums (on their own)`);
          assert.equal(hex(out), hex(expected[i]!), `${what} fragment ${i}: bytes`);
        }
        if (shape.frag) {
          const whole = reassemble(outputs);
          assert.ok(ipv6ChecksumsOk(whole), `${what}: the reassembled datagram's checksum`);
          assert.ok(!walkHeaders(whole, 0).ext.some((e) => e.nexthdr === NEXTHDR_FRAGMENT));
        }
      }
    }

    const got = dp!.counters();
    const expectedCounters = Object.fromEntries(Object.keys(got).map((r) => [r, BigInt(want[r as Reason] ?? 0)]));
    assert.deepEqual(got, expectedCounters, `seed ${SEED}: counters`);
    console.log(`# fuzz-csum6: ${JSON.stringify(stats)}`);
    // The mix must have exercised what the file is for (a seed that did not is a broken generator).
    assert.ok(
      stats.fragments > 0 && stats.chains > 0 && stats.routing > 0 && stats.masqueraded > 0 && stats.zeroSums > 0,
      JSON.stringify(stats),
    );
  });
});
