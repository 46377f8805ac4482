// least-conn versus random under uneven backend latency (docs/benchmarks.md, "least-conn"). Root; not part of
// npm test. One node of the lab (src/lab/) with the real daemon, two backend pods and a client pod. Each backend
// answers one request at a time (a queue): `fast` takes FAST_MS per request, `slow` SLOW_MS, so a backend sent
// more than it can serve builds a queue. The client opens new TCP connections at a steady rate, each sends a line
// and keeps the connection until the answer; the same load goes to a random Service and a least-conn Service
// with the same two backends, one after the other. Printed per algorithm: requests per backend, the imbalance
// of open connections (sampled every 10 ms: mean and max of |open(fast) - open(slow)|) and the completion
// time (p50, p99, max). Usage: node --import tsx bench/leastconn.ts [rate/s] [seconds]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { endpointSlice, manifest, node, service } from "../test/fixtures/k8s-objects.js";

const RATE = Number(process.argv[2] ?? 150);
const SECONDS = Number(process.argv[3] ?? 10);
const FAST_MS = 2;
const SLOW_MS = 10;
const PODS = { fast: "10.244.1.5", slow: "10.244.1.6" };
const CLIENT = "10.244.1.20";
const VIPS = {
  random: "10.96.0.70",
  "least-conn": "10.96.0.71",
  "random w5:1": "10.96.0.72",
  "least-conn w5:1": "10.96.0.73",
} as const;
// bpfproxy.io/backend-weights in the ratio of the backends' speeds (fast serves 5 requests while slow serves 1).
const WEIGHTS = { "bpfproxy.io/backend-weights": `${PODS.fast}=5, ${PODS.slow}=1` };
const PORT = { name: "http", port: 80, targetPort: 8080, protocol: "TCP" as const };

// One request at a time, as a single worker: requests wait in a queue for their turn.
const SERVER = `
const net = require("node:net");
const [name, ms] = [process.argv[1], Number(process.argv[2])];
const queue = []; let busy = false;
function next() {
  const s = queue.shift(); if (!s) { busy = false; return; }
  busy = true;
  const until = Date.now() + ms; while (Date.now() < until) {} // the work: CPU, not a timer
  s.end(name + "\\n"); setImmediate(next);
}
net.createServer((s) => {
  s.once("data", () => { queue.push(s); if (!busy) next(); });
  s.on("error", () => {});
}).listen(8080, () => console.log("ready"));
`;

// Opens RATE connections a second; each connection's [start, end] and backend (its answer) are kept, and the open
// connections per backend are replayed from them every 10 ms after the run.
const CLIENT_SCRIPT = `
const net = require("node:net");
const [vip, rate, seconds] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const done = [], spans = [], per = { fast: 0, slow: 0 };
let errors = 0, started = 0;
const total = rate * seconds, t0 = Date.now();
function launch() {
  const t = performance.now();
  const s = net.connect(80, vip, () => s.write("q\\n"));
  let buf = "";
  s.setEncoding("utf8");
  s.on("data", (d) => (buf += d));
  s.on("error", () => {});
  s.on("close", () => {
    const name = buf.trim(), end = performance.now();
    if (name === "fast" || name === "slow") { per[name]++; done.push(end - t); spans.push([t, end, name]); }
    else errors++;
  });
}
const timer = setInterval(() => {
  const due = Math.min(total, Math.floor(((Date.now() - t0) / 1000) * rate));
  while (started < due) { launch(); started++; }
  if (started >= total) clearInterval(timer);
}, 2);
function finish() {
  done.sort((a, b) => a - b);
  const q = (p) => done[Math.min(done.length - 1, Math.floor(p * done.length))] ?? NaN;
  const tmin = Math.min(...spans.map((s) => s[0])), tmax = Math.max(...spans.map((s) => s[1]));
  const diffs = [];
  for (let x = tmin; x <= tmax; x += 10) {
    let f = 0, sl = 0;
    for (const [a, b, n] of spans) if (a <= x && x < b) (n === "fast" ? f++ : sl++);
    diffs.push({ d: Math.abs(f - sl), f, sl });
  }
  const mean = (g) => +(diffs.reduce((a, v) => a + g(v), 0) / Math.max(diffs.length, 1)).toFixed(2);
  console.log(JSON.stringify({ requests: done.length, errors, perBackend: per,
    openFastMean: mean((v) => v.f), openSlowMean: mean((v) => v.sl),
    imbalanceMean: mean((v) => v.d), imbalanceMax: Math.max(...diffs.map((v) => v.d)),
    p50: +q(0.5).toFixed(1), p99: +q(0.99).toFixed(1), max: +done[done.length - 1].toFixed(1) }));
  process.exit(0);
}
const check = setInterval(() => {
  if ((started >= total && done.length + errors >= total) || Date.now() - t0 > (seconds + 30) * 1000) {
    clearInterval(check);
    finish();
  }
}, 20);
`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-bench-lc-"));
  const eps = Object.values(PODS).map((ip) => ({ ip, node: "node-a" }));
  writeFileSync(
    join(dir, "services.yaml"),
    manifest([
      service("random", VIPS.random, [PORT], { annotations: { "bpfproxy.io/lb-algorithm": "random" } }),
      endpointSlice("random", [PORT], eps),
      service("least-conn", VIPS["least-conn"], [PORT], { annotations: { "bpfproxy.io/lb-algorithm": "least-conn" } }),
      endpointSlice("least-conn", [PORT], eps),
      service("wrandom", VIPS["random w5:1"], [PORT], { annotations: WEIGHTS }),
      endpointSlice("wrandom", [PORT], eps),
      service("wlc", VIPS["least-conn w5:1"], [PORT], {
        annotations: { "bpfproxy.io/lb-algorithm": "least-conn", ...WEIGHTS },
      }),
      endpointSlice("wlc", [PORT], eps),
      node("node-a", "192.0.2.11"),
    ]),
  );
  let lab: Lab | undefined;
  let bpffs: PrivateBpffs | undefined;
  let proxy: ProxyNode | undefined;
  try {
    lab = await Lab.create({
      prefix: `bpxblc${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [...Object.entries(PODS).map(([name, ip]) => ({ name, ip })), { name: "client", ip: CLIENT }],
        },
      ],
    });
    for (const [name, ms] of [
      ["fast", FAST_MS],
      ["slow", SLOW_MS],
    ] as const) {
      const child = lab.spawn(name, [process.execPath, "-e", SERVER, name, String(ms)]);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`server ${name} did not start`)), 10_000);
        child.stdout!.on("data", (d: Buffer) => {
          if (d.toString().includes("ready")) {
            clearTimeout(t);
            resolve();
          }
        });
      });
    }
    bpffs = PrivateBpffs.create("bench-lc");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--healthz-bind-address", "", "--metrics-bind-address", ""],
    });
    await proxy.waitForStatus((s) => s.frontends.filter((f) => f.backends.length === 2).length === 4, 15_000);
    console.log(
      `# ${RATE} new connections/s for ${SECONDS} s; fast ${FAST_MS} ms, slow ${SLOW_MS} ms per request, one at a time`,
    );
    for (const [alg, vip] of Object.entries(VIPS)) {
      const out = await lab.run("client", [process.execPath, "-e", CLIENT_SCRIPT, vip, String(RATE), String(SECONDS)], {
        timeoutMs: (SECONDS + 60) * 1000,
      });
      console.log(`${alg.padEnd(16)} ${out.trim().split("\n").at(-1)}`);
    }
  } finally {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
