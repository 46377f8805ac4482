// The compact form sources keep (src/k8s/packed.ts, issue 18 item 1): a validated object reads exactly as the
// API object said — every endpoint's address, conditions, node, zone and hints, in order — while keeping only
// what bpfproxy reads (the well-known labels and annotations) and IPv4 endpoints packed.
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { validateObject } from "../src/k8s/validate.js";
import { endpointsToSlices } from "../src/k8s/endpoints.js";
import type { EndpointSlice } from "../src/k8s/schemas.js";
import { packagePath } from "../src/paths.js";

function slice(endpoints: unknown[], addressType = "IPv4"): EndpointSlice {
  const r = validateObject({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: "web-abc",
      namespace: "default",
      labels: { "kubernetes.io/service-name": "web", "helm.sh/chart": "web-1.0", app: "web" },
      annotations: {
        "endpoints.kubernetes.io/last-change-trigger-time": "2026-12-01T10:00:00Z",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
      },
      managedFields: [{ manager: "kube-controller-manager" }],
    },
    addressType,
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints,
  });
  assert.ok(r.ok && r.kind === "EndpointSlice", JSON.stringify(r));
  return r.object;
}

const ENDPOINTS = [
  {
    addresses: ["10.244.1.5"],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: "node-a",
    zone: "zone-a",
    hints: { forZones: [{ name: "zone-a" }] },
    targetRef: { kind: "Pod", name: "web-1", namespace: "default", uid: "u1" },
  },
  {
    addresses: ["255.255.255.254"],
    conditions: { ready: false, serving: true, terminating: true },
    nodeName: "node-b",
    zone: "zone-b",
    hints: { forZones: [{ name: "zone-b" }], forNodes: [{ name: "node-b" }] },
  },
  { addresses: ["0.0.0.1"], conditions: { ready: false, serving: false, terminating: false } },
  { addresses: ["10.244.1.6"], nodeName: "node-a", zone: "zone-a", hints: { forZones: [{ name: "zone-a" }] } },
];

const EXPECTED = [
  {
    addresses: ["10.244.1.5"],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: "node-a",
    zone: "zone-a",
    hints: { forZones: ["zone-a"], forNodes: [] },
  },
  {
    addresses: ["255.255.255.254"],
    conditions: { ready: false, serving: true, terminating: true },
    nodeName: "node-b",
    zone: "zone-b",
    hints: { forZones: ["zone-b"], forNodes: ["node-b"] },
  },
  {
    addresses: ["0.0.0.1"],
    conditions: { ready: false, serving: false, terminating: false },
    nodeName: "",
    zone: "",
    hints: { forZones: [], forNodes: [] },
  },
  {
    addresses: ["10.244.1.6"],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: "node-a",
    zone: "zone-a",
    hints: { forZones: ["zone-a"], forNodes: [] },
  },
];

describe("compact objects", () => {
  test("an IPv4 slice reads back every endpoint as sent, in order, also as JSON", () => {
    const s = slice(ENDPOINTS);
    assert.deepEqual(s.endpoints, EXPECTED);
    assert.deepEqual(s.endpoints, EXPECTED, "a second read decodes the same");
    assert.deepEqual(JSON.parse(JSON.stringify(s)), {
      metadata: {
        name: "web-abc",
        namespace: "default",
        labels: { "kubernetes.io/service-name": "web" },
        annotations: { "endpoints.kubernetes.io/last-change-trigger-time": "2026-12-01T10:00:00Z" },
      },
      addressType: "IPv4",
      endpoints: EXPECTED,
      ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    });
  });

  test("the compact slice keeps no per-endpoint objects: endpoints are packed, not stored", () => {
    const s = slice(ENDPOINTS);
    assert.ok(!Object.keys(s).includes("endpoints"), "endpoints is decoded, not an own property");
    assert.notEqual(s.endpoints[0], s.endpoints[0], "each read makes new endpoint objects");
    // What endpoints share is shared between slices too: one hints object per (node, zone, hints).
    assert.equal(s.endpoints[0]!.hints, slice(ENDPOINTS).endpoints[3]!.hints);
  });

  test("shared conditions and hints cannot be changed through one endpoint", () => {
    const e = slice(ENDPOINTS).endpoints[0]!;
    assert.throws(() => {
      e.conditions.ready = false;
    }, TypeError);
    assert.throws(() => e.hints.forZones.push("zone-x"), TypeError);
    assert.equal(slice(ENDPOINTS).endpoints[0]!.conditions.ready, true);
  });

  test("IPv6 slices and endpoints with several addresses keep plain endpoints, read the same", () => {
    const v6 = slice([{ addresses: ["fd00::1"], nodeName: "node-a" }], "IPv6");
    assert.deepEqual(v6.endpoints, [
      {
        addresses: ["fd00::1"],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: "node-a",
        zone: "",
        hints: { forZones: [], forNodes: [] },
      },
    ]);
    const two = slice([{ addresses: ["10.0.0.1", "10.0.0.2"] }]);
    assert.deepEqual(two.endpoints[0]!.addresses, ["10.0.0.1", "10.0.0.2"]);
    assert.deepEqual(slice([]).endpoints, []);
  });

  test("Services and Nodes keep only the labels and annotations bpfproxy reads", () => {
    const svc = validateObject({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "web",
        namespace: "default",
        labels: { app: "web", "service.kubernetes.io/service-proxy-name": "other" },
        annotations: { "bpfproxy.io/lb-algorithm": "maglev", "meta.helm.sh/release-name": "r" },
      },
      spec: { clusterIP: "10.96.0.10", ports: [{ port: 80 }] },
    });
    assert.ok(svc.ok && svc.kind === "Service");
    assert.deepEqual(svc.object.metadata.labels, { "service.kubernetes.io/service-proxy-name": "other" });
    assert.deepEqual(svc.object.metadata.annotations, { "bpfproxy.io/lb-algorithm": "maglev" });
    const node = validateObject({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a", labels: { "topology.kubernetes.io/zone": "z1", "kubernetes.io/os": "linux" } },
    });
    assert.ok(node.ok && node.kind === "Node");
    assert.deepEqual(node.object.metadata.labels, { "topology.kubernetes.io/zone": "z1" });
  });

  test("slices converted from Endpoints read the same as before compaction", () => {
    const ep = validateObject({
      apiVersion: "v1",
      kind: "Endpoints",
      metadata: { name: "web", namespace: "default" },
      subsets: [
        {
          addresses: [{ ip: "10.0.0.1", nodeName: "node-a" }],
          notReadyAddresses: [{ ip: "10.0.0.2" }],
          ports: [{ port: 80 }],
        },
      ],
    });
    assert.ok(ep.ok && ep.kind === "Endpoints");
    const [s] = endpointsToSlices(ep.object);
    assert.deepEqual(s!.metadata.labels, { "kubernetes.io/service-name": "web" });
    assert.deepEqual(
      s!.endpoints.map((e) => [e.addresses[0], e.conditions.ready, e.conditions.serving, e.nodeName]),
      [
        ["10.0.0.1", true, true, "node-a"],
        ["10.0.0.2", false, false, ""],
      ],
    );
  });
});

/** Heap (MiB, after a full collection) a fresh node process holds once `code` has run. */
function heapAfter(code: string): number {
  const out = execFileSync(
    process.execPath,
    [
      "--expose-gc",
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `${code}; gc(); console.log(process.memoryUsage().heapUsed)`,
    ],
    { cwd: packagePath(""), encoding: "utf8", timeout: 60_000 },
  );
  return Number(out.trim().split("\n").pop()) / 1048576;
}

test("client-node is loaded for KubeConfig only: its generated API clients and models stay out", () => {
  const kc = `const KC = await (await import(${JSON.stringify(packagePath("src/sources/client-node.ts"))})).loadKubeConfigClass();
    const kc = new KC();
    kc.loadFromOptions({ clusters: [{ name: "c", server: "https://192.0.2.1" }], users: [{ name: "u", token: "t" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }], currentContext: "x" });
    const o = await kc.applyToFetchOptions({});
    const auth = typeof o.headers.get === "function" ? o.headers.get("authorization") : o.headers.Authorization;
    if (auth !== "Bearer t") throw new Error("no token: " + String(auth));`;
  const slim = heapAfter(kc);
  const whole = heapAfter(`await import("@kubernetes/client-node")`);
  // Measured: ~8 MiB against ~34 MiB (every generated API and model).
  assert.ok(
    slim < whole - 15,
    `KubeConfig through the hook: ${slim.toFixed(1)} MiB of heap; all of client-node: ${whole.toFixed(1)} MiB`,
  );
});

test("Services and slices with the same ports share one frozen port list; different ports do not", () => {
  const svc = (name: string, port: number) => {
    const r = validateObject({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "default" },
      spec: { clusterIP: "10.96.0.10", ports: [{ name: "http", port, targetPort: 8080 }] },
    });
    assert.ok(r.ok && r.kind === "Service", JSON.stringify(r));
    return r.object;
  };
  const a = svc("a", 80);
  const b = svc("b", 80);
  const c = svc("c", 81);
  assert.equal(a.spec.ports, b.spec.ports, "one list for the same ports");
  assert.notEqual(a.spec.ports, c.spec.ports);
  assert.deepEqual(c.spec.ports, [{ name: "http", protocol: "TCP", port: 81, targetPort: 8080, nodePort: 0 }]);
  assert.throws(() => {
    a.spec.ports[0]!.port = 1;
  }, TypeError);
  assert.throws(() => a.spec.ports.push(c.spec.ports[0]!), TypeError);
  assert.equal(b.spec.ports[0]!.port, 80);
  assert.equal(slice(ENDPOINTS).ports, slice(ENDPOINTS.slice(1)).ports, "slices share theirs too");
});

describe("the model reads packed slices without decoding them", () => {
  // The model takes packed IPv4 endpoints straight from the slice (src/model/build.ts PackedEndpoint); the same
  // slices as plain objects (their JSON) must give the very same model: sets, order, states, topology, merges.
  test("a model from packed slices equals the model from the same slices as plain objects", async () => {
    const { buildNodeModel } = await import("../src/model/build.js");
    const { packedEndpoints } = await import("../src/k8s/packed.js");
    const { svc, slice: mkSlice, ep, node } = await import("./model-helpers.js");
    const services = [
      svc({ name: "web", type: "NodePort", externalTrafficPolicy: "Local" }),
      svc({ name: "near", clusterIP: "10.96.0.11", trafficDistribution: "PreferClose" }),
      svc({ name: "zoned", clusterIP: "10.96.0.12", internalTrafficPolicy: "Local" }),
    ];
    const slices = [
      // Unsorted, addresses at and above 128.0.0.0 (negative as int32), terminating and not-ready endpoints,
      // one local endpoint, and a duplicate across the Service's two slices (the local one wins).
      mkSlice(
        [
          ep("200.1.2.3"),
          ep("10.244.2.9", { node: "node-a" }),
          ep("10.244.1.5", { terminating: true, serving: true }),
          ep("128.0.0.1", { ready: false }),
          ep("255.255.255.254", { zone: "zone-b" }),
        ],
        { name: "web-a" },
      ),
      mkSlice([ep("10.244.1.7"), ep("200.1.2.3", { node: "node-a" })], { name: "web-b" }),
      // Hand-written slices of a Service asking for PreferClose: hints derived from the zones.
      mkSlice([ep("10.244.3.1", { zone: "zone-a" }), ep("10.244.3.2", { zone: "zone-b" })], { service: "near" }),
      mkSlice(
        [
          ep("10.244.4.1", { node: "node-a", zone: "zone-a", forZones: ["zone-a"] }),
          ep("10.244.4.2", { zone: "zone-b", forZones: ["zone-b"] }),
        ],
        { service: "zoned" },
      ),
    ];
    assert.ok(
      slices.every((s) => packedEndpoints(s) !== undefined),
      "the fixtures are packed",
    );
    const plain = slices.map((s) => JSON.parse(JSON.stringify(s)) as EndpointSlice);
    assert.ok(plain.every((s) => packedEndpoints(s) === undefined));
    const nodes = [node("node-a", { zone: "zone-a", internal: ["192.168.1.10"] })];
    const build = (endpointSlices: EndpointSlice[]) =>
      buildNodeModel({ services, endpointSlices, nodes, nodeName: "node-a" });
    const a = build(slices);
    const b = build(plain);
    assert.deepEqual(JSON.parse(JSON.stringify(a.frontends)), JSON.parse(JSON.stringify(b.frontends)));
    assert.deepEqual(JSON.parse(JSON.stringify(a.extras)), JSON.parse(JSON.stringify(b.extras)));
    // The cases above are in it: the duplicate merged to the local copy, terminating kept, derived hints used.
    const web = a.frontends.find((f) => f.service === "default/web" && f.type === "ClusterIP")!;
    assert.deepEqual(
      web.backends.map((x) => `${x.address} ${x.state}${x.nodeLocal ? " local" : ""}`),
      ["10.244.1.7 active", "10.244.2.9 active local", "200.1.2.3 active local", "255.255.255.254 active"],
    );
    const near = a.frontends.find((f) => f.service === "default/near")!;
    assert.deepEqual(
      near.backends.map((x) => x.address),
      ["10.244.3.1"],
    );
    // The shared hint lists of the packed slices were not changed by deriving hints for one Service.
    assert.deepEqual(
      slices[2]!.endpoints.map((e) => e.hints.forZones),
      [[], []],
    );
  });
});
