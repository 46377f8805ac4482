// End to end: the real daemon in private network namespaces (docs/lab.md) translating
// real TCP and UDP traffic to a ClusterIP. Everything it makes is removed after, also on failure.
// Once per address family: IPv4 Services on an IPv4 lab, and IPv6 single-stack Services on a dual-stack lab (the
// same tests with each address in the other family).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startHold, type HoldHandle } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import { hostPort } from "../src/format.js";
import type { AttemptResult } from "../src/lab/echo.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

/** Every address a run uses, in one family. */
interface Addrs {
  family: 4 | 6;
  VIP: string;
  VIP_EMPTY: string;
  VIP_REMOTE: string;
  POD: { web1: string; web2: string; client: string; remote: string };
  NODE: { a: string; b: string };
  podCIDR: { a: string; b: string };
}
const V4: Addrs = {
  family: 4,
  VIP: "10.96.0.10",
  VIP_EMPTY: "10.96.0.20",
  VIP_REMOTE: "10.96.0.30",
  POD: { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20", remote: "10.244.2.5" },
  NODE: { a: "192.0.2.11", b: "192.0.2.12" },
  podCIDR: { a: "10.244.1.0/24", b: "10.244.2.0/24" },
};
const V6: Addrs = {
  family: 6,
  VIP: "fd00:96::10",
  VIP_EMPTY: "fd00:96::20",
  VIP_REMOTE: "fd00:96::30",
  POD: { web1: "fd00:10:244:1::5", web2: "fd00:10:244:1::6", client: "fd00:10:244:1::20", remote: "fd00:10:244:2::5" },
  NODE: { a: "2001:db8::a", b: "2001:db8::b" },
  podCIDR: { a: "fd00:10:244:1::/64", b: "fd00:10:244:2::/64" },
};

function manifests(A: Addrs, webBackends: string[]): string {
  const { VIP, VIP_EMPTY, VIP_REMOTE, POD } = A;
  const v6 = A.family === 6;
  const svc = (name: string, ip: string) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ...(v6 ? { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] } : {}),
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
        { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
      ],
    },
  });
  const slice = (name: string, svcName: string, eps: { ip: string; node: string }[]) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: v6 ? "IPv6" : "IPv4",
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
  // A dual-stack node lists an InternalIP of each family (the IPv6 run's lab keeps the IPv4 addresses).
  const nodeAddrs = (n: "a" | "b") =>
    (v6 ? [V4.NODE[n], A.NODE[n]] : [A.NODE[n]]).map((address) => ({ type: "InternalIP", address }));
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
      status: { addresses: nodeAddrs("a") },
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-b" },
      status: { addresses: nodeAddrs("b") },
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

/** Reply lines are "<backend name> <peer ip>:<peer port>", or "<name> [<peer ip6>]:<peer port>". */
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
    peers.add(peer!.slice(0, peer!.lastIndexOf(":")).replace(/^\[|\]$/g, ""));
  }
  return { byName, peers, failures };
}

for (const family of [4, 6] as const)
  describe(`ClusterIP end to end, IPv${family}`, { timeout: 180_000 }, () => {
    const A = family === 4 ? V4 : V6;
    const { VIP, VIP_EMPTY, VIP_REMOTE, POD } = A;
    const v6 = family === 6;
    let lab: Lab;
    let bpffsA: PrivateBpffs;
    let bpffsB: PrivateBpffs;
    let proxyA: ProxyNode | undefined;
    let proxyB: ProxyNode | undefined;
    let dir: string;
    const clusterCIDRs = v6 ? ["10.244.0.0/16", "fd00:10:244::/56"] : ["10.244.0.0/16"];
    const write = (backends: string[]) => writeFileSync(join(dir, "services.yaml"), manifests(A, backends));

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-e2e-"));
      write([POD.web1, POD.web2]);
      // The IPv6 run's lab is dual-stack: nodes and pods keep their IPv4 addresses, as on a dual-stack cluster.
      const pod = (name: string, k: keyof Addrs["POD"]) =>
        v6 ? { name, ip: V4.POD[k], ip6: POD[k] } : { name, ip: POD[k] };
      const node = (name: string, n: "a" | "b") =>
        v6
          ? { name, ip: V4.NODE[n], podCIDR: V4.podCIDR[n], ip6: A.NODE[n], podCIDR6: A.podCIDR[n] }
          : { name, ip: A.NODE[n], podCIDR: A.podCIDR[n] };
      lab = await Lab.create({
        prefix: `bpxe2e${process.pid}${family}-`,
        nodes: [
          { ...node("node-a", "a"), pods: [pod("web-1", "web1"), pod("web-2", "web2"), pod("client", "client")] },
          { ...node("node-b", "b"), pods: [pod("remote-1", "remote")] },
        ],
      });
      // "::" takes both families; the IPv4 run keeps the default (0.0.0.0).
      const bind = v6 ? { bind: "::" } : {};
      for (const p of ["web-1", "web-2", "remote-1"])
        await startEchoServer(lab, p, { name: p, tcp: [8080], udp: [5353], ...bind });
      bpffsA = PrivateBpffs.create(`e2e${family}-a`);
      bpffsB = PrivateBpffs.create(`e2e${family}-b`);
      proxyA = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffsA.path, clusterCIDRs });
      proxyB = await ProxyNode.start(lab, "node-b", { manifestDir: dir, bpffs: bpffsB.path, clusterCIDRs });
      await proxyA.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
    });

    after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

    test("TCP to the ClusterIP reaches both backends, which see the client pod's own address", async () => {
      const t = tally(await echoRequest(lab, "client", { tcp: hostPort(VIP, 80), count: 30 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
      assert.deepEqual([...t.peers], [POD.client]);
    });

    test("UDP over connected sockets reaches both backends, and replies come from the ClusterIP", async () => {
      // A connected UDP socket only accepts datagrams from the address it connected to,
      // so every reply received proves the reverse translation to VIP:53.
      const t = tally(await echoRequest(lab, "client", { udp: hostPort(VIP, 53), count: 30 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
      assert.deepEqual([...t.peers], [POD.client]);
    });

    test("a backend on another node answers through the node's device (reverse translation on eth0)", async () => {
      const tcp = tally(await echoRequest(lab, "client", { tcp: hostPort(VIP_REMOTE, 80), count: 5 }));
      assert.deepEqual(tcp.failures, []);
      assert.deepEqual([...tcp.byName.keys()], ["remote-1"]);
      assert.deepEqual([...tcp.peers], [POD.client]);
      const udp = tally(await echoRequest(lab, "client", { udp: hostPort(VIP_REMOTE, 53), count: 5 }));
      assert.deepEqual(udp.failures, []);
    });

    test(`a frontend without backends refuses at once: TCP RST and ICMP${v6 ? "v6" : ""} port unreachable`, async () => {
      const tcp = await echoRequest(lab, "client", { tcp: hostPort(VIP_EMPTY, 80), count: 3, timeoutMs: 3000 });
      for (const r of tcp) {
        assert.equal(r.ok, false);
        assert.match(r.error ?? "", /ECONNREFUSED/);
        assert.ok(r.ms < 1000, `refused after ${r.ms} ms, expected at once`);
      }
      const udp = await echoRequest(lab, "client", { udp: hostPort(VIP_EMPTY, 53), count: 3, timeoutMs: 3000 });
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
        hold = startHold(lab, "client", hostPort(VIP, 80), 100);
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

        const t = tally(await echoRequest(lab, "client", { tcp: hostPort(VIP, 80), count: 20 }));
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
      const down = tally(await echoRequest(lab, "client", { tcp: hostPort(VIP, 80), count: 10 }));
      assert.deepEqual(down.failures, []);
      const whileDown = await proxyA!.status(); // status reads the pins; no daemon needed
      assert.deepEqual(whileDown.frontends, before.frontends);

      proxyA = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffsA.path, clusterCIDRs });
      const after = await proxyA.waitForStatus((s) => backendsOf(s, VIP)?.length === 2, 10_000);
      assert.deepEqual(after.frontends, before.frontends);
      const up = tally(await echoRequest(lab, "client", { tcp: hostPort(VIP, 80), count: 10 }));
      assert.deepEqual(up.failures, []);
    });

    test("status shows the attached programs and render-shaped frontends", async () => {
      const st = await proxyA!.status();
      assert.equal(st.node, "node-a");
      assert.equal(st.mode, "bpf");
      const progs = new Set(st.attachments.map((a) => `${a.interface}:${a.program}`));
      assert.ok(progs.has("eth0:bpx_from_device"), JSON.stringify(st.attachments));
      for (const pod of ["web-1", "web-2", "client"])
        assert.ok(progs.has(`${lab.podInterface(pod)}:bpx_from_pod`), pod);
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
