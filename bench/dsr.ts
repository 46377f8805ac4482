// Direct server return versus masquerade for a NodePort (docs/benchmarks.md, "DSR versus SNAT"; docs/dsr.md).
// Root; not part of npm test. The two-node lab (src/lab/) with the real daemons on both nodes: an external host,
// node-a receiving the NodePort, the only backend a pod on node-b. Two NodePort Services with that one backend, one
// annotated snat and one dsr (bpfproxy.io/forwarding-mode), so both modes run against the same daemons, backend
// and paths, in alternating rounds. The client (on the external host) keeps CONCURRENCY TCP connections in flight
// (closed loop): connect, send a line, read the backend's answer, close, and again. Printed per mode: connections
// per second (each round's, and their median), latency of connect to answer (p50, p99 over all rounds), errors,
// and the DSR/SNAT ratios. Usage: node --import tsx bench/dsr.ts [seconds per round] [rounds] [concurrency] [order]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { endpointSlice, manifest, node, service } from "../test/fixtures/k8s-objects.js";

const SECONDS = Number(process.argv[2] ?? 5);
const ROUNDS = Number(process.argv[3] ?? 3);
const CONCURRENCY = Number(process.argv[4] ?? 16);
const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const EXT = "198.51.100.10";
const WEB_B = "10.244.2.5";
const PORTS = { snat: 30110, dsr: 30111 } as const;
// The order of the modes within a round (5th argument, e.g. dsr,snat).
const ORDER = (process.argv[5] ?? "snat,dsr").split(",") as (keyof typeof PORTS)[];
const MODES = Object.fromEntries(ORDER.map((m) => [m, PORTS[m]])) as typeof PORTS;

// Answers each connection's first line and closes (the client closes too): one short request per connection.
const SERVER = `
const net = require("node:net");
net.createServer((s) => {
  s.once("data", () => s.end("ok\\n"));
  s.on("error", () => {});
}).listen(8080, () => console.log("ready"));
`;

// CONCURRENCY workers for SECONDS: each connects, writes a line, waits for the answer and the close, then again.
const CLIENT = `
const net = require("node:net");
const [host, port, seconds, conc] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const lat = []; let errors = 0;
const end = performance.now() + seconds * 1000;
function one() {
  return new Promise((resolve) => {
    const t = performance.now();
    const s = net.connect(port, host, () => s.write("q\\n"));
    let buf = "";
    s.setTimeout(3000, () => s.destroy(new Error("timeout")));
    s.setEncoding("utf8");
    s.on("data", (d) => (buf += d));
    s.on("error", () => {});
    s.on("close", () => { if (buf === "ok\\n") lat.push(performance.now() - t); else errors++; resolve(); });
  });
}
async function worker() { while (performance.now() < end) await one(); }
const t0 = performance.now();
Promise.all(Array.from({ length: conc }, worker)).then(() => {
  const secs = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ conns: lat.length, errors, secs, lat }));
});
`;

interface Round {
  conns: number;
  errors: number;
  secs: number;
  lat: number[];
}

const quantile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
const median = (xs: number[]) =>
  quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-bench-dsr-"));
  const objects: unknown[] = [node("node-a", NODE_A), node("node-b", NODE_B)];
  for (const [mode, nodePort] of Object.entries(MODES)) {
    const ports = [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" as const, nodePort }];
    objects.push(
      service(`np-${mode}`, mode === "snat" ? "10.96.0.80" : "10.96.0.81", ports, {
        annotations: { "bpfproxy.io/forwarding-mode": mode },
        spec: { type: "NodePort", externalTrafficPolicy: "Cluster" },
      }),
      endpointSlice(`np-${mode}`, ports, [{ ip: WEB_B, node: "node-b" }]),
    );
  }
  writeFileSync(join(dir, "services.yaml"), manifest(objects));
  let lab: Lab | undefined;
  const bpffs: PrivateBpffs[] = [];
  const proxies: ProxyNode[] = [];
  try {
    lab = await Lab.create({
      prefix: `bpxbdsr${process.pid}-`,
      nodes: [
        { name: "node-a", ip: NODE_A, podCIDR: "10.244.1.0/24", pods: [] },
        { name: "node-b", ip: NODE_B, podCIDR: "10.244.2.0/24", pods: [{ name: "web-b", ip: WEB_B }] },
      ],
      external: { name: "ext", ip: EXT },
    });
    const server = lab.spawn("web-b", [process.execPath, "-e", SERVER]);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the backend did not start")), 10_000);
      server.stdout!.on("data", (d: Buffer) => {
        if (d.toString().includes("ready")) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    for (const name of ["node-a", "node-b"] as const) {
      const fs = PrivateBpffs.create(`bench-dsr-${name}`);
      bpffs.push(fs);
      const p = await ProxyNode.start(lab, name, {
        manifestDir: dir,
        bpffs: fs.path,
        extraArgs: ["--healthz-bind-address", "", "--metrics-bind-address", ""],
      });
      proxies.push(p);
      await p.waitForStatus(
        (s) => s.frontends.filter((f) => f.type === "NodePort" && f.backends.length === 1).length >= 2,
        15_000,
      );
    }
    console.log(`# ${ROUNDS} rounds of ${SECONDS} s per mode, alternating; ${CONCURRENCY} connections in flight`);
    const rounds: Record<keyof typeof MODES, Round[]> = { snat: [], dsr: [] };
    for (let r = 0; r < ROUNDS; r++)
      for (const [mode, port] of Object.entries(MODES) as [keyof typeof MODES, number][]) {
        const out = await lab.run(
          "ext",
          [process.execPath, "-e", CLIENT, NODE_A, String(port), String(SECONDS), String(CONCURRENCY)],
          { timeoutMs: (SECONDS + 30) * 1000 },
        );
        const round = JSON.parse(out.trim().split("\n").at(-1)!) as Round;
        rounds[mode].push(round);
        console.log(
          `# round ${r + 1} ${mode}: ${(round.conns / round.secs).toFixed(0)} conn/s, ${round.errors} errors`,
        );
      }
    // The daemons' packet counters (nonzero ones), to see where packets went.
    for (const [i, p] of proxies.entries())
      console.log(
        `# counters node-${"ab"[i]}: ${JSON.stringify(
          Object.fromEntries(
            Object.entries((await p.status()).counters)
              .filter(([, c]) => c.packets > 0)
              .map(([k, c]) => [k, c.packets]),
          ),
        )}`,
      );
    const summary = Object.fromEntries(
      (Object.keys(MODES) as (keyof typeof MODES)[]).map((mode) => {
        const rs = rounds[mode];
        const lat = rs.flatMap((x) => x.lat).sort((a, b) => a - b);
        return [
          mode,
          {
            connPerSec: median(rs.map((x) => x.conns / x.secs)),
            perRound: rs.map((x) => Math.round(x.conns / x.secs)),
            p50: quantile(lat, 0.5),
            p99: quantile(lat, 0.99),
            errors: rs.reduce((a, x) => a + x.errors, 0),
          },
        ];
      }),
    ) as Record<
      keyof typeof MODES,
      { connPerSec: number; perRound: number[]; p50: number; p99: number; errors: number }
    >;
    console.log("| mode | conn/s (median of rounds) | per round | p50 ms | p99 ms | errors |");
    console.log("|---|---|---|---|---|---|");
    for (const [mode, s] of Object.entries(summary))
      console.log(
        `| ${mode} | ${s.connPerSec.toFixed(0)} | ${s.perRound.join(" / ")} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.errors} |`,
      );
    const { snat, dsr } = summary;
    console.log(
      `| dsr / snat | ${(dsr.connPerSec / snat.connPerSec).toFixed(2)} | | ${(dsr.p50 / snat.p50).toFixed(2)} | ${(dsr.p99 / snat.p99).toFixed(2)} | |`,
    );
  } finally {
    for (const p of proxies) {
      await p.stop().catch(() => undefined);
      await p.cleanup().catch(() => undefined);
    }
    await lab?.destroy();
    for (const fs of bpffs) fs.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
