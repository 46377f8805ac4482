// End to end: the real daemon in private network namespaces (docs/lab.md) translating
// real TCP and UDP traffic to a ClusterIP. Everything it makes is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startHold, type HoldHandle } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import type { AttemptResult } from "../src/lab/echo.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.10";
const VIP_EMPTY = "10.96.0.20";
const VIP_REMOTE = "10.96.0.30";
const POD = { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20", remote: "10.244.2.5" };

function manifests(webBackends: string[]): string {
  const svc = (name: string, ip: string) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
        { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
      ],
    },
  });
  const slice = (name: string, svcName: string, eps: { ip: string; node: string }[]) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svcName } },
    ports: [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "dns", port: 5353, protocol: "UDP" },
    ],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: e.node,
    })),
  });
  return [
    svc("web", VIP),
    slice(
      "web-1",
      "web",
      webBackends.map((ip) => ({ ip, node: "node-a" })),
    ),
    svc("empty", VIP_EMPTY),
    slice("empty-1", "empty", []),
    svc("remote", VIP_REMOTE),
    slice("remote-1", "remote", [{ ip: POD.remote, node: "node-b" }]),
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a" },
      status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-b" },
      status: { addresses: [{ type: "InternalIP", address: "192.0.2.12" }] },
    },
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

const backendsOf = (s: DataplaneStatus, vip: string, proto = "TCP") =>
  s.frontends
    .find((f) => f.address === vip && f.protocol === proto)
    ?.backends.map((b) => b.address)
    .sort();

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
    peers.add(peer!.split(":")[0]!);
  }
  return { byName, peers, failures };
}

describe("ClusterIP end to end", { timeout: 180_000 }, () => {
  let lab: Lab;
  let bpffsA: PrivateBpffs;
  let bpffsB: PrivateBpffs;
  let proxyA: ProxyNode | undefined;
  let proxyB: ProxyNode | undefined;
  let dir: string;
  const write = (backends: string[]) => writeFileSync(join(dir, "services.yaml"), manifests(backends));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-e2e-"));
    write([POD.web1, POD.web2]);
    lab = await Lab.create({
      prefix: `bpxe2e${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: POD.web1 },
            { name: "web-2", ip: POD.web2 },
            { name: "client", ip: POD.client },
          ],
        },
        { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [{ name: "remote-1", ip: POD.remote }] },
      ],
    });
    for (const pod of ["web-1", "web-2", "remote-1"])
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
    bpffsA = PrivateBpffs.create("e2e-a");
    bpffsB = PrivateBpffs.create("e2e-b");
    proxyA = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffsA.path });
    proxyB = await ProxyNode.start(lab, "node-b", { manifestDir: dir, bpffs: bpffsB.path });
    await proxyA.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
  });

  after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

  test("TCP to the ClusterIP reaches both backends, which see the client pod's own address", async () => {
    const t = tally(await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 30 }));
    assert.deepEqual(t.failures, []);
    assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
    assert.deepEqual([...t.peers], [POD.client]);
  });

  test("UDP over connected sockets reaches both backends, and replies come from the ClusterIP", async () => {
    // A connected UDP socket only accepts datagrams from the address it connected to,
    // so every reply received proves the reverse translation to VIP:53.
    const t = tally(await echoRequest(lab, "client", { udp: `${VIP}:53`, count: 30 }));
    assert.deepEqual(t.failures, []);
    assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
    assert.deepEqual([...t.peers], [POD.client]);
  });

  test("a backend on another node answers through the node's device (reverse translation on eth0)", async () => {
    const tcp = tally(await echoRequest(lab, "client", { tcp: `${VIP_REMOTE}:80`, count: 5 }));
    assert.deepEqual(tcp.failures, []);
    assert.deepEqual([...tcp.byName.keys()], ["remote-1"]);
    assert.deepEqual([...tcp.peers], [POD.client]);
    const udp = tally(await echoRequest(lab, "client", { udp: `${VIP_REMOTE}:53`, count: 5 }));
    assert.deepEqual(udp.failures, []);
  });

  test("a frontend without backends refuses at once: TCP RST and ICMP port unreachable", async () => {
    const tcp = await echoRequest(lab, "client", { tcp: `${VIP_EMPTY}:80`, count: 3, timeoutMs: 3000 });
    for (const r of tcp) {
      assert.equal(r.ok, false);
      assert.match(r.error ?? "", /ECONNREFUSED/);
      assert.ok(r.ms < 1000, `refused after ${r.ms} ms, expected at once`);
    }
    const udp = await echoRequest(lab, "client", { udp: `${VIP_EMPTY}:53`, count: 3, timeoutMs: 3000 });
    for (const r of udp) {
      assert.equal(r.ok, false);
      assert.match(r.error ?? "", /ECONNREFUSED/);
      assert.ok(r.ms < 1000, `refused after ${r.ms} ms, expected at once`);
    }
    const st = await proxyA!.status();
    assert.ok(st.counters.reject_no_backend!.packets >= 6, JSON.stringify(st.counters));
  });

  test("removing a backend stops new connections to it within 2 s; an established connection to the other keeps working", async () => {
    let hold: HoldHandle | undefined;
    try {
      hold = startHold(lab, "client", `${VIP}:80`, 100);
      await hold.waitFor(3, 10_000);
      const first = hold.events[0]!;
      assert.ok("reply" in first, JSON.stringify(first));
      const kept = first.reply.split(" ")[0]!; // the backend this connection landed on
      const keptIP = kept === "web-1" ? POD.web1 : POD.web2;
      const removed = kept === "web-1" ? "web-2" : "web-1";

      const t0 = Date.now();
      write([keptIP]);
      await proxyA!.waitForStatus((s) => backendsOf(s, VIP)?.length === 1, 2000);
      const elapsed = Date.now() - t0;
      // The file change is in the kernel within a second (status polling included).
      assert.ok(elapsed <= 1000, `applied after ${elapsed} ms`);

      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 20 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()], [kept], `no new connection may reach ${removed}`);

      const before = hold.events.length;
      await hold.waitFor(before + 5, 5000);
      const recent = hold.events.slice(before);
      assert.ok(
        recent.every((e) => "reply" in e && e.reply.startsWith(kept + " ")),
        JSON.stringify(recent),
      );
    } finally {
      await hold?.stop();
      write([POD.web1, POD.web2]);
      await proxyA!.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 5000);
    }
  });

  test("traffic keeps flowing while the daemon is down, and a restart restores state without flushing", async () => {
    const before = await proxyA!.status();
    await proxyA!.stop();
    const down = tally(await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 10 }));
    assert.deepEqual(down.failures, []);
    const whileDown = await proxyA!.status(); // status reads the pins; no daemon needed
    assert.deepEqual(whileDown.frontends, before.frontends);

    proxyA = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffsA.path });
    const after = await proxyA.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
    assert.deepEqual(after.frontends, before.frontends);
    const up = tally(await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 10 }));
    assert.deepEqual(up.failures, []);
  });

  test("status shows the attached programs and render-shaped frontends", async () => {
    const st = await proxyA!.status();
    assert.equal(st.node, "node-a");
    assert.equal(st.mode, "bpf");
    const progs = new Set(st.attachments.map((a) => `${a.interface}:${a.program}`));
    assert.ok(progs.has("eth0:bpx_from_device"), JSON.stringify(st.attachments));
    for (const pod of ["web-1", "web-2", "client"]) assert.ok(progs.has(`${lab.podInterface(pod)}:bpx_from_pod`), pod);
    const web = st.frontends.find((f) => f.address === VIP && f.protocol === "TCP")!;
    assert.deepEqual(web, {
      service: "default/web",
      portName: "http",
      type: "ClusterIP",
      address: VIP,
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: [
        { address: POD.web1, port: 8080, state: "active", nodeLocal: true },
        { address: POD.web2, port: 8080, state: "active", nodeLocal: true },
      ],
    });
  });

  test("a pod interface that appears later gets the program, and one that goes away is forgotten", async () => {
    // A veth pair inside the node namespace, named like the pod-facing glob (lxc*).
    await lab.run("node-a", ["ip", "link", "add", "lxclate0", "type", "veth", "peer", "name", "latepeer0"]);
    try {
      await proxyA!.waitForStatus(
        (s) => s.attachments.some((a) => a.interface === "lxclate0" && a.program === "bpx_from_pod"),
        5000,
      );
    } finally {
      await lab.run("node-a", ["ip", "link", "del", "lxclate0"]);
    }
    await proxyA!.waitForStatus((s) => !s.attachments.some((a) => a.interface === "lxclate0"), 5000);
  });

  test("cleanup removes every filter and pin bpfproxy made", async () => {
    await proxyA!.stop();
    await proxyA!.cleanup();
    const st = await lab.exec("node-a", ["tc", "filter", "show", "dev", "eth0", "ingress"]);
    assert.equal(st.stdout.trim(), "");
    for (const pod of ["web-1", "client"]) {
      const f = await lab.exec("node-a", ["tc", "filter", "show", "dev", lab.podInterface(pod), "ingress"]);
      assert.equal(f.stdout.trim(), "", pod);
    }
    // maps.debug / progs.debug are the kernel's own files in every fresh bpffs.
    assert.deepEqual(
      readdirSync(bpffsA.path).filter((f) => !f.endsWith(".debug")),
      [],
    );
    proxyA = undefined;
  });
});
