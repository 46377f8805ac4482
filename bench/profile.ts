// CPU profile of one full sync (objects known → model → BPF maps written) of N Services × E endpoints, or
// of C one-endpoint changes after it (each: model → maps):
//   node --import tsx bench/profile.ts 30000 4 [out.cpuprofile]
//   PROFILE_CHANGES=200 node --import tsx bench/profile.ts 30000 10 [out.cpuprofile]
// Writes the .cpuprofile (open it in Chrome DevTools or speedscope) and prints the functions with the most
// self time. The profiler starts after the BPF object is loaded: its sampling signal would interrupt the
// verifier (bpf_object__load fails with EAGAIN under `node --cpu-prof`).
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { cluster, endpointSlice } from "./objects.js";
import { buildNodeModelFrom, ModelCache } from "../src/model/index.js";
import { ObjectIndex } from "../src/sources/object-index.js";
import { BpfDataplane } from "../src/dataplane/bpf/index.js";
import { cleanup } from "../src/dataplane/bpf/status.js";
import { PrivateBpffs } from "../src/lab/proxy.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [nArg, eArg, out = "bench/results/full-sync.cpuprofile"] = process.argv.slice(2);
const n = Number(nArg ?? 30_000);
const e = Number(eArg ?? 4);
const changes = Number(process.env.PROFILE_CHANGES ?? 0);

async function main(): Promise<void> {
  const snap = cluster(n, e);
  const bpffs = PrivateBpffs.create("profile");
  const dp = new BpfDataplane({
    nodeName: "node-a",
    bpffs: bpffs.path,
    devices: [],
    podInterfaces: [],
    clusterCIDRs: [],
  });
  const session = new Session();
  try {
    await dp.start();
    session.connect();
    await session.post("Profiler.enable");
    const index = new ObjectIndex();
    const cache = new ModelCache();
    const build = () => buildNodeModelFrom(index, cache, { nodes: snap.nodes, nodeName: "node-a" });
    if (changes > 0) {
      index.replaceAll(snap.services, snap.endpointSlices, snap.nodes);
      await dp.sync(build(), { full: true });
    }
    await session.post("Profiler.start");
    const t = performance.now();
    let tm = 0;
    let upserts = 0;
    for (let c = 1; c <= Math.max(1, changes); c++) {
      const tb = performance.now();
      if (changes > 0) {
        const i = (c * 7919) % n;
        const slice = endpointSlice(i, e, c);
        index.upsertSlice(`${slice.metadata.namespace}/${slice.metadata.name}`, slice);
      } else index.replaceAll(snap.services, snap.endpointSlices, snap.nodes);
      const model = build();
      tm += performance.now() - tb;
      upserts += (await dp.sync(model, { full: changes === 0 })).upserts;
    }
    const total = performance.now() - t;
    const { profile } = (await session.post("Profiler.stop")) as { profile: Profile };
    writeFileSync(out, JSON.stringify(profile));
    console.log(
      `${n} × ${e}${changes ? `, ${changes} changes` : ""}: model ${tm.toFixed(0)} ms, total ${total.toFixed(0)} ms, ${upserts} entries written, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB; profile in ${out}`,
    );
    const dt = new Map<number, number>();
    profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
    const self = new Map<string, number>();
    for (const node of profile.nodes) {
      const f = node.callFrame;
      const k = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}`;
      self.set(k, (self.get(k) ?? 0) + (dt.get(node.id) ?? 0));
    }
    const sum = [...self.values()].reduce((a, b) => a + b, 0);
    for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20))
      console.log(`${(v / 1000).toFixed(0).padStart(7)} ms ${((100 * v) / sum).toFixed(1).padStart(5)}%  ${k}`);
  } finally {
    session.disconnect();
    await dp.stop();
    cleanup(bpffs.path);
    bpffs.release();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
