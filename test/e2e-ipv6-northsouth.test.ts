// End to end, IPv6 north-south (issue 17 item 2): a client outside the cluster (the lab's external namespace)
// reaches IPv6 NodePorts and an IPv6 externalIP of node-a, which runs bpfproxy. externalTrafficPolicy Cluster to a
// backend on node-b (which runs no bpfproxy): the backend sees node-a's IPv6 address (masqueraded) and its replies
// come back through node-a. Local to a backend on node-a: the backend sees the client's own address. The daemon
// serves them from IPv6 Services and EndpointSlices in its manifest folder (NodePorts on the node's IPv6 address,
// an externalIP, LoadBalancer ingress IPs with loadBalancerSourceRanges). Everything lives in namespaces the lab
// makes and removes; every wait is bounded.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { BpfMap } from "../src/native/index.js";
import { IPPROTO_TCP, IPPROTO_UDP, MAP_NAMES, ct6Key } from "../src/dataplane/bpf/abi.js";
import { manifest } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A6 = "2001:db8::a";
const EXT6 = "2001:db8:100::10";
const EXTERNAL_IP = "2001:db8:e::1";
/** LoadBalancer ingress IPs: one whose source ranges leave the client out, one whose ranges take it in. */
const LB_REFUSED = "2001:db8:1b::1";
const LB_ALLOWED = "2001:db8:1b::2";
const LOCAL_BE = "fd00:10:244:1::11";
const REMOTE_BE = "fd00:10:244:2::10";

/** An IPv6 single-stack Service of one TCP port (80 -> 8080, `nodePort` when given) and its IPv6 EndpointSlice. */
function service6(
  name: string,
  clusterIP: string,
  backend: { ip: string; node: string },
  opts: {
    spec?: Record<string, unknown>;
    nodePort?: number;
    status?: Record<string, unknown>;
    protocol?: "TCP" | "UDP";
  } = {},
): unknown[] {
  const protocol = opts.protocol ?? "TCP";
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "default" },
      spec: {
        type: "ClusterIP",
        ipFamilyPolicy: "SingleStack",
        ipFamilies: ["IPv6"],
        clusterIP,
        clusterIPs: [clusterIP],
        ...opts.spec,
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol, nodePort: opts.nodePort }],
      },
      ...(opts.status ? { status: opts.status } : {}),
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: "IPv6",
      metadata: { name: `${name}-1`, namespace: "default", labels: { "kubernetes.io/service-name": name } },
      ports: [{ name: "http", port: 8080, protocol }],
      endpoints: [{ addresses: [backend.ip], nodeName: backend.node, conditions: { ready: true, serving: true } }],
    },
  ];
}

function objects(): string {
  const remote = { ip: REMOTE_BE, node: "node-b" };
  const lb = (name: string, ip: string, nodePort: number, range: string) =>
    service6(name, `fd00:96::${nodePort - 30000}`, remote, {
      spec: { type: "LoadBalancer", loadBalancerSourceRanges: [range] },
      nodePort,
      status: { loadBalancer: { ingress: [{ ip }] } },
    });
  return manifest([
    ...service6("np-cluster", "fd00:96::60", remote, { spec: { type: "NodePort" }, nodePort: 30080 }),
    ...service6(
      "np-local",
      "fd00:96::61",
      { ip: LOCAL_BE, node: "node-a" },
      { spec: { type: "NodePort", externalTrafficPolicy: "Local" }, nodePort: 30081 },
    ),
    ...service6("ext-ip", "fd00:96::62", remote, { spec: { externalIPs: [EXTERNAL_IP] } }),
    ...lb("lb-refused", LB_REFUSED, 30083, "2001:db8:200::/64"),
    ...lb("lb-allowed", LB_ALLOWED, 30084, "2001:db8:100::/64"),
    ...service6("np-udp", "fd00:96::65", remote, { spec: { type: "NodePort" }, nodePort: 30085, protocol: "UDP" }),
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a" },
      status: {
        addresses: [
          { type: "InternalIP", address: "192.0.2.11" },
          { type: "InternalIP", address: NODE_A6 },
        ],
      },
    },
  ]);
}

describe("IPv6 north-south from a client outside the cluster", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipv6ns-"));
    writeFileSync(join(dir, "services.yaml"), objects());
    // Short UDP lifetimes and a 1 s collector, for the NAT collection test (the last one).
    writeFileSync(
      join(dir, "config.yaml"),
      [
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "kind: KubeProxyConfiguration",
        "conntrack:",
        "  udpTimeout: 2s",
        "  udpStreamTimeout: 3s",
        "bpfproxy:",
        "  conntrackGCInterval: 1s",
        "",
      ].join("\n"),
    );
    lab = await Lab.create({
      prefix: `bpx6n${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          ip6: NODE_A6,
          podCIDR6: "fd00:10:244:1::/64",
          pods: [{ name: "web-a", ip: "10.244.1.11", ip6: LOCAL_BE }],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          ip6: "2001:db8::b",
          podCIDR6: "fd00:10:244:2::/64",
          pods: [{ name: "web-b", ip: "10.244.2.10", ip6: REMOTE_BE }],
        },
      ],
      external: { name: "ext", ip: "198.51.100.10", ip6: EXT6 },
    });
    // The externalIP is routed to node-a, as a router in front of the cluster would.
    for (const a of [EXTERNAL_IP, LB_REFUSED, LB_ALLOWED])
      await lab.run("ext", ["ip", "-6", "route", "add", `${a}/128`, "via", NODE_A6]);
    await startEchoServer(lab, "web-a", { name: "web-a", tcp: [8080], bind: "::" });
    await startEchoServer(lab, "web-b", { name: "web-b", tcp: [8080], udp: [8080], bind: "::" });
    bpffs = PrivateBpffs.create("ipv6ns-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      devices: ["eth0"],
      extraArgs: ["--config", join(dir, "config.yaml")],
    });
    await proxy.waitForStatus((s) => s.attachments.filter((a) => a.hook === "tc-ingress").length >= 2, 10_000);
    const want = [
      `${NODE_A6}:30080`,
      `${NODE_A6}:30081`,
      `${EXTERNAL_IP}:80`,
      `${LB_REFUSED}:80`,
      `${LB_ALLOWED}:80`,
      `${NODE_A6}:30085`,
    ];
    await proxy.waitForStatus(
      (st) => want.every((w) => st.frontends.some((f) => `${f.address}:${f.port}` === w && f.backends.length === 1)),
      15_000,
    );
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  async function expect(target: string, reply: RegExp, what: string): Promise<void> {
    const before = (await proxy!.status()).counters;
    const r = await echoRequest(lab, "ext", { tcp: target, count: 10, timeoutMs: 2000 });
    const bad = r.filter((x) => !x.ok || !reply.test(x.reply ?? ""));
    const now = (await proxy!.status()).counters;
    const counted = Object.entries(now)
      .map(([k, v]) => [k, (v?.packets ?? 0) - (before[k]?.packets ?? 0)] as const)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k}=${n}`)
      .join(" ");
    assert.deepEqual(bad, [], `${what}: 10 of 10 (${reply}): ${JSON.stringify(r.slice(0, 2))}; ${counted}`);
  }

  test("NodePort on the node's IPv6 address, externalTrafficPolicy Cluster: the backend on the other node sees the node's address", async () => {
    await expect(`[${NODE_A6}]:30080`, /^web-b \[2001:db8::a\]:\d+/, "NodePort Cluster");
  });

  test("NodePort, externalTrafficPolicy Local: the backend on this node sees the client's own address", async () => {
    await expect(`[${NODE_A6}]:30081`, /^web-a \[2001:db8:100::10\]:\d+/, "NodePort Local");
  });

  test("an IPv6 externalIP (Cluster) reaches the backend on the other node, masqueraded", async () => {
    await expect(`[${EXTERNAL_IP}]:80`, /^web-b \[2001:db8::a\]:\d+/, "externalIP");
  });

  test("loadBalancerSourceRanges over IPv6: a LoadBalancer IP whose ranges leave the client out refuses it, one whose ranges take it in serves it", async () => {
    await expect(`[${LB_ALLOWED}]:80`, /^web-b \[2001:db8::a\]:\d+/, "inside the range");
    const before = (await proxy!.status()).counters;
    const r = await echoRequest(lab, "ext", { tcp: `[${LB_REFUSED}]:80`, count: 2, timeoutMs: 1500 });
    assert.deepEqual(
      r.map((x) => x.ok),
      [false, false],
      `outside the range: not served ${JSON.stringify(r)}`,
    );
    const after = (await proxy!.status()).counters;
    const dropped = (after.drop_source_range?.packets ?? 0) - (before.drop_source_range?.packets ?? 0);
    assert.ok(dropped >= 2, `dropped as drop_source_range (${dropped})`);
  });

  test("masqueraded IPv6 flows' NAT entries are collected once their flow is over; live flows keep theirs", async () => {
    const nat6 = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.nat6), { readOnly: true });
    try {
      const byProto = () => {
        const { keys, count } = nat6.entries();
        const n = { tcp: 0, udp: 0 };
        for (let i = 0; i < count; i++) {
          const k = ct6Key.decode(keys, i * ct6Key.size);
          if (k.proto === IPPROTO_UDP) n.udp++;
          else if (k.proto === IPPROTO_TCP) n.tcp++;
        }
        return n;
      };
      const r = await echoRequest(lab, "ext", { udp: `[${NODE_A6}]:30085`, count: 3, timeoutMs: 2000 });
      assert.ok(
        r.every((x) => x.ok && /^web-b \[2001:db8::a\]:\d+/.test(x.reply ?? "")),
        `UDP NodePort answered, masqueraded: ${JSON.stringify(r)}`,
      );
      const held = byProto();
      assert.ok(held.udp >= 2, `the UDP flows hold NAT entries (forward and reply): ${JSON.stringify(held)}`);
      // The earlier tests' TCP flows are in TIME_WAIT (120 s): alive, so their entries must stay.
      assert.ok(held.tcp >= 2, `the earlier masqueraded TCP flows hold NAT entries: ${JSON.stringify(held)}`);
      // UDP stream lifetime 3 s, the collector's 5 s grace after creation, a 1 s interval: bounded by 20 s.
      const deadline = Date.now() + 20_000;
      let now = byProto();
      while (now.udp > 0 && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 500));
        now = byProto();
      }
      assert.equal(now.udp, 0, `the UDP flows' NAT entries are collected: ${JSON.stringify(now)}`);
      assert.equal(now.tcp, held.tcp, "the live TCP flows' NAT entries are kept");
    } finally {
      nat6.close();
    }
  });
});
