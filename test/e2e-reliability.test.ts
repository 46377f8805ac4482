// End to end, under load: the real daemon in a lab node namespace with long-lived TCP connections,
// connected UDP flows and a stream of fresh connections through a ClusterIP, while the daemon is
// SIGKILLed and restarted, its BPF programs are replaced by freshly loaded ones, and backends are
// added and removed; over IPv4 and over IPv6 (an IPv6 single-stack Service). Each test prints the measured
// figures (also recorded in docs/reliability.md).
// Everything made is removed after, also on failure; every wait is bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startLoad, type LoadHandle } from "../src/lab/index.js";
import { BpfMap } from "../src/native/index.js";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import type { LoadReport } from "../src/lab/echo.js";
import { cliCommand, PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

type Family = "IPv4" | "IPv6";
const VIPS: Record<Family, string> = { IPv4: "10.96.0.10", IPv6: "fd00:96::10" };
const PODS: Record<string, { ip: string; ip6: string }> = {
  "web-1": { ip: "10.244.1.5", ip6: "fd00:10:244:1::5" },
  "web-2": { ip: "10.244.1.6", ip6: "fd00:10:244:1::6" },
  "web-3": { ip: "10.244.1.7", ip6: "fd00:10:244:1::7" },
  client: { ip: "10.244.1.20", ip6: "fd00:10:244:1::20" },
};
// kubeadm's dual-stack value: the daemon must serve IPv4 and set the IPv6 CIDR aside, not crash.
const CLUSTER_CIDRS = ["10.244.0.0/16", "fd00:10:244::/56"];
const LOAD = { conns: 40, flows: 20, intervalMs: 50, newPerSec: 40, timeoutMs: 2000 };

function manifests(family: Family, backends: string[]): string {
  const v6 = family === "IPv6";
  const VIP = VIPS[family];
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: {
        type: "ClusterIP",
        clusterIP: VIP,
        clusterIPs: [VIP],
        ...(v6 ? { ipFamilies: ["IPv6"], ipFamilyPolicy: "SingleStack" } : {}),
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
        ],
      },
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: family,
      metadata: { name: "web-1", namespace: "default", labels: { "kubernetes.io/service-name": "web" } },
      ports: [
        { name: "http", port: 8080, protocol: "TCP" },
        { name: "dns", port: 5353, protocol: "UDP" },
      ],
      endpoints: backends.map((b) => ({
        addresses: [v6 ? PODS[b]!.ip6 : PODS[b]!.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: "node-a",
      })),
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a" },
      status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
    },
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

/** The "synced" lines the daemon logs at --v 1: writes per sync. */
function syncs(logs: string): Array<{ upserts: number; deletes: number; full: boolean }> {
  const out = [];
  for (const m of logs.matchAll(/ synced .*?upserts=(\d+) deletes=(\d+) full=(true|false)/g)) {
    out.push({ upserts: Number(m[1]), deletes: Number(m[2]), full: m[3] === "true" });
  }
  return out;
}

function summary(r: LoadReport) {
  return {
    tcpConns: r.tcp.length,
    tcpEnded: r.tcp.filter((c) => c.end !== undefined).length,
    tcpMoved: r.tcp.filter((c) => c.moved > 0).length,
    tcpReplies: r.tcp.reduce((n, c) => n + c.replies, 0),
    udpFlows: r.udp.length,
    udpMoved: r.udp.filter((f) => f.backends.length > 1).length,
    udpReplies: r.udp.reduce((n, f) => n + f.replies, 0),
    udpTimeouts: r.udp.reduce((n, f) => n + f.timeouts, 0),
    freshOk: r.fresh.ok,
    freshFailed: r.fresh.failed,
    freshErrors: r.fresh.errors,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const family of ["IPv4", "IPv6"] as const)
  describe(`reliability under load (${family})`, { timeout: 300_000 }, () => {
    const v6 = family === "IPv6";
    const VIP = VIPS[family];
    const target = (port: number) => (v6 ? `[${VIP}]:${port}` : `${VIP}:${port}`);
    const backendsOf = (s: DataplaneStatus, proto = "TCP") =>
      s.frontends
        .find((f) => f.address === VIP && f.protocol === proto)
        ?.backends.map((b) => b.address)
        .sort()
        .join(",");
    const ipsOf = (names: string[]) =>
      names
        .map((n) => (v6 ? PODS[n]!.ip6 : PODS[n]!.ip))
        .sort()
        .join(",");
    /** Family-independent cases are registered once, with IPv4 (not skipped: absent from the IPv6 run). */
    const once = (name: string, fn: () => Promise<void>): void => {
      if (!v6) test(name, fn);
    };
    let lab: Lab;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    let dir: string;
    const write = (backends: string[]) => writeFileSync(join(dir, "web.yaml"), manifests(family, backends));
    const start = () =>
      ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path, clusterCIDRs: CLUSTER_CIDRS });
    const load = (): LoadHandle => startLoad(lab, "client", { tcp: target(80), udp: target(53), ...LOAD });

    /** Program ids attached (tc ingress) on the node's interfaces. */
    async function attachedProgramIds(): Promise<string[]> {
      const ids: string[] = [];
      for (const dev of ["eth0", ...["web-1", "web-2", "web-3", "client"].map((p) => lab.podInterface(p))]) {
        const out = await lab.run("node-a", ["tc", "filter", "show", "dev", dev, "ingress"]);
        const m = /\bid (\d+)/.exec(out);
        assert.ok(m, `no program on ${dev}: ${out}`);
        ids.push(m[1]!);
      }
      return ids;
    }

    /** Waits (bounded) until the daemon has logged n "synced" lines. */
    async function waitSyncs(p: ProxyNode, n: number, ms = 10_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (syncs(p.logs).length < n) {
        assert.ok(Date.now() < deadline, `fewer than ${n} syncs after ${ms} ms:\n${p.logs}`);
        await sleep(50);
      }
    }

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-e2e-rel-"));
      write(["web-1", "web-2"]);
      lab = await Lab.create({
        prefix: `bpxrel${v6 ? 6 : 4}${process.pid}-`,
        nodes: [
          {
            name: "node-a",
            ip: "192.0.2.11",
            podCIDR: "10.244.1.0/24",
            ...(v6 ? { ip6: "2001:db8::a", podCIDR6: "fd00:10:244:1::/64" } : {}),
            pods: Object.entries(PODS).map(([name, a]) => ({ name, ip: a.ip, ...(v6 ? { ip6: a.ip6 } : {}) })),
          },
        ],
      });
      for (const pod of ["web-1", "web-2", "web-3"])
        await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], ...(v6 ? { bind: "::" } : {}) });
      bpffs = PrivateBpffs.create(`e2e-rel-${family}`);
      proxy = await start();
      await proxy.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-2"]), 10_000);
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    once(
      "dual-stack clusterCIDR: the daemon runs, serves IPv4, and says once that the BPF IPv6 path does not use the IPv6 CIDR yet",
      async () => {
        const lines = proxy!.logs
          .split("\n")
          .filter((l) => l.includes("IPv6 cluster CIDRs are not used by the BPF IPv6 path yet"));
        assert.equal(lines.length, 1, proxy!.logs);
        assert.match(lines[0]!, /fd00:10:244::\/56/);
        const r = await lab.exec("node-a", [
          process.execPath,
          "-e",
          "fetch('http://127.0.0.1:10249/metrics').then(async (r) => console.log(await r.text()), () => process.exit(1))",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^bpfproxy_ipv6_skipped\{kind="clusterCIDR"\} 1$/m);
        const st = await proxy!.status();
        assert.equal(backendsOf(st), ipsOf(["web-1", "web-2"]));
      },
    );

    test("SIGKILL under load, then restart: no connection reset, UDP flows keep their backend, new connections served, restart writes nothing", async () => {
      const full = syncs(proxy!.logs)[0]!;
      const l = load();
      let report: LoadReport;
      try {
        await l.ready();
        await sleep(1000);
        const killed = Date.now();
        proxy!.child.kill("SIGKILL");
        await new Promise<void>((r) =>
          proxy!.child.exitCode !== null || proxy!.child.signalCode !== null
            ? r()
            : proxy!.child.once("exit", () => r()),
        );
        await sleep(3000); // down under load
        proxy = await start();
        await waitSyncs(proxy, 1);
        const downMs = Date.now() - killed;
        await sleep(2000);
        report = await l.stop();
        const s = summary(report);
        const restart = syncs(proxy.logs)[0]!;
        console.log(
          `# figures ${family} sigkill: downMs=${downMs} ${JSON.stringify(s)} firstSyncAfterRestart=${JSON.stringify(restart)} fullProgramming=${JSON.stringify(full)}`,
        );
        assert.deepEqual(
          report.tcp.filter((c) => c.end !== undefined),
          [],
          "established TCP connections that ended",
        );
        assert.equal(s.tcpMoved, 0, "TCP connections answered by another backend");
        assert.equal(s.udpMoved, 0, "UDP flows that changed backend");
        assert.equal(s.freshFailed, 0, `fresh connections failed: ${JSON.stringify(s.freshErrors)}`);
        assert.ok(s.freshOk > 100, `only ${s.freshOk} fresh connections`);
        assert.deepEqual(
          { upserts: restart.upserts, deletes: restart.deletes },
          { upserts: 0, deletes: 0 },
          "a restart over unchanged pins writes nothing",
        );
      } finally {
        await l.stop().catch(() => undefined);
      }
    });

    test("restart after a change made while the daemon was down writes only the difference", async () => {
      proxy!.child.kill("SIGKILL");
      await new Promise<void>((r) =>
        proxy!.child.exitCode !== null || proxy!.child.signalCode !== null ? r() : proxy!.child.once("exit", () => r()),
      );
      write(["web-1", "web-2", "web-3"]);
      proxy = await start();
      await proxy.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-2", "web-3"]), 10_000);
      const first = syncs(proxy.logs)[0]!;
      console.log(
        `# figures ${family} restart-diff: firstSync=${JSON.stringify(first)} (one backend added to a TCP and a UDP frontend)`,
      );
      // One backend for each of the two frontends: its backend entry, its slot and the master's new count.
      assert.deepEqual({ upserts: first.upserts, deletes: first.deletes }, { upserts: 6, deletes: 0 });
      write(["web-1", "web-2"]);
      await proxy.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-2"]), 10_000);
    });

    test("program upgrade under load: freshly loaded programs replace the attached ones, maps kept, 0 connections lost", async () => {
      const before = await attachedProgramIds();
      const statusBefore = await proxy!.status();
      const l = load();
      try {
        await l.ready();
        await sleep(1000);
        await proxy!.stop();
        proxy = await start();
        await waitSyncs(proxy, 1);
        const after = await attachedProgramIds();
        await sleep(2000);
        const report = await l.stop();
        const s = summary(report);
        console.log(
          `# figures ${family} upgrade: programs ${before.join(",")} -> ${after.join(",")} ${JSON.stringify(s)}`,
        );
        for (let i = 0; i < before.length; i++)
          assert.notEqual(after[i], before[i], "each interface runs the newly loaded program");
        assert.deepEqual((await proxy.status()).frontends, statusBefore.frontends, "maps kept");
        assert.deepEqual(
          report.tcp.filter((c) => c.end !== undefined),
          [],
        );
        assert.equal(s.tcpMoved, 0);
        assert.equal(s.udpMoved, 0);
        assert.equal(s.freshFailed, 0, JSON.stringify(s.freshErrors));
      } finally {
        await l.stop().catch(() => undefined);
      }
    });

    test("scale up under load: established flows never move; new connections reach the new backend", async () => {
      const l = load();
      try {
        await l.ready();
        write(["web-1", "web-2", "web-3"]);
        await proxy!.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-2", "web-3"]), 5000);
        await sleep(2000);
        const report = await l.stop();
        const s = summary(report);
        console.log(
          `# figures ${family} scale-up: ${JSON.stringify(s)} fresh by backend ${JSON.stringify(report.fresh.backends)}`,
        );
        assert.deepEqual(
          report.tcp.filter((c) => c.end !== undefined),
          [],
        );
        assert.equal(s.tcpMoved, 0);
        assert.equal(s.udpMoved, 0);
        assert.equal(s.freshFailed, 0);
        assert.ok((report.fresh.backends["web-3"] ?? 0) > 0, "new connections reach the added backend");
      } finally {
        await l.stop().catch(() => undefined);
      }
    });

    test("scale down under load: only flows to the removed backend end, promptly with a reset; the others never move", async () => {
      const l = load();
      try {
        await l.ready();
        await sleep(500);
        const changed = Date.now();
        write(["web-1", "web-3"]);
        await proxy!.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-3"]), 5000);
        await sleep(3000);
        const report = await l.stop();
        const s = summary(report);
        const onRemoved = report.tcp.filter((c) => c.backend === "web-2");
        const others = report.tcp.filter((c) => c.backend !== "web-2");
        const ends = l.events.filter((e) => e.event === "tcp-end");
        const endMs = ends.map((e) => e.at - changed);
        console.log(
          `# figures ${family} scale-down: ${JSON.stringify(s)} onRemoved=${onRemoved.length} ended=${ends.length} endErrors=${JSON.stringify([...new Set(ends.map((e) => e.error))])} msAfterChange max=${Math.max(...endMs)} (includes the folder debounce and sync)`,
        );
        assert.ok(onRemoved.length > 0, "some connections were on the removed backend");
        assert.deepEqual(
          others.filter((c) => c.end !== undefined || c.moved > 0),
          [],
          "connections to kept backends are untouched",
        );
        assert.ok(
          onRemoved.every((c) => c.end === "ECONNRESET"),
          `ends: ${JSON.stringify(onRemoved.map((c) => c.end))}`,
        );
        assert.ok(Math.max(...endMs) < 1500, `reset ${Math.max(...endMs)} ms after the change`);
        // UDP flows whose backend left move to a remaining one (kube-proxy clears their conntrack entries) and
        // are answered there at the end; the rest never move.
        const udpOnRemoved = report.udp.filter((f) => f.backends[0] === "web-2");
        assert.ok(udpOnRemoved.length > 0, `some UDP flows were on the removed backend: ${JSON.stringify(report.udp)}`);
        assert.deepEqual(
          udpOnRemoved.filter((f) => f.backends.length < 2 || f.last === "web-2"),
          [],
          "UDP flows on the removed backend moved off it and stayed off",
        );
        assert.deepEqual(
          report.udp.filter((f) => f.backends[0] !== "web-2" && f.backends.length !== 1),
          [],
          "UDP flows on kept backends never moved",
        );
        assert.equal(s.freshFailed, 0, JSON.stringify(s.freshErrors));
        assert.ok(!("web-2" in report.fresh.backends) || report.fresh.backends["web-2"] < s.freshOk);
      } finally {
        await l.stop().catch(() => undefined);
        write(["web-1", "web-2"]);
      }
    });

    once(
      "least privilege: the daemon runs with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only; status reads with CAP_BPF and CAP_SYS_ADMIN; pins are root-only",
      async () => {
        const caps = (set: string[]) => [
          "setpriv",
          `--bounding-set=-all,${set.map((c) => `+${c}`).join(",")}`,
          "--inh-caps=-all",
          "--",
        ];
        await proxy!.stop();
        proxy = await ProxyNode.start(lab, "node-a", {
          manifestDir: dir,
          bpffs: bpffs.path,
          clusterCIDRs: CLUSTER_CIDRS,
          wrapper: caps(["bpf", "net_admin", "perfmon"]),
        });
        await waitSyncs(proxy, 1);
        write(["web-1", "web-3"]); // it programs changes, not only restores
        await proxy.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-3"]), 5000);
        const res = await echoRequest(lab, "client", { tcp: target(80), count: 10 });
        assert.deepEqual(
          res.filter((r) => !r.ok),
          [],
        );
        // Without CAP_PERFMON the verifier refuses the programs (pointer checks): it is needed, not decoration.
        const statusWith = (set: string[]) =>
          lab.exec("node-a", [...caps(set), ...cliCommand(), "status", "--bpffs", bpffs.path, "-o", "json"]);
        const st = await statusWith(["bpf", "sys_admin"]);
        assert.equal(st.code, 0, st.stderr);
        assert.equal((JSON.parse(st.stdout) as DataplaneStatus).node, "node-a");
        assert.notEqual((await statusWith(["bpf"])).code, 0, "program names need CAP_SYS_ADMIN (program info by id)");
        // Pins 0600 in a 0700 folder, and the handles status uses cannot write.
        assert.equal(statSync(bpffs.path).mode & 0o777, 0o700);
        for (const f of readdirSync(bpffs.path).filter((n) => !n.endsWith(".debug")))
          assert.equal(statSync(join(bpffs.path, f)).mode & 0o777, 0o600, f);
        const ro = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.svcMeta), { readOnly: true });
        try {
          assert.ok(ro.entries().count > 0);
          assert.throws(() => ro.update(Buffer.alloc(ro.info.keySize), Buffer.alloc(ro.info.valueSize)), /EPERM/);
        } finally {
          ro.close();
        }
        write(["web-1", "web-2"]);
        await proxy.waitForStatus((s) => backendsOf(s) === ipsOf(["web-1", "web-2"]), 5000);
      },
    );
  });
