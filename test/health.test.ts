// Health endpoints with kube-proxy's semantics: /healthz and /livez of the proxy, and the
// healthCheckNodePort servers. Servers listen on 127.0.0.1 only; every wait is bounded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import {
  ProxierHealth,
  ServiceHealthServers,
  healthCheckBindAddresses,
  parseBindAddress,
  goJSONTime,
  serviceHealthBody,
} from "../src/health/index.js";
import { registry } from "../src/metrics.js";
import { validateNode } from "../src/k8s/validate.js";
import type { Node } from "../src/k8s/schemas.js";

/** A v1 Node as the API server serves it, validated by the sources' schema. */
function apiNode(o: {
  taints?: Array<{ key: string; value?: string; effect: string }>;
  deletionTimestamp?: string;
}): Node {
  const r = validateNode({
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: "node-a",
      uid: "5f1c",
      resourceVersion: "42",
      labels: { "kubernetes.io/hostname": "node-a" },
      ...(o.deletionTimestamp ? { deletionTimestamp: o.deletionTimestamp, finalizers: ["example.com/x"] } : {}),
    },
    spec: { podCIDR: "10.244.1.0/24", ...(o.taints ? { taints: o.taints } : {}) },
    status: {
      addresses: [
        { type: "InternalIP", address: "192.0.2.11" },
        { type: "Hostname", address: "node-a" },
      ],
    },
  });
  assert.ok(r.ok && r.kind === "Node", JSON.stringify(r));
  return r.object;
}

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** GET without connection reuse, bounded by a 5 s timeout. */
function get(url: string): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

/** A port in 20000–40000 that is free on 127.0.0.1 right now (tries again on EADDRINUSE). */
async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const s = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (ok) {
      await new Promise<void>((r) => s.close(() => r()));
      return port;
    }
  }
  throw new Error("no free port found in 20000-40000");
}

async function occupy(port: number): Promise<Server> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve());
  });
  return s;
}

function fakeClock(start = Date.UTC(2025, 0, 2, 3, 4, 5, 120)) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test("bind address forms as kube-proxy takes them", () => {
  assert.deepEqual(parseBindAddress("0.0.0.0:10256", 1), { host: "0.0.0.0", port: 10256 });
  assert.deepEqual(parseBindAddress(":10256", 1), { host: "", port: 10256 });
  assert.deepEqual(parseBindAddress("[::]:10256", 1), { host: "::", port: 10256 });
  assert.deepEqual(parseBindAddress("[::1]:10249", 1), { host: "::1", port: 10249 });
  assert.deepEqual(parseBindAddress("127.0.0.1", 10249), { host: "127.0.0.1", port: 10249 });
  assert.deepEqual(parseBindAddress("::1", 10249), { host: "::1", port: 10249 });
  // Like kube-proxy's AppendPortIfNeeded: whatever parses as an IP is an address without a port.
  assert.deepEqual(parseBindAddress("::1:80", 10249), { host: "::1:80", port: 10249 });
  for (const bad of ["localhost:10256", "1.2.3.4:99999", "[::1]x", "::1::2", "[1.2.3.4]:80", "1.2.3.4:x", "nope"]) {
    assert.throws(() => parseBindAddress(bad, 1), /invalid bind address/, bad);
  }
});

test("health check ports: kube-proxy's per-family choice between nodePortAddresses IPs and the wildcard", () => {
  const node = { nodePortIPs: ["192.0.2.11"], nodePortIPs6: ["2001:db8::a"], nodeIPs6: ["2001:db8::a"] };
  // Neither family named: one dual-stack wildcard (undefined = the servers' default).
  assert.equal(healthCheckBindAddresses([], node), undefined);
  assert.equal(healthCheckBindAddresses(["0.0.0.0/0", "::/0"], node), undefined, "a /0 matches all");
  // One family named: its selected IPs, the other family's wildcard (IPv6 only on a node with IPv6).
  assert.deepEqual(healthCheckBindAddresses(["192.0.2.0/24"], node), ["192.0.2.11", "::/0"]);
  assert.deepEqual(healthCheckBindAddresses(["192.0.2.0/24", "::/0"], node), ["192.0.2.11", "::/0"]);
  assert.deepEqual(healthCheckBindAddresses(["192.0.2.0/24"], { ...node, nodePortIPs6: [], nodeIPs6: [] }), [
    "192.0.2.11",
  ]);
  assert.deepEqual(healthCheckBindAddresses(["2001:db8::/64"], node), ["0.0.0.0/0", "2001:db8::a"]);
  // Both named ("primary" names both): the selected IPs only; a family that selects nothing listens nowhere.
  assert.deepEqual(healthCheckBindAddresses(["primary"], node), ["192.0.2.11", "2001:db8::a"]);
  assert.deepEqual(healthCheckBindAddresses(["10.0.0.0/8", "2001:db8::/64"], { ...node, nodePortIPs: [] }), [
    "2001:db8::a",
  ]);
  assert.deepEqual(healthCheckBindAddresses(["10.0.0.0/8"], { ...node, nodePortIPs: [], nodeIPs6: [] }), []);
});

test("Go time encoding", () => {
  assert.equal(goJSONTime(undefined), "0001-01-01T00:00:00Z");
  assert.equal(goJSONTime(Date.UTC(2025, 0, 2, 3, 4, 5, 120)), "2025-01-02T03:04:05.12Z");
  assert.equal(goJSONTime(Date.UTC(2025, 0, 2, 3, 4, 5, 0)), "2025-01-02T03:04:05Z");
});

test("proxier health: healthy while fresh, 503 once a queued change is older than the timeout", () => {
  const clock = fakeClock();
  const h = new ProxierHealth({ healthTimeoutMs: 60_000, now: clock.now, bindAddress: "" });

  // Starting up: nothing queued, nothing synced → healthy; no per-family status yet.
  let r = h.respond("/healthz");
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, {
    lastUpdated: goJSONTime(clock.now()),
    currentTime: goJSONTime(clock.now()),
    nodeEligible: true,
    healthy: true,
  });
  assert.deepEqual(Object.keys(r.body), ["lastUpdated", "currentTime", "nodeEligible", "healthy"]);

  h.updated();
  const syncedAt = clock.now();
  clock.advance(25_000);
  r = h.respond("/healthz");
  assert.equal(r.status, 200, "no change queued: healthy however long ago the last sync was");
  assert.equal(
    r.body.lastUpdated,
    goJSONTime(clock.now()),
    "lastUpdated reads 'now' while healthy (kube-proxy compatibility)",
  );
  assert.deepEqual(r.body.status, { IPv4: { lastUpdated: goJSONTime(syncedAt), healthy: true } });
  assert.deepEqual(Object.keys(r.body), ["lastUpdated", "currentTime", "nodeEligible", "healthy", "status"]);

  h.queued();
  clock.advance(59_999);
  h.queued(); // a later change does not move the oldest pending mark
  assert.equal(h.respond("/healthz").status, 200, "pending but not late yet");
  assert.equal(h.respond("/livez").status, 200);
  clock.advance(1);
  r = h.respond("/healthz");
  assert.equal(r.status, 503, "pending for the full timeout");
  assert.equal(r.body.healthy, false);
  assert.equal(r.body.lastUpdated, goJSONTime(syncedAt), "unhealthy: lastUpdated is the last successful sync");
  assert.equal(r.body.currentTime, goJSONTime(clock.now()));
  assert.deepEqual(r.body.status, { IPv4: { lastUpdated: goJSONTime(syncedAt), healthy: false } });
  const l = h.respond("/livez");
  assert.equal(l.status, 503);
  assert.equal("nodeEligible" in l.body, false, "/livez has no nodeEligible");
  assert.equal(h.isHealthy(), false);

  h.updated();
  assert.equal(h.respond("/healthz").status, 200);
  assert.equal(h.respond("/livez").status, 200);
  assert.equal(h.isHealthy(), true);
});

test("proxier health: a first sync that never completes is unhealthy after the timeout", () => {
  const clock = fakeClock();
  const h = new ProxierHealth({ healthTimeoutMs: 10_000, now: clock.now, bindAddress: "" });
  h.queued();
  clock.advance(10_000);
  const r = h.respond("/livez");
  assert.equal(r.status, 503);
  assert.equal(r.body.lastUpdated, "0001-01-01T00:00:00Z");
  assert.equal(r.body.status, undefined);
});

test("proxier health: node eligibility affects /healthz only (kube-proxy's node deletion semantics)", () => {
  const clock = fakeClock();
  const h = new ProxierHealth({
    healthTimeoutMs: 60_000,
    now: clock.now,
    bindAddress: "",
    ipFamilies: ["IPv4", "IPv6"],
  });
  h.updated();
  h.nodeEligible(false);
  let r = h.respond("/healthz");
  assert.equal(r.status, 503);
  assert.equal(r.body.nodeEligible, false);
  assert.equal(r.body.healthy, true, "the proxier itself is healthy");
  assert.deepEqual(Object.keys(r.body.status ?? {}), ["IPv4", "IPv6"]);
  assert.equal(h.respond("/livez").status, 200, "liveness does not depend on the node");
  assert.equal(h.isHealthy(), true);

  // Nodes as the API server sends them, through the same schema the sources use: a field the schema
  // dropped (taints, deletionTimestamp) would make eligibility silently stay true.
  h.syncNode(apiNode({ taints: [{ key: "node.kubernetes.io/unschedulable", effect: "NoSchedule" }] }));
  assert.equal(h.respond("/healthz").status, 200, "other taints do not matter");
  h.syncNode(
    apiNode({ taints: [{ key: "ToBeDeletedByClusterAutoscaler", value: "1700000000", effect: "NoSchedule" }] }),
  );
  assert.equal(h.respond("/healthz").status, 503, "autoscaler's to-be-deleted taint");
  assert.equal(h.respond("/healthz").body.nodeEligible, false);
  h.syncNode(apiNode({}));
  assert.equal(h.respond("/healthz").status, 200);
  h.syncNode(apiNode({ deletionTimestamp: "2025-01-01T00:00:00Z" }));
  assert.equal(h.respond("/healthz").status, 503, "node being deleted");
  r = h.respond("/livez");
  assert.equal(r.status, 200);
});

test("proxier health HTTP server: /healthz and /livez, headers, counters", async () => {
  const clock = fakeClock();
  const h = new ProxierHealth({ healthTimeoutMs: 60_000, now: clock.now, bindAddress: "127.0.0.1:0" });
  const addr = await h.start();
  assert.ok(addr);
  try {
    const base = `http://127.0.0.1:${addr.port}`;
    let r = await get(`${base}/healthz`);
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "application/json");
    assert.equal(r.headers["x-content-type-options"], "nosniff");
    const body = JSON.parse(r.body) as { nodeEligible: boolean };
    assert.deepEqual(Object.keys(body), ["lastUpdated", "currentTime", "nodeEligible", "healthy"]);
    assert.equal(body.nodeEligible, true);

    h.queued();
    clock.advance(60_000);
    r = await get(`${base}/livez`);
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { healthy: boolean }).healthy, false);
    r = await get(`${base}/healthz?verbose=1`);
    assert.equal(r.status, 503);

    r = await get(`${base}/other`);
    assert.equal(r.status, 404);

    const text = await registry.metrics();
    assert.match(text, /kubeproxy_proxy_healthz_total\{code="200"\} [1-9]/);
    assert.match(text, /kubeproxy_proxy_healthz_total\{code="503"\} [1-9]/);
    assert.match(text, /kubeproxy_proxy_livez_total\{code="503"\} [1-9]/);
  } finally {
    await h.stop();
  }
  await assert.rejects(get(`http://127.0.0.1:${addr.port}/healthz`), "stopped server refuses connections");
});

test("proxier health: a busy port rejects start() with kube-proxy's message", async () => {
  const port = await freePort();
  const blocker = await occupy(port);
  try {
    const h = new ProxierHealth({ healthTimeoutMs: 1000, bindAddress: `127.0.0.1:${port}` });
    await assert.rejects(h.start(), /failed to start proxy healthz on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
  } finally {
    await new Promise<void>((r) => blocker.close(() => r()));
  }
});

test("service health: kube-proxy's exact body", () => {
  assert.equal(
    serviceHealthBody("ns", "web", 2, true),
    '{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}',
  );
});

test("service health: 200/503 by local endpoints and proxy health, listeners opened and closed on sync", async () => {
  let proxyHealthy = true;
  const errors: string[] = [];
  const shs = new ServiceHealthServers({
    bindAddresses: ["127.0.0.1"],
    proxierHealth: { isHealthy: () => proxyHealthy },
    nodeName: "node-a",
    onListenError: (svc) => errors.push(svc),
  });
  const p1 = await freePort();
  let p2 = await freePort();
  while (p2 === p1) p2 = await freePort();
  try {
    let res = await shs.sync([
      { service: "default/web", port: p1, localEndpoints: 2 },
      { service: "shop/cart", port: p2, localEndpoints: 0 },
    ]);
    assert.deepEqual(res.failed, []);
    assert.equal(res.opened.length, 2);

    let r = await get(`http://127.0.0.1:${p1}/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "application/json");
    assert.equal(r.headers["x-content-type-options"], "nosniff");
    assert.equal(r.headers["x-load-balancing-endpoint-weight"], "2", "kube-proxy's weight header: local endpoints");
    assert.deepEqual(JSON.parse(r.body), {
      service: { namespace: "default", name: "web" },
      localEndpoints: 2,
      serviceProxyHealthy: true,
    });
    assert.equal(r.body, serviceHealthBody("default", "web", 2, true));

    r = await get(`http://127.0.0.1:${p2}/any/path`);
    assert.equal(r.status, 503, "no local endpoints");
    assert.equal(r.headers["x-load-balancing-endpoint-weight"], "0");
    assert.deepEqual(JSON.parse(r.body), {
      service: { namespace: "shop", name: "cart" },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    });

    // The proxy itself unhealthy: 503 even with endpoints, and the body says so.
    proxyHealthy = false;
    r = await get(`http://127.0.0.1:${p1}/`);
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { serviceProxyHealthy: boolean }).serviceProxyHealthy, false);
    proxyHealthy = true;

    // Endpoint counts change without reopening; a removed service's listener closes.
    res = await shs.sync([{ service: "default/web", port: p1, localEndpoints: 0 }]);
    assert.deepEqual(res.opened, []);
    assert.deepEqual(res.closed, [{ service: "shop/cart", port: p2 }]);
    r = await get(`http://127.0.0.1:${p1}/`);
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { localEndpoints: number }).localEndpoints, 0);
    await assert.rejects(get(`http://127.0.0.1:${p2}/`), "closed listener");
    assert.deepEqual(shs.listening(), [{ service: "default/web", port: p1, localEndpoints: 0 }]);

    // Port change: the old port closes, the new one opens (the port may move between services).
    res = await shs.sync([{ service: "default/web", port: p2, localEndpoints: 1 }]);
    assert.deepEqual(res.closed, [{ service: "default/web", port: p1 }]);
    assert.deepEqual(res.opened, [{ service: "default/web", port: p2 }]);
    assert.equal((await get(`http://127.0.0.1:${p2}/`)).status, 200);
    await assert.rejects(get(`http://127.0.0.1:${p1}/`));

    await shs.sync([]);
    assert.deepEqual(shs.listening(), []);
    await assert.rejects(get(`http://127.0.0.1:${p2}/`));
    assert.deepEqual(errors, []);
  } finally {
    await shs.close();
  }
});

test("service health: a port already taken is logged, does not crash, and is retried on the next sync", async () => {
  const errors: Array<[string, number]> = [];
  const shs = new ServiceHealthServers({ bindAddresses: ["127.0.0.1"], onListenError: (s, p) => errors.push([s, p]) });
  const taken = await freePort();
  let ok = await freePort();
  while (ok === taken) ok = await freePort();
  const blocker = await occupy(taken);
  try {
    let res = await shs.sync([
      { service: "default/blocked", port: taken, localEndpoints: 1 },
      { service: "default/fine", port: ok, localEndpoints: 1 },
    ]);
    assert.equal(res.failed.length, 1);
    assert.equal(res.failed[0]!.service, "default/blocked");
    assert.match(res.failed[0]!.error, /EADDRINUSE/);
    assert.deepEqual(errors, [["default/blocked", taken]]);
    assert.equal((await get(`http://127.0.0.1:${ok}/`)).status, 200, "the other service is served");
    assert.deepEqual(
      shs.listening().map((l) => l.service),
      ["default/fine"],
    );

    // Still taken: retried and fails again, quietly.
    res = await shs.sync([
      { service: "default/blocked", port: taken, localEndpoints: 1 },
      { service: "default/fine", port: ok, localEndpoints: 1 },
    ]);
    assert.equal(res.failed.length, 1);
    assert.deepEqual(res.opened, []);

    await new Promise<void>((r) => blocker.close(() => r()));
    res = await shs.sync([
      { service: "default/blocked", port: taken, localEndpoints: 1 },
      { service: "default/fine", port: ok, localEndpoints: 1 },
    ]);
    assert.deepEqual(res.failed, []);
    assert.deepEqual(res.opened, [{ service: "default/blocked", port: taken }]);
    const r = await get(`http://127.0.0.1:${taken}/`);
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as { service: { name: string } }).service.name, "blocked");
  } finally {
    if (blocker.listening) await new Promise<void>((r) => blocker.close(() => r()));
    await shs.close();
  }
});

test("service health: concurrent syncs are serialized and invalid ports are skipped", async () => {
  const shs = new ServiceHealthServers({ bindAddresses: ["127.0.0.1"] });
  const p = await freePort();
  try {
    const a = shs.sync([{ service: "a/x", port: p, localEndpoints: 1 }]);
    const b = shs.sync([
      { service: "a/x", port: p, localEndpoints: 3 },
      { service: "a/bad", port: 0, localEndpoints: 1 },
    ]);
    const [ra, rb] = await Promise.all([a, b]);
    assert.deepEqual(ra.opened, [{ service: "a/x", port: p }]);
    assert.deepEqual(rb.opened, []);
    assert.deepEqual(shs.listening(), [{ service: "a/x", port: p, localEndpoints: 3 }]);
  } finally {
    await shs.close();
  }
  await assert.rejects(get(`http://127.0.0.1:${p}/`));
});
