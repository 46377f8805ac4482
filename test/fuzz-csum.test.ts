// Packet fuzzing with the offloads a real node sees: CHECKSUM_PARTIAL and GSO super-packets, through the real
// daemon's programs on real devices. BPF_PROG_TEST_RUN (test/fuzz-packets.test.ts) can only run CHECKSUM_NONE
// frames; here every frame enters the kernel through a tap opened with IFF_VNET_HDR (src/lab/tap.ts), with
// VIRTIO_NET_HDR_F_NEEDS_CSUM (the checksum field holds only the pseudo-header sum, as a pod's stack sends over a
// veth with tx checksumming on, or GRO hands on) and some as GSO (TCPv4, UDP_L4), a few with full checksums.
// Two-node lab, bpfproxy running on both nodes (production settings: stack path, netfilter conntrack, loose
// rp_filter). Taps stand in for a client pod and a backend on node-a, a backend on node-b, and an external
// client on the fabric. Random TCP and UDP flows:
//   - ClusterIP: client pod → VIP (DNAT to a local or remote backend), the backend's replies (reverse NAT);
//   - NodePort with masquerade: external client → node-a:NodePort (DNAT + SNAT to node-a), the replies.
// Random payload sizes and contents, GSO sizes, TCP options, IP options, TOS, DF, TTL. The tap the kernel
// delivers to has no offloads, so the kernel finalizes checksums and segments GSO before the reader sees the
// frames: each delivered frame must carry correct checksums (the packet fuzzer's oracle, fixtures/checksums.ts)
// and be exactly the sent frame with the translation applied (addresses, ports, TTL less one per node, the
// segment's share of the payload, sequence number and flags). Seeds are printed; FUZZ_SEED replays one.
// Needs root; everything lives in namespaces the lab creates and bpffs mounts of our own.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import {
  Tap,
  NO_OFFLOAD,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  type TapFrame,
  type VnetHdr,
} from "../src/lab/tap.js";
import {
  buildPacket,
  describePacket,
  parsePacket,
  pseudoHeaderSum,
  IP_DF,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_FLAGS,
  type PacketSpec,
} from "./fixtures/packets.js";
import { checksums } from "./fixtures/checksums.js";
import { endpointSlice, manifest, node, service, webPorts } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "builds namespaces, taps and loads BPF: run as root");

const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const VIP = "10.96.0.10";
const CLIENT = "10.244.1.10";
const WEB_A = "10.244.1.21";
const WEB_B = "10.244.2.21";
const EXT = "198.51.100.20"; // a host on the external network: a tap on the fabric bridge
const NODE_PORT = { tcp: 30080, udp: 30053 };
const SVC_PORT = { tcp: 80, udp: 53 };
const TARGET_PORT = { tcp: 8080, udp: 5353 };
const MAC = {
  client: "02:00:0a:f4:01:0a",
  webA: "02:00:0a:f4:01:15",
  webB: "02:00:0a:f4:02:15",
  ext: "02:00:c6:33:64:14",
};
const URG = 0x20;
const ECE = 0x40;
const CWR = 0x80;
const MTU = 1500;
const NUM_FLOWS = Number(process.env.FUZZ_FLOWS ?? 240);

type Who = "client" | "webA" | "webB" | "ext";

interface Taps {
  client: Tap;
  webA: Tap;
  webB: Tap;
  ext: Tap;
}

// ---- generated flows ---------------------------------------------------------------------------------------

/** How a frame is handed to the kernel. */
type Offload = "partial" | "full" | "zero";

interface IpShape {
  tos: number;
  df: boolean;
  ttl: number;
  id: number;
  ipOptions: Buffer;
}

interface Step {
  /** fwd: client → frontend; rev: backend → client (as the backend saw it). */
  dir: "fwd" | "rev";
  ip: IpShape;
  offload: Offload;
  /** 0: one frame; else a GSO super-packet segmented every gsoSize payload bytes. */
  gsoSize: number;
  payloadLen: number;
  payloadSeed: number;
  /** TCP: flags beyond what the flow's state sets (PSH, URG, ECE, CWR), options. */
  extraFlags: number;
  tcpOptions: Buffer;
  window: number;
  /** TCP: SYN, SYN-ACK, ACK, data, FIN: set by the flow. */
  kind?: "syn" | "synack" | "data" | "fin";
}

interface Flow {
  entry: "clusterip" | "nodeport";
  proto: "tcp" | "udp";
  isn: { c: number; s: number };
  steps: Step[];
}

const padTo4 = (b: Buffer, pad: number) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4, pad)]);
// IPv4 options a router forwards unchanged: NOP, Router Alert, and options of kinds it does not know (which
// the kernel passes through); never route records, timestamps or source routes (rewritten or refused).
const ipOption = fc.oneof(
  fc.constant(Buffer.from([1])),
  fc.constant(Buffer.from([148, 4, 0, 0])),
  fc
    .tuple(fc.constantFrom(25, 30, 94, 158), fc.uint8Array({ maxLength: 6 }))
    .map(([kind, data]) => Buffer.from([kind, data.length + 2, ...data])),
);
const ipOptions = fc.oneof(
  { weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 1, arbitrary: fc.array(ipOption, { minLength: 1, maxLength: 4 }).map((o) => padTo4(Buffer.concat(o), 0)) },
);
const ipShape: fc.Arbitrary<IpShape> = fc.record({
  tos: fc.nat(255),
  df: fc.boolean(),
  ttl: fc.integer({ min: 3, max: 255 }),
  id: fc.nat(65535),
  ipOptions,
});
// Well-formed TCP options (conntrack reads window scaling and SACK from them), NOP-padded.
const tcpOption = fc.oneof(
  fc.integer({ min: 536, max: 1460 }).map((mss) => Buffer.from([2, 4, mss >> 8, mss & 0xff])),
  fc.integer({ min: 0, max: 14 }).map((ws) => Buffer.from([3, 3, ws])),
  fc.constant(Buffer.from([4, 2])),
  fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => {
    const o = Buffer.alloc(10);
    o[0] = 8;
    o[1] = 10;
    o.writeUInt32BE(a >>> 0, 2);
    o.writeUInt32BE(b >>> 0, 6);
    return o;
  }),
  fc.constant(Buffer.from([1])),
);
const tcpOptions = fc.oneof(
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 2, arbitrary: fc.array(tcpOption, { maxLength: 4 }).map((o) => padTo4(Buffer.concat(o), 1)) },
);

const step = (proto: "tcp" | "udp", dir: "fwd" | "rev" | undefined, data: boolean): fc.Arbitrary<Step> =>
  fc
    .record({
      dir: dir ? fc.constant(dir) : fc.constantFrom<"fwd" | "rev">("fwd", "rev"),
      ip: ipShape,
      offload: fc.oneof(
        { weight: 6, arbitrary: fc.constant<Offload>("partial") },
        { weight: 1, arbitrary: fc.constant<Offload>("full") },
        ...(proto === "udp" ? [{ weight: 1, arbitrary: fc.constant<Offload>("zero") }] : []),
      ),
      size: data
        ? fc.oneof(
            { weight: 2, arbitrary: fc.integer({ min: 0, max: 64 }).map((n) => ({ payloadLen: n, gsoSize: 0 })) },
            { weight: 2, arbitrary: fc.integer({ min: 65, max: 1600 }).map((n) => ({ payloadLen: n, gsoSize: 0 })) },
            {
              weight: 4,
              // GSO: gso_size bytes of payload per segment, 2 to 12 segments (a segment's size is capped to the MTU).
              arbitrary: fc
                .tuple(fc.integer({ min: 64, max: 1600 }), fc.integer({ min: 2, max: 12 }), fc.nat(1599))
                .map(([g, n, r]) => ({ gsoSize: g, payloadLen: (n - 1) * g + 1 + (r % g) })),
            },
          )
        : fc.constant({ payloadLen: 0, gsoSize: 0 }),
      payloadSeed: fc.nat(),
      extraFlags: fc.oneof(
        { weight: 3, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.subarray([TCP_FLAGS.PSH, URG, ECE, CWR]).map((f) => f.reduce((a, b) => a | b, 0)) },
      ),
      tcpOptions,
      window: fc.integer({ min: 32768, max: 65535 }),
    })
    .map(({ size, ...s }) => ({ ...s, ...size }));

const flow: fc.Arbitrary<Flow> = fc.oneof(
  fc
    .tuple(
      fc.constantFrom<Flow["entry"]>("clusterip", "nodeport"),
      fc.record({ c: fc.nat(), s: fc.nat() }),
      step("tcp", "fwd", false),
      step("tcp", "rev", false),
      fc.array(step("tcp", undefined, true), { minLength: 2, maxLength: 5 }),
      fc.option(fc.tuple(step("tcp", "fwd", false), step("tcp", "rev", false), step("tcp", "fwd", false))),
    )
    .map(([entry, isn, syn, synack, data, fin]): Flow => {
      // The first data step is the client's (the ACK of the handshake, maybe with data).
      const steps: Step[] = [
        { ...syn, kind: "syn" },
        { ...synack, kind: "synack" },
        ...data.map((d, i) => ({ ...d, dir: i === 0 ? ("fwd" as const) : d.dir, kind: "data" as const })),
      ];
      if (fin) steps.push({ ...fin[0], kind: "fin" }, { ...fin[1], kind: "fin" }, { ...fin[2], kind: "data" });
      return { entry, proto: "tcp", isn, steps };
    }),
  fc
    .tuple(
      fc.constantFrom<Flow["entry"]>("clusterip", "nodeport"),
      step("udp", "fwd", true),
      fc.array(step("udp", undefined, true), { minLength: 1, maxLength: 5 }),
    )
    .map(([entry, first, rest]): Flow => ({ entry, proto: "udp", isn: { c: 0, s: 0 }, steps: [first, ...rest] })),
);

/** Deterministic payload bytes (xorshift32) from a seed. */
function payloadBytes(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

// ---- the frames ---------------------------------------------------------------------------------------------

interface Endpoint {
  ip: string;
  port: number;
}

/**
 * The frame for a step as a stack would hand it to its device: full checksums, then for CHECKSUM_PARTIAL the L4
 * field replaced by the pseudo-header sum (folded, not complemented: what __tcp_v4_send_check and udp4_hwcsum
 * leave for the device) and virtio_net_hdr pointing at it; GSO super-packets carry their whole length in it.
 */
function wireFrame(spec: PacketSpec, s: Step): { vnet: VnetHdr; frame: Buffer } {
  const frame = Buffer.from(buildPacket(spec));
  if (s.offload !== "partial") return { vnet: NO_OFFLOAD, frame };
  const ihl = (frame[14]! & 0x0f) * 4;
  const l4 = 14 + ihl;
  const tcp = spec.proto === "tcp";
  const off = tcp ? 16 : 6;
  const l4Len = frame.length - l4;
  frame.writeUInt16BE(pseudoHeaderSum(spec.saddr, spec.daddr, tcp ? IPPROTO_TCP : IPPROTO_UDP, l4Len), l4 + off);
  const hdrLen = l4 + (tcp ? (frame[l4 + 12]! >> 4) * 4 : 8);
  const gso = s.gsoSize > 0 && s.payloadLen > s.gsoSize;
  return {
    vnet: {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: gso ? (tcp ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_UDP_L4) : 0,
      hdrLen,
      gsoSize: gso ? s.gsoSize : 0,
      csumStart: l4,
      csumOffset: off,
    },
    frame,
  };
}

/** The segments a receiver gets for `spec` sent with gso_size `g` (0: none), as packet specs. */
function segments(spec: PacketSpec, g: number): PacketSpec[] {
  if (spec.proto === "icmp") return [spec];
  const payload = spec.payload ?? Buffer.alloc(0);
  if (!g || payload.length <= g) return [spec];
  const out: PacketSpec[] = [];
  for (let off = 0, i = 0; off < payload.length; off += g, i++) {
    const last = off + g >= payload.length;
    const part = payload.subarray(off, off + g);
    if (spec.proto === "tcp") {
      // tcp_gso_segment: CWR on the first segment only, FIN and PSH on the last only.
      let flags = spec.flags ?? 0;
      if (i > 0) flags &= ~CWR;
      if (!last) flags &= ~(TCP_FLAGS.FIN | TCP_FLAGS.PSH);
      out.push({ ...spec, payload: part, seq: ((spec.seq ?? 0) + off) >>> 0, flags });
    } else out.push({ ...spec, payload: part });
  }
  return out;
}

// ---- the test -----------------------------------------------------------------------------------------------

for (const mode of (process.env.FUZZ_MODES?.split(",") ?? ["stack", "bypass-netfilter"]) as Array<
  "stack" | "bypass-netfilter"
>)
  describe(`CHECKSUM_PARTIAL and GSO through the real programs (${mode} path)`, { timeout: 180_000 }, () => {
    let lab: Lab;
    let dir: string;
    let bpffsA: PrivateBpffs | undefined;
    let bpffsB: PrivateBpffs | undefined;
    let proxyA: ProxyNode | undefined;
    let proxyB: ProxyNode | undefined;
    // Filled as they open, so after() closes whatever before() got to (lab.destroy() would kill them too).
    const taps = {} as Taps;
    const nodeMac: Partial<Record<Who, string>> = {};

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-csum-"));
      const ports = webPorts(NODE_PORT);
      writeFileSync(
        join(dir, "services.yaml"),
        manifest([
          service("fuzz", VIP, ports, { spec: { type: "NodePort" } }),
          endpointSlice("fuzz", ports, [
            { ip: WEB_A, node: "node-a" },
            { ip: WEB_B, node: "node-b" },
          ]),
          node("node-a", NODE_A),
          node("node-b", NODE_B),
        ]),
      );
      lab = await Lab.create({
        prefix: `bpxcs${process.pid}${mode[0]}-`,
        nodes: [
          { name: "node-a", ip: NODE_A, podCIDR: "10.244.1.0/24", pods: [] },
          { name: "node-b", ip: NODE_B, podCIDR: "10.244.2.0/24", pods: [] },
        ],
        // The lab's external host gives the nodes their on-link route to the external network.
        external: { name: "ext", ip: "198.51.100.10" },
      });
      // Pods on taps, routed like the lab's pod veths (gateway /32 on the host side, /32 route to the pod), with
      // the pod's MAC as a permanent neighbour (nothing on a tap answers ARP).
      const podTap = async (who: Who, nodeName: string, pod: string, ip: string): Promise<Tap> => {
        const ifname = Lab.podInterfaceName(pod);
        const t = await Tap.open(lab, nodeName, ifname);
        await lab.run(nodeName, ["sysctl", "-q", "-w", `net.ipv6.conf.${ifname}.disable_ipv6=1`]);
        await lab.run(nodeName, ["ip", "link", "set", ifname, "up"]);
        await lab.run(nodeName, ["ip", "addr", "add", `${lab.podGateway(nodeName)}/32`, "dev", ifname]);
        await lab.run(nodeName, ["ip", "route", "add", `${ip}/32`, "dev", ifname]);
        await lab.run(nodeName, ["ip", "neigh", "replace", ip, "lladdr", MAC[who], "dev", ifname, "nud", "permanent"]);
        nodeMac[who] = await macOf(nodeName, ifname);
        return t;
      };
      taps.client = await podTap("client", "node-a", "client", CLIENT);
      taps.webA = await podTap("webA", "node-a", "web-a", WEB_A);
      taps.webB = await podTap("webB", "node-b", "web-b", WEB_B);
      taps.ext = await Tap.open(lab, "fabric", "fabext");
      await lab.run("fabric", ["sysctl", "-q", "-w", "net.ipv6.conf.fabext.disable_ipv6=1"]);
      await lab.run("fabric", ["ip", "link", "set", "fabext", "master", "br0", "up"]);
      await lab.run("node-a", ["ip", "neigh", "replace", EXT, "lladdr", MAC.ext, "dev", "eth0", "nud", "permanent"]);
      nodeMac.ext = await macOf("node-a", "eth0");

      const args = (nodeIP: string) => [
        "--healthz-bind-address",
        `${nodeIP}:10256`,
        "--metrics-bind-address",
        "",
        ...(mode === "bypass-netfilter" ? ["--bypass-netfilter"] : []),
      ];
      bpffsA = PrivateBpffs.create("cs-a");
      bpffsB = PrivateBpffs.create("cs-b");
      proxyA = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffsA.path, extraArgs: args(NODE_A) });
      proxyB = await ProxyNode.start(lab, "node-b", { manifestDir: dir, bpffs: bpffsB.path, extraArgs: args(NODE_B) });
      for (const p of [proxyA, proxyB]) {
        await p.waitForStatus((s) => s.frontends.some((f) => f.type === "NodePort"), 10_000);
        // The programs must be on the taps: a test that ran past them would prove nothing.
        await p.waitForLog(
          new RegExp(`attached interface="${Lab.podInterfaceName(p === proxyA ? "client" : "web-b")}" hook="ingress"`),
        );
      }
    });

    after(async () => {
      for (const t of Object.values(taps) as Array<Tap | undefined>) t?.close();
      for (const p of [proxyA, proxyB]) {
        await p?.stop().catch(() => undefined);
        await p?.cleanup().catch(() => undefined);
      }
      await lab?.destroy();
      bpffsA?.release();
      bpffsB?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    async function macOf(ns: string, ifname: string): Promise<string> {
      const j = JSON.parse(await lab.run(ns, ["ip", "-j", "link", "show", ifname])) as Array<{ address: string }>;
      return j[0]!.address;
    }

    /**
     * Frames that matter: IPv4 unicast. Not the kernel's own IPv6, ARP and multicast chatter, nor the ICMP
     * redirects node-a's stack sends the external host when it forwards a NodePort flow out of the interface
     * it came in on (send_redirects and shared_media are on by default, as on any Linux router).
     */
    const ours = (f: TapFrame) => {
      if (f.frame.length < 34 || f.frame.readUInt16BE(12) !== 0x0800 || f.frame[30]! >= 224) return false;
      const ihl = (f.frame[14]! & 0x0f) * 4;
      return !(f.frame[23] === 1 && f.frame[14 + ihl] === 5);
    };

    /** Polls every tap until `n` frames arrived in total (or timeoutMs): who got what. */
    async function collect(n: number, timeoutMs = 3000): Promise<Array<{ who: Who; f: TapFrame }>> {
      const got: Array<{ who: Who; f: TapFrame }> = [];
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const who of Object.keys(taps) as Who[])
          for (const f of await taps[who].receive(0, 0)) if (ours(f)) got.push({ who, f });
        if (got.length >= n || Date.now() > deadline) return got;
        await new Promise((r) => setTimeout(r, 1));
      }
    }

    test(`${NUM_FLOWS} random TCP and UDP flows (ClusterIP, masqueraded NodePort, replies): every delivered frame has correct checksums and exactly the expected rewrite`, async () => {
      const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
      console.log(`# fuzz-csum ${mode}: seed ${seed} (FUZZ_SEED=${seed} sends the same flows again)`);
      let nextPort = 20000;
      const totals = {
        flows: 0,
        frames: 0,
        partial: 0,
        gso: 0,
        segments: 0,
        delivered: { webA: 0, webB: 0, client: 0, ext: 0 },
      };
      const sentAs = new Map<string, number>();
      const started = Date.now();
      const run = await fc.check(
        fc.asyncProperty(flow, async (fl) => {
          const tcp = fl.proto === "tcp";
          const cport = nextPort++;
          const client: Endpoint = fl.entry === "clusterip" ? { ip: CLIENT, port: cport } : { ip: EXT, port: cport };
          const frontend: Endpoint =
            fl.entry === "clusterip"
              ? { ip: VIP, port: SVC_PORT[fl.proto] }
              : { ip: NODE_A, port: NODE_PORT[fl.proto] };
          const clientWho: Who = fl.entry === "clusterip" ? "client" : "ext";
          let backend: "webA" | "webB" | undefined;
          let seen: Endpoint | undefined; // the source the backend sees (the client, or node-a masqueraded)
          let cseq = fl.isn.c >>> 0;
          let sseq = fl.isn.s >>> 0;
          const log: string[] = [];
          for (const [i, s] of fl.steps.entries()) {
            const payload = payloadBytes(s.payloadSeed, s.payloadLen);
            let flags = 0;
            let seq = 0;
            let ack = 0;
            if (tcp) {
              const fwd = s.dir === "fwd";
              flags =
                s.kind === "syn"
                  ? TCP_FLAGS.SYN
                  : s.kind === "synack"
                    ? TCP_FLAGS.SYN | TCP_FLAGS.ACK
                    : s.kind === "fin"
                      ? TCP_FLAGS.FIN | TCP_FLAGS.ACK
                      : TCP_FLAGS.ACK;
              flags |= s.extraFlags & ~(s.kind === "syn" || s.kind === "synack" ? URG : 0);
              seq = fwd ? cseq : sseq;
              ack = s.kind === "syn" ? 0 : fwd ? sseq : cseq;
              const len = payload.length + (flags & (TCP_FLAGS.SYN | TCP_FLAGS.FIN) ? 1 : 0);
              if (fwd) cseq = (cseq + len) >>> 0;
              else sseq = (sseq + len) >>> 0;
            }
            const bEnd: Endpoint | undefined = backend
              ? { ip: backend === "webA" ? WEB_A : WEB_B, port: TARGET_PORT[fl.proto] }
              : undefined;
            const from: Who = s.dir === "fwd" ? clientWho : backend!;
            const src = s.dir === "fwd" ? client : bEnd!;
            const dst = s.dir === "fwd" ? frontend : seen!;
            const base = {
              srcMac: MAC[from],
              dstMac: nodeMac[from]!,
              saddr: src.ip,
              daddr: dst.ip,
              tos: s.ip.tos,
              id: s.ip.id,
              ttl: s.ip.ttl,
              fragFlags: s.ip.df ? IP_DF : 0,
              ipOptions: s.ip.ipOptions,
              sport: src.port,
              dport: dst.port,
              payload,
            };
            const spec: PacketSpec = tcp
              ? {
                  ...base,
                  proto: "tcp",
                  flags,
                  seq,
                  ack,
                  window: s.window,
                  tcpOptions: s.tcpOptions,
                }
              : { ...base, proto: "udp", checksum: s.offload === "zero" ? "zero" : "compute" };
            // A segment never exceeds the MTU: a too-large single frame is cut to fit, a GSO segment likewise.
            const hdrs = 20 + s.ip.ipOptions.length + (tcp ? 20 + s.tcpOptions.length : 8);
            const room = MTU - hdrs;
            const gsoSize = s.gsoSize ? Math.min(s.gsoSize, room) : 0;
            if (!gsoSize && payload.length > room) spec.payload = payload.subarray(0, room);
            if (tcp && !gsoSize && payload.length > room) {
              // keep the sequence space in step with what was really sent
              const cut = payload.length - room;
              if (s.dir === "fwd") cseq = (cseq - cut) >>> 0;
              else sseq = (sseq - cut) >>> 0;
            }
            const st: Step = { ...s, gsoSize, offload: gsoSize && s.offload !== "partial" ? "partial" : s.offload };
            const wire = wireFrame(spec, st);
            const expectSegs = segments(spec, st.offload === "partial" && wire.vnet.gsoType ? gsoSize : 0);
            log.push(
              `step ${i} ${s.dir} ${s.kind ?? ""} ${st.offload}${wire.vnet.gsoType ? ` gso ${gsoSize}` : ""} ${describePacket(wire.frame)} payload ${spec.payload?.length ?? 0}`,
            );
            await taps[from].send([wire]);
            totals.frames++;
            if (st.offload === "partial") totals.partial++;
            if (wire.vnet.gsoType) totals.gso++;
            // What each case was sent as, once it is known where it went (below): the coverage asserted at the end.
            const kindOf = () =>
              `${fl.entry} ${fl.proto} ${s.dir} ${backend === "webA" ? "local" : "remote"} ${st.offload}${wire.vnet.gsoType ? "+gso" : ""}`;
            const got = await collect(expectSegs.length);
            const where = () =>
              `flow ${JSON.stringify({ entry: fl.entry, proto: fl.proto })}\n${log.join("\n")}\ngot:\n${got.map((g) => `  ${g.who}: ${describePacket(g.f.frame)}`).join("\n")}`;
            assert.equal(
              got.length,
              expectSegs.length,
              `frames delivered: ${got.length}, expected ${expectSegs.length}\n${where()}`,
            );
            // Who must receive, and what translation applies.
            let to: Who;
            let out: { saddr: string; sport: number; daddr: string; dport: number };
            if (s.dir === "fwd") {
              const first = got[0]!.who;
              assert.ok(first === "webA" || first === "webB", `a client's frame reached ${first}\n${where()}`);
              if (!backend) backend = first;
              to = backend;
              const p = parsePacket(got[0]!.f.frame);
              const sport = p.tcp?.sport ?? p.udp?.sport ?? -1;
              if (fl.entry === "clusterip") seen ??= client;
              else {
                // Masqueraded to node-a: its address, from one port for the whole flow.
                seen ??= { ip: p.ip!.saddr, port: sport };
                assert.equal(seen.ip, NODE_A, `NodePort traffic is masqueraded to node-a\n${where()}`);
              }
              out = {
                saddr: seen.ip,
                sport: seen.port,
                daddr: to === "webA" ? WEB_A : WEB_B,
                dport: TARGET_PORT[fl.proto],
              };
            } else {
              to = clientWho;
              out = { saddr: frontend.ip, sport: frontend.port, daddr: client.ip, dport: client.port };
            }
            const hops = backend === "webA" ? 1 : 2;
            for (const [k, g] of got.entries()) {
              assert.equal(g.who, to, `segment ${k} went to ${g.who}, not ${to}\n${where()}`);
              totals.delivered[g.who]++;
              totals.segments++;
              if (k === 0) sentAs.set(kindOf(), (sentAs.get(kindOf()) ?? 0) + 1);
              const sums = checksums(g.f.frame);
              assert.equal(sums.ip, "ok", `segment ${k}: IP checksum ${sums.ip}\n${where()}`);
              const wantL4 = !tcp && st.offload === "zero" ? "none" : "ok";
              assert.equal(sums.l4, wantL4, `segment ${k}: L4 checksum ${sums.l4}, want ${wantL4}\n${where()}`);
              assert.equal(g.f.gsoType, 0, "the kernel segments before a tap without offloads");
              // The exact frame: the sent one translated, TTL less one per node, this segment's share.
              const e = expectSegs[k]!;
              const want = buildPacket({
                ...e,
                ...out,
                srcMac: "00:00:00:00:00:00",
                dstMac: MAC[to],
                ttl: s.ip.ttl - hops,
                ...(e.proto === "udp" ? { checksum: "zero" as const } : {}),
              });
              const have = Buffer.from(g.f.frame);
              const ihl = (have[14]! & 0x0f) * 4;
              // Masked: source MAC (the node's), IP ID of later segments (the kernel numbers them), both checksums
              // (judged above: incremental updates may write 0x0000 or 0xffff for the same sum).
              have.fill(0, 6, 12);
              if (k > 0) have.writeUInt16BE(want.readUInt16BE(18), 18);
              have.writeUInt16BE(want.readUInt16BE(24), 24);
              if (have.length >= 14 + ihl + (tcp ? 18 : 8))
                have.writeUInt16BE(want.readUInt16BE(14 + ihl + (tcp ? 16 : 6)), 14 + ihl + (tcp ? 16 : 6));
              if (!have.equals(want))
                assert.fail(
                  `segment ${k} is not the expected rewrite:\n  have ${have.toString("hex")}\n  want ${want.toString("hex")}\n${where()}`,
                );
            }
          }
          totals.flows++;
        }),
        { numRuns: NUM_FLOWS, seed, endOnFailure: true },
      );
      if (run.failed)
        assert.fail(
          `seed ${seed} (FUZZ_SEED=${seed} sends the same flows again), flow ${run.numRuns} of ${NUM_FLOWS}:\n${(run.errorInstance as Error | undefined)?.message ?? String(run.errorInstance)}`,
        );
      // Anything left over (a duplicate, a stray answer) is a frame nobody expected.
      const stray = await collect(1, 300);
      assert.deepEqual(
        stray.map((g) => `${g.who}: ${describePacket(g.f.frame)}`),
        [],
        "frames nobody sent for",
      );
      console.log(
        `# figures fuzz-csum ${mode}: ${JSON.stringify({ ...totals, ms: Date.now() - started, sentAs: Object.fromEntries(sentAs) })}`,
      );
      // Every way in, both directions, to a local and a remote backend, as CHECKSUM_PARTIAL and as GSO.
      const missing: string[] = [];
      for (const entry of ["clusterip", "nodeport"])
        for (const proto of ["tcp", "udp"])
          for (const dir of ["fwd", "rev"])
            for (const where of ["local", "remote"])
              for (const how of ["partial", "partial+gso"])
                if (!sentAs.get(`${entry} ${proto} ${dir} ${where} ${how}`))
                  missing.push(`${entry} ${proto} ${dir} ${where} ${how}`);
      assert.deepEqual(missing, [], `kinds of frames never sent: ${JSON.stringify(Object.fromEntries(sentAs))}`);
    });
  });
