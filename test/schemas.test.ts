// Validation: every malformed object is named, rejected with a reason code, skipped by the source, counted in
// bpfproxy_invalid_objects_total{kind,reason}, and the valid objects around it keep flowing.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { validateObject, type InvalidObject } from "../src/k8s/validate.js";
import type { InvalidCode } from "../src/k8s/schemas.js";
import { invalidObjectsTotal } from "../src/metrics.js";
import { FolderState } from "../src/sources/folder.js";
import { svcMeta } from "../src/dataplane/bpf/abi.js";

type Raw = Record<string, unknown>;

function service(spec: Raw = {}, meta: Raw = {}, extra: Raw = {}): Raw {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "bad", namespace: "default", ...meta },
    spec: { clusterIP: "10.96.0.99", ports: [{ name: "http", port: 80, targetPort: 8080 }], ...spec },
    ...extra,
  };
}

function endpointSlice(o: Raw = {}): Raw {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "bad-1", namespace: "default", labels: { "kubernetes.io/service-name": "bad" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: [{ addresses: ["10.244.1.9"] }],
    ...o,
  };
}

const GOOD_SERVICE: Raw = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "good", namespace: "default" },
  spec: { clusterIP: "10.96.0.20", ports: [{ port: 80 }] },
};
const GOOD_SLICE: Raw = {
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name: "good-1", namespace: "default", labels: { "kubernetes.io/service-name": "good" } },
  addressType: "IPv4",
  ports: [{ port: 80 }],
  endpoints: [{ addresses: ["10.244.1.20"] }],
};
const GOOD_NODE: Raw = {
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: "node-good" },
  status: { addresses: [{ type: "InternalIP", address: "192.0.2.20" }] },
};

interface BadCase {
  name: string;
  obj: unknown;
  kind: string;
  code: InvalidCode;
  /** The folder source fills in a missing namespace, so such cases are checked through validateObject only. */
  directOnly?: boolean;
}

const bad: BadCase[] = [
  {
    name: "Service without metadata.name",
    obj: service({}, { name: undefined }),
    kind: "Service",
    code: "missing_field",
  },
  {
    name: "Service without metadata.namespace",
    obj: service({}, { namespace: undefined }),
    kind: "Service",
    code: "missing_field",
    directOnly: true,
  },
  { name: "Service with an upper-case name", obj: service({}, { name: "Web" }), kind: "Service", code: "bad_name" },
  // The data plane keeps "namespace/name" in 127 bytes (bpx_svc_meta.service); the API server's own limits fit it.
  {
    name: "Service with a 64-character name (a DNS subdomain, but over the API server's 63)",
    obj: service({}, { name: "a".repeat(64) }),
    kind: "Service",
    code: "bad_name",
  },
  {
    name: "Service with a 253-character name",
    obj: service({}, { name: `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}` }),
    kind: "Service",
    code: "bad_name",
  },
  {
    name: "Service whose name starts with a digit (not a DNS-1035 label)",
    obj: service({}, { name: "1web" }),
    kind: "Service",
    code: "bad_name",
  },
  {
    name: "Service without spec",
    obj: { apiVersion: "v1", kind: "Service", metadata: { name: "bad", namespace: "default" } },
    kind: "Service",
    code: "missing_field",
  },
  { name: "Service without ports", obj: service({ ports: [] }), kind: "Service", code: "missing_field" },
  {
    name: "Service port without a port number",
    obj: service({ ports: [{ name: "http" }] }),
    kind: "Service",
    code: "missing_field",
  },
  {
    name: "Service with an out-of-range octet in clusterIP",
    obj: service({ clusterIP: "10.96.0.300" }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service with leading zeros in clusterIP",
    obj: service({ clusterIP: "10.096.0.1" }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service whose clusterIPs[0] differs from clusterIP",
    obj: service({ clusterIPs: ["10.96.0.98"] }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service with a hostname in externalIPs",
    obj: service({ externalIPs: ["lb.example.com"] }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service with a bad loadBalancerIP",
    obj: service({ type: "LoadBalancer", loadBalancerIP: "1.2.3" }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service with a bad ingress IP",
    obj: service({ type: "LoadBalancer" }, {}, { status: { loadBalancer: { ingress: [{ ip: "1.2.3.4.5" }] } } }),
    kind: "Service",
    code: "bad_ip",
  },
  {
    name: "Service with a /33 source range",
    obj: service({ type: "LoadBalancer", loadBalancerSourceRanges: ["10.0.0.0/33"] }),
    kind: "Service",
    code: "bad_cidr",
  },
  {
    name: "Service with a source range that is not a CIDR",
    obj: service({ type: "LoadBalancer", loadBalancerSourceRanges: ["10.0.0.0"] }),
    kind: "Service",
    code: "bad_cidr",
  },
  { name: "Service port 0", obj: service({ ports: [{ port: 0 }] }), kind: "Service", code: "port_out_of_range" },
  {
    name: "Service port 65536",
    obj: service({ ports: [{ port: 65536 }] }),
    kind: "Service",
    code: "port_out_of_range",
  },
  {
    name: "Service with a fractional port",
    obj: service({ ports: [{ port: 80.5 }] }),
    kind: "Service",
    code: "port_out_of_range",
  },
  {
    name: "Service with nodePort 70000",
    obj: service({ type: "NodePort", ports: [{ port: 80, nodePort: 70000 }] }),
    kind: "Service",
    code: "port_out_of_range",
  },
  {
    name: "Service with targetPort 0",
    obj: service({ ports: [{ port: 80, targetPort: 0 }] }),
    kind: "Service",
    code: "port_out_of_range",
  },
  {
    name: "Service with a numeric string targetPort",
    obj: service({ ports: [{ port: 80, targetPort: "8080" }] }),
    kind: "Service",
    code: "bad_port_name",
  },
  {
    name: "Service with an invalid port name",
    obj: service({ ports: [{ name: "HTTP_port", port: 80 }] }),
    kind: "Service",
    code: "bad_port_name",
  },
  {
    name: "Service with protocol ICMP",
    obj: service({ ports: [{ port: 80, protocol: "ICMP" }] }),
    kind: "Service",
    code: "bad_protocol",
  },
  {
    name: "Service with lower-case protocol tcp",
    obj: service({ ports: [{ port: 80, protocol: "tcp" }] }),
    kind: "Service",
    code: "bad_protocol",
  },
  {
    name: "Service with the same port and protocol twice",
    obj: service({
      ports: [
        { name: "a", port: 80 },
        { name: "b", port: 80, protocol: "TCP" },
      ],
    }),
    kind: "Service",
    code: "duplicate_port",
  },
  {
    name: "Service with the same port name twice",
    obj: service({
      ports: [
        { name: "a", port: 80 },
        { name: "a", port: 81 },
      ],
    }),
    kind: "Service",
    code: "duplicate_port",
  },
  {
    name: "Service with two ports, one unnamed",
    obj: service({ ports: [{ name: "a", port: 80 }, { port: 81 }] }),
    kind: "Service",
    code: "missing_field",
  },
  { name: "Service with an unknown type", obj: service({ type: "Ingress" }), kind: "Service", code: "bad_value" },
  {
    name: "Service with an unknown externalTrafficPolicy",
    obj: service({ type: "NodePort", externalTrafficPolicy: "Sometimes" }),
    kind: "Service",
    code: "bad_value",
  },
  {
    name: "Service with an affinity timeout of 0",
    obj: service({ sessionAffinity: "ClientIP", sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } }),
    kind: "Service",
    code: "bad_value",
  },
  {
    name: "Service with an affinity timeout over a day",
    obj: service({ sessionAffinity: "ClientIP", sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } } }),
    kind: "Service",
    code: "bad_value",
  },
  {
    name: "ExternalName Service without externalName",
    obj: service({ type: "ExternalName", clusterIP: undefined }),
    kind: "Service",
    code: "missing_field",
  },
  {
    name: "EndpointSlice without addressType",
    obj: endpointSlice({ addressType: undefined }),
    kind: "EndpointSlice",
    code: "missing_field",
  },
  {
    name: "EndpointSlice with an IPv6 address in an IPv4 slice",
    obj: endpointSlice({ endpoints: [{ addresses: ["fd00::1"] }] }),
    kind: "EndpointSlice",
    code: "bad_ip",
  },
  {
    name: "EndpointSlice with a truncated address",
    obj: endpointSlice({ endpoints: [{ addresses: ["10.244.1"] }] }),
    kind: "EndpointSlice",
    code: "bad_ip",
  },
  {
    name: "EndpointSlice endpoint without addresses",
    obj: endpointSlice({ endpoints: [{ addresses: [] }] }),
    kind: "EndpointSlice",
    code: "missing_field",
  },
  {
    name: "EndpointSlice port 70000",
    obj: endpointSlice({ ports: [{ name: "http", port: 70000 }] }),
    kind: "EndpointSlice",
    code: "port_out_of_range",
  },
  {
    name: "EndpointSlice port with protocol HTTP",
    obj: endpointSlice({ ports: [{ name: "http", port: 8080, protocol: "HTTP" }] }),
    kind: "EndpointSlice",
    code: "bad_protocol",
  },
  {
    name: "EndpointSlice of the removed v1beta1 API",
    obj: endpointSlice({ apiVersion: "discovery.k8s.io/v1beta1" }),
    kind: "EndpointSlice",
    code: "unsupported_version",
  },
  {
    name: "Endpoints with a bad address",
    obj: {
      apiVersion: "v1",
      kind: "Endpoints",
      metadata: { name: "bad", namespace: "default" },
      subsets: [{ addresses: [{ ip: "10.0.0.999" }], ports: [{ port: 80 }] }],
    },
    kind: "Endpoints",
    code: "bad_ip",
  },
  {
    name: "Node with a bad InternalIP",
    obj: {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "n1" },
      status: { addresses: [{ type: "InternalIP", address: "x" }] },
    },
    kind: "Node",
    code: "bad_ip",
  },
  {
    name: "Node with a podCIDR that is not a CIDR",
    obj: { apiVersion: "v1", kind: "Node", metadata: { name: "n1" }, spec: { podCIDRs: ["10.244.1.0/33"] } },
    kind: "Node",
    code: "bad_cidr",
  },
  {
    name: "Node with a legacy spec.podCIDR that is not a CIDR",
    obj: { apiVersion: "v1", kind: "Node", metadata: { name: "n1" }, spec: { podCIDR: "10.244.1.0" } },
    kind: "Node",
    code: "bad_cidr",
  },
  {
    name: "Node with two IPv4 podCIDRs (the API server allows one per family)",
    obj: {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "n1" },
      spec: { podCIDRs: ["10.244.1.0/24", "10.244.2.0/24"] },
    },
    kind: "Node",
    code: "bad_cidr",
  },
  {
    name: "Node without a name",
    obj: { apiVersion: "v1", kind: "Node", metadata: {} },
    kind: "Node",
    code: "missing_field",
  },
];

async function counter(kind: string, reason: string): Promise<number> {
  const m = await invalidObjectsTotal.get();
  return m.values.find((v) => v.labels.kind === kind && v.labels.reason === reason)?.value ?? 0;
}

describe("validateObject rejects malformed objects", () => {
  for (const c of bad) {
    test(c.name, async () => {
      const r = validateObject(c.obj);
      assert.equal(r.ok, false, "must be rejected");
      const inv: InvalidObject = r;
      assert.equal(inv.kind, c.kind);
      assert.equal(inv.code, c.code, `reason was: ${inv.reason}`);
      assert.equal(inv.ignored, false);
      assert.ok(inv.reason.length > 0);
      if (c.directOnly) return;

      // Through the folder source: skipped, counted, and the good objects around it still flow.
      const before = await counter(c.kind, c.code);
      const state = new FolderState("/virtual");
      const text = [GOOD_SERVICE, c.obj, GOOD_SLICE, GOOD_NODE].map((d) => stringify(d)).join("---\n");
      state.apply(new Map([["objects.yaml", text]]));
      const snap = state.snapshot();
      assert.deepEqual(
        snap.services.map((s) => s.metadata.name),
        ["good"],
      );
      assert.deepEqual(
        snap.endpointSlices.map((s) => s.metadata.name),
        ["good-1"],
      );
      assert.deepEqual(
        snap.nodes.map((n) => n.metadata.name),
        ["node-good"],
      );
      assert.equal(await counter(c.kind, c.code), before + 1);
    });
  }

  test("the table names at least 30 malformed cases", () => {
    assert.ok(bad.length >= 30);
  });
});

describe("validateObject accepts and normalises", () => {
  test("a minimal Service gets the API defaults", () => {
    const r = validateObject({
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: { clusterIP: "10.96.0.10", ports: [{ port: 80 }] },
    });
    assert.ok(r.ok && r.kind === "Service");
    const s = r.object.spec;
    assert.equal(s.type, "ClusterIP");
    assert.deepEqual(s.ports, [{ name: "", protocol: "TCP", port: 80, targetPort: 80, nodePort: 0 }]);
    assert.equal(s.sessionAffinity, "None");
    assert.equal(s.sessionAffinityTimeoutSeconds, 10800);
    assert.equal(s.externalTrafficPolicy, "Cluster");
    assert.equal(s.internalTrafficPolicy, "Cluster");
    assert.deepEqual(s.clusterIPs, ["10.96.0.10"]);
    assert.equal(r.key, "default/web");
  });

  test("a headless Service may have no ports", () => {
    const r = validateObject({
      kind: "Service",
      metadata: { name: "db", namespace: "default" },
      spec: { clusterIP: "None" },
    });
    assert.ok(r.ok);
  });

  test("a dual-stack Service with an IPv6 cluster IP is accepted", () => {
    const r = validateObject({
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: {
        clusterIP: "fd00::10",
        clusterIPs: ["fd00::10", "10.96.0.10"],
        externalIPs: ["2001:db8::1"],
        ports: [{ port: 80 }],
      },
    });
    assert.ok(r.ok);
  });

  test("a named targetPort and source ranges padded with spaces are accepted", () => {
    const r = validateObject({
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: {
        type: "LoadBalancer",
        clusterIP: "10.96.0.10",
        loadBalancerSourceRanges: [" 10.0.0.0/8 "],
        ports: [{ port: 80, targetPort: "http-alt" }],
      },
    });
    assert.ok(r.ok && r.kind === "Service");
    assert.equal(r.object.spec.ports[0]!.targetPort, "http-alt");
    assert.deepEqual(r.object.spec.loadBalancerSourceRanges, ["10.0.0.0/8"]);
  });

  test("an EndpointSlice with null endpoints (as the apiserver sends it) is an empty slice", () => {
    const r = validateObject({ ...GOOD_SLICE, endpoints: null });
    assert.ok(r.ok && r.kind === "EndpointSlice");
    assert.deepEqual(r.object.endpoints, []);
  });

  test("EndpointSlice conditions default to ready and serving, port names to empty and protocols to TCP", () => {
    const r = validateObject(GOOD_SLICE);
    assert.ok(r.ok && r.kind === "EndpointSlice");
    assert.deepEqual(r.object.endpoints[0]!.conditions, { ready: true, serving: true, terminating: false });
    assert.deepEqual(r.object.ports, [{ name: "", protocol: "TCP", port: 80 }]);
  });

  test("IPv6 and FQDN slices are valid (the model skips them)", () => {
    assert.ok(validateObject({ ...GOOD_SLICE, addressType: "IPv6", endpoints: [{ addresses: ["fd00::1"] }] }).ok);
    assert.ok(
      validateObject({ ...GOOD_SLICE, addressType: "FQDN", endpoints: [{ addresses: ["db.example.com"] }] }).ok,
    );
  });

  test("items of a list response carry no kind: the hint supplies it", () => {
    const { kind: _k, apiVersion: _a, ...item } = GOOD_SERVICE;
    const r = validateObject(item, "Service");
    assert.ok(r.ok && r.kind === "Service");
  });

  test("unknown kinds are ignored, not counted as invalid", async () => {
    const before = await counter("ConfigMap", "bad_value");
    const r = validateObject({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x", namespace: "default" } });
    assert.ok(!r.ok && r.ignored);
    const state = new FolderState("/virtual");
    state.apply(new Map([["cm.yaml", stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } })]]));
    assert.equal(await counter("ConfigMap", "bad_value"), before);
  });

  test("things that are not objects are rejected without throwing", () => {
    for (const v of [null, 42, "Service", [1, 2]]) {
      const r = validateObject(v);
      assert.ok(!r.ok && r.code === "not_an_object");
    }
  });
});

test("the longest Service name the schema accepts fits the data plane's name field (bpx_svc_meta.service)", () => {
  const ns = "n".repeat(63);
  const name = "s".repeat(63);
  const r = validateObject(service({}, { name, namespace: ns }));
  assert.equal(r.ok, true, r.ok ? "" : r.reason);
  const fe = `${ns}/${name}`;
  const bin = svcMeta.decode(
    svcMeta.encode({ service: fe, portName: "p".repeat(63), type: 0, algorithm: 0, affinity: 0 }),
  );
  assert.equal(bin.service, fe);
  assert.throws(
    () => svcMeta.encode({ service: `${fe}x`, portName: "", type: 0, algorithm: 0, affinity: 0 }),
    RangeError,
  );
  const dual = validateObject({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "n1" },
    spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] },
  });
  assert.equal(dual.ok, true, "one podCIDR per family is fine");
});
