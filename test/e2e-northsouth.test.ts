// End to end, north–south: an external client and pods reach NodePort, LoadBalancer and externalIP frontends on
// two lab nodes (the real daemon on each), backends on both nodes and on a node's host network. Each test asserts
// what the backend saw (its name and the peer address in the reply) and what the client saw: echo requests use
// connected sockets (TCP, and UDP with connect()), so a reply from any other address than the one the client
// connected to is never received and counts as a failure. Everything is made in namespaces the lab owns.
// Once per address family: IPv4 Services on an IPv4 lab, and IPv6 single-stack Services on a dual-stack lab (the
// same tests with each address in the other family; the few checks that read an IPv4-only map or counter say so).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, prepareLabForXdp, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { hostPort } from "../src/format.js";
import type { AttemptResult } from "../src/lab/echo.js";
import { sendSpoofedTcp } from "../src/lab/spoof.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

/** Every address a test uses, in one family. */
interface Addrs {
  family: 4 | 6;
  NODE_A: string;
  NODE_B: string;
  /** A second address on node-a's eth0: NodePorts are served there too (default). */
  NODE_A_2: string;
  /** A second address on node-b, outside node-b's --nodeport-addresses. */
  NODE_B_2: string;
  EXT: string;
  EXT_2: string;
  POD: { webA: string; client: string; webB: string };
  LB_LOCAL: string;
  LB_ALLOWED: string;
  LB_DENIED: string;
  EXT_IP: string;
  /** ClusterIP n of the Services (50-56). */
  vip: (n: number) => string;
  /** The external client's network (inside lb-allowed's ranges) and the LB network (lb-denied's). */
  extNet: string;
  lbNet: string;
  vipNet: string;
  podNet: (node: "a" | "b") => string;
  hostLen: number;
  extraLen: number;
  wildcard: string;
  loopback: string;
}
const V4: Addrs = {
  family: 4,
  NODE_A: "192.0.2.11",
  NODE_B: "192.0.2.12",
  NODE_A_2: "192.0.2.111",
  NODE_B_2: "192.0.2.112",
  EXT: "198.51.100.10",
  EXT_2: "198.51.100.11",
  POD: { webA: "10.244.1.5", client: "10.244.1.20", webB: "10.244.2.5" },
  LB_LOCAL: "203.0.113.10",
  LB_ALLOWED: "203.0.113.20",
  LB_DENIED: "203.0.113.21",
  EXT_IP: "203.0.113.30",
  vip: (n) => `10.96.0.${n}`,
  extNet: "198.51.100.0/24",
  lbNet: "203.0.113.0/24",
  vipNet: "10.96.0.0/16",
  podNet: (n) => (n === "a" ? "10.244.1.0/24" : "10.244.2.0/24"),
  hostLen: 32,
  extraLen: 24,
  wildcard: "0.0.0.0",
  loopback: "127.0.0.1",
};
const V6: Addrs = {
  family: 6,
  NODE_A: "2001:db8::a",
  NODE_B: "2001:db8::b",
  NODE_A_2: "2001:db8::1a",
  NODE_B_2: "2001:db8::1b",
  EXT: "2001:db8:100::10",
  EXT_2: "2001:db8:100::11",
  POD: { webA: "fd00:10:244:1::5", client: "fd00:10:244:1::20", webB: "fd00:10:244:2::5" },
  LB_LOCAL: "2001:db8:1b::10",
  LB_ALLOWED: "2001:db8:1b::20",
  LB_DENIED: "2001:db8:1b::21",
  EXT_IP: "2001:db8:1b::30",
  vip: (n) => `fd00:96::${n}`,
  extNet: "2001:db8:100::/64",
  lbNet: "2001:db8:1b::/64",
  vipNet: "fd00:96::/112",
  podNet: (n) => (n === "a" ? "fd00:10:244:1::/64" : "fd00:10:244:2::/64"),
  hostLen: 128,
  extraLen: 64,
  wildcard: "::",
  loopback: "::1",
};
const hp = hostPort;
/** A regular expression matching `address:port` (any port) as the echo server prints its peer. */
const peerRe = (address: string) => (address.includes(":") ? `\\[${address}\\]` : address.replace(/\./g, "\\."));
const HC_PORT = 32001;

type Ep = { ip: string; node: string };

function manifests(A: Addrs): string {
  const { NODE_A, NODE_B, POD, LB_LOCAL, LB_ALLOWED, LB_DENIED, EXT_IP } = A;
  const v6 = A.family === 6;
  const ports = (np: number, npUdp: number) => [
    { name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: np },
    { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", nodePort: npUdp },
  ];
  const svc = (
    name: string,
    clusterIP: string,
    spec: Record<string, unknown>,
    status: Record<string, unknown> = {},
  ) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: {
      clusterIP,
      clusterIPs: [clusterIP],
      ...(v6 ? { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] } : {}),
      ...spec,
    },
    status,
  });
  const slice = (svcName: string, eps: Ep[], port = 8080, udpPort = 5353) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: v6 ? "IPv6" : "IPv4",
    metadata: { name: `${svcName}-1`, namespace: "default", labels: { "kubernetes.io/service-name": svcName } },
    ports: [
      { name: "http", port, protocol: "TCP" },
      { name: "dns", port: udpPort, protocol: "UDP" },
    ],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: e.node,
    })),
  });
  // A dual-stack node on the IPv6 run (its IPv4 address too, as the lab gives it both).
  const nodeAddresses = (ip: string, ip4: string) =>
    v6 ? [ip4, ip].map((address) => ({ type: "InternalIP", address })) : [{ type: "InternalIP", address: ip }];
  const lbStatus = (ip: string) => ({ loadBalancer: { ingress: [{ ip, ipMode: "VIP" }] } });
  const both: Ep[] = [
    { ip: POD.webA, node: "node-a" },
    { ip: POD.webB, node: "node-b" },
  ];
  return [
    svc("np", A.vip(50), { type: "NodePort", ports: ports(30080, 30053) }),
    slice("np", both),
    svc("np-remote", A.vip(51), { type: "NodePort", ports: ports(30090, 30091) }),
    slice("np-remote", [{ ip: POD.webB, node: "node-b" }]),
    svc(
      "lb-local",
      A.vip(52),
      {
        type: "LoadBalancer",
        externalTrafficPolicy: "Local",
        healthCheckNodePort: HC_PORT,
        ports: ports(30081, 30054),
      },
      lbStatus(LB_LOCAL),
    ),
    slice("lb-local", [{ ip: POD.webA, node: "node-a" }]),
    svc(
      "lb-allowed",
      A.vip(53),
      { type: "LoadBalancer", loadBalancerSourceRanges: [A.extNet], ports: ports(30082, 30055) },
      lbStatus(LB_ALLOWED),
    ),
    slice("lb-allowed", both),
    svc(
      "lb-denied",
      A.vip(54),
      { type: "LoadBalancer", loadBalancerSourceRanges: [A.lbNet], ports: ports(30083, 30056) },
      lbStatus(LB_DENIED),
    ),
    slice("lb-denied", both),
    svc("ext-ip", A.vip(55), {
      type: "ClusterIP",
      externalIPs: [EXT_IP],
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
        { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
      ],
    }),
    slice("ext-ip", [{ ip: POD.webB, node: "node-b" }]),
    // A host-network backend: a socket on node-b's own address (as the API server on a control-plane node).
    svc("host-b", A.vip(56), { type: "NodePort", ports: ports(30092, 30093) }),
    slice("host-b", [{ ip: NODE_B, node: "node-b" }], 8081, 5354),
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a" },
      status: { addresses: nodeAddresses(NODE_A, "192.0.2.11") },
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-b" },
      status: { addresses: nodeAddresses(NODE_B, "192.0.2.12") },
    },
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

/** Reply lines are "<backend name> <peer ip>:<peer port>". */
function tally(results: AttemptResult[]): {
  byName: Map<string, number>;
  peers: Set<string>;
  failures: AttemptResult[];
} {
  const byName = new Map<string, number>();
  const peers = new Set<string>();
  const failures: AttemptResult[] = [];
  for (const r of results) {
    if (!r.ok || !r.reply) {
      failures.push(r);
      continue;
    }
    const [name, peer] = r.reply.trim().split(" ");
    byName.set(name!, (byName.get(name!) ?? 0) + 1);
    // "ip4:port" or "[ip6]:port"
    peers.add(`${name} ${/^\[(.*)\]:\d+$/.exec(peer!)?.[1] ?? peer!.split(":")[0]!}`);
  }
  return { byName, peers, failures };
}

// The same tests on the tc path and with XDP in front of it. Pods' veths are always as CNIs leave them (GRO
// off, tx checksum offload on). "wire": the network's veths stand in for NICs (prepareLabForXdp: full
// checksums, and a peer that takes XDP_TX), so XDP carries traffic itself; "veth": every veth at the kernel's
// defaults, as on a node whose own device is a veth (kind, nested containers): CHECKSUM_PARTIAL frames reach
// XDP and its eth0 cannot take native XDP frames, so native XDP must pass to tc.
// IPv6: tc alone, and native XDP (what --xdp auto picks on every real NIC) on both kinds of wire.
const RUNS = [
  { family: 4, xdp: "off", wire: "veth" },
  { family: 4, xdp: "generic", wire: "wire" },
  { family: 4, xdp: "native", wire: "wire" },
  { family: 4, xdp: "generic", wire: "veth" },
  { family: 4, xdp: "native", wire: "veth" },
  { family: 6, xdp: "off", wire: "veth" },
  { family: 6, xdp: "native", wire: "wire" },
  { family: 6, xdp: "native", wire: "veth" },
] as const;
for (const { family, xdp, wire } of RUNS)
  describe(
    `north–south end to end, IPv${family} (xdp ${xdp}${xdp === "off" ? "" : `, ${wire}`})`,
    { timeout: 300_000 },
    () => {
      const A = family === 4 ? V4 : V6;
      const { NODE_A, NODE_B, NODE_A_2, NODE_B_2, EXT, EXT_2, POD, LB_LOCAL, LB_ALLOWED, LB_DENIED, EXT_IP } = A;
      const v6 = family === 6;
      // The IPv6 run's lab is dual-stack (its nodes keep their IPv4 addresses, as dual-stack nodes do).
      const clusterCIDRs = v6 ? ["10.244.0.0/16", "fd00:10:244::/56"] : ["10.244.0.0/16"];
      // The second addresses are served, never a source (as an IPv4 secondary address is not): IPv6 would otherwise
      // pick the newest address of the prefix (RFC 6724 leaves that tie to the implementation).
      const secondary = v6 ? ["nodad", "preferred_lft", "0"] : [];
      let lab: Lab;
      let bpffsA: PrivateBpffs;
      let bpffsB: PrivateBpffs;
      let proxyA: ProxyNode | undefined;
      let proxyB: ProxyNode | undefined;
      let dir: string;

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), "bpfproxy-ns-"));
        writeFileSync(join(dir, "services.yaml"), manifests(A));
        lab = await Lab.create({
          prefix: `bpxns${process.pid}${family}${xdp[0]}${wire[0]}-`,
          nodes: v6
            ? [
                {
                  name: "node-a",
                  ip: V4.NODE_A,
                  podCIDR: "10.244.1.0/24",
                  ip6: NODE_A,
                  podCIDR6: A.podNet("a"),
                  pods: [
                    { name: "web-a", ip: V4.POD.webA, ip6: POD.webA },
                    { name: "client", ip: V4.POD.client, ip6: POD.client },
                  ],
                },
                {
                  name: "node-b",
                  ip: V4.NODE_B,
                  podCIDR: "10.244.2.0/24",
                  ip6: NODE_B,
                  podCIDR6: A.podNet("b"),
                  pods: [{ name: "web-b", ip: V4.POD.webB, ip6: POD.webB }],
                },
              ]
            : [
                {
                  name: "node-a",
                  ip: NODE_A,
                  podCIDR: "10.244.1.0/24",
                  pods: [
                    { name: "web-a", ip: POD.webA },
                    { name: "client", ip: POD.client },
                  ],
                },
                { name: "node-b", ip: NODE_B, podCIDR: "10.244.2.0/24", pods: [{ name: "web-b", ip: POD.webB }] },
              ],
          external: v6 ? { name: "ext", ip: V4.EXT, ip6: EXT } : { name: "ext", ip: EXT },
        });
        if (xdp !== "off" && wire === "wire") await prepareLabForXdp(lab);
        await lab.run("node-a", ["ip", "addr", "add", `${NODE_A_2}/${A.extraLen}`, "dev", "eth0", ...secondary]);
        await lab.run("node-b", ["ip", "addr", "add", `${NODE_B_2}/${A.extraLen}`, "dev", "eth0", ...secondary]);
        await lab.run("ext", ["ip", "addr", "add", `${EXT_2}/${A.extraLen}`, "dev", "eth0", ...secondary]);
        // The load balancer / router in front of the cluster: LB and external IPs are sent to node-a.
        await lab.run("ext", ["ip", "route", "add", A.lbNet, "via", NODE_A]);
        await lab.run("ext", ["ip", "route", "add", A.vipNet, "via", NODE_A]); // a router that sends ClusterIPs to node-a
        const bind = v6 ? { bind: "::" } : {};
        for (const pod of ["web-a", "web-b"])
          await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], ...bind });
        await startEchoServer(lab, "node-b", { name: "host-b", tcp: [8081], udp: [5354], ...bind });
        bpffsA = PrivateBpffs.create("ns-a");
        bpffsB = PrivateBpffs.create("ns-b");
        const hc = (node: string) => baseArgs(node === "node-a" ? NODE_A : NODE_B);
        proxyA = await ProxyNode.start(lab, "node-a", {
          manifestDir: dir,
          bpffs: bpffsA.path,
          clusterCIDRs,
          extraArgs: hc("node-a"),
        });
        proxyB = await ProxyNode.start(lab, "node-b", {
          manifestDir: dir,
          bpffs: bpffsB.path,
          clusterCIDRs,
          extraArgs: [...hc("node-b"), "--nodeport-addresses", `${NODE_B}/${A.hostLen}`],
        });
        // What every peer expectation below rests on: each node's own address is its source toward the other
        // node's pods, so a flow masqueraded there gets it (what MASQUERADE gives in kube-proxy).
        const srcOf = async (node: string, dst: string) =>
          /\ssrc (\S+)/.exec(await lab.run(node, ["ip", "route", "get", dst]))?.[1] ?? "";
        assert.deepEqual([await srcOf("node-a", POD.webB), await srcOf("node-b", POD.webA)], [NODE_A, NODE_B]);
        for (const p of [proxyA, proxyB])
          await p.waitForStatus(
            (s) => s.frontends.some((f) => f.service === "default/host-b" && f.type === "NodePort"),
            10_000,
          );
      });

      after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

      const baseArgs = (nodeIP: string) => [
        "--healthz-bind-address",
        hp(nodeIP, 10256),
        "--metrics-bind-address",
        "",
        "--xdp",
        xdp,
        // XDP finishes packets only when they may bypass the stack (bpf/lib/fib.h); the tc run keeps the default.
        ...(xdp === "off" ? [] : ["--bypass-netfilter"]),
      ];
      const ext = (target: string, proto: "tcp" | "udp", count = 20, ns = "ext", sportBase?: number) =>
        echoRequest(lab, ns, { [proto]: target, count, timeoutMs: 3000, sportBase });

      async function assertNodePortCluster(ns: string, peerA: string, peerB: string): Promise<void> {
        for (const node of [NODE_A, NODE_B]) {
          for (const [proto, port] of [
            ["tcp", 30080],
            ["udp", 30053],
          ] as const) {
            const t = tally(await ext(hp(node, port), proto, 30, ns));
            assert.deepEqual(t.failures, [], `${ns} → ${node}:${port}/${proto}`);
            const names = [...t.byName.keys()].sort();
            if (names.join() !== "web-a,web-b") {
              // One CI run saw 30 of 30 answered by web-a alone through node-b (xdp generic), never reproduced
              // since: name what the receiving node held, so the next occurrence says why.
              const st = await (node === NODE_A ? proxyA : proxyB)!.status();
              const held = st.frontends.filter((f) => f.port === port);
              assert.fail(
                `${node}:${port}/${proto} answered by [${names.join(", ")}], not both web-a and web-b; frontends: ${JSON.stringify(held)}; counters: ${JSON.stringify(st.counters)}`,
              );
            }
            // externalTrafficPolicy Cluster: masqueraded to the address of the node that received the traffic.
            const seen = node === NODE_A ? peerA : peerB;
            assert.deepEqual([...t.peers].sort(), [`web-a ${seen}`, `web-b ${seen}`], `${node}:${port}/${proto}`);
          }
        }
      }

      /** deepEqual(failures, []), naming both daemons' counters when it fails: one CI run (xdp generic, wire, loaded
       * host) saw one attempt of a ClusterIP test time out, never reproduced since (15,000 attempts under load). */
      async function assertNoFailures(failures: AttemptResult[], what: string): Promise<void> {
        if (failures.length === 0) return;
        const counters = await Promise.all(
          [proxyA, proxyB].map((p) =>
            p!.status().then(
              (s) => JSON.stringify(s.counters),
              (e: Error) => e.message,
            ),
          ),
        );
        assert.deepEqual(failures, [], `${what}; counters: node-a ${counters[0]}; node-b ${counters[1]}`);
      }

      test("NodePort (Cluster policy) from outside: both nodes, backends on both, TCP and UDP, masqueraded to the receiving node", async () => {
        await assertNodePortCluster("ext", NODE_A, NODE_B);
      });

      test("a 3000-byte UDP datagram from outside to a NodePort arrives in fragments at either node, and its 3000-byte answer comes back", async () => {
        const payload = "q".repeat(2999); // + newline: 3000 bytes, sent as two fragments; the answer is as long
        for (const node of [NODE_A, NODE_B]) {
          const results = await echoRequest(lab, "ext", { udp: hp(node, 30053), count: 6, timeoutMs: 3000, payload });
          for (const r of results) {
            assert.ok(r.ok, `${node}: ${JSON.stringify(r).slice(0, 300)}`);
            assert.match(r.reply!, new RegExp(`^web-[ab] ${peerRe(node)}:`), `${node}: masqueraded to the node`);
            assert.equal(r.reply!.length, 3000, `${node}: answer length`);
          }
        }
      });

      test("NodePorts are served on every local address by default, and only inside --nodeport-addresses when set", async () => {
        const a = tally(await ext(`${NODE_A_2}:30080`, "tcp", 6));
        assert.deepEqual(a.failures, []);
        // Not served: nothing listens there, the node's own stack refuses.
        const b = await ext(`${NODE_B_2}:30080`, "tcp", 2);
        for (const r of b) assert.match(r.error ?? "", /ECONNREFUSED/, JSON.stringify(r));
        const stA = await proxyA!.status();
        const npA = stA.frontends
          .filter((f) => f.service === "default/np" && f.type === "NodePort" && f.protocol === "TCP")
          .map((f) => f.address)
          .sort();
        assert.ok(npA.includes(NODE_A) && npA.includes(NODE_A_2), JSON.stringify(npA));
        assert.ok(!npA.includes(A.loopback), "never on loopback");
        const stB = await proxyB!.status();
        const npB = stB.frontends
          .filter((f) => f.service === "default/np" && f.type === "NodePort" && f.protocol === "TCP")
          .map((f) => f.address);
        assert.deepEqual(npB, [NODE_B]);
        // IPv4: one wildcard entry per NodePort in the service map, however many addresses serve it, and the
        // addresses in a map of their own. (IPv6 NodePorts are an entry per address: the frontends above.)
        if (!v6) assert.ok(stA.maps[MAP_NAMES.nodePortAddrs]!.entries >= 3, JSON.stringify(stA.maps));
      });

      test("a backend on the other node only: two clients with the same source port at once both get answers", async () => {
        // Two sockets bound to the same port on two client addresses, to a NodePort whose only backend is remote:
        // both are masqueraded to node-a's address; the allocator must give them different ports.
        const script = `
      const net = require("node:net");
      const one = (localAddress) => new Promise((resolve) => {
        const s = net.connect({ host: "${NODE_A}", port: 30090, localAddress, localPort: 40123 });
        let buf = ""; s.setTimeout(3000, () => { s.destroy(); resolve("timeout"); });
        s.on("connect", () => s.write("hi\\n")); s.on("data", (d) => { buf += d; if (buf.includes("\\n")) { s.end(); resolve(buf.trim()); } });
        s.on("error", (e) => resolve("error " + e.code));
      });
      Promise.all([one("${EXT}"), one("${EXT_2}")]).then((r) => console.log(JSON.stringify(r)));`;
        const r = await lab.exec("ext", [process.execPath, "-e", script], { timeoutMs: 10_000 });
        const replies = JSON.parse(r.stdout.trim()) as string[];
        assert.equal(replies.length, 2);
        for (const line of replies)
          assert.match(line, new RegExp(`^web-b ${peerRe(NODE_A)}:\\d+$`), JSON.stringify(replies));
        const port = (line: string) => line.slice(line.lastIndexOf(":") + 1);
        assert.notEqual(port(replies[0]!), port(replies[1]!), "distinct SNAT ports");
        const udp = tally(await ext(hp(NODE_A, 30091), "udp", 10));
        assert.deepEqual(udp.failures, []);
        assert.deepEqual([...udp.peers], [`web-b ${NODE_A}`]);
      });

      test("externalTrafficPolicy Local: the backend sees the client; a node without local backends drops and its health check says 503", async () => {
        for (const [proto, port] of [
          ["tcp", 30081],
          ["udp", 30054],
        ] as const) {
          const t = tally(await ext(hp(NODE_A, port), proto, 10));
          assert.deepEqual(t.failures, []);
          assert.deepEqual([...t.peers], [`web-a ${EXT}`], `${proto}: the client's own address`);
        }
        const before = (await proxyB!.status()).counters.drop_no_local_backend!.packets;
        // Expected to time out: both attempts at once (one after the other each waited its whole timeout).
        const dropped = await echoRequest(lab, "ext", {
          tcp: hp(NODE_B, 30081),
          count: 2,
          timeoutMs: 3000,
          parallel: true,
        });
        for (const r of dropped) assert.match(r.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(r));
        assert.ok((await proxyB!.status()).counters.drop_no_local_backend!.packets > before);
        const health = async (node: string) => {
          const js = `fetch("http://${hp(node, HC_PORT)}/").then((r) => console.log(r.status)).catch((e) => console.log("error " + e.message))`;
          for (let i = 0; i < 50; i++) {
            const out = (await lab.exec("ext", [process.execPath, "-e", js], { timeoutMs: 10_000 })).stdout.trim();
            if (/^\d+$/.test(out)) return Number(out);
            await new Promise((res) => setTimeout(res, 200));
          }
          return -1;
        };
        assert.equal(await health(NODE_A), 200);
        assert.equal(await health(NODE_B), 503);
      });

      test("LoadBalancer IP (Local) and externalIP (remote backend) behave like NodePort on the node that receives them", async () => {
        for (const proto of ["tcp", "udp"] as const) {
          const lb = tally(await ext(hp(LB_LOCAL, proto === "tcp" ? 80 : 53), proto, 10));
          assert.deepEqual(lb.failures, []);
          assert.deepEqual([...lb.peers], [`web-a ${EXT}`]);
          const xi = tally(await ext(hp(EXT_IP, proto === "tcp" ? 80 : 53), proto, 10));
          assert.deepEqual(xi.failures, []);
          assert.deepEqual([...xi.peers], [`web-b ${NODE_A}`]);
        }
      });

      test("loadBalancerSourceRanges: inside the ranges served, outside dropped and counted", async () => {
        for (const proto of ["tcp", "udp"] as const) {
          const ok = tally(await ext(hp(LB_ALLOWED, proto === "tcp" ? 80 : 53), proto, 10));
          assert.deepEqual(ok.failures, []);
        }
        const before = (await proxyA!.status()).counters.drop_source_range!.packets;
        const upstream = await lab.upstreamForwarded(LB_DENIED);
        const upstreamAll = await lab.upstreamForwarded();
        // Dropped, so never answered: a timeout, not a refusal or an unreachable (which the stack or a router
        // would send had the packet got past bpfproxy). The TCP client retransmits its SYN within its timeout.
        // All four attempts at once: one after the other each waited its whole 3 s.
        const denied = await Promise.all(
          (["tcp", "udp"] as const).map((proto) =>
            echoRequest(lab, "ext", {
              [proto]: hp(LB_DENIED, proto === "tcp" ? 80 : 53),
              count: 2,
              timeoutMs: 3000,
              parallel: true,
            }),
          ),
        );
        for (const r of denied.flat()) assert.match(r.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(r));
        const dropped = (await proxyA!.status()).counters.drop_source_range!.packets - before;
        assert.ok(dropped >= 4, `4 attempts, ${dropped} counted as source-range drops`);
        // Nothing of it went on to the default route (node-a has no route for the LB address but the default).
        console.log(`# source ranges: forwarded upstream meanwhile: ${(await lab.upstreamForwarded()) - upstreamAll}`);
        assert.equal(await lab.upstreamForwarded(LB_DENIED), upstream, "no denied packet was forwarded upstream");
      });

      test("pods reach NodePorts of their own node and of the other node", async () => {
        for (const node of [NODE_A, NODE_B]) {
          const t = tally(await ext(hp(node, 30080), "tcp", 20, "client"));
          assert.deepEqual(t.failures, [], node);
          assert.deepEqual([...t.byName.keys()].sort(), ["web-a", "web-b"]);
          const u = tally(await ext(hp(node, 30053), "udp", 20, "client"));
          assert.deepEqual(u.failures, [], node);
        }
      });

      test("host-network backend: reached from outside through either node, and from a pod through its ClusterIP", async () => {
        for (const node of [NODE_A, NODE_B]) {
          const t = tally(await ext(hp(node, 30092), "tcp", 6));
          assert.deepEqual(t.failures, [], node);
          assert.deepEqual([...t.byName.keys()], ["host-b"]);
          const u = tally(await ext(hp(node, 30093), "udp", 6));
          assert.deepEqual(u.failures, [], node);
        }
        // node-b's own socket, through node-b: not masqueraded (delivered locally), replies leave through tc egress.
        assert.deepEqual([...tally(await ext(hp(NODE_B, 30092), "tcp", 3)).peers], [`host-b ${EXT}`]);
        const pod = tally(await ext(hp(A.vip(56), 80), "tcp", 6, "web-b"));
        assert.deepEqual(pod.failures, []);
        assert.deepEqual([...pod.peers], [`host-b ${POD.webB}`]);
      });

      test("hairpin: a backend reaching its own Service lands on itself too, masqueraded to the node", async () => {
        for (const [proto, target] of [
          ["tcp", hp(A.vip(50), 80)],
          ["udp", hp(A.vip(50), 53)],
        ] as const) {
          const t = tally(await ext(target, proto, 40, "web-a"));
          assert.deepEqual(t.failures, [], proto);
          assert.ok(t.byName.get("web-a")! > 0 && t.byName.get("web-b")! > 0, JSON.stringify([...t.byName]));
          // To itself: masqueraded (kube-proxy's hairpin rule); to the other pod: the pod's own address.
          assert.deepEqual([...t.peers].sort(), [`web-a ${NODE_A}`, `web-b ${POD.webA}`], proto);
        }
      });

      test("ClusterIP reached from outside the cluster CIDR is masqueraded; from a pod it keeps the pod's address", async () => {
        for (const [proto, target] of [
          ["tcp", hp(A.vip(50), 80)],
          ["udp", hp(A.vip(50), 53)],
        ] as const) {
          const outside = tally(await ext(target, proto, 20));
          await assertNoFailures(outside.failures, `outside ${proto}`);
          assert.deepEqual([...outside.peers].sort(), [`web-a ${NODE_A}`, `web-b ${NODE_A}`], proto);
          const pod = tally(await ext(target, proto, 20, "client"));
          await assertNoFailures(pod.failures, `pod ${proto}`);
          assert.deepEqual([...pod.peers].sort(), [`web-a ${POD.client}`, `web-b ${POD.client}`], proto);
        }
      });

      test("--masquerade-all masquerades pod-to-ClusterIP traffic too; without it the pod's address is kept again", async () => {
        const restart = async (extra: string[]) => {
          await proxyA!.stop();
          proxyA = await ProxyNode.start(lab, "node-a", {
            manifestDir: dir,
            bpffs: bpffsA.path,
            clusterCIDRs,
            extraArgs: [...baseArgs(NODE_A), ...extra],
          });
          // The old pins answer status at once: wait for the new daemon itself to have written its settings.
          const deadline = Date.now() + 15_000;
          while (!proxyA.logs.includes("bpfproxy running")) {
            assert.ok(Date.now() < deadline, `daemon did not start:\n${proxyA.logs}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        };
        await restart(["--masquerade-all"]);
        try {
          for (const [proto, target] of [
            ["tcp", hp(A.vip(50), 80)],
            ["udp", hp(A.vip(50), 53)],
          ] as const) {
            // UDP from ports no earlier test used: a reused tuple would still be tracked with its old translation.
            const t = tally(await ext(target, proto, 20, "client", 21000));
            assert.deepEqual(t.failures, []);
            assert.deepEqual([...t.peers].sort(), [`web-a ${NODE_A}`, `web-b ${NODE_A}`], proto);
          }
        } finally {
          await restart([]);
        }
        const t = tally(await ext(hp(A.vip(50), 80), "tcp", 20, "client"));
        assert.deepEqual([...t.peers].sort(), [`web-a ${POD.client}`, `web-b ${POD.client}`]);
      });

      test("status shows per-frontend packet counters and the SNAT table's size", async () => {
        const st = await proxyA!.status();
        const np = st.frontendCounters.filter((c) => c.service === "default/np" && c.type === "NodePort");
        assert.ok(np.length >= 2 && np.every((c) => c.packets > 0 && c.bytes > 0), JSON.stringify(np));
        const table = await proxyA!.statusTable();
        if (v6) {
          // The IPv6 SNAT table is a map of its own; an IPv6 NodePort is counted per node address.
          assert.ok(st.maps[MAP_NAMES.nat6]!.entries >= 2, JSON.stringify(st.maps[MAP_NAMES.nat6]));
          assert.match(table, new RegExp(`default/np\\s+NodePort\\s+${peerRe(NODE_A)}:30080\\s+TCP\\s+\\d+`));
        } else {
          assert.ok(st.snat.entries >= 2 && st.snat.max === 262144, JSON.stringify(st.snat));
          assert.match(table, /SNAT table: \d+ of 262144 entries/);
          assert.match(table, /default\/np\s+NodePort\s+0\.0\.0\.0:30080\s+TCP\s+\d+/);
        }
      });

      test("with netfilter dropping ctstate INVALID on INPUT and FORWARD on both nodes, everything still works", async () => {
        const rules = (op: "-I" | "-D") =>
          Promise.all(
            ["node-a", "node-b"].flatMap((n) =>
              ["INPUT", "FORWARD"].map((chain) =>
                lab.run(n, [
                  v6 ? "ip6tables" : "iptables",
                  op,
                  chain,
                  "-m",
                  "conntrack",
                  "--ctstate",
                  "INVALID",
                  "-j",
                  "DROP",
                ]),
              ),
            ),
          );
        // The packet counters of node-a's INVALID rules (the ones inserted here are first in their chains).
        const invalidPackets = async (): Promise<number[]> => {
          const out = await lab.run("node-a", [v6 ? "ip6tables-save" : "iptables-save", "-c", "-t", "filter"]);
          return ["INPUT", "FORWARD"].map((chain) => {
            const m = new RegExp(`^\\[(\\d+):\\d+\\] -A ${chain} -m conntrack --ctstate INVALID -j DROP$`, "m").exec(
              out,
            );
            assert.ok(m, `no INVALID rule in ${chain}:\n${out}`);
            return Number(m[1]);
          });
        };
        await rules("-I");
        try {
          // The rules are live and match: a TCP ACK that belongs to no connection is INVALID (conntrack does not
          // pick up mid-stream with nf_conntrack_tcp_loose=0), forwarded through node-a to a pod.
          await lab.run("node-a", ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0"]);
          const [, fwd0] = await invalidPackets();
          await lab.run("ext", ["ip", "route", "replace", A.podNet("a"), "via", NODE_A]);
          try {
            // A lone TCP ACK (no connection anywhere), three times.
            await sendSpoofedTcp(lab, "ext", {
              src: EXT,
              dst: POD.webA,
              sport: 40999,
              dport: 8080,
              flags: "A",
              seq: 12345,
              ack: 67890,
              count: 3,
            });
          } finally {
            await lab.run("ext", ["ip", "route", "del", A.podNet("a")]);
          }
          const [in1, fwd1] = await invalidPackets();
          assert.ok(fwd1! > fwd0!, `the FORWARD INVALID rule matched the stray ACK (${fwd0} → ${fwd1})`);
          await assertNodePortCluster("ext", NODE_A, NODE_B);
          await assertNodePortCluster("client", NODE_A, NODE_B);
          const local = tally(await ext(hp(NODE_A, 30081), "tcp", 10));
          assert.deepEqual(local.failures, []);
          const hairpin = tally(await ext(hp(A.vip(50), 80), "tcp", 20, "web-a"));
          assert.deepEqual(hairpin.failures, []);
          const host = tally(await ext(hp(NODE_A, 30092), "tcp", 6));
          assert.deepEqual(host.failures, []);
          const cip = tally(await ext(hp(A.vip(50), 80), "tcp", 20, "client"));
          assert.deepEqual(cip.failures, []);
          // All of that was Service traffic the rules saw and let through; only the probe was INVALID.
          const [in2, fwd2] = await invalidPackets();
          assert.equal(fwd2, fwd1, "no Service packet was INVALID in FORWARD");
          assert.equal(in2, in1, "no Service packet was INVALID in INPUT");
        } finally {
          await rules("-D");
          await lab.run("node-a", ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=1"]);
        }
      });

      // Only on the IPv4 XDP runs (registered there alone: the tc run has nothing to show here; XDP hands IPv6 to
      // tc, which the IPv6 XDP runs' other tests show works on both wires).
      if (xdp !== "off" && !v6)
        test(`XDP: attached in ${xdp} mode on the devices, its own counters move; ${wire === "wire" ? "with tc ingress removed from node-a's eth0, XDP alone carries masqueraded NodePort flows both ways" : xdp === "generic" ? "the veths' frames are CHECKSUM_PARTIAL, so XDP passes them to tc" : "eth0 cannot take native XDP frames, so XDP passes to tc"}`, async () => {
          for (const [node, p] of [
            ["node-a", proxyA!],
            ["node-b", proxyB!],
          ] as const) {
            const st = await p.status();
            assert.ok(
              st.attachments.some((a) => a.interface === "eth0" && a.hook === "xdp" && a.program === "bpx_xdp"),
              JSON.stringify(st.attachments),
            );
            // The mode the kernel reports: "xdp" (driver) or "xdpgeneric" (skb), never the other one.
            const link = await lab.run(node, ["ip", "-d", "link", "show", "dev", "eth0"]);
            const attached = / mtu \d+ (xdp\w*) /.exec(link)?.[1];
            assert.equal(attached, xdp === "native" ? "xdp" : "xdpgeneric", link);
          }
          // Warm the neighbour entries XDP needs (it leaves unresolved next hops to tc).
          assert.deepEqual(tally(await ext(hp(NODE_A, 30090), "tcp", 3)).failures, []);
          const count = (st: { counters: Record<string, { packets: number } | undefined> }, n: string) =>
            st.counters[n]?.packets ?? 0;
          const before = await proxyA!.status();
          // On the "wire" runs frames arrive with complete checksums, as from a NIC: XDP finishes them. On default
          // veths (tx checksum offload on) they arrive CHECKSUM_PARTIAL, which XDP cannot rewrite (it cannot see
          // ip_summed): it passes them to tc, so tc stays.
          const carriedByXdp = wire === "wire";
          if (carriedByXdp) await lab.run("node-a", ["tc", "filter", "del", "dev", "eth0", "ingress"]);
          for (const [proto, port] of [
            ["tcp", 30090],
            ["udp", 30091],
          ] as const) {
            const t = tally(await ext(hp(NODE_A, port), proto, 10));
            assert.deepEqual(t.failures, [], proto);
            assert.deepEqual([...t.peers], [`web-b ${NODE_A}`], proto);
          }
          const after = await proxyA!.status();
          const delta = (n: string) => count(after, n) - count(before, n);
          if (carriedByXdp) {
            // 10 TCP connections (3+ segments each way) and 10 UDP exchanges, in and out of eth0: XDP sent them
            // back out of eth0 itself (XDP_TX), each a request and a reply at least.
            assert.ok(delta("xdp_tx") >= 40, `xdp_tx +${delta("xdp_tx")}: ${JSON.stringify(after.counters)}`);
          } else if (xdp === "generic") {
            // 10 TCP connections and 10 UDP exchanges, their frames CHECKSUM_PARTIAL: each passed to tc, not
            // rewritten by XDP. A segment the kernel builds whole — a TIME_WAIT socket's ACK to a retransmitted
            // FIN, a RST — carries a complete checksum, and XDP may finish it (seen once under load: one 66-byte
            // ACK); had XDP rewritten the CHECKSUM_PARTIAL ones, every exchange would count here (40 or more).
            assert.ok(delta("xdp_pass_csum_partial") >= 20, JSON.stringify(after.counters));
            assert.ok(delta("xdp_tx") + delta("xdp_redirect") <= 4, JSON.stringify(after.counters));
          } else {
            // Native XDP on a veth whose peer has no NAPI: nothing may be sent by XDP, everything goes to tc.
            assert.equal(delta("xdp_tx") + delta("xdp_redirect"), 0, JSON.stringify(after.counters));
            // (A CHECKSUM_PARTIAL packet is passed before its next hop is looked up: xdp_pass_csum_partial.)
            assert.ok(delta("xdp_pass_no_xmit") + delta("xdp_pass_csum_partial") >= 20, JSON.stringify(after.counters));
          }
          // Other traffic still reaches the stack: XDP passed what it does not finish.
          const refused = await ext(hp(NODE_A, 1), "tcp", 1);
          assert.match(refused[0]!.error ?? "", /ECONNREFUSED/);
        });
    },
  );
