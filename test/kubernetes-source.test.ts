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
import { startApiServer } from "./apiserver/index.js";
import { KUBE_PROXY_LABEL_SELECTOR, KubernetesSource } from "../src/sources/kubernetes.js";

const managedFields = [
  { manager: "kubectl", operation: "Apply", apiVersion: "v1", fieldsType: "FieldsV1", fieldsV1: { "f:spec": {} } },
];
const annotations = { "kubectl.kubernetes.io/last-applied-configuration": '{"x":1}'.repeat(100), "keep.me/too": "yes" };

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

/** What the source's informers cache (the raw objects client-node keeps). */
function cached(src: KubernetesSource): KubernetesObject[] {
  return (src as unknown as { informers: { lw: { list(): KubernetesObject[] } }[] }).informers.flatMap((i) =>
    i.lw.list(),
  );
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
    api.store.update({ ...service("web", "10.96.0.10", { changed: "yes" }) } as never);
    await until(() => src.snapshot().services[0]?.metadata.labels.changed === "yes");
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
    assert.equal(web.metadata?.annotations?.["keep.me/too"], "yes", "other annotations stay (the model reads some)");
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
