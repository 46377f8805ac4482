// Packet tests of SCTP through bpf/bpfproxy.o with BPF_PROG_TEST_RUN (docs/sctp.md): the BPF data plane
// rewrites an SCTP packet's addresses only. SCTP's CRC32c covers the SCTP packet and no IP header (RFC 9260
// 6.8), so after DNAT, reverse NAT and masquerade the SCTP bytes must be exactly the client's (checksum field
// included) and the IPv4 header checksum right. Frames are built here (CRC32c from RFC 9260 appendix A,
// written independently of the BPF code) and compared byte for byte.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import {
  buildEthernet,
  buildIpv4Header,
  ETH_HLEN,
  ETH_P_IP,
  ipv4ChecksumOk,
  pseudoHeaderSum,
} from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";
import { loadCaseObject } from "./fixtures/case-object.js";

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const SCTP = 132;

const NODE = "192.0.2.11";
const EXT = "198.51.100.10";
const EXT_2 = "198.51.100.11";
const CLIENT = "10.244.1.10";
const BE = "10.244.2.21";
const VIP = "10.96.0.10";
const PORT = 3868;
const NODE_PORT = 30868;
const PORT_MIN = 61000;

type Program = "bpx_from_pod" | "bpx_from_device";
type Reason = keyof typeof abi.COUNTER_REASONS;

// ---- CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as RFC 9260 appendix A specifies it ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32c(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The checksum of an SCTP packet (its field taken as zero), in the field's byte order (RFC 9260 appendix A). */
function sctpChecksumOk(sctp: Buffer): boolean {
  const copy = Buffer.from(sctp);
  const have = copy.readUInt32LE(8);
  copy.writeUInt32LE(0, 8);
  return crc32c(copy) === have;
}

interface SctpSpec {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  vtag: number;
  /** One chunk: type, flags, value. */
  chunk: { type: number; flags?: number; value: Buffer };
}

/** The SCTP packet (common header + one chunk, padded) with its CRC32c. */
function sctpBytes(s: SctpSpec): Buffer {
  const len = 4 + s.chunk.value.length;
  const body = Buffer.alloc(12 + Math.ceil(len / 4) * 4);
  body.writeUInt16BE(s.sport, 0);
  body.writeUInt16BE(s.dport, 2);
  body.writeUInt32BE(s.vtag >>> 0, 4);
  body[12] = s.chunk.type;
  body[13] = s.chunk.flags ?? 0;
  body.writeUInt16BE(len, 14);
  s.chunk.value.copy(body, 16);
  body.writeUInt32LE(crc32c(body), 8);
  return body;
}

/** An Ethernet frame around `sctp` (already checksummed for whatever addresses: the CRC does not cover them). */
function frame(s: Pick<SctpSpec, "saddr" | "daddr">, sctp: Buffer): Buffer {
  const ip = buildIpv4Header({ saddr: s.saddr, daddr: s.daddr }, SCTP, sctp.length);
  return Buffer.concat([buildEthernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP), ip, sctp]);
}

/** INIT: initiate tag, a_rwnd, outbound and inbound streams, initial TSN (RFC 9260 3.3.2). */
function init(tag: number): SctpSpec["chunk"] {
  const v = Buffer.alloc(16);
  v.writeUInt32BE(tag, 0);
  v.writeUInt32BE(106496, 4);
  v.writeUInt16BE(10, 8);
  v.writeUInt16BE(65535, 10);
  v.writeUInt32BE(0x5eed, 12);
  return { type: 1, value: v };
}

/** DATA with a payload (RFC 9260 3.3.1): TSN, stream, sequence, PPID, then the user data. */
function data(tsn: number, text: string): SctpSpec["chunk"] {
  const v = Buffer.alloc(12);
  v.writeUInt32BE(tsn, 0);
  return { type: 0, flags: 0x03, value: Buffer.concat([v, Buffer.from(text)]) };
}

/** Asserts `got` is `want` byte for byte, with a right IPv4 checksum and an SCTP checksum that still verifies. */
function assertSame(got: Buffer, want: Buffer, what: string): void {
  assert.equal(got.toString("hex"), want.toString("hex"), `${what}: frame bytes`);
  assert.ok(ipv4ChecksumOk(got), `${what}: IPv4 header checksum`);
  assert.ok(sctpChecksumOk(got.subarray(ETH_HLEN + 20)), `${what}: CRC32c verifies`);
}

// ---- harness ----

let bpffs: PrivateBpffs | undefined;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-sctp.test.ts");
  bpffs = PrivateBpffs.create("datapath-sctp");
});

after(() => bpffs?.release());

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
      abi.config.encode({ flags: abi.CFG_F_DETECT_LOCAL, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-test" }),
    );
    dp.m(abi.MAP_NAMES.natConfig).update(
      abi.u32Key.encode(0),
      abi.natConfig.encode({ masqAddr: NODE, portMin: PORT_MIN, portMax: PORT_MIN + 3, flags: 0 }),
    );
    dp.m(abi.MAP_NAMES.nodePortAddrs).update(
      abi.be32AddrKey.encode({ address: NODE }),
      abi.nodePortAddr.encode({ flags: abi.NODEPORT_ADDR_F_SERVE | abi.NODEPORT_ADDR_F_LOCAL }),
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

  /** One frontend with one backend (the reconciler's order: backend, rev-NAT, slot, master). */
  setFrontend(f: { address: string; port: number; scope: number; flags: number; backendPort: number }): void {
    this.m(abi.MAP_NAMES.backends).update(
      abi.u32Key.encode(1),
      abi.backend.encode({ address: BE, port: f.backendPort, proto: SCTP, flags: 0 }),
    );
    this.m(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(1), abi.revNat.encode({ address: f.address, port: f.port }));
    const key = (slot: number) =>
      abi.svcKey.encode({ address: f.address, port: f.port, proto: SCTP, scope: f.scope, slot });
    this.m(abi.MAP_NAMES.services).update(
      key(1),
      abi.svcValue.encode({ backendId: 1, count: 0, revNatId: 1, flags: 0, affinityTimeout: 0 }),
    );
    this.m(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({ backendId: 0, count: 1, revNatId: 1, flags: f.flags, affinityTimeout: 0 }),
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

  run(f: Buffer, program: Program) {
    return runThroughStack(this.obj, program, f);
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

describe("SCTP through the BPF data plane (addresses only)", () => {
  it("ClusterIP from a pod: INIT to the backend with the SCTP bytes untouched, INIT ACK and DATA back from the ClusterIP", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: VIP,
        port: PORT,
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
        backendPort: PORT,
      });
      const fwd: SctpSpec = { saddr: CLIENT, daddr: VIP, sport: 40000, dport: PORT, vtag: 0, chunk: init(0x11111111) };
      const sctp = sctpBytes(fwd);
      const out = await dp.run(frame(fwd, sctp), "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_OK);
      assertSame(out.data, frame({ saddr: CLIENT, daddr: BE }, sctp), "INIT to the backend");

      // INIT ACK (type 2) from the backend, then DATA: source restored to the ClusterIP, SCTP bytes as sent.
      const ack: SctpSpec = {
        saddr: BE,
        daddr: CLIENT,
        sport: PORT,
        dport: 40000,
        vtag: 0x11111111,
        chunk: { ...init(0x2222), type: 2 },
      };
      const back = await dp.run(frame(ack, sctpBytes(ack)), "bpx_from_pod");
      assert.equal(back.retval, TC_ACT_OK);
      assertSame(back.data, frame({ saddr: VIP, daddr: CLIENT }, sctpBytes(ack)), "INIT ACK from the ClusterIP");
      const reply: SctpSpec = { ...ack, vtag: 0x11111111, chunk: data(7, "pong") };
      const back2 = await dp.run(frame(reply, sctpBytes(reply)), "bpx_from_pod");
      assertSame(back2.data, frame({ saddr: VIP, daddr: CLIENT }, sctpBytes(reply)), "DATA from the ClusterIP");

      // The client's next packet belongs to the flow.
      const more: SctpSpec = { ...fwd, vtag: 0x2222, chunk: data(1, "ping") };
      const out2 = await dp.run(frame(more, sctpBytes(more)), "bpx_from_pod");
      assertSame(out2.data, frame({ saddr: CLIENT, daddr: BE }, sctpBytes(more)), "DATA to the backend");
      // A TCP/UDP packet whose checksum field holds the folded pseudo-header sum is taken as CHECKSUM_PARTIAL
      // (nat.h nat_l4_csum_complete): SCTP has its verification tag there. Tags whose low 16 bits are that sum
      // (either way of writing it) take the other way through nat.h, which must leave the bytes alone too.
      const len = sctpBytes({ ...fwd, chunk: data(2, "ping") }).length;
      const sum = pseudoHeaderSum(CLIENT, VIP, SCTP, len);
      for (const low of [sum, ~sum & 0xffff]) {
        const odd: SctpSpec = { ...fwd, vtag: 0x2222_0000 + low, chunk: data(2, "ping") };
        const o = await dp.run(frame(odd, sctpBytes(odd)), "bpx_from_pod");
        assertSame(o.data, frame({ saddr: CLIENT, daddr: BE }, sctpBytes(odd)), `tag ${low.toString(16)}`);
      }
      assertCounted(dp, { translated_new: 1, translated_established: 3, reverse_translated: 2 }, "flow");
    }));

  it("NodePort with masquerade (node port = backend port): the source becomes the node with the client's own port; replies go back to the client", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: abi.WILDCARD_ADDRESS,
        port: NODE_PORT,
        scope: abi.SCOPE_EXTERNAL,
        flags: abi.SVC_F_MASQUERADE,
        backendPort: NODE_PORT,
      });
      const fwd: SctpSpec = { saddr: EXT, daddr: NODE, sport: 40000, dport: NODE_PORT, vtag: 0, chunk: init(0x3333) };
      const out = await dp.run(frame(fwd, sctpBytes(fwd)), "bpx_from_device");
      assert.equal(out.retval, TC_ACT_OK);
      assertSame(out.data, frame({ saddr: NODE, daddr: BE }, sctpBytes(fwd)), "INIT masqueraded, port kept");

      const ack: SctpSpec = {
        saddr: BE,
        daddr: NODE,
        sport: NODE_PORT,
        dport: 40000,
        vtag: 0x3333,
        chunk: { ...init(0x4444), type: 2 },
      };
      const back = await dp.run(frame(ack, sctpBytes(ack)), "bpx_from_device");
      assert.equal(back.retval, TC_ACT_OK);
      assertSame(back.data, frame({ saddr: NODE, daddr: EXT }, sctpBytes(ack)), "INIT ACK to the client");

      // Another client with the same port to the same backend cannot be given another port (the CRC32c would
      // need recomputing): refused while the first association lives, counted.
      const other: SctpSpec = { ...fwd, saddr: EXT_2, chunk: init(0x5555) };
      const refused = await dp.run(frame(other, sctpBytes(other)), "bpx_from_device");
      assert.equal(refused.retval, TC_ACT_SHOT, "second client with the same port refused");
      // A client with another port is served.
      const third: SctpSpec = { ...fwd, saddr: EXT_2, sport: 40001, chunk: init(0x6666) };
      const ok = await dp.run(frame(third, sctpBytes(third)), "bpx_from_device");
      assert.equal(ok.retval, TC_ACT_OK);
      assertSame(ok.data, frame({ saddr: NODE, daddr: BE }, sctpBytes(third)), "another port served");
      assertCounted(dp, { translated_new: 2, reverse_translated: 1, drop_snat_exhausted: 1 }, "flows");
    }));

  it("a packet to an SCTP port BPF does not serve passes untouched (the kernel's IPVS may serve it)", () =>
    withDatapath(async (dp) => {
      dp.setFrontend({
        address: VIP,
        port: PORT,
        scope: abi.SCOPE_INTERNAL,
        flags: abi.SVC_F_MASQ_OUTSIDE,
        backendPort: PORT,
      });
      const fwd: SctpSpec = { saddr: CLIENT, daddr: VIP, sport: 40000, dport: PORT + 1, vtag: 0, chunk: init(1) };
      const f = frame(fwd, sctpBytes(fwd));
      const out = await dp.run(f, "bpx_from_pod");
      assert.equal(out.retval, TC_ACT_OK);
      assert.equal(out.data.toString("hex"), f.toString("hex"));
      assertCounted(dp, { not_service: 1 }, "pass");
    }));
});
