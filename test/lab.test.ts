// The lab itself: topology, reachability, source addresses, teardown and crash recovery.
// Needs root (builds network namespaces); fails rather than skips without it.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOutcome, labFileHooks, netnsWithPrefix } from "./fixtures/lab-checks.js";
import { Lab, type LabSpec, echoRequest, startEchoServer, startHold, spawnEcho } from "../src/lab/index.js";
import { teardownLab } from "../src/lab/proxy.js";

const PREFIX = `bpx${process.pid}-`;
const T = { timeout: 30_000 };

function rootLinks(): string[] {
  return execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8", timeout: 5000 })
    .split("\n")
    .map((l) => (l.split(":")[1] ?? "").trim().split("@")[0]!)
    .filter(Boolean);
}

function rootRoutesAndAddrs(): string {
  const run = (args: string[]): string => execFileSync("ip", args, { encoding: "utf8", timeout: 5000 });
  return [
    run(["-4", "route", "show", "table", "all"]),
    run(["-4", "-o", "addr", "show"]).replace(/valid_lft.*$/gm, ""),
  ].join("\n");
}

function spec(prefix: string): LabSpec {
  return {
    prefix,
    nodes: [
      {
        name: "node-a",
        ip: "192.0.2.11",
        podCIDR: "10.244.1.0/24",
        pods: [
          { name: "pod-a1", ip: "10.244.1.10" },
          { name: "pod-a2", ip: "10.244.1.11" },
        ],
      },
      { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [{ name: "pod-b1", ip: "10.244.2.10" }] },
    ],
    external: { name: "ext", ip: "198.51.100.10" },
  };
}

labFileHooks(PREFIX);

describe("a 2-node lab", () => {
  let lab: Lab | undefined;
  const p = `${PREFIX}m-`;
  let linksBefore: string[] = [];
  let rootBefore = "";

  before(async () => {
    linksBefore = rootLinks();
    rootBefore = rootRoutesAndAddrs();
    lab = await Lab.create(spec(p));
  });

  after(async () => {
    await lab?.destroy();
  });

  const L = (): Lab => {
    assert.ok(lab, "lab was not created");
    return lab;
  };

  test("creates every namespace quickly, nothing in the root namespace", T, async () => {
    const l = L();
    assert.ok(l.createMs < 5000, `create took ${l.createMs} ms`);
    const expected = ["fabric", "upstream", "node-a", "node-b", "ext", "pod-a1", "pod-a2", "pod-b1"]
      .map((n) => p + n)
      .sort();
    assert.deepEqual(l.namespaces(), expected);
    assert.deepEqual(netnsWithPrefix(p).sort(), expected);
    const linksAfter = rootLinks();
    for (const name of [l.podInterface("pod-a1"), l.podInterface("pod-b1"), Lab.fabricPortName("node-a"), "br0"]) {
      assert.ok(!linksAfter.includes(name) || linksBefore.includes(name), `${name} appeared in the root namespace`);
    }
    // The root namespace's addresses and routes are exactly as before (note: the host itself may use
    // 192.0.2.0/24; the lab's copy of that subnet is isolated in its own namespaces).
    assert.equal(rootRoutesAndAddrs(), rootBefore);
  });

  test("naming and addressing", T, async () => {
    const l = L();
    assert.equal(l.nsName("pod-a1"), `${p}pod-a1`);
    assert.match(l.podInterface("pod-a1"), /^lxc[0-9a-f]{8}$/);
    assert.notEqual(l.podInterface("pod-a1"), l.podInterface("pod-a2"));
    assert.equal(l.nodeOf("pod-a2"), "node-a");
    assert.equal(l.nodeOf("pod-b1"), "node-b");
    assert.equal(l.podGateway("node-b"), "10.244.2.1");
    assert.throws(() => l.nodeOf("nope"));

    const hostSide = await l.run("node-a", ["ip", "-o", "-4", "addr", "show", "dev", l.podInterface("pod-a1")]);
    assert.match(hostSide, /inet 10\.244\.1\.1\/32/);
    const nodeRoutes = await l.run("node-a", ["ip", "route", "show"]);
    assert.match(nodeRoutes, /10\.244\.1\.10 dev lxc/);
    assert.match(nodeRoutes, /10\.244\.2\.0\/24 via 192\.0\.2\.12 dev eth0/);
    assert.ok(!/10\.96\./.test(nodeRoutes), "no service CIDR routes");
    const podAddr = await l.run("pod-b1", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert.match(podAddr, /inet 10\.244\.2\.10\/32/);
    const podRoutes = await l.run("pod-b1", ["ip", "route", "show"]);
    assert.match(podRoutes, /default via 10\.244\.2\.1 dev eth0/);
    assert.equal((await l.run("node-b", ["cat", "/proc/sys/net/ipv4/ip_forward"])).trim(), "1");
    const ns = await l.run("node-a", ["ip", "-o", "link", "show", "lo"]);
    assert.match(ns, /UP|UNKNOWN/);
  });

  test("nodes are set up like a real node: rp_filter 2, a default route, conntrack-using netfilter", T, async () => {
    const l = L();
    for (const node of ["node-a", "node-b"]) {
      const rp = await l.run(node, [
        "sysctl",
        "-n",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
        "net.ipv4.conf.eth0.rp_filter",
      ]);
      assert.deepEqual(rp.trim().split("\n"), ["2", "2", "2"], `${node}: Debian's loose rp_filter`);
      const podSide = await l.run(node, [
        "sysctl",
        "-n",
        `net.ipv4.conf.${l.podInterface(l.podNames(node)[0]!)}.rp_filter`,
      ]);
      assert.equal(podSide.trim(), "2", `${node}: pod veths take the default too`);
      assert.match(await l.run(node, ["ip", "route", "show", "default"]), /^default via 192\.0\.2\.254 dev eth0/);
      const filter = await l.run(node, ["iptables", "-S", "FORWARD"]);
      assert.match(filter, /^-P FORWARD ACCEPT$/m);
      assert.match(filter, /^-A FORWARD -m conntrack --ctstate INVALID -j DROP$/m);
    }
    assert.equal(l.upstreamIP(), "192.0.2.254");
    // Conntrack follows forwarded flows: pod-a1 to pod-b1 is tracked on both nodes.
    await startEchoServer(l, "pod-b1", { name: "b1-ct", tcp: [8090] });
    const r = await echoRequest(l, "pod-a1", { tcp: "10.244.2.10:8090" });
    assert.ok(r[0]!.ok, JSON.stringify(r));
    for (const node of ["node-a", "node-b"]) {
      const count = Number((await l.run(node, ["sysctl", "-n", "net.netfilter.nf_conntrack_count"])).trim());
      assert.ok(count > 0, `${node}: conntrack tracked nothing`);
    }
    // The upstream router discards what it is sent to forward: a node's packet to the Internet goes out by
    // the default route, reaches the router and is never answered (a timeout, not "network unreachable").
    const before = await l.upstreamForwarded();
    const beforeDst = await l.upstreamForwarded("203.0.113.99");
    const lost = await echoRequest(l, "node-a", { udp: "203.0.113.99:53", timeoutMs: 500 });
    assert.match(lost[0]!.error ?? "", /timeout/i, JSON.stringify(lost));
    assert.ok((await l.upstreamForwarded()) > before, "the datagram reached the upstream router");
    assert.equal((await l.upstreamForwarded("203.0.113.99")) - beforeDst, 1, "counted by destination");
  });

  test("rpFilter and netfilter are options: strict rp_filter, an empty netfilter", T, async () => {
    const q = `${PREFIX}o-`;
    const s = spec(q);
    s.rpFilter = 1;
    s.netfilter = "empty";
    const o = await Lab.create(s);
    try {
      assert.equal((await o.run("node-a", ["sysctl", "-n", "net.ipv4.conf.all.rp_filter"])).trim(), "1");
      assert.doesNotMatch(await o.run("node-a", ["iptables", "-S", "FORWARD"]), /INVALID/);
      assert.match(await o.run("node-a", ["ip", "route", "show", "default"]), /192\.0\.2\.254/);
    } finally {
      await o.destroy();
    }
    await assert.rejects(Lab.create({ ...spec(`${PREFIX}x-`), rpFilter: 3 as 1 }), /rpFilter/);
    assert.deepEqual(netnsWithPrefix(`${PREFIX}x-`), []);
  });

  test("exec is bounded in time and rejects foreign namespaces", T, async () => {
    const l = L();
    const t0 = Date.now();
    const r = await l.exec("pod-a1", ["sleep", "10"], { timeoutMs: 300 });
    assert.equal(r.timedOut, true);
    assert.ok(Date.now() - t0 < 3000);
    await assert.rejects(l.exec("not-a-lab-ns", ["true"]));
  });

  test("pod to pod on the same node and across nodes, TCP and UDP, real source IPs", T, async () => {
    const l = L();
    await Promise.all([
      startEchoServer(l, "pod-a2", { name: "a2", tcp: [8080], udp: [5353] }),
      startEchoServer(l, "pod-b1", { name: "b1", tcp: [8080], udp: [5353] }),
    ]);
    for (const [dst, name] of [
      ["10.244.1.11", "a2"],
      ["10.244.2.10", "b1"],
    ] as const) {
      for (const proto of ["tcp", "udp"] as const) {
        const res = await echoRequest(l, "pod-a1", {
          [proto]: `${dst}:${proto === "tcp" ? 8080 : 5353}`,
          count: 3,
          timeoutMs: 1000,
        });
        assert.equal(res.length, 3);
        for (const r of res) {
          assert.ok(r.ok, `${proto} pod-a1 -> ${dst}: ${r.error}`);
          assert.match(r.reply!, new RegExp(`^${name} 10\\.244\\.1\\.10:\\d+$`), `${proto} reply ${r.reply}`);
        }
      }
    }
    // Reverse direction and node -> remote pod.
    await startEchoServer(l, "pod-a1", { name: "a1", tcp: [9090] });
    const back = await echoRequest(l, "pod-b1", { tcp: "10.244.1.10:9090" });
    assert.match(back[0]!.reply ?? back[0]!.error!, /^a1 10\.244\.2\.10:\d+$/);
    const fromNode = await echoRequest(l, "node-b", { tcp: "10.244.1.10:9090" });
    assert.match(fromNode[0]!.reply ?? fromNode[0]!.error!, /^a1 192\.0\.2\.12:\d+$/);
  });

  test("external client reaches node addresses; errors are per attempt", T, async () => {
    const l = L();
    await startEchoServer(l, "node-b", { name: "nb", tcp: [8081], udp: [5354] });
    const tcp = await echoRequest(l, "ext", { tcp: "192.0.2.12:8081", count: 2 });
    for (const r of tcp) assert.match(r.reply ?? r.error!, /^nb 198\.51\.100\.10:\d+$/);
    const udp = await echoRequest(l, "ext", { udp: "192.0.2.12:5354" });
    assert.match(udp[0]!.reply ?? udp[0]!.error!, /^nb 198\.51\.100\.10:\d+$/);
    const refused = await echoRequest(l, "ext", { tcp: "192.0.2.12:1", count: 2, timeoutMs: 1000 });
    assert.deepEqual(
      refused.map((r) => [r.ok, r.error]),
      [
        [false, "ECONNREFUSED"],
        [false, "ECONNREFUSED"],
      ],
    );
    const udpRefused = await echoRequest(l, "ext", { udp: "192.0.2.12:1", timeoutMs: 1000 });
    assert.equal(udpRefused[0]!.ok, false);
    assert.equal(udpRefused[0]!.error, "ECONNREFUSED");
    const silent = await echoRequest(l, "pod-a1", { udp: "10.244.2.10:1", timeoutMs: 300 });
    assert.equal(silent[0]!.ok, false);
  });

  test("hold keeps one connection and reports replies, then errors when the server goes", T, async () => {
    const l = L();
    const srv = await startEchoServer(l, "pod-b1", { name: "held", tcp: [7070] });
    const h = startHold(l, "pod-a2", "10.244.2.10:7070", 50, 1000);
    try {
      await h.waitFor(5);
      const replies = h.events.map((e) => ("reply" in e ? e.reply : `error ${e.error}`));
      assert.equal(new Set(replies).size, 1, `one connection, one peer port: ${replies.join(", ")}`);
      assert.match(replies[0]!, /^held 10\.244\.1\.11:\d+$/);
      srv.kill("SIGKILL");
      const n = h.events.length;
      await h.waitFor(n + 1, 5000).catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(
        h.events.some((e) => "error" in e),
        `an error after the server died: ${JSON.stringify(h.events.slice(-2))}`,
      );
    } finally {
      await h.stop();
    }
  });
});

describe("teardown", () => {
  test("destroy kills spawned processes, removes all namespaces, is idempotent", T, async () => {
    const p = `${PREFIX}d-`;
    const lab = await Lab.create(spec(p));
    try {
      const child = spawnEcho(lab, "pod-a1", ["serve", "--name", "x", "--tcp", "1234"]);
      const sleeper = lab.spawn("node-a", ["sleep", "60"]);
      assert.equal(netnsWithPrefix(p).length, 8);
      const t0 = Date.now();
      await lab.destroy();
      const ms = Date.now() - t0;
      assert.ok(ms < 5000, `destroy took ${ms} ms`);
      assert.deepEqual(netnsWithPrefix(p), []);
      assert.deepEqual(lab.namespaces(), []);
      assert.ok(child.exitCode !== null || child.signalCode !== null, "echo server was killed");
      assert.ok(sleeper.exitCode !== null || sleeper.signalCode !== null, "sleeper was killed");
      await lab.destroy();
      assert.deepEqual(netnsWithPrefix(p), []);
    } finally {
      await lab.destroy().catch(() => {});
    }
  });

  test("cleanupPrefix removes a crashed lab's namespaces and processes", T, async () => {
    const p = `${PREFIX}c-`;
    const lab = await Lab.create(spec(p));
    try {
      // Simulate a crash: the lab object is forgotten, a process keeps running inside a namespace.
      const orphan = lab.spawn("pod-b1", ["sleep", "60"]);
      await new Promise((r) => setTimeout(r, 100));
      const deleted = await Lab.cleanupPrefix(p);
      assert.equal(deleted.length, 8);
      assert.deepEqual(netnsWithPrefix(p), []);
      const deadline = Date.now() + 3000;
      while (orphan.exitCode === null && orphan.signalCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      assert.ok(orphan.exitCode !== null || orphan.signalCode !== null, "process inside the namespace was killed");
      assert.deepEqual(await Lab.cleanupPrefix(p), []);
      await assert.rejects(Lab.cleanupPrefix(""), /prefix/);
    } finally {
      await lab.destroy().catch(() => {});
    }
  });

  test("teardownLab runs every step although one fails, then reports the failure", T, async () => {
    const p = `${PREFIX}t-`;
    const lab = await Lab.create(spec(p));
    const dir = mkdtempSync(join(tmpdir(), "bpfproxy-teardown-"));
    let closed = 0;
    const closers = [
      {
        close(): void {
          throw new Error("closer broke");
        },
      },
      undefined,
      { close: () => void closed++ },
    ];
    try {
      await assert.rejects(
        teardownLab({ closers, proxies: [undefined], lab, bpffs: [undefined], dirs: [dir, undefined] }),
        /closer broke/,
      );
      assert.equal(closed, 1, "the closer after the broken one ran");
      assert.deepEqual(netnsWithPrefix(p), []);
      assert.equal(existsSync(dir), false);
    } finally {
      await lab.destroy().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("create with an invalid address fails and leaves nothing behind", T, async () => {
    const p = `${PREFIX}i-`;
    const bad = spec(p);
    bad.nodes[1]!.pods[0]!.ip = "10.244.2.300";
    await assert.rejects(Lab.create(bad), /invalid IPv4/);
    const badCIDR = spec(p);
    badCIDR.nodes[0]!.podCIDR = "10.244.1.0/33";
    await assert.rejects(Lab.create(badCIDR), /CIDR/);
    assert.deepEqual(netnsWithPrefix(p), []);
  });

  test("a create that fails half way removes what it made and nothing else", T, async () => {
    const p = `${PREFIX}f-`;
    // Somebody else's namespace with the name one of our pods needs: create fails after making the others.
    execFileSync("ip", ["netns", "add", `${p}pod-b1`], { timeout: 5000 });
    try {
      await assert.rejects(Lab.create(spec(p)), /netns add/);
      assert.deepEqual(netnsWithPrefix(p), [`${p}pod-b1`]);
    } finally {
      execFileSync("ip", ["netns", "del", `${p}pod-b1`], { timeout: 5000 });
    }
    assert.deepEqual(netnsWithPrefix(p), []);
  });

  test("a create that fails while configuring links cleans up", T, async () => {
    const p = `${PREFIX}g-`;
    const s = spec(p);
    // Valid syntax, but the kernel refuses a multicast node address as a route's gateway, after the
    // namespaces, sysctls, bridge and some links exist.
    s.nodes[0]!.ip = "224.0.2.11";
    s.nodes[1]!.ip = "224.0.2.12";
    const r = await createOutcome(s);
    assert.deepEqual(netnsWithPrefix(p), []);
    assert.match(r, /invalid gateway/, "expected the kernel to refuse a multicast gateway");
  });
});
