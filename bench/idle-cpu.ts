// Idle CPU of the real daemon between changes (issue 18: "idle CPU between changes ≈ 0"). The daemon
// (`bpfproxy run` started as users start it, bin/bpfproxy with its memory settings; or BENCH_CLI, a .js file
// running under this node without them) serves N Services × E endpoints from a manifest folder in a lab
// node namespace; once it has synced and settled, its CPU time (/proc/PID/stat utime+stime, all threads)
// is sampled over an idle window in which nothing changes, with the default syncPeriod (30 s).
//   node --import tsx bench/idle-cpu.ts [N=10000] [E=10] [WINDOW_S=60]
// Prints one JSON line. Everything the run makes (namespaces, bpffs, folder) is removed after, also on failure.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cluster, nodeObject } from "./objects.js";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { packagePath } from "../src/paths.js";

const [nArg, eArg, wArg] = process.argv.slice(2);
const N = Number(nArg ?? 10_000);
const E = Number(eArg ?? 10);
const WINDOW_MS = Number(wArg ?? 60) * 1000;
/** After the first sync: let the start-up garbage be collected before the window opens. */
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 15_000);
const START_TIMEOUT_MS = 120_000;
const CLI = process.env.BENCH_CLI ?? packagePath("bin/bpfproxy");
const entry = CLI.endsWith(".js") ? [process.execPath, CLI] : [CLI];
const CLK_TCK = 100; // USER_HZ on Linux

if (process.getuid?.() !== 0) throw new Error("bench/idle-cpu.ts builds namespaces and loads BPF: run it as root");

/** CPU seconds (user + system, all threads) the process has used. */
function cpuSeconds(pid: number): number {
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-idle-"));
  const snap = cluster(N, E);
  writeFileSync(
    join(dir, "cluster.json"),
    JSON.stringify({
      apiVersion: "v1",
      kind: "List",
      items: [...snap.services, ...snap.endpointSlices, nodeObject("node-a")],
    }),
  );
  let lab: Lab | undefined;
  let bpffs: PrivateBpffs | undefined;
  let child: ReturnType<Lab["spawn"]> | undefined;
  try {
    lab = await Lab.create({
      prefix: `bpxidle${process.pid}-`,
      nodes: [{ name: "node-a", ip: "192.0.2.11", podCIDR: "10.244.1.0/24", pods: [] }],
    });
    bpffs = PrivateBpffs.create("idle");
    const args = [
      ...[...entry, "run", "--source", `dir:${dir}`, "--hostname-override", "node-a"],
      ...["--bpffs", bpffs.path, "--pod-interfaces", "lxc*", "--devices", "eth0", "--cluster-cidr", "10.244.0.0/16"],
      ...["--v", "1"],
    ];
    const t0 = Date.now();
    child = lab.spawn("node-a", args);
    let out = "";
    let exited = false;
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.once("exit", () => (exited = true));
    const syncedLines = () => out.split("\n").filter((l) => /Z synced /.test(l));
    while (syncedLines().length === 0) {
      if (exited) throw new Error(`daemon exited:\n${out.slice(-4000)}`);
      if (Date.now() - t0 > START_TIMEOUT_MS)
        throw new Error(`no sync after ${START_TIMEOUT_MS} ms:\n${out.slice(-4000)}`);
      await sleep(100);
    }
    const servedMs = Date.now() - t0;
    await sleep(SETTLE_MS);
    const pid = child.pid!;
    const before = syncedLines().length;
    const cpu0 = cpuSeconds(pid);
    const w0 = Date.now();
    await sleep(WINDOW_MS);
    const cpu1 = cpuSeconds(pid);
    const windowS = (Date.now() - w0) / 1000;
    if (exited) throw new Error(`daemon exited during the window:\n${out.slice(-4000)}`);
    const during = syncedLines().slice(before);
    console.log(
      JSON.stringify({
        services: N,
        endpoints: E,
        servedMs,
        windowS: Number(windowS.toFixed(1)),
        cpuS: Number((cpu1 - cpu0).toFixed(2)),
        cpuPercent: Number(((100 * (cpu1 - cpu0)) / windowS).toFixed(2)),
        syncsInWindow: during.length,
        fullSyncsInWindow: during.filter((l) => / full=true/.test(l)).length,
        // The daemon's peak RSS (VmHWM) since it started: the start from the folder file included.
        peakRssMiB: Number(
          (Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024).toFixed(0),
        ),
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
    // The daemon leaves its data plane in place by design; the lab's namespaces and bpffs go with it.
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
