// Packet test (BPF_PROG_TEST_RUN) of the owner check on ICMP errors (bpf/lib/icmp.h): an error about a
// masqueraded flow's SNAT port is translated only toward the client that owns the port, as a reply is
// (snat.h nat_reply_entry_owned). A stale reply entry (its client's flow no longer names the port: a lost
// race, or an entry left behind) names somebody else; an error sent there would reach a client that never
// talked to that backend on that port (a port unreachable ends its UDP socket's next call, a fragmentation
// needed lowers its path MTU). Expected frames are built from scratch by the fixtures and compared byte for
// byte.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfObject, possibleCpus } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { ETH_HLEN, TCP_FLAGS, buildPacket, describePacket, parsePacket, type TcpSpec } from "./fixtures/packets.js";
import { runThroughStack } from "./fixtures/stack-path.js";

const OBJECT = "bpf/bpfproxy.o";
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TCP = abi.IPPROTO_TCP;

const CLIENT = "10.244.1.10";
const OTHER = "10.244.1.77"; // another pod of the node, which never talked to the Service
const NODE = "192.0.2.11";
const VIP = "10.96.0.10";
const BE1 = "10.244.2.21";
const PORT_MIN = 61000;
const ICMP_DEST_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;

type Reason = keyof typeof abi.COUNTER_REASONS;

let bpffs: PrivateBpffs | undefined;
let caseNo = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("run as root: bash scripts/test.sh test/datapath-icmp-owner.test.ts");
  bpffs = PrivateBpffs.create("datapath-icmpowner");
});

after(() => bpffs?.release());

/** The object loaded with its maps pinned under a directory of the private bpffs, removed after. */
async function withObject(fn: (obj: BpfObject) => Promise<void>): Promise<void> {
  const dir = `${bpffs!.path}/case-${++caseNo}`;
  mkdirSync(dir);
  const obj = new BpfObject(OBJECT, { pinRoot: dir });
  try {
    obj.load();
    obj
      .map(abi.MAP_NAMES.config)
      .update(
        abi.u32Key.encode(0),
        abi.config.encode({ flags: 0, clusterCidrs: ["10.244.0.0/16"], nodeName: "node-test" }),
      );
    obj
      .map(abi.MAP_NAMES.natConfig)
      .update(
        abi.u32Key.encode(0),
        abi.natConfig.encode({ masqAddr: NODE, portMin: PORT_MIN, portMax: PORT_MIN + 3, flags: 0 }),
      );
    // A masqueraded ClusterIP VIP:80/TCP with one backend, BE1:8080.
    obj
      .map(abi.MAP_NAMES.backends)
      .update(abi.u32Key.encode(1), abi.backend.encode({ address: BE1, port: 8080, proto: TCP, flags: 0 }));
    obj.map(abi.MAP_NAMES.revNat).update(abi.u32Key.encode(1), abi.revNat.encode({ address: VIP, port: 80 }));
    const key = (slot: number) =>
      abi.svcKey.encode({ address: VIP, port: 80, proto: TCP, scope: abi.SCOPE_INTERNAL, slot });
    obj
      .map(abi.MAP_NAMES.services)
      .update(key(1), abi.svcValue.encode({ backendId: 1, count: 0, revNatId: 1, flags: 0, affinityTimeout: 0 }));
    obj.map(abi.MAP_NAMES.services).update(
      key(0),
      abi.svcValue.encode({
        backendId: 0,
        count: 1,
        revNatId: 1,
        flags: abi.SVC_F_MASQUERADE,
        affinityTimeout: 0,
      }),
    );
    await fn(obj);
  } finally {
    obj.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function counters(obj: BpfObject): Record<Reason, bigint> {
  const map = obj.map(abi.MAP_NAMES.counters);
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

const seg = (over: Partial<TcpSpec> = {}): TcpSpec => ({
  proto: "tcp",
  saddr: CLIENT,
  daddr: VIP,
  sport: 40000,
  dport: 80,
  flags: TCP_FLAGS.SYN,
  seq: 0x01020304,
  ack: 0,
  payload: Buffer.alloc(0),
  ...over,
});

/** An ICMP fragmentation-needed frame from `saddr` to `daddr` quoting the IP datagram of `frame`. */
function fragNeeded(saddr: string, daddr: string, frame: Buffer): Buffer {
  const rest = Buffer.alloc(4);
  rest.writeUInt16BE(1280, 2);
  const body = Buffer.from(frame.subarray(ETH_HLEN));
  return buildPacket({
    proto: "icmp",
    saddr,
    daddr,
    tos: 0xc0,
    id: 0,
    type: ICMP_DEST_UNREACH,
    code: ICMP_FRAG_NEEDED,
    rest,
    body,
  });
}

describe("ICMP errors about a masqueraded flow's port", () => {
  it("go to the client that owns the port, and are dropped (drop_nat_not_owner) when the reply entry names a client whose flow does not own it", () =>
    withObject(async (obj) => {
      const fwd = await runThroughStack(obj, "bpx_from_pod", buildPacket(seg()));
      assert.equal(fwd.retval, TC_ACT_OK);
      const port = parsePacket(fwd.data).tcp!.sport;
      assert.ok(port >= PORT_MIN && port <= PORT_MIN + 3, `masqueraded from the SNAT range: ${port}`);
      // What BE1's side saw: NODE:port -> BE1:8080. The backend's error about it.
      const sent = buildPacket(seg({ saddr: NODE, sport: port, daddr: BE1, dport: 8080 }));
      const owned = await runThroughStack(obj, "bpx_from_device", fragNeeded(BE1, NODE, sent));
      assert.equal(owned.retval, TC_ACT_OK);
      assert.equal(
        describePacket(owned.data),
        describePacket(fragNeeded(VIP, CLIENT, buildPacket(seg()))),
        "the owner's error: to CLIENT, quoting CLIENT -> VIP",
      );

      // The reply entry now names OTHER (port 40000), whose flow (none) does not own the port; CLIENT's
      // forward entry still names the port, so only the reply entry is stale.
      const nat = obj.map(abi.MAP_NAMES.nat);
      const rkey = abi.natKey.encode({
        saddr: BE1,
        daddr: NODE,
        sport: 8080,
        dport: port,
        proto: TCP,
        dir: abi.NAT_DIR_REPLY,
      });
      const e = abi.natEntry.decode(nat.lookup(rkey)!);
      nat.update(rkey, abi.natEntry.encode({ ...e, addr: OTHER }));
      const before = counters(obj);
      const stale = await runThroughStack(obj, "bpx_from_device", fragNeeded(BE1, NODE, sent));
      assert.equal(
        stale.retval,
        TC_ACT_SHOT,
        `not translated toward OTHER: ${describePacket(stale.data)} (retval ${stale.retval})`,
      );
      const after = counters(obj);
      assert.equal(after.drop_nat_not_owner - before.drop_nat_not_owner, 1n, "counted as drop_nat_not_owner");
      assert.equal(after.icmp_translated, before.icmp_translated, "nothing translated");
    }));
});
