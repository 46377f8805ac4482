// `bpfproxy demo`: a self-contained tour in private network namespaces. It builds a node
// with three pods, runs the real daemon against a manifest folder, sends TCP and UDP through
// a ClusterIP, shows which backend answered each request and what the data plane holds,
// removes a backend and shows traffic move, then removes everything it made.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "./lab/netns.js";
import { echoRequest, startEchoServer } from "./lab/index.js";
import { PrivateBpffs, ProxyNode } from "./lab/proxy.js";
import type { AttemptResult } from "./lab/echo.js";

const NODE = "node-a";
const VIP = "10.96.0.10";
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", client: "10.244.1.20" } as const;

export function demoManifests(backends: string[]): unknown[] {
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: {
        type: "ClusterIP",
        clusterIP: VIP,
        clusterIPs: [VIP],
        selector: { app: "web" },
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
        ],
      },
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "web-abc12", namespace: "default", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      ports: [
        { name: "http", port: 8080, protocol: "TCP" },
        { name: "dns", port: 5353, protocol: "UDP" },
      ],
      endpoints: backends.map((ip) => ({
        addresses: [ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: NODE,
      })),
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: NODE, labels: { "kubernetes.io/hostname": NODE } },
      status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
    },
  ];
}

function writeManifests(dir: string, backends: string[]): void {
  writeFileSync(
    join(dir, "web.yaml"),
    demoManifests(backends)
      .map((d) => YAML.stringify(d))
      .join("---\n"),
  );
}

function summarize(label: string, results: AttemptResult[]): void {
  const byBackend = new Map<string, number>();
  let failed = 0;
  for (const r of results) {
    if (!r.ok || !r.reply) {
      failed++;
      continue;
    }
    const [name, peer] = r.reply.trim().split(" ");
    const k = `${name} (saw client ${peer?.split(":")[0]})`;
    byBackend.set(k, (byBackend.get(k) ?? 0) + 1);
  }
  console.log(`  ${label}: ${results.length} requests`);
  for (const [k, n] of [...byBackend].sort()) console.log(`    ${String(n).padStart(3)} answered by ${k}`);
  if (failed) console.log(`    ${String(failed).padStart(3)} failed: ${results.find((r) => !r.ok)?.error ?? "?"}`);
}

export async function runDemo(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error("bpfproxy demo builds network namespaces and loads BPF programs: run it as root");
    return 1;
  }
  const prefix = `bpxdemo${process.pid}-`;
  const manifestDir = mkdtempSync(join(tmpdir(), "bpfproxy-demo-manifests-"));
  let bpffs: PrivateBpffs | undefined;
  let lab: Lab | undefined;
  let proxy: ProxyNode | undefined;
  try {
    console.log("== Building a private lab: node-a with pods web-1, web-2 (backends) and client");
    lab = await Lab.create({
      prefix,
      nodes: [
        {
          name: NODE,
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: Object.entries(PODS).map(([name, ip]) => ({ name, ip })),
        },
      ],
    });
    for (const pod of ["web-1", "web-2"]) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
    writeManifests(manifestDir, [PODS["web-1"], PODS["web-2"]]);
    bpffs = PrivateBpffs.create("demo");

    console.log(`== Starting bpfproxy on ${NODE} (manifests in ${manifestDir})`);
    proxy = await ProxyNode.start(lab, NODE, { manifestDir, bpffs: bpffs.path });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 2), 10_000);

    console.log(`== client -> ${VIP}:80/TCP and ${VIP}:53/UDP (connected sockets)`);
    summarize(`TCP ${VIP}:80`, await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 20 }));
    summarize(`UDP ${VIP}:53`, await echoRequest(lab, "client", { udp: `${VIP}:53`, count: 20 }));

    console.log("\n== bpfproxy status");
    process.stdout.write(await proxy.statusTable());

    console.log("\n== Removing web-2 from the EndpointSlice");
    writeManifests(manifestDir, [PODS["web-1"]]);
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 1), 5000);
    summarize(`TCP ${VIP}:80`, await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 10 }));

    console.log("\n== Removing every backend: new connections are refused at once");
    writeManifests(manifestDir, []);
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 0), 5000);
    summarize(`TCP ${VIP}:80`, await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 3, timeoutMs: 1000 }));
    summarize(`UDP ${VIP}:53`, await echoRequest(lab, "client", { udp: `${VIP}:53`, count: 3, timeoutMs: 1000 }));
    console.log("\n== Done; cleaning up");
    return 0;
  } catch (err) {
    console.error(`demo failed: ${(err as Error).message}`);
    if (proxy) console.error(`daemon log:\n${proxy.logs}`);
    return 1;
  } finally {
    if (proxy) {
      await proxy.stop().catch(() => undefined);
      await proxy
        .cleanup()
        .then((out) => process.stdout.write(out))
        .catch((e: Error) => console.error(`cleanup: ${e.message}`));
    }
    await lab?.destroy();
    bpffs?.release();
    rmSync(manifestDir, { recursive: true, force: true });
  }
}
