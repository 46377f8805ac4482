// NodePort, masquerade and detectLocal settings: what kube-proxy accepts works, anything else stops startup
// with an error naming the field.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, mergeConfig, parseConfigText } from "../src/config.js";

const HEADER = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

function rejected(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the configuration to be rejected");
}

test("nodePortAddresses takes CIDRs and primary, like kube-proxy", () => {
  const { config } = parseConfigText(`${HEADER}nodePortAddresses: ["192.0.2.0/24", "primary"]\n`, "t.yaml");
  assert.deepEqual(mergeConfig(config, {}).nodePortAddresses, ["192.0.2.0/24", "primary"]);
  assert.deepEqual(mergeConfig(undefined, {}).nodePortAddresses, [], "unset: every local address");
});

for (const bad of ["all", "localhost"]) {
  test(`nodePortAddresses "${bad}" (not a kube-proxy value) stops startup naming the field, from the file and from the flag`, () => {
    const file = rejected(() => parseConfigText(`${HEADER}nodePortAddresses: ["10.0.0.0/8", "${bad}"]\n`, "t.yaml"));
    assert.match(file.message, /nodePortAddresses\[1\]/);
    assert.match(file.message, new RegExp(`"${bad}" is not a kube-proxy value`));
    const flag = rejected(() => mergeConfig(undefined, { nodePortAddresses: [bad] }));
    assert.match(flag.message, /nodePortAddresses\[0\]/);
  });
}

test("detectLocalMode: the four kube-proxy modes are accepted, anything else names the field", () => {
  assert.equal(
    mergeConfig(parseConfigText(`${HEADER}detectLocalMode: NodeCIDR\n`, "t.yaml").config, {}).detectLocalMode,
    "NodeCIDR",
  );
  assert.match(
    rejected(() => parseConfigText(`${HEADER}detectLocalMode: PodCIDR\n`, "t.yaml")).message,
    /detectLocalMode: must be one of/,
  );
  assert.equal(
    mergeConfig(undefined, { detectLocalMode: "ClusterCIDR", clusterCIDRs: ["10.244.0.0/16"] }).detectLocalMode,
    "ClusterCIDR",
  );
  assert.equal(
    mergeConfig(undefined, { detectLocalMode: "InterfaceNamePrefix", detectLocalInterfaceNamePrefix: "lxc" })
      .detectLocalInterfaceNamePrefix,
    "lxc",
  );
  assert.equal(
    mergeConfig(undefined, { detectLocalMode: "BridgeInterface", detectLocalBridgeInterface: "cbr0" })
      .detectLocalBridgeInterface,
    "cbr0",
  );
});

test("masqueradeAll from iptables/nftables or the bpfproxy section is carried to the data plane", () => {
  for (const text of [
    "iptables:\n  masqueradeAll: true\n",
    "nftables:\n  masqueradeAll: true\n",
    "bpfproxy:\n  masqueradeAll: true\n",
  ]) {
    assert.equal(mergeConfig(parseConfigText(`${HEADER}${text}`, "t.yaml").config, {}).masqueradeAll, true, text);
  }
  assert.equal(mergeConfig(undefined, {}).masqueradeAll, false);
});

test("xdp: auto by default; native, generic, off from the flag or bpfproxy.xdp; anything else names the field", () => {
  assert.equal(mergeConfig(undefined, {}).xdp, "auto");
  assert.equal(
    mergeConfig(parseConfigText(`${HEADER}bpfproxy:\n  xdp: generic\n`, "t.yaml").config, {}).xdp,
    "generic",
  );
  assert.equal(
    mergeConfig(parseConfigText(`${HEADER}bpfproxy:\n  xdp: generic\n`, "t.yaml").config, { xdp: "off" }).xdp,
    "off",
  );
  assert.match(
    rejected(() => parseConfigText(`${HEADER}bpfproxy:\n  xdp: fast\n`, "t.yaml")).message,
    /bpfproxy\.xdp: must be one of auto, native, generic, off/,
  );
  assert.match(rejected(() => mergeConfig(undefined, { xdp: "fast" as "off" })).message, /xdp: must be one of/);
});

test("bypassNetfilter: off by default (the stack forwards Service traffic); on from --bypass-netfilter or bpfproxy.bypassNetfilter", () => {
  assert.equal(mergeConfig(undefined, {}).bypassNetfilter, false);
  assert.equal(mergeConfig(undefined, { bypassNetfilter: true }).bypassNetfilter, true);
  const file = parseConfigText(`${HEADER}bpfproxy:\n  bypassNetfilter: true\n`, "t.yaml").config;
  assert.equal(mergeConfig(file, {}).bypassNetfilter, true);
  assert.equal(mergeConfig(file, { bypassNetfilter: false }).bypassNetfilter, false);
  assert.match(
    rejected(() => parseConfigText(`${HEADER}bpfproxy:\n  bypassNetfilter: "yes"\n`, "t.yaml")).message,
    /bypassNetfilter/,
  );
});
