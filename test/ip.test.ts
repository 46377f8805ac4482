// The one IP/CIDR module (src/k8s/ip.ts) that schemas, config, model, lab and the map codecs share.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isIPv4 } from "node:net";
import {
  canonicalIP,
  compareAddresses,
  dualStackCIDRsProblem,
  ipFamily,
  ipInCIDR,
  ipv6Hex,
  ipv4InCIDR,
  ipv4ToNumber,
  isCIDR,
  parseCIDR,
  parseIPv4Network,
  writeIPv4,
} from "../src/k8s/ip.js";
import { ipv4ToBytes, parseCidr4 } from "../src/dataplane/bpf/abi.js";
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

test("writeIPv4 puts an address in network byte order where a packet or a netlink attribute has it", () => {
  const b = Buffer.alloc(12, 0xee);
  writeIPv4(b, 4, "192.0.2.10");
  assert.deepEqual([...b], [0xee, 0xee, 0xee, 0xee, 192, 0, 2, 10, 0xee, 0xee, 0xee, 0xee]);
  // Whatever ipv4ToNumber refuses is refused here too, and nothing is written.
  for (const bad of ["192.0.2.256", "10.0.0", "fd00::1", "", "010.0.0.1"]) {
    assert.throws(() => writeIPv4(b, 0, bad), /not an IPv4 address/, bad);
    assert.deepEqual([...b.subarray(0, 4)], [0xee, 0xee, 0xee, 0xee], bad);
  }
});

test("ipv4ToNumber accepts exactly the dotted quads node:net's isIPv4 accepts", () => {
  assert.equal(ipv4ToNumber("0.0.0.0"), 0);
  assert.equal(ipv4ToNumber("255.255.255.255"), 0xffffffff);
  assert.equal(ipv4ToNumber("10.96.0.10"), 0x0a60000a);
  const cases = ["01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", "", "1.2.3.4 ", " 1.2.3.4"];
  cases.push("1.2.3.0004", "a.b.c.d", "1.2.3.-4", "::1", "1.2.3.4/32", "999.0.0.1", "0.0.0.00", "1.2.3.");
  for (const s of cases) assert.ok(Number.isNaN(ipv4ToNumber(s)), s);
  // Strings made of digits and dots: the parser and node:net agree on every one.
  const chars = "0123456789.";
  let x = 12345;
  for (let i = 0; i < 20_000; i++) {
    let s = "";
    const len = 1 + (i % 16);
    for (let j = 0; j < len; j++) {
      x = (x * 1103515245 + 12345) >>> 0;
      s += chars[(x >>> 16) % chars.length];
    }
    assert.equal(!Number.isNaN(ipv4ToNumber(s)), isIPv4(s), s);
  }
});

test("IPv6 literals: canonical form per RFC 5952, numeric order after IPv4, CIDR membership", () => {
  // RFC 5952 section 4: lower case, no leading zeros, the longest run of zero groups (the first of equal
  // ones) compressed, a single zero group never; section 5: IPv4-mapped addresses keep the dotted quad.
  for (const [given, want] of [
    ["FD00:0096:0000:0000:0000:0000:0000:0050", "fd00:96::50"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
    ["10.96.0.10", "10.96.0.10"],
    ["db.example.com", "db.example.com"],
  ])
    assert.equal(canonicalIP(given!), want, given);
  assert.equal(ipFamily("10.0.0.1"), 4);
  assert.equal(ipFamily("fd00::1"), 6);
  assert.equal(ipFamily("010.0.0.1"), undefined);
  assert.equal(ipv6Hex("fd00::1"), "fd000000000000000000000000000001");
  assert.equal(ipv6Hex("::ffff:1.2.3.4"), "00000000000000000000ffff01020304");
  assert.equal(ipv6Hex("10.0.0.1"), undefined);
  const sorted = ["fd00::10", "db.example.com", "fd00::9", "10.0.0.1", "2001:db8::1", "FD00::A"].sort(compareAddresses);
  assert.deepEqual(sorted, ["10.0.0.1", "2001:db8::1", "fd00::9", "FD00::A", "fd00::10", "db.example.com"]);
  assert.equal(compareAddresses("fd00::1", "FD00:0::1"), 0, "one address in two spellings");
  const c = parseCIDR("fd00:10:244::/56")!;
  assert.ok(ipInCIDR("fd00:10:244:ff::1", c));
  assert.ok(ipInCIDR("FD00:10:244::1", c));
  assert.ok(!ipInCIDR("fd00:10:245::1", c));
  assert.ok(!ipInCIDR("10.244.0.1", c), "another family never matches");
  assert.ok(ipInCIDR("10.244.0.1", parseCIDR("10.244.0.0/16")!));
  assert.ok(!ipInCIDR("fd00::1", parseCIDR("0.0.0.0/0")!));
  assert.ok(ipInCIDR("fd00::1", parseCIDR("::/0")!));
});

test("a cluster CIDR list is one CIDR or one of each family (kube-proxy's wording)", () => {
  assert.equal(dualStackCIDRsProblem([]), undefined);
  assert.equal(dualStackCIDRsProblem(["10.244.0.0/16"]), undefined);
  assert.equal(dualStackCIDRsProblem(["fd00::/56", "10.244.0.0/16"]), undefined);
  assert.match(dualStackCIDRsProblem(["10.244.0.0/16", "10.245.0.0/16"])!, /must be a valid DualStack CIDR/);
  assert.match(dualStackCIDRsProblem(["fd00::/56", "fd01::/56"])!, /must be a valid DualStack CIDR/);
  assert.match(dualStackCIDRsProblem(["10.0.0.0/8", "fd00::/56", "10.1.0.0/16"])!, /only one CIDR allowed/);
});
