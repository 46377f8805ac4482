// `--pod-interfaces` globs: shell-style patterns matched against whole interface names (docs/cli.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import { globToRegExp } from "../src/dataplane/bpf/index.js";

const matches = (glob: string, name: string) => globToRegExp(glob).test(name);

test("* matches any run of characters, only over the whole name", () => {
  assert.ok(matches("lxc*", "lxc1a2b3c4d"));
  assert.ok(matches("lxc*", "lxc"));
  assert.ok(!matches("lxc*", "eth0"));
  assert.ok(!matches("lxc*", "vlxc0"), "anchored at the start");
  assert.ok(!matches("eth0", "eth0.100"), "anchored at the end");
});

test("? matches one character and [...] one of a set", () => {
  assert.ok(matches("veth?", "veth1"));
  assert.ok(!matches("veth?", "veth12"));
  assert.ok(matches("eth[01]", "eth1"));
  assert.ok(!matches("eth[01]", "eth2"));
});

test("characters that are special in regular expressions match literally", () => {
  assert.ok(matches("a.b", "a.b"));
  assert.ok(!matches("a.b", "aXb"));
  assert.ok(matches("cali+*", "cali+12"));
  assert.ok(matches("br-*", "br-1234"));
});
