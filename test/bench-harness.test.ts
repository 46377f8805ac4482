// The pure parts of the benchmark harness (bench/): percentiles, tables, the ab parser, the SVG chart and
// kube-proxy's layouts for a two-Service cluster. The benchmarks themselves are not part of npm test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fmt, markdownTable, medianRun, parseAb, pct, type AbResult } from "../bench/stats.js";
import { lineChart, niceCeil } from "../bench/svg.js";
import { iptablesFull, nftFull, svcs } from "../bench/kube-proxy-layouts.js";
import { clusterIP, podIP } from "../bench/objects.js";

test("pct is the nearest-rank percentile", () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100, unsorted
  assert.equal(pct(xs, 0.5), 50);
  assert.equal(pct(xs, 0.99), 99);
  assert.equal(pct(xs, 1), 100);
  assert.equal(pct(xs, 0), 1);
  assert.equal(pct([7], 0.99), 7);
  assert.equal(pct([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000], 0.99), 1000); // p99 of 10 samples is the worst one
  assert.throws(() => pct([], 0.5));
});

test("table cells and the Markdown table", () => {
  assert.equal(fmt(null), "timeout");
  assert.equal(fmt("given up after 120 s"), "given up after 120 s");
  assert.equal(fmt(12345.678), "12346");
  assert.equal(fmt(3.14159), "3.1");
  assert.equal(fmt(0.8612), "0.86");
  assert.equal(fmt(7), "7");
  assert.equal(
    markdownTable([
      { services: 10, setup: "direct", conn_per_s: 9499.2 },
      { services: 10, setup: "iptables", conn_per_s: null },
    ]),
    "| services | setup | conn_per_s |\n|---|---|---|\n| 10 | direct | 9499 |\n| 10 | iptables | timeout |",
  );
});

// A real ApacheBench 2.3 run (5 requests); the percentile file's top lines show ab's out-of-range read.
const summary = readFileSync(new URL("./fixtures/ab-summary.txt", import.meta.url), "utf8");

test("parseAb reads ab's summary and its -e percentile file", () => {
  const csv = ["Percentage served,Time in ms", "0,1.826", "50,3.147", "99,4.200", "100,4.313"].join("\n");
  const r = parseAb(summary, csv);
  assert.deepEqual(r, {
    complete: 5,
    failed: 0,
    non2xx: 0,
    seconds: 0.009,
    perSec: 538.91,
    p50Ms: 3.147,
    p99Ms: 4.2,
  });
  assert.equal(parseAb(summary.replace("Failed requests:        0", "Failed requests:        3"), csv).failed, 3);
  assert.equal(parseAb(summary + "Non-2xx responses:      2\n", csv).non2xx, 2);
});

test("parseAb refuses a p99 that ab read past its samples, and a missing field", () => {
  const garbage = ["50,3.147", "99,7311156825131345.000", "100,4.313"].join("\n");
  assert.throws(() => parseAb(summary, garbage), /out of order/);
  assert.throws(() => parseAb(summary, "50,1\n100,2"), /lacks/);
  assert.throws(() => parseAb("nothing", "50,1\n99,2\n100,3"), /Complete requests/);
});

test("medianRun picks the run with the median rate", () => {
  const run = (perSec: number): AbResult => ({
    complete: 1,
    failed: 0,
    non2xx: 0,
    seconds: 1,
    perSec,
    p50Ms: perSec,
    p99Ms: perSec,
  });
  assert.equal(medianRun([run(9), run(3), run(5)]).perSec, 5);
  assert.equal(medianRun([run(9), run(3), run(5), run(7)]).perSec, 5);
  assert.equal(medianRun([run(4)]).perSec, 4);
});

test("lineChart: one polyline per series, higher values drawn higher, linear and log axes", () => {
  for (const linear of [true, false]) {
    const svg = lineChart({
      title: "t <&>",
      xLabel: "x",
      yLabel: "y",
      linear,
      series: [
        {
          name: "a",
          points: [
            [10, 100],
            [1000, 8000],
          ],
        },
        { name: "b", points: [[10, 50]] },
        { name: "empty", points: [] },
      ],
    });
    assert.match(svg, /^<svg /);
    assert.ok(svg.includes("t &lt;&amp;>"), "title escaped");
    const polys = [...svg.matchAll(/<polyline [^>]*points="([^"]+)"/g)].map((m) => m[1]!.split(" "));
    assert.equal(polys.length, 2); // the series without points draws no line
    const [p0, p1] = polys[0]!.map((p) => p.split(",").map(Number)) as [number[], number[]];
    assert.ok(p1[0]! > p0[0]!, "x grows to the right");
    assert.ok(p1[1]! < p0[1]!, "the larger value is higher (smaller y)");
    assert.equal((svg.match(/<circle /g) ?? []).length, 3);
    if (linear) assert.ok(svg.includes(">10,000</text>"), "linear axis tops at the next 1/2/5 step");
  }
  assert.equal(niceCeil(8000), 10_000);
  assert.equal(niceCeil(1500), 2000);
  assert.equal(niceCeil(400), 500);
  assert.equal(niceCeil(100), 100);
});

test("kube-proxy's iptables layout for 2 Services × 2 endpoints", () => {
  const all = svcs(2, 2);
  assert.deepEqual(all[1]!.endpoints, [podIP(1, 0), podIP(1, 1)]);
  const lines = iptablesFull(all, { hooks: true }).split("\n");
  assert.equal(lines[0], "*nat");
  assert.equal(lines.at(-2), "COMMIT");
  // Chains: the four fixed ones, one KUBE-SVC per Service and one KUBE-SEP per endpoint, each declared once.
  const decl = lines.filter((l) => l.startsWith(":"));
  assert.equal(decl.length, 4 + 2 + 4);
  assert.equal(new Set(decl).size, decl.length);
  // Dispatch: one rule per Service matching its ClusterIP and port, then the NodePort rule last.
  const dispatch = lines.filter((l) => l.startsWith("-A KUBE-SERVICES "));
  assert.equal(dispatch.length, 3);
  assert.match(dispatch[0]!, new RegExp(`-d ${clusterIP(0)}/32 --dport 80 -j KUBE-SVC-`));
  assert.match(dispatch[2]!, /--dst-type LOCAL -j KUBE-NODEPORTS/);
  // Endpoint choice: the first of two endpoints with probability 1/2, the last unconditionally.
  const svc0 = dispatch[0]!.split(" -j ")[1]!;
  const svcRules = lines.filter((l) => l.startsWith(`-A ${svc0} `));
  assert.equal(svcRules.length, 3);
  assert.match(svcRules[0]!, /! -s 10\.128\.0\.0\/9 -j KUBE-MARK-MASQ/);
  assert.match(svcRules[1]!, /--probability 0\.5000000000 -j KUBE-SEP-/);
  assert.doesNotMatch(svcRules[2]!, /probability/);
  const dnat = lines.filter((l) => l.includes("-j DNAT"));
  assert.deepEqual(
    dnat.map((l) => l.split("--to-destination ")[1]),
    [podIP(0, 0), podIP(0, 1), podIP(1, 0), podIP(1, 1)].map((ip) => `${ip}:8080`),
  );
  // The hooks only with { hooks: true }.
  assert.ok(lines.includes('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'));
  assert.ok(!iptablesFull(all).includes("-A PREROUTING"));
});

test("kube-proxy's nftables layout for 2 Services × 2 endpoints", () => {
  const text = nftFull(svcs(2, 2));
  const elements = text.split("\n").filter((l) => l.startsWith("add element ip kube-proxy service-ips"));
  assert.equal(elements.length, 2);
  assert.match(elements[1]!, new RegExp(`\\{ ${clusterIP(1).replace(/\./g, "\\.")} \\. tcp \\. 80 : goto service-`));
  assert.equal((text.match(/numgen random mod 2 vmap/g) ?? []).length, 2);
  assert.equal((text.match(/dnat to /g) ?? []).length, 4);
  assert.match(text, /type nat hook prerouting priority -100/);
});
