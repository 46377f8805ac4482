// What the per-Service counters and the monitor's events cost the data path (issue 19): ns per packet of
// bpx_from_pod under BPF_PROG_TEST_RUN for new flows (each a single run over a distinct tuple) and for the
// next packet of each of those flows (established), with
//   - events off (nobody listening: one array lookup and a compare per new flow),
//   - events on at the default rate limit (DEFAULT_EVENT_RATE per CPU per second), a consumer draining,
//   - events on without a limit (every new flow written to the ring buffer),
// and, given a baseline object (e.g. bpfproxy.o built from the commit before the counters), that object
// too. Rounds alternate the variants so drift hits them alike; the median round is reported.
//
//   node --import tsx bench/events.ts [flows] [rounds] [baseline.o]
import { BpfObject, ringbufClose, ringbufOpen, ringbufPoll } from "../src/native/index.js";
import { join } from "node:path";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { MAP_NAMES, eventsConfig, u32Key } from "../src/dataplane/bpf/abi.js";
import { DEFAULT_EVENT_RATE } from "../src/monitor.js";
import { packagePath } from "../src/paths.js";
import { buildPacket, TCP_FLAGS } from "../test/fixtures/packets.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

const flows = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 5);
const baseline = process.argv[4];
const N = 1000;

function model(): NodeModel {
  const frontends: Frontend[] = [];
  for (let i = 0; i < N; i++)
    frontends.push({
      service: `bench/svc-${i}`,
      portName: "http",
      type: "ClusterIP",
      address: `10.96.${i >> 8}.${i & 0xff}`,
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: [0, 1].map((b) => ({
        address: `10.244.${i >> 8}.${i & 0xff}`,
        port: 8080 + b,
        state: "active" as const,
        nodeLocal: true,
      })),
    });
  return { node: "bench", frontends, extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })) };
}

const tcp = (saddr: string, daddr: string, sport: number, flags: number) =>
  buildPacket({
    proto: "tcp",
    saddr,
    daddr,
    sport,
    dport: 80,
    flags,
    payload: flags === TCP_FLAGS.SYN ? undefined : Buffer.alloc(64),
  });

interface Variant {
  name: string;
  obj: BpfObject;
  bpffs: PrivateBpffs;
  rate?: number; // events on at this rate
}

async function load(name: string, path: string, rate?: number): Promise<Variant> {
  const bpffs = PrivateBpffs.create("bench-ev");
  const obj = new BpfObject(path, { pinRoot: bpffs.path });
  obj.load();
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
  await rec.apply(model());
  return { name, obj, bpffs, rate };
}

let runs = 0;
/** ns per packet: new flows over distinct tuples, then the next packet of each. */
async function run(v: Variant): Promise<{ newFlow: number; established: number }> {
  const prog = v.obj.program("bpx_from_pod");
  let rb = 0;
  if (v.rate !== undefined) {
    v.obj.map(MAP_NAMES.eventsConfig).update(
      u32Key.encode(0),
      eventsConfig.encode({
        untilNs: process.hrtime.bigint() + 3_600_000_000_000n,
        rate: v.rate,
        flags: 0,
        owner: process.pid,
      }),
    );
    rb = ringbufOpen(join(v.bpffs.path, MAP_NAMES.events));
  }
  // A client address per run: a SYN on the tuple of an earlier, unanswered flow would be that flow's
  // retransmission, not a new flow.
  const run = runs++;
  const client = `10.244.${200 + (run >> 8)}.${run & 0xff}`;
  const base = 1024;
  let total = 0;
  for (let i = 0; i < flows; i++) {
    total += (
      await prog.testRun({
        data: tcp(client, `10.96.${(i % N) >> 8}.${(i % N) & 0xff}`, base + (i % 60_000), TCP_FLAGS.SYN),
      })
    ).durationNs;
    if (rb && i % 256 === 0) ringbufPoll(rb, 0);
  }
  const newFlow = total / flows;
  total = 0;
  for (let i = 0; i < flows; i++)
    total += (
      await prog.testRun({
        data: tcp(client, `10.96.${(i % N) >> 8}.${(i % N) & 0xff}`, base + (i % 60_000), TCP_FLAGS.ACK),
      })
    ).durationNs;
  if (rb) {
    ringbufPoll(rb, 0);
    ringbufClose(rb);
    v.obj
      .map(MAP_NAMES.eventsConfig)
      .update(u32Key.encode(0), eventsConfig.encode({ untilNs: 0n, rate: 0, flags: 0, owner: 0 }));
  }
  return { newFlow, established: total / flows };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const obj = packagePath("bpf/bpfproxy.o");
  const variants = [
    ...(baseline ? [await load("baseline (no per-Service counters, no events)", baseline)] : []),
    await load("events off (nobody listening)", obj),
    await load(`events on, limit ${DEFAULT_EVENT_RATE}/s per CPU`, obj, DEFAULT_EVENT_RATE),
    await load("events on, no limit", obj, 0xffffffff),
  ];
  const res = new Map(variants.map((v) => [v.name, { newFlow: [] as number[], established: [] as number[] }]));
  try {
    for (let r = 0; r < rounds; r++)
      for (const v of variants) {
        const m = await run(v);
        res.get(v.name)!.newFlow.push(m.newFlow);
        res.get(v.name)!.established.push(m.established);
      }
  } finally {
    for (const v of variants) {
      v.obj.close();
      v.bpffs.release();
    }
  }
  const ref = res.get("events off (nobody listening)")!;
  console.log(
    `bpx_from_pod, ${N} frontends, ${flows} flows per round, median of ${rounds} rounds (ns per packet; ratio to events off)`,
  );
  for (const [name, m] of res) {
    const nf = median(m.newFlow);
    const est = median(m.established);
    console.log(
      `${name.padEnd(48)} new flow ${nf.toFixed(0).padStart(5)} (${(nf / median(ref.newFlow)).toFixed(3)})   established ${est.toFixed(0).padStart(5)} (${(est / median(ref.established)).toFixed(3)})`,
    );
  }
}

await main();
