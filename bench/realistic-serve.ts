// Time to serve and peak RSS of the real daemon reading a cluster shaped like a real API server's (issue 18
// item 7). The test API server (test/apiserver) holds N Services × E endpoints whose objects carry what real
// ones do — labels, annotations (kubectl's last-applied-configuration), managedFields, ownerReferences,
// targetRef, zone and hints — and pages lists at the daemon's limit (500). The daemon (`bpfproxy run`)
// runs in a lab node namespace and reads it through a kubeconfig (the API server runs
// in the same namespace: bench/realistic-apiserver.ts), started as users start it: bin/bpfproxy, the entry of the
// package, the image and the DaemonSet, with its memory settings (BENCH_CLI: another entry; a .js file runs under
// this node without them). Measured: spawn → first "synced" line, and
// the daemon's VmHWM (peak RSS) once it has served and settled.
//   node --import tsx bench/realistic-serve.ts [N=10000] [E=10]
// Prints one JSON line. Everything the run makes (namespaces, bpffs, files, API server) is removed after, also on failure.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { packagePath } from "../src/paths.js";

const [nArg, eArg] = process.argv.slice(2);
const N = Number(nArg ?? 10_000);
const E = Number(eArg ?? 10);
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 5_000);
const START_TIMEOUT_MS = Number(process.env.BENCH_START_TIMEOUT_MS ?? 300_000);
const CLI = process.env.BENCH_CLI ?? packagePath("bin/bpfproxy");
const entry = CLI.endsWith(".js") ? [process.execPath, CLI] : [CLI];
const API_IN_NODE = "127.0.0.1:6443";

if (process.getuid?.() !== 0)
  throw new Error("bench/realistic-serve.ts builds namespaces and loads BPF: run it as root");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function status(pid: number, field: string): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${field}:`));
  if (!line) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(line.split(/\s+/)[1]) / 1024; // kB → MiB
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-realistic-"));
  let lab: Lab | undefined;
  let bpffs: PrivateBpffs | undefined;
  let child: ReturnType<Lab["spawn"]> | undefined;
  try {
    lab = await Lab.create({
      prefix: `bpxreal${process.pid}-`,
      nodes: [{ name: "node-a", ip: "192.0.2.11", podCIDR: "10.244.1.0/24", pods: [] }],
    });
    // The API server runs in the node's namespace too: the daemon reads it over that namespace's loopback.
    const api = lab.spawn("node-a", [
      ...[process.execPath, "--import", "tsx", packagePath("bench/realistic-apiserver.ts")],
      ...[String(N), String(E), ...API_IN_NODE.split(":")],
    ]);
    let apiLog = "";
    api.stderr!.setEncoding("utf8").on("data", (d: string) => (apiLog = (apiLog + d).slice(-4000)));
    const bytes = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`API server not ready:\n${apiLog}`)), START_TIMEOUT_MS);
      api.once("exit", () => reject(new Error(`API server exited:\n${apiLog}`)));
      api.stdout!.setEncoding("utf8").on("data", (d: string) => {
        const m = /ready (\d+)/.exec(d);
        if (m) {
          clearTimeout(t);
          resolve(Number(m[1]));
        }
      });
    });
    const kubeconfig = join(dir, "daemon.kubeconfig");
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        "current-context": "bench",
        // client-node refuses plain http unless TLS verification is explicitly off.
        clusters: [{ name: "bench", cluster: { server: `http://${API_IN_NODE}`, "insecure-skip-tls-verify": true } }],
        contexts: [{ name: "bench", context: { cluster: "bench", user: "bench" } }],
        users: [{ name: "bench", user: {} }],
      }),
    );
    bpffs = PrivateBpffs.create("realistic");
    const args = [
      ...[...entry, "run", "--kubeconfig", kubeconfig, "--hostname-override", "node-a"],
      ...["--bpffs", bpffs.path, "--pod-interfaces", "lxc*", "--devices", "eth0", "--cluster-cidr", "10.244.0.0/16"],
      ...["--v", "1"],
    ];
    const t0 = Date.now();
    child = lab.spawn("node-a", args);
    let out = "";
    let exited = false;
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (out = (out + d).slice(-200_000)));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (out = (out + d).slice(-200_000)));
    child.once("exit", () => (exited = true));
    const pid = child.pid!;
    let servedMs: number | undefined;
    // The daemon's first sync ("synced frontends=…", --v 1) comes after every list is in.
    const served = () => /Z synced frontends=(\d+).*/.exec(out);
    while (servedMs === undefined) {
      if (exited) throw new Error(`daemon exited:\n${out.slice(-4000)}`);
      if (Date.now() - t0 > START_TIMEOUT_MS)
        throw new Error(
          `no sync after ${START_TIMEOUT_MS} ms:\n${out.slice(-4000)}\nAPI server: ${apiLog.slice(-500)}`,
        );
      const m = served();
      if (m && Number(m[1]) >= N) servedMs = Date.now() - t0;
      else await sleep(50);
    }
    const rssAtServe = status(pid, "VmRSS");
    await sleep(SETTLE_MS);
    console.log(
      JSON.stringify({
        services: N,
        endpoints: E,
        objectBytes: bytes,
        servedMs,
        peakRssMiB: Number(status(pid, "VmHWM").toFixed(0)),
        rssAtServeMiB: Number(rssAtServe.toFixed(0)),
        rssSettledMiB: Number(status(pid, "VmRSS").toFixed(0)),
        synced: served()![0].slice(0, 300),
      }),
    );
  } finally {
    if (child && child.exitCode === null) {
      const done = new Promise((r) => child!.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child!.kill("SIGKILL"), 10_000);
      await done;
      clearTimeout(t);
    }
    // The daemon leaves its data plane in place by design; the lab's namespaces (and the API server) go with it.
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
