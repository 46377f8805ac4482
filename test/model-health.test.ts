// Health-check node ports: which Services need one on this node and how many local endpoints back it.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildHealthChecks } from "../src/model/health.js";
import { validateObject } from "../src/k8s/validate.js";
import type { Service } from "../src/k8s/schemas.js";
import { ep, slice, svc } from "./model-helpers.js";

function lb(name: string, etp: string, hc: number, extra: Record<string, unknown> = {}): Service {
  const r = validateObject({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default", ...extra },
    spec: {
      type: "LoadBalancer",
      clusterIP: "10.96.0.50",
      externalTrafficPolicy: etp,
      healthCheckNodePort: hc,
      ports: [
        { name: "http", port: 80, nodePort: 30080 },
        { name: "https", port: 443, nodePort: 30443 },
      ],
    },
  });
  assert.ok(r.ok && r.kind === "Service");
  return r.object;
}

describe("buildHealthChecks", () => {
  test("a LoadBalancer Service with externalTrafficPolicy Local counts this node's ready endpoint IPs once", () => {
    const s = slice(
      [
        ep("10.244.1.5", { node: "node-a" }),
        ep("10.244.1.6", { node: "node-a", terminating: true, serving: true }),
        ep("10.244.2.1"),
      ],
      {
        service: "shop",
        ports: [
          { name: "http", port: 8080 },
          { name: "https", port: 8443 },
        ],
      },
    );
    assert.deepEqual(
      buildHealthChecks({ services: [lb("shop", "Local", 32000)], endpointSlices: [s], nodeName: "node-a" }),
      [{ service: "default/shop", nodePort: 32000, localEndpoints: 1 }],
    );
  });

  test("a node without local endpoints reports zero", () => {
    const s = slice([ep("10.244.2.1")], { service: "shop" });
    assert.deepEqual(
      buildHealthChecks({ services: [lb("shop", "Local", 32000)], endpointSlices: [s], nodeName: "node-a" }),
      [{ service: "default/shop", nodePort: 32000, localEndpoints: 0 }],
    );
  });

  test("Cluster policy, ClusterIP Services and other proxies' Services need no health check", () => {
    const services = [
      lb("a", "Cluster", 32001),
      svc(),
      lb("b", "Local", 32002, { labels: { "service.kubernetes.io/service-proxy-name": "x" } }),
    ];
    assert.deepEqual(buildHealthChecks({ services, endpointSlices: [], nodeName: "node-a" }), []);
  });
});
