// End to end, IPv6 and dual-stack from objects (issue 17): the daemon runs from a manifest folder on node-a of a
// dual-stack two-node lab and serves a dual-stack Service (ClusterIPs 10.96.0.50 and fd00:96::50) with an IPv4
// and an IPv6 EndpointSlice through the one reconciler: nothing is written by hand. A pod reaches both families
// over TCP and UDP; one backend is a pod on node-a, one on node-b (which runs no bpfproxy). Then: status shows
// the IPv6 frontend, a daemon restart keeps an established IPv6 TCP connection and writes nothing, removing an
// IPv6 endpoint moves new flows off it, deleting the Service empties the IPv6 maps; `bpfproxy explain` follows an
// IPv6 packet through the model and the IPv6 program. Everything lives in
// namespaces the lab makes and removes; every wait is bounded.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startHold } from "../src/lab/index.js";
import { cliCommand, PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { ct6Entry, ct6Key, MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { endpointSlice, manifest, node, service, webPorts } from "./fixtures/k8s-objects.js";
import { explainOn, type Ran } from "./fixtures/explain.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP4 = "10.96.0.50";
const VIP6 = "fd00:96::50";
const CLIENT4 = "10.244.1.10";
const CLIENT6 = "fd00:10:244:1::10";
const BE4 = { "web-a": "10.244.1.11", "web-b": "10.244.2.10" };
const BE6 = { "web-a": "fd00:10:244:1::11", "web-b": "fd00:10:244:2::10" };
const NODE_OF = { "web-a": "node-a", "web-b": "node-b" } as const;
type Pod = keyof typeof BE4;

/** The dual-stack Service and its two slices (IPv6 endpoints: `v6`); none at all when `service` is false. */
function objects(v6: Pod[], withService = true): unknown[] {
  const nodeObj = node("node-a", "192.0.2.11", ["10.244.1.0/24", "fd00:10:244:1::/64"]);
  if (!withService) return [nodeObj];
  const ports = webPorts();
  const slice4 = endpointSlice(
    "web",
    ports,
    (Object.keys(BE4) as Pod[]).map((p) => ({ ip: BE4[p], node: NODE_OF[p] })),
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
  return [
    nodeObj,
    service("web", VIP4, ports, {
      spec: { clusterIPs: [VIP4, VIP6], ipFamilies: ["IPv4", "IPv6"], ipFamilyPolicy: "RequireDualStack" },
    }),
    slice4,
    slice6,
  ];
}

const frontend = (s: DataplaneStatus, address: string, protocol: "TCP" | "UDP") =>
  s.frontends.find((f) => f.address === address && f.protocol === protocol);
const backendsOf = (s: DataplaneStatus, address: string, protocol: "TCP" | "UDP" = "TCP") =>
  frontend(s, address, protocol)
    ?.backends.map((b) => b.address)
    .sort()
    .join(",");

function syncs(logs: string): Array<{ upserts: number; deletes: number }> {
  return [...logs.matchAll(/ synced .*?upserts=(\d+) deletes=(\d+)/g)].map((m) => ({
    upserts: Number(m[1]),
    deletes: Number(m[2]),
  }));
}

describe(
  "the daemon serves a dual-stack Service from objects, IPv6 through the BPF IPv6 path",
  { timeout: 240_000 },
  () => {
    let lab: Lab;
    let dir: string;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    const write = (objs: unknown[]) => writeFileSync(join(dir, "services.yaml"), manifest(objs));
    const start = () =>
      ProxyNode.start(lab, "node-a", {
        manifestDir: dir,
        bpffs: bpffs.path,
        devices: ["eth0"],
        clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
      });

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipv6d-"));
      write(objects(["web-a", "web-b"]));
      lab = await Lab.create({
        prefix: `bpx6d${process.pid}-`,
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
      for (const pod of ["web-a", "web-b"])
        await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353], bind: "::" });
      bpffs = PrivateBpffs.create("ipv6-d");
      proxy = await start();
      await proxy.waitForStatus(
        (s) =>
          backendsOf(s, VIP6) === `${BE6["web-a"]},${BE6["web-b"]}` &&
          backendsOf(s, VIP6, "UDP") === `${BE6["web-a"]},${BE6["web-b"]}` &&
          backendsOf(s, VIP4) === `${BE4["web-a"]},${BE4["web-b"]}`,
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

    for (const [family, vip, client] of [
      ["IPv6", `[${VIP6}]`, /^web-[ab] \[fd00:10:244:1::10\]:\d+/],
      ["IPv4", VIP4, /^web-[ab] (\[::ffff:)?10\.244\.1\.10\]?:\d+/],
    ] as const) {
      for (const [proto, port] of [
        ["tcp", 80],
        ["udp", 53],
      ] as const) {
        test(`${family} ${proto}: ${vip}:${port} answers 20 of 20 from backends on both nodes, which see the client's own address`, async () => {
          const r = await echoRequest(lab, "client", { [proto]: `${vip}:${port}`, count: 20, timeoutMs: 2000 });
          const failed = r.filter((x) => !x.ok || !client.test(x.reply ?? ""));
          assert.deepEqual(failed, [], `${failed.length}/20 failed`);
          const names = new Set(r.map((x) => x.reply!.split(" ")[0]));
          assert.deepEqual([...names].sort(), ["web-a", "web-b"], "both backends answered (2^-19 to fail by chance)");
        });
      }
    }

    test("status -o json and the table show the IPv6 frontends and backends; the IPv6 maps hold them", async () => {
      const st = await proxy!.status();
      const web6 = frontend(st, VIP6, "TCP");
      assert.deepEqual(web6, {
        service: "default/web",
        portName: "http",
        type: "ClusterIP",
        address: VIP6,
        port: 80,
        protocol: "TCP",
        scope: "internal",
        sessionAffinity: { type: "None" },
        algorithm: "random",
        backends: [
          { address: BE6["web-a"], port: 8080, state: "active", nodeLocal: true },
          { address: BE6["web-b"], port: 8080, state: "active", nodeLocal: false },
        ],
      });
      assert.equal(backendsOf(st, VIP6, "UDP"), `${BE6["web-a"]},${BE6["web-b"]}`);
      // Two frontends (TCP, UDP) of two backends each; the backends are per (address, port, protocol).
      assert.equal(st.maps[MAP_NAMES.services6]?.entries, 6);
      assert.equal(st.maps[MAP_NAMES.backends6]?.entries, 4);
      const table = await proxy!.statusTable();
      assert.match(table, /\[fd00:96::50\]:80\/TCP/);
      assert.match(table, /\[fd00:10:244:1::11\]:8080, \[fd00:10:244:2::10\]:8080/);
      assert.doesNotMatch(proxy!.logs, /frontends are not served by the BPF data plane yet/);
    });

    test("a daemon restart keeps an established IPv6 TCP connection working and writes nothing", async () => {
      const hold = startHold(lab, "client", `[${VIP6}]:80`, 200, 2000);
      try {
        await hold.waitFor(3, 10_000);
        const before = await proxy!.status();
        await proxy!.stop();
        await hold.waitFor(hold.events.length + 3, 10_000);
        proxy = await start();
        await proxy.waitForStatus((s) => backendsOf(s, VIP6) === `${BE6["web-a"]},${BE6["web-b"]}`, 15_000);
        await proxy.waitForLog(/ synced /, 10_000);
        await hold.waitFor(hold.events.length + 5, 10_000);
        const errors = hold.events.filter((e) => "error" in e);
        assert.deepEqual(errors, [], "the connection carried on through the restart");
        const backends = new Set(hold.events.map((e) => ("reply" in e ? e.reply.split(" ")[0] : "")));
        assert.equal(backends.size, 1, "one connection, one backend");
        assert.deepEqual((await proxy.status()).frontends, before.frontends);
        assert.deepEqual(syncs(proxy.logs)[0], { upserts: 0, deletes: 0 }, "the IPv6 entries were re-adopted");
      } finally {
        await hold.stop();
      }
    });

    const explain = (target: string, args: string[]): Promise<Ran> =>
      explainOn(lab, "node-a", bpffs.path, target, args);
    const fromClient = (sport: number) => ["--from", `[${CLIENT6}]:${sport}`, "--from-pod", lab.podInterface("client")];

    test("explain over IPv6: a new flow to the IPv6 ClusterIP is translated to one of its IPv6 endpoints", async () => {
      const e = await explain(`[${VIP6}]:80/tcp`, fromClient(41000));
      assert.deepEqual(e.causes, [], JSON.stringify(e, null, 1));
      assert.equal(e.model.frontend?.address, VIP6);
      assert.equal(e.model.scope, "internal", "the client is in the IPv6 cluster CIDR");
      assert.deepEqual(
        e.model.endpoints.map((x) => [x.address, x.reason]).sort(),
        [
          [BE4["web-a"], "other-family"],
          [BE4["web-b"], "other-family"],
          [BE6["web-a"], null],
          [BE6["web-b"], null],
        ].sort(),
      );
      assert.equal(e.packet.sameProgram, true, "the copy runs the attached program's code");
      assert.equal(e.packet.verdict, "forward");
      assert.deepEqual(e.packet.reasons, ["translated_new"]);
      const be = e.packet.backend;
      assert.ok(be && Object.values(BE6).includes(be.address), JSON.stringify(e.packet));
      assert.equal(be.port, 8080);
      assert.deepEqual(e.packet.rewrites, { dst: be.address, dport: 8080 });
      const table = await lab.exec(
        "node-a",
        [...cliCommand(), "explain", `[${VIP6}]:80/tcp`, "--bpffs", bpffs.path, ...fromClient(41000)],
        { timeoutMs: 60_000 },
      );
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^\[fd00:10:244:1::10\]:41000 -> \[fd00:96::50\]:80\/tcp entering pod /m);
      assert.match(table.stdout, /default\/web port http: ClusterIP \[fd00:96::50\]:80\/TCP scope internal/);
      assert.match(table.stdout, /^Reachable\.$/m);
    });

    test("explain over IPv6: a held connection's next segment follows its conntrack entry to the backend it reached", async () => {
      const hold = startHold(lab, "client", `[${VIP6}]:80`, 600_000, 5000);
      try {
        await hold.waitFor(1, 10_000);
        const first = hold.events.find((x) => "reply" in x);
        assert.ok(first && "reply" in first, JSON.stringify(hold.events));
        const name = first.reply.split(" ")[0] as Pod;
        // The held connection's client port, from the live IPv6 conntrack table: the flow to the ClusterIP seen
        // last (earlier tests' connections from the same client are still there, closed).
        const ct = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.conntrack6), { readOnly: true });
        let sport = 0;
        let seen = -1n;
        try {
          const all = ct.entries();
          for (let i = 0; i < all.count; i++) {
            const k = ct6Key.decode(all.keys, i * ct6Key.size);
            if (k.dir !== 0 || k.saddr !== CLIENT6 || k.daddr !== VIP6 || k.dport !== 80) continue;
            const v = ct6Entry.decode(all.values, i * ct6Entry.size);
            if (v.lastSeenNs > seen) [sport, seen] = [k.sport, v.lastSeenNs];
          }
        } finally {
          ct.close();
        }
        assert.ok(sport > 0, "the held connection is tracked");
        const e = await explain(`[${VIP6}]:80/tcp`, fromClient(sport));
        assert.deepEqual(e.causes, []);
        assert.equal(e.packet.packet.tcpFlags, "ACK");
        assert.equal(e.packet.existing.conntrack.find((c) => c.dir === "forward")?.backend, `[${BE6[name]}]:8080`);
        assert.deepEqual(e.packet.reasons, ["translated_established"]);
        assert.equal(e.packet.backend?.address, BE6[name]);
      } finally {
        await hold.stop();
      }
    });

    test("removing an IPv6 endpoint moves new flows off it; the IPv4 half is untouched", async () => {
      write(objects(["web-a"]));
      await proxy!.waitForStatus(
        (s) => backendsOf(s, VIP6) === BE6["web-a"] && backendsOf(s, VIP6, "UDP") === BE6["web-a"],
        15_000,
      );
      for (const [proto, port] of [
        ["tcp", 80],
        ["udp", 53],
      ] as const) {
        const r = await echoRequest(lab, "client", { [proto]: `[${VIP6}]:${port}`, count: 20, timeoutMs: 2000 });
        assert.deepEqual(
          r.filter((x) => !x.ok || !x.reply!.startsWith("web-a ")),
          [],
          `${proto}: every new flow to the remaining backend`,
        );
      }
      const st = await proxy!.status();
      assert.equal(backendsOf(st, VIP4), `${BE4["web-a"]},${BE4["web-b"]}`);
      assert.equal(st.maps[MAP_NAMES.backends6]?.entries, 2, "the removed backend's entries are gone");
    });

    test("deleting the Service empties the IPv6 maps (and the IPv4 ones)", async () => {
      write(objects([], false));
      const st = await proxy!.waitForStatus((s) => s.frontends.length === 0, 15_000);
      assert.equal(st.maps[MAP_NAMES.services6]?.entries, 0);
      assert.equal(st.maps[MAP_NAMES.backends6]?.entries, 0);
      assert.equal(st.maps[MAP_NAMES.svcMeta]?.entries, 0);
      assert.equal(st.maps[MAP_NAMES.services]?.entries, 0);
      const r = await echoRequest(lab, "client", { tcp: `[${VIP6}]:80`, count: 1, timeoutMs: 1000 });
      assert.equal(r[0]!.ok, false, "nothing answers at the old IPv6 ClusterIP");
      const e = await explain(`[${VIP6}]:80/tcp`, fromClient(41001));
      assert.deepEqual(e.causes, ["no-such-address"]);
      assert.equal(e.packet.verdict, "pass", "the program leaves a packet to no frontend alone");
    });
  },
);
