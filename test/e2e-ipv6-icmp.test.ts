// End to end, ICMPv6 errors about translated flows and IPv6 fragments (bpf/lib/icmp6.h, frag6.h), with real
// sockets in the dual-stack two-node lab (docs/lab.md), as test/e2e-icmp-frag.test.ts does for IPv4. The daemon
// on node-a serves an IPv6 ClusterIP from its manifest folder; one backend is a pod on node-a, one on node-b
// (which runs no bpfproxy and is the router before its pod). A connected UDP socket to a port its backend does
// not listen on sees ECONNREFUSED (the backend's ICMPv6 port unreachable, from the frontend); a 3000-byte UDP
// datagram crosses the ClusterIP in fragments and its 3000-byte answer comes back; TCP through the Service
// across a hop with a smaller MTU completes because the Packet Too Big reaches the client's socket quoting what
// it sent (path-MTU discovery: IPv6 routers never fragment), once from the router past this node and once from
// this node itself; hop limit exceeded at this node fails the client's connect at once; a NodePort backend's
// large answers toward an outside client cross a smaller hop because the Packet Too Big about them reaches the
// backend. Every wait is bounded; everything the test makes is removed after, also on failure.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import type { AttemptResult } from "../src/lab/echo.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { endpointSlice, manifest, node, service, type PortSpec } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP_LOCAL = "fd00:96::40";
const VIP_REMOTE = "fd00:96::41";
const CLIENT = "fd00:10:244:1::20";
const NODE_A = "2001:db8::a";
const NODE_B = "2001:db8::b";
const EXT = "2001:db8:100::10";
const POD = { "web-1": "fd00:10:244:1::5", "remote-1": "fd00:10:244:2::5" } as const;

const PORTS: PortSpec[] = [
  { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
  { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
  // Nothing listens on 5354 in the backend: its kernel answers with ICMPv6 port unreachable.
  { name: "closed", port: 54, targetPort: 5354, protocol: "UDP" },
];

function objects(): unknown[] {
  const v6 = (name: string, vip: string, pod: keyof typeof POD, nodeName: string) => {
    const slice = {
      ...endpointSlice(name, PORTS, [{ ip: POD[pod], node: nodeName }]),
      addressType: "IPv6",
    };
    return [
      service(name, vip, PORTS, {
        spec: { clusterIPs: [vip], ipFamilies: ["IPv6"], ipFamilyPolicy: "SingleStack" },
      }),
      slice,
    ];
  };
  return [
    node("node-a", "192.0.2.11", ["10.244.1.0/24", "fd00:10:244:1::/64"]),
    ...v6("local", VIP_LOCAL, "web-1", "node-a"),
    ...v6("remote", VIP_REMOTE, "remote-1", "node-b"),
    // A NodePort (externalTrafficPolicy Cluster) to the backend on node-a: its answers to an outside client
    // leave node-a masqueraded.
    service("np", "fd00:96::42", [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30080 }], {
      spec: { type: "NodePort", clusterIPs: ["fd00:96::42"], ipFamilies: ["IPv6"], ipFamilyPolicy: "SingleStack" },
    }),
    {
      ...endpointSlice(
        "np",
        [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
        [{ ip: POD["web-1"], node: "node-a" }],
      ),
      addressType: "IPv6",
    },
  ];
}

const ready = (s: DataplaneStatus) =>
  s.frontends.filter((f) => f.backends.length > 0 && (f.address === VIP_LOCAL || f.address === VIP_REMOTE)).length ===
    6 && s.frontends.some((f) => f.address === NODE_A && f.port === 30080 && f.backends.length === 1);

function assertRefused(results: AttemptResult[], what: string): void {
  for (const r of results) {
    assert.equal(r.ok, false, `${what}: ${JSON.stringify(r)}`);
    assert.match(r.error ?? "", /ECONNREFUSED/, `${what}: ${JSON.stringify(r)}`);
    assert.ok(r.ms < 1000, `${what}: refused after ${r.ms} ms, expected at once`);
  }
}

describe("ICMPv6 errors and IPv6 fragments end to end", { timeout: 240_000 }, () => {
  let lab: Lab;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-e2e-ipv6icmp-"));
    writeFileSync(join(dir, "services.yaml"), manifest(objects()));
    lab = await Lab.create({
      prefix: `bpx6i${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          ip6: NODE_A,
          podCIDR6: "fd00:10:244:1::/64",
          pods: [
            { name: "web-1", ip: "10.244.1.5", ip6: POD["web-1"] },
            { name: "client", ip: "10.244.1.20", ip6: CLIENT },
          ],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          ip6: NODE_B,
          podCIDR6: "fd00:10:244:2::/64",
          pods: [{ name: "remote-1", ip: "10.244.2.5", ip6: POD["remote-1"] }],
        },
      ],
      external: { name: "ext", ip: "198.51.100.10", ip6: EXT },
    });
    for (const pod of ["web-1", "remote-1"])
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], bind: "::" });
    bpffs = PrivateBpffs.create("e2e-ipv6-icmp");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      devices: ["eth0"],
      clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
    });
    await proxy.waitForStatus(ready, 15_000);
  });

  after(() => teardownLab({ proxies: [proxy], lab, bpffs: [bpffs], dirs: [dir] }));

  const translated = async () => (await proxy!.status()).counters.icmp_translated?.packets ?? 0;

  test("a connected UDP socket to an IPv6 ClusterIP whose backend has no listener gets ECONNREFUSED (backend on this node and on another)", async () => {
    const before = await translated();
    assertRefused(
      await echoRequest(lab, "client", { udp: `[${VIP_LOCAL}]:54`, count: 3, timeoutMs: 3000 }),
      "local backend",
    );
    assertRefused(
      await echoRequest(lab, "client", { udp: `[${VIP_REMOTE}]:54`, count: 3, timeoutMs: 3000 }),
      "remote backend",
    );
    const after = await translated();
    assert.ok(after - before >= 6, `icmp_translated went from ${before} to ${after}`);
  });

  test("a 3000-byte UDP datagram through an IPv6 ClusterIP is delivered in fragments and its 3000-byte answer comes back", async () => {
    const payload = "q".repeat(2999); // + the newline the tool adds: 3000 bytes, more than one 1500-byte packet
    for (const [vip, name] of [
      [VIP_LOCAL, "web-1"],
      [VIP_REMOTE, "remote-1"],
    ] as const) {
      const results = await echoRequest(lab, "client", { udp: `[${vip}]:53`, count: 3, timeoutMs: 3000, payload });
      for (const r of results) {
        assert.ok(r.ok, `${name}: ${JSON.stringify(r).slice(0, 300)}`);
        // A connected socket accepts only datagrams from [VIP]:53, so the reassembled answer was reverse-translated.
        assert.ok(r.reply!.startsWith(`${name} [${CLIENT}]:`), `${name}: answered by ${r.reply!.slice(0, 60)}`);
        assert.equal(r.reply!.length, 3000, `${name}: the answer is as long as the question`);
      }
    }
  });

  // 60 000 bytes in one line (the echo server answers once the line is complete, and keeps at most 64 KiB of
  // one): about 42 full-size segments each way. Four connections: 480 KB through the Service.
  const bulk = "b".repeat(60_000);

  test("PMTU: TCP through an IPv6 ClusterIP completes across a 1400-byte hop on the backend's node (Packet Too Big from a router past this node)", async () => {
    // The backend's own interface keeps 1500 (its SYN-ACK advertises MSS 1440); node-b's route to it is
    // smaller (a locked route MTU: forwarding uses it), and node-b, a router for this flow, answers the client's
    // full-size segments with Packet Too Big. (A smaller MTU on the veth itself would also drop the backend's
    // full-size answers, which nothing would report.)
    const route = (mtu: string[]) => [
      "ip",
      "-6",
      "route",
      "replace",
      `${POD["remote-1"]}/128`,
      "dev",
      lab.podInterface("remote-1"),
      ...mtu,
    ];
    await lab.run("node-b", route(["mtu", "lock", "1400"]));
    try {
      const before = await translated();
      const results = await echoRequest(lab, "client", {
        tcp: `[${VIP_REMOTE}]:80`,
        count: 4,
        timeoutMs: 20_000,
        payload: bulk,
      });
      for (const r of results) {
        assert.ok(r.ok, JSON.stringify(r).slice(0, 300));
        assert.ok(r.reply!.startsWith(`remote-1 [${CLIENT}]:`), r.reply!.slice(0, 60));
        assert.equal(r.reply!.length, bulk.length, "the whole answer arrived");
      }
      const learnt = await lab.run("client", ["ip", "-6", "route", "get", VIP_REMOTE]);
      assert.match(learnt, /mtu 1400/, `the client learnt the path MTU: ${learnt}`);
      assert.ok((await translated()) > before, "the Packet Too Big was translated");
    } finally {
      await lab.run("node-b", route([]));
    }
  });

  test("PMTU: TCP through an IPv6 ClusterIP completes when this node itself must send Packet Too Big (translated at tc egress)", async () => {
    // The DNATed segments leave by node-a's route to the backend, whose MTU is now below the client's: the stack
    // answers the client with Packet Too Big about client -> backend.
    const route = (mtu: string[]) => [
      "ip",
      "-6",
      "route",
      "replace",
      `${POD["web-1"]}/128`,
      "dev",
      lab.podInterface("web-1"),
      ...mtu,
    ];
    await lab.run("node-a", route(["mtu", "lock", "1300"]));
    try {
      const results = await echoRequest(lab, "client", {
        tcp: `[${VIP_LOCAL}]:80`,
        count: 4,
        timeoutMs: 20_000,
        payload: bulk,
      });
      for (const r of results) {
        assert.ok(r.ok, JSON.stringify(r).slice(0, 300));
        assert.ok(r.reply!.startsWith(`web-1 [${CLIENT}]:`), r.reply!.slice(0, 60));
        assert.equal(r.reply!.length, bulk.length, "the whole answer arrived");
      }
      const learnt = await lab.run("client", ["ip", "-6", "route", "get", VIP_LOCAL]);
      assert.match(learnt, /mtu 1300/, `the client learnt the path MTU: ${learnt}`);
    } finally {
      await lab.run("node-a", route([]));
    }
  });

  test("hop limit exceeded at this node for a DNATed SYN reaches the client's socket: connect fails with EHOSTUNREACH as fast as to the pod itself", async () => {
    // The client's packets leave with hop limit 1: node-a, forwarding the DNATed SYN, answers with Time Exceeded
    // about client -> backend, which must reach the client about client -> ClusterIP. Linux takes an ICMPv6
    // Time Exceeded for a SYN as fatal on the retransmission (about 1 s; IPv4's on the first), so the measure is
    // the same connect to the backend pod directly: untranslated, the errors never reach the socket and the
    // connect runs into its 5 s timeout.
    const limit = "/proc/sys/net/ipv6/conf/eth0/hop_limit"; // the client pod's own namespace
    await lab.run("client", ["sh", "-c", `echo 1 > ${limit}`]);
    try {
      const attempt = (target: string) => echoRequest(lab, "client", { tcp: target, count: 3, timeoutMs: 5000 });
      const direct = await attempt(`[${POD["remote-1"]}]:8080`);
      const viaService = await attempt(`[${VIP_REMOTE}]:80`);
      for (const r of [...direct, ...viaService]) {
        assert.equal(r.ok, false, JSON.stringify(r));
        assert.match(r.error ?? "", /EHOSTUNREACH/, JSON.stringify(r));
      }
      const slowest = Math.max(...direct.map((r) => r.ms));
      for (const r of viaService)
        assert.ok(r.ms < slowest + 1000, `failed after ${r.ms} ms; to the pod itself after at most ${slowest} ms`);
    } finally {
      await lab.run("client", ["sh", "-c", `echo 64 > ${limit}`]);
    }
  });

  test("PMTU: a large answer from an IPv6 NodePort backend crosses a 1400-byte hop toward the client (Packet Too Big about the reply, sent to the backend)", async () => {
    // node-a reaches the external client through node-b, a router whose route to the client has MTU 1400:
    // node-b answers the backend's full-size segments ([NODE_A]:30080 -> client, masqueraded) with Packet Too
    // Big addressed to NODE_A; node-a must hand it to the backend, quoting what the backend sent.
    // node-b sees one side of these flows only: the lab's FORWARD ctstate INVALID DROP (a node's ruleset) would
    // drop its segments; a transit router does not. Removed for this test and put back after, nothing else.
    const invalidRule = ["FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"];
    await lab.run("node-b", ["ip6tables", "-D", ...invalidRule]);
    try {
      await lab.run("node-b", ["ip", "-6", "route", "replace", `${EXT}/128`, "dev", "eth0", "mtu", "1400"]);
      await lab.run("node-a", ["ip", "-6", "route", "replace", `${EXT}/128`, "via", NODE_B, "dev", "eth0"]);
      const before = await translated();
      const [r] = await echoRequest(lab, "ext", {
        tcp: `[${NODE_A}]:30080`,
        count: 1,
        timeoutMs: 15_000,
        payload: bulk,
      });
      assert.ok(r!.ok, JSON.stringify(r).slice(0, 300));
      assert.ok(r!.reply!.startsWith(`web-1 [${NODE_A}]:`), r!.reply!.slice(0, 60));
      assert.equal(r!.reply!.length, bulk.length, "the whole answer arrived");
      const route = await lab.run("web-1", ["ip", "-6", "route", "get", NODE_A]);
      assert.match(route, /mtu 1400/, `the backend learnt the path MTU: ${route}`);
      assert.ok((await translated()) > before, "the Packet Too Big was translated");
    } finally {
      await lab.run("node-b", ["ip6tables", "-A", ...invalidRule]);
      await lab.run("node-a", ["ip", "-6", "route", "del", `${EXT}/128`]).catch(() => undefined);
      await lab.run("node-b", ["ip", "-6", "route", "del", `${EXT}/128`]).catch(() => undefined);
    }
  });
});
