// The lab over IPv6: dual-stack and IPv6-only topologies, real packets between pods, nodes and the external
// client, NDP, and teardown (also of a create that fails). Needs root (builds network namespaces); fails
// rather than skips without it.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createOutcome, labFileHooks, netnsWithPrefix } from "./fixtures/lab-checks.js";
import { Lab, type LabSpec, echoRequest, startEchoServer } from "../src/lab/index.js";

const PREFIX = `bp6${process.pid}-`;
const T = { timeout: 30_000 };

/** The root namespace's links, addresses, routes and rules in both families (lifetimes blanked). */
function rootNetworkState(): string {
  const run = (args: string[]): string => execFileSync("ip", args, { encoding: "utf8", timeout: 5000 });
  return [
    run(["-o", "link", "show"])
      .split("\n")
      .map((l) => (l.split(":")[1] ?? "").trim())
      .join(" "),
    run(["-4", "route", "show", "table", "all"]),
    run(["-6", "route", "show", "table", "all"]).replace(/ expires \S+/g, ""),
    run(["-o", "addr", "show"]).replace(/valid_lft.*$/gm, ""),
    run(["-4", "rule", "show"]),
    run(["-6", "rule", "show"]),
  ].join("\n");
}

/** Nodes on 2001:db8::/64, pods in fd00:10:244::/56 (a /64 per node), the external client on its own /64. */
function dualStack(prefix: string): LabSpec {
  return {
    prefix,
    nodes: [
      {
        name: "node-a",
        ip: "192.0.2.11",
        podCIDR: "10.244.1.0/24",
        ip6: "2001:db8::a",
        podCIDR6: "fd00:10:244:1::/64",
        pods: [
          { name: "pod-a1", ip: "10.244.1.10", ip6: "fd00:10:244:1::10" },
          { name: "pod-a2", ip6: "fd00:10:244:1::11" },
        ],
      },
      {
        name: "node-b",
        ip: "192.0.2.12",
        podCIDR: "10.244.2.0/24",
        ip6: "2001:db8::b",
        podCIDR6: "fd00:10:244:2::/64",
        pods: [{ name: "pod-b1", ip: "10.244.2.10", ip6: "fd00:10:244:2::10" }],
      },
    ],
    external: { name: "ext", ip: "198.51.100.10", ip6: "2001:db8:100::10" },
  };
}

function ipv6Only(prefix: string): LabSpec {
  return {
    prefix,
    nodes: [
      {
        name: "node-a",
        ip6: "2001:db8::a",
        podCIDR6: "fd00:10:244:1::/64",
        pods: [{ name: "pod-a1", ip6: "fd00:10:244:1::10" }],
      },
      {
        name: "node-b",
        ip6: "2001:db8::b",
        podCIDR6: "fd00:10:244:2::/64",
        bridge: "cni0",
        pods: [{ name: "pod-b1", ip6: "fd00:10:244:2::10" }],
      },
    ],
    external: { name: "ext", ip6: "2001:db8:100::10" },
  };
}

/** Every global (non-link-local) IPv6 address of a namespace, with its flags. */
async function globalAddrs6(
  lab: Lab,
  ns: string,
): Promise<Array<{ local: string; prefixlen: number; flags: string[] }>> {
  const j = JSON.parse(await lab.run(ns, ["ip", "-6", "-j", "addr", "show", "scope", "global"])) as Array<{
    addr_info: Array<Record<string, unknown>>;
  }>;
  return j.flatMap((l) =>
    l.addr_info.map((a) => ({
      local: a.local as string,
      prefixlen: a.prefixlen as number,
      flags: Object.keys(a).filter((k) => a[k] === true),
    })),
  );
}

/** All requests ok, each reply from `name` showing `peer` as the source. */
function assertReplies(rs: Array<{ ok: boolean; reply?: string; error?: string }>, name: string, peer: string): void {
  assert.ok(rs.length > 0);
  const esc = peer.replace(/[.[\]]/g, "\\$&");
  for (const r of rs) {
    assert.ok(r.ok, `expected a reply from ${name}, got ${r.error}`);
    assert.match(r.reply!, new RegExp(`^${name} ${esc}:\\d+$`));
  }
}

labFileHooks(PREFIX);

describe("a dual-stack lab", () => {
  let lab: Lab | undefined;
  const p = `${PREFIX}m-`;
  let rootBefore = "";

  before(async () => {
    rootBefore = rootNetworkState();
    lab = await Lab.create(dualStack(p));
  });

  after(async () => {
    await lab?.destroy();
    assert.deepEqual(netnsWithPrefix(p), []);
    assert.equal(rootNetworkState(), rootBefore, "the root namespace is as it was");
  });

  const L = (): Lab => {
    assert.ok(lab, "lab was not created");
    return lab;
  };

  test("is handed over settled: no tentative address, the first forwarded packet answered at once", T, async () => {
    const l = L();
    assert.ok(l.createMs < 5000, `create took ${l.createMs} ms`);
    assert.equal(rootNetworkState(), rootBefore);
    for (const ns of l.namespaces())
      assert.equal((await l.exec(ns, ["ip", "-6", "-o", "addr", "show", "tentative"])).stdout, "", ns);
    // Nobody listens on port 1: pod-b1's ICMPv6 port unreachable answers. It needs NDP on both nodes and both
    // pod links, for packets the nodes forward (solicited from link-local addresses).
    const first = await echoRequest(l, "pod-a1", { udp: "[fd00:10:244:2::10]:1", timeoutMs: 500 });
    assert.equal(first[0]!.error, "ECONNREFUSED", JSON.stringify(first));
  });

  test("addresses: nodes on 2001:db8::/64, pods /128 in their node's /64, none tentative", T, async () => {
    const l = L();
    assert.equal(l.hasIPv4, true);
    assert.equal(l.hasIPv6, true);
    assert.equal(l.nodeIP6("node-b"), "2001:db8::b");
    assert.equal(l.podIP6("pod-a2"), "fd00:10:244:1::11");
    assert.throws(() => l.podIP("pod-a2"), /no IPv4/);
    assert.equal(l.podGateway6("node-a"), "fd00:10:244:1::1");
    assert.equal(l.upstreamIP6(), "2001:db8::1");
    const expect: Array<[string, string, number]> = [
      ["node-a", "2001:db8::a", 64],
      ["node-b", "2001:db8::b", 64],
      ["pod-a1", "fd00:10:244:1::10", 128],
      ["pod-a2", "fd00:10:244:1::11", 128],
      ["pod-b1", "fd00:10:244:2::10", 128],
      ["ext", "2001:db8:100::10", 64],
      ["upstream", "2001:db8::1", 64],
    ];
    for (const [ns, addr, len] of expect) {
      const a = (await globalAddrs6(l, ns)).find((x) => x.local === addr);
      assert.ok(a, `${ns} has ${addr}`);
      assert.equal(a.prefixlen, len, `${ns} ${addr} prefix length`);
      assert.ok(
        !a.flags.includes("tentative") && !a.flags.includes("dadfailed"),
        `${ns} ${addr}: ${a.flags.join(" ")}`,
      );
    }
    // The pod gateway sits on each host side as /128 (IPv4's layout), next to the IPv4 one.
    const host = await globalAddrs6(l, "node-a");
    assert.ok(host.some((a) => a.local === "fd00:10:244:1::1" && a.prefixlen === 128));
    assert.match(
      await l.run("node-a", ["ip", "-o", "-4", "addr", "show", "dev", l.podInterface("pod-a1")]),
      /inet 10\.244\.1\.1\/32/,
    );
    // An IPv6-only pod has no IPv4 address.
    assert.equal((await l.run("pod-a2", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])).trim(), "");
  });

  test("routes: pod /64s between nodes, default via the router, nothing for the Service range", T, async () => {
    const l = L();
    const a = await l.run("node-a", ["ip", "-6", "route", "show"]);
    assert.match(a, /^fd00:10:244:2::\/64 via 2001:db8::b dev eth0/m);
    assert.match(a, /^fd00:10:244:1::10 dev lxc[0-9a-f]{8}/m);
    assert.match(a, /^2001:db8:100::\/64 dev eth0/m);
    assert.match(a, /^default via 2001:db8::1 dev eth0/m);
    for (const ns of ["node-a", "node-b", "pod-a1", "pod-b1", "ext", "upstream"])
      assert.doesNotMatch(await l.run(ns, ["ip", "-6", "route", "show", "table", "all"]), /fd00:96:/, ns);
    assert.match(await l.run("pod-b1", ["ip", "-6", "route", "show"]), /^default via fd00:10:244:2::1 dev eth0/m);
    assert.match(await l.run("ext", ["ip", "-6", "route", "show"]), /^2001:db8::\/64 dev eth0/m);
  });

  test("knobs: IPv6 forwarding on nodes only; every other IPv6 setting is the kernel's default", T, async () => {
    const l = L();
    const fwd = async (ns: string): Promise<string[]> =>
      (await l.run(ns, ["sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding"]))
        .trim()
        .split("\n");
    for (const n of ["node-a", "node-b"]) assert.deepEqual(await fwd(n), ["1", "1"], n);
    for (const n of ["pod-a1", "pod-b1", "ext", "upstream"]) assert.deepEqual(await fwd(n), ["0", "0"], n);
    // A node's net.ipv6.conf.{all,default}.* against the fabric's, which the lab sets nothing IPv6 in: they
    // differ in forwarding and what the kernel itself derives from it, nothing else.
    const conf = async (ns: string): Promise<Map<string, string>> => {
      const out = await l.run(ns, ["sysctl", "-a", "-r", "^net\\.ipv6\\.conf\\.(all|default)\\."]);
      return new Map(
        out
          .split("\n")
          .filter(Boolean)
          .map((line) => line.split(" = ") as [string, string]),
      );
    };
    const node = await conf("node-a");
    const fabric = await conf("fabric");
    assert.ok(fabric.size > 20, `read ${fabric.size} keys`);
    const differ = [...fabric.keys()].filter((k) => node.get(k) !== fabric.get(k)).sort();
    assert.deepEqual(differ, ["net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding"]);
    // The same netfilter rules in both families, so conntrack follows forwarded IPv6 flows too.
    assert.match(
      await l.run("node-a", ["ip6tables", "-S", "FORWARD"]),
      /^-A FORWARD -m conntrack --ctstate INVALID -j DROP$/m,
    );
  });

  test("pod to pod across nodes over IPv6, TCP and UDP, real source addresses", T, async () => {
    const l = L();
    await Promise.all([
      startEchoServer(l, "pod-b1", { name: "b1", tcp: [8080], udp: [5353], bind: "::" }),
      startEchoServer(l, "pod-a2", { name: "a2", tcp: [8080], udp: [5353], bind: "::" }),
    ]);
    for (const proto of ["tcp", "udp"] as const) {
      const port = proto === "tcp" ? 8080 : 5353;
      const across = await echoRequest(l, "pod-a1", {
        [proto]: `[fd00:10:244:2::10]:${port}`,
        count: 3,
        timeoutMs: 2000,
      });
      assertReplies(across, "b1", "[fd00:10:244:1::10]");
      const back = await echoRequest(l, "pod-b1", {
        [proto]: `[fd00:10:244:1::11]:${port}`,
        count: 2,
        timeoutMs: 2000,
      });
      assertReplies(back, "a2", "[fd00:10:244:2::10]");
      const same = await echoRequest(l, "pod-a1", { [proto]: `[fd00:10:244:1::11]:${port}`, timeoutMs: 2000 });
      assertReplies(same, "a2", "[fd00:10:244:1::10]");
    }
    // A large datagram: IPv6 hosts fragment it themselves (routers never do), and it arrives whole.
    const big = await echoRequest(l, "pod-a1", { udp: "[fd00:10:244:2::10]:5353", payload: "x".repeat(3000) });
    assert.ok(big[0]!.ok, JSON.stringify(big[0]));
    assert.equal(big[0]!.reply!.length, 3001, "the answer is as large as the request (its newline included)");
  });

  test("a dual-stack pod reaches both families of another pod on one dual-stack socket", T, async () => {
    const l = L();
    await startEchoServer(l, "pod-b1", { name: "ds", tcp: [8181], udp: [5454], bind: "::" });
    for (const proto of ["tcp", "udp"] as const) {
      const port = proto === "tcp" ? 8181 : 5454;
      assertReplies(await echoRequest(l, "pod-a1", { [proto]: `10.244.2.10:${port}` }), "ds", "10.244.1.10");
      assertReplies(
        await echoRequest(l, "pod-a1", { [proto]: `[fd00:10:244:2::10]:${port}` }),
        "ds",
        "[fd00:10:244:1::10]",
      );
    }
  });

  test("node to pod (own node: from the gateway; other node: from the node address), external to node", T, async () => {
    const l = L();
    await startEchoServer(l, "pod-a1", { name: "a1", tcp: [9090], udp: [5555], bind: "::" });
    assertReplies(await echoRequest(l, "node-a", { tcp: "[fd00:10:244:1::10]:9090" }), "a1", "[fd00:10:244:1::1]");
    assertReplies(await echoRequest(l, "node-b", { tcp: "[fd00:10:244:1::10]:9090" }), "a1", "[2001:db8::b]");
    assertReplies(await echoRequest(l, "node-b", { udp: "[fd00:10:244:1::10]:5555" }), "a1", "[2001:db8::b]");
    await startEchoServer(l, "node-b", { name: "nb", tcp: [8081], bind: "::" });
    assertReplies(await echoRequest(l, "ext", { tcp: "[2001:db8::b]:8081" }), "nb", "[2001:db8:100::10]");
    assertReplies(await echoRequest(l, "ext", { tcp: "192.0.2.12:8081" }), "nb", "198.51.100.10");
    const refused = await echoRequest(l, "ext", { tcp: "[2001:db8::b]:1", timeoutMs: 1000 });
    assert.equal(refused[0]!.error, "ECONNREFUSED");
  });

  test("NDP resolves neighbours on the fabric and pod links (what bpf_redirect_neigh will use)", T, async () => {
    const l = L();
    await startEchoServer(l, "pod-b1", { name: "nd", udp: [5656], bind: "::" });
    assertReplies(await echoRequest(l, "pod-a1", { udp: "[fd00:10:244:2::10]:5656" }), "nd", "[fd00:10:244:1::10]");
    const neigh = async (ns: string): Promise<Array<{ dst: string; dev: string; lladdr?: string; state: string[] }>> =>
      JSON.parse(await l.run(ns, ["ip", "-6", "-j", "neigh", "show"])) as Array<{
        dst: string;
        dev: string;
        lladdr?: string;
        state: string[];
      }>;
    const macOf = async (ns: string, dev: string): Promise<string> =>
      (JSON.parse(await l.run(ns, ["ip", "-j", "link", "show", dev])) as Array<{ address: string }>)[0]!.address;
    const learned = (list: Awaited<ReturnType<typeof neigh>>, dst: string) =>
      list.find(
        (n) =>
          n.dst === dst && n.lladdr !== undefined && !n.state.includes("FAILED") && !n.state.includes("INCOMPLETE"),
      );
    const onA = await neigh("node-a");
    assert.equal(learned(onA, "2001:db8::b")?.lladdr, await macOf("node-b", "eth0"), JSON.stringify(onA));
    assert.equal(learned(onA, "fd00:10:244:1::10")?.lladdr, await macOf("pod-a1", "eth0"), JSON.stringify(onA));
    const onPod = await neigh("pod-a1");
    assert.equal(
      learned(onPod, "fd00:10:244:1::1")?.lladdr,
      await macOf("node-a", l.podInterface("pod-a1")),
      JSON.stringify(onPod),
    );
  });

  test(
    "an IPv6 Service address goes out by the default route to the router, which counts and drops it",
    T,
    async () => {
      const l = L();
      const before = await l.upstreamForwarded();
      const beforeDst = await l.upstreamForwarded("fd00:96::50");
      const lost = await echoRequest(l, "pod-a1", { udp: "[fd00:96::50]:80", timeoutMs: 500 });
      assert.match(lost[0]!.error ?? "", /timeout/i, JSON.stringify(lost));
      assert.equal((await l.upstreamForwarded("fd00:96::50")) - beforeDst, 1, "counted by destination");
      assert.ok((await l.upstreamForwarded()) > before, "counted in the total");
      // The IPv4 half still counts as before.
      assert.equal(await l.upstreamForwarded("10.96.0.50"), 0);
      const lost4 = await echoRequest(l, "pod-a1", { udp: "10.96.0.50:80", timeoutMs: 500 });
      assert.match(lost4[0]!.error ?? "", /timeout/i);
      assert.equal(await l.upstreamForwarded("10.96.0.50"), 1);
    },
  );
});

describe("an IPv6-only lab", () => {
  let lab: Lab | undefined;
  const p = `${PREFIX}s-`;

  before(async () => {
    lab = await Lab.create(ipv6Only(p));
  });

  after(async () => {
    await lab?.destroy();
    assert.deepEqual(netnsWithPrefix(p), []);
  });

  test("has no IPv4 anywhere but loopback, and IPv6 between pods, nodes and the external client", T, async () => {
    const l = lab!;
    assert.equal(l.hasIPv4, false);
    assert.throws(() => l.upstreamIP(), /no IPv4/);
    assert.throws(() => l.nodeIP("node-a"), /no IPv4/);
    for (const ns of ["node-a", "node-b", "pod-a1", "pod-b1", "ext", "upstream"]) {
      const v4 = await l.run(ns, ["ip", "-o", "-4", "addr", "show"]);
      assert.deepEqual(
        v4.split("\n").filter((x) => x && !/ lo /.test(x)),
        [],
        `${ns} has IPv4 addresses`,
      );
      assert.equal((await l.run(ns, ["ip", "-4", "route", "show"])).trim(), "", `${ns} has IPv4 routes`);
    }
    // node-b's pods are behind a bridge (cni0) carrying the gateway with the /64.
    assert.ok((await globalAddrs6(l, "node-b")).some((a) => a.local === "fd00:10:244:2::1" && a.prefixlen === 64));
    await startEchoServer(l, "pod-b1", { name: "b1", tcp: [8080], udp: [5353], bind: "::" });
    await startEchoServer(l, "pod-a1", { name: "a1", tcp: [8080], udp: [5353], bind: "::" });
    for (const proto of ["tcp", "udp"] as const) {
      const port = proto === "tcp" ? 8080 : 5353;
      assertReplies(
        await echoRequest(l, "pod-a1", { [proto]: `[fd00:10:244:2::10]:${port}`, count: 2 }),
        "b1",
        "[fd00:10:244:1::10]",
      );
      assertReplies(
        await echoRequest(l, "pod-b1", { [proto]: `[fd00:10:244:1::10]:${port}` }),
        "a1",
        "[fd00:10:244:2::10]",
      );
      assertReplies(await echoRequest(l, "node-a", { [proto]: `[fd00:10:244:2::10]:${port}` }), "b1", "[2001:db8::a]");
    }
    await startEchoServer(l, "node-a", { name: "na", tcp: [8081], bind: "::" });
    assertReplies(await echoRequest(l, "ext", { tcp: "[2001:db8::a]:8081" }), "na", "[2001:db8:100::10]");
    const before = await l.upstreamForwarded();
    await echoRequest(l, "node-b", { udp: "[2001:db8:ffff::1]:53", timeoutMs: 300 });
    assert.equal((await l.upstreamForwarded()) - before, 1);
  });
});

describe("IPv6 lab teardown", () => {
  test("destroy removes every namespace of a dual-stack lab, and its processes", T, async () => {
    const p = `${PREFIX}d-`;
    const lab = await Lab.create(dualStack(p));
    try {
      const srv = await startEchoServer(lab, "pod-b1", { name: "x", tcp: [1234], bind: "::" });
      assert.equal(netnsWithPrefix(p).length, 8);
      await lab.destroy();
      assert.deepEqual(netnsWithPrefix(p), []);
      assert.ok(srv.exitCode !== null || srv.signalCode !== null, "the echo server was killed");
    } finally {
      await lab.destroy().catch(() => {});
    }
  });

  test("specs the lab cannot build are refused before anything is made", T, async () => {
    const p = `${PREFIX}v-`;
    const mixed = dualStack(p);
    delete mixed.nodes[1]!.ip6;
    await assert.rejects(Lab.create(mixed), /same address families/);
    const noCIDR = dualStack(p);
    delete noCIDR.nodes[0]!.podCIDR6;
    await assert.rejects(Lab.create(noCIDR), /no podCIDR6/);
    const v6PodOnV4Node = dualStack(p);
    v6PodOnV4Node.nodes.forEach((n) => {
      delete n.ip6;
      delete n.podCIDR6;
    });
    delete v6PodOnV4Node.external!.ip6;
    await assert.rejects(Lab.create(v6PodOnV4Node), /has an ip6 but its node/);
    const bad = ipv6Only(p);
    bad.nodes[0]!.pods[0]!.ip6 = "fd00:10:244:1::g";
    await assert.rejects(Lab.create(bad), /invalid IPv6/);
    const router = ipv6Only(p);
    router.nodes[0]!.ip6 = "2001:db8::1";
    await assert.rejects(Lab.create(router), /upstream router/);
    assert.deepEqual(netnsWithPrefix(p), []);
  });

  test("a create that fails while configuring IPv6 links removes what it made", T, async () => {
    const p = `${PREFIX}g-`;
    const s = ipv6Only(p);
    // Valid syntax, but the kernel refuses a multicast address as a route's gateway, after the namespaces,
    // sysctls, bridge and some links exist.
    s.nodes[0]!.ip6 = "ff02::a";
    s.nodes[1]!.ip6 = "ff02::b";
    const r = await createOutcome(s);
    assert.deepEqual(netnsWithPrefix(p), []);
    assert.match(r, /lab: ip .*failed/, "expected the kernel to refuse the spec");
  });
});
