// The Kubernetes source against the test API server: it asks for Services and EndpointSlices with
// kube-proxy's label selector (so other proxies' objects and headless Services' slices never arrive),
// and no cache keeps managedFields, the last-applied annotation, or status the model does not read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import YAML from "yaml";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { startApiServer, type ApiServer, type ApiServerOptions } from "./apiserver/index.js";
import {
  KUBE_PROXY_LABEL_SELECTOR,
  KubernetesSource,
  type KubernetesSourceOptions,
} from "../src/sources/kubernetes.js";
import { Backoff } from "../src/sources/reflector.js";

const managedFields = [
  { manager: "kubectl", operation: "Apply", apiVersion: "v1", fieldsType: "FieldsV1", fieldsV1: { "f:spec": {} } },
];
const annotations = {
  "kubectl.kubernetes.io/last-applied-configuration": '{"x":1}'.repeat(100),
  "bpfproxy.io/lb-algorithm": "random",
  "not.read/by-bpfproxy": "yes",
};

const service = (name: string, ip: string, labels: Record<string, string> = {}) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default", labels, annotations, managedFields },
  spec: {
    type: "ClusterIP",
    clusterIP: ip,
    clusterIPs: [ip],
    ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
  },
});
const slice = (name: string, svc: string, labels: Record<string, string> = {}) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  addressType: "IPv4",
  metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc, ...labels }, managedFields },
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  endpoints: [
    { addresses: ["10.244.1.5"], conditions: { ready: true, serving: true, terminating: false }, nodeName: "node-a" },
  ],
});

async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the source keeps (its reflectors keep only resourceVersions; its index is the only store). */
function cached(src: KubernetesSource): KubernetesObject[] {
  const snap = src.snapshot();
  return [...snap.services, ...snap.endpointSlices, ...snap.nodes] as KubernetesObject[];
}

test("kube-proxy's label selectors on the server; slimmed objects in every cache", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-k8s-src-"));
  const api = await startApiServer({ port: 0 });
  // client-node refuses plain http unless TLS verification is explicitly off.
  const kubeconfig = join(dir, "kubeconfig");
  writeFileSync(
    kubeconfig,
    YAML.stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "test",
      clusters: [{ name: "test", cluster: { server: api.url, "insecure-skip-tls-verify": true } }],
      contexts: [{ name: "test", context: { cluster: "test", user: "test" } }],
      users: [{ name: "test", user: {} }],
    }),
  );
  const src = new KubernetesSource({ kubeconfig, nodeName: "node-a" });
  try {
    api.store.create({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a", managedFields },
      status: {
        addresses: [{ type: "InternalIP", address: "192.0.2.11" }],
        images: Array.from({ length: 50 }, (_, i) => ({ names: [`registry/img-${i}:latest`], sizeBytes: 1e8 })),
        conditions: [{ type: "Ready", status: "True" }],
      },
    });
    api.store.create(service("web", "10.96.0.10"));
    api.store.create(service("theirs", "10.96.0.11", { "service.kubernetes.io/service-proxy-name": "other-proxy" }));
    api.store.create(slice("web-1", "web"));
    api.store.create(slice("theirs-1", "theirs", { "service.kubernetes.io/service-proxy-name": "other-proxy" }));
    api.store.create(slice("headless-1", "headless", { "service.kubernetes.io/headless": "" }));

    await src.start();
    await Promise.race([
      src.synced(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("not synced in 15 s")), 15_000).unref()),
    ]);
    const lists = api.requests.filter(
      (r) => r.verb === "list" && (r.resource === "services" || r.resource === "endpointslices"),
    );
    assert.ok(
      lists.length >= 2 && lists.every((r) => r.query.labelSelector === KUBE_PROXY_LABEL_SELECTOR),
      JSON.stringify(lists.map((r) => r.query)),
    );
    const snap = src.snapshot();
    assert.deepEqual(
      snap.services.map((s) => s.metadata.name),
      ["web"],
    );
    assert.deepEqual(
      snap.endpointSlices.map((s) => s.metadata.name),
      ["web-1"],
    );

    // A watch event is slimmed before it is cached too.
    const changed = service("web", "10.96.0.10");
    changed.metadata.annotations = { ...annotations, "bpfproxy.io/lb-algorithm": "maglev" };
    api.store.update(changed as never);
    await until(() => src.snapshot().services[0]?.metadata.annotations["bpfproxy.io/lb-algorithm"] === "maglev");
    const watches = api.requests.filter(
      (r) => r.verb === "watch" && (r.resource === "services" || r.resource === "endpointslices"),
    );
    assert.ok(watches.length >= 2 && watches.every((r) => r.query.labelSelector === KUBE_PROXY_LABEL_SELECTOR));

    const objs = cached(src);
    assert.equal(objs.length, 3, "web, web-1 and the node");
    for (const o of objs) {
      assert.equal(o.metadata?.managedFields, undefined, `${o.kind}/${o.metadata?.name} keeps no managedFields`);
      assert.equal(o.metadata?.annotations?.["kubectl.kubernetes.io/last-applied-configuration"], undefined);
    }
    const web = objs.find((o) => o.metadata?.name === "web")!;
    assert.deepEqual(
      web.metadata?.annotations,
      { "bpfproxy.io/lb-algorithm": "maglev" },
      "only the annotations bpfproxy reads stay",
    );
    const nodeObj = objs.find((o) => o.kind === "Node" || o.metadata?.name === "node-a") as KubernetesObject & {
      status: Record<string, unknown>;
    };
    assert.deepEqual(nodeObj.status, { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] });
    assert.deepEqual(src.snapshot().nodes[0]!.status.addresses, [{ type: "InternalIP", address: "192.0.2.11" }]);
  } finally {
    await src.stop();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Watches survive what API servers do (issue 18, item 3). Each test breaks the test API server in one way
// and shows the source recovers, with bounded waits.

function kubeconfigFor(api: ApiServer, dir: string, user: Record<string, unknown> = {}): string {
  const path = join(dir, "kubeconfig");
  writeFileSync(
    path,
    YAML.stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "test",
      clusters: [{ name: "test", cluster: { server: api.url, "insecure-skip-tls-verify": true } }],
      contexts: [{ name: "test", context: { cluster: "test", user: "test" } }],
      users: [{ name: "test", user }],
    }),
  );
  return path;
}

/** Backoff short enough for tests (the daemon's default is client-go's 800 ms doubling to 30 s). */
const FAST = { backoff: { initialMs: 50, maxMs: 400 } };

async function withSource(
  opts: {
    api?: ApiServerOptions;
    source?: Partial<KubernetesSourceOptions>;
    user?: Record<string, unknown>;
    before?: (api: ApiServer, dir: string) => void;
  },
  fn: (api: ApiServer, src: KubernetesSource, dir: string) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-k8s-src-"));
  const api = await startApiServer({ port: 0, ...opts.api });
  const src = new KubernetesSource({
    kubeconfig: kubeconfigFor(api, dir, opts.user),
    nodeName: "node-a",
    ...FAST,
    ...opts.source,
  });
  try {
    api.store.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.store.create(service("web", "10.96.0.10"));
    api.store.create(slice("web-1", "web"));
    opts.before?.(api, dir);
    await src.start();
    await Promise.race([
      src.synced(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("not synced in 20 s")), 20_000).unref()),
    ]);
    await fn(api, src, dir);
  } finally {
    await src.stop();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const names = (src: KubernetesSource) => src.snapshot().services.map((s) => s.metadata.name);
const svcRequests = (api: ApiServer, verb: "list" | "watch") =>
  api.requests.filter((r) => r.verb === verb && r.resource === "services");

test("first list from the watch cache (resourceVersion=0); watches ask for bookmarks and a jittered timeout", async () => {
  await withSource({ api: { bookmarkIntervalMs: 100 } }, async (api, src) => {
    const lists = api.requests.filter((r) => r.verb === "list");
    assert.equal(lists.length, 3);
    for (const l of lists) assert.equal(l.query.resourceVersion, "0", `${l.path}: served from the watch cache`);
    await api.waitForWatches(3);
    const watches = api.requests.filter((r) => r.verb === "watch");
    const timeouts = watches.map((w) => Number(w.query.timeoutSeconds));
    for (const w of watches) assert.equal(w.query.allowWatchBookmarks, "true");
    for (const t of timeouts) assert.ok(t >= 300 && t < 600, `timeoutSeconds ${t}: 5 min × (1 + rand)`);
    assert.ok(new Set(timeouts).size > 1, `not every node in step: ${timeouts.join(" ")}`);

    // A bookmark moves the resourceVersion on: changes elsewhere advance the global resourceVersion, and the
    // next watch starts from the bookmark's (no replay, no 410 in a quiet resource).
    api.store.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: "elsewhere" } });
    const rv = api.store.resourceVersion;
    await until(() => src.watchStats()["/api/v1/services"]!.bookmarks > 0);
    await until(() => api.openWatches().some((w) => w.resource === "services" && w.lastResourceVersion === rv));
    await new Promise((r) => setTimeout(r, 300));
    const before = svcRequests(api, "watch").length;
    api.dropWatches();
    await until(() => svcRequests(api, "watch").length > before);
    assert.equal(svcRequests(api, "watch").at(-1)!.query.resourceVersion, rv, "re-watched from the bookmark");
    assert.equal(svcRequests(api, "list").length, 1, "no relist");
    api.store.create(service("after-bookmark", "10.96.0.12"));
    await until(() => names(src).includes("after-bookmark"));
  });
});

test("a watch that goes silent without closing is replaced after the idle timeout", async () => {
  await withSource({ api: { bookmarkIntervalMs: 200 }, source: { idleTimeoutMs: 1500 } }, async (api, src) => {
    await api.waitForWatches(3);
    // Healthy watches with bookmarks are never idle.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(src.watchStats()["/api/v1/services"]!.idleAborts, 0, "bookmarks keep a healthy watch alive");
    const { count } = api.silenceWatches();
    assert.equal(count, 3);
    const t0 = Date.now();
    api.store.create(service("during-silence", "10.96.0.13"));
    await until(() => names(src).includes("during-silence"), 10_000);
    const took = Date.now() - t0;
    assert.ok(took >= 1000, `the change came through a new watch (${took} ms), not the silent one`);
    assert.ok(src.watchStats()["/api/v1/services"]!.idleAborts >= 1);
    assert.equal(svcRequests(api, "list").length, 1, "re-watched from the last resourceVersion, no relist");
  });
});

test("410 Gone: the source relists (not older than what it had) and converges, deletions included", async () => {
  await withSource({}, async (api, src) => {
    await api.waitForWatches(3);
    api.silenceWatches(); // changes from here on reach the source only through the relist
    api.store.create(service("added-meanwhile", "10.96.0.14"));
    api.store.delete("services", "web", "default");
    const rvBefore = svcRequests(api, "watch").at(-1)!.query.resourceVersion;
    api.forceGone(); // compacts the history and ends every watch: the re-watch gets 410
    await until(() => names(src).join() === "added-meanwhile");
    const lists = svcRequests(api, "list");
    assert.equal(lists.length, 2);
    assert.equal(lists[1]!.query.resourceVersion, rvBefore, "relist at the last resourceVersion seen (watch cache)");
    assert.ok(src.watchStats()["/api/v1/services"]!.gone >= 1);
    api.store.create(service("after-relist", "10.96.0.15"));
    await until(() => names(src).includes("after-relist"));
  });
});

test("a relist hands each page over as it arrives; what it no longer names goes only after its last page", async () => {
  await withSource(
    {
      source: { pageSize: 2 },
      before: (api) => {
        for (const i of [1, 2, 3]) api.store.create(service(`s${i}`, `10.96.0.${20 + i}`));
      },
    },
    async (api, src) => {
      await api.waitForWatches(3);
      api.silenceWatches(); // changes from here on reach the source only through the relist
      api.store.create(service("a-new", "10.96.0.30")); // first in name order: on the relist's first page
      api.store.delete("services", "web", "default");
      // The relist's later pages answer late: the first page's objects must not wait for them (a 30k list
      // would otherwise hold every raw object until its last page).
      api.failRequests((r) => r.verb === "list" && r.resource === "services" && r.query.continue !== undefined, {
        delayMs: 1500,
        slowOnly: true,
        times: 1,
      });
      api.forceGone();
      await until(() => names(src).includes("a-new"), 1200);
      assert.ok(names(src).includes("web"), "removed only once the whole list is in");
      await until(() => !names(src).includes("web"), 5000);
      assert.deepEqual(names(src).sort(), ["a-new", "s1", "s2", "s3"]);
    },
  );
});

test("a list answered 410 is retried at once as a consistent list", async () => {
  await withSource(
    {
      before: (api) =>
        api.failRequests({ verb: "list", resource: "services" }, { code: 410, reason: "Expired", times: 1 }),
    },
    async (api) => {
      const lists = svcRequests(api, "list");
      assert.equal(lists.length, 2);
      assert.equal(lists[0]!.query.resourceVersion, "0");
      assert.equal(lists[1]!.query.resourceVersion, undefined, "resourceVersion unset: a consistent read");
    },
  );
});

/** Gaps between consecutive requests, each checked against its backoff base (plus up to 100 % jitter). */
function assertBackoff(reqs: readonly { time: number }[], bases: number[]): void {
  const gaps = reqs.slice(1).map((r, i) => r.time - reqs[i]!.time);
  bases.forEach((base, i) =>
    assert.ok(gaps[i]! >= base - 5 && gaps[i]! <= 2 * base + 250, `gap ${i}: ${gaps[i]} ms for base ${base}`),
  );
}

test("a 5xx burst on lists: retried with growing jittered backoff until the server answers", async () => {
  await withSource(
    { before: (api) => api.failRequests({ verb: "list", resource: "services" }, { code: 503, times: 4 }) },
    async (api) => {
      const lists = svcRequests(api, "list");
      assert.equal(lists.length, 5, "four 503s, then the list");
      assertBackoff(lists, [50, 100, 200, 400]);
    },
  );
});

test("a 5xx burst on watches: retried with growing jittered backoff, no change lost", async () => {
  await withSource({}, async (api, src) => {
    await api.waitForWatches(3);
    const before = svcRequests(api, "watch").length;
    api.failRequests({ verb: "watch", resource: "services" }, { code: 500, times: 5 });
    api.dropWatches();
    api.store.create(service("after-burst", "10.96.0.16"));
    await until(() => names(src).includes("after-burst"));
    const tries = svcRequests(api, "watch").slice(before);
    assert.equal(tries.length, 6, "five 500s, then the watch");
    // The dropped watch was the first failure (base 50, before the first of these tries); each 500 doubles on.
    assertBackoff(tries, [100, 200, 400, 400, 400]);
    assert.equal(svcRequests(api, "list").length, 1, "re-watched from the last resourceVersion, no relist");
  });
});

test("jittered exponential backoff as client-go's reflector: 800 ms ×2 up to 30 s, jitter 1.0, reset after 2 min", () => {
  let now = 0;
  let rand = 0;
  const b = new Backoff(
    {},
    () => rand,
    () => now,
  );
  const bases = [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000];
  for (const base of bases) assert.equal(b.next(), base);
  rand = 0.5;
  assert.equal(b.next(), 45_000, "30 s cap plus half of it at random");
  rand = 0.999;
  now += 120_001;
  assert.ok(Math.abs(b.next() - 1599.2) < 1e-6, "after 2 min without a failure: 800 ms again (plus jitter)");
});

test("a slow list is waited for; one slower than the list timeout is retried", async () => {
  await withSource(
    {
      source: { listTimeoutMs: 1000 },
      before: (api) => {
        api.failRequests({ verb: "list", resource: "endpointslices" }, { delayMs: 600, slowOnly: true, times: 1 });
        api.failRequests({ verb: "list", resource: "services" }, { delayMs: 3000, slowOnly: true, times: 2 });
      },
    },
    async (api, src) => {
      assert.equal(api.requests.filter((r) => r.verb === "list" && r.resource === "endpointslices").length, 1);
      assert.equal(svcRequests(api, "list").length, 3, "two lists given up after 1 s, the third answered");
      assert.deepEqual(names(src), ["web"]);
    },
  );
});

test("the API server restarts (changes made while it is down): the source converges", async () => {
  await withSource({}, async (api, src) => {
    await api.waitForWatches(3);
    await api.stop();
    api.store.create(service("while-down", "10.96.0.17"));
    api.store.delete("services", "web", "default");
    await new Promise((r) => setTimeout(r, 500));
    await api.start();
    await until(() => names(src).join() === "while-down", 15_000);
    await api.waitForWatches(3);
    api.store.create(service("after-restart", "10.96.0.18"));
    await until(() => names(src).includes("after-restart"));
  });
});

test("a credential plugin failing while a watch is set up is retried, never an unhandled rejection", async () => {
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on("unhandledRejection", onRejection);
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-exec-"));
  try {
    // Calls 1-3 are the three lists; 4-9 (the watches and their first retries) fail, later ones succeed.
    const plugin = join(dir, "plugin.sh");
    writeFileSync(
      plugin,
      [
        "#!/bin/sh",
        // One line appended per call (O_APPEND: atomic), then counted: concurrent calls (the three lists start
        // together) never share a number below their own, as a read-increment-write of one number could.
        `echo x >> "${dir}/calls"; n=$(wc -l < "${dir}/calls")`,
        'if [ "$n" -ge 4 ] && [ "$n" -le 9 ]; then echo "credential plugin failed ($n)" >&2; exit 1; fi',
        'echo \'{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}\'',
      ].join("\n"),
      { mode: 0o755 },
    );
    const user = { exec: { apiVersion: "client.authentication.k8s.io/v1beta1", command: "/bin/sh", args: [plugin] } };
    await withSource({ user }, async (api, src) => {
      await api.waitForWatches(3, {}, 15_000);
      api.store.create(service("after-plugin", "10.96.0.19"));
      await until(() => names(src).includes("after-plugin"));
      const failures = Object.values(src.watchStats()).reduce((n, s) => n + s.failures, 0);
      assert.ok(failures >= 1, "the plugin failed during watch setup at least once");
    });
  } finally {
    process.off("unhandledRejection", onRejection);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(rejections, [], "no unhandled rejection");
});

test("a server that answers every watch with 410 is not hammered: relists back off", async () => {
  await withSource({}, async (api) => {
    await api.waitForWatches(3);
    const lists0 = svcRequests(api, "list").length;
    api.failRequests({ verb: "watch", resource: "services" }, { code: 410, reason: "Expired", times: Infinity });
    api.dropWatches();
    await new Promise((r) => setTimeout(r, 1500));
    const relists = svcRequests(api, "list").length - lists0;
    // Backoff 50, 100, 200, 400, 400 ms (+ jitter) after the first immediate relist: at most ~7 in 1.5 s,
    // where an immediate relist on every 410 would make hundreds.
    assert.ok(relists >= 2 && relists <= 8, `${relists} relists in 1.5 s`);
  });
});
