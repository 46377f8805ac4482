// The per-node model, table-driven in the style of kube-proxy's CategorizeEndpoints tests: each case names
// the behaviour in a sentence, gives the objects, and lists EVERY frontend the node must program with exactly
// the backends new connections may use ("addr:port", " (T)" = terminating).
//
// Unless a case says otherwise: this node is node-a in zone-a with InternalIP 192.0.2.11 and ExternalIP
// 203.0.113.11; the Service is default/web, ClusterIP 10.96.0.10, port "http" 80 → 8080/TCP; endpoints are
// ready and on node-b.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel, invalidAlgorithm } from "../src/model/build.js";
import type { Frontend, ModelConfig, NodeModel } from "../src/model/types.js";
import type { EndpointSlice, Node, Service } from "../src/k8s/schemas.js";
import { ep, endpointsSlices, node, slice, summarize, svc } from "./model-helpers.js";

interface Case {
  name: string;
  services: Service[];
  slices?: EndpointSlice[];
  nodes?: Node[];
  config?: Partial<ModelConfig>;
  /** Every frontend of the model, with its backends. */
  frontends?: Record<string, string[]>;
  check?: (m: NodeModel) => void;
}

const NODE_A = node("node-a", { zone: "zone-a", internal: ["192.0.2.11"], external: ["203.0.113.11"] });
const L = { node: "node-a" };
const CIP = "ClusterIP 10.96.0.10:80/TCP internal";
const NP_INT = "NodePort 192.0.2.11:30080/TCP external";
const NP_EXT = "NodePort 203.0.113.11:30080/TCP external";
const NP_INT_IN = "NodePort 192.0.2.11:30080/TCP internal";
const NP_EXT_IN = "NodePort 203.0.113.11:30080/TCP internal";

function find(m: NodeModel, pred: (f: Frontend) => boolean): { f: Frontend; i: number } {
  const i = m.frontends.findIndex(pred);
  assert.ok(i >= 0, "frontend not found");
  return { f: m.frontends[i]!, i };
}

const cases: Case[] = [
  // --- readiness and the serving-terminating fallback (Cluster set) -------------------------------------
  {
    name: "ready endpoints are used and not-ready ones are not",
    services: [svc()],
    slices: [slice([ep("10.244.2.1"), ep("10.244.2.2", { ready: false, serving: false })])],
    frontends: { [CIP]: ["10.244.2.1:8080"] },
  },
  {
    name: "serving terminating endpoints are used when no endpoint is ready",
    services: [svc()],
    slices: [
      slice([
        ep("10.244.2.1", { terminating: true, serving: true }),
        ep("10.244.2.2", { ready: false, serving: false }),
      ]),
    ],
    frontends: { [CIP]: ["10.244.2.1:8080 (T)"] },
  },
  {
    name: "terminating endpoints that are no longer serving are never used",
    services: [svc()],
    slices: [slice([ep("10.244.2.1", { terminating: true, serving: false })])],
    frontends: { [CIP]: [] },
  },
  {
    name: "serving terminating endpoints are not used while any endpoint is ready",
    services: [svc()],
    slices: [slice([ep("10.244.2.1", { terminating: true, serving: true }), ep("10.244.2.2")])],
    frontends: { [CIP]: ["10.244.2.2:8080"] },
  },
  {
    name: "a Service without endpoints still gets its frontend, with no backends",
    services: [svc()],
    frontends: { [CIP]: [] },
  },
  {
    name: "endpoint conditions left unset mean ready",
    services: [svc()],
    slices: [slice([{ addresses: ["10.244.2.1"], nodeName: "node-b" }])],
    frontends: { [CIP]: ["10.244.2.1:8080"] },
  },

  // --- de-duplication by address:port over the Service's slices (kube-proxy's rule) ---------------------
  {
    name: "an address:port in two slices counts once: the first slice's occurrence (slices in name order)",
    services: [svc()],
    slices: [
      slice([ep("10.244.2.1", { ready: false, serving: false })], { name: "web-a" }),
      slice([ep("10.244.2.1"), ep("10.244.2.2")], { name: "web-b" }),
    ],
    frontends: { [CIP]: ["10.244.2.2:8080"] },
  },
  {
    name: "an occurrence on this node replaces a remote one of the same address:port",
    services: [svc({ internalTrafficPolicy: "Local" })],
    slices: [
      slice([ep("10.244.2.1")], { name: "web-a" }),
      slice([ep("10.244.2.1", L), ep("10.244.2.3")], { name: "web-b" }),
    ],
    frontends: { [CIP]: ["10.244.2.1:8080"] },
  },
  {
    name: "the same address with two ports (two slices naming the port differently) is two backends, in order",
    services: [svc()],
    slices: [
      slice([ep("10.244.2.9"), ep("10.244.2.1")], {
        name: "web-a",
        ports: [{ name: "http", port: 8081, protocol: "TCP" }],
      }),
      slice([ep("10.244.2.1"), ep("10.244.2.10")], { name: "web-b" }),
    ],
    frontends: { [CIP]: ["10.244.2.1:8080", "10.244.2.1:8081", "10.244.2.9:8081", "10.244.2.10:8080"] },
  },
  // --- internalTrafficPolicy ----------------------------------------------------------------------------
  {
    name: "internalTrafficPolicy Local uses only this node's ready endpoints",
    services: [svc({ internalTrafficPolicy: "Local" })],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: { [CIP]: ["10.244.1.5:8080"] },
  },
  {
    name: "internalTrafficPolicy Local with only remote endpoints has no backends",
    services: [svc({ internalTrafficPolicy: "Local" })],
    slices: [slice([ep("10.244.2.1"), ep("10.244.2.2")])],
    frontends: { [CIP]: [] },
  },
  {
    name: "internalTrafficPolicy Local falls back to this node's serving terminating endpoints",
    services: [svc({ internalTrafficPolicy: "Local" })],
    slices: [slice([ep("10.244.1.5", { ...L, terminating: true, serving: true }), ep("10.244.2.1")])],
    frontends: { [CIP]: ["10.244.1.5:8080 (T)"] },
  },
  {
    name: "internalTrafficPolicy Local does not fall back to remote terminating endpoints",
    services: [svc({ internalTrafficPolicy: "Local" })],
    slices: [
      slice([
        ep("10.244.1.5", { ...L, ready: false, serving: false }),
        ep("10.244.2.1", { terminating: true, serving: true }),
      ]),
    ],
    frontends: { [CIP]: [] },
  },
  {
    name: "internalTrafficPolicy Local does not change NodePorts, which follow externalTrafficPolicy Cluster",
    services: [svc({ type: "NodePort", internalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.1.5:8080"],
      [NP_INT]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP_EXT]: ["10.244.1.5:8080", "10.244.2.1:8080"],
    },
  },

  // --- externalTrafficPolicy ----------------------------------------------------------------------------
  {
    name: "externalTrafficPolicy Cluster serves the NodePort on every node IP with every ready endpoint",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP_INT]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP_EXT]: ["10.244.1.5:8080", "10.244.2.1:8080"],
    },
  },
  {
    name: "externalTrafficPolicy Local sends outside traffic to local endpoints and in-cluster traffic to the cluster set",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP_INT]: ["10.244.1.5:8080"],
      [NP_INT_IN]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP_EXT]: ["10.244.1.5:8080"],
      [NP_EXT_IN]: ["10.244.1.5:8080", "10.244.2.1:8080"],
    },
  },
  {
    name: "externalTrafficPolicy Local with every endpoint local needs only the external scope",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.1.6", L)])],
    frontends: {
      [CIP]: ["10.244.1.5:8080", "10.244.1.6:8080"],
      [NP_INT]: ["10.244.1.5:8080", "10.244.1.6:8080"],
      [NP_EXT]: ["10.244.1.5:8080", "10.244.1.6:8080"],
    },
  },
  {
    name: "externalTrafficPolicy Local without local endpoints rejects outside traffic but keeps in-cluster traffic working",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.2.1:8080"],
      [NP_INT]: [],
      [NP_INT_IN]: ["10.244.2.1:8080"],
      [NP_EXT]: [],
      [NP_EXT_IN]: ["10.244.2.1:8080"],
    },
  },
  {
    name: "externalTrafficPolicy Local falls back to local terminating endpoints independently of the cluster set",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["192.0.2.0/24"] },
    slices: [slice([ep("10.244.1.5", { ...L, terminating: true, serving: true }), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.2.1:8080"],
      [NP_INT]: ["10.244.1.5:8080 (T)"],
      [NP_INT_IN]: ["10.244.2.1:8080"],
    },
  },
  {
    name: "externalTrafficPolicy Local applies to external IPs of a ClusterIP Service",
    services: [svc({ externalIPs: ["198.51.100.7"], externalTrafficPolicy: "Local" })],
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      "ExternalIP 198.51.100.7:80/TCP external": ["10.244.1.5:8080"],
      "ExternalIP 198.51.100.7:80/TCP internal": ["10.244.1.5:8080", "10.244.2.1:8080"],
    },
  },
  {
    name: "both traffic policies Local: ClusterIP and NodePort use local endpoints, in-cluster NodePort traffic the cluster set",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local", internalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["primary"] },
    slices: [slice([ep("10.244.1.5", L), ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.1.5:8080"],
      [NP_INT]: ["10.244.1.5:8080"],
      [NP_INT_IN]: ["10.244.1.5:8080", "10.244.2.1:8080"],
    },
  },

  // --- topology hints ---------------------------------------------------------------------------------------
  {
    name: "zone hints select the endpoints hinted for this node's zone",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { forZones: ["zone-a"] }),
        ep("10.1.2.4", { forZones: ["zone-b"] }),
        ep("10.1.2.5", { forZones: ["zone-c"] }),
        ep("10.1.2.6", { forZones: ["zone-a"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.6:8080"] },
  },
  {
    name: "zone hints are ignored when one ready endpoint has none",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([ep("10.1.2.3", { forZones: ["zone-a"] }), ep("10.1.2.4", { forZones: ["zone-b"] }), ep("10.1.2.5")]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080", "10.1.2.5:8080"] },
  },
  {
    name: "zone hints are ignored when none is for this node's zone",
    services: [svc()],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.3", { forZones: ["zone-b"] }), ep("10.1.2.4", { forZones: ["zone-c"] })])],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "zone hints are ignored when the node has no zone label",
    services: [svc()],
    nodes: [node("node-a", { internal: ["192.0.2.11"] })],
    slices: [slice([ep("10.1.2.3", { forZones: ["zone-a"] }), ep("10.1.2.4", { forZones: ["zone-b"] })])],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "an explicit nodeZone in the config overrides the Node's label",
    services: [svc()],
    nodes: [NODE_A],
    config: { nodeZone: "zone-b" },
    slices: [slice([ep("10.1.2.3", { forZones: ["zone-a"] }), ep("10.1.2.4", { forZones: ["zone-b"] })])],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "only ready endpoints' hints decide whether hints are used",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { forZones: ["zone-a"] }),
        ep("10.1.2.4", { forZones: ["zone-b"] }),
        ep("10.1.2.5", { ready: false, serving: false }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080"] },
  },
  {
    name: "zone hints that only point at unready endpoints in this zone are ignored",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { forZones: ["zone-a"], ready: false, serving: false }),
        ep("10.1.2.4", { forZones: ["zone-b"] }),
        ep("10.1.2.5", { forZones: ["zone-c"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.4:8080", "10.1.2.5:8080"] },
  },
  {
    name: "an endpoint hinted for several zones is used by each of them",
    services: [svc()],
    nodes: [node("node-a", { zone: "zone-c", internal: ["192.0.2.11"] })],
    slices: [
      slice([
        ep("10.1.2.3", { forZones: ["zone-a", "zone-b", "zone-c"] }),
        ep("10.1.2.4", { forZones: ["zone-b", "zone-c"] }),
        ep("10.1.2.5", { forZones: ["zone-b", "zone-d"] }),
        ep("10.1.2.6", { forZones: ["zone-c"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080", "10.1.2.6:8080"] },
  },
  {
    name: "node hints select the endpoints hinted for this node",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { forNodes: ["node-a"], forZones: ["zone-a"] }),
        ep("10.1.2.4", { forNodes: ["node-b"], forZones: ["zone-a"] }),
        ep("10.1.2.5", { forNodes: ["node-c"], forZones: ["zone-b"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080"] },
  },
  {
    name: "node hints fall back to zone hints when none is for this node",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.4", { forNodes: ["node-b"], forZones: ["zone-a"] }),
        ep("10.1.2.5", { forNodes: ["node-c"], forZones: ["zone-b"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "topology applies to the cluster set only, never to Local traffic policy",
    services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["192.0.2.11/32"] },
    slices: [
      slice([
        ep("10.1.2.3", { ...L, forZones: ["zone-a"] }),
        ep("10.1.2.4", { ...L, forZones: ["zone-b"] }),
        ep("10.1.2.5", { forZones: ["zone-c"] }),
        ep("10.1.2.6", { forZones: ["zone-a"] }),
      ]),
    ],
    frontends: {
      [CIP]: ["10.1.2.3:8080", "10.1.2.6:8080"],
      [NP_INT]: ["10.1.2.3:8080", "10.1.2.4:8080"],
      [NP_INT_IN]: ["10.1.2.3:8080", "10.1.2.6:8080"],
    },
  },
  {
    name: "topology does not narrow the serving terminating fallback",
    services: [svc()],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { terminating: true, serving: true, forZones: ["zone-a"] }),
        ep("10.1.2.4", { terminating: true, serving: true, forZones: ["zone-b"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080 (T)", "10.1.2.4:8080 (T)"] },
  },

  // --- trafficDistribution (hints derived when the slices carry none) -------------------------------------
  {
    name: "trafficDistribution PreferClose prefers endpoints in this node's zone",
    services: [svc({ trafficDistribution: "PreferClose" })],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { zone: "zone-a" }),
        ep("10.1.2.4", { zone: "zone-b" }),
        ep("10.1.2.5", { ...L, zone: "zone-a" }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.5:8080"] },
  },
  {
    name: "trafficDistribution PreferSameZone prefers endpoints in this node's zone",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.3", { zone: "zone-b" }), ep("10.1.2.4", { zone: "zone-a" })])],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution PreferSameZone uses every endpoint when none is in this zone",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.3", { zone: "zone-b" }), ep("10.1.2.4", { zone: "zone-c" })])],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution PreferSameZone uses every endpoint when one has no zone",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.3", { zone: "zone-a" }), ep("10.1.2.4")])],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution PreferSameZone ignores unready endpoints in this zone",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [
      slice([ep("10.1.2.3", { zone: "zone-a", ready: false, serving: false }), ep("10.1.2.4", { zone: "zone-b" })]),
    ],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution PreferSameNode prefers endpoints on this node",
    services: [svc({ trafficDistribution: "PreferSameNode" })],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { ...L, zone: "zone-a" }),
        ep("10.1.2.4", { zone: "zone-a" }),
        ep("10.1.2.5", { zone: "zone-b", node: "node-c" }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080"] },
  },
  {
    name: "trafficDistribution PreferSameNode falls back to this zone when no endpoint is on this node",
    services: [svc({ trafficDistribution: "PreferSameNode" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.4", { zone: "zone-a" }), ep("10.1.2.5", { zone: "zone-b", node: "node-c" })])],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution PreferSameNode falls back to every endpoint when none is on this node or in its zone",
    services: [svc({ trafficDistribution: "PreferSameNode" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.4", { zone: "zone-b" }), ep("10.1.2.5", { zone: "zone-c", node: "node-c" })])],
    frontends: { [CIP]: ["10.1.2.4:8080", "10.1.2.5:8080"] },
  },
  {
    name: "trafficDistribution derives no hints for a controller's slices that carry none (kube-proxy reads hints only)",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [
      slice([ep("10.1.2.3", { zone: "zone-b" }), ep("10.1.2.4", { zone: "zone-a" })], {
        labels: { "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
      }),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "trafficDistribution derives no hints when any of the Service's slices has a manager",
    services: [svc({ trafficDistribution: "PreferSameNode" })],
    nodes: [NODE_A],
    slices: [
      slice([ep("10.1.2.3", { ...L, zone: "zone-a" })]),
      slice([ep("10.1.2.4", { zone: "zone-b", node: "node-c" })], {
        name: "web-mirrored",
        labels: { "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io" },
      }),
    ],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },
  {
    name: "hints written on the slices win over trafficDistribution",
    services: [svc({ trafficDistribution: "PreferSameZone" })],
    nodes: [NODE_A],
    slices: [
      slice([
        ep("10.1.2.3", { zone: "zone-a", forZones: ["zone-b"] }),
        ep("10.1.2.4", { zone: "zone-b", forZones: ["zone-a"] }),
      ]),
    ],
    frontends: { [CIP]: ["10.1.2.4:8080"] },
  },
  {
    name: "an unknown trafficDistribution value is ignored",
    services: [svc({ trafficDistribution: "PreferSomethingNew" })],
    nodes: [NODE_A],
    slices: [slice([ep("10.1.2.3", { zone: "zone-a" }), ep("10.1.2.4", { zone: "zone-b" })])],
    frontends: { [CIP]: ["10.1.2.3:8080", "10.1.2.4:8080"] },
  },

  // --- session affinity and algorithm -----------------------------------------------------------------------
  {
    name: "ClientIP session affinity without a config defaults to 10800 seconds",
    services: [svc({ sessionAffinity: "ClientIP" })],
    check: (m) => assert.deepEqual(m.frontends[0]!.sessionAffinity, { type: "ClientIP", timeoutSeconds: 10800 }),
  },
  {
    name: "ClientIP session affinity keeps the configured timeout",
    services: [svc({ sessionAffinity: "ClientIP", timeoutSeconds: 60 })],
    check: (m) => assert.deepEqual(m.frontends[0]!.sessionAffinity, { type: "ClientIP", timeoutSeconds: 60 }),
  },
  {
    name: "session affinity None is reported as None and the algorithm defaults to random",
    services: [svc()],
    check: (m) => {
      assert.deepEqual(m.frontends[0]!.sessionAffinity, { type: "None" });
      assert.equal(m.frontends[0]!.algorithm, "random");
    },
  },
  {
    name: "the bpfproxy.io/lb-algorithm maglev annotation selects maglev; other values keep random",
    services: [
      svc({ annotations: { "bpfproxy.io/lb-algorithm": "maglev" } }),
      svc({ name: "other", clusterIP: "10.96.0.11", annotations: { "bpfproxy.io/lb-algorithm": "round-robin" } }),
    ],
    check: (m) =>
      assert.deepEqual(
        m.frontends.map((f) => [f.service, f.algorithm]),
        [
          ["default/other", "random"],
          ["default/web", "maglev"],
        ],
      ),
  },
  {
    name: "with a maglev default, Services without the annotation (or with an unknown value) use maglev and random stays selectable",
    services: [
      svc(),
      svc({ name: "other", clusterIP: "10.96.0.11", annotations: { "bpfproxy.io/lb-algorithm": "round-robin" } }),
      svc({ name: "third", clusterIP: "10.96.0.12", annotations: { "bpfproxy.io/lb-algorithm": "random" } }),
    ],
    config: { defaultAlgorithm: "maglev" },
    check: (m) =>
      assert.deepEqual(
        m.frontends.map((f) => [f.service, f.algorithm]),
        [
          ["default/other", "maglev"],
          ["default/third", "random"],
          ["default/web", "maglev"],
        ],
      ),
  },
  {
    name: "least-conn: the annotation selects it, as does the config default; invalid values take the default",
    services: [
      svc({ annotations: { "bpfproxy.io/lb-algorithm": "least-conn" } }),
      svc({ name: "other", clusterIP: "10.96.0.11", annotations: { "bpfproxy.io/lb-algorithm": "LeastConn" } }),
      svc({ name: "third", clusterIP: "10.96.0.12", annotations: { "bpfproxy.io/lb-algorithm": "maglev" } }),
      svc({ name: "fourth", clusterIP: "10.96.0.13" }),
    ],
    config: { defaultAlgorithm: "least-conn" },
    check: (m) =>
      assert.deepEqual(
        m.frontends.map((f) => [f.service, f.algorithm]),
        [
          ["default/fourth", "least-conn"],
          ["default/other", "least-conn"],
          ["default/third", "maglev"],
          ["default/web", "least-conn"],
        ],
      ),
  },

  // --- NodePort addresses -----------------------------------------------------------------------------------
  {
    name: "NodePorts are served on every node IP when nodePortAddresses is empty",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    frontends: { [CIP]: [], [NP_INT]: [], [NP_EXT]: [] },
  },
  {
    name: "nodePortAddresses CIDRs select the node IPs inside them",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["203.0.113.0/24"] },
    frontends: { [CIP]: [], [NP_EXT]: [] },
  },
  {
    name: "nodePortAddresses primary selects the node's first InternalIP",
    services: [svc({ type: "NodePort" })],
    nodes: [node("node-a", { internal: ["192.0.2.11", "192.0.2.99"], external: ["203.0.113.11"] })],
    config: { nodePortAddresses: ["primary"] },
    frontends: { [CIP]: [], [NP_INT]: [] },
  },
  {
    name: "nodePortAddresses with primary and a CIDR serves both",
    services: [svc({ type: "NodePort" })],
    nodes: [node("node-a", { internal: ["192.0.2.11", "192.0.2.99"], external: ["203.0.113.11"] })],
    config: { nodePortAddresses: ["primary", "203.0.113.0/24"] },
    frontends: { [CIP]: [], [NP_INT]: [], [NP_EXT]: [] },
  },
  {
    name: "nodePortAddresses with only IPv6 CIDRs leaves every IPv4 node IP serving",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["2001:db8::/64"] },
    frontends: { [CIP]: [], [NP_INT]: [], [NP_EXT]: [] },
  },
  {
    name: "nodeIPs in the config replace the Node object's addresses",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    config: { nodeIPs: ["10.0.0.1"] },
    frontends: { [CIP]: [], "NodePort 10.0.0.1:30080/TCP external": [] },
  },
  {
    name: "without a Node object or nodeIPs there is nowhere to serve NodePorts",
    services: [svc({ type: "NodePort" })],
    frontends: { [CIP]: [] },
  },
  {
    name: "a nodePort on a ClusterIP Service is ignored",
    services: [svc({ ports: [{ name: "http", port: 80, targetPort: 8080, nodePort: 30080 }] })],
    nodes: [NODE_A],
    frontends: { [CIP]: [] },
  },

  // --- LoadBalancer and external IPs -----------------------------------------------------------------------
  {
    name: "LoadBalancer Services serve their ingress IPs and their NodePorts",
    services: [svc({ type: "LoadBalancer", ingress: [{ ip: "198.51.100.20" }] })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["primary"] },
    slices: [slice([ep("10.244.2.1")])],
    frontends: {
      [CIP]: ["10.244.2.1:8080"],
      "LoadBalancer 198.51.100.20:80/TCP external": ["10.244.2.1:8080"],
      [NP_INT]: ["10.244.2.1:8080"],
    },
  },
  {
    name: "LoadBalancer ingress with ipMode Proxy or only a hostname is not served",
    services: [
      svc({
        type: "LoadBalancer",
        ingress: [
          { ip: "198.51.100.20", ipMode: "Proxy" },
          { hostname: "lb.example.com" },
          { ip: "198.51.100.21", ipMode: "VIP" },
        ],
      }),
    ],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["primary"] },
    frontends: { [CIP]: [], "LoadBalancer 198.51.100.21:80/TCP external": [], [NP_INT]: [] },
  },
  {
    name: "spec.loadBalancerIP without status ingress is not served",
    services: [
      svc({
        type: "LoadBalancer",
        loadBalancerIP: "198.51.100.30",
        allocateLoadBalancerNodePorts: false,
        ports: [{ name: "http", port: 80, targetPort: 8080 }],
      }),
    ],
    nodes: [NODE_A],
    frontends: { [CIP]: [] },
  },
  {
    name: "loadBalancerSourceRanges apply to LoadBalancer frontends only, of the frontend's family only",
    services: [
      svc({
        type: "LoadBalancer",
        ingress: [{ ip: "198.51.100.20" }],
        loadBalancerSourceRanges: ["203.0.113.0/24", " 198.51.100.0/25 ", "2001:db8::/32"],
        externalIPs: ["198.51.100.7"],
      }),
    ],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["primary"] },
    check: (m) => {
      const lb = find(m, (f) => f.type === "LoadBalancer");
      assert.deepEqual(m.extras[lb.i]!.sourceRanges, ["203.0.113.0/24", "198.51.100.0/25"]);
      for (const t of ["ClusterIP", "NodePort", "ExternalIP"])
        assert.deepEqual(m.extras[find(m, (f) => f.type === t).i]!.sourceRanges, [], t);
    },
  },
  {
    name: "externalIPs are served with scope external; IPv6 ones not on a Service without an IPv6 cluster IP",
    services: [svc({ externalIPs: ["198.51.100.7", "2001:db8::7"] })],
    slices: [slice([ep("10.244.2.1")])],
    frontends: { [CIP]: ["10.244.2.1:8080"], "ExternalIP 198.51.100.7:80/TCP external": ["10.244.2.1:8080"] },
  },
  {
    name: "an address that is both an external IP and an ingress IP is served once, as LoadBalancer",
    services: [
      svc({
        type: "LoadBalancer",
        ingress: [{ ip: "198.51.100.7" }],
        externalIPs: ["198.51.100.7"],
        allocateLoadBalancerNodePorts: false,
        ports: [{ name: "http", port: 80, targetPort: 8080 }],
      }),
    ],
    frontends: { [CIP]: [], "LoadBalancer 198.51.100.7:80/TCP external": [] },
  },

  // --- which Services and slices are ours ------------------------------------------------------------------
  {
    name: "Services labelled with a service-proxy-name belong to another proxy",
    services: [svc({ labels: { "service.kubernetes.io/service-proxy-name": "other-proxy" } })],
    frontends: {},
  },
  {
    name: "Services labelled with our proxyName are served",
    services: [svc({ labels: { "service.kubernetes.io/service-proxy-name": "bpfproxy" } })],
    slices: [slice([ep("10.244.2.1")], { labels: { "service.kubernetes.io/service-proxy-name": "bpfproxy" } })],
    config: { proxyName: "bpfproxy" },
    frontends: { [CIP]: ["10.244.2.1:8080"] },
  },
  {
    name: "slices labelled with a service-proxy-name are ignored",
    services: [svc()],
    slices: [slice([ep("10.244.2.1")], { labels: { "service.kubernetes.io/service-proxy-name": "other-proxy" } })],
    frontends: { [CIP]: [] },
  },
  {
    name: "Services and slices labelled headless are ignored",
    services: [
      svc({ labels: { "service.kubernetes.io/headless": "" } }),
      svc({ name: "api", clusterIP: "10.96.0.11" }),
    ],
    slices: [slice([ep("10.244.2.1")], { service: "api", labels: { "service.kubernetes.io/headless": "" } })],
    frontends: { "ClusterIP 10.96.0.11:80/TCP internal": [] },
  },
  {
    name: "headless Services (clusterIP None) and ExternalName Services are skipped",
    services: [svc({ clusterIP: "None" }), svc({ name: "ext", type: "ExternalName", externalName: "example.com" })],
    slices: [slice([ep("10.244.2.1")])],
    frontends: {},
  },
  {
    name: "a Service without a cluster IP is skipped entirely",
    services: [svc({ clusterIP: "", externalIPs: ["198.51.100.7"] })],
    frontends: {},
  },
  {
    name: "a dual-stack Service serves both cluster IPs, each from its own family's slices (test/model-dualstack.test.ts)",
    services: [
      svc({ clusterIP: "fd00::10", clusterIPs: ["fd00::10", "10.96.0.10"] }),
      svc({ name: "v6", clusterIP: "fd00::11" }),
    ],
    slices: [
      slice([ep("10.244.2.1")]),
      slice([{ addresses: ["fd00:244::1"] }], { name: "web-v6", addressType: "IPv6" }),
    ],
    frontends: {
      [CIP]: ["10.244.2.1:8080"],
      "ClusterIP fd00::10:80/TCP internal": ["fd00:244::1:8080"],
      "ClusterIP fd00::11:80/TCP internal": [],
    },
  },

  // --- ports and slices ----------------------------------------------------------------------------------
  {
    name: "a named targetPort resolves through the slice port named like the Service port",
    services: [svc({ ports: [{ name: "http", port: 80, targetPort: "web-http" }] })],
    slices: [slice([ep("10.244.2.1")], { ports: [{ name: "http", port: 8081, protocol: "TCP" }] })],
    frontends: { [CIP]: ["10.244.2.1:8081"] },
  },
  {
    name: "a slice port of the same name but another protocol does not match",
    services: [svc()],
    slices: [slice([ep("10.244.2.1")], { ports: [{ name: "http", port: 8080, protocol: "UDP" }] })],
    frontends: { [CIP]: [] },
  },
  {
    name: "each Service port takes the endpoints of its own slice port",
    services: [
      svc({
        ports: [
          { name: "http", port: 80, targetPort: 8080 },
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
          { name: "metrics", port: 9090 },
        ],
      }),
    ],
    slices: [
      slice([ep("10.244.2.1")], {
        ports: [
          { name: "http", port: 8080, protocol: "TCP" },
          { name: "dns", port: 5353, protocol: "UDP" },
        ],
      }),
    ],
    frontends: {
      [CIP]: ["10.244.2.1:8080"],
      "ClusterIP 10.96.0.10:53/UDP internal": ["10.244.2.1:5353"],
      "ClusterIP 10.96.0.10:9090/TCP internal": [],
    },
  },
  {
    name: "all slices of a Service are merged",
    services: [svc()],
    slices: [
      slice([ep("10.244.2.1")], { name: "web-1" }),
      slice([ep("10.244.3.1", { node: "node-c" })], { name: "web-2" }),
      slice([ep("10.244.9.9")], { name: "other-1", service: "other" }),
    ],
    frontends: { [CIP]: ["10.244.2.1:8080", "10.244.3.1:8080"] },
  },
  {
    name: "an endpoint listed in two slices counts once, the copy on this node winning",
    services: [svc()],
    slices: [
      slice([ep("10.244.1.5", { node: "node-b" })], { name: "web-1" }),
      slice([ep("10.244.1.5", L)], { name: "web-2" }),
    ],
    check: (m) =>
      assert.deepEqual(m.frontends[0]!.backends, [
        { address: "10.244.1.5", port: 8080, state: "active", nodeLocal: true },
      ]),
  },
  {
    name: "slices of a same-named Service in another namespace are not used",
    services: [svc()],
    slices: [slice([ep("10.244.2.1")], { namespace: "kube-system" })],
    frontends: { [CIP]: [] },
  },
  {
    name: "IPv6 slices are not used by a single-stack IPv4 Service and FQDN slices are ignored",
    services: [svc()],
    slices: [
      slice([{ addresses: ["fd00:244::1"] }], { name: "web-v6", addressType: "IPv6" }),
      slice([{ addresses: ["db.example.com"] }], { name: "web-fqdn", addressType: "FQDN" }),
    ],
    frontends: { [CIP]: [] },
  },
  {
    name: "a selector-less Service uses the ready addresses of its hand-written Endpoints",
    services: [svc()],
    slices: endpointsSlices("web", [
      {
        addresses: [{ ip: "192.0.2.50" }, { ip: "192.0.2.51", nodeName: "node-a" }],
        notReadyAddresses: [{ ip: "192.0.2.52" }],
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      },
    ]),
    check: (m) => {
      assert.deepEqual(m.frontends[0]!.backends, [
        { address: "192.0.2.50", port: 8080, state: "active", nodeLocal: false },
        { address: "192.0.2.51", port: 8080, state: "active", nodeLocal: true },
      ]);
      assert.deepEqual(
        m.extras[0]!.retainedBackends.map((b) => b.address),
        ["192.0.2.52"],
      );
    },
  },
  {
    name: "SCTP ports stay in the model",
    services: [svc({ ports: [{ name: "sig", port: 3868, protocol: "SCTP" }] })],
    slices: [slice([ep("10.244.2.1")], { ports: [{ name: "sig", port: 3868, protocol: "SCTP" }] })],
    frontends: { "ClusterIP 10.96.0.10:3868/SCTP internal": ["10.244.2.1:3868"] },
  },

  // --- extras and ordering -----------------------------------------------------------------------------------
  {
    name: "retained backends are the endpoints that still exist but take no new connections",
    services: [svc()],
    slices: [
      slice([
        ep("10.244.2.1"),
        ep("10.244.2.2", { terminating: true, serving: true }),
        ep("10.244.2.3", { ready: false, serving: false }),
      ]),
    ],
    check: (m) => {
      assert.deepEqual(
        m.frontends[0]!.backends.map((b) => b.address),
        ["10.244.2.1"],
      );
      assert.deepEqual(m.extras[0]!.retainedBackends, [
        { address: "10.244.2.2", port: 8080, state: "terminating", nodeLocal: false },
        { address: "10.244.2.3", port: 8080, state: "terminating", nodeLocal: false },
      ]);
    },
  },
  {
    name: "frontends are sorted by service, port name, type, address and scope; backends by address",
    services: [
      svc({ name: "web", type: "NodePort", externalTrafficPolicy: "Local", externalIPs: ["198.51.100.7"] }),
      svc({ name: "api", clusterIP: "10.96.0.9" }),
    ],
    nodes: [NODE_A],
    slices: [slice([ep("10.244.2.10"), ep("10.244.2.9"), ep("10.244.1.5", L)])],
    check: (m) => {
      assert.deepEqual(
        m.frontends.map((f) => `${f.service} ${f.type} ${f.address} ${f.scope}`),
        [
          "default/api ClusterIP 10.96.0.9 internal",
          "default/web ClusterIP 10.96.0.10 internal",
          "default/web ExternalIP 198.51.100.7 external",
          "default/web ExternalIP 198.51.100.7 internal",
          "default/web NodePort 192.0.2.11 external",
          "default/web NodePort 192.0.2.11 internal",
          "default/web NodePort 203.0.113.11 external",
          "default/web NodePort 203.0.113.11 internal",
        ],
      );
      assert.deepEqual(
        find(m, (f) => f.type === "ClusterIP" && f.service === "default/web").f.backends.map((b) => b.address),
        ["10.244.1.5", "10.244.2.9", "10.244.2.10"],
      );
      assert.equal(m.extras.length, m.frontends.length);
    },
  },
];

describe("buildNodeModel", () => {
  // kube-proxy's result depends on the objects, not on the order informers delivered them in: every
  // case gives the same model with its Services, slices and Nodes in reverse order.
  test("every case: the model does not depend on the order the objects arrive in", () => {
    for (const c of cases) {
      const build = (rev: boolean) => {
        const r = <T>(xs: readonly T[]) => (rev ? [...xs].reverse() : [...xs]);
        return buildNodeModel({
          services: r(c.services),
          endpointSlices: r(c.slices ?? []),
          nodes: r(c.nodes ?? []),
          nodeName: "node-a",
          config: { nodeName: "node-a", ...c.config },
        });
      };
      assert.deepEqual(build(true), build(false), c.name);
    }
  });

  for (const c of cases) {
    test(c.name, () => {
      const m = buildNodeModel({
        services: c.services,
        endpointSlices: c.slices ?? [],
        nodes: c.nodes ?? [],
        nodeName: "node-a",
        config: { nodeName: "node-a", ...c.config },
      });
      assert.equal(m.node, "node-a");
      assert.equal(m.extras.length, m.frontends.length);
      if (c.frontends) assert.deepEqual(summarize(m), c.frontends);
      c.check?.(m);
    });
  }

  test("two Services claiming the same external address: the first in order keeps it and the conflict is reported", () => {
    const conflicts: string[] = [];
    const m = buildNodeModel({
      services: [
        svc({ name: "b", clusterIP: "10.96.0.12", externalIPs: ["198.51.100.7"] }),
        svc({ name: "a", clusterIP: "10.96.0.11", externalIPs: ["198.51.100.7"] }),
      ],
      endpointSlices: [],
      nodeName: "node-a",
      onConflict: (kept, dropped) => conflicts.push(`${kept.service} over ${dropped.service}`),
    });
    assert.deepEqual(
      m.frontends.filter((f) => f.type === "ExternalIP").map((f) => f.service),
      ["default/a"],
    );
    assert.deepEqual(conflicts, ["default/a over default/b"]);
  });

  test("the model is deterministic whatever the input order", () => {
    const services = [
      svc({ name: "a", clusterIP: "10.96.0.11" }),
      svc({ name: "b", clusterIP: "10.96.0.12", type: "NodePort" }),
    ];
    const slices = [
      slice([ep("10.244.2.1"), ep("10.244.1.1", L)], { service: "a", name: "a-1" }),
      slice([ep("10.244.2.2")], { service: "a", name: "a-2" }),
    ];
    const one = buildNodeModel({ services, endpointSlices: slices, nodes: [NODE_A], nodeName: "node-a" });
    const two = buildNodeModel({
      services: [...services].reverse(),
      endpointSlices: [...slices].reverse(),
      nodes: [NODE_A],
      nodeName: "node-a",
    });
    assert.deepEqual(two, one);
  });
});

describe("drop or reject when a frontend has no backends", () => {
  const frontendExtras = (m: ReturnType<typeof buildNodeModel>, type: string, scope: string) => {
    const i = m.frontends.findIndex((f) => f.type === type && f.scope === scope);
    assert.ok(i >= 0, `${type}/${scope} frontend missing`);
    return { frontend: m.frontends[i]!, extras: m.extras[i]! };
  };

  test("a Local external policy with endpoints only on other nodes drops (kube-proxy's no-local-endpoints)", () => {
    const m = buildNodeModel({
      services: [
        svc({
          type: "NodePort",
          externalTrafficPolicy: "Local",
          ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30080 }],
        }),
      ],
      endpointSlices: [slice([ep("10.244.2.5", { node: "node-b" })])],
      nodes: [node("node-a", { internal: ["192.0.2.11"] })],
      nodeName: "node-a",
    });
    const np = frontendExtras(m, "NodePort", "external");
    assert.deepEqual(np.frontend.backends, []);
    assert.equal(np.extras.dropWhenEmpty, true);
    assert.equal(frontendExtras(m, "ClusterIP", "internal").extras.dropWhenEmpty, false);
  });

  test("a Service without any endpoint rejects", () => {
    const m = buildNodeModel({
      services: [
        svc({
          type: "NodePort",
          externalTrafficPolicy: "Local",
          ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30080 }],
        }),
      ],
      endpointSlices: [slice([])],
      nodes: [node("node-a", { internal: ["192.0.2.11"] })],
      nodeName: "node-a",
    });
    assert.equal(frontendExtras(m, "NodePort", "external").extras.dropWhenEmpty, false);
    assert.equal(frontendExtras(m, "ClusterIP", "internal").extras.dropWhenEmpty, false);
  });
});

describe("bpfproxy.io/lb-algorithm values", () => {
  const table: Array<[string | undefined, string | undefined]> = [
    [undefined, undefined],
    ["random", undefined],
    ["maglev", undefined],
    ["least-conn", undefined],
    ["LeastConn", "LeastConn"],
    ["least_conn", "least_conn"],
    ["lc", "lc"],
    ["", ""],
    [" least-conn", " least-conn"],
  ];
  for (const [value, invalid] of table)
    test(`${JSON.stringify(value)}: ${invalid === undefined ? "valid (or absent)" : "invalid, reported; the Service is still served with the default"}`, () => {
      const s = svc(value === undefined ? {} : { annotations: { "bpfproxy.io/lb-algorithm": value } });
      assert.equal(invalidAlgorithm(s), invalid);
      const m = buildNodeModel({
        services: [s],
        endpointSlices: [],
        nodeName: "node-a",
        config: { nodeName: "node-a", defaultAlgorithm: "maglev" },
      });
      assert.equal(m.frontends.length, 1, "served");
      assert.equal(m.frontends[0]!.algorithm, invalid === undefined ? (value ?? "maglev") : "maglev");
    });
});
