// The one IP/CIDR module (src/k8s/ip.ts) that schemas, config, model, lab and the map codecs share.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compareAddresses, ipv4InCIDR, isCIDR, parseCIDR, parseIPv4Network } from "../src/k8s/ip.js";
import { ipv4ToBytes, parseCidr4 } from "../src/dataplane/abi.js";
import { sortFrontends } from "../src/model/order.js";
import type { Frontend } from "../src/model/types.js";

test("CIDRs: IPv4 and IPv6, prefix in range, no leading zeros (as the apiserver and Go's netip)", () => {
  assert.deepEqual(parseCIDR("10.244.0.0/16"), { family: 4, address: "10.244.0.0", prefix: 16 });
  assert.deepEqual(parseCIDR(" 10.0.0.0/8 "), { family: 4, address: "10.0.0.0", prefix: 8 }, "whitespace tolerated");
  assert.deepEqual(parseCIDR("fd00::/64"), { family: 6, address: "fd00::", prefix: 64 });
  for (const bad of [
    "10.0.0.0",
    "10.0.0.0/33",
    "10.0.0.0/08",
    "010.0.0.0/8",
    "10.0.0/8",
    "fd00::/129",
    "x/1",
    "10.0.0.0/8/1",
  ]) {
    assert.equal(isCIDR(bad), false, bad);
  }
});

test("an IPv4 network clears the host bits; membership uses the mask", () => {
  assert.deepEqual(parseIPv4Network("10.244.1.7/24"), { network: "10.244.1.0", prefix: 24 });
  assert.deepEqual(parseIPv4Network("192.0.2.1/0"), { network: "0.0.0.0", prefix: 0 });
  assert.deepEqual(parseIPv4Network("192.0.2.1/32"), { network: "192.0.2.1", prefix: 32 });
  assert.equal(parseIPv4Network("fd00::/64"), undefined);
  assert.deepEqual(parseCidr4("10.244.1.7/24"), { addr: "10.244.1.0", bits: 24 });
  assert.throws(() => parseCidr4("fd00::/64"), /not an IPv4 CIDR/);
  const c = parseCIDR("10.244.0.0/16")!;
  assert.ok(ipv4InCIDR("10.244.255.1", c));
  assert.ok(!ipv4InCIDR("10.245.0.1", c));
  assert.ok(ipv4InCIDR("203.0.113.9", parseCIDR("0.0.0.0/0")!));
});

test("IPv4 addresses encode in network byte order and compare numerically, before other strings", () => {
  assert.deepEqual([...ipv4ToBytes("192.0.2.10")], [192, 0, 2, 10]);
  assert.throws(() => ipv4ToBytes("192.0.2.256"), /not an IPv4 address/);
  const sorted = ["10.0.0.10", "fd00::1", "10.0.0.9", "9.255.255.255"].sort(compareAddresses);
  assert.deepEqual(sorted, ["9.255.255.255", "10.0.0.9", "10.0.0.10", "fd00::1"]);
  const fe = (address: string): Frontend => ({
    service: "default/a",
    portName: "",
    type: "ClusterIP",
    address,
    port: 80,
    protocol: "TCP",
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: [],
  });
  assert.deepEqual(
    sortFrontends([fe("10.96.0.10"), fe("10.96.0.9")]).map((f) => f.address),
    ["10.96.0.9", "10.96.0.10"],
  );
});
