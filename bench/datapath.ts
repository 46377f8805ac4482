// Per-packet cost of the tc service-translation program, measured with BPF_PROG_TEST_RUN at several
// service counts, side by side in one run with:
//   - the floor: bpf/tests/one_lookup.o, which parses the packet and does exactly one hash lookup in a
//     map of the service map's size holding one entry per frontend;
//   - the old path: bpf/tests/noprefilter.o, the same program built without the pre-filter.
// Prints ns per packet and the ratio to the one-lookup reference; writes bench/results/datapath.{json,svg}.
//
//   npm run bench:datapath            (or: node --import tsx bench/datapath.ts [repeat] [sizes...])
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BpfObject } from "../src/native/index.js";
import { Prefilter } from "../src/dataplane/bpf/prefilter.js";
import { lineChart } from "./svg.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { packagePath } from "../src/paths.js";
import { writeIPv4 } from "../src/k8s/ip.js";
import { buildPacket, TCP_FLAGS } from "../test/fixtures/packets.js";
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

function vip(i: number): string {
  return `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

function model(n: number, backendsPer: number): NodeModel {
  const frontends: Frontend[] = [];
  for (let i = 0; i < n; i++) {
    frontends.push({
      service: `bench/svc-${i}`,
      portName: "http",
      type: "ClusterIP",
      address: vip(i),
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: Array.from({ length: backendsPer }, (_, b) => ({
        address: `10.244.${(i >> 8) & 0xff}.${i & 0xff}`,
        port: 8080 + b,
        state: "active" as const,
        nodeLocal: true,
      })),
    });
  }
  return { node: "bench", frontends, extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })) };
}

async function repeated(obj: BpfObject, prog: string, data: Buffer): Promise<number> {
  return (await obj.program(prog).testRun({ data, repeat })).durationNs;
}

async function single(obj: BpfObject, prog: string, data: Buffer): Promise<number> {
  const p = obj.program(prog);
  let total = 0;
  for (let i = 0; i < singleRuns; i++) total += (await p.testRun({ data, repeat: 1 })).durationNs;
  return Math.round(total / singleRuns);
}

const ratio = (c: number, base: number) => `${c} (${(c / Math.max(base, 1)).toFixed(1)}x)`;

interface Measured {
  newFlow: number;
  established: number;
  notService: number;
  reply: number;
  /** Single runs, one per distinct flow (fresh keys). */
  fresh: { established: number; notService: number; reply: number };
}

interface Row extends Measured {
  services: number;
  fit: number;
  reference: number;
  referenceMiss: number;
  reference1: number;
  /** The reference's single runs over distinct frontends (hit) and distinct non-service tuples (miss). */
  referenceFresh: { hit: number; miss: number };
  old: Measured;
}

/** Loads bpfproxy (or its no-pre-filter build) into its own bpffs and programs `m` as the daemon does. */
async function programmed(path: string, m: NodeModel, withPrefilter: boolean) {
  const bpffs = PrivateBpffs.create("bench");
  const obj = new BpfObject(packagePath(path), { pinRoot: bpffs.path });
  try {
    obj.load();
    const rec = new LbReconciler({
      services: obj.map(MAP_NAMES.services),
      backends: obj.map(MAP_NAMES.backends),
      revNat: obj.map(MAP_NAMES.revNat),
      svcMeta: obj.map(MAP_NAMES.svcMeta),
      maglev: obj.map(MAP_NAMES.maglev),
      affinityMatch: obj.map(MAP_NAMES.affinityMatch),
    });
    await rec.restore();
    const pf = withPrefilter ? new Prefilter(obj.map(MAP_NAMES.prefilter)) : undefined;
    pf?.restore();
    await pf?.before(m);
    await rec.apply(m);
    await pf?.after();
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
const tcp = (daddr: string, sport: number, dport: number, flags: number, saddr = CLIENT) =>
  buildPacket({
    proto: "tcp",
    saddr,
    daddr,
    sport,
    dport,
    flags,
    payload: flags === TCP_FLAGS.SYN ? undefined : Buffer.alloc(64),
  });

/** The i-th distinct flow of the single-run loops: to the frontends in turn, each from its own source port. */
const flowPort = (i: number) => 1024 + i;

/** Average of single runs, one per packet. */
async function singles(obj: BpfObject, prog: string, packets: (i: number) => Buffer): Promise<number> {
  const p = obj.program(prog);
  let total = 0;
  for (let i = 0; i < singleRuns; i++) total += (await p.testRun({ data: packets(i), repeat: 1 })).durationNs;
  return Math.round(total / singleRuns);
}

/** new flow, established, not a service, reply: ns per packet for one program on one programmed model. */
async function measure(obj: BpfObject, m: NodeModel, fit: number): Promise<Measured> {
  const target = m.frontends[fit - 2]!.address;
  const syn = tcp(target, 40000, 80, TCP_FLAGS.SYN);
  const ack = tcp(target, 40000, 80, TCP_FLAGS.ACK);
  // A reply needs a flow to a real backend: open one to another frontend and read where it went.
  const out = (
    await obj.program("bpx_from_pod").testRun({ data: tcp(m.frontends[0]!.address, 40000, 80, TCP_FLAGS.SYN) })
  ).data;
  const reply = tcp(CLIENT, out.readUInt16BE(36), 40000, TCP_FLAGS.ACK, `${out[30]}.${out[31]}.${out[32]}.${out[33]}`);
  // Not a service: to a pod port no Service uses (and, with the pre-filter, from a non-backend).
  const other = tcp("10.244.9.9", 40001, 9000, TCP_FLAGS.ACK);
  // A rerun SYN on one skb is a retransmission of a tracked flow, not a new flow: new flows are single
  // runs, each from another source port.
  const prog = obj.program("bpx_from_pod");
  let total = 0;
  // Where each new flow went, for its reply below.
  const backends: { addr: string; port: number }[] = [];
  for (let i = 0; i < singleRuns; i++) {
    const r = await prog.testRun({
      data: tcp(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.SYN),
      repeat: 1,
    });
    total += r.durationNs;
    backends.push({ addr: `${r.data[30]}.${r.data[31]}.${r.data[32]}.${r.data[33]}`, port: r.data.readUInt16BE(36) });
  }
  const newFlow = Math.round(total / singleRuns);
  // Fresh keys: the next packet of each of those flows, then a reply of each, then distinct non-service tuples.
  const fresh = {
    established: await singles(obj, "bpx_from_pod", (i) =>
      tcp(m.frontends[i % fit]!.address, flowPort(i), 80, TCP_FLAGS.ACK),
    ),
    reply: await singles(obj, "bpx_from_pod", (i) =>
      tcp(CLIENT, backends[i]!.port, flowPort(i), TCP_FLAGS.ACK, backends[i]!.addr),
    ),
    notService: await singles(obj, "bpx_from_pod", (i) => tcp("10.244.9.9", flowPort(i), 9000, TCP_FLAGS.ACK)),
  };
  await repeated(obj, "bpx_from_pod", syn); // creates both flows of the pair
  await repeated(obj, "bpx_from_pod", ack); // warm-up
  const established = await repeated(obj, "bpx_from_pod", ack);
  const notService = await repeated(obj, "bpx_from_pod", other);
  const replyNs = await single(obj, "bpx_from_pod", reply);
  return { newFlow, established, notService, reply: replyNs, fresh };
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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the benchmark loads BPF programs: run it as root");
  console.log(`ns per packet; in brackets the ratio to the one-lookup reference measured the same way.`);
  console.log(
    `repeat ${repeat}: established, not a service; ${singleRuns} single runs: reply (ratio to the reference's single runs of one packet).`,
  );
  console.log(
    `fresh: ${singleRuns} single runs over distinct flows (new flow too), ratio to the reference's single runs over distinct frontends (hit) or tuples (miss).\n`,
  );
  const header = [
    "services",
    "1 lookup",
    "new flow (SYN)",
    "established",
    "not a service",
    "old: not a service",
    "reply",
    "old: reply",
    "fresh: 1 lookup",
    "fresh: established",
    "fresh: reply",
    "fresh: not a service",
  ];
  console.log(header.map((h) => h.padEnd(20)).join(""));
  const rows: Row[] = [];
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
    const cur = await programmed("bpf/bpfproxy.o", m, true);
    const now = await measure(cur.obj, m, fit).finally(cur.release);
    const prev = await programmed("bpf/tests/noprefilter.o", m, false);
    const old = await measure(prev.obj, m, fit).finally(prev.release);
    const row: Row = {
      services: n,
      fit,
      reference: ref.hit,
      referenceMiss: ref.miss,
      reference1: ref.single,
      referenceFresh: ref.fresh,
      ...now,
      old,
    };
    rows.push(row);
    const label = fit < n ? `${n} (${fit} fit)` : String(n);
    console.log(
      [
        label,
        `${ref.hit} / ${ref.miss}`,
        ratio(now.newFlow, ref.fresh.hit),
        ratio(now.established, ref.hit),
        ratio(now.notService, ref.miss),
        ratio(old.notService, ref.miss),
        ratio(now.reply, ref.single),
        ratio(old.reply, ref.single),
        `${ref.fresh.hit} / ${ref.fresh.miss}`,
        ratio(now.fresh.established, ref.fresh.hit),
        ratio(now.fresh.reply, ref.fresh.hit),
        ratio(now.fresh.notService, ref.fresh.miss),
      ]
        .map((x) => x.padEnd(20))
        .join(""),
    );
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "datapath.json"), JSON.stringify({ repeat, singleRuns, rows }, null, 2) + "\n");
  writeFileSync(
    join(RESULTS, "datapath.svg"),
    lineChart({
      title: "Per-packet cost (BPF_PROG_TEST_RUN)",
      xLabel: "Services",
      yLabel: "ns per packet",
      series: [
        { name: "one lookup (floor)", points: rows.map((r) => [r.services, r.reference]) },
        { name: "established", points: rows.map((r) => [r.services, r.established]) },
        { name: "one lookup, fresh keys", points: rows.map((r) => [r.services, r.referenceFresh.hit]) },
        { name: "established, fresh keys", points: rows.map((r) => [r.services, r.fresh.established]) },
        { name: "new flow", points: rows.map((r) => [r.services, r.newFlow]) },
        { name: "not a service", points: rows.map((r) => [r.services, r.notService]) },
        { name: "not a service, old", points: rows.map((r) => [r.services, r.old.notService]) },
      ],
    }),
  );
  console.log(`\nwrote ${join(RESULTS, "datapath.json")} and datapath.svg`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
