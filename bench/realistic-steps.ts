// Where the memory of the Kubernetes source and the model goes, step by step, in one process (issue 18 item 1):
// the test API server (bench/realistic-apiserver.ts, a child process on loopback) holds N realistic Services × E
// endpoints; this process loads the source's modules, lists everything through a kubeconfig (the daemon's
// KubernetesSource, pages of 500) and builds the model as the daemon does, reading RSS and the V8 heap after a
// collection at each step. No data plane (the reconciler's share is measured by bench/bpfproxy-sync.ts).
//   node --expose-gc --import tsx bench/realistic-steps.ts [N=30000] [E=4]
// As root, in a private network namespace (the API server listens on loopback; unshare removes it on exit):
//   unshare --net sh -c 'ip link set lo up && node --expose-gc --import tsx bench/realistic-steps.ts 30000 4'

// Prints one JSON line per step. The API server child is stopped after, also on failure.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { packagePath } from "../src/paths.js";

const [nArg, eArg] = process.argv.slice(2);
const N = Number(nArg ?? 30_000);
const E = Number(eArg ?? 4);
const PORT = 20_000 + (process.pid % 20_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");

const MiB = (b: number) => Math.round(b / 1048576);
let peak = 0;
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
function step(name: string): void {
  gc!();
  const m = process.memoryUsage();
  peak = Math.max(peak, m.rss);
  console.log(
    JSON.stringify({
      step: name,
      rssMiB: MiB(m.rss),
      heapUsedMiB: MiB(m.heapUsed),
      heapTotalMiB: MiB(m.heapTotal),
      externalMiB: MiB(m.external),
      peakRssMiB: MiB(peak),
    }),
  );
}

step("node started");
const api = spawn(
  process.execPath,
  ["--import", "tsx", packagePath("bench/realistic-apiserver.ts"), String(N), String(E), "127.0.0.1", String(PORT)],
  { stdio: ["pipe", "pipe", "inherit"] },
);
const dir = mkdtempSync(join(tmpdir(), "bpfproxy-steps-"));
try {
  await new Promise<void>((resolve, reject) => {
    api.once("exit", () => reject(new Error("API server exited")));
    api.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("ready") && resolve());
  });
  const kubeconfig = join(dir, "kubeconfig");
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "bench",
      clusters: [{ name: "bench", cluster: { server: `http://127.0.0.1:${PORT}`, "insecure-skip-tls-verify": true } }],
      contexts: [{ name: "bench", context: { cluster: "bench", user: "bench" } }],
      users: [{ name: "bench", user: {} }],
    }),
  );
  // The built modules (npm run build), as the daemon loads them: tsx's own cost stays in "node started".
  const { KubernetesSource } = (await import(
    packagePath("dist/sources/kubernetes.js")
  )) as typeof import("../src/sources/kubernetes.js");
  const model = (await import(packagePath("dist/model/index.js"))) as typeof import("../src/model/index.js");
  step("source and model modules loaded");
  const source = new KubernetesSource({ kubeconfig, nodeName: "node-a" });
  const t0 = Date.now();
  await source.start();
  await source.synced();
  const listMs = Date.now() - t0;
  step(`listed, validated and indexed (${listMs} ms)`);
  const cache = new model.ModelCache();
  const idx = source.index();
  const m = await model.buildNodeModelFromAsync(idx, cache, { nodes: idx.nodes(), nodeName: "node-a", config: {} });
  step(`model built (${m.delta?.frontendCount ?? m.frontends.length} frontends)`);
  await source.stop();
} finally {
  clearInterval(sampler);
  api.stdin.end();
  api.kill();
  rmSync(dir, { recursive: true, force: true });
}
