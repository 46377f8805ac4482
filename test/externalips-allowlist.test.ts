// CVE-2020-8554: whoever may create a Service may claim any address as spec.externalIPs and so intercept
// traffic to it from the cluster. bpfproxy.externalIPsAllowedCIDRs restricts which externalIPs are served:
// unset serves all (kube-proxy's behaviour), [] serves none. Enforced by the model, so render, the data
// plane and status agree; the daemon logs each refused address once and exports a gauge.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel, deniedExternalIPs, ModelCache } from "../src/model/index.js";
import { mergeConfig, parseConfigText, ConfigError } from "../src/config.js";
import { svc, slice, ep } from "./model-helpers.js";

const HEADER = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
// "hijack" claims the address of a well-known outside service (8.8.8.8) and an in-house one.
const services = [
  svc({ name: "lb", clusterIP: "10.96.0.10", externalIPs: ["198.51.100.7"] }),
  svc({ name: "hijack", clusterIP: "10.96.0.11", externalIPs: ["8.8.8.8", "198.51.100.8"] }),
];
const slices = [
  slice([ep("10.244.1.5")], { service: "lb", name: "lb-1" }),
  slice([ep("10.244.1.6")], { service: "hijack", name: "hijack-1" }),
];
const externalOf = (allowed: string[] | undefined, cache?: ModelCache) =>
  buildNodeModel({
    services,
    endpointSlices: slices,
    nodeName: "node-a",
    cache,
    config: { nodeName: "node-a", externalIPsAllowedCIDRs: allowed },
  })
    .frontends.filter((f) => f.type === "ExternalIP")
    .map((f) => `${f.service} ${f.address}`)
    .sort();

test("unset: every externalIP is served (kube-proxy's behaviour)", () => {
  assert.deepEqual(externalOf(undefined), [
    "default/hijack 198.51.100.8",
    "default/hijack 8.8.8.8",
    "default/lb 198.51.100.7",
  ]);
  assert.deepEqual(deniedExternalIPs(services, undefined), []);
});

test("an allow-list serves only the externalIPs inside it; the rest are reported", () => {
  assert.deepEqual(externalOf(["198.51.100.0/24"]), ["default/hijack 198.51.100.8", "default/lb 198.51.100.7"]);
  assert.deepEqual(deniedExternalIPs(services, ["198.51.100.0/24"]), ["default/hijack 8.8.8.8"]);
  assert.deepEqual(externalOf(["198.51.100.7/32"]), ["default/lb 198.51.100.7"]);
});

test("an empty allow-list serves no externalIP; ClusterIPs are untouched", () => {
  assert.deepEqual(externalOf([]), []);
  const m = buildNodeModel({
    services,
    endpointSlices: slices,
    nodeName: "node-a",
    config: { nodeName: "node-a", externalIPsAllowedCIDRs: [] },
  });
  assert.deepEqual(
    m.frontends
      .filter((f) => f.type === "ClusterIP")
      .map((f) => f.address)
      .sort(),
    ["10.96.0.10", "10.96.0.11"],
  );
});

test("changing the allow-list re-renders cached Services", () => {
  const cache = new ModelCache();
  assert.equal(externalOf(undefined, cache).length, 3);
  assert.deepEqual(externalOf(["198.51.100.7/32"], cache), ["default/lb 198.51.100.7"]);
});

test("config: bpfproxy.externalIPsAllowedCIDRs is read, absent means unset, a bad CIDR is refused naming the field", () => {
  let cfg = mergeConfig(
    parseConfigText(`${HEADER}bpfproxy:\n  externalIPsAllowedCIDRs: [198.51.100.0/24, " 203.0.113.0/24"]\n`, "t.yaml")
      .config,
    {},
  );
  assert.deepEqual(cfg.externalIPsAllowedCIDRs, ["198.51.100.0/24", "203.0.113.0/24"]);
  cfg = mergeConfig(parseConfigText(`${HEADER}bpfproxy:\n  externalIPsAllowedCIDRs: []\n`, "t.yaml").config, {});
  assert.deepEqual(cfg.externalIPsAllowedCIDRs, []);
  cfg = mergeConfig(parseConfigText(HEADER, "t.yaml").config, {});
  assert.equal(cfg.externalIPsAllowedCIDRs, undefined);
  assert.throws(
    () => parseConfigText(`${HEADER}bpfproxy:\n  externalIPsAllowedCIDRs: [198.51.100.0/33]\n`, "t.yaml"),
    (e: ConfigError) => e.problems.some((p) => p.path === "bpfproxy.externalIPsAllowedCIDRs[0]"),
  );
});
