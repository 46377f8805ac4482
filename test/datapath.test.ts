// Packet tests of the tc programs in bpf/bpfproxy.o, run with BPF_PROG_TEST_RUN through the native addon:
// build a frame, set up the maps, run the real entry program, check verdict, bytes, maps and counters.
// Single-packet cases are a table (Katran style); multi-packet flows follow. Needs root (BPF + bpffs).
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { endFlowsOfRemovedBackends } from "../src/dataplane/bpf/ct-gc.js";
import { BpfObject, mountBpffs, possibleCpus, umount } from "../src/native/index.js";
import {
  ETH_P_ARP,
  ETH_P_IPV6,
  IP_MF,
  TCP_FLAGS,
  buildNonIpv4,
  buildPacket,
  checksumsOk,
  describePacket,
  expectedReject,
  ipv4ChecksumOk,
  l4ChecksumStatus,
  parsePacket,
  type PacketSpec,
  type TcpSpec,
  type UdpSpec,
} from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const EMPTY_OBJECT = "bpf/tests/empty.o";
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const TCP = abi.IPPROTO_TCP;
const UDP = abi.IPPROTO_UDP;

const CLIENT = "10.244.1.10";
const OUTSIDE_CLIENT = "198.51.100.10";
const VIP = "10.96.0.10";
const OTHER_VIP = "10.96.0.99";
const BE1 = "10.244.2.21";
const BE2 = "10.244.2.22";
const BE3 = "10.244.2.23";
const BE4 = "10.244.2.24";
const CLUSTER_CIDR = "10.244.0.0/16";

type Program = "bpx_from_pod" | "bpx_from_device";
type Reason = keyof typeof abi.COUNTER_REASONS;

// ---- harness ----

let bpffs: string | undefined;

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "test/datapath.test.ts loads BPF programs and mounts a private bpffs: run it as root (bash scripts/test.sh test/datapath.test.ts)",
    );
  }
}

before(() => {
  requireRoot();
  bpffs = mkdtempSync("/tmp/bpx-datapath-");
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

interface BackendSpec {
  id: number;
  address: string;
  port: number;
}

interface ServiceSpec {
  vip: string;
  port: number;
  proto: number;
  revNatId: number;
  backends: BackendSpec[];
  scope?: number;
  flags?: number;
  affinityTimeout?: number;
}

/** One loaded bpfproxy.o with its maps pinned in a private directory of the test bpffs. */
class Datapath {
  private constructor(
    readonly obj: BpfObject,
    readonly dir: string,
  ) {}

  static open(): Datapath {
    if (!bpffs) throw new Error("bpffs not mounted (did the root check fail?)");
    const { obj, dir } = loadCaseObject(bpffs);
    return new Datapath(obj, dir);
  }

  close(): void {
    this.obj.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private m(name: string) {
    return this.obj.map(name);
  }

  setBackend(b: BackendSpec, proto: number): void {
    this.m(abi.MAP_NAMES.backends).update(
      abi.u32Key.encode(b.id),
      abi.backend.encode({ address: b.address, port: b.port, proto, flags: 0 }),
    );
  }

  /** What the daemon does after the reconciler deleted backends (src/dataplane/bpf/ct-gc.ts). */
  endFlowsOf(ids: number[]): Promise<number> {
    return endFlowsOfRemovedBackends(this.m(abi.MAP_NAMES.conntrack), this.m(abi.MAP_NAMES.backends), new Set(ids));
  }

  deleteBackend(id: number): void {
    assert.ok(this.m(abi.MAP_NAMES.backends).delete(abi.u32Key.encode(id)), `backend ${id} existed`);
  }

  /** Make-before-break like the reconciler: backends, rev-NAT, slots, then the master. */
  setService(s: ServiceSpec): void {
    const scope = s.scope ?? abi.SCOPE_INTERNAL;
    for (const b of s.backends) this.setBackend(b, s.proto);
    this.m(abi.MAP_NAMES.revNat).update(
      abi.u32Key.encode(s.revNatId),
      abi.revNat.encode({ address: s.vip, port: s.port }),
    );
    const svc = this.m(abi.MAP_NAMES.services);
    const key = (slot: number) => abi.svcKey.encode({ address: s.vip, port: s.port, proto: s.proto, scope, slot });
    s.backends.forEach((b, i) => {
      svc.update(
        key(i + 1),
        abi.svcValue.encode({ backendId: b.id, count: 0, revNatId: s.revNatId, flags: 0, affinityTimeout: 0 }),
      );
    });
    if ((s.flags ?? 0) & abi.SVC_F_AFFINITY) {
      for (const b of s.backends) {
        this.m(abi.MAP_NAMES.affinityMatch).update(
          abi.affinityMatchKey.encode({ backendId: b.id, revNatId: s.revNatId, scope }),
          abi.u8Value.encode(1),
        );
      }
    }
    svc.update(
      key(0),
      abi.svcValue.encode({
        backendId: 0,
        count: s.backends.length,
        revNatId: s.revNatId,
        flags: s.flags ?? 0,
        affinityTimeout: s.affinityTimeout ?? 0,
      }),
    );
  }

  /** A master entry naming `count` slots without writing them (a reconciler bug the program must survive). */
  setMasterOnly(vip: string, port: number, proto: number, count: number, revNatId: number): void {
    this.m(abi.MAP_NAMES.services).update(
      abi.svcKey.encode({ address: vip, port, proto, scope: abi.SCOPE_INTERNAL, slot: 0 }),
      abi.svcValue.encode({ backendId: 0, count, revNatId, flags: 0, affinityTimeout: 0 }),
    );
  }

  setRevNat(id: number, address: string, port: number): void {
    this.m(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(id), abi.revNat.encode({ address, port }));
  }

  setConfig(clusterCidrs: string[]): void {
    this.m(abi.MAP_NAMES.config).update(
      abi.u32Key.encode(0),
      abi.config.encode({ flags: 0, clusterCidrs, nodeName: "node-test" }),
    );
  }

  rejectBucket(source: string): abi.RejectBucket | null {
    const v = this.m(abi.MAP_NAMES.rejectLimit).lookup(abi.be32AddrKey.encode({ address: source }));
    return v ? abi.rejectBucket.decode(v) : null;
  }

  setRejectBucket(source: string, b: abi.RejectBucket): void {
    this.m(abi.MAP_NAMES.rejectLimit).update(abi.be32AddrKey.encode({ address: source }), abi.rejectBucket.encode(b));
  }

  ct(key: abi.CtKey): abi.CtEntry | null {
    const v = this.m(abi.MAP_NAMES.conntrack).lookup(abi.ctKey.encode(key));
    return v ? abi.ctEntry.decode(v) : null;
  }

  setCt(key: abi.CtKey, entry: abi.CtEntry): void {
    this.m(abi.MAP_NAMES.conntrack).update(abi.ctKey.encode(key), abi.ctEntry.encode(entry));
  }

  affinity(client: string, revNatId: number): abi.AffinityValue | null {
    const v = this.m(abi.MAP_NAMES.affinity).lookup(abi.affinityKey.encode({ client, revNatId }));
    return v ? abi.affinityValue.decode(v) : null;
  }

  /** Packets per reason, summed over CPUs. */
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

  async run(data: Buffer, program: Program = "bpx_from_pod", repeat = 1) {
    return runThroughStack(this.obj, program, data, repeat);
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

/** Asserts that exactly the given reasons were counted (every other reason stays 0). */
function assertCounted(dp: Datapath, expected: Partial<Record<Reason, number>>, what: string): void {
  const got = dp.counters();
  const want = Object.fromEntries(Object.keys(abi.COUNTER_REASONS).map((r) => [r, BigInt(expected[r as Reason] ?? 0)]));
  assert.deepEqual(got, want, `${what}: counters`);
}

function monotonicNow(): bigint {
  // CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() reads.
  return process.hrtime.bigint();
}

function assertSamePacket(got: Buffer, want: Buffer, what: string): void {
  assert.equal(describePacket(got), describePacket(want), `${what}: packet summary`);
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: packet bytes`);
}

// ---- packets ----

const SVC_TCP: ServiceSpec = {
  vip: VIP,
  port: 80,
  proto: TCP,
  revNatId: 1,
  backends: [{ id: 1, address: BE1, port: 8080 }],
};
const SVC_UDP: ServiceSpec = {
  vip: VIP,
  port: 53,
  proto: UDP,
  revNatId: 2,
  backends: [{ id: 1, address: BE1, port: 5353 }],
};
const SVC_TCP2: ServiceSpec = {
  ...SVC_TCP,
  backends: [
    { id: 1, address: BE1, port: 8080 },
    { id: 2, address: BE2, port: 8080 },
  ],
};
const SVC_UDP2: ServiceSpec = {
  ...SVC_UDP,
  backends: [
    { id: 1, address: BE1, port: 5353 },
    { id: 2, address: BE2, port: 5353 },
  ],
};

function syn(over: Partial<TcpSpec> = {}): TcpSpec {
  return {
    proto: "tcp",
    saddr: CLIENT,
    daddr: VIP,
    sport: 40000,
    dport: 80,
    flags: TCP_FLAGS.SYN,
    seq: 0x11223344,
    ...over,
  };
}

function dgram(over: Partial<UdpSpec> = {}): UdpSpec {
  return {
    proto: "udp",
    saddr: CLIENT,
    daddr: VIP,
    sport: 40001,
    dport: 53,
    payload: Buffer.from("query-0123456789"),
    ...over,
  };
}

/** The same packet with the destination rewritten (what DNAT must produce, checksums recomputed from scratch). */
function dnatted<T extends PacketSpec>(spec: T, daddr: string, dport: number): Buffer {
  return buildPacket({ ...spec, daddr, dport } as PacketSpec);
}

function ctFwd(spec: TcpSpec | UdpSpec): abi.CtKey {
  return {
    saddr: spec.saddr,
    daddr: spec.daddr,
    sport: spec.sport,
    dport: spec.dport,
    proto: spec.proto === "tcp" ? TCP : UDP,
    dir: abi.CT_DIR_FORWARD,
  };
}

function ctReply(spec: TcpSpec | UdpSpec, backend: string, backendPort: number): abi.CtKey {
  return {
    saddr: backend,
    daddr: spec.saddr,
    sport: backendPort,
    dport: spec.sport,
    proto: spec.proto === "tcp" ? TCP : UDP,
    dir: abi.CT_DIR_REPLY,
  };
}

// ---- single-packet table ----

interface PacketCase {
  description: string;
  program?: Program;
  setup?: (dp: Datapath) => void;
  input: Buffer;
  verdict: number;
  /** expected frame, "unchanged", or "any" (dropped packets). */
  output: Buffer | "unchanged" | "any";
  counted: Partial<Record<Reason, number>>;
  /** extra checks on maps after the run. */
  check?: (dp: Datapath) => void;
}

const ipOptionsNop4 = Buffer.from([1, 1, 1, 1]); // four IPOPT_NOOP: IHL 6
const tsOlder = (sec: number) => monotonicNow() - BigInt(sec) * 1_000_000_000n;

const CASES: PacketCase[] = [
  {
    description: "TCP SYN to a ClusterIP with one backend is DNATed to it, source untouched",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE1, 8080),
    counted: { translated_new: 1 },
    check: (dp) => {
      assert.deepEqual(dp.ct(ctFwd(syn()))?.backendId, 1, "forward CT entry names backend 1");
      assert.deepEqual(dp.ct(ctReply(syn(), BE1, 8080))?.revNatId, 1, "reply CT entry names rev-NAT 1");
    },
  },
  {
    description: "TCP segment with IPv4 options is DNATed with both checksums right",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket(syn({ ipOptions: ipOptionsNop4, flags: TCP_FLAGS.SYN, payload: Buffer.from("hello") })),
    verdict: TC_ACT_OK,
    output: dnatted(syn({ ipOptions: ipOptionsNop4, flags: TCP_FLAGS.SYN, payload: Buffer.from("hello") }), BE1, 8080),
    counted: { translated_new: 1 },
  },
  {
    description: "UDP datagram with a checksum is DNATed and its checksum updated",
    setup: (dp) => dp.setService(SVC_UDP),
    input: buildPacket(dgram()),
    verdict: TC_ACT_OK,
    output: dnatted(dgram(), BE1, 5353),
    counted: { translated_new: 1 },
  },
  {
    description: "UDP datagram without a checksum is DNATed and keeps checksum 0",
    setup: (dp) => dp.setService(SVC_UDP),
    input: buildPacket(dgram({ checksum: "zero" })),
    verdict: TC_ACT_OK,
    output: dnatted(dgram({ checksum: "zero" }), BE1, 5353),
    counted: { translated_new: 1 },
  },
  {
    description: "TCP to an address that is no frontend passes unchanged and counts NOT_SERVICE",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket(syn({ daddr: OTHER_VIP })),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: { not_service: 1 },
  },
  {
    description: "TCP to a frontend address on another port passes unchanged",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket(syn({ dport: 81 })),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: { not_service: 1 },
  },
  {
    description: "UDP to a TCP-only frontend passes unchanged",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket(dgram({ dport: 80 })),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: { not_service: 1 },
  },
  {
    description: "ARP passes untouched and is not counted",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildNonIpv4(ETH_P_ARP),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: {},
  },
  {
    description: "IPv6 passes untouched and is not counted",
    input: buildNonIpv4(ETH_P_IPV6, 80),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: {},
  },
  {
    description: "ICMP echo to a frontend address passes untouched and is not counted",
    setup: (dp) => dp.setService(SVC_TCP),
    input: buildPacket({ proto: "icmp", saddr: CLIENT, daddr: VIP, type: 8, code: 0, body: Buffer.from("ping") }),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: {},
  },
  {
    description:
      "first fragment (MF) of a UDP datagram to a frontend is DNATed like a whole datagram (more in datapath-icmp-frag)",
    setup: (dp) => dp.setService(SVC_UDP),
    input: buildPacket(dgram({ fragFlags: IP_MF })),
    verdict: TC_ACT_OK,
    output: dnatted(dgram({ fragFlags: IP_MF }), BE1, 5353),
    counted: { translated_new: 1 },
    check: (dp) => assert.equal(dp.ct(ctFwd(dgram()))?.backendId, 1, "the fragment's flow is tracked"),
  },
  {
    description: "first fragment of a TCP segment to a frontend without backends is dropped, not rejected",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(syn({ fragFlags: IP_MF })),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { drop_fragment: 1 },
  },
  {
    description: "first fragment of a backend's reply of a tracked flow is reverse-translated",
    setup: (dp) => {
      dp.setRevNat(2, VIP, 53);
      dp.setCt(ctReply(dgram(), BE1, 5353), { lastSeenNs: monotonicNow(), backendId: 1, revNatId: 2, flags: 0 });
    },
    input: buildPacket({
      proto: "udp",
      saddr: BE1,
      daddr: CLIENT,
      sport: 5353,
      dport: 40001,
      fragFlags: IP_MF,
      payload: Buffer.alloc(64),
    }),
    verdict: TC_ACT_OK,
    output: buildPacket({
      proto: "udp",
      saddr: VIP,
      daddr: CLIENT,
      sport: 53,
      dport: 40001,
      fragFlags: IP_MF,
      payload: Buffer.alloc(64),
    }),
    counted: { reverse_translated: 1 },
  },
  {
    description: "non-first fragment whose first fragment was never seen passes unchanged, counted FRAGMENT_NO_ENTRY",
    setup: (dp) => dp.setService(SVC_UDP),
    input: buildPacket(dgram({ fragFlags: 0, fragOffset: 100 })),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: { fragment_no_entry: 1 },
  },
  {
    description: "TCP SYN to a frontend left without backends by a Local policy is dropped silently, not rejected",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [], flags: abi.SVC_F_DROP_WHEN_EMPTY }),
    input: buildPacket(syn()),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { drop_no_local_backend: 1 },
  },
  {
    description: "UDP to a frontend left without backends by a Local policy is dropped silently, not rejected",
    setup: (dp) => dp.setService({ ...SVC_UDP, backends: [], flags: abi.SVC_F_DROP_WHEN_EMPTY }),
    input: buildPacket(dgram()),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { drop_no_local_backend: 1 },
  },
  {
    description: "TCP SYN to a frontend without backends gets RST|ACK with ack = seq + 1, sent back out",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(syn()),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(syn())!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "TCP SYN with options to a frontend without backends: the RST has no options",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(syn({ tcpOptions: Buffer.from([2, 4, 0x05, 0xb4, 1, 1, 4, 2]) })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(syn({ tcpOptions: Buffer.from([2, 4, 0x05, 0xb4, 1, 1, 4, 2]) }))!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "TCP ACK with data to a frontend without backends gets RST with seq = the ACK number",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(
      syn({
        flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
        seq: 5000,
        ack: 0xdeadbeef,
        payload: Buffer.from("GET / HTTP/1.0\r\n\r\n"),
      }),
    ),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(
      syn({
        flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
        seq: 5000,
        ack: 0xdeadbeef,
        payload: Buffer.from("GET / HTTP/1.0\r\n\r\n"),
      }),
    )!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "TCP SYN|FIN with data and no ACK: the RST acknowledges data, SYN and FIN (seq wraps)",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(syn({ flags: TCP_FLAGS.SYN | TCP_FLAGS.FIN, seq: 0xfffffff8, payload: Buffer.alloc(10, 7) })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(
      syn({ flags: TCP_FLAGS.SYN | TCP_FLAGS.FIN, seq: 0xfffffff8, payload: Buffer.alloc(10, 7) }),
    )!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "TCP RST to a frontend without backends is dropped without a reply",
    setup: (dp) => dp.setService({ ...SVC_TCP, backends: [] }),
    input: buildPacket(syn({ flags: TCP_FLAGS.RST | TCP_FLAGS.ACK, ack: 1 })),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { reject_no_backend: 1 },
  },
  {
    description: "UDP to a frontend without backends gets ICMP port unreachable quoting IP header + 8 bytes",
    setup: (dp) => dp.setService({ ...SVC_UDP, backends: [] }),
    input: buildPacket(dgram()),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(dgram())!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "UDP with IPv4 options to a frontend without backends: the ICMP quote carries the options",
    setup: (dp) => dp.setService({ ...SVC_UDP, backends: [] }),
    input: buildPacket(dgram({ ipOptions: Buffer.from([1, 1, 1, 1, 1, 1, 1, 0]) })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(dgram({ ipOptions: Buffer.from([1, 1, 1, 1, 1, 1, 1, 0]) }))!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "large UDP datagram to a frontend without backends: the ICMP reply is trimmed",
    setup: (dp) => dp.setService({ ...SVC_UDP, backends: [] }),
    input: buildPacket(dgram({ payload: Buffer.alloc(1200, 0x5a) })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(dgram({ payload: Buffer.alloc(1200, 0x5a) }))!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "UDP without checksum to a frontend without backends: ICMP reply still checksummed",
    setup: (dp) => dp.setService({ ...SVC_UDP, backends: [] }),
    input: buildPacket(dgram({ checksum: "zero", payload: Buffer.alloc(0) })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(dgram({ checksum: "zero", payload: Buffer.alloc(0) }))!,
    counted: { reject_no_backend: 1 },
  },
  {
    description: "a slot naming a backend id that is not in the backend map drops as DROP_NO_BACKEND_ENTRY",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.deleteBackend(1);
    },
    input: buildPacket(syn()),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { drop_no_backend_entry: 1 },
  },
  {
    description: "a master whose slot entries are missing drops as DROP_NO_BACKEND_ENTRY",
    setup: (dp) => dp.setMasterOnly(VIP, 80, TCP, 3, 1),
    input: buildPacket(syn()),
    verdict: TC_ACT_SHOT,
    output: "any",
    counted: { drop_no_backend_entry: 1 },
  },
  {
    description: "from a pod, a frontend that exists only in the external scope is still found",
    setup: (dp) => dp.setService({ ...SVC_TCP, scope: abi.SCOPE_EXTERNAL }),
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE1, 8080),
    counted: { translated_new: 1 },
  },
  {
    description: "from a device, a source outside the cluster CIDRs uses the external-scope entry",
    program: "bpx_from_device",
    setup: (dp) => {
      dp.setConfig([CLUSTER_CIDR]);
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_INTERNAL, backends: [{ id: 1, address: BE1, port: 8080 }] });
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_EXTERNAL, backends: [{ id: 2, address: BE2, port: 8080 }] });
    },
    input: buildPacket(syn({ saddr: OUTSIDE_CLIENT })),
    verdict: TC_ACT_OK,
    output: dnatted(syn({ saddr: OUTSIDE_CLIENT }), BE2, 8080),
    counted: { translated_new: 1 },
  },
  {
    description: "from a device, a source inside a cluster CIDR uses the internal-scope entry",
    program: "bpx_from_device",
    setup: (dp) => {
      dp.setConfig(["192.0.2.0/24", CLUSTER_CIDR]);
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_INTERNAL, backends: [{ id: 1, address: BE1, port: 8080 }] });
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_EXTERNAL, backends: [{ id: 2, address: BE2, port: 8080 }] });
    },
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE1, 8080),
    counted: { translated_new: 1 },
  },
  {
    description: "from a pod, every source is internal (even one outside the cluster CIDRs)",
    setup: (dp) => {
      dp.setConfig([CLUSTER_CIDR]);
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_INTERNAL, backends: [{ id: 1, address: BE1, port: 8080 }] });
      dp.setService({ ...SVC_TCP, scope: abi.SCOPE_EXTERNAL, backends: [{ id: 2, address: BE2, port: 8080 }] });
    },
    input: buildPacket(syn({ saddr: OUTSIDE_CLIENT })),
    verdict: TC_ACT_OK,
    output: dnatted(syn({ saddr: OUTSIDE_CLIENT }), BE1, 8080),
    counted: { translated_new: 1 },
  },
  {
    description: "a backend's reply of a tracked flow gets the frontend as its source",
    setup: (dp) => {
      dp.setRevNat(1, VIP, 80);
      dp.setCt(ctReply(syn(), BE1, 8080), { lastSeenNs: monotonicNow(), backendId: 1, revNatId: 1, flags: 0 });
    },
    input: buildPacket({
      proto: "tcp",
      saddr: BE1,
      daddr: CLIENT,
      sport: 8080,
      dport: 40000,
      flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
      seq: 77,
      ack: 0x11223345,
    }),
    verdict: TC_ACT_OK,
    output: buildPacket({
      proto: "tcp",
      saddr: VIP,
      daddr: CLIENT,
      sport: 80,
      dport: 40000,
      flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
      seq: 77,
      ack: 0x11223345,
    }),
    counted: { reverse_translated: 1 },
    check: (dp) =>
      assert.equal(
        dp.ct(ctReply(syn(), BE1, 8080))!.flags & abi.CT_F_STATE,
        abi.CT_F_REPLIED,
        "reply entry REPLIED (SYN_RECV: established only by the client's ACK)",
      ),
  },
  {
    description: "a backend's UDP reply without checksum is reverse-translated and keeps checksum 0",
    setup: (dp) => {
      dp.setRevNat(2, VIP, 53);
      dp.setCt(ctReply(dgram(), BE1, 5353), { lastSeenNs: monotonicNow(), backendId: 1, revNatId: 2, flags: 0 });
    },
    input: buildPacket({
      proto: "udp",
      saddr: BE1,
      daddr: CLIENT,
      sport: 5353,
      dport: 40001,
      checksum: "zero",
      payload: Buffer.from("answer"),
    }),
    verdict: TC_ACT_OK,
    output: buildPacket({
      proto: "udp",
      saddr: VIP,
      daddr: CLIENT,
      sport: 53,
      dport: 40001,
      checksum: "zero",
      payload: Buffer.from("answer"),
    }),
    counted: { reverse_translated: 1 },
  },
  {
    description: "a reply entry whose rev-NAT entry is gone is not translated",
    setup: (dp) =>
      dp.setCt(ctReply(syn(), BE1, 8080), { lastSeenNs: monotonicNow(), backendId: 1, revNatId: 9, flags: 0 }),
    input: buildPacket({ proto: "tcp", saddr: BE1, daddr: CLIENT, sport: 8080, dport: 40000, flags: TCP_FLAGS.ACK }),
    verdict: TC_ACT_OK,
    output: "unchanged",
    counted: { not_service: 1 },
  },
  {
    description: "a tracked flow keeps its backend even when the service no longer lists it",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, TCP);
      dp.setCt(ctFwd(syn()), {
        lastSeenNs: monotonicNow(),
        backendId: 3,
        revNatId: 1,
        flags: abi.CT_F_SEEN_REPLY,
        backendAddr: BE3,
        backendPort: 9090,
      });
    },
    input: buildPacket(syn({ flags: TCP_FLAGS.ACK })),
    verdict: TC_ACT_OK,
    output: dnatted(syn({ flags: TCP_FLAGS.ACK }), BE3, 9090),
    counted: { translated_established: 1 },
  },
  {
    description: "a TCP SYN on a tracked tuple starts a new selection",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, TCP);
      dp.setCt(ctFwd(syn()), {
        lastSeenNs: monotonicNow(),
        backendId: 3,
        revNatId: 1,
        flags: abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING,
      });
    },
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE1, 8080),
    counted: { translated_new: 1 },
    check: (dp) => assert.equal(dp.ct(ctFwd(syn()))!.backendId, 1, "forward entry now names backend 1"),
  },
  {
    description: "a retransmitted SYN of a flow not answered yet keeps its backend",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, TCP);
      dp.setCt(ctFwd(syn()), {
        lastSeenNs: monotonicNow(),
        backendId: 3,
        revNatId: 1,
        flags: 0,
        backendAddr: BE3,
        backendPort: 9090,
      });
    },
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE3, 9090),
    counted: { translated_established: 1 },
  },
  {
    description:
      "an expired UDP stream (replies seen, idle > 120 s: kube-proxy's udpStreamTimeout default) starts a new selection",
    setup: (dp) => {
      dp.setService(SVC_UDP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, UDP);
      dp.setCt(ctFwd(dgram()), { lastSeenNs: tsOlder(121), backendId: 3, revNatId: 2, flags: abi.CT_F_SEEN_REPLY });
    },
    input: buildPacket(dgram()),
    verdict: TC_ACT_OK,
    output: dnatted(dgram(), BE1, 5353),
    counted: { translated_new: 1 },
  },
  {
    description: "a UDP flow idle for less than 60 s keeps its backend",
    setup: (dp) => {
      dp.setService(SVC_UDP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, UDP);
      dp.setCt(ctFwd(dgram()), {
        lastSeenNs: tsOlder(50),
        backendId: 3,
        revNatId: 2,
        flags: abi.CT_F_SEEN_REPLY,
        backendAddr: BE3,
        backendPort: 9090,
      });
    },
    input: buildPacket(dgram()),
    verdict: TC_ACT_OK,
    output: dnatted(dgram(), BE3, 9090),
    counted: { translated_established: 1 },
  },
  {
    description:
      "a TCP flow closed by an RST and idle for more than 10 s is gone: its next ACK gets an RST (seq = its ACK)",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, TCP);
      dp.setCt(ctFwd(syn()), {
        lastSeenNs: tsOlder(11),
        backendId: 3,
        revNatId: 1,
        flags: abi.CT_F_SEEN_REPLY | abi.CT_F_CLOSING,
      });
    },
    input: buildPacket(syn({ flags: TCP_FLAGS.ACK, ack: 0xa1b2c3d4 })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(syn({ flags: TCP_FLAGS.ACK, ack: 0xa1b2c3d4 }))!,
    counted: { reject_no_conntrack: 1 },
    check: (dp) => assert.equal(dp.ct(ctFwd(syn()))!.backendId, 3, "no new entry replaced the old one"),
  },
  {
    description: "a retransmitted SYN whose backend is gone is reselected (BACKEND_RESELECT)",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setCt(ctFwd(syn()), { lastSeenNs: monotonicNow(), backendId: 7, revNatId: 1, flags: 0 });
    },
    input: buildPacket(syn()),
    verdict: TC_ACT_OK,
    output: dnatted(syn(), BE1, 8080),
    counted: { translated_new: 1, backend_reselect: 1 },
    check: (dp) => assert.equal(dp.ct(ctFwd(syn()))!.backendId, 1, "forward entry now names backend 1"),
  },
  {
    description:
      "an established TCP flow whose backend is gone: its next segment gets an RST (a new backend would not know it)",
    setup: (dp) => {
      dp.setService(SVC_TCP);
      dp.setCt(ctFwd(syn()), { lastSeenNs: monotonicNow(), backendId: 7, revNatId: 1, flags: abi.CT_F_SEEN_REPLY });
    },
    input: buildPacket(syn({ flags: TCP_FLAGS.ACK, ack: 77 })),
    verdict: TC_ACT_REDIRECT,
    output: expectedReject(syn({ flags: TCP_FLAGS.ACK, ack: 77 }))!,
    counted: { reject_no_conntrack: 1 },
    check: (dp) => assert.equal(dp.ct(ctFwd(syn()))!.backendId, 7, "entry left as it was"),
  },
];

describe("bpx_from_pod / bpx_from_device: single packets", () => {
  for (const c of CASES) {
    it(c.description, async () => {
      await withDatapath(async (dp) => {
        c.setup?.(dp);
        const res = await dp.run(c.input, c.program ?? "bpx_from_pod");
        assert.equal(res.retval, c.verdict, "verdict");
        if (c.output === "unchanged") assertSamePacket(res.data, c.input, "unchanged");
        else if (c.output !== "any") assertSamePacket(res.data, c.output, "output");
        if (Buffer.isBuffer(c.output) && parsePacket(c.output).ip) {
          // The expected frames are built with fresh checksums; check the verifier agrees as well.
          assert.ok(ipv4ChecksumOk(res.data), "IPv4 header checksum verifies");
          const ip = parsePacket(c.output).ip!;
          // A fragment's L4 checksum covers the whole datagram: only the byte comparison checks it.
          if (!(ip.fragFlags & IP_MF) && !ip.fragOffset)
            assert.notEqual(l4ChecksumStatus(res.data), "bad", "L4 checksum verifies (or is UDP 'none')");
        }
        assertCounted(dp, c.counted, c.description);
        c.check?.(dp);
      });
    });
  }
});

// ---- flows ----

/** Runs one packet and returns the backend address:port it was sent to (asserting a clean DNAT). */
async function sendForward(dp: Datapath, spec: TcpSpec | UdpSpec, what: string): Promise<string> {
  const res = await dp.run(buildPacket(spec));
  assert.equal(res.retval, TC_ACT_OK, `${what}: verdict`);
  const p = parsePacket(res.data);
  const l4 = p.tcp ?? p.udp;
  assert.ok(p.ip && l4, `${what}: IPv4 ${spec.proto} out`);
  assert.equal(p.ip.saddr, spec.saddr, `${what}: saddr unchanged`);
  assert.equal(l4.sport, spec.sport, `${what}: sport unchanged`);
  assert.ok(ipv4ChecksumOk(res.data), `${what}: IPv4 checksum`);
  const l4Status = l4ChecksumStatus(res.data);
  if (spec.proto === "udp" && spec.checksum === "zero") assert.equal(l4Status, "none", `${what}: UDP checksum stays 0`);
  else assert.equal(l4Status, "ok", `${what}: L4 checksum`);
  // The rest of the packet must be exactly the input with the destination rewritten.
  assertSamePacket(res.data, dnatted(spec, p.ip.daddr, l4.dport), what);
  return `${p.ip.daddr}:${l4.dport}`;
}

describe("flows", () => {
  it("TCP to a ClusterIP with two backends: DNAT, CT entries, same backend for the flow, replies reverse-translated", async () => {
    await withDatapath(async (dp) => {
      dp.setService(SVC_TCP2);
      const first = await sendForward(dp, syn(), "SYN");
      assert.ok([`${BE1}:8080`, `${BE2}:8080`].includes(first), `SYN went to a backend, got ${first}`);
      const [beAddr] = first.split(":") as [string];
      const beId = beAddr === BE1 ? 1 : 2;

      const fwd = dp.ct(ctFwd(syn()));
      const rep = dp.ct(ctReply(syn(), beAddr, 8080));
      assert.ok(fwd && rep, "forward and reply CT entries exist");
      assert.deepEqual(
        { b: fwd.backendId, r: fwd.revNatId, f: fwd.flags, n: fwd.nextSeq },
        { b: beId, r: 1, f: abi.CT_F_SEQ_KNOWN, n: 0x11223345 },
        "forward entry: SYN_SENT, the client's next sequence number (ISN + 1)",
      );
      assert.deepEqual(
        { b: rep.backendId, r: rep.revNatId, f: rep.flags },
        { b: beId, r: 1, f: 0 },
        "reply entry: nothing from the backend yet",
      );

      // Reply from the backend: source becomes the frontend.
      const synAck: TcpSpec = {
        proto: "tcp",
        saddr: beAddr,
        daddr: CLIENT,
        sport: 8080,
        dport: 40000,
        flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
        seq: 900,
        ack: 0x11223345,
      };
      const r = await dp.run(buildPacket(synAck));
      assert.equal(r.retval, TC_ACT_OK, "reply verdict");
      assertSamePacket(r.data, buildPacket({ ...synAck, saddr: VIP, sport: 80 }), "reply reverse-translated");
      assert.ok(checksumsOk(r.data), "reply checksums verify");
      assert.equal(dp.ct(ctFwd(syn()))!.flags & abi.CT_F_STATE, abi.CT_F_REPLIED, "forward entry learnt REPLIED");
      assert.equal(
        dp.ct(ctReply(syn(), beAddr, 8080))!.flags & abi.CT_F_STATE,
        abi.CT_F_REPLIED,
        "reply entry REPLIED",
      );

      // Aged past the refresh interval first: the data path's clock has tick resolution (a few ms), so a
      // refresh within the same tick would not show.
      const entry = dp.ct(ctFwd(syn()))!;
      const before = entry.lastSeenNs - 5_000_000_000n;
      dp.setCt(ctFwd(syn()), { ...entry, lastSeenNs: before });
      for (let i = 0; i < 5; i++) {
        const again = await sendForward(
          dp,
          syn({ flags: TCP_FLAGS.ACK, seq: 0x11223345 + i, ack: 901, payload: Buffer.from(`data ${i}`) }),
          `ACK ${i}`,
        );
        assert.equal(again, first, `packet ${i} of the flow goes to the same backend`);
      }
      assert.ok(dp.ct(ctFwd(syn()))!.lastSeenNs > before, "forward entry refreshed");
      const est = abi.CT_F_SEEN_REPLY | abi.CT_F_REPLIED;
      assert.equal(dp.ct(ctFwd(syn()))!.flags & abi.CT_F_STATE, est, "the client's ACK established the flow");
      assert.equal(dp.ct(ctReply(syn(), beAddr, 8080))!.flags & abi.CT_F_STATE, est, "reply entry too");

      // The client's FIN half-closes: both entries learn FIN_FORWARD, nothing is CLOSING.
      await sendForward(dp, syn({ flags: TCP_FLAGS.FIN | TCP_FLAGS.ACK, seq: 0x11223400, ack: 901 }), "FIN");
      assert.equal(
        dp.ct(ctFwd(syn()))!.flags & abi.CT_F_STATE,
        est | abi.CT_F_FIN_FORWARD,
        "forward entry FIN_FORWARD",
      );
      assert.equal(
        dp.ct(ctReply(syn(), beAddr, 8080))!.flags & abi.CT_F_STATE,
        est | abi.CT_F_FIN_FORWARD,
        "reply entry FIN_FORWARD",
      );

      assertCounted(dp, { translated_new: 1, translated_established: 6, reverse_translated: 1 }, "flow");
    });
  });

  it("TCP: new flows from many source ports reach both backends", async () => {
    await withDatapath(async (dp) => {
      dp.setService(SVC_TCP2);
      const seen = new Map<string, number>();
      for (let i = 0; i < 64; i++) {
        const to = await sendForward(dp, syn({ sport: 20000 + i }), `SYN from port ${20000 + i}`);
        seen.set(to, (seen.get(to) ?? 0) + 1);
      }
      assert.deepEqual(
        [...seen.keys()].sort(),
        [`${BE1}:8080`, `${BE2}:8080`],
        `both backends chosen: ${JSON.stringify([...seen])}`,
      );
      assertCounted(dp, { translated_new: 64 }, "64 new flows");
    });
  });

  it("UDP to a ClusterIP with two backends: one flow sticks to one backend, many flows reach both", async () => {
    await withDatapath(async (dp) => {
      dp.setService(SVC_UDP2);
      for (const checksum of ["compute", "zero"] as const) {
        const flow = dgram({ sport: checksum === "zero" ? 50000 : 50001, checksum });
        const first = await sendForward(dp, flow, `${checksum}: first datagram`);
        for (let i = 0; i < 10; i++) {
          assert.equal(
            await sendForward(dp, { ...flow, payload: Buffer.from(`datagram ${i}`) }, `${checksum}: datagram ${i}`),
            first,
            `${checksum}: datagram ${i} same backend`,
          );
        }
        const [beAddr] = first.split(":") as [string];
        const reply: UdpSpec = {
          proto: "udp",
          saddr: beAddr,
          daddr: CLIENT,
          sport: 5353,
          dport: flow.sport,
          checksum,
          payload: Buffer.from("answer!"),
        };
        const r = await dp.run(buildPacket(reply));
        assert.equal(r.retval, TC_ACT_OK);
        assertSamePacket(
          r.data,
          buildPacket({ ...reply, saddr: VIP, sport: 53 }),
          `${checksum}: reply reverse-translated`,
        );
      }
      const seen = new Set<string>();
      for (let i = 0; i < 64; i++) seen.add(await sendForward(dp, dgram({ sport: 30000 + i }), `flow ${i}`));
      assert.deepEqual([...seen].sort(), [`${BE1}:5353`, `${BE2}:5353`], "both backends chosen");
      assertCounted(dp, { translated_new: 2 + 64, translated_established: 20, reverse_translated: 2 }, "UDP");
    });
  });

  it("ClientIP session affinity: every new flow of one client lands on one backend", async () => {
    await withDatapath(async (dp) => {
      const backends = [BE1, BE2, BE3, BE4].map((address, i) => ({ id: i + 1, address, port: 8080 }));
      dp.setService({ ...SVC_TCP, backends, flags: abi.SVC_F_AFFINITY, affinityTimeout: 10800 });
      const seen = new Set<string>();
      for (let i = 0; i < 30; i++) seen.add(await sendForward(dp, syn({ sport: 10000 + i }), `flow ${i}`));
      assert.equal(seen.size, 1, `one backend for the client, got ${[...seen].join(", ")}`);
      const [addr] = [...seen][0]!.split(":");
      const aff = dp.affinity(CLIENT, 1);
      assert.ok(aff, "affinity entry exists");
      assert.equal(backends[aff.backendId - 1]!.address, addr, "affinity entry names the chosen backend");

      // Different clients still spread (affinity is per client, not a stuck selector).
      const perClient = new Set<string>();
      for (let i = 0; i < 40; i++)
        perClient.add(await sendForward(dp, syn({ saddr: `10.244.3.${i + 1}` }), `client ${i}`));
      assert.ok(perClient.size >= 2, `clients spread over backends: ${[...perClient].join(", ")}`);
      assertCounted(dp, { translated_new: 70, affinity_hit: 29 }, "affinity");
    });
  });

  it("affinity older than its timeout is not used", async () => {
    await withDatapath(async (dp) => {
      const backends = [
        { id: 1, address: BE1, port: 8080 },
        { id: 3, address: BE3, port: 9090 },
      ];
      dp.setService({ ...SVC_TCP, backends, flags: abi.SVC_F_AFFINITY, affinityTimeout: 30 });
      const aff = dp.obj.map(abi.MAP_NAMES.affinity);
      // Expired: the client chooses again (and the new choice becomes its affinity).
      aff.update(
        abi.affinityKey.encode({ client: CLIENT, revNatId: 1 }),
        abi.affinityValue.encode({ lastUsedNs: tsOlder(31), backendId: 3 }),
      );
      await sendForward(dp, syn(), "stale affinity");
      assert.equal(dp.affinity(CLIENT, 1)!.lastUsedNs > tsOlder(5), true, "entry refreshed by the new choice");
      // Fresh: used.
      aff.update(
        abi.affinityKey.encode({ client: CLIENT, revNatId: 1 }),
        abi.affinityValue.encode({ lastUsedNs: tsOlder(5), backendId: 3 }),
      );
      assert.equal(await sendForward(dp, syn({ sport: 40002 }), "fresh affinity"), `${BE3}:9090`);
      assertCounted(dp, { translated_new: 2, affinity_hit: 1 }, "affinity timeout");
    });
  });

  it("affinity to a backend that no longer serves the frontend is ignored (not ready, removed, another Service's)", async () => {
    await withDatapath(async (dp) => {
      dp.setService({
        ...SVC_TCP,
        backends: [{ id: 1, address: BE1, port: 8080 }],
        flags: abi.SVC_F_AFFINITY,
        affinityTimeout: 10800,
      });
      // Backend 3 is still in the backend map (kept for its tracked flows, or another Service's) but is
      // not one of this frontend's backends: a fresh affinity entry naming it must not be followed.
      dp.setBackend({ id: 3, address: BE3, port: 9090 }, TCP);
      dp.obj
        .map(abi.MAP_NAMES.affinity)
        .update(
          abi.affinityKey.encode({ client: CLIENT, revNatId: 1 }),
          abi.affinityValue.encode({ lastUsedNs: tsOlder(1), backendId: 3 }),
        );
      for (let i = 0; i < 5; i++)
        assert.equal(await sendForward(dp, syn({ sport: 41000 + i }), `flow ${i}`), `${BE1}:8080`);
      assert.equal(dp.affinity(CLIENT, 1)!.backendId, 1, "the affinity now names a serving backend");
      assertCounted(dp, { translated_new: 5, affinity_hit: 4 }, "non-member affinity");
    });
  });

  it("backend removed: the tracked flow is reselected onto a remaining backend", async () => {
    await withDatapath(async (dp) => {
      dp.setService(SVC_TCP2);
      const first = await sendForward(dp, syn(), "SYN");
      const gone = first.startsWith(`${BE1}:`) ? 1 : 2;
      const remaining = SVC_TCP2.backends.find((b) => b.id !== gone)!;
      // What the reconciler does: slots first (only the remaining backend), then remove the backend; then
      // the daemon ends the removed backend's flows (zeroes their backend address).
      dp.setService({ ...SVC_TCP2, backends: [remaining] });
      dp.deleteBackend(gone);
      assert.equal(await dp.endFlowsOf([gone]), 1, "the flow's forward entry was ended");
      // The SYN was not answered: its retransmission chooses again among the remaining backends.
      const next = await sendForward(dp, syn(), "SYN retransmitted after removal");
      assert.equal(next, `${remaining.address}:8080`, "flow moved to the remaining backend");
      assert.equal(dp.ct(ctFwd(syn()))!.backendId, remaining.id, "forward entry updated");
      assert.ok(dp.ct(ctReply(syn(), remaining.address, 8080)), "reply entry for the new backend");
      assert.equal(await sendForward(dp, syn({ flags: TCP_FLAGS.ACK }), "next ACK"), next, "and stays there");
      assertCounted(dp, { translated_new: 2, backend_reselect: 1, translated_established: 1 }, "reselect");
    });
  });

  it("per-packet cost: established flow through bpx_from_pod vs the empty program", async () => {
    await withDatapath(async (dp) => {
      // Two frontends that are each other's backend: each run DNATs the packet to the other frontend,
      // so with repeat every run after the first two is a real established-flow translation.
      dp.setService({
        vip: VIP,
        port: 80,
        proto: TCP,
        revNatId: 1,
        backends: [{ id: 1, address: OTHER_VIP, port: 80 }],
      });
      dp.setService({
        vip: OTHER_VIP,
        port: 80,
        proto: TCP,
        revNatId: 2,
        backends: [{ id: 2, address: VIP, port: 80 }],
      });
      const pkt = buildPacket(syn({ flags: TCP_FLAGS.ACK, payload: Buffer.alloc(64, 1) }));
      // A SYN starts both flows; only then is the ACK tracked (an untracked ACK is reset).
      await dp.run(buildPacket(syn()), "bpx_from_pod", 2);
      assertCounted(dp, { translated_new: 2 }, "warm-up");
      const repeat = 100000;
      const res = await dp.run(pkt, "bpx_from_pod", repeat);
      assert.equal(res.retval, TC_ACT_OK);
      assert.equal(
        dp.counters().translated_established,
        BigInt(repeat),
        "every measured run was an established-flow DNAT",
      );

      const empty = new BpfObject(EMPTY_OBJECT);
      try {
        empty.load();
        const base = await empty.program("bpx_empty").testRun({ data: pkt, repeat });
        assert.equal(base.retval, TC_ACT_OK);
        console.log(
          `per-packet cost (BPF_PROG_TEST_RUN, repeat ${repeat}): bpx_from_pod established flow ${res.durationNs} ns, bpx_empty ${base.durationNs} ns`,
        );
      } finally {
        empty.close();
      }
    });
  });
});

// ---- CHECKSUM_PARTIAL over veth ----
//
// BPF_PROG_TEST_RUN skbs are CHECKSUM_NONE, so they cannot show whether the L4 update carries the pseudo
// header for CHECKSUM_PARTIAL skbs (local sockets over veth, where the checksum field holds only the
// pseudo-header seed). Here real sockets send through veths, and the veths *towards* the receivers have TX
// checksum offload turned off: the kernel then finishes every PARTIAL checksum in software
// (skb_checksum_help) from the seed the program left, and the receiver verifies the result. A wrong seed
// means a dropped SYN or datagram.
//
//   ns pod: p0 10.244.1.10 ──veth── h0 (ns node: bpx_from_pod on h0, h1 ingress; h0, h1 TX csum off)
//   ns node: h1 ──veth── b0 10.244.2.21 (ns be: TCP echo :8080, UDP echo :5353)

const NS = { pod: `bpxdp${process.pid}-pod`, node: `bpxdp${process.pid}-node`, be: `bpxdp${process.pid}-be` };

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { timeout: 10_000, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function inNs(ns: string, cmd: string, ...args: string[]): string {
  return sh("ip", ["netns", "exec", ns, cmd, ...args]);
}

/** ETHTOOL_STXCSUM (SIOCETHTOOL) off: no ethtool binary is needed. */
const TX_CSUM_OFF_PY = `
import ctypes, fcntl, socket, struct, sys
val = ctypes.create_string_buffer(struct.pack("II", 0x17, 0), 8)
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(val))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(sock.fileno(), 0x8946, ifr)
`;
import { loadCaseObject } from "./fixtures/case-object.js";

const ECHO_SERVER_JS = `
const net = require("node:net"), dgram = require("node:dgram");
const srv = net.createServer((c) => c.on("data", (d) => c.end(Buffer.concat([Buffer.from("echo:"), d]))));
const u = dgram.createSocket("udp4");
u.on("message", (m, r) => u.send(Buffer.concat([Buffer.from("echo:"), m]), r.port, r.address));
srv.listen(8080, "${BE1}", () => u.bind(5353, "${BE1}", () => console.log("ready")));
`;

const CLIENT_JS = `
const net = require("node:net"), dgram = require("node:dgram");
const out = {};
const done = () => { console.log(JSON.stringify(out)); process.exit(0); };
setTimeout(done, 4000);
const c = net.connect({ host: "${VIP}", port: 80, timeout: 3000 }, () => c.write("tcp-ping"));
let got = "";
c.on("data", (d) => (got += d));
c.on("error", (e) => (out.tcpError = e.code));
c.on("end", () => {
  out.tcp = got;
  const u = dgram.createSocket("udp4");
  u.connect(53, "${VIP}", () => u.send(Buffer.from("udp-ping")));
  u.on("message", (m, r) => { out.udp = m.toString(); out.udpFrom = r.address + ":" + r.port; done(); });
});
`;

function destroyTopology(): void {
  for (const ns of Object.values(NS)) {
    try {
      sh("ip", ["netns", "del", ns]);
    } catch {
      // not created
    }
  }
}

/** Namespaces left by an earlier run of this file that was killed before its cleanup ran. */
function removeStaleTopologies(): void {
  for (const line of sh("ip", ["netns", "list"]).split("\n")) {
    const m = /^(bpxdp(\d+)-(?:pod|node|be))\b/.exec(line);
    if (!m || Number(m[2]) === process.pid) continue;
    try {
      process.kill(Number(m[2]), 0);
    } catch {
      sh("ip", ["netns", "del", m[1]!]);
    }
  }
}

function buildTopology(progPath: string, egressPath: string): void {
  removeStaleTopologies();
  for (const ns of Object.values(NS)) sh("ip", ["netns", "add", ns]);
  sh("ip", ["-n", NS.node, "link", "add", "h0", "type", "veth", "peer", "name", "p0", "netns", NS.pod]);
  sh("ip", ["-n", NS.node, "link", "add", "h1", "type", "veth", "peer", "name", "b0", "netns", NS.be]);
  const ends: [string, string, string, string][] = [
    [NS.pod, "p0", CLIENT, "10.244.1.1"],
    [NS.be, "b0", BE1, "10.244.2.1"],
  ];
  for (const [ns, dev, addr, gw] of ends) {
    sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    sh("ip", ["-n", ns, "addr", "add", `${addr}/32`, "dev", dev]);
    sh("ip", ["-n", ns, "link", "set", dev, "up"]);
    sh("ip", ["-n", ns, "route", "add", gw, "dev", dev, "scope", "link"]);
    sh("ip", ["-n", ns, "route", "add", "default", "via", gw, "dev", dev]);
  }
  for (const [dev, gw, peer] of [
    ["h0", "10.244.1.1", CLIENT],
    ["h1", "10.244.2.1", BE1],
  ] as const) {
    sh("ip", ["-n", NS.node, "addr", "add", `${gw}/32`, "dev", dev]);
    sh("ip", ["-n", NS.node, "link", "set", dev, "up"]);
    sh("ip", ["-n", NS.node, "route", "add", `${peer}/32`, "dev", dev]);
    inNs(NS.node, "python3", "-c", TX_CSUM_OFF_PY, dev);
    inNs(NS.node, "tc", "qdisc", "add", "dev", dev, "clsact");
    inNs(NS.node, "tc", "filter", "add", "dev", dev, "ingress", "bpf", "direct-action", "pinned", progPath);
    // The stack forwards what ingress translated; egress finishes the NAT (a reply's frontend source), as the daemon attaches it.
    inNs(NS.node, "tc", "filter", "add", "dev", dev, "egress", "bpf", "direct-action", "pinned", egressPath);
  }
  inNs(
    NS.node,
    "sysctl",
    "-qw",
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
  );
}

function startServer(): Promise<ChildProcess> {
  const child = spawn("ip", ["netns", "exec", NS.be, process.execPath, "-e", ECHO_SERVER_JS], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("echo server did not start")), 5000);
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("ready")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => reject(new Error(`echo server exited (${code})`)));
  });
}

describe("rejects are rate-limited per source (reject.h)", () => {
  it("a source gets a burst of RSTs / ICMP errors, then one per interval; the rest are dropped and counted", async () => {
    await withDatapath(async (dp) => {
      dp.setService({ ...SVC_TCP, backends: [] });
      dp.setService({ ...SVC_UDP, backends: [] });
      // The first reject makes the source's bucket; its clock is then set ahead so that no token comes back
      // while this (possibly slow) test runs.
      assert.equal((await dp.run(buildPacket(syn({ sport: 30000 })))).retval, TC_ACT_REDIRECT);
      const ahead = monotonicNow() + 60_000_000_000n;
      assert.equal(dp.rejectBucket(CLIENT)?.tokens, abi.REJECT_BURST - 1, "a new source starts with a full bucket");
      dp.setRejectBucket(CLIENT, { lastNs: ahead, tokens: abi.REJECT_BURST - 1 });
      const verdicts: number[] = [];
      for (let i = 1; i < abi.REJECT_BURST + 15; i++) {
        const p = i % 2 ? dgram({ sport: 30000 + i }) : syn({ sport: 30000 + i });
        verdicts.push((await dp.run(buildPacket(p))).retval);
      }
      assert.deepEqual(
        verdicts,
        [...Array<number>(abi.REJECT_BURST - 1).fill(TC_ACT_REDIRECT), ...Array<number>(15).fill(TC_ACT_SHOT)],
        "the burst is answered (TCP RST and ICMP alike), the rest dropped",
      );
      let c = dp.counters();
      assert.equal(c.reject_no_backend, BigInt(abi.REJECT_BURST));
      assert.equal(c.reject_suppressed, 15n);

      // Another source has its own bucket.
      const other = await dp.run(buildPacket(syn({ saddr: OUTSIDE_CLIENT })));
      assert.equal(other.retval, TC_ACT_REDIRECT, "another source is answered");
      assertSamePacket(other.data, expectedReject(syn({ saddr: OUTSIDE_CLIENT }))!, "its RST");

      // An RST to a frontend is never answered and takes no token: it is not a suppressed reject.
      const rst = await dp.run(buildPacket(syn({ flags: TCP_FLAGS.RST | TCP_FLAGS.ACK })));
      assert.equal(rst.retval, TC_ACT_SHOT);
      c = dp.counters();
      assert.equal(c.reject_suppressed, 15n);

      // Tokens come back one per interval: 3.5 intervals ago -> 3 (or more if this run is slow), one spent.
      const t0 = monotonicNow();
      dp.setRejectBucket(CLIENT, { lastNs: t0 - (7n * abi.REJECT_INTERVAL_NS) / 2n, tokens: 0 });
      assert.equal((await dp.run(buildPacket(syn({ sport: 31000 })))).retval, TC_ACT_REDIRECT);
      const slack = Number((monotonicNow() - t0) / abi.REJECT_INTERVAL_NS);
      const left = dp.rejectBucket(CLIENT)!.tokens;
      assert.ok(left >= 2 && left <= 2 + slack, `3 tokens back, one spent: ${left} left (slack ${slack})`);
      // Never more than the burst, however long the source was quiet: an hour, or since boot on a machine up for
      // less (the clock is CLOCK_MONOTONIC; the field is unsigned), either far more than the burst's refill time.
      const now = monotonicNow();
      const hour = 3_600_000_000_000n;
      dp.setRejectBucket(CLIENT, { lastNs: now > hour ? now - hour : 0n, tokens: 0 });
      assert.equal((await dp.run(buildPacket(syn({ sport: 31001 })))).retval, TC_ACT_REDIRECT);
      assert.equal(dp.rejectBucket(CLIENT)!.tokens, abi.REJECT_BURST - 1, "a full bucket, one spent");
    });
  });
});

describe("CHECKSUM_PARTIAL skbs over veth", () => {
  it("TCP and UDP from a pod socket reach a backend and back with checksums the receivers verify", async () => {
    await withDatapath(async (dp) => {
      dp.setService(SVC_TCP);
      dp.setService({ ...SVC_UDP, backends: [{ id: 2, address: BE1, port: 5353 }] });
      const progPath = `${dp.dir}/prog_from_pod`;
      dp.obj.program("bpx_from_pod").pin(progPath);
      dp.obj.program("bpx_reverse").pin(`${dp.dir}/prog_reverse`);
      let server: ChildProcess | undefined;
      try {
        buildTopology(progPath, `${dp.dir}/prog_reverse`);
        server = await startServer();
        const result = JSON.parse(inNs(NS.pod, process.execPath, "-e", CLIENT_JS)) as Record<string, string>;
        const c = dp.counters();
        const counted = JSON.stringify(c, (_k, v: unknown) => (typeof v === "bigint" ? Number(v) : v));
        assert.deepEqual(
          result,
          { tcp: "echo:tcp-ping", udp: "echo:udp-ping", udpFrom: `${VIP}:53` },
          `echoes through the ClusterIP (counters ${counted})`,
        );
        assert.ok(c.translated_new >= 2n && c.reverse_translated >= 2n, `translated both ways: ${counted}`);
      } finally {
        if (server?.pid) server.kill("SIGKILL");
        destroyTopology();
      }
    });
  });
});
