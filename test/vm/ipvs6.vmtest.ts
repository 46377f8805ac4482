// Runs INSIDE the test VM (test/vm-ipvs.test.ts boots it) on Debian's 6.1 kernel: the IPVS data plane serving
// IPv6 virtual services with real TCP and UDP over IPv6, in a dual-stack namespace lab. Checked against
// `ipvsadm -Ln`. Three parts:
//   - every IPv6 path (ClusterIP, NodePort Cluster and Local, no endpoints, source ranges, hairpin) from a
//     NodeModel built here and applied to the IPVS data plane inside the node's network namespace
//     (test/vm/ipvs-apply.ts);
//   - the daemon serving a dual-stack Service from its objects (a Service with both ClusterIPs and an IPv4 and
//     an IPv6 EndpointSlice, each family's slice feeding its own family's frontends), an IPv6 Local NodePort and
//     an IPv6 Service without endpoints, once in ipvs mode and once in bpf mode: the IPv6 BPF programs serving
//     real traffic on 6.1.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Lab } from "../../src/lab/netns.js";
import { echoRequest, runEcho, startEchoServer } from "../../src/lab/index.js";
import type { AttemptResult } from "../../src/lab/echo.js";
import type { DataplaneStatus } from "../../src/dataplane/types.js";
import type { Frontend, FrontendExtras, NodeModel } from "../../src/model/types.js";
import { PrivateBpffs, ProxyNode } from "../../src/lab/proxy.js";
import YAML from "yaml";

assert.equal(process.getuid?.(), 0, "run as root (inside the test VM)");

const A = "node-a";
const NODE6 = "2001:db8::a";
const GW6 = "fd00:10:244:1::1";
const EXT6 = "2001:db8:100::10";
const POD = { web1: "fd00:10:244:1::5", web2: "fd00:10:244:1::6", client: "fd00:10:244:1::20" };
const POD4 = { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20" };
const VIP6 = "fd00:96::10";
const VIP6_EMPTY = "fd00:96::15";
const VIP6_LOCAL = "fd00:96::16";
const VIP4 = "10.96.0.10";
/** LoadBalancer ingress IPs: the first lets the external client's /64 in, the second only another /64. */
const LB6 = { allowed: "2001:db8:200::1", denied: "2001:db8:200::2" };
const NP = { cluster: 30080, local: 30081, localEmpty: 30082 };
const CLUSTER_CIDRS = "10.244.0.0/16,fd00:10:244::/56";
const applier = join(dirname(fileURLToPath(import.meta.url)), "ipvs-apply.ts");

function frontend(
  service: string,
  type: Frontend["type"],
  address: string,
  port: number,
  protocol: Frontend["protocol"],
  backends: string[],
): Frontend {
  return {
    service: `default/${service}`,
    portName: protocol === "UDP" ? "dns" : "http",
    type,
    address,
    port,
    protocol,
    scope: type === "ClusterIP" ? "internal" : "external",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: backends.map((a) => ({
      address: a,
      port: protocol === "UDP" ? 5353 : 8080,
      state: "active" as const,
      nodeLocal: true,
    })),
  };
}
const extras = (o: Partial<FrontendExtras> = {}): FrontendExtras => ({ retainedBackends: [], sourceRanges: [], ...o });

function model(): NodeModel {
  const both = [POD.web1, POD.web2];
  const f: [Frontend, FrontendExtras][] = [
    [frontend("web", "ClusterIP", VIP6, 80, "TCP", both), extras()],
    [frontend("web", "ClusterIP", VIP6, 53, "UDP", both), extras()],
    [frontend("web", "NodePort", NODE6, NP.cluster, "TCP", both), extras()],
    // externalTrafficPolicy Local: the client's address is kept (only node-local endpoints, here web-1).
    [frontend("local", "NodePort", NODE6, NP.local, "TCP", [POD.web1]), extras({ externalPolicyLocal: true })],
    // Local with endpoints on other nodes only: dropped, not refused (kube-proxy's behaviour).
    [
      frontend("remote-local", "NodePort", NODE6, NP.localEmpty, "TCP", []),
      extras({ externalPolicyLocal: true, dropWhenEmpty: true }),
    ],
    // No endpoints at all: refused.
    [frontend("empty", "ClusterIP", VIP6_EMPTY, 80, "TCP", []), extras()],
    [frontend("empty", "ClusterIP", VIP6_EMPTY, 53, "UDP", []), extras()],
    // loadBalancerSourceRanges of both families: only the IPv6 ones decide for an IPv6 ingress IP.
    [
      frontend("lb", "LoadBalancer", LB6.allowed, 80, "TCP", both),
      extras({ sourceRanges: ["198.51.100.0/24", "2001:db8:100::/64"] }),
    ],
    [
      frontend("lb-other", "LoadBalancer", LB6.denied, 80, "TCP", both),
      extras({ sourceRanges: ["198.51.100.0/24", "2001:db8:ffff::/64"] }),
    ],
    // The IPv4 half of the dual-stack Service, in the same sync.
    [frontend("web", "ClusterIP", VIP4, 80, "TCP", [POD4.web1, POD4.web2]), extras()],
  ];
  return { node: A, frontends: f.map((x) => x[0]), extras: f.map((x) => x[1]) };
}

function tally(results: AttemptResult[]) {
  const byName = new Map<string, number>();
  const peers = new Set<string>();
  const failures = results.filter((r) => !r.ok || !r.reply);
  for (const r of results) {
    if (!r.ok || !r.reply) continue;
    const [name, peer] = r.reply.trim().split(" ");
    byName.set(name!, (byName.get(name!) ?? 0) + 1);
    // "[ip6]:port" or "ip4:port"
    peers.add(/^\[(.*)\]:\d+$/.exec(peer!)?.[1] ?? peer!.split(":")[0]!);
  }
  return { byName, peers, failures };
}

/** The lines of one virtual service in `ipvsadm -Ln` output. */
function vsBlock(out: string, proto: string, addrPort: string): string {
  return out.split(/\n(?=TCP|UDP|SCTP)/).find((b) => b.startsWith(`${proto}  ${addrPort} `)) ?? "";
}

/** node-a of both families with the three pods, the external client, and echo servers on both backends. */
async function dualStackLab(prefix: string): Promise<Lab> {
  const lab = await Lab.create({
    prefix,
    nodes: [
      {
        name: A,
        ip: "192.0.2.11",
        podCIDR: "10.244.1.0/24",
        ip6: NODE6,
        podCIDR6: "fd00:10:244:1::/64",
        pods: [
          { name: "web-1", ip: POD4.web1, ip6: POD.web1 },
          { name: "web-2", ip: POD4.web2, ip6: POD.web2 },
          { name: "client", ip: POD4.client, ip6: POD.client },
        ],
      },
    ],
    external: { name: "ext", ip: "198.51.100.10", ip6: EXT6 },
  });
  try {
    for (const pod of ["web-1", "web-2"])
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], bind: "::", timeoutMs: 60_000 });
  } catch (e) {
    await lab.destroy(); // not yet the caller's to clean up
    throw e;
  }
  return lab;
}

/** One attempt that must get no answer; returns its error. The echo tool's start-up under emulation needs room. */
async function unanswered(lab: Lab, ns: string, proto: "tcp" | "udp", target: string): Promise<string> {
  const r = await runEcho(lab, ns, ["request", `--${proto}`, target, "--count", "1", "--timeout-ms", "3000"], {
    timeoutMs: 90_000,
  });
  assert.equal(r.code, 0, r.stderr);
  const results = (JSON.parse(r.stdout.trim()) as { results: AttemptResult[] }).results;
  assert.equal(results.length, 1);
  assert.ok(!results[0]!.ok && !results[0]!.reply, `${proto} ${target} answered: ${JSON.stringify(results[0])}`);
  return results[0]!.error ?? "";
}

describe("ipvs mode serves IPv6 virtual services on this kernel", { timeout: 600_000 }, () => {
  let lab: Lab;
  let dir: string;
  let status: DataplaneStatus;
  let applied = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-vm-ipvs6-"));
    lab = await dualStackLab(`bpxvm6${process.pid}-`);
    // The external client reaches the LoadBalancer IPs through node-a (what a cloud load balancer's route does).
    await lab.run("ext", ["ip", "-6", "route", "add", "2001:db8:200::/64", "via", NODE6]);
    const file = join(dir, "model.json");
    writeFileSync(file, JSON.stringify(model()));
    applied = true; // from here on, `after` cleans the IPVS state up (also when the apply fails half-way)
    const out = await lab.run(A, [process.execPath, "--import", "tsx", applier, "apply", file, CLUSTER_CIDRS], {
      timeoutMs: 180_000,
    });
    status = JSON.parse(out.trim().split("\n").pop()!) as DataplaneStatus;
  });

  after(async () => {
    if (applied && lab)
      await lab
        .run(A, [process.execPath, "--import", "tsx", applier, "cleanup"], { timeoutMs: 180_000 })
        .catch(() => undefined);
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("ipvsadm -Ln shows [IPv6]:port virtual services with IPv6 masquerading real servers", async () => {
    const out = await lab.run(A, ["ipvsadm", "-Ln"]);
    for (const [proto, vs, port] of [
      ["TCP", `[${VIP6}]:80`, 8080],
      ["UDP", `[${VIP6}]:53`, 5353],
      ["TCP", `[${NODE6}]:${NP.cluster}`, 8080],
    ] as const) {
      const block = vsBlock(out, proto, vs);
      assert.ok(block, `no ${proto} ${vs} in\n${out}`);
      assert.match(block, /^\S+\s+\S+ rr/);
      for (const b of [POD.web1, POD.web2])
        assert.match(block, new RegExp(`-> \\[${b}\\]:${port}\\s+Masq\\s+1 `), block);
    }
    assert.match(vsBlock(out, "TCP", `${VIP4}:80`), new RegExp(`-> ${POD4.web1}:8080\\s+Masq`), out);
  });

  test("status reads the IPv6 virtual services back from the kernel, in the model's form", () => {
    const fe = status.frontends.find((f) => f.address === VIP6 && f.port === 80 && f.protocol === "TCP");
    assert.ok(fe, JSON.stringify(status.frontends));
    assert.equal(fe.service, "default/web");
    assert.deepEqual(fe.backends.map((b) => `${b.address} ${b.port} ${b.state}`).sort(), [
      `${POD.web1} 8080 active`,
      `${POD.web2} 8080 active`,
    ]);
    assert.equal(status.frontends.length, model().frontends.length);
  });

  test("kube-ipvs0 holds the IPv6 ClusterIP as /128 nodad, usable at once, and the node never sources from it", async () => {
    const info = (
      JSON.parse(await lab.run(A, ["ip", "-6", "-j", "addr", "show", "dev", "kube-ipvs0"])) as {
        addr_info: Record<string, unknown>[];
      }[]
    ).flatMap((l) => l.addr_info);
    const a = info.find((x) => x.local === VIP6);
    assert.ok(a, JSON.stringify(info));
    assert.equal(a.prefixlen, 128);
    assert.equal(a.nodad, true, JSON.stringify(a));
    assert.ok(!a.tentative && !a.dadfailed, JSON.stringify(a));
    // The NodePort address is the node's own, not bound to kube-ipvs0.
    assert.ok(!info.some((x) => x.local === NODE6));
    for (const dst of [EXT6, POD.web1, "2001:db8::1"]) {
      const r = JSON.parse(await lab.run(A, ["ip", "-6", "-j", "route", "get", dst])) as { prefsrc?: string }[];
      assert.ok(r[0]?.prefsrc && r[0].prefsrc !== VIP6, `source towards ${dst}: ${JSON.stringify(r)}`);
    }
  });

  test("ClusterIP over IPv6: TCP and UDP from a pod reach both backends, which see the pod's own address", async () => {
    for (const proto of ["tcp", "udp"] as const) {
      const t = tally(
        await echoRequest(lab, "client", { [proto]: `[${VIP6}]:${proto === "tcp" ? 80 : 53}`, count: 10 }),
      );
      assert.deepEqual(t.failures, [], proto);
      assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"], proto);
      assert.deepEqual([...t.peers], [POD.client], `${proto}: in-cluster traffic is not masqueraded`);
    }
  });

  test("NodePort on the node's IPv6 address (externalTrafficPolicy Cluster) from outside: both backends, masqueraded", async () => {
    const t = tally(await echoRequest(lab, "ext", { tcp: `[${NODE6}]:${NP.cluster}`, count: 10 }));
    assert.deepEqual(t.failures, []);
    assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
    assert.ok(!t.peers.has(EXT6), `backends must see a node address, saw ${[...t.peers].join(", ")}`);
    for (const p of t.peers) assert.ok([NODE6, GW6].includes(p), `masqueraded to ${p}`);
  });

  test("NodePort over IPv6 with externalTrafficPolicy Local keeps the client's address", async () => {
    const t = tally(await echoRequest(lab, "ext", { tcp: `[${NODE6}]:${NP.local}`, count: 3 }));
    assert.deepEqual(t.failures, []);
    assert.deepEqual([...t.byName.keys()], ["web-1"]);
    assert.deepEqual([...t.peers], [EXT6]);
  });

  test("an IPv6 Service without endpoints refuses at once (TCP and UDP); a Local NodePort without a local endpoint drops", async () => {
    assert.match(await unanswered(lab, "client", "tcp", `[${VIP6_EMPTY}]:80`), /ECONNREFUSED/);
    assert.match(await unanswered(lab, "client", "udp", `[${VIP6_EMPTY}]:53`), /ECONNREFUSED/);
    assert.doesNotMatch(await unanswered(lab, "ext", "tcp", `[${NODE6}]:${NP.localEmpty}`), /ECONNREFUSED/);
  });

  test("loadBalancerSourceRanges on an IPv6 LoadBalancer IP: the client's /64 gets in, other sources are dropped", async () => {
    const t = tally(await echoRequest(lab, "ext", { tcp: `[${LB6.allowed}]:80`, count: 4 }));
    assert.deepEqual(t.failures, []);
    assert.ok(!t.peers.has(EXT6), "externalTrafficPolicy Cluster: masqueraded");
    assert.doesNotMatch(await unanswered(lab, "ext", "tcp", `[${LB6.denied}]:80`), /ECONNREFUSED/);
  });

  test("hairpin over IPv6: a pod reaching itself through its ClusterIP is answered, masqueraded", async () => {
    const results = await echoRequest(lab, "web-1", { tcp: `[${VIP6}]:80`, count: 8 });
    assert.deepEqual(tally(results).failures, []);
    // Replies from web-1 itself: it saw a node address (without the masquerade its reply would go straight
    // back to its own socket, not through IPVS, and the connection would never complete).
    const self = results.filter((r) => r.reply!.startsWith("web-1 ")).map((r) => tally([r]).peers);
    assert.ok(self.length > 0, "rr sent some connections back to web-1 itself");
    for (const p of self) assert.ok(!p.has(POD.web1), `web-1 saw its own address: ${[...p].join(", ")}`);
  });

  test("the IPv4 half in the same sync still answers (table ip and table ip6 side by side)", async () => {
    const t = tally(await echoRequest(lab, "client", { tcp: `${VIP4}:80`, count: 6 }));
    assert.deepEqual(t.failures, []);
    assert.deepEqual([...t.peers], [POD4.client]);
    const tables = await lab.run(A, ["nft", "list", "tables"]);
    assert.match(tables, /^table ip bpfproxy-ipvs$/m);
    assert.match(tables, /^table ip6 bpfproxy-ipvs$/m);
  });

  test("cleanup removes the IPv6 virtual services, kube-ipvs0 and both nftables tables", async () => {
    await lab.run(A, [process.execPath, "--import", "tsx", applier, "cleanup"], { timeoutMs: 180_000 });
    applied = false;
    assert.doesNotMatch(await lab.run(A, ["ipvsadm", "-Ln"]), /^(TCP|UDP|SCTP) /m);
    assert.notEqual((await lab.exec(A, ["ip", "link", "show", "kube-ipvs0"])).code, 0);
    assert.doesNotMatch(await lab.run(A, ["nft", "list", "tables"]), /bpfproxy-ipvs/);
  });
});

/** A dual-stack NodePort Service (RequireDualStack) with an IPv4 and an IPv6 EndpointSlice, an IPv6-only
 * NodePort Service with externalTrafficPolicy Local (its endpoint on this node), an IPv6-only ClusterIP
 * Service without endpoints, and node-a. */
function dualStackObjects(opts: { v6Endpoints: string[]; service?: boolean }): string {
  const ports = [
    { name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: NP.cluster },
    { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", nodePort: NP.cluster },
  ];
  const slice = (service: string, family: "IPv4" | "IPv6", addresses: string[]) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: family,
    metadata: {
      name: `${service}-${family.toLowerCase()}`,
      namespace: "default",
      labels: { "kubernetes.io/service-name": service },
    },
    ports: [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "dns", port: 5353, protocol: "UDP" },
    ],
    endpoints: addresses.map((a) => ({ addresses: [a], nodeName: A, conditions: { ready: true, serving: true } })),
  });
  const v6Service = (name: string, spec: Record<string, unknown>) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"], ...spec },
  });
  const docs: unknown[] = [
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: A },
      status: {
        addresses: [
          { type: "InternalIP", address: "192.0.2.11" },
          { type: "InternalIP", address: NODE6 },
        ],
      },
    },
  ];
  if (opts.service !== false)
    docs.push(
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: "default" },
        spec: {
          type: "NodePort",
          ipFamilyPolicy: "RequireDualStack",
          ipFamilies: ["IPv4", "IPv6"],
          clusterIP: VIP4,
          clusterIPs: [VIP4, VIP6],
          ports,
        },
      },
      slice("web", "IPv4", [POD4.web1, POD4.web2]),
      slice("web", "IPv6", opts.v6Endpoints),
      v6Service("local", {
        type: "NodePort",
        externalTrafficPolicy: "Local",
        clusterIP: VIP6_LOCAL,
        clusterIPs: [VIP6_LOCAL],
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: NP.local }],
      }),
      slice("local", "IPv6", [POD.web1]),
      v6Service("empty", {
        type: "ClusterIP",
        clusterIP: VIP6_EMPTY,
        clusterIPs: [VIP6_EMPTY],
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
        ],
      }),
    );
  return docs.map((d) => YAML.stringify(d)).join("---\n");
}

// The daemon from a dual-stack Service's objects, once per data plane: ipvs (asked for in the config) and bpf
// (auto, which picks bpf on this kernel): the IPv6 BPF programs load and serve on 6.1 through the daemon.
for (const mode of ["ipvs", "bpf"] as const)
  describe(`the daemon in ${mode} mode serves a dual-stack Service from its objects`, { timeout: 600_000 }, () => {
    // IPVS-only checks are not registered at all in bpf mode (no skipped tests).
    const ipvsTest = (name: string, fn: () => Promise<void>): void => {
      if (mode === "ipvs") test(name, fn);
    };
    let lab: Lab;
    let dir: string;
    let bpffs: PrivateBpffs | undefined;
    let proxy: ProxyNode | undefined;
    const write = (text: string) => writeFileSync(join(dir, "manifests", "objects.yaml"), text);
    const ipvsadm = () => lab.run(A, ["ipvsadm", "-Ln"]);

    before(async () => {
      delete process.env.BPFPROXY_TEST_NO_BPF;
      dir = mkdtempSync(join(tmpdir(), `bpfproxy-vm-${mode}-dual-`));
      (await import("node:fs")).mkdirSync(join(dir, "manifests"));
      write(dualStackObjects({ v6Endpoints: [POD.web1, POD.web2] }));
      writeFileSync(
        join(dir, "config.yaml"),
        YAML.stringify({
          apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
          kind: "KubeProxyConfiguration",
          mode: mode === "ipvs" ? "ipvs" : "",
          clusterCIDR: CLUSTER_CIDRS,
          ipvs: { scheduler: "rr" },
        }),
      );
      lab = await dualStackLab(`bpxvm${mode === "ipvs" ? "d" : "b"}${process.pid}-`);
      bpffs = PrivateBpffs.create(`vm-${mode}-dual`);
      proxy = await ProxyNode.start(lab, A, {
        manifestDir: join(dir, "manifests"),
        bpffs: bpffs.path,
        clusterCIDRs: CLUSTER_CIDRS.split(","),
        extraArgs: ["--config", join(dir, "config.yaml"), "--metrics-bind-address", ""],
        startTimeoutMs: 120_000,
      });
      await proxy.waitForStatus(
        (s) => s.frontends.some((f) => f.address === VIP6 && f.port === 80 && f.backends.length === 2),
        120_000,
      );
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test("status shows both families' ClusterIPs and the IPv6 NodePort, each with its own family's backends", async () => {
      const st = await proxy!.status();
      assert.equal(st.mode, mode);
      const fe = (address: string, port: number, protocol = "TCP") =>
        st.frontends.find((f) => f.address === address && f.port === port && f.protocol === protocol);
      for (const [address, port, protocol, backends] of [
        [VIP6, 80, "TCP", [POD.web1, POD.web2]],
        [VIP6, 53, "UDP", [POD.web1, POD.web2]],
        [NODE6, NP.cluster, "TCP", [POD.web1, POD.web2]],
        [VIP4, 80, "TCP", [POD4.web1, POD4.web2]],
      ] as const) {
        const f = fe(address, port, protocol);
        assert.ok(
          f,
          `${protocol} ${address}:${port} in ${JSON.stringify(st.frontends.map((x) => `${x.address}:${x.port}`))}`,
        );
        assert.equal(f.service, "default/web");
        assert.deepEqual(f.backends.map((b) => b.address).sort(), [...backends].sort(), `${address}:${port}`);
      }
    });

    test("a pod reaches both ClusterIPs (TCP and UDP over IPv6, TCP over IPv4); the backends see its own address", async () => {
      for (const [target, proto, self] of [
        [`[${VIP6}]:80`, "tcp", POD.client],
        [`[${VIP6}]:53`, "udp", POD.client],
        [`${VIP4}:80`, "tcp", POD4.client],
      ] as const) {
        const t = tally(await echoRequest(lab, "client", { [proto]: target, count: 8 }));
        assert.deepEqual(t.failures, [], `${proto} ${target}`);
        assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"], `${proto} ${target}`);
        assert.deepEqual([...t.peers], [self], `${proto} ${target}: not masqueraded`);
      }
    });

    test("the IPv6 NodePort answers a client outside the cluster, masqueraded to a node address", async () => {
      const t = tally(await echoRequest(lab, "ext", { tcp: `[${NODE6}]:${NP.cluster}`, count: 8 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
      for (const p of t.peers) assert.ok([NODE6, GW6].includes(p), `masqueraded to ${p}`);
    });

    test("an IPv6 NodePort with externalTrafficPolicy Local keeps the client's address", async () => {
      const t = tally(await echoRequest(lab, "ext", { tcp: `[${NODE6}]:${NP.local}`, count: 3 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()], ["web-1"]);
      assert.deepEqual([...t.peers], [EXT6]);
    });

    test("an IPv6 Service without endpoints refuses at once (TCP and UDP)", async () => {
      assert.match(await unanswered(lab, "client", "tcp", `[${VIP6_EMPTY}]:80`), /ECONNREFUSED/);
      assert.match(await unanswered(lab, "client", "udp", `[${VIP6_EMPTY}]:53`), /ECONNREFUSED/);
    });

    test("hairpin over IPv6: a pod reaching itself through its ClusterIP is answered, and does not see its own address", async () => {
      const results = await echoRequest(lab, "web-1", { tcp: `[${VIP6}]:80`, count: 8 });
      assert.deepEqual(tally(results).failures, []);
      const self = results.filter((r) => r.reply!.startsWith("web-1 ")).map((r) => tally([r]).peers);
      assert.ok(self.length > 0, "some connections went back to web-1 itself");
      for (const p of self) assert.ok(!p.has(POD.web1), `web-1 saw its own address: ${[...p].join(", ")}`);
    });

    test("an endpoint leaving the IPv6 slice leaves only the IPv6 frontends; the IPv4 ones keep both", async () => {
      write(dualStackObjects({ v6Endpoints: [POD.web1] }));
      // The removed endpoint's entry goes at once in bpf mode; IPVS keeps its real server at weight 0 while its
      // connections drain (kube-proxy's graceful termination: up to TIME_WAIT's 2 min after earlier tests'
      // connections), shown as terminating. Either way no new connection may reach it.
      await proxy!.waitForStatus((s) => {
        const bs = s.frontends.find((f) => f.address === VIP6 && f.port === 80)?.backends ?? [];
        const active = bs.filter((b) => b.state === "active").map((b) => b.address);
        return active.length === 1 && active[0] === POD.web1 && (mode === "ipvs" || bs.length === 1);
      }, 120_000);
      const st = await proxy!.status();
      const v4 = st.frontends.find((f) => f.address === VIP4 && f.port === 80);
      assert.deepEqual(v4?.backends.map((b) => b.address).sort(), [POD4.web1, POD4.web2]);
      const t = tally(await echoRequest(lab, "client", { tcp: `[${VIP6}]:80`, count: 6 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()], ["web-1"]);
    });

    ipvsTest(
      "ipvsadm shows the IPv6 virtual service with the one endpoint left (the other gone or draining at weight 0), the IPv4 one with both",
      async () => {
        const out = await ipvsadm();
        const v6 = vsBlock(out, "TCP", `[${VIP6}]:80`);
        assert.match(v6, new RegExp(`-> \\[${POD.web1}\\]:8080\\s+Masq\\s+1 `), out);
        const gone = v6.split("\n").find((l) => l.includes(POD.web2));
        assert.ok(gone === undefined || /Masq\s+0 /.test(gone), out);
        const v4 = vsBlock(out, "TCP", `${VIP4}:80`);
        for (const b of [POD4.web1, POD4.web2]) assert.match(v4, new RegExp(`-> ${b}:8080`), out);
      },
    );

    test("deleting the Services removes their frontends of both families", async () => {
      write(dualStackObjects({ v6Endpoints: [], service: false }));
      await proxy!.waitForStatus((s) => s.frontends.length === 0, 120_000);
      if (mode === "ipvs") assert.doesNotMatch(await ipvsadm(), /^(TCP|UDP) /m);
      await unanswered(lab, "client", "tcp", `[${VIP6}]:80`);
    });
  });
