// Runs INSIDE the test VM (test/vm-ipvs.test.ts boots it) on Debian's 6.1 kernel, in private network
// namespaces with real TCP/UDP traffic. The same behaviour tests run against both data planes:
//   - ipvs: the daemon runs in `auto` mode without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, so the kernel
//     really refuses its BPF feature probes (as on a node that does not allow BPF) and auto must pick ipvs
//     from the real probe; IPVS-only checks cross-check with `ipvsadm -Ln`;
//   - bpf: `auto` on this kernel, which must pick bpf (the programs load and serve on 6.1).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../../src/lab/netns.js";
import { echoRequest, runEcho, startEchoServer, startHold, type HoldHandle } from "../../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../../src/lab/proxy.js";
import type { AttemptResult } from "../../src/lab/echo.js";
import type { DataplaneStatus } from "../../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "run as root (inside the test VM)");

const NODE_A = "192.0.2.11";
const EXT = "198.51.100.10";
const POD = { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20", remote: "10.244.2.5" };
const VIP = {
  web: "10.96.0.10",
  sticky: "10.96.0.11",
  maglev: "10.96.0.12",
  local: "10.96.0.13",
  remoteLocal: "10.96.0.14",
  empty: "10.96.0.15",
  leastConn: "10.96.0.17",
  weighted: "10.96.0.18",
};
/** A Service added later (the NodePort address test). */
const EXTRA = { ip: "10.96.0.16", nodePort: 30090 };
const NP = { web: 30080, local: 30081, remoteLocal: 30082 };

type Ep = { ip: string; node: string; ready?: boolean; terminating?: boolean };
interface Svc {
  name: string;
  ip: string;
  eps: Ep[];
  nodePort?: number;
  etpLocal?: boolean;
  affinity?: number;
  maglev?: boolean;
  leastConn?: boolean;
  /** bpfproxy.io/backend-weights */
  weights?: string;
}

function manifests(svcs: Svc[]): string {
  const docs: unknown[] = [];
  for (const s of svcs) {
    docs.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: s.name,
        namespace: "default",
        ...(s.maglev ? { annotations: { "bpfproxy.io/lb-algorithm": "maglev" } } : {}),
        ...(s.leastConn || s.weights
          ? {
              annotations: {
                ...(s.leastConn ? { "bpfproxy.io/lb-algorithm": "least-conn" } : {}),
                ...(s.weights ? { "bpfproxy.io/backend-weights": s.weights } : {}),
              },
            }
          : {}),
      },
      spec: {
        type: s.nodePort ? "NodePort" : "ClusterIP",
        clusterIP: s.ip,
        clusterIPs: [s.ip],
        ...(s.etpLocal ? { externalTrafficPolicy: "Local" } : {}),
        ...(s.affinity
          ? { sessionAffinity: "ClientIP", sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinity } } }
          : {}),
        ports: [
          {
            name: "http",
            port: 80,
            targetPort: 8080,
            protocol: "TCP",
            ...(s.nodePort ? { nodePort: s.nodePort } : {}),
          },
          // A NodePort Service's UDP port gets the same node port number (Kubernetes allows one per protocol).
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", ...(s.nodePort ? { nodePort: s.nodePort } : {}) },
        ],
      },
    });
    docs.push({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: "IPv4",
      metadata: { name: `${s.name}-1`, namespace: "default", labels: { "kubernetes.io/service-name": s.name } },
      ports: [
        { name: "http", port: 8080, protocol: "TCP" },
        { name: "dns", port: 5353, protocol: "UDP" },
      ],
      endpoints: s.eps.map((e) => ({
        addresses: [e.ip],
        nodeName: e.node,
        conditions: { ready: e.ready ?? true, serving: true, terminating: e.terminating ?? false },
      })),
    });
  }
  docs.push({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-a" },
    status: { addresses: [{ type: "InternalIP", address: NODE_A }] },
  });
  docs.push({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-b" },
    status: { addresses: [{ type: "InternalIP", address: "192.0.2.12" }] },
  });
  return docs.map((d) => YAML.stringify(d)).join("---\n");
}

const A = "node-a";
const both: Ep[] = [
  { ip: POD.web1, node: A },
  { ip: POD.web2, node: A },
];
function services(webEps: Ep[] = both): Svc[] {
  return [
    { name: "web", ip: VIP.web, eps: webEps, nodePort: NP.web },
    { name: "sticky", ip: VIP.sticky, eps: both, affinity: 300 },
    { name: "maglev", ip: VIP.maglev, eps: both, maglev: true },
    { name: "least-conn", ip: VIP.leastConn, eps: both, leastConn: true },
    { name: "weighted", ip: VIP.weighted, eps: both, leastConn: true, weights: `${POD.web1}=3, ${POD.web2}=1` },
    { name: "local", ip: VIP.local, eps: [{ ip: POD.web1, node: A }], nodePort: NP.local, etpLocal: true },
    { name: "empty", ip: VIP.empty, eps: [] },
    {
      name: "remote-local",
      ip: VIP.remoteLocal,
      eps: [{ ip: POD.remote, node: "node-b" }],
      nodePort: NP.remoteLocal,
      etpLocal: true,
    },
  ];
}

function tally(results: AttemptResult[]) {
  const byName = new Map<string, number>();
  const peers = new Set<string>();
  const failures = results.filter((r) => !r.ok || !r.reply);
  for (const r of results) {
    if (!r.ok || !r.reply) continue;
    const [name, peer] = r.reply.trim().split(" ");
    byName.set(name!, (byName.get(name!) ?? 0) + 1);
    peers.add(peer!.split(":")[0]!);
  }
  return { byName, peers, failures };
}

/** The lines of one virtual service in `ipvsadm -Ln` output. */
function vsBlock(out: string, proto: string, addr: string): string {
  return out.split(/\n(?=TCP|UDP|SCTP)/).find((b) => b.startsWith(`${proto}  ${addr} `)) ?? "";
}

const fe = (s: DataplaneStatus, addr: string, port: number, proto = "TCP") =>
  s.frontends.find((f) => f.address === addr && f.port === port && f.protocol === proto);

for (const mode of ["ipvs", "bpf"] as const)
  describe(`${mode} mode end to end on this kernel`, { timeout: 600_000 }, () => {
    // IPVS-only checks are not registered at all in bpf mode (no skipped tests).
    const ipvsTest = (name: string, fn: () => Promise<void>): void => {
      if (mode === "ipvs") test(name, fn);
    };
    let lab: Lab;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    let dir: string;
    const write = (svcs: Svc[]) => writeFileSync(join(dir, "services.yaml"), manifests(svcs));
    const ipvsadm = async () => lab.run(A, ["ipvsadm", "-Ln"]);

    before(async () => {
      // The real probe decides: never the test switch that short-cuts it.
      delete process.env.BPFPROXY_TEST_NO_BPF;
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-vm-ipvs-"));
      const manifestsDir = join(dir, "manifests");
      writeFileSync(
        join(dir, "config.yaml"),
        YAML.stringify({
          apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
          kind: "KubeProxyConfiguration",
          mode: "",
          ipvs: { scheduler: "wrr", tcpFinTimeout: "5s" },
        }),
      );
      dir = manifestsDir;
      (await import("node:fs")).mkdirSync(dir);
      write(services());
      lab = await Lab.create({
        prefix: `bpxvm${mode}${process.pid}-`,
        nodes: [
          {
            name: A,
            ip: NODE_A,
            podCIDR: "10.244.1.0/24",
            pods: [
              { name: "web-1", ip: POD.web1 },
              { name: "web-2", ip: POD.web2 },
              { name: "client", ip: POD.client },
            ],
          },
          { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [{ name: "remote-1", ip: POD.remote }] },
        ],
        external: { name: "ext", ip: EXT },
      });
      for (const pod of ["web-1", "web-2", "remote-1"])
        await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], timeoutMs: 60_000 });
      bpffs = PrivateBpffs.create(`vm-${mode}`);
      proxy = await ProxyNode.start(lab, A, {
        manifestDir: dir,
        bpffs: bpffs.path,
        extraArgs: ["--config", join(dir, "..", "config.yaml")],
        startTimeoutMs: 120_000,
        // ipvs: a daemon the kernel refuses BPF to (no CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN; Debian's
        // kernel.unprivileged_bpf_disabled is set), with everything IPVS needs.
        wrapper: mode === "ipvs" ? ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", "--inh-caps=-all", "--"] : [],
      });
      await proxy.waitForStatus((s) => fe(s, VIP.web, 80)?.backends.length === 2, 120_000);
    });

    after(async () => {
      await drained?.hold?.stop();
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(join(dir, ".."), { recursive: true, force: true });
    });

    test(`auto chose ${mode}; status says why`, async () => {
      const st = await proxy!.status();
      assert.equal(st.mode, mode);
      if (mode === "ipvs") {
        // What the kernel's probes said: at least the tc program type was refused (it needs CAP_BPF).
        assert.match(st.reason ?? "", /^auto: BPF unavailable \(.*program type sched_cls \(tc\)/);
        assert.doesNotMatch(st.reason ?? "", /BPFPROXY_TEST_NO_BPF/);
      } else assert.match(st.reason ?? "", /every BPF feature/);
    });

    ipvsTest(
      "ipvsadm shows every frontend as a masquerading virtual service with the configured scheduler",
      async () => {
        const out = await ipvsadm();
        // ClusterIP and NodePort on the node address, TCP and UDP; weight 1 per ready backend.
        for (const [proto, addr] of [
          ["TCP", `${VIP.web}:80`],
          ["UDP", `${VIP.web}:53`],
          ["TCP", `${NODE_A}:${NP.web}`],
        ] as const) {
          const block = vsBlock(out, proto, addr);
          assert.ok(block, `no ${proto} ${addr} in\n${out}`);
          assert.match(block, /^\S+\s+\S+ wrr/);
          const port = proto === "UDP" ? 5353 : 8080;
          assert.match(block, new RegExp(`-> ${POD.web1}:${port}\\s+Masq\\s+1 `));
          assert.match(block, new RegExp(`-> ${POD.web2}:${port}\\s+Masq\\s+1 `));
        }
        assert.match(out, new RegExp(`TCP  ${VIP.sticky}:80 wrr persistent 300`));
        assert.match(await lab.run(A, ["ipvsadm", "-L", "--timeout"]), /Timeout \(tcp tcpfin udp\): \d+ 5 \d+/);
        assert.match(out, new RegExp(`TCP  ${VIP.maglev}:80 mh`));
        // least-conn is IPVS's lc, whatever ipvs.scheduler says (docs/leastconn.md).
        assert.match(out, new RegExp(`TCP  ${VIP.leastConn}:80 lc`));
        // bpfproxy.io/backend-weights: the real servers' weights, and lc's weighted form wlc.
        const weighted = vsBlock(out, "TCP", `${VIP.weighted}:80`);
        assert.match(weighted, /^\S+\s+\S+ wlc/, out);
        assert.match(weighted, new RegExp(`-> ${POD.web1}:8080\\s+Masq\\s+3 `));
        assert.match(weighted, new RegExp(`-> ${POD.web2}:8080\\s+Masq\\s+1 `));
        const addrs = await lab.run(A, ["ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0"]);
        for (const v of Object.values(VIP)) assert.match(addrs, new RegExp(`inet ${v.replaceAll(".", "\\.")}/32`));
      },
    );

    test("ClusterIP: TCP and UDP from a pod reach both backends, which see the pod's own address", async () => {
      for (const proto of ["tcp", "udp"] as const) {
        const t = tally(
          await echoRequest(lab, "client", { [proto]: `${VIP.web}:${proto === "tcp" ? 80 : 53}`, count: 20 }),
        );
        assert.deepEqual(t.failures, []);
        assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
        assert.deepEqual([...t.peers], [POD.client], "in-cluster traffic is not masqueraded");
      }
    });

    test("NodePort (externalTrafficPolicy Cluster) from outside reaches both backends, masqueraded", async () => {
      const t = tally(await echoRequest(lab, "ext", { tcp: `${NODE_A}:${NP.web}`, count: 20 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"]);
      assert.ok(!t.peers.has(EXT), `backends must see the node's address, saw ${[...t.peers].join(", ")}`);
    });

    test("NodePort: TCP and UDP to the node's address reach a backend; a ClusterIP is not a NodePort address", async () => {
      // A Service added after the first sync: by now the ClusterIPs sit on kube-ipvs0 (ipvs), and the
      // sync that adds this Service must still not take them for node addresses. The daemon leaves kube-ipvs0
      // down (then Node lists none of its addresses anyway); anything on the host may set it up, as here.
      if (mode === "ipvs") await lab.run(A, ["ip", "link", "set", "kube-ipvs0", "up"]);
      write([...services(), { name: "extra", ip: EXTRA.ip, eps: both, nodePort: EXTRA.nodePort }]);
      const st = await proxy!.waitForStatus((s) => fe(s, EXTRA.ip, 80)?.backends.length === 2, 60_000);
      for (const proto of ["tcp", "udp"] as const) {
        for (const port of [NP.web, EXTRA.nodePort]) {
          const t = tally(await echoRequest(lab, "ext", { [proto]: `${NODE_A}:${port}`, count: 10, timeoutMs: 4000 }));
          assert.deepEqual(t.failures, [], `${proto} ${NODE_A}:${port}`);
          assert.deepEqual([...t.byName.keys()].sort(), ["web-1", "web-2"], `${proto} ${NODE_A}:${port}`);
        }
      }
      const vips = new Set([...Object.values(VIP), EXTRA.ip]);
      const npAddrs = new Set(st.frontends.filter((f) => f.type === "NodePort").map((f) => f.address));
      assert.ok(npAddrs.has(NODE_A), [...npAddrs].join(", "));
      assert.deepEqual(
        [...npAddrs].filter((a) => vips.has(a)),
        [],
        "no Service IP is a NodePort address",
      );
      if (mode === "ipvs") {
        const out = await ipvsadm();
        for (const v of vips)
          for (const port of [NP.web, NP.local, NP.remoteLocal, EXTRA.nodePort])
            assert.doesNotMatch(out, new RegExp(`(TCP|UDP)  ${v.replaceAll(".", "\\.")}:${port} `), out);
        assert.match(vsBlock(out, "UDP", `${NODE_A}:${NP.web}`), new RegExp(`-> ${POD.web1}:5353\\s+Masq`));
      }
      // A ClusterIP with a NodePort's port is not served: refused (ipvs: a local address with no listener)
      // or unanswered, never a backend's reply.
      for (const [proto, addr] of [
        ["tcp", `${VIP.web}:${NP.web}`],
        ["udp", `${VIP.web}:${NP.web}`],
        ["tcp", `${EXTRA.ip}:${EXTRA.nodePort}`],
      ] as const) {
        // The echo tool's own start-up counts against echoRequest's limit; under emulation give it room.
        const r = await runEcho(
          lab,
          "client",
          ["request", `--${proto}`, addr, "--count", "1", "--timeout-ms", "3000"],
          {
            timeoutMs: 90_000,
          },
        );
        assert.equal(r.code, 0, r.stderr);
        const results = (JSON.parse(r.stdout.trim()) as { results: AttemptResult[] }).results;
        assert.equal(results.length, 1);
        for (const a of results) assert.ok(!a.ok && !a.reply, `${proto} ${addr} answered: ${JSON.stringify(a)}`);
      }
    });

    let drained: { hold?: HoldHandle; goneIP: string } | undefined;
    test("removing a backend: no new connections reach it (ipvs: its open connection keeps working at weight 0)", async () => {
      const hold = startHold(lab, "client", `${VIP.web}:80`, 200, 5000);
      drained = { hold, goneIP: "" };
      await hold.waitFor(2, 30_000);
      const first = hold.events[0]!;
      assert.ok("reply" in first, JSON.stringify(first));
      const gone = first.reply.split(" ")[0]!;
      const goneIP = gone === "web-1" ? POD.web1 : POD.web2;
      drained.goneIP = goneIP;
      const kept = gone === "web-1" ? "web-2" : "web-1";
      write(services(both.filter((e) => e.ip !== goneIP)));
      await proxy!.waitForStatus(
        (s) => !fe(s, VIP.web, 80)?.backends.some((b) => b.address === goneIP && b.state === "active"),
        30_000,
      );
      if (mode === "ipvs") {
        const block = vsBlock(await ipvsadm(), "TCP", `${VIP.web}:80`);
        assert.match(block, new RegExp(`-> ${goneIP}:8080\\s+Masq\\s+0\\s+1 `), block);
      }
      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP.web}:80`, count: 10 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()], [kept], "no new connection to the removed backend");
      if (mode === "ipvs") {
        // kube-proxy's graceful termination: the connection that is open keeps its (weight 0) real server.
        const n = hold.events.length;
        await hold.waitFor(n + 3, 15_000);
        assert.ok(
          hold.events.slice(n).every((e) => "reply" in e && e.reply.startsWith(gone + " ")),
          "the open connection still works",
        );
      }
      // UDP real servers go at once (kube-proxy: no graceful termination for UDP).
      if (mode === "ipvs")
        assert.doesNotMatch(vsBlock(await ipvsadm(), "UDP", `${VIP.web}:53`), new RegExp(`${goneIP}:5353`));
      // Closed now; IPVS counts it inactive until its entry expires (TIME_WAIT: 2 min), checked by a later test.
      await hold.stop();
      if (mode === "bpf") {
        write(services());
        await proxy!.waitForStatus((s) => fe(s, VIP.web, 80)?.backends.length === 2, 30_000);
      }
    });

    test("NodePort with externalTrafficPolicy Local keeps the client's address; without a local endpoint it drops", async () => {
      const t = tally(await echoRequest(lab, "ext", { tcp: `${NODE_A}:${NP.local}`, count: 3, timeoutMs: 8000 }));
      assert.deepEqual(t.failures, []);
      assert.deepEqual([...t.byName.keys()], ["web-1"]);
      assert.deepEqual([...t.peers], [EXT]);
      // The echo tool's own start-up counts against echoRequest's limit; under emulation give it room.
      const r0 = await runEcho(
        lab,
        "ext",
        ["request", "--tcp", `${NODE_A}:${NP.remoteLocal}`, "--count", "1", "--timeout-ms", "3000"],
        { timeoutMs: 90_000 },
      );
      assert.equal(r0.code, 0, r0.stderr);
      const dropped = (JSON.parse(r0.stdout.trim()) as { results: AttemptResult[] }).results;
      assert.equal(dropped.length, 1);
      for (const r of dropped) {
        assert.equal(r.ok, false);
        assert.doesNotMatch(
          r.error ?? "",
          /ECONNREFUSED/,
          "kube-proxy drops (not rejects) when only a Local policy leaves no endpoint",
        );
      }
    });

    test("a Service without endpoints refuses at once: TCP and UDP get connection refused", async () => {
      for (const [proto, port] of [
        ["tcp", 80],
        ["udp", 53],
      ] as const) {
        const r = await echoRequest(lab, "client", { [proto]: `${VIP.empty}:${port}`, count: 2, timeoutMs: 4000 });
        for (const a of r) {
          assert.equal(a.ok, false);
          assert.match(a.error ?? "", /ECONNREFUSED/, `${proto}: ${JSON.stringify(a)}`);
        }
      }
    });

    test("ClientIP affinity: every connection from one client lands on the same backend", async () => {
      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP.sticky}:80`, count: 15 }));
      assert.deepEqual(t.failures, []);
      assert.equal(t.byName.size, 1, JSON.stringify([...t.byName]));
    });

    test("per-Service and per-backend connections move by exactly the connections sent (ipvs: the kernel's IPVS stats)", async () => {
      const conns = (s: DataplaneStatus) =>
        s.frontendCounters
          .filter((c) => c.address === VIP.web && c.port === 80 && c.protocol === "TCP")
          .reduce((n, c) => n + (c.connections ?? 0), 0);
      const beKey = (b: NonNullable<DataplaneStatus["backendCounters"]>[number]) =>
        `${b.address}:${b.port}/${b.protocol}`;
      // Summed over the backends of the second reading: a real server drained by an earlier test (weight 0, no
      // new connections) may be deleted between the two readings, and its counters go with it.
      const beGained = (before: DataplaneStatus, after: DataplaneStatus) => {
        const was = new Map((before.backendCounters ?? []).map((b) => [beKey(b), b.connections]));
        return (after.backendCounters ?? []).reduce((n, b) => n + b.connections - (was.get(beKey(b)) ?? 0), 0);
      };
      const before = await proxy!.status();
      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP.web}:80`, count: 6 }));
      assert.deepEqual(t.failures, []);
      const after = await proxy!.status();
      assert.equal(conns(after) - conns(before), 6, "the ClusterIP's connections");
      assert.equal(beGained(before, after), 6, "its backends' connections");
    });

    test("weighted least-conn 3:1: one connection at a time, about three of four go to web-1", async () => {
      // Each connection closes before the next: none is active, so BPF's tie goes to the first candidate, drawn
      // by weight; IPVS's wlc weighs the closed (inactive) ones. 200 connections: 150 expected, 120..180 allowed.
      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP.weighted}:80`, count: 200 }));
      assert.deepEqual(t.failures, []);
      const one = t.byName.get("web-1") ?? 0;
      assert.ok(one >= 120 && one <= 180, `web-1 took ${one} of 200: ${JSON.stringify([...t.byName])}`);
    });

    test("Maglev services answer (ipvs: through the mh scheduler)", async () => {
      const t = tally(await echoRequest(lab, "client", { tcp: `${VIP.maglev}:80`, count: 10 }));
      assert.deepEqual(t.failures, []);
    });

    ipvsTest(
      "a virtual service changed behind the daemon's back is left to the diff: only the difference is applied",
      async () => {
        // Add a stray real server to an owned service; the next full sync (or any sync) removes just that.
        await lab.run(A, ["ipvsadm", "-a", "-t", `${VIP.maglev}:80`, "-r", "10.244.1.99:8080", "-m"]);
        const svcs = services(both.filter((e) => e.ip !== drained?.goneIP));
        write(svcs.map((s) => (s.name === "sticky" ? { ...s, eps: [...both, { ip: POD.client, node: A }] } : s)));
        await proxy!.waitForStatus((s) => fe(s, VIP.sticky, 80)?.backends.length === 3, 30_000);
        assert.doesNotMatch(await ipvsadm(), /10\.244\.1\.99/);
        write(svcs);
        await proxy!.waitForStatus((s) => fe(s, VIP.sticky, 80)?.backends.length === 2, 30_000);
      },
    );

    ipvsTest("the drained real server is deleted once its last connection is gone", async () => {
      assert.ok(drained?.goneIP, "the graceful removal test ran");
      await proxy!.waitForStatus((s) => fe(s, VIP.web, 80)?.backends.length === 1, 240_000);
      assert.doesNotMatch(vsBlock(await ipvsadm(), "TCP", `${VIP.web}:80`), new RegExp(`${drained.goneIP}:8080`));
      write(services());
      await proxy!.waitForStatus((s) => fe(s, VIP.web, 80)?.backends.length === 2, 30_000);
    });

    test("traffic keeps flowing while the daemon is down, and a restart keeps what the kernel holds", async () => {
      const before = await proxy!.status();
      await proxy!.stop();
      const down = tally(await echoRequest(lab, "client", { tcp: `${VIP.web}:80`, count: 20 }));
      assert.deepEqual(down.failures, []);
      assert.deepEqual([...down.byName.keys()].sort(), ["web-1", "web-2"]);
      proxy = await ProxyNode.start(lab, A, {
        manifestDir: dir,
        bpffs: bpffs.path,
        extraArgs: ["--config", join(dir, "..", "config.yaml")],
        startTimeoutMs: 120_000,
        // ipvs: a daemon the kernel refuses BPF to (no CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN; Debian's
        // kernel.unprivileged_bpf_disabled is set), with everything IPVS needs.
        wrapper: mode === "ipvs" ? ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", "--inh-caps=-all", "--"] : [],
      });
      const after = await proxy.waitForStatus((s) => fe(s, VIP.web, 80)?.backends.length === 2, 60_000);
      assert.deepEqual(after.frontends, before.frontends);
    });

    ipvsTest("cleanup removes the virtual services, kube-ipvs0 and the nftables table", async () => {
      await proxy!.stop();
      const kept = await ipvsadm();
      assert.match(kept, new RegExp(`${VIP.web}:80`), "stopping the daemon leaves the data plane in place");
      await proxy!.cleanup();
      proxy = undefined;
      assert.doesNotMatch(await ipvsadm(), /^(TCP|UDP|SCTP) /m);
      assert.notEqual((await lab.exec(A, ["ip", "link", "show", "kube-ipvs0"])).code, 0);
      assert.notEqual((await lab.exec(A, ["nft", "list", "table", "ip", "bpfproxy-ipvs"])).code, 0);
    });
  });
