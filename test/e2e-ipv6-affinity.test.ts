// End to end, ClientIP session affinity over IPv6 (issue 17): the daemon runs from a manifest folder on node-a
// of a dual-stack two-node lab and serves a dual-stack Service with sessionAffinity ClientIP (no
// sessionAffinityConfig: kube-proxy's default timeout, 10800 s) and two backends, one per node. A pod's many new
// connections (TCP, and UDP datagrams from new source ports) all reach one backend, over IPv6 as over IPv4.
// Then the IPv6 client's backend becomes terminating while the other is ready: the client moves to the ready
// one and stays there when the first is ready again; its backend removed, it moves back. `status` shows the
// IPv6 frontend with its affinity and its per-frontend counters. Everything lives in namespaces the lab makes
// and removes; every wait is bounded.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { endpointSlice, manifest, node, service, webPorts } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP4 = "10.96.0.60";
const VIP6 = "fd00:96::60";
const CLIENT4 = "10.244.1.10";
const CLIENT6 = "fd00:10:244:1::10";
const BE4 = { "web-a": "10.244.1.11", "web-b": "10.244.2.10" };
const BE6 = { "web-a": "fd00:10:244:1::11", "web-b": "fd00:10:244:2::10" };
const NODE_OF = { "web-a": "node-a", "web-b": "node-b" } as const;
type Pod = keyof typeof BE4;
const PODS: Pod[] = ["web-a", "web-b"];

/** The Service and its slices: IPv6 endpoints `v6`, those in `terminating` serving but terminating. */
function objects(v6: Pod[], terminating: Pod[] = []): unknown[] {
  const ports = webPorts();
  const slice4 = endpointSlice(
    "web",
    ports,
    PODS.map((p) => ({ ip: BE4[p], node: NODE_OF[p] })),
  );
  const slice6 = {
    ...endpointSlice(
      "web",
      ports,
      v6.map((p) => ({ ip: BE6[p], node: NODE_OF[p] })),
    ),
    addressType: "IPv6",
  };
  slice6.metadata = { ...slice6.metadata, name: "web-v6" };
  slice6.endpoints = slice6.endpoints.map((e, i) =>
    terminating.includes(v6[i]!) ? { ...e, conditions: { ready: false, serving: true, terminating: true } } : e,
  );
  return [
    node("node-a", "192.0.2.11", ["10.244.1.0/24", "fd00:10:244:1::/64"]),
    service("web", VIP4, ports, {
      spec: {
        clusterIPs: [VIP4, VIP6],
        ipFamilies: ["IPv4", "IPv6"],
        ipFamilyPolicy: "RequireDualStack",
        sessionAffinity: "ClientIP",
      },
    }),
    slice4,
    slice6,
  ];
}

const frontend = (s: DataplaneStatus, address: string, protocol: "TCP" | "UDP") =>
  s.frontends.find((f) => f.address === address && f.protocol === protocol);
/** Each backend of the frontend as "address state". */
const backendsOf = (s: DataplaneStatus, address: string, protocol: "TCP" | "UDP" = "TCP") =>
  frontend(s, address, protocol)
    ?.backends.map((b) => `${b.address} ${b.state}`)
    .sort()
    .join(",");

describe("ClientIP affinity over IPv6 through the daemon (dual-stack Service)", { timeout: 240_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  const write = (objs: unknown[]) => writeFileSync(join(dir, "services.yaml"), manifest(objs));

  /** The backends that answered `count` new connections (TCP) or datagrams from new source ports (UDP). */
  async function answered(proto: "tcp" | "udp", target: string, count = 20): Promise<string[]> {
    const r = await echoRequest(lab, "client", { [proto]: target, count, timeoutMs: 2000 });
    const failed = r.filter((x) => !x.ok);
    assert.deepEqual(failed, [], `${proto} ${target}: ${failed.length}/${count} failed`);
    return [...new Set(r.map((x) => x.reply!.split(" ")[0]!))].sort();
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipv6aff-"));
    write(objects(PODS));
    lab = await Lab.create({
      prefix: `bpx6f${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          ip6: "2001:db8::a",
          podCIDR6: "fd00:10:244:1::/64",
          pods: [
            { name: "client", ip: CLIENT4, ip6: CLIENT6 },
            { name: "web-a", ip: BE4["web-a"], ip6: BE6["web-a"] },
          ],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          ip6: "2001:db8::b",
          podCIDR6: "fd00:10:244:2::/64",
          pods: [{ name: "web-b", ip: BE4["web-b"], ip6: BE6["web-b"] }],
        },
      ],
    });
    for (const pod of PODS) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], bind: "::" });
    bpffs = PrivateBpffs.create("ipv6-aff");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      devices: ["eth0"],
      clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
    });
    const both6 = `${BE6["web-a"]} active,${BE6["web-b"]} active`;
    await proxy.waitForStatus(
      (s) =>
        backendsOf(s, VIP6) === both6 && backendsOf(s, VIP6, "UDP") === both6 && frontend(s, VIP4, "TCP") !== undefined,
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

  // Without affinity each new flow picks at random among two: one backend for 20 is 2^-19 by chance.
  for (const [family, vip] of [
    ["IPv6", `[${VIP6}]`],
    ["IPv4", VIP4],
  ] as const) {
    for (const [proto, port] of [
      ["tcp", 80],
      ["udp", 53],
    ] as const) {
      test(`${family} ${proto}: 20 new flows of one client to ${vip}:${port} all reach one backend`, async () => {
        const names = await answered(proto, `${vip}:${port}`);
        assert.equal(names.length, 1, `one backend for every flow: ${names.join(",")}`);
      });
    }
  }

  test("status shows the IPv6 frontend with ClientIP affinity (default timeout) and its counters", async () => {
    const st = await proxy!.status();
    assert.deepEqual(frontend(st, VIP6, "TCP")?.sessionAffinity, { type: "ClientIP", timeoutSeconds: 10800 });
    const c = st.frontendCounters.find((f) => f.address === VIP6 && f.protocol === "TCP");
    assert.ok(c, `a counter entry for [${VIP6}]:80/TCP: ${JSON.stringify(st.frontendCounters)}`);
    assert.equal(c.service, "default/web");
    const conns = c.connections ?? 0;
    assert.ok(conns >= 20, `20 connections counted: ${conns}`);
    assert.ok(c.packets >= 3 * conns && c.bytes > c.packets * 60, JSON.stringify(c));
    const u = st.frontendCounters.find((f) => f.address === VIP6 && f.protocol === "UDP");
    assert.ok((u?.connections ?? 0) >= 20, `20 UDP flows counted: ${JSON.stringify(u)}`);
    const be = st.backendCounters?.filter((b) => b.address === BE6["web-a"] || b.address === BE6["web-b"]) ?? [];
    assert.ok(
      be.reduce((n, b) => n + (b.protocol === "TCP" ? b.connections : 0), 0) >= 20,
      `the IPv6 backends' counters: ${JSON.stringify(be)}`,
    );
  });

  test("its backend terminating while another is ready, the IPv6 client moves; back when its new one is removed", async () => {
    const [first] = await answered("tcp", `[${VIP6}]:80`, 5);
    assert.ok(first === "web-a" || first === "web-b", `answered by ${first}`);
    const other: Pod = first === "web-a" ? "web-b" : "web-a";
    // Terminating with a ready backend left: kube-proxy sends new flows to the ready one only.
    write(objects(PODS, [first]));
    await proxy!.waitForStatus(
      (s) => backendsOf(s, VIP6) === `${BE6[other]} active` && backendsOf(s, VIP6, "UDP") === `${BE6[other]} active`,
      15_000,
    );
    assert.deepEqual(await answered("tcp", `[${VIP6}]:80`), [other], "moved off the terminating backend");
    assert.deepEqual(await answered("udp", `[${VIP6}]:53`), [other], "UDP too");
    // Ready again: the client keeps the backend it has now.
    write(objects(PODS));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP6)?.split(",").length === 2, 15_000);
    assert.deepEqual(await answered("tcp", `[${VIP6}]:80`), [other], "stays with its backend");
    // Its backend removed: it moves back.
    write(objects([first]));
    await proxy!.waitForStatus((s) => backendsOf(s, VIP6) === `${BE6[first]} active`, 15_000);
    assert.deepEqual(await answered("tcp", `[${VIP6}]:80`), [first], "moved to the backend left");
    // The IPv4 half kept its own affinity all along.
    assert.equal((await answered("tcp", `${VIP4}:80`)).length, 1, "IPv4 still sticks to one backend");
  });
});
