// The dual-stack model, table-driven like test/model.test.ts. The rules are kube-proxy's: it runs one proxier
// per family (ProxierWithDualStack), and each sees only its own family's cluster IPs, externalIPs, load-balancer
// ingress IPs, loadBalancerSourceRanges, nodePortAddresses and EndpointSlices (servicechangetracker.go,
// endpointschangetracker.go); a family the Service has no cluster IP of does not serve it at all.
//
// Unless a case says otherwise: this node is node-a in zone-a with InternalIPs 192.0.2.11 and 2001:db8::11 and
// ExternalIP 203.0.113.11; the Service is default/web, dual-stack (RequireDualStack as the apiserver allocates
// it: clusterIPs 10.96.0.10 and fd00:96::10), port "http" 80 → 8080/TCP; endpoints are ready and on node-b.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel, deniedExternalIPs } from "../src/model/build.js";
import { buildHealthChecks } from "../src/model/health.js";
import { detectLocalCIDRs } from "../src/model/local.js";
import { localNodeAddresses } from "../src/model/addresses.js";
import { validateObject } from "../src/k8s/validate.js";
import type { Frontend, ModelConfig, NodeModel } from "../src/model/types.js";
import type { EndpointSlice, Node, Service } from "../src/k8s/schemas.js";
import { ep, node, slice, summarize, svc, type SvcOpts } from "./model-helpers.js";

const NODE_A = node("node-a", { zone: "zone-a", internal: ["192.0.2.11", "2001:db8::11"], external: ["203.0.113.11"] });
const DUAL = { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10", "fd00:96::10"] };
const dual = (o: SvcOpts = {}) => svc({ ...DUAL, ...o });
const v4 = (eps: Record<string, unknown>[], name = "web-v4") => slice(eps, { name });
const v6 = (eps: Record<string, unknown>[], name = "web-v6") => slice(eps, { name, addressType: "IPv6" });

const CIP4 = "ClusterIP 10.96.0.10:80/TCP internal";
const CIP6 = "ClusterIP fd00:96::10:80/TCP internal";
const NP4 = "NodePort 192.0.2.11:30080/TCP external";
const NP4E = "NodePort 203.0.113.11:30080/TCP external";
const NP6 = "NodePort 2001:db8::11:30080/TCP external";

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

function find(m: NodeModel, pred: (f: Frontend) => boolean): { f: Frontend; i: number } {
  const i = m.frontends.findIndex(pred);
  assert.ok(i >= 0, "frontend not found");
  return { f: m.frontends[i]!, i };
}

const cases: Case[] = [
  // --- spec.clusterIPs as the apiserver allocates them from ipFamilies / ipFamilyPolicy -------------------
  {
    name: "RequireDualStack: one ClusterIP frontend per family, each with its own family's endpoints only",
    services: [dual()],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    frontends: { [CIP4]: ["10.244.2.1:8080"], [CIP6]: ["fd00:10:244::2:1:8080"] },
  },
  {
    name: "PreferDualStack with IPv6 first (ipFamilies [IPv6, IPv4]): the same two frontends, IPv4 sorted first",
    services: [svc({ clusterIP: "fd00:96::10", clusterIPs: ["fd00:96::10", "10.96.0.10"] })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    check: (m) => {
      assert.deepEqual(
        m.frontends.map((f) => f.address),
        ["10.96.0.10", "fd00:96::10"],
      );
      assert.deepEqual(summarize(m), { [CIP4]: ["10.244.2.1:8080"], [CIP6]: ["fd00:10:244::2:1:8080"] });
    },
  },
  {
    name: "PreferDualStack in a single-stack IPv4 cluster (one clusterIP): only IPv4 is served, IPv6 slices unused",
    services: [svc({ clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"] })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    frontends: { [CIP4]: ["10.244.2.1:8080"] },
  },
  {
    name: "SingleStack IPv6 (an IPv6-only cluster): the IPv6 frontend only; IPv4 slices are not its family",
    services: [svc({ clusterIP: "fd00:96::10" })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    frontends: { [CIP6]: ["fd00:10:244::2:1:8080"] },
  },
  {
    name: "IPv6 addresses are shown in canonical form (RFC 5952) whatever form the objects used",
    services: [svc({ clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10", "FD00:0096:0000:0000:0000:0000:0000:0010"] })],
    slices: [v6([ep("FD00:10:244:0:0:0:2:0001"), ep("fd00:10:244::2:1")])],
    frontends: { [CIP4]: [], [CIP6]: ["fd00:10:244::2:1:8080"] },
  },
  {
    name: "IPv6 backends are ordered numerically, as IPv4 ones are",
    services: [dual()],
    slices: [v6([ep("fd00:10:244::10"), ep("fd00:10:244::9"), ep("fd00:10:244::a")])],
    frontends: {
      [CIP4]: [],
      [CIP6]: ["fd00:10:244::9:8080", "fd00:10:244::a:8080", "fd00:10:244::10:8080"],
    },
  },
  {
    name: "FQDN slices feed neither family",
    services: [dual()],
    slices: [slice([{ addresses: ["db.example.com"] }], { name: "web-fqdn", addressType: "FQDN" })],
    frontends: { [CIP4]: [], [CIP6]: [] },
  },
  {
    name: "an IPv6 endpoint in two slices is one backend; the copy on this node is the one kept",
    services: [dual({ internalTrafficPolicy: "Local" })],
    slices: [v6([ep("fd00:10:244::2:1")], "web-v6-a"), v6([ep("fd00:10:244:0::2:1", { node: "node-a" })], "web-v6-b")],
    nodes: [NODE_A],
    check: (m) => {
      const f = find(m, (x) => x.address === "fd00:96::10").f;
      assert.deepEqual(f.backends, [{ address: "fd00:10:244::2:1", port: 8080, state: "active", nodeLocal: true }]);
    },
  },

  // --- external addresses per family ---------------------------------------------------------------------
  {
    name: "externalIPs of either family are served by that family's frontends",
    services: [dual({ externalIPs: ["198.51.100.7", "2001:db8:1::7"] })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    frontends: {
      [CIP4]: ["10.244.2.1:8080"],
      [CIP6]: ["fd00:10:244::2:1:8080"],
      "ExternalIP 198.51.100.7:80/TCP external": ["10.244.2.1:8080"],
      "ExternalIP 2001:db8:1::7:80/TCP external": ["fd00:10:244::2:1:8080"],
    },
  },
  {
    name: "an IPv6 externalIP of a single-stack IPv4 Service is not served (no IPv6 proxier handles it)",
    services: [svc({ externalIPs: ["198.51.100.7", "2001:db8:1::7"] })],
    frontends: { [CIP4]: [], "ExternalIP 198.51.100.7:80/TCP external": [] },
  },
  {
    name: "load-balancer ingress IPs of either family are served; ipMode Proxy ones of neither",
    services: [
      dual({
        type: "LoadBalancer",
        allocateLoadBalancerNodePorts: false,
        ports: [{ name: "http", port: 80, targetPort: 8080 }],
        ingress: [
          { ip: "198.51.100.20" },
          { ip: "2001:db8:2::20" },
          { ip: "198.51.100.21", ipMode: "Proxy" },
          { ip: "2001:db8:2::21", ipMode: "Proxy" },
        ],
      }),
    ],
    slices: [v6([ep("fd00:10:244::2:1")])],
    frontends: {
      [CIP4]: [],
      [CIP6]: ["fd00:10:244::2:1:8080"],
      "LoadBalancer 198.51.100.20:80/TCP external": [],
      "LoadBalancer 2001:db8:2::20:80/TCP external": ["fd00:10:244::2:1:8080"],
    },
  },
  {
    name: "loadBalancerSourceRanges are split by family: each LoadBalancer frontend gets its own family's",
    services: [
      dual({
        type: "LoadBalancer",
        ingress: [{ ip: "198.51.100.20" }, { ip: "2001:db8:2::20" }],
        loadBalancerSourceRanges: ["203.0.113.0/24", "2001:db8:9::/48"],
      }),
    ],
    check: (m) => {
      assert.deepEqual(m.extras[find(m, (f) => f.address === "198.51.100.20").i]!.sourceRanges, ["203.0.113.0/24"]);
      assert.deepEqual(m.extras[find(m, (f) => f.address === "2001:db8:2::20").i]!.sourceRanges, ["2001:db8:9::/48"]);
    },
  },
  {
    name: "a family without loadBalancerSourceRanges of its own is open, as in kube-proxy",
    services: [
      dual({
        type: "LoadBalancer",
        ingress: [{ ip: "198.51.100.20" }, { ip: "2001:db8:2::20" }],
        loadBalancerSourceRanges: ["203.0.113.0/24"],
      }),
    ],
    check: (m) => {
      assert.deepEqual(m.extras[find(m, (f) => f.address === "198.51.100.20").i]!.sourceRanges, ["203.0.113.0/24"]);
      assert.deepEqual(m.extras[find(m, (f) => f.address === "2001:db8:2::20").i]!.sourceRanges, []);
    },
  },
  {
    name: "externalIPsAllowedCIDRs apply per family: an IPv6 externalIP needs an IPv6 CIDR",
    services: [dual({ externalIPs: ["198.51.100.7", "2001:db8:1::7", "2001:db8:3::7"] })],
    config: { externalIPsAllowedCIDRs: ["198.51.100.0/24", "2001:db8:1::/48"] },
    frontends: {
      [CIP4]: [],
      [CIP6]: [],
      "ExternalIP 198.51.100.7:80/TCP external": [],
      "ExternalIP 2001:db8:1::7:80/TCP external": [],
    },
  },

  // --- NodePorts per family ------------------------------------------------------------------------------
  {
    name: "NodePorts are served on every node address of each family, with that family's endpoints",
    services: [dual({ type: "NodePort" })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    nodes: [NODE_A],
    frontends: {
      [CIP4]: ["10.244.2.1:8080"],
      [CIP6]: ["fd00:10:244::2:1:8080"],
      [NP4]: ["10.244.2.1:8080"],
      [NP4E]: ["10.244.2.1:8080"],
      [NP6]: ["fd00:10:244::2:1:8080"],
    },
    check: (m) => {
      assert.deepEqual(m.nodeIPs, ["192.0.2.11", "203.0.113.11"]);
      assert.deepEqual(m.nodePortIPs, ["192.0.2.11", "203.0.113.11"]);
      assert.deepEqual(m.nodeIPs6, ["2001:db8::11"]);
      assert.deepEqual(m.nodePortIPs6, ["2001:db8::11"]);
    },
  },
  {
    name: "a single-stack IPv4 NodePort Service is not served on the node's IPv6 addresses",
    services: [svc({ type: "NodePort" })],
    nodes: [NODE_A],
    frontends: { [CIP4]: [], [NP4]: [], [NP4E]: [] },
  },
  {
    name: "nodePortAddresses with IPv4 CIDRs only: IPv4 filtered, every IPv6 node address still serves",
    services: [dual({ type: "NodePort" })],
    nodes: [NODE_A],
    config: { nodePortAddresses: ["203.0.113.0/24"] },
    frontends: { [CIP4]: [], [CIP6]: [], [NP4E]: [], [NP6]: [] },
  },
  {
    name: "nodePortAddresses with IPv6 CIDRs only: IPv6 filtered, every IPv4 node address still serves",
    services: [dual({ type: "NodePort" })],
    config: { nodeIPs: ["192.0.2.11", "2001:db8::11", "2001:0db8:5::1"], nodePortAddresses: ["2001:db8:5::/64"] },
    frontends: { [CIP4]: [], [CIP6]: [], [NP4]: [], "NodePort 2001:db8:5::1:30080/TCP external": [] },
    check: (m) => assert.deepEqual(m.nodeIPs6, ["2001:db8::11", "2001:db8:5::1"]),
  },
  {
    name: "nodePortAddresses primary selects the primary address of each family",
    services: [dual({ type: "NodePort" })],
    nodes: [node("node-a", { internal: ["192.0.2.11", "2001:db8::11", "192.0.2.99", "2001:db8::99"] })],
    config: { nodePortAddresses: ["primary"] },
    frontends: { [CIP4]: [], [CIP6]: [], [NP4]: [], [NP6]: [] },
  },
  {
    name: "an IPv6 primaryNodeIP (bindAddress) is the IPv6 primary; the IPv4 one comes from the Node",
    services: [dual({ type: "NodePort" })],
    nodes: [node("node-a", { internal: ["192.0.2.11", "2001:db8::11", "2001:db8::99"] })],
    config: { nodePortAddresses: ["primary"], primaryNodeIP: "2001:db8::99" },
    frontends: { [CIP4]: [], [CIP6]: [], [NP4]: [], "NodePort 2001:db8::99:30080/TCP external": [] },
  },

  // --- traffic policies and topology per family ----------------------------------------------------------
  {
    name: "externalTrafficPolicy Local is decided per family: a family without a local endpoint drops",
    services: [dual({ type: "NodePort", externalTrafficPolicy: "Local" })],
    slices: [v4([ep("10.244.1.5", { node: "node-a" }), ep("10.244.2.1")]), v6([ep("fd00:10:244::2:1")])],
    nodes: [NODE_A],
    frontends: {
      [CIP4]: ["10.244.1.5:8080", "10.244.2.1:8080"],
      [CIP6]: ["fd00:10:244::2:1:8080"],
      [NP4]: ["10.244.1.5:8080"],
      "NodePort 192.0.2.11:30080/TCP internal": ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP4E]: ["10.244.1.5:8080"],
      "NodePort 203.0.113.11:30080/TCP internal": ["10.244.1.5:8080", "10.244.2.1:8080"],
      [NP6]: [],
      "NodePort 2001:db8::11:30080/TCP internal": ["fd00:10:244::2:1:8080"],
    },
    check: (m) => {
      const np6 = find(m, (f) => f.address === "2001:db8::11" && f.scope === "external");
      assert.equal(m.extras[np6.i]!.dropWhenEmpty, true);
      assert.equal(m.extras[np6.i]!.externalPolicyLocal, true);
      assert.equal(
        m.extras[find(m, (f) => f.address === "192.0.2.11" && f.scope === "external").i]!.dropWhenEmpty,
        false,
      );
    },
  },
  {
    name: "internalTrafficPolicy Local is decided per family",
    services: [dual({ internalTrafficPolicy: "Local" })],
    slices: [v4([ep("10.244.2.1")]), v6([ep("fd00:10:244::1:5", { node: "node-a" }), ep("fd00:10:244::2:1")])],
    nodes: [NODE_A],
    frontends: { [CIP4]: [], [CIP6]: ["fd00:10:244::1:5:8080"] },
  },
  {
    name: "topology hints are read per family: IPv4 endpoints hinted for this zone, IPv6 ones without hints",
    services: [dual()],
    slices: [
      v4([
        ep("10.244.1.5", { zone: "zone-a", forZones: ["zone-a"] }),
        ep("10.244.2.1", { zone: "zone-b", forZones: ["zone-b"] }),
      ]),
      v6([ep("fd00:10:244::1:5", { zone: "zone-a" }), ep("fd00:10:244::2:1", { zone: "zone-b" })]),
    ],
    nodes: [NODE_A],
    frontends: { [CIP4]: ["10.244.1.5:8080"], [CIP6]: ["fd00:10:244::1:5:8080", "fd00:10:244::2:1:8080"] },
  },
  {
    name: "the serving-terminating fallback is decided per family",
    services: [dual()],
    slices: [
      v4([ep("10.244.2.1"), ep("10.244.2.2", { terminating: true, serving: true })]),
      v6([ep("fd00:10:244::2:2", { terminating: true, serving: true })]),
    ],
    frontends: { [CIP4]: ["10.244.2.1:8080"], [CIP6]: ["fd00:10:244::2:2:8080 (T)"] },
  },
  {
    name: "session affinity and the algorithm apply to both families' frontends",
    services: [
      dual({ sessionAffinity: "ClientIP", timeoutSeconds: 600, annotations: { "bpfproxy.io/lb-algorithm": "maglev" } }),
    ],
    check: (m) => {
      assert.equal(m.frontends.length, 2);
      for (const f of m.frontends) {
        assert.deepEqual(f.sessionAffinity, { type: "ClientIP", timeoutSeconds: 600 });
        assert.equal(f.algorithm, "maglev");
      }
    },
  },
  {
    name: "two Services claiming one IPv6 external address in different spellings: one frontend, the first Service's",
    services: [
      svc({
        name: "b",
        clusterIP: "10.96.0.12",
        clusterIPs: ["10.96.0.12", "fd00:96::12"],
        externalIPs: ["2001:db8:1:0::7"],
      }),
      svc({
        name: "a",
        clusterIP: "10.96.0.11",
        clusterIPs: ["10.96.0.11", "fd00:96::11"],
        externalIPs: ["2001:DB8:1::7"],
      }),
    ],
    check: (m) => {
      const ext = m.frontends.filter((f) => f.type === "ExternalIP");
      assert.deepEqual(
        ext.map((f) => `${f.service} ${f.address}`),
        ["default/a 2001:db8:1::7"],
      );
    },
  },
];

describe("buildNodeModel, dual-stack", () => {
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
      assert.equal(m.extras.length, m.frontends.length);
      if (c.frontends) assert.deepEqual(summarize(m), c.frontends);
      c.check?.(m);
    });
  }

  test("an IPv4-only cluster's model carries no IPv6 node addresses", () => {
    const m = buildNodeModel({
      services: [svc({ type: "NodePort" })],
      endpointSlices: [],
      nodes: [node("node-a", { internal: ["192.0.2.11"] })],
      nodeName: "node-a",
    });
    assert.deepEqual([m.nodeIPs, m.nodePortIPs, m.nodeIPs6, m.nodePortIPs6], [["192.0.2.11"], ["192.0.2.11"], [], []]);
  });

  test("deniedExternalIPs lists refused externalIPs of both families, IPv6 in canonical form", () => {
    const services = [dual({ externalIPs: ["198.51.100.7", "2001:DB8:3::7", "2001:db8:1::7"] })];
    assert.deepEqual(deniedExternalIPs(services, ["198.51.100.0/24", "2001:db8:1::/48"]), [
      "default/web 2001:db8:3::7",
    ]);
  });
});

function lbLocal(clusterIPs: string[]): Service {
  return svc({
    type: "LoadBalancer",
    clusterIP: clusterIPs[0],
    clusterIPs,
    externalTrafficPolicy: "Local",
    healthCheckNodePort: 32000,
  });
}

describe("buildHealthChecks, dual-stack", () => {
  const local = (a: string) => ep(a, { node: "node-a" });
  const cases: { name: string; service: Service; slices: EndpointSlice[]; localEndpoints: number }[] = [
    {
      name: "pods with an address of each family count once (the larger family count)",
      service: lbLocal(["10.96.0.10", "fd00:96::10"]),
      slices: [
        v4([local("10.244.1.5"), local("10.244.1.6")]),
        v6([local("fd00:10:244::1:5"), local("fd00:10:244::1:6")]),
      ],
      localEndpoints: 2,
    },
    {
      name: "a family with local endpoints is enough (the other family's slice lags behind)",
      service: lbLocal(["10.96.0.10", "fd00:96::10"]),
      slices: [v4([ep("10.244.2.1")]), v6([local("fd00:10:244::1:5")])],
      localEndpoints: 1,
    },
    {
      name: "an IPv6-only Service counts its IPv6 endpoints",
      service: lbLocal(["fd00:96::10"]),
      slices: [v6([local("fd00:10:244::1:5"), local("FD00:10:244::1:5"), ep("fd00:10:244::2:1")])],
      localEndpoints: 1,
    },
    {
      name: "a single-stack IPv4 Service does not count IPv6 endpoints",
      service: lbLocal(["10.96.0.10"]),
      slices: [v4([ep("10.244.2.1")]), v6([local("fd00:10:244::1:5")])],
      localEndpoints: 0,
    },
  ];
  for (const c of cases)
    test(c.name, () => {
      const checks = buildHealthChecks({ services: [c.service], endpointSlices: c.slices, nodeName: "node-a" });
      assert.deepEqual(checks, [{ service: "default/web", nodePort: 32000, localEndpoints: c.localEndpoints }]);
    });
});

describe("detect-local per family", () => {
  const withPodCIDRs = (podCIDRs: string[]) => {
    const r = validateObject({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, spec: { podCIDRs } });
    assert.ok(r.ok && r.kind === "Node", r.ok ? "" : r.reason);
    return r.object;
  };
  const cases: { name: string; mode: string; clusterCIDRs: string[]; podCIDRs?: string[]; want: object }[] = [
    {
      name: "ClusterCIDR: each family's --cluster-cidr",
      mode: "ClusterCIDR",
      clusterCIDRs: ["10.244.0.0/16", " fd00:10:244::/56"],
      want: { ipv4: ["10.244.0.0/16"], ipv6: ["fd00:10:244::/56"] },
    },
    {
      name: "ClusterCIDR in an IPv6-only cluster: no IPv4 detect-local",
      mode: "ClusterCIDR",
      clusterCIDRs: ["fd00:10:244::/56"],
      want: { ipv4: [], ipv6: ["fd00:10:244::/56"] },
    },
    {
      name: "NodeCIDR: the Node's podCIDRs of both families",
      mode: "NodeCIDR",
      clusterCIDRs: ["10.244.0.0/16"],
      podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"],
      want: { ipv4: ["10.244.1.0/24"], ipv6: ["fd00:10:244:1::/64"] },
    },
    {
      name: "the interface modes need no CIDRs",
      mode: "InterfaceNamePrefix",
      clusterCIDRs: ["10.244.0.0/16"],
      want: { ipv4: [], ipv6: [] },
    },
  ];
  for (const c of cases)
    test(c.name, () => {
      const n = c.podCIDRs ? withPodCIDRs(c.podCIDRs) : undefined;
      assert.deepEqual(detectLocalCIDRs(c.mode, c.clusterCIDRs, n), c.want);
    });
});

describe("node addresses of both families", () => {
  const iface = (address: string, family: "IPv4" | "IPv6", internal = false) => ({
    address,
    family,
    internal,
    netmask: "",
    mac: "00:00:00:00:00:00",
    cidr: null,
    ...(family === "IPv6" ? { scopeid: 0 } : {}),
  });
  test("IPv6 addresses count except loopback, link-local and kube-ipvs0's; canonical, IPv4 first", () => {
    const got = localNodeAddresses(undefined, {
      lo: [iface("127.0.0.1", "IPv4", true), iface("::1", "IPv6", true)],
      eth0: [
        iface("192.0.2.11", "IPv4"),
        iface("2001:DB8:0::11", "IPv6"),
        iface("fe80::1", "IPv6"),
        iface("fd00:1::10", "IPv6"),
        iface("fd00:1::9", "IPv6"),
      ],
      "kube-ipvs0": [iface("10.96.0.10", "IPv4"), iface("fd00:96::10", "IPv6")],
    } as never);
    assert.deepEqual(got, ["192.0.2.11", "2001:db8::11", "fd00:1::9", "fd00:1::10"]);
  });
});
