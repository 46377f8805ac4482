// bpfproxy's side of the sync benchmarks, in its own process (run by bench/run.ts):
//   full N E         objects known (validated, as a source hands them over) → model → BPF maps written
//   one-change N E C after a full sync, C one-endpoint EndpointSlice changes, each model → maps
// Prints one JSON line. The maps live in a private bpffs; nothing is attached.
import { cluster, endpointSlice } from "./objects.js";
import { buildNodeModelFrom, ModelCache } from "../src/model/index.js";
import { ObjectIndex } from "../src/sources/object-index.js";
import { BpfDataplane } from "../src/dataplane/bpf/index.js";
import { cleanup } from "../src/dataplane/bpf/status.js";
import { PrivateBpffs } from "../src/lab/proxy.js";

const [mode, nArg, eArg, cArg] = process.argv.slice(2);
const n = Number(nArg);
const e = Number(eArg);
const changes = Number(cArg ?? 200);
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 3000);

async function main(): Promise<void> {
  const snap = cluster(n, e);
  const bpffs = PrivateBpffs.create("bench");
  const dp = new BpfDataplane({
    nodeName: "node-a",
    bpffs: bpffs.path,
    devices: [],
    podInterfaces: [],
    clusterCIDRs: [],
  });
  try {
    await dp.start();
    // As the daemon does: the source's index with its change log, and the model cache.
    const index = new ObjectIndex();
    const cache = new ModelCache();
    const build = () => buildNodeModelFrom(index, cache, { nodes: snap.nodes, nodeName: "node-a" });
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    index.replaceAll(snap.services, snap.endpointSlices, snap.nodes);
    await dp.sync(build(), { full: true });
    const fullMs = performance.now() - t0;
    // CPU time (all threads, user + system): on a loaded machine wall time mostly measures the other load.
    const c1 = process.cpuUsage(c0);
    if (mode === "full") {
      console.log(
        JSON.stringify({
          ms: fullMs,
          cpuMs: (c1.user + c1.system) / 1000,
          peakRssMiB: process.resourceUsage().maxRSS / 1024,
        }),
      );
      return;
    }
    // Steady state: the full sync leaves a big heap to collect, and V8's incremental marking of it would
    // stall the first changes by tens of milliseconds each (docs/benchmarks.md). Let it finish first.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const lat: number[] = [];
    let written = 0;
    for (let c = 1; c <= changes; c++) {
      const i = (c * 7919) % n;
      const slice = endpointSlice(i, e, c);
      const t = performance.now();
      index.upsertSlice(`${slice.metadata.namespace}/${slice.metadata.name}`, slice);
      const r = await dp.sync(build());
      lat.push(performance.now() - t);
      if (process.env.BENCH_TAIL && lat.at(-1)! > 5) console.error("slow", c, lat.at(-1)!.toFixed(1));
      written += r.upserts + r.deletes;
    }
    lat.sort((a, b) => a - b);

    console.log(
      JSON.stringify({
        p50: lat[Math.floor(lat.length / 2)],
        p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))],
        written: written / changes,
      }),
    );
  } finally {
    await dp.stop();
    cleanup(bpffs.path);
    bpffs.release();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
