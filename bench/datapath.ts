// Per-packet cost of bpfproxy's tc data path, measured with BPF_PROG_TEST_RUN at several service counts, in
// both delivery modes side by side in one run:
//   - stack (the default): bpx_from_pod translates and hands the packet to the host stack, and every packet
//     then leaves through a device whose tc egress runs bpx_reverse (masquerade, the reply's source);
//   - bypass (--bypass-netfilter): bpx_from_pod looks the next hop up and redirects (bpf_redirect_neigh),
//     and the packet still crosses bpx_reverse at the egress device's tc hook.
// So a packet's cost in each mode is bpx_from_pod's run plus bpx_reverse's run on what bpx_from_pod made of
// it. Next to them the floor: bpf/tests/one_lookup.o, which parses the packet and does exactly one hash
// lookup in a map of the service map's size holding one entry per frontend.
// Prints ns per packet and the ratio to the one-lookup reference; writes bench/results/datapath.{json,svg}.
// Then IPv6 beside IPv4 on the stack path: the same model with IPv6 frontends and backends, its packets
// handed by bpx_from_pod and bpx_reverse to their IPv6 programs (tail calls, as on a node), measured the ways
// that need no ping-pong pair (single runs over distinct flows; a non-service packet rerun), next to IPv4's.
// The programs run in a network namespace the benchmark creates (and deletes): the pod source check and
// the bypass's FIB lookup need a pod device and routes, as on a node.
//
//   npm run bench:datapath            (or: node --import tsx bench/datapath.ts [repeat] [sizes...])
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BpfObject } from "../src/native/index.js";
import { Prefilter } from "../src/dataplane/bpf/prefilter.js";
import { lineChart } from "./svg.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import {
  CFG_F_POD_SOURCE_CHECK,
  MAP_NAMES,
  NAT_CFG_F_FIB_REDIRECT,
  config as configCodec,
  natConfig,
  u32Key,
} from "../src/dataplane/bpf/abi.js";
import { packagePath } from "../src/paths.js";
import { translatedMark } from "../src/dataplane/bpf/index.js";
import { writeIPv4 } from "../src/k8s/ip.js";
import { buildPacket, TCP_FLAGS } from "../test/fixtures/packets.js";
import { buildFrame6 } from "../test/fixtures/packets6.js";
import { fillTailCalls } from "../src/dataplane/bpf/tail.js";
import { writeNat6Config } from "../src/dataplane/bpf/nat6.js";
import { bytesToIpv6 } from "../src/k8s/ip.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

// BPF_PROG_TEST_RUN's repeat reruns the program on the same skb, which our translation has
// already rewritten. So the measured frontends are a ping-pong pair, each the other's only
// backend: every rerun of an ACK is an established-flow DNAT. New flows (each needs a fresh
// tuple) and replies cannot be chained that way; they are measured as many single runs, next to
// the reference measured the same way.
// Repeating one packet keeps its lookups in the CPU cache. The "fresh" columns are single runs
// over distinct flows (each flow one packet, distinct source ports, frontends in turn) for both
// programs, the reference hitting a different frontend each run: cold-ish lookups on both sides.
const repeat = Number(process.argv[2] ?? 200_000);
const singleRuns = 20_000;
const sizes = process.argv.length > 3 ? process.argv.slice(3).map(Number) : [10, 1_000, 10_000, 30_000, 100_000];
const RESULTS = packagePath("bench/results");
// 100k frontends with 2 backends each need 300k service entries; the default map holds 1,048,576, and a
// size that does not fit would program as many as fit and say so.
const MAX_SVC_ENTRIES = 1_048_576; // the default size of bpx_svc_v2 (docs/maps.md)
const IN_NETNS = "BPX_BENCH_DATAPATH_NETNS";
const MODES = ["stack", "bypass"] as const;
type Mode = (typeof MODES)[number];

function vip(i: number): string {
  return `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

const vip6 = (i: number) => `fd00:96::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;

function model(n: number, backendsPer: number, family: 4 | 6 = 4): NodeModel {
  const frontends: Frontend[] = [];
  for (let i = 0; i < n; i++) {
    frontends.push({
      service: `bench/svc-${i}`,
      portName: "http",
      type: "ClusterIP",
      address: family === 6 ? vip6(i) : vip(i),
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: Array.from({ length: backendsPer }, (_, b) => ({
        address:
          family === 6
            ? `fd00:10:244::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`
            : `10.244.${(i >> 8) & 0xff}.${i & 0xff}`,
        port: 8080 + b,
        state: "active" as const,
        nodeLocal: true,
      })),
    });
  }
  return { node: "bench", frontends, extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })) };
}

/** The network namespace's devices: the client's pod, the backends' pods, and the node's uplink. */
interface Devices {
  client: number;
  backends: number;
}

/** BPF_PROG_TEST_RUN's __sk_buff: the packet arrives on `ifindex` (offsetof(struct __sk_buff, ifindex) = 40)
 * with `mark` (offset 8; 0 = the kernel's loopback device for ifindex 0). */
function skbOn(ifindex: number, mark = 0): Buffer {
  const ctx = Buffer.alloc(44);
  ctx.writeUInt32LE(mark, 8);
  ctx.writeUInt32LE(ifindex, 40);
  return ctx;
}

interface Run {
  durationNs: number;
  retval: number;
  data: Buffer;
  /** skb->mark after the run: ingress sets the translated mark bit (datapath.h mark_translated). */
  mark: number;
}

async function run(obj: BpfObject, prog: string, data: Buffer, ifindex: number, times = 1, mark = 0): Promise<Run> {
  const r = await obj.program(prog).testRun({ data, repeat: times, ctx: skbOn(ifindex, mark) });
  return { ...r, mark: r.ctx ? r.ctx.readUInt32LE(8) : 0 };
}

async function repeated(obj: BpfObject, prog: string, data: Buffer, ifindex = 0): Promise<number> {
  return (await run(obj, prog, data, ifindex, repeat)).durationNs;
}

/** `repeat` runs of a packet whose TTL each run may take one from (bypass: redirected past the stack),
 * as calls of 250 repeats of it (sent at TTL 255): its TTL never reaches 1, where the stack takes over. */
async function repeatedTtl(obj: BpfObject, prog: string, fresh: Buffer, ifindex: number): Promise<Run> {
  let total = 0;
  let last: Run | undefined;
  const calls = Math.ceil(repeat / 250);
  for (let i = 0; i < calls; i++) {
    last = await run(obj, prog, fresh, ifindex, 250);
    total += last.durationNs;
  }
  return { ...last!, durationNs: Math.round(total / calls) };
}

async function single(obj: BpfObject, prog: string, data: Buffer, ifindex = 0, mark = 0): Promise<number> {
  let total = 0;
  for (let i = 0; i < singleRuns; i++) total += (await run(obj, prog, data, ifindex, 1, mark)).durationNs;
  return Math.round(total / singleRuns);
}

/** Median of single runs: robust to the interrupts and preemptions of a shared machine. */
async function singleMedian(obj: BpfObject, prog: string, data: Buffer, mark = 0): Promise<number> {
  const d: number[] = [];
  for (let i = 0; i < singleRuns; i++) d.push((await run(obj, prog, data, 0, 1, mark)).durationNs);
  return d.sort((a, b) => a - b)[d.length >> 1]!;
}

/** bpf/tests/empty.o (returns at once): the harness's own share of a single run (median) and of a repeated run. */
async function emptyProgram(): Promise<{ single: number; repeated: number }> {
  const obj = new BpfObject(packagePath("bpf/tests/empty.o"));
  try {
    obj.load();
    const p = tcp("10.244.9.9", 40001, 9000, TCP_FLAGS.ACK);
    return { single: await singleMedian(obj, "bpx_empty", p), repeated: await repeated(obj, "bpx_empty", p) };
  } finally {
    obj.close();
  }
}
let empty = { single: 0, repeated: 0 };

const ratio = (c: number, base: number) => `${c} (${(c / Math.max(base, 1)).toFixed(1)}x)`;

/** ns per packet: ingress (bpx_from_pod) + egress (bpx_reverse on ingress's output) = total. */
interface Cost {
  ingress: number;
  egress: number;
  total: number;
}

interface Measured {
  newFlow: Cost;
  established: Cost;
  notService: Cost;
  reply: Cost;
  /** Single runs, one per distinct flow (fresh keys). */
  fresh: { established: Cost; reply: Cost };
  /** bpx_from_pod's verdict for an established packet: TC_ACT_OK (0, the stack) or TC_ACT_REDIRECT (7). */
  verdict: number;
  /** The mark bpx_from_pod left on an established packet (the translated bit: egress skips it). */
  mark: number;
}

interface Row {
  services: number;
  fit: number;
  reference: number;
  referenceMiss: number;
  reference1: number;
  /** The reference's single runs over distinct frontends (hit) and distinct non-service tuples (miss). */
  referenceFresh: { hit: number; miss: number };
  modes: Record<Mode, Measured>;
}

/** Loads bpfproxy into its own bpffs and programs `m` and the delivery mode as the daemon does. */
async function programmed(m: NodeModel, mode: Mode) {
  const bpffs = PrivateBpffs.create("bench");
  // BPX_BENCH_OBJECT: another build of bpfproxy.o, for an A/B run of a change.
  const obj = new BpfObject(process.env.BPX_BENCH_OBJECT ?? packagePath("bpf/bpfproxy.o"), { pinRoot: bpffs.path });
  try {
    obj.load();
    // As the daemon does right after load: the IPv6 programs in their tail-call slots, the IPv6 masquerade address.
    fillTailCalls(obj);
    writeNat6Config(obj.map(MAP_NAMES.nat6Config), "fd00::1");
    // The daemon's configuration (src/dataplane/bpf/index.ts): the pod source check always, FIB redirect in bypass.
    obj
      .map(MAP_NAMES.config)
      .update(
        u32Key.encode(0),
        configCodec.encode({ flags: CFG_F_POD_SOURCE_CHECK, clusterCidrs: [], nodeName: "bench" }),
      );
    obj.map(MAP_NAMES.natConfig).update(
      u32Key.encode(0),
      natConfig.encode({
        masqAddr: "10.0.0.1",
        portMin: 61000,
        portMax: 65535,
        flags: mode === "bypass" ? NAT_CFG_F_FIB_REDIRECT : 0,
        // The daemon's default (bpfproxy.translatedMarkBit); BPX_BENCH_NO_MARK=1 measures without it.
        translatedMark: process.env.BPX_BENCH_NO_MARK ? 0 : translatedMark(),
      }),
    );
    const rec = new LbReconciler({
      services: obj.map(MAP_NAMES.services),
      backends: obj.map(MAP_NAMES.backends),
      revNat: obj.map(MAP_NAMES.revNat),
      svcMeta: obj.map(MAP_NAMES.svcMeta),
      maglev: obj.map(MAP_NAMES.maglev),
      affinityMatch: obj.map(MAP_NAMES.affinityMatch),
      services6: obj.map(MAP_NAMES.services6),
      backends6: obj.map(MAP_NAMES.backends6),
    });
    await rec.restore();
    const pf = new Prefilter(obj.map(MAP_NAMES.prefilter));
    pf.restore();
    // The data plane's order: the pre-filter covers the encoded entries before they are written.
    await rec.apply(m, { beforeWrite: (bits, complete) => pf.before(bits, m.nodePortIPs ?? [], complete) });
    await pf.after();
  } catch (e) {
    obj.close();
    bpffs.release();
    throw e;
  }
  return {
    obj,
    release: () => {
      obj.close();
      bpffs.release();
    },
  };
}

const CLIENT = "10.244.200.7";
const tcp = (daddr: string, sport: number, dport: number, flags: number, saddr = CLIENT, ttl = 64) =>
  buildPacket({
    proto: "tcp",
    saddr,
    daddr,
    sport,
    dport,
    flags,
    ttl,
    payload: flags === TCP_FLAGS.SYN ? undefined : Buffer.alloc(64),
  });
const dst = (p: Buffer) => ({ addr: `${p[30]}.${p[31]}.${p[32]}.${p[33]}`, port: p.readUInt16BE(36) });

const CLIENT6 = "fd00:10:245::7";
const tcp6 = (daddr: string, sport: number, dport: number, flags: number, saddr = CLIENT6) =>
  buildFrame6({
    proto: "tcp",
    saddr,
    daddr,
    sport,
    dport,
    flags,
    payload: flags === TCP_FLAGS.SYN ? undefined : Buffer.alloc(64),
  });
const dst6 = (p: Buffer) => ({ addr: bytesToIpv6(p, 38), port: p.readUInt16BE(56) });

/** The i-th distinct flow of the single-run loops: to the frontends in turn, each from its own source port. */
const flowPort = (i: number) => 1024 + i;

/** Average of single runs, one per packet. */
async function singles(obj: BpfObject, prog: string, packets: (i: number) => Buffer, ifindex = 0): Promise<number> {
  let total = 0;
  for (let i = 0; i < singleRuns; i++) total += (await run(obj, prog, packets(i), ifindex)).durationNs;
  return Math.round(total / singleRuns);
}

const cost = (ingress: number, egress: number): Cost => ({ ingress, egress, total: ingress + egress });

/** Single runs of bpx_from_pod over `packets`, each output then once through bpx_reverse. */
async function singlesBoth(
  obj: BpfObject,
  packets: (i: number) => Buffer,
  ifindex: number,
  seen?: (i: number, out: Buffer) => void,
): Promise<Cost> {
  let ingress = 0;
  let egress = 0;
  for (let i = 0; i < singleRuns; i++) {
    const r = await run(obj, "bpx_from_pod", packets(i), ifindex);
    ingress += r.durationNs;
    seen?.(i, r.data);
    // Egress sees the skb as ingress left it: its data and its mark.
    egress += (await run(obj, "bpx_reverse", r.data, 0, 1, r.mark)).durationNs;
  }
  return cost(Math.round(ingress / singleRuns), Math.round(egress / singleRuns));
}

/** new flow, established, not a service, reply: ns per packet in one mode on one programmed model. */
async function measure(obj: BpfObject, m: NodeModel, fit: number, dev: Devices): Promise<Measured> {
  const target = m.frontends[fit - 2]!.address;
  const syn = tcp(target, 40000, 80, TCP_FLAGS.SYN);
  const ack = tcp(target, 40000, 80, TCP_FLAGS.ACK, CLIENT, 255);
  // A reply needs a flow to a real backend: open one to another frontend and read where it went.
  const out = (await run(obj, "bpx_from_pod", tcp(m.frontends[0]!.address, 40000, 80, TCP_FLAGS.SYN), dev.client)).data;
  const reply = tcp(CLIENT, dst(out).port, 40000, TCP_FLAGS.ACK, dst(out).addr);
  // Not a service: to a pod port no Service uses, from a non-backend.
  const other = tcp("10.244.9.9", 40001, 9000, TCP_FLAGS.ACK);
  // A rerun SYN on one skb is a retransmission of a tracked flow, not a new flow: new flows are single
  // runs, each from another source port. Where each went, for its reply below.
  const backends: { addr: string; port: number }[] = [];
  const newFlow = await singlesBoth(
    obj,
    (i) => tcp(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.SYN),
    dev.client,
    (i, o) => (backends[i] = dst(o)),
  );
  // Fresh keys: the next packet of each of those flows, then a reply of each.
  const fresh = {
    established: await singlesBoth(
      obj,
      (i) => tcp(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.ACK),
      dev.client,
    ),
    reply: await singlesBoth(
      obj,
      (i) => tcp(CLIENT, backends[i]!.port, flowPort(i), TCP_FLAGS.ACK, backends[i]!.addr),
      dev.backends,
    ),
  };
  await repeated(obj, "bpx_from_pod", syn, dev.client); // creates both flows of the pair
  await repeated(obj, "bpx_from_pod", ack, dev.client); // warm-up
  const est = await repeatedTtl(obj, "bpx_from_pod", ack, dev.client);
  // Egress sees what ingress made of the packet: rerunning it there redoes the same lookups each time. With the
  // translated mark it clears the bit and passes, but only its first run on the skb sees the bit: that cost is
  // measured in single runs (median), above the empty program's (the harness), plus the empty program's share
  // of a repeated run.
  const established = cost(
    est.durationNs,
    est.mark
      ? Math.max(0, (await singleMedian(obj, "bpx_reverse", est.data, est.mark)) - empty.single) + empty.repeated
      : await repeated(obj, "bpx_reverse", est.data),
  );
  const notService = cost(
    await repeated(obj, "bpx_from_pod", other, dev.client),
    await repeated(obj, "bpx_reverse", other),
  );
  const replyOut = (await run(obj, "bpx_from_pod", reply, dev.backends)).data;
  const replyCost = cost(
    await single(obj, "bpx_from_pod", reply, dev.backends),
    await single(obj, "bpx_reverse", replyOut),
  );
  return { newFlow, established, notService, reply: replyCost, fresh, verdict: est.retval, mark: est.mark };
}

/** IPv6 and IPv4 measured the same ways on the stack path: single runs over distinct flows, a non-service
 * packet rerun. `packet` builds the family's TCP packets, `to` reads where a translated one went. */
interface FamilyCost {
  newFlow: Cost;
  freshEstablished: Cost;
  freshReply: Cost;
  notService: Cost;
}
async function measureFamily(
  obj: BpfObject,
  m: NodeModel,
  fit: number,
  dev: Devices,
  packet: typeof tcp,
  to: typeof dst,
  client: string,
  other: string,
): Promise<FamilyCost> {
  const backends: { addr: string; port: number }[] = [];
  const newFlow = await singlesBoth(
    obj,
    (i) => packet(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.SYN),
    dev.client,
    (i, o) => (backends[i] = to(o)),
  );
  if (backends[0]!.addr === m.frontends[0]!.address) throw new Error(`new flows were not translated (${client})`);
  const freshEstablished = await singlesBoth(
    obj,
    (i) => packet(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.ACK),
    dev.client,
  );
  const freshReply = await singlesBoth(
    obj,
    (i) => packet(client, backends[i]!.port, flowPort(i), TCP_FLAGS.ACK, backends[i]!.addr),
    dev.backends,
  );
  const o = packet(other, 40001, 9000, TCP_FLAGS.ACK);
  const notService = cost(await repeated(obj, "bpx_from_pod", o, dev.client), await repeated(obj, "bpx_reverse", o));
  return { newFlow, freshEstablished, freshReply, notService };
}

async function reference(m: NodeModel, fit: number) {
  const obj = new BpfObject(packagePath("bpf/tests/one_lookup.o"));
  try {
    obj.load();
    const table = obj.map("bpx_ref_table");
    const keys = Buffer.alloc(fit * 8);
    const values = Buffer.alloc(fit * 8);
    for (let i = 0; i < fit; i++) {
      const fe = m.frontends[i]!;
      writeIPv4(keys, i * 8, fe.address);
      keys.writeUInt16BE(fe.port, i * 8 + 4);
      keys.writeUInt8(6, i * 8 + 6);
      values.writeBigUInt64LE(BigInt(i + 1), i * 8);
    }
    for (let at = 0; at < fit; at += 50_000) {
      const n = Math.min(50_000, fit - at);
      table.updateBatch(keys.subarray(at * 8, (at + n) * 8), values.subarray(at * 8, (at + n) * 8), n);
    }
    const hit = tcp(m.frontends[fit - 2]!.address, 40000, 80, TCP_FLAGS.ACK);
    return {
      hit: await repeated(obj, "bpx_one_lookup", hit),
      miss: await repeated(obj, "bpx_one_lookup", tcp("10.244.9.9", 40001, 9000, TCP_FLAGS.ACK)),
      single: await single(obj, "bpx_one_lookup", hit),
      fresh: {
        hit: await singles(obj, "bpx_one_lookup", (i) =>
          tcp(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.ACK),
        ),
        miss: await singles(obj, "bpx_one_lookup", (i) => tcp("10.244.9.9", flowPort(i), 9000, TCP_FLAGS.ACK)),
      },
    };
  } finally {
    obj.close();
  }
}

const COLUMNS = ["new flow (SYN)", "established", "not a service", "reply", "fresh: established", "fresh: reply"];

/** The cells of one mode's row: total (ratio to the reference measured the same way) = ingress + egress. */
function cells(r: Row, mode: Mode): string[] {
  const x = r.modes[mode];
  const c = (v: Cost, base: number) => `${ratio(v.total, base)} = ${v.ingress}+${v.egress}`;
  return [
    c(x.newFlow, r.referenceFresh.hit),
    c(x.established, r.reference),
    c(x.notService, r.referenceMiss),
    c(x.reply, r.reference1),
    c(x.fresh.established, r.referenceFresh.hit),
    c(x.fresh.reply, r.referenceFresh.hit),
  ];
}

/** Inside the benchmark's network namespace: every size, both modes. */
async function measureAll(dev: Devices): Promise<void> {
  console.log(
    `ns per packet, bpx_from_pod + bpx_reverse on its output; in brackets the ratio to the one-lookup reference.`,
  );
  console.log(
    `repeat ${repeat}: established, not a service (ratio to the reference's repeated hit / miss); ${singleRuns} single runs: reply (to its single runs of one packet).`,
  );
  console.log(
    `new flow and fresh: ${singleRuns} single runs over distinct flows, ratio to the reference's single runs over distinct frontends.\n`,
  );
  console.log(["services", "mode", "1 lookup", "fresh 1 lookup", ...COLUMNS].join(" | "));
  console.log(
    "and per size, IPv4 and IPv6 on the stack path: services family | mode | new flow (SYN) | fresh: established | fresh: reply | not a service (repeated), each with its ratio to IPv4's",
  );
  const rows: Row[] = [];
  const families: { services: number; v4: FamilyCost; v6: FamilyCost }[] = [];
  empty = await emptyProgram();
  console.log(`empty program (harness): single ${empty.single}, repeated ${empty.repeated}`);
  for (const n of sizes) {
    const backendsPer = 2;
    const fit = Math.min(n, Math.floor(MAX_SVC_ENTRIES / (backendsPer + 1)));
    const m = model(fit, backendsPer);
    // The last two frontends are the ping-pong pair.
    const a = m.frontends[fit - 2]!;
    const b = m.frontends[fit - 1]!;
    a.backends = [{ address: b.address, port: 80, state: "active", nodeLocal: true }];
    b.backends = [{ address: a.address, port: 80, state: "active", nodeLocal: true }];
    const ref = await reference(m, fit);
    const modes = {} as Record<Mode, Measured>;
    for (const mode of MODES) {
      const p = await programmed(m, mode);
      modes[mode] = await measure(p.obj, m, fit, dev).finally(p.release);
    }
    const row: Row = {
      services: n,
      fit,
      reference: ref.hit,
      referenceMiss: ref.miss,
      reference1: ref.single,
      referenceFresh: ref.fresh,
      modes,
    };
    rows.push(row);
    const label = fit < n ? `${n} (${fit} fit)` : String(n);
    for (const mode of MODES)
      console.log(
        [
          label,
          mode,
          `${ref.hit} / ${ref.miss} / ${ref.single}`,
          `${ref.fresh.hit} / ${ref.fresh.miss}`,
          ...cells(row, mode),
        ].join(" | "),
      );
    // The bypass must have redirected, or it measured the stack path twice.
    if (modes.bypass.verdict !== 7 || modes.stack.verdict !== 0)
      throw new Error(
        `verdicts: stack ${modes.stack.verdict} (want 0), bypass ${modes.bypass.verdict} (want 7, redirect)`,
      );
    // IPv6 beside IPv4, each on its own programmed model of the same size, alternating.
    const m6 = model(fit, backendsPer, 6);
    const fam: Record<4 | 6, FamilyCost> = {} as Record<4 | 6, FamilyCost>;
    for (const family of [4, 6] as const) {
      const p = await programmed(family === 6 ? m6 : m, "stack");
      fam[family] = await (
        family === 6
          ? measureFamily(p.obj, m6, fit, dev, tcp6, dst6, CLIENT6, "fd00:10:244:ffff::9")
          : measureFamily(p.obj, m, fit, dev, tcp, dst, CLIENT, "10.244.9.9")
      ).finally(p.release);
    }
    families.push({ services: n, v4: fam[4], v6: fam[6] });
    const col = (c: Cost, base: Cost) =>
      `${c.total} = ${c.ingress}+${c.egress} (${(c.total / base.total).toFixed(2)}x)`;
    for (const family of [4, 6] as const)
      console.log(
        [
          `${label} IPv${family}`,
          "stack",
          col(fam[family].newFlow, fam[4].newFlow),
          col(fam[family].freshEstablished, fam[4].freshEstablished),
          col(fam[family].freshReply, fam[4].freshReply),
          col(fam[family].notService, fam[4].notService),
        ].join(" | "),
      );
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(
    join(RESULTS, "datapath.json"),
    JSON.stringify({ repeat, singleRuns, empty, rows, families }, null, 2) + "\n",
  );
  writeFileSync(
    join(RESULTS, "datapath.svg"),
    lineChart({
      title: "Per-packet cost, ingress + egress (BPF_PROG_TEST_RUN)",
      xLabel: "Services",
      yLabel: "ns per packet",
      series: [
        { name: "one lookup (floor)", points: rows.map((r) => [r.services, r.reference]) },
        { name: "established, stack", points: rows.map((r) => [r.services, r.modes.stack.established.total]) },
        { name: "established, bypass", points: rows.map((r) => [r.services, r.modes.bypass.established.total]) },
        { name: "one lookup, fresh keys", points: rows.map((r) => [r.services, r.referenceFresh.hit]) },
        { name: "new flow, stack", points: rows.map((r) => [r.services, r.modes.stack.newFlow.total]) },
        { name: "new flow, bypass", points: rows.map((r) => [r.services, r.modes.bypass.newFlow.total]) },
        { name: "not a service, stack", points: rows.map((r) => [r.services, r.modes.stack.notService.total]) },
      ],
    }),
  );
  console.log(`\nwrote ${join(RESULTS, "datapath.json")} and datapath.svg`);
}

function ip(args: string[]): string {
  const r = spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** The namespace's devices and routes: the client's pod behind one device, the backends' pods behind
 * another, everything else (frontends) out of the node's uplink. veth pairs with both ends in the namespace
 * (test runs send nothing). */
function setUpNetns(ns: string): void {
  ip(["netns", "add", ns]);
  const x = (...a: string[]) => ip(["-n", ns, ...a]);
  x("link", "set", "lo", "up");
  for (const d of ["eth0", "pod-cl", "pod-be"]) {
    x("link", "add", d, "type", "veth", "peer", "name", `${d}-peer`);
    x("link", "set", d, "up");
    x("link", "set", `${d}-peer`, "up");
  }
  x("addr", "add", "10.0.0.1/8", "dev", "eth0");
  x("addr", "add", "fd00::1/64", "dev", "eth0", "nodad");
  // A node forwards (bpf_fib_lookup answers "forwarding disabled" otherwise).
  const r = spawnSync(
    "ip",
    ["netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
    { timeout: 10_000 },
  );
  if (r.status !== 0) throw new Error(`sysctl forwarding in ${ns} failed`);
  x("route", "add", "10.244.0.0/16", "dev", "pod-be");
  x("route", "add", `${CLIENT}/32`, "dev", "pod-cl");
  x("-6", "route", "add", "fd00:10:244::/48", "dev", "pod-be");
  x("-6", "route", "add", `${CLIENT6}/128`, "dev", "pod-cl");
}

function ifindex(dev: string): number {
  const [link] = JSON.parse(ip(["-j", "link", "show", dev])) as { ifindex: number }[];
  return link!.ifindex;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the benchmark loads BPF programs: run it as root");
  if (process.env[IN_NETNS]) {
    await measureAll({ client: ifindex("pod-cl"), backends: ifindex("pod-be") });
    return;
  }
  // Run again inside a namespace of our own, removed afterwards (also on failure).
  const ns = `bpx-bench-dp-${process.pid}`;
  try {
    setUpNetns(ns);
    const r = spawnSync("ip", ["netns", "exec", ns, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: "inherit",
      env: { ...process.env, [IN_NETNS]: ns },
      timeout: 3 * 60 * 60 * 1000,
    });
    if (r.status !== 0) throw new Error(`the benchmark failed in ${ns}: ${r.error?.message ?? `exit ${r.status}`}`);
  } finally {
    spawnSync("ip", ["netns", "del", ns], { timeout: 10_000 });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
