// bpfproxy's benchmark harness: `npm run bench -- <suite> [sizes...]` (root; not part of npm test).
//   full-sync   objects known → maps written, N Services × 10 endpoints, beside iptables-restore and nft -f of
//               kube-proxy's layouts for the same objects (in a network namespace the bench creates); peak RSS.
//   one-change  one EndpointSlice change → data plane updated (p50/p99), beside the baselines applying the same
//               change the way kube-proxy does.
//   datapath    BPF_PROG_TEST_RUN ns/packet (bench/datapath.ts).
// Each suite prints a table and writes bench/results/<suite>.json and an SVG chart bench/results/<suite>.svg.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { packagePath } from "../src/paths.js";
import { svcs, iptablesFull, iptablesOneChange, nftFull, nftOneChange } from "./kube-proxy-layouts.js";
import { podIP } from "./objects.js";
import { lineChart } from "./svg.js";

const ENDPOINTS = 10;
const RESULTS = packagePath("bench/results");
const BASELINE_TIMEOUT_MS = Number(process.env.BENCH_BASELINE_TIMEOUT_MS ?? 300_000);
const CHANGES = Number(process.env.BENCH_CHANGES ?? 200);
const BASELINE_CHANGES = Number(process.env.BENCH_BASELINE_CHANGES ?? 20);

type Row = Record<string, number | string | null>;

/** A fresh network namespace for one baseline measurement, removed after (also on failure). */
function inNetns<T>(fn: (ns: string) => T): T {
  const ns = `bpxbench${process.pid}`;
  execFileSync("ip", ["netns", "add", ns]);
  try {
    return fn(ns);
  } finally {
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

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const fmt = (v: number | string | null | undefined) =>
  v === null || v === undefined
    ? "timeout"
    : typeof v !== "number"
      ? v
      : Number.isInteger(v) || v >= 100
        ? v.toFixed(0)
        : v.toFixed(1);

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

function report(suite: string, rows: Row[], chart: { y: string[]; title: string; yLabel: string }): void {
  const cols = Object.keys(rows[0] ?? {});
  console.log(`| ${cols.join(" | ")} |\n|${cols.map(() => "---").join("|")}|`);
  for (const r of rows) console.log(`| ${cols.map((c) => fmt(r[c])).join(" | ")} |`);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(
    join(RESULTS, `${suite}.json`),
    JSON.stringify({ suite, endpointsPerService: ENDPOINTS, date: new Date().toISOString(), rows }, null, 2) + "\n",
  );
  writeFileSync(
    join(RESULTS, `${suite}.svg`),
    lineChart({
      title: chart.title,
      xLabel: "Services (× 10 endpoints)",
      yLabel: chart.yLabel,
      series: chart.y.map((c) => ({
        name: c,
        points: rows
          .filter((r) => typeof r[c] === "number")
          .map((r) => [r.services as number, r[c] as number] as [number, number]),
      })),
    }),
  );
  console.log(`\nwrote ${join(RESULTS, `${suite}.json`)} and .svg`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("the benchmarks load BPF and create network namespaces: run them as root");
  const [suite, ...rest] = process.argv.slice(2);
  const sizes = rest.length ? rest.map(Number) : [10, 1_000, 10_000];
  switch (suite) {
    case "full-sync":
      return report(suite, fullSync(sizes), {
        y: ["bpfproxy_ms", "iptables_restore_ms", "nft_ms"],
        title: "Full sync: objects known → data plane written",
        yLabel: "ms (log)",
      });
    case "one-change":
      return report(suite, oneChange(sizes), {
        y: ["bpfproxy_p99_ms", "iptables_p99_ms", "nft_p99_ms"],
        title: "One EndpointSlice change → data plane updated (p99)",
        yLabel: "ms (log)",
      });
    case "datapath": {
      const r = spawnSync(process.execPath, ["--import", "tsx", packagePath("bench/datapath.ts"), ...rest], {
        stdio: "inherit",
      });
      process.exitCode = r.status ?? 1;
      return;
    }
    default:
      throw new Error("usage: npm run bench -- full-sync|one-change|datapath [sizes...]");
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
