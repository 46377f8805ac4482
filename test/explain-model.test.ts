// The one endpoint rule (endpointExclusion) that the model's categorizeEndpoints filters with and `bpfproxy
// explain` prints: table-driven, from kube-proxy's CategorizeEndpoints semantics (pkg/proxy/topology.go), and
// the frontend match of explainModel with each "why none" reason.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  buildNodeModel,
  categorizeEndpoints,
  endpointExclusion,
  resolveNodeContext,
  setRules,
  type ModelEndpoint,
} from "../src/model/index.js";
import { explainModel, type ExplainState } from "../src/explain/model.js";
import { causesOf, parseFrom, parseTarget } from "../src/explain/index.js";
import type { EndpointSlice, Service } from "../src/k8s/schemas.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const NODE = "node-a";
const ZONE = "z1";

function e(address: string, o: Partial<ModelEndpoint> = {}): ModelEndpoint {
  return {
    address,
    port: 8080,
    nodeName: NODE,
    zone: ZONE,
    ready: true,
    serving: true,
    terminating: false,
    zoneHints: [],
    nodeHints: [],
    isLocal: (o.nodeName ?? NODE) === NODE,
    ...o,
  };
}
const terminating = { ready: false, serving: true, terminating: true };
const notReady = { ready: false, serving: false, terminating: false };
const remote = { nodeName: "node-b", isLocal: false };

describe("endpointExclusion: why an endpoint is in or out of a set", () => {
  const cases: Array<{
    name: string;
    set: "cluster" | "local";
    eps: ModelEndpoint[];
    want: Array<string | null>;
  }> = [
    { name: "ready endpoints are in", set: "cluster", eps: [e("10.0.0.1"), e("10.0.0.2", remote)], want: [null, null] },
    {
      name: "not ready is out",
      set: "cluster",
      eps: [e("10.0.0.1"), e("10.0.0.2", notReady)],
      want: [null, "not-ready"],
    },
    {
      name: "terminating with a ready peer is out",
      set: "cluster",
      eps: [e("10.0.0.1"), e("10.0.0.2", terminating)],
      want: [null, "terminating-with-ready-peers"],
    },
    {
      name: "no ready endpoint: serving-terminating ones are used, not-serving ones are not",
      set: "cluster",
      eps: [e("10.0.0.1", terminating), e("10.0.0.2", notReady)],
      want: [null, "not-ready"],
    },
    {
      name: "zone hints: another zone is out",
      set: "cluster",
      eps: [e("10.0.0.1", { zoneHints: [ZONE] }), e("10.0.0.2", { zoneHints: ["z2"], zone: "z2" })],
      want: [null, "other-zone"],
    },
    {
      name: "node hints: another node is out",
      set: "cluster",
      eps: [e("10.0.0.1", { nodeHints: [NODE] }), e("10.0.0.2", { ...remote, nodeHints: ["node-b"] })],
      want: [null, "other-node"],
    },
    {
      name: "Local: a remote endpoint is out, a local one in",
      set: "local",
      eps: [e("10.0.0.1"), e("10.0.0.2", remote)],
      want: [null, "not-local"],
    },
    {
      name: "Local: topology hints do not apply",
      set: "local",
      eps: [e("10.0.0.1", { zoneHints: ["z2"] })],
      want: [null],
    },
    {
      name: "Local fallback: a local serving-terminating endpoint when no local one is ready",
      set: "local",
      eps: [e("10.0.0.1", terminating), e("10.0.0.2", remote)],
      want: [null, "not-local"],
    },
    {
      name: "IPv6 is another family",
      set: "cluster",
      eps: [e("10.0.0.1"), e("fd00::1")],
      want: [null, "other-family"],
    },
  ];
  for (const c of cases)
    test(c.name, () => {
      const rules = setRules(c.eps, c.set, NODE, ZONE);
      assert.deepEqual(
        c.eps.map((x) => endpointExclusion(x, rules)),
        c.want,
      );
      // categorizeEndpoints selects exactly the endpoints the rule lets in (IPv6 never reaches it).
      const v4 = c.eps.filter((x) => !x.address.includes(":"));
      const cat = categorizeEndpoints(
        v4,
        { internalPolicyLocal: c.set === "local", externalPolicyLocal: false, externallyAccessible: false },
        NODE,
        ZONE,
      );
      const got = (c.set === "local" ? cat.local : cat.cluster)!.map((x) => x.address);
      assert.deepEqual(
        got,
        c.eps.filter((_, i) => c.want[i] === null && !c.eps[i]!.address.includes(":")).map((x) => x.address),
      );
    });
});

describe("explainModel: the frontend, or why none", () => {
  const web = svc({ name: "web", clusterIP: "10.96.0.10" });
  const np = svc({
    name: "np",
    clusterIP: "10.96.0.11",
    type: "NodePort",
    externalTrafficPolicy: "Local",
    ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30080 }],
  });
  const services = [web, np] as Service[];
  const slices = [
    slice([ep("10.244.1.10", { node: NODE }), ep("10.244.1.11", { node: NODE, ready: false, serving: false })]),
    slice([ep("10.244.2.10", { node: "node-b" })], { service: "np" }),
  ] as EndpointSlice[];
  const nodes = [node(NODE, { internal: ["192.0.2.11"] })];
  const config = { nodeIPs: ["192.0.2.11", "192.0.2.12"], nodePortAddresses: ["192.0.2.11/32"] };
  const model = buildNodeModel({ services, endpointSlices: slices, nodes, nodeName: NODE, config });
  const st: ExplainState = {
    model,
    ctx: resolveNodeContext({ nodes, nodeName: NODE, config }),
    service: (k) => services.find((s) => `${s.metadata.namespace}/${s.metadata.name}` === k),
    slices: (k) =>
      slices.filter((s) => `${s.metadata.namespace}/${s.metadata.labels["kubernetes.io/service-name"]}` === k),
    clusterCIDRs: ["10.244.0.0/16"],
    notProgrammed: [],
    deniedExternalIPs: ["default/x 203.0.113.5"],
  };
  const q = (dst: string, port: number, protocol: "TCP" | "UDP" = "TCP", src = "10.244.1.20") =>
    explainModel(st, { dst, port, protocol, src, fromPod: false });

  test("a ClusterIP: endpoints with reasons as the sync chose them", () => {
    const r = q("10.96.0.10", 80);
    assert.equal(r.frontend?.service, "default/web");
    assert.equal(r.scope, "internal");
    assert.equal(r.endpointSet, "cluster");
    assert.deepEqual(
      r.endpoints.map((x) => [x.address, x.reason]),
      [
        ["10.244.1.10", null],
        ["10.244.1.11", "not-ready"],
      ],
    );
    assert.equal(r.matchesLastSync, true);
  });

  test("a NodePort under Local policy: external clients get the Local set, pods the Cluster set", () => {
    const ext = q("192.0.2.11", 30080, "TCP", "198.51.100.10");
    assert.equal(ext.scope, "external");
    assert.equal(ext.endpointSet, "local");
    assert.deepEqual(
      ext.endpoints.map((x) => x.reason),
      ["not-local"],
    );
    assert.deepEqual(causesOf(ext, null), ["no-local-endpoints"]);
    const pod = q("192.0.2.11", 30080);
    assert.equal(pod.endpointSet, "cluster");
    assert.deepEqual(
      pod.endpoints.map((x) => x.reason),
      [null],
    );
  });

  const none: Array<[string, string, number, "TCP" | "UDP", string]> = [
    ["wrong protocol", "10.96.0.10", 80, "UDP", "wrong-protocol"],
    ["a node address outside nodePortAddresses", "192.0.2.12", 30080, "TCP", "not-a-nodeport-address"],
    ["an externalIP the allow-list refused", "203.0.113.5", 80, "TCP", "external-ip-not-allowed"],
    ["a known address, another port", "10.96.0.10", 81, "TCP", "no-such-port"],
    ["an unknown address", "10.96.9.9", 80, "TCP", "no-such-address"],
  ];
  for (const [name, dst, port, proto, reason] of none)
    test(`no frontend: ${name}`, () => {
      const r = q(dst, port, proto);
      assert.equal(r.frontend, null);
      assert.equal(r.noMatch?.reason, reason);
      assert.deepEqual(causesOf(r, null), [reason]);
    });

  test("targets and sources parse as documented", () => {
    assert.deepEqual(parseTarget("10.96.0.10:53/udp"), { dst: "10.96.0.10", port: 53, protocol: "UDP" });
    assert.deepEqual(parseTarget("10.96.0.10:80"), { dst: "10.96.0.10", port: 80, protocol: "TCP" });
    assert.throws(() => parseTarget("10.96.0.10"), /expected/);
    assert.throws(() => parseTarget("10.96.0.10:0"), /1-65535/);
    assert.deepEqual(parseFrom("10.244.1.5:1234"), { src: "10.244.1.5", sport: 1234 });
    assert.deepEqual(parseFrom(undefined), { src: "203.0.113.1", sport: 40000 });
  });
});

describe("explainModel over IPv6: a dual-stack Service's IPv6 frontend", () => {
  const dual = svc({ name: "dual", clusterIP: "10.96.0.20", clusterIPs: ["10.96.0.20", "fd00:96::20"] });
  const services = [dual] as Service[];
  const slices = [
    slice([ep("10.244.1.10", { node: NODE })], { service: "dual", name: "dual-v4" }),
    slice(
      [ep("fd00:10:244:1::10", { node: NODE }), ep("fd00:10:244:1::11", { node: NODE, ready: false, serving: false })],
      {
        service: "dual",
        name: "dual-v6",
        addressType: "IPv6",
      },
    ),
  ] as EndpointSlice[];
  const nodes = [node(NODE, { internal: ["192.0.2.11", "2001:db8::a"] })];
  const config = { nodeIPs: ["192.0.2.11", "2001:db8::a"] };
  const model = buildNodeModel({ services, endpointSlices: slices, nodes, nodeName: NODE, config });
  const st: ExplainState = {
    model,
    ctx: resolveNodeContext({ nodes, nodeName: NODE, config }),
    service: (k) => services.find((s) => `${s.metadata.namespace}/${s.metadata.name}` === k),
    slices: (k) =>
      slices.filter((s) => `${s.metadata.namespace}/${s.metadata.labels["kubernetes.io/service-name"]}` === k),
    clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
    notProgrammed: [],
    deniedExternalIPs: [],
  };
  const q = (dst: string, port: number, src: string, protocol: "TCP" | "UDP" = "TCP") =>
    explainModel(st, { dst, port, protocol, src, fromPod: false });

  test("the IPv6 ClusterIP's endpoints are the IPv6 slice's; the IPv4 one is listed as another family", () => {
    const r = q("fd00:96::20", 80, "fd00:10:244:1::20");
    assert.equal(r.frontend?.service, "default/dual");
    assert.equal(r.frontend?.address, "fd00:96::20");
    assert.equal(r.scope, "internal", "a source in the IPv6 cluster CIDR is in-cluster");
    assert.deepEqual(
      r.endpoints.map((x) => [x.address, x.reason]),
      [
        ["fd00:10:244:1::10", null],
        ["fd00:10:244:1::11", "not-ready"],
        ["10.244.1.10", "other-family"],
      ],
    );
    assert.equal(r.matchesLastSync, true);
    assert.deepEqual(causesOf(r, null), []);
  });

  test("the IPv4 ClusterIP lists the IPv6 endpoints as another family", () => {
    const r = q("10.96.0.20", 80, "10.244.1.20");
    assert.deepEqual(
      r.endpoints.map((x) => [x.address, x.reason]),
      [
        ["10.244.1.10", null],
        ["fd00:10:244:1::10", "other-family"],
        ["fd00:10:244:1::11", "other-family"],
      ],
    );
  });

  test("a source outside both cluster CIDRs is external; no frontend at an unknown IPv6 address or port", () => {
    assert.equal(q("fd00:96::20", 80, "2001:db8:ffff::1").scope, "external");
    assert.equal(q("fd00:96::21", 80, "2001:db8:ffff::1").noMatch?.reason, "no-such-address");
    assert.equal(q("fd00:96::20", 81, "2001:db8:ffff::1").noMatch?.reason, "no-such-port");
  });

  test("IPv6 targets and sources parse in brackets, canonical (RFC 5952); families must agree", () => {
    assert.deepEqual(parseTarget("[fd00:96:0::20]:53/udp"), { dst: "fd00:96::20", port: 53, protocol: "UDP" });
    assert.deepEqual(parseTarget("[FD00:96::20]:80"), { dst: "fd00:96::20", port: 80, protocol: "TCP" });
    assert.throws(() => parseTarget("fd00:96::20:80"), /expected/);
    assert.throws(() => parseTarget("[fd00:96::20]"), /expected/);
    assert.throws(() => parseTarget("[10.96.0.1]:80"), /expected/);
    assert.deepEqual(parseFrom("[fd00:10:244:1::5]:1234"), { src: "fd00:10:244:1::5", sport: 1234 });
    assert.deepEqual(parseFrom("fd00:10:244:1::5"), { src: "fd00:10:244:1::5", sport: 40000 });
    assert.deepEqual(parseFrom(undefined, 6), { src: "2001:db8:ffff::1", sport: 40000 });
  });
});
