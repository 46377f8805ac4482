// End to end against the Kubernetes API: the daemon in a lab node namespace follows our test
// API server through its list/watch reflectors, objects are made with the real kubectl, and real
// traffic checks what the data plane does. Covers relists (410 Gone), dropped watches, the API
// server being away for 60 s under load, invalid objects, /healthz, /metrics and healthCheckNodePort.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "node:net";
import YAML from "yaml";
import { startApiServer, type ApiServer } from "./apiserver/index.js";
import { unixToTcp } from "./fixtures/relay.js";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startLoad } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.10";
const LB_VIP = "10.96.0.40";
const HC_PORT = 32123;
const POD = { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20" };
const API_IN_NODE = "127.0.0.1:6443";

const service = (name: string, ip: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default" },
  spec: {
    type: "ClusterIP",
    clusterIP: ip,
    clusterIPs: [ip],
    ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
    ...extra,
  },
});
const slice = (name: string, svc: string, ips: string[]) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  addressType: "IPv4",
  metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc } },
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  endpoints: ips.map((ip) => ({
    addresses: [ip],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: "node-a",
  })),
});
const node = {
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: "node-a", labels: { "kubernetes.io/hostname": "node-a" } },
  status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
};
const yaml = (...docs: unknown[]) => docs.map((d) => YAML.stringify(d)).join("---\n");
const backendsOf = (s: DataplaneStatus, vip: string) =>
  s.frontends
    .find((f) => f.address === vip)
    ?.backends.map((b) => b.address)
    .sort();

describe("following the Kubernetes API", { timeout: 300_000 }, () => {
  let dir: string;
  let api: ApiServer;
  let relay: Server;
  let lab: Lab;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let kubeconfig: string;

  function kubectl(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        "kubectl",
        ["--kubeconfig", kubeconfig, "--cache-dir", join(dir, "kcache"), ...args],
        { timeout: 30_000, env: { ...process.env, HOME: dir } },
        (err, stdout, stderr) => (err ? reject(new Error(`kubectl ${args.join(" ")}: ${stderr}`)) : resolve(stdout)),
      );
    });
  }
  async function kubectlFile(verb: string, ...docs: unknown[]): Promise<string> {
    const f = join(dir, `m-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, yaml(...docs));
    return kubectl(verb, "-f", f);
  }
  /** GET inside the node namespace (where the daemon's servers listen). */
  async function httpInNode(url: string): Promise<{ status: number; body: string }> {
    const r = await lab.exec("node-a", [
      process.execPath,
      "-e",
      `fetch(${JSON.stringify(url)}).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { console.error(String(e)); process.exit(1); })`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { status: number; body: string };
  }
  async function metric(name: string, labels: string): Promise<number> {
    const { body } = await httpInNode("http://127.0.0.1:10249/metrics");
    const line = body.split("\n").find((l) => l.startsWith(name) && l.includes(labels));
    return line ? Number(line.split(" ").pop()) : 0;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-e2e-k8s-"));
    api = await startApiServer({ port: 0 });
    kubeconfig = api.writeKubeconfig(join(dir, "kubectl.kubeconfig"));
    // The daemon lives in the node namespace: it reaches the API server through a relay.
    const sock = join(dir, "api.sock");
    relay = await unixToTcp(sock, "127.0.0.1", api.port);
    lab = await Lab.create({
      prefix: `bpxk8s${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: POD.web1 },
            { name: "web-2", ip: POD.web2 },
            { name: "client", ip: POD.client },
          ],
        },
      ],
    });
    const r = lab.spawn("node-a", [
      process.execPath,
      "--import",
      "tsx",
      "test/fixtures/relay.ts",
      "tcp-to-unix",
      API_IN_NODE,
      sock,
    ]);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("relay not ready")), 10_000);
      r.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && (clearTimeout(t), resolve()));
    });
    for (const pod of ["web-1", "web-2"]) await startEchoServer(lab, pod, { name: pod, tcp: [8080] });
    const daemonKubeconfig = join(dir, "daemon.kubeconfig");
    writeFileSync(
      daemonKubeconfig,
      YAML.stringify({
        apiVersion: "v1",
        kind: "Config",
        "current-context": "test",
        // client-node refuses plain http unless TLS verification is explicitly off.
        clusters: [{ name: "test", cluster: { server: `http://${API_IN_NODE}`, "insecure-skip-tls-verify": true } }],
        contexts: [{ name: "test", context: { cluster: "test", user: "test" } }],
        users: [{ name: "test", user: {} }],
      }),
    );
    await kubectlFile("create", node, service("web", VIP), slice("web-1", "web", [POD.web1, POD.web2]));
    bpffs = PrivateBpffs.create("e2e-k8s");
    proxy = await ProxyNode.start(lab, "node-a", {
      kubeconfig: daemonKubeconfig,
      bpffs: bpffs.path,
      extraArgs: ["--sync-period", "10s"],
    });
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    relay?.close();
    await api?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a Service and EndpointSlice made with kubectl carry traffic to both backends", async () => {
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
    const results = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 20 });
    assert.deepEqual(
      results.filter((r) => !r.ok),
      [],
    );
    assert.deepEqual([...new Set(results.map((r) => r.reply!.split(" ")[0]))].sort(), ["web-1", "web-2"]);
  });

  test("scaling endpoints with kubectl replace moves new connections", async () => {
    await kubectlFile("replace", slice("web-1", "web", [POD.web1]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 1, 5000);
    const results = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 10 });
    assert.deepEqual([...new Set(results.map((r) => r.reply?.split(" ")[0]))], ["web-1"]);
    await kubectlFile("replace", slice("web-1", "web", [POD.web1, POD.web2]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 5000);
  });

  test("deleting and recreating a Service removes and restores its frontend", async () => {
    await kubectlFile("delete", service("web", VIP));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP) === undefined, 5000);
    await kubectlFile("create", service("web", VIP));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 5000);
    const results = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 5 });
    assert.deepEqual(
      results.filter((r) => !r.ok),
      [],
    );
  });

  test("after 410 Gone the informers relist and later changes still arrive", async () => {
    api.forceGone();
    await kubectlFile("replace", slice("web-1", "web", [POD.web2]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.join() === POD.web2, 10_000);
    await kubectlFile("replace", slice("web-1", "web", [POD.web1, POD.web2]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
  });

  test("after a dropped watch the informers reconnect and later changes still arrive", async () => {
    assert.ok(api.dropWatches() > 0, "the daemon had open watches");
    await kubectlFile("replace", slice("web-1", "web", [POD.web1]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.join() === POD.web1, 10_000);
    await kubectlFile("replace", slice("web-1", "web", [POD.web1, POD.web2]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
  });

  test("an invalid object is skipped and counted; other services keep working", async () => {
    const before = await metric("bpfproxy_invalid_objects_total", 'kind="EndpointSlice"');
    await kubectlFile("create", service("bad", "10.96.0.50"));
    // The API server itself rejects such a slice: store it as one that slipped past validation would be.
    api.store.create(slice("bad-1", "bad", ["10.244.1.999"]), { skipValidation: true });
    const deadline = Date.now() + 5000;
    while ((await metric("bpfproxy_invalid_objects_total", 'kind="EndpointSlice"')) <= before) {
      assert.ok(Date.now() < deadline, "the invalid slice was never counted");
      await new Promise((r) => setTimeout(r, 200));
    }
    // The service is programmed; its invalid slice contributes nothing.
    await proxy!.waitForStatus((s) => backendsOf(s, "10.96.0.50")?.length === 0, 5000);
    const results = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 5 });
    assert.deepEqual(
      results.filter((r) => !r.ok),
      [],
    );
    assert.ok(proxy!.logs.includes("10.244.1.999") || proxy!.logs.includes("bad-1"), "the log names the object");
  });

  test("/healthz and /livez answer like kube-proxy's, and /metrics carries kube-proxy's metrics", async () => {
    for (const path of ["/healthz", "/livez"]) {
      const r = await httpInNode(`http://127.0.0.1:10256${path}`);
      assert.equal(r.status, 200, r.body);
      const body = JSON.parse(r.body) as Record<string, unknown>;
      assert.ok(typeof body.lastUpdated === "string" && typeof body.currentTime === "string", r.body);
    }
    const { body } = await httpInNode("http://127.0.0.1:10249/metrics");
    for (const name of [
      "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
      "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
      "bpfproxy_datapath_packets_total",
    ]) {
      assert.ok(body.includes(name), `${name} missing from /metrics`);
    }
    assert.equal((await httpInNode("http://127.0.0.1:10249/proxyMode")).body.trim(), "bpf");
  });

  test("healthCheckNodePort answers 200 with local endpoints and 503 without", async () => {
    const lb = service("lb", LB_VIP, {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      healthCheckNodePort: HC_PORT,
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 31080 }],
    });
    await kubectlFile("create", lb, slice("lb-1", "lb", [POD.web1]));
    const url = `http://192.0.2.11:${HC_PORT}/`;
    const waitFor = async (status: number) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = await httpInNode(url).catch(() => ({ status: 0, body: "" }));
        if (r.status === status) return r;
        assert.ok(Date.now() < deadline, `health check never answered ${status} (last ${r.status} ${r.body})`);
        await new Promise((res) => setTimeout(res, 200));
      }
    };
    const ok = JSON.parse((await waitFor(200)).body) as {
      service: { namespace: string; name: string };
      localEndpoints: number;
    };
    assert.deepEqual(ok.service, { namespace: "default", name: "lb" });
    assert.equal(ok.localEndpoints, 1);
    await kubectlFile("replace", slice("lb-1", "lb", []));
    assert.equal((JSON.parse((await waitFor(503)).body) as { localEndpoints: number }).localEndpoints, 0);
  });

  test("an API server answering garbage (not JSON, wrong shapes) changes nothing; when it recovers, changes arrive", async () => {
    const before = await proxy!.status();
    const errors0 = proxy!.logs.split("API list/watch failed").length;
    const cancel = [
      api.failRequests(
        { resource: "endpointslices" },
        { garbage: "<html><body>502 Bad Gateway</body></html>", times: Infinity },
      ),
      api.failRequests(
        { resource: "services" },
        { garbage: JSON.stringify({ kind: "Status", items: "nope", metadata: 7 }), times: Infinity },
      ),
    ];
    try {
      api.dropWatches(); // the informers reconnect and relist: into garbage
      api.store.apply(slice("web-1", "web", [POD.web2]));
      const until = Date.now() + 8000;
      while (Date.now() < until) {
        const results = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 3 });
        assert.deepEqual(
          results.filter((r) => !r.ok),
          [],
          "traffic keeps flowing",
        );
        assert.deepEqual(
          (await proxy!.status()).frontends,
          before.frontends,
          "fail static: nothing withdrawn or changed",
        );
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.ok(proxy!.logs.split("API list/watch failed").length > errors0, "the failures are logged");
    } finally {
      for (const c of cancel) c();
    }
    const back = Date.now();
    // Backoff as client-go's (800 ms doubling, jitter 1.0): after 8 s of failures the next try is at most ~26 s away.
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.join() === POD.web2, 40_000);
    console.log(`# figures api-garbage: convergedMs=${Date.now() - back}`);
    await kubectlFile("replace", slice("web-1", "web", [POD.web1, POD.web2]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
  });

  test("with the API server away for 60 s under load: data plane untouched, /healthz stays 200 as kube-proxy's, changes made meanwhile converge after", async () => {
    const load = startLoad(lab, "client", { tcp: `${VIP}:80`, conns: 20, intervalMs: 100, newPerSec: 10 });
    try {
      await load.ready();
      const before = await proxy!.status();
      await api.stop();
      const downAt = Date.now();
      // Changed while the API server is away: only web-1 remains. The proxy cannot know, so nothing is queued:
      // kube-proxy's /healthz stays 200 then too (it reports programming lag, not API reachability).
      api.store.apply(slice("web-1", "web", [POD.web1]));
      while (Date.now() - downAt < 60_000) {
        const h = await httpInNode("http://127.0.0.1:10256/healthz");
        assert.equal(h.status, 200, h.body);
        assert.deepEqual(
          (await proxy!.status()).frontends,
          before.frontends,
          "fail static: the data plane is untouched while the API server is away",
        );
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(10_000, 60_000 - (Date.now() - downAt)))));
      }
      const back = Date.now();
      await api.start();
      await proxy!.waitForStatus((s) => backendsOf(s, VIP)?.join() === POD.web1, 70_000);
      const convergeMs = Date.now() - back;
      const report = await load.stop();
      const onWeb2 = report.tcp.filter((c) => c.backend === "web-2");
      const others = report.tcp.filter((c) => c.backend !== "web-2");
      console.log(
        `# figures api-outage: downMs=${back - downAt} convergeMs=${convergeMs} fresh=${JSON.stringify({ ok: report.fresh.ok, failed: report.fresh.failed, errors: report.fresh.errors })} tcpOnRemoved=${onWeb2.length} endedOthers=${others.filter((c) => c.end).length}`,
      );
      // client-go's backoff: capped at 30 s plus up to 100 % jitter, so nodes do not all come back in step
      // after an API server restart: converged within one retry (at most 60 s) plus one sync.
      assert.ok(convergeMs < 65_000, `converged ${convergeMs} ms after the API server came back`);
      assert.equal(report.fresh.failed, 0, JSON.stringify(report.fresh.errors));
      assert.deepEqual(
        others.filter((c) => c.end !== undefined || c.moved > 0),
        [],
        "connections to the kept backend untouched",
      );
      const h = await httpInNode("http://127.0.0.1:10256/healthz");
      assert.equal(h.status, 200, h.body);
    } finally {
      await load.stop().catch(() => undefined);
    }
  });
});
