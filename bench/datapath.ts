// Per-packet cost of the tc service-translation program, measured with BPF_PROG_TEST_RUN and
// compared in the same run with an empty tc program on the same packet, at several service
// counts. Prints average ns per packet and the ratio to the empty program.
//
//   npm run bench:datapath            (or: node --import tsx bench/datapath.ts [repeat] [sizes...])
import { BpfObject } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { LbReconciler } from "../src/dataplane/reconcile.js";
import { MAP_NAMES } from "../src/dataplane/abi.js";
import { packagePath } from "../src/paths.js";
import { buildPacket, TCP_FLAGS } from "../test/fixtures/packets.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

// BPF_PROG_TEST_RUN's repeat reruns the program on the same skb, which our translation has
// already rewritten. So the measured frontends are a ping-pong pair, each the other's only
// backend: every rerun of a SYN is a new-flow selection and every rerun of an ACK an
// established-flow DNAT. The reply path cannot be chained that way; it is measured as many
// single runs, next to the empty program measured the same way.
const repeat = Number(process.argv[2] ?? 200_000);
const singleRuns = 20_000;
const sizes = process.argv.length > 3 ? process.argv.slice(3).map(Number) : [10, 1_000, 10_000, 100_000];
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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the benchmark loads BPF programs: run it as root");
  const empty = new BpfObject(packagePath("bpf/tests/empty.o"));
  empty.load();
  console.log(`ns per packet (ratio to the empty tc program on the same packet).`);
  console.log(
    `repeat ${repeat}: empty, new flow, established, not a service; ${singleRuns} single runs: empty(1), reply.\n`,
  );
  const header = ["services", "empty", "new flow (SYN)", "established", "not a service", "empty(1)", "reply"];
  console.log(header.map((h) => h.padEnd(18)).join(""));
  for (const n of sizes) {
    const bpffs = PrivateBpffs.create("bench");
    const obj = new BpfObject(packagePath("bpf/bpfproxy.o"), { pinRoot: bpffs.path });
    try {
      obj.load();
      const backendsPer = 2;
      const fit = Math.min(n, Math.floor(MAX_SVC_ENTRIES / (backendsPer + 1)));
      const rec = new LbReconciler({
        services: obj.map(MAP_NAMES.services),
        backends: obj.map(MAP_NAMES.backends),
        revNat: obj.map(MAP_NAMES.revNat),
        svcMeta: obj.map(MAP_NAMES.svcMeta),
        maglev: obj.map(MAP_NAMES.maglev),
        affinityMatch: obj.map(MAP_NAMES.affinityMatch),
      });
      await rec.restore();
      const m = model(fit, backendsPer);
      // The last two frontends are the ping-pong pair.
      const a = m.frontends[fit - 2]!;
      const b = m.frontends[fit - 1]!;
      a.backends = [{ address: b.address, port: 80, state: "active", nodeLocal: true }];
      b.backends = [{ address: a.address, port: 80, state: "active", nodeLocal: true }];
      await rec.apply(m);
      const target = a.address;
      const syn = buildPacket({
        proto: "tcp",
        saddr: "10.244.200.7",
        daddr: target,
        sport: 40000,
        dport: 80,
        flags: TCP_FLAGS.SYN,
      });
      const ack = buildPacket({
        proto: "tcp",
        saddr: "10.244.200.7",
        daddr: target,
        sport: 40000,
        dport: 80,
        flags: TCP_FLAGS.ACK,
        payload: Buffer.alloc(64),
      });
      // A reply needs a flow to a real backend: open one to another frontend and read where it went.
      const plain = m.frontends[0]!.address;
      const synPlain = buildPacket({
        proto: "tcp",
        saddr: "10.244.200.7",
        daddr: plain,
        sport: 40000,
        dport: 80,
        flags: TCP_FLAGS.SYN,
      });
      const out = (await obj.program("bpx_from_pod").testRun({ data: synPlain })).data;
      const backendIp = `${out[30]}.${out[31]}.${out[32]}.${out[33]}`;
      const backendPort = out.readUInt16BE(36);
      const reply = buildPacket({
        proto: "tcp",
        saddr: backendIp,
        daddr: "10.244.200.7",
        sport: backendPort,
        dport: 40000,
        flags: TCP_FLAGS.ACK,
        payload: Buffer.alloc(64),
      });
      const other = buildPacket({
        proto: "tcp",
        saddr: "10.244.200.7",
        daddr: "10.244.9.9",
        sport: 40001,
        dport: 80,
        flags: TCP_FLAGS.ACK,
        payload: Buffer.alloc(64),
      });

      const base = await repeated(empty, "bpx_empty", ack);
      const newFlow = await repeated(obj, "bpx_from_pod", syn);
      await repeated(obj, "bpx_from_pod", ack); // warm-up: creates both flows of the pair
      const established = await repeated(obj, "bpx_from_pod", ack);
      const notService = await repeated(obj, "bpx_from_pod", other);
      const base1 = await single(empty, "bpx_empty", reply);
      const replyNs = await single(obj, "bpx_from_pod", reply);
      const label = fit < n ? `${n} (${fit} fit)` : String(n);
      console.log(
        [
          label,
          `${base}`,
          ratio(newFlow, base),
          ratio(established, base),
          ratio(notService, base),
          `${base1}`,
          ratio(replyNs, base1),
        ]
          .map((s) => s.padEnd(18))
          .join(""),
      );
    } finally {
      obj.close();
      bpffs.release();
    }
  }
  empty.close();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
