// The model's compact records (src/model/record.ts) against the frontend objects they stand for: the BPF
// encoder's path straight from a record's words must write exactly the entries the object path writes for the
// same frontends, and a record's frontends must be what the model renders.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel, ModelCache, recordsFromFrontends } from "../src/model/index.js";
import { contentsSink, emptyLbContents, encodeRecord, newIds, type LbContents } from "../src/dataplane/bpf/desired.js";
import type { ServiceRecord } from "../src/model/record.js";
import { svcKey } from "../src/dataplane/bpf/abi.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const nodeA = node("node-a", { internal: ["192.0.2.11", "2001:db8::11"], zone: "z1" });

function encodeAll(records: ReadonlyMap<string, ServiceRecord>): { contents: LbContents; skipped: string[] } {
  const contents = emptyLbContents();
  const ids = newIds();
  const sink = contentsSink(contents);
  const skipped: string[] = [];
  for (const key of [...records.keys()].sort()) {
    const r = records.get(key)!;
    encodeRecord(r, ids, sink).forEach((reason, i) => {
      if (reason) skipped.push(`${key} ${r.address(i)}:${r.port(i)} ${reason}`);
    });
  }
  return { contents, skipped };
}

const plain = (c: LbContents) =>
  Object.fromEntries(Object.entries(c).map(([m, v]: [string, Map<string, string>]) => [m, [...v.entries()].sort()]));

test("records encode exactly as the frontends they stand for, and render as the model does", () => {
  const services = [
    // Two cluster IPs, a NodePort with externalTrafficPolicy Local (two scopes), ClientIP affinity.
    svc({
      name: "np",
      type: "NodePort",
      clusterIP: "10.96.0.20",
      externalTrafficPolicy: "Local",
      sessionAffinity: "ClientIP",
      timeoutSeconds: 600,
      ports: [
        { name: "http", port: 80, targetPort: 8080, nodePort: 30080 },
        { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", nodePort: 30053 },
      ],
    }),
    // A load balancer with source ranges and Maglev, forwarded by DSR for TCP (hybrid).
    svc({
      name: "lb",
      type: "LoadBalancer",
      clusterIP: "10.96.0.21",
      ingress: [{ ip: "198.51.100.7" }],
      loadBalancerSourceRanges: ["203.0.113.0/24"],
      annotations: { "bpfproxy.io/lb-algorithm": "maglev", "bpfproxy.io/forwarding-mode": "hybrid" },
      ports: [{ name: "https", port: 443, targetPort: 8443, nodePort: 30443 }],
    }),
    // Terminating and not-ready endpoints (retained backends), least-conn, an SCTP port BPF translates (same
    // port) and one it leaves to IPVS (skipped: a port rewrite).
    svc({
      name: "term",
      clusterIP: "10.96.0.22",
      annotations: { "bpfproxy.io/lb-algorithm": "least-conn" },
      ports: [
        { name: "http", port: 80, targetPort: 8080 },
        { name: "sctp", port: 99, targetPort: 99, protocol: "SCTP" },
        { name: "sctp2", port: 98, targetPort: 100, protocol: "SCTP" },
      ],
    }),
    // Dual-stack: the IPv6 frontends take the object path inside a compact record.
    svc({ name: "ds", clusterIP: "10.96.0.23", clusterIPs: ["10.96.0.23", "fd00::23"] }),
    // bpfproxy.io/backend-weights (runs of slots), with Maglev (a weighted table) and a weight 0.
    svc({
      name: "wt",
      clusterIP: "10.96.0.24",
      annotations: {
        "bpfproxy.io/lb-algorithm": "maglev",
        "bpfproxy.io/backend-weights": "10.244.7.1=4, 10.244.7.2=2, 10.244.7.3=0",
      },
    }),
    // Claims 10.96.0.20:80 too: loses it to "np" (a conflict), keeps its other port.
    svc({
      name: "zz",
      clusterIP: "10.96.0.20",
      ports: [
        { name: "http", port: 80, targetPort: 8080 },
        { name: "alt", port: 81, targetPort: 8081 },
      ],
    }),
  ];
  const ports = (list: { name: string; port: number; protocol?: string }[]) => ({ ports: list });
  const endpointSlices = [
    slice([ep("10.244.1.5", { node: "node-a" }), ep("10.244.2.9"), ep("10.244.2.3")], {
      name: "np-1",
      service: "np",
      ...ports([
        { name: "http", port: 8080 },
        { name: "dns", port: 5353, protocol: "UDP" },
      ]),
    }),
    slice([ep("10.244.3.1"), ep("10.244.3.2"), ep("10.244.3.3")], {
      name: "lb-1",
      service: "lb",
      ...ports([{ name: "https", port: 8443 }]),
    }),
    slice(
      [
        ep("10.244.4.1"),
        ep("10.244.4.2", { ready: false, serving: true, terminating: true }),
        ep("10.244.4.3", { ready: false, serving: false }),
      ],
      {
        name: "term-1",
        service: "term",
        ...ports([
          { name: "http", port: 8080 },
          { name: "sctp", port: 99, protocol: "SCTP" },
          { name: "sctp2", port: 100, protocol: "SCTP" },
        ]),
      },
    ),
    slice([ep("10.244.5.1")], { name: "ds-1", service: "ds" }),
    slice([ep("fd00:10:244::5")], { name: "ds-2", service: "ds", addressType: "IPv6" }),
    slice([ep("10.244.7.1"), ep("10.244.7.2"), ep("10.244.7.3"), ep("10.244.7.4")], { name: "wt-1", service: "wt" }),
    slice([ep("10.244.6.1")], {
      name: "zz-1",
      service: "zz",
      ...ports([
        { name: "http", port: 8080 },
        { name: "alt", port: 8081 },
      ]),
    }),
  ];
  const input = { services, endpointSlices, nodes: [nodeA], nodeName: "node-a" };
  const conflicts: string[] = [];
  const model = buildNodeModel({
    ...input,
    cache: new ModelCache(),
    onConflict: (kept, dropped) => conflicts.push(`${kept.service} over ${dropped.service}`),
  });
  // The records' frontends are the model's (a build without records gives the same list).
  assert.deepEqual(model.frontends, buildNodeModel(input).frontends);
  assert.deepEqual(model.extras, buildNodeModel(input).extras);
  assert.deepEqual(conflicts, ["default/np over default/zz"]);
  const records = model.delta!.byService;
  assert.ok([...records.values()].every((r) => r.compact));
  // The cases this test is about are in the model (or it proves nothing).
  const fes = model.frontends;
  assert.ok(
    fes.some((f) => f.type === "NodePort" && f.scope === "internal"),
    "two scopes",
  );
  assert.ok(
    fes.some((f) => f.sessionAffinity.type === "ClientIP" && f.protocol === "UDP"),
    "affinity",
  );
  assert.ok(
    fes.some((f) => f.algorithm === "maglev" && f.backends.length === 3),
    "maglev",
  );
  assert.ok(
    model.extras.some((x) => x.sourceRanges.length > 0),
    "source ranges",
  );
  assert.ok(
    fes.some((f) => f.forwardingMode === "hybrid" && f.type === "LoadBalancer") &&
      fes.every((f) => f.type !== "ClusterIP" || f.forwardingMode === undefined),
    "forwarding mode on the external frontends only",
  );
  assert.ok(
    model.extras.some((x) => x.retainedBackends.length > 0),
    "retained",
  );
  assert.ok(
    fes.some((f) => f.address.includes(":")),
    "IPv6",
  );
  assert.deepEqual(
    fes.find((f) => f.service === "default/wt")?.backends.map((b) => b.weight),
    [4, 2, 0, undefined],
    "weights (absent: 1)",
  );
  assert.ok(
    fes.some((f) => f.service === "default/zz" && f.port === 81),
    "the conflict's loser keeps its other port",
  );

  const compact = encodeAll(records);
  const objects = encodeAll(recordsFromFrontends(model.frontends, model.extras));
  assert.deepEqual(plain(compact.contents), plain(objects.contents));
  assert.deepEqual(compact.skipped, objects.skipped);
  assert.ok(
    compact.skipped.some((s) => s.includes("SCTP, served by IPVS")),
    compact.skipped.join("\n"),
  );
  assert.ok(compact.contents.maglev.size > 0 && compact.contents.affinityMatch.size > 0);
  assert.ok(compact.contents.services6.size > 0);
  // The SCTP port with no port rewrite is in the service map (protocol 132).
  const protoAt = svcKey.layout.find((m) => m.c === "proto")!.offset;
  assert.ok(
    [...compact.contents.services.keys()].some((k) => k.charCodeAt(protoAt) === 132),
    "an SCTP frontend",
  );
});
