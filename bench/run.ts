// bpfproxy's benchmark harness: `npm run bench -- <suite> [sizes...]` (root; not part of npm test).
//   conn-rate   new TCP connections/s and p50/p99 latency from a pod through a ClusterIP, for bpfproxy, kube-proxy's
//               iptables and nftables layouts and straight to the pod (bench/conn-rate.ts), in a two-node lab.
//   full-sync   objects known → maps written, N Services × 10 endpoints, beside iptables-restore and nft -f of
//               kube-proxy's layouts for the same objects (in a network namespace the bench creates); peak RSS.
//   one-change  one EndpointSlice change → data plane updated (p50/p99), beside the baselines applying the same
//               change the way kube-proxy does.
//   datapath    BPF_PROG_TEST_RUN ns/packet (bench/datapath.ts; its own arguments).
//   all         conn-rate, full-sync and one-change at the given sizes, then datapath with its defaults.
// Each suite prints a table and writes bench/results/<suite>.json (and an SVG chart bench/results/<suite>.svg).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { join } from "node:path";
import { packagePath } from "../src/paths.js";
import { svcs, iptablesFull, iptablesOneChange, nftFull, nftOneChange } from "./kube-proxy-layouts.js";
import { podIP } from "./objects.js";
import { lineChart, type Chart } from "./svg.js";
import { markdownTable, pct, type Row } from "./stats.js";
import { connRate, CONN_RATE_PARAMS, CONN_RATE_SETUPS } from "./conn-rate.js";

const ENDPOINTS = 10;
const RESULTS = packagePath("bench/results");
const BASELINE_TIMEOUT_MS = Number(process.env.BENCH_BASELINE_TIMEOUT_MS ?? 300_000);
const CHANGES = Number(process.env.BENCH_CHANGES ?? 200);
const BASELINE_CHANGES = Number(process.env.BENCH_BASELINE_CHANGES ?? 20);

/** A fresh network namespace for one baseline measurement, removed after (also on failure). */
function inNetns<T>(fn: (ns: string) => T): T {
  const ns = `bpxbench${process.pid}`;
  execFileSync("ip", ["netns", "add", ns]);
  const onExit = () => spawnSync("ip", ["netns", "del", ns], { timeout: 10_000 });
  process.once("exit", onExit); // an interrupted run (SIGINT/SIGTERM → exit) still removes it
  try {
    return fn(ns);
  } finally {
    process.removeListener("exit", onExit);
    execFileSync("ip", ["netns", "del", ns]);
  }
}

/** Runs a command inside the namespace with `input` on stdin; milliseconds, or null after the timeout. */
function timed(ns: string, cmd: string[], input: string): number | null {
  const t = performance.now();
  const r = spawnSync("ip", ["netns", "exec", ns, ...cmd], { input, timeout: BASELINE_TIMEOUT_MS, maxBuffer: 1 << 26 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ETIMEDOUT") return null;
  if (r.status !== 0) throw new Error(`${cmd.join(" ")}: exit ${r.status}: ${r.stderr.toString().slice(0, 500)}`);
  return performance.now() - t;
}

/** bpfproxy's part runs in a child process so that its peak RSS is its own. */
function bpfproxyChild(mode: string, n: number): Row {
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", packagePath("bench/bpfproxy-sync.ts"), mode, String(n), String(ENDPOINTS), String(CHANGES)],
    { encoding: "utf8", timeout: 30 * 60_000, maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) throw new Error(`bench/bpfproxy-sync.ts ${mode} ${n}: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as Row;
}

function fullSync(sizes: number[]): Row[] {
  const rows: Row[] = [];
  for (const n of sizes) {
    const b = bpfproxyChild("full", n);
    const all = svcs(n, ENDPOINTS);
    const ipt = inNetns((ns) => timed(ns, ["iptables-restore", "--noflush"], iptablesFull(all)));
    const nft = inNetns((ns) => timed(ns, ["nft", "-f", "-"], nftFull(all)));
    rows.push({
      services: n,
      bpfproxy_ms: b.ms as number,
      bpfproxy_peak_rss_mib: b.peakRssMiB as number,
      iptables_restore_ms: ipt,
      nft_ms: nft,
    });
    console.error(`full-sync ${n}: done`);
  }
  return rows;
}

function oneChange(sizes: number[]): Row[] {
  const rows: Row[] = [];
  for (const n of sizes) {
    const b = bpfproxyChild("one-change", n);
    const all = svcs(n, ENDPOINTS);
    const base = (tool: "iptables" | "nft") =>
      inNetns((ns) => {
        const loaded =
          tool === "iptables"
            ? timed(ns, ["iptables-restore", "--noflush"], iptablesFull(all))
            : timed(ns, ["nft", "-f", "-"], nftFull(all));
        if (loaded === null) return null; // the initial full load did not finish: nothing to change
        const lat: number[] = [];
        for (let c = 1; c <= BASELINE_CHANGES; c++) {
          const s = all[(c * 7919) % n]!;
          const removed = s.endpoints.at(-1)!;
          const added = podIP(s.i, 32 + c);
          s.endpoints = [...s.endpoints.slice(0, -1), added];
          const t =
            tool === "iptables"
              ? timed(ns, ["iptables-restore", "--noflush"], iptablesOneChange(all, s, removed))
              : timed(ns, ["nft", "-f", "-"], nftOneChange(s, added, removed));
          if (t === null) return null;
          lat.push(t);
        }
        return { p50: pct(lat, 0.5), p99: pct(lat, 0.99) };
      });
    const ipt = base("iptables");
    const nft = base("nft");
    rows.push({
      services: n,
      bpfproxy_p50_ms: b.p50 as number,
      bpfproxy_p99_ms: b.p99 as number,
      bpfproxy_entries_written: b.written as number,
      iptables_p50_ms: ipt?.p50 ?? null,
      iptables_p99_ms: ipt?.p99 ?? null,
      nft_p50_ms: nft?.p50 ?? null,
      nft_p99_ms: nft?.p99 ?? null,
    });
    console.error(`one-change ${n}: done`);
  }
  return rows;
}

const machine = () => ({
  date: new Date().toISOString(),
  kernel: release(),
  cpus: cpus().length,
  loadavg: loadavg().map((l) => Number(l.toFixed(2))),
});

/** Prints the suite's table, writes its JSON and chart into bench/results/. */
function report(suite: string, rows: Row[], chart: Omit<Chart, "xLabel">, extra: Record<string, unknown> = {}): void {
  console.log(
    `\n## ${suite}  (load average at the end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")})\n`,
  );
  console.log(markdownTable(rows));
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(
    join(RESULTS, `${suite}.json`),
    JSON.stringify({ suite, endpointsPerService: ENDPOINTS, ...machine(), ...extra, rows }, null, 2) + "\n",
  );
  writeFileSync(join(RESULTS, `${suite}.svg`), lineChart({ xLabel: "Services (× 10 endpoints)", ...chart }));
  console.log(`\nwrote ${join(RESULTS, `${suite}.json`)} and .svg`);
}

/** Series of numeric column `col` over `services`, one per value of column `by` (or one per column). */
function series(rows: Row[], cols: string[]): Chart["series"] {
  return cols.map((c) => ({
    name: c,
    points: rows
      .filter((r) => typeof r[c] === "number")
      .map((r) => [r.services as number, r[c] as number] as [number, number]),
  }));
}

async function runConnRate(sizes: number[]): Promise<void> {
  const rows = await connRate(sizes);
  report(
    "conn-rate",
    rows,
    {
      title: "New connections per second through a ClusterIP",
      yLabel: "connections / s",
      linear: true,
      series: CONN_RATE_SETUPS.map((setup) => ({
        name: setup,
        points: rows
          .filter((r) => r.setup === setup && typeof r.conn_per_s === "number")
          .map((r) => [r.services as number, r.conn_per_s as number] as [number, number]),
      })),
    },
    { client: "ab (apache2-utils), one request per connection", ...CONN_RATE_PARAMS },
  );
}

function runFullSync(sizes: number[]): void {
  const rows = fullSync(sizes);
  report("full-sync", rows, {
    title: "Full sync: objects known → data plane written",
    yLabel: "ms (log)",
    series: series(rows, ["bpfproxy_ms", "iptables_restore_ms", "nft_ms"]),
  });
}

function runOneChange(sizes: number[]): void {
  const rows = oneChange(sizes);
  report(
    "one-change",
    rows,
    {
      title: "One EndpointSlice change → data plane updated",
      yLabel: "ms (log)",
      series: series(rows, [
        "bpfproxy_p50_ms",
        "bpfproxy_p99_ms",
        "iptables_p50_ms",
        "iptables_p99_ms",
        "nft_p50_ms",
        "nft_p99_ms",
      ]),
    },
    { bpfproxyChanges: CHANGES, baselineChanges: BASELINE_CHANGES },
  );
}

/** bench/datapath.ts with its own arguments; its output is also kept in bench/results/datapath.txt. */
function runDatapath(args: string[]): number {
  const r = spawnSync(process.execPath, ["--import", "tsx", packagePath("bench/datapath.ts"), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    encoding: "utf8",
    maxBuffer: 1 << 26,
  });
  process.stdout.write(r.stdout ?? "");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "datapath.txt"), r.stdout ?? "");
  return r.status ?? 1;
}

// An interrupted run still removes its namespaces: the suites' 'exit' handlers run on process.exit.
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130));

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("the benchmarks load BPF and create network namespaces: run them as root");
  const [suite, ...rest] = process.argv.slice(2);
  const sizes = rest.length ? rest.map(Number) : [10, 1_000, 10_000];
  if (sizes.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`sizes must be positive integers: ${rest.join(" ")}`);
  const m = machine();
  console.log(
    `bench ${suite} ${rest.join(" ")}: ${m.date}, Linux ${m.kernel}, ${m.cpus} CPUs, load average ${m.loadavg.join(" ")}`,
  );
  switch (suite) {
    case "conn-rate":
      return runConnRate(sizes);
    case "full-sync":
      return runFullSync(sizes);
    case "one-change":
      return runOneChange(sizes);
    case "datapath":
      process.exitCode = runDatapath(rest);
      return;
    case "all": {
      // Each suite on its own: one failing is reported and the others still run.
      const failed: string[] = [];
      for (const [name, fn] of [
        ["conn-rate", () => runConnRate(sizes)],
        ["full-sync", () => runFullSync(sizes)],
        ["one-change", () => runOneChange(sizes)],
        [
          "datapath",
          () => {
            if (runDatapath([]) !== 0) throw new Error("exit status not 0");
          },
        ],
      ] as const) {
        try {
          await fn();
        } catch (err) {
          failed.push(name);
          console.error(`bench all: ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      if (failed.length) throw new Error(`failed suites: ${failed.join(", ")}`);
      return;
    }
    default:
      throw new Error("usage: npm run bench -- conn-rate|full-sync|one-change|all [sizes...] | datapath [args]");
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
