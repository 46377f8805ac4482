// The real daemon with the real manifest-folder source and HTTP servers (the data plane is an
// in-memory stand-in): node eligibility on /healthz from Node objects as the API serves them,
// kubeproxy_network_programming_duration_seconds from EndpointSlice trigger times, and dual-stack
// objects reported (one log line, a gauge) instead of crashing. Servers on 127.0.0.1, bounded waits.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { createServer } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Daemon, type DaemonOptions } from "../src/daemon/daemon.js";
import { FolderSource } from "../src/sources/folder.js";
import type { Dataplane, SyncResult } from "../src/dataplane/types.js";
import type { NodeModel } from "../src/model/types.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

class MemoryDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  syncs: NodeModel[] = [];
  async start(): Promise<void> {}
  async sync(model: NodeModel): Promise<SyncResult> {
    this.syncs.push(model);
    return { upserts: 0, deletes: 0, skipped: [] };
  }
  async refreshAttachments(): Promise<void> {}
  attachments() {
    return [];
  }
  async stop(): Promise<void> {}
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually<T>(f: () => Promise<T>, pred: (v: T) => boolean, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms; last ${JSON.stringify(v)}`);
    await sleep(25);
  }
}

function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  return undefined;
}

const service = (name: string, ips: string[], families = ips.map((ip) => (ip.includes(":") ? "IPv6" : "IPv4"))) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default" },
  spec: {
    type: "ClusterIP",
    clusterIP: ips[0],
    clusterIPs: ips,
    ipFamilies: families,
    ipFamilyPolicy: ips.length > 1 ? "RequireDualStack" : "SingleStack",
    ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
  },
});
const slice = (
  name: string,
  svc: string,
  family: "IPv4" | "IPv6",
  ips: string[],
  annotations: Record<string, string> = {},
) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  addressType: family,
  metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc }, annotations },
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: "node-a" })),
});
/** A Node as the API server serves it (kubectl get node -o yaml, trimmed). */
const node = (o: { taints?: object[]; deletionTimestamp?: string } = {}) => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: {
    name: "node-a",
    uid: "0b6c",
    resourceVersion: "1234",
    labels: { "kubernetes.io/hostname": "node-a", "topology.kubernetes.io/zone": "z1" },
    ...(o.deletionTimestamp ? { deletionTimestamp: o.deletionTimestamp, finalizers: ["example.com/drain"] } : {}),
  },
  spec: {
    podCIDR: "10.244.1.0/24",
    podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"],
    ...(o.taints ? { taints: o.taints } : {}),
  },
  status: {
    addresses: [
      { type: "InternalIP", address: "192.0.2.11" },
      { type: "InternalIP", address: "2001:db8::11" },
      { type: "Hostname", address: "node-a" },
    ],
  },
});

const write = (dir: string, name: string, docs: object[]) =>
  writeFileSync(join(dir, name), docs.map((d) => YAML.stringify(d)).join("---\n"));

async function startDaemon(
  dir: string,
  over: Partial<DaemonOptions> = {},
): Promise<{ d: Daemon; dp: MemoryDataplane; healthz: string; metrics: string }> {
  const hp = await freePort();
  const mp = await freePort();
  const dp = new MemoryDataplane();
  const d = new Daemon(new FolderSource(dir, { debounceMs: 20, settleMs: 30 }), dp, {
    nodeName: "node-a",
    clusterCIDRs: ["10.244.0.0/16"],
    nodePortAddresses: [],
    minSyncPeriodMs: 20,
    syncPeriodMs: 60_000,
    linkPollMs: 60_000,
    healthzBindAddress: `127.0.0.1:${hp}`,
    metricsBindAddress: `127.0.0.1:${mp}`,
    ...over,
  });
  await d.start();
  return { d, dp, healthz: `http://127.0.0.1:${hp}`, metrics: `http://127.0.0.1:${mp}/metrics` };
}

test(
  "/healthz follows the Node: ToBeDeleted taint and deletionTimestamp make it 503 (nodeEligible false), /livez stays 200",
  { timeout: 20_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "bpfproxy-rel-"));
    dirs.push(dir);
    write(dir, "svc.yaml", [service("web", ["10.96.0.10"]), slice("web-1", "web", "IPv4", ["10.244.1.5"])]);
    write(dir, "node.yaml", [node()]);
    const { d, healthz } = await startDaemon(dir);
    try {
      const h = () =>
        get(`${healthz}/healthz`).then((r) => ({
          status: r.status,
          eligible: (JSON.parse(r.body) as { nodeEligible: boolean }).nodeEligible,
        }));
      await eventually(h, (r) => r.status === 200 && r.eligible, 3000, "healthy at start");

      write(dir, "node.yaml", [
        node({ taints: [{ key: "ToBeDeletedByClusterAutoscaler", value: "1732400000", effect: "NoSchedule" }] }),
      ]);
      await eventually(h, (r) => r.status === 503 && !r.eligible, 3000, "tainted node");
      assert.equal((await get(`${healthz}/livez`)).status, 200, "liveness does not depend on the node");

      write(dir, "node.yaml", [node({ taints: [{ key: "node.kubernetes.io/unschedulable", effect: "NoSchedule" }] })]);
      await eventually(h, (r) => r.status === 200 && r.eligible, 3000, "other taints do not matter");

      write(dir, "node.yaml", [node({ deletionTimestamp: new Date().toISOString() })]);
      await eventually(h, (r) => r.status === 503 && !r.eligible, 3000, "node being deleted");
      assert.equal((await get(`${healthz}/livez`)).status, 200);
    } finally {
      await d.stop();
    }
  },
);

test(
  "kubeproxy_network_programming_duration_seconds: one sample per new slice version with a trigger time after start",
  { timeout: 20_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "bpfproxy-rel-"));
    dirs.push(dir);
    const TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time";
    // A trigger time from before the daemon started (e.g. the slice's last change an hour ago): not a sample.
    const old = new Date(Date.now() - 3600_000).toISOString();
    write(dir, "svc.yaml", [
      service("web", ["10.96.0.10"]),
      slice("web-1", "web", "IPv4", ["10.244.1.5"], { [TRIGGER]: old }),
    ]);
    const { d, dp, metrics } = await startDaemon(dir);
    const count = async () =>
      sample(
        await get(metrics).then((r) => r.body),
        'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}',
      ) ?? 0;
    const sum = async () =>
      sample(
        await get(metrics).then((r) => r.body),
        'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}',
      ) ?? 0;
    try {
      await eventually(
        async () => dp.syncs.length,
        (n) => n >= 1,
        3000,
        "first sync",
      );
      const c0 = await count();
      const s0 = await sum();
      await sleep(2000); // so that "1.5 s ago" below is after the daemon started
      assert.equal(await count(), c0, "a trigger time before the proxy started is not a sample");

      // The controller changed the slice 1.5 s ago (RFC 3339 with nanoseconds, as it writes it).
      const t = new Date(Date.now() - 1500).toISOString().replace("Z", "000000Z");
      write(dir, "svc.yaml", [
        service("web", ["10.96.0.10"]),
        slice("web-1", "web", "IPv4", ["10.244.1.5", "10.244.1.6"], { [TRIGGER]: t }),
      ]);
      await eventually(count, (n) => n === c0 + 1, 3000, "one sample");
      const latency = (await sum()) - s0;
      assert.ok(latency >= 1.5 && latency < 3.5, `latency ${latency} s`);

      // Another object changes; the slice did not: no second sample for the same version.
      const syncs = dp.syncs.length;
      write(dir, "other.yaml", [service("api", ["10.96.0.11"])]);
      await eventually(
        async () => dp.syncs.length,
        (n) => n > syncs,
        3000,
        "sync for the other change",
      );
      assert.equal(await count(), c0 + 1);
    } finally {
      await d.stop();
    }
  },
);

test(
  "dual-stack objects: the model carries both families, IPv6 objects counted in bpfproxy_ipv6_skipped",
  { timeout: 20_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "bpfproxy-rel-"));
    dirs.push(dir);
    write(dir, "svc.yaml", [
      service("web", ["10.96.0.10", "fd00:10:96::10"]),
      slice("web-v4", "web", "IPv4", ["10.244.1.5"]),
      slice("web-v6", "web", "IPv6", ["fd00:10:244:1::5"]),
      service("v6only", ["fd00:10:96::20"]),
    ]);
    write(dir, "node.yaml", [node()]);
    let started: Awaited<ReturnType<typeof startDaemon>> | undefined;
    try {
      started = await startDaemon(dir);
      const { dp, metrics } = started;
      await eventually(
        async () => dp.syncs.length,
        (n) => n >= 1,
        3000,
        "first sync",
      );
      const m = dp.syncs.at(-1)!;
      // The model handed to the data plane is dual-stack, each family with its own slices (the BPF data plane
      // then skips the IPv6 frontends: test/dataplane-bpf.test.ts).
      assert.deepEqual(
        m.frontends.map((f) => `${f.address} ${f.backends.map((b) => b.address).join(",")}`),
        ["fd00:10:96::20 ", "10.96.0.10 10.244.1.5", "fd00:10:96::10 fd00:10:244:1::5"],
      );
      const text = (await get(metrics)).body;
      assert.equal(sample(text, 'bpfproxy_ipv6_skipped{kind="Service"}'), 2);
      assert.equal(sample(text, 'bpfproxy_ipv6_skipped{kind="EndpointSlice"}'), 1);

      // The counts follow the objects; what a data plane does not serve it reports itself, per Service.
      write(dir, "other.yaml", [service("api", ["10.96.0.11"]), service("api6", ["fd00:10:96::30"])]);
      await eventually(
        async () => sample((await get(metrics)).body, 'bpfproxy_ipv6_skipped{kind="Service"}'),
        (n) => n === 3,
        3000,
        "second sync counted",
      );
    } finally {
      await started?.d.stop();
    }
  },
);
