// End to end: native XDP never drops what tc would deliver. Two lab nodes run the daemon with `--xdp native` on
// their eth0, and the pods sit behind veths as CNIs leave them (GRO off, tx checksum offload on): a native
// XDP_REDIRECT into such a veth fails in the kernel (veth_xdp_xmit needs the peer's NAPI: -ENXIO) and the frame
// is lost. Only the network's veths (the nodes' eth0 and their fabric ports, the "wire") have GRO on and
// checksums computed in software, as frames off a real wire carry them, so eth0 takes XDP frames and the
// kernel says so (xdp_features NDO_XMIT).
// Asserted: XDP is attached in native mode; a NodePort to a pod on the node and a pod reaching a ClusterIP
// whose backend is on the other node answer 20 of 20 over TCP and UDP, XDP having passed those packets to tc
// (its own counter xdp_pass_no_xmit); and XDP still does real work where it can: a NodePort whose backend is
// on the other node is carried by XDP_TX both ways (its own counter xdp_tx). Everything is made in
// namespaces the lab owns and removed after.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, prepareLabForXdp, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { endpointSlice, manifest, service, webPorts } from "./fixtures/k8s-objects.js";
import { tally } from "./fixtures/tally.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const EXT = "198.51.100.10";
const POD = { webA: "10.244.1.5", client: "10.244.1.20", webB: "10.244.2.5" };
const VIP_REMOTE = "10.96.0.60";
const NP_LOCAL = { tcp: 30100, udp: 30101 };
const NP_REMOTE = { tcp: 30090, udp: 30091 };

function manifests(): string {
  return manifest([
    service("np-local", "10.96.0.61", webPorts(NP_LOCAL), { spec: { type: "NodePort" } }),
    endpointSlice("np-local", webPorts(), [{ ip: POD.webA, node: "node-a" }]),
    service("np-remote", "10.96.0.62", webPorts(NP_REMOTE), { spec: { type: "NodePort" } }),
    endpointSlice("np-remote", webPorts(), [{ ip: POD.webB, node: "node-b" }]),
    service("remote", VIP_REMOTE, webPorts()),
    endpointSlice("remote", webPorts(), [{ ip: POD.webB, node: "node-b" }]),
  ]);
}

const counter = (s: DataplaneStatus, name: string) => s.counters[name]?.packets ?? 0;

let lab: Lab;
let dir: string;
const bpffs: PrivateBpffs[] = [];
const proxies: ProxyNode[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "bpfproxy-xdpsafe-"));
  writeFileSync(join(dir, "services.yaml"), manifests());
  lab = await Lab.create({
    prefix: `bpxxs${process.pid}-`,
    nodes: [
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
    external: { name: "ext", ip: EXT },
  });
  await prepareLabForXdp(lab, { pods: false });
  for (const pod of ["web-a", "web-b"]) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
  for (const node of ["node-a", "node-b"]) {
    const b = PrivateBpffs.create(`xs-${node}`);
    bpffs.push(b);
    const ip = node === "node-a" ? NODE_A : NODE_B;
    proxies.push(
      await ProxyNode.start(lab, node, {
        manifestDir: dir,
        bpffs: b.path,
        // vx0, made by the vxlan test, is a device too, as a flannel node's flannel.1: with --bypass-netfilter
        // a reply that comes back through the tunnel must meet bpfproxy's tc there, or the stack's netfilter
        // sees a TCP answer whose request it never saw (ctstate INVALID, dropped on kube-proxy-like nodes).
        devices: ["eth0", "vx0"],
        // XDP finishes packets itself only when they may bypass the stack (bpf/lib/fib.h); by default it passes
        // everything to tc (test/e2e-netfilter.test.ts runs native XDP with the default).
        extraArgs: [
          "--healthz-bind-address",
          `${ip}:10256`,
          "--metrics-bind-address",
          "",
          "--xdp",
          "native",
          "--bypass-netfilter",
        ],
      }),
    );
  }
  for (const p of proxies)
    await p.waitForStatus((s) => s.frontends.some((f) => f.service === "default/remote"), 10_000);
});

after(async () => {
  for (const p of proxies) {
    await p.stop().catch(() => undefined);
    await p.cleanup().catch(() => undefined);
  }
  await lab?.destroy();
  for (const b of bpffs) b.release();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("XDP is attached in native (driver) mode on both nodes' eth0, pods' veths keep GRO off", async () => {
  for (const [i, node] of ["node-a", "node-b"].entries()) {
    const st = await proxies[i]!.status();
    assert.ok(
      st.attachments.some((a) => a.interface === "eth0" && a.hook === "xdp" && a.program === "bpx_xdp"),
      JSON.stringify(st.attachments),
    );
    const link = await lab.run(node, ["ip", "-d", "link", "show", "dev", "eth0"]);
    assert.match(link, /\bxdp\b/, link);
    assert.doesNotMatch(link, /xdpgeneric/, link);
  }
  const gro = await lab.run("web-a", ["ethtool", "-k", "eth0"]);
  assert.match(gro, /generic-receive-offload: off/);
});

test("NodePort to a pod on the node (default veth) answers 20 of 20 over TCP and UDP; XDP passed it to tc", async () => {
  const before = await proxies[0]!.status();
  for (const [proto, port] of [
    ["tcp", NP_LOCAL.tcp],
    ["udp", NP_LOCAL.udp],
  ] as const) {
    const t = tally(await echoRequest(lab, "ext", { [proto]: `${NODE_A}:${port}`, count: 20, timeoutMs: 3000 }));
    assert.deepEqual(t.failures, [], `${proto}: ${JSON.stringify(t.failures.slice(0, 3))}`);
    assert.deepEqual([...t.names], ["web-a"], proto);
  }
  const after = await proxies[0]!.status();
  assert.ok(
    counter(after, "xdp_pass_no_xmit") - counter(before, "xdp_pass_no_xmit") >= 40,
    `XDP saw the pod's veth as not taking XDP frames and passed: ${JSON.stringify(after.counters)}`,
  );
});

test("a pod reaching a ClusterIP whose backend is on the other node answers 20 of 20 over TCP and UDP", async () => {
  const before = await proxies[0]!.status();
  for (const [proto, port] of [
    ["tcp", 80],
    ["udp", 53],
  ] as const) {
    const t = tally(await echoRequest(lab, "client", { [proto]: `${VIP_REMOTE}:${port}`, count: 20, timeoutMs: 3000 }));
    assert.deepEqual(t.failures, [], `${proto}: ${JSON.stringify(t.failures.slice(0, 3))}`);
    assert.deepEqual([...t.names], ["web-b"], proto);
  }
  // The replies came in through node-a's XDP, which could not send them into the client's veth itself.
  const after = await proxies[0]!.status();
  assert.ok(
    counter(after, "xdp_pass_no_xmit") - counter(before, "xdp_pass_no_xmit") >= 40,
    JSON.stringify(after.counters),
  );
});

/**
 * 20 TCP and 20 UDP exchanges from outside to node-a's NodePort whose backend (web-b) is on node-b, all
 * answered by web-b, after warming the neighbour entries XDP needs (it leaves unresolved next hops to tc,
 * which resolves them); node-a's status before and after.
 */
async function remoteNodePortRound() {
  assert.deepEqual(
    tally(await echoRequest(lab, "ext", { tcp: `${NODE_A}:${NP_REMOTE.tcp}`, count: 3, timeoutMs: 3000 })).failures,
    [],
  );
  const before = await proxies[0]!.status();
  for (const [proto, port] of [
    ["tcp", NP_REMOTE.tcp],
    ["udp", NP_REMOTE.udp],
  ] as const) {
    const t = tally(await echoRequest(lab, "ext", { [proto]: `${NODE_A}:${port}`, count: 20, timeoutMs: 3000 }));
    assert.deepEqual(t.failures, [], `${proto}: ${JSON.stringify(t.failures.slice(0, 3))}`);
    assert.deepEqual([...t.names], ["web-b"], proto);
  }
  return { before, after: await proxies[0]!.status() };
}

test("XDP still finishes what it can: a NodePort whose backend is on the other node goes out by XDP_TX both ways", async () => {
  const { before, after } = await remoteNodePortRound();
  // At least a request and a reply per UDP exchange and per TCP connection went out by XDP_TX.
  assert.ok(counter(after, "xdp_tx") - counter(before, "xdp_tx") >= 80, JSON.stringify(after.counters));
  assert.equal(counter(after, "xdp_redirect"), 0, "no device but eth0 takes XDP frames here");
});

test("over a vxlan device between the nodes (flannel's layout): a NodePort whose backend is on the other node and a pod reaching a ClusterIP there answer 20 of 20 over TCP and UDP; XDP passed to tc", async () => {
  // Each node reaches the other's pods through a vxlan device (as overlay CNIs do). vxlan has no
  // ndo_xdp_xmit: a native redirect into it is dropped, so XDP must leave the packets bound for it to tc.
  // Undone after.
  const vx = (node: string, local: string, remote: string, addr: string) =>
    lab.run(node, [
      "sh",
      "-c",
      `ip link add vx0 type vxlan id 42 local ${local} remote ${remote} dstport 4789 dev eth0 && ` +
        `ip addr add ${addr}/24 dev vx0 && ip link set vx0 up`,
    ]);
  await vx("node-a", NODE_A, NODE_B, "172.31.0.1");
  await vx("node-b", NODE_B, NODE_A, "172.31.0.2");
  try {
    await lab.run("node-a", ["ip", "route", "replace", "10.244.2.0/24", "via", "172.31.0.2", "dev", "vx0"]);
    await lab.run("node-b", ["ip", "route", "replace", "10.244.1.0/24", "via", "172.31.0.1", "dev", "vx0"]);
    for (const p of proxies)
      await p.waitForStatus((st) => st.attachments.some((x) => x.interface === "vx0" && x.hook === "tc-ingress"));
    const vxStatus = await proxies[0]!.status();
    assert.ok(
      !vxStatus.attachments.some((x) => x.interface === "vx0" && x.hook === "xdp"),
      `a vxlan device has no native XDP: ${JSON.stringify(vxStatus.attachments)}`,
    );
    const route = await lab.run("node-a", ["ip", "-o", "route", "get", POD.webB]);
    assert.match(route, /dev vx0\b/, route);
    const { before, after } = await remoteNodePortRound();
    // Each UDP exchange and TCP connection sent at least one request toward vx0, which XDP passed.
    assert.ok(
      counter(after, "xdp_pass_no_xmit") - counter(before, "xdp_pass_no_xmit") >= 40,
      JSON.stringify(after.counters),
    );
    // Pod to ClusterIP across the tunnel: requests leave by tc into vx0, replies come back encapsulated.
    for (const [proto, port] of [
      ["tcp", 80],
      ["udp", 53],
    ] as const) {
      const t = tally(
        await echoRequest(lab, "client", { [proto]: `${VIP_REMOTE}:${port}`, count: 20, timeoutMs: 3000 }),
      );
      assert.deepEqual(t.failures, [], `${proto}: ${JSON.stringify(t.failures.slice(0, 3))}`);
      assert.deepEqual([...t.names], ["web-b"], proto);
    }
  } finally {
    await lab.run("node-a", ["ip", "route", "replace", "10.244.2.0/24", "via", NODE_B, "dev", "eth0"]);
    await lab.run("node-b", ["ip", "route", "replace", "10.244.1.0/24", "via", NODE_A, "dev", "eth0"]);
    for (const node of ["node-a", "node-b"]) await lab.run(node, ["ip", "link", "del", "vx0"]);
  }
});
