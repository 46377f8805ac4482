// End to end: bpfproxy.io/lb-algorithm least-conn on real packets. A pod holds TCP connections open to a
// Service with two backends: power of two choices over two slots compares both backends every time, so the
// connections alternate; once those to one backend close, the next new ones all go to it; the active-flow
// counts in `bpfproxy status -o json` follow every step and are back at zero when everything is closed, and a
// one-way UDP flow's count goes when the conntrack GC collects it. Runs the real daemon in private namespaces;
// everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, prepareLabForXdp, startEchoServer, startHold, type HoldHandle } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";
import { BpfMap } from "../src/native/index.js";
import { MAP_NAMES, u32Key, u64Word } from "../src/dataplane/bpf/abi.js";
import { startQuietConn, type QuietConn } from "./fixtures/quiet-conn.js";
import { startResetServer, type ResetServer } from "./fixtures/reset-server.js";
import { maglevFlowHash, maglevIndex, maglevTable } from "../src/dataplane/bpf/maglev.js";
import { slotRuns } from "../src/dataplane/bpf/slots.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.60";
const UDP_VIP = "10.96.0.61";
const CLIENT = "10.244.1.20";
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6" };
const WEB = { name: "http", port: 80, targetPort: 8080, protocol: "TCP" as const };
// Nobody listens on the backends' UDP 9999: a datagram's flow is never answered and times out (udpTimeout 2 s).
const SINK = { name: "sink", port: 9999, targetPort: 9999, protocol: "UDP" as const };
const LC = { annotations: { "bpfproxy.io/lb-algorithm": "least-conn" } };
// bpfproxy.io/backend-weights: web-1 weighs 3, web-2 1 (docs/leastconn.md, "Weighted backends").
const WEIGHTS = `${PODS["web-1"]}=3, ${PODS["web-2"]}=1`;
const W_RANDOM_VIP = "10.96.0.62";
const W_LC_VIP = "10.96.0.63";
const W_ZERO_VIP = "10.96.0.64";
const PLAIN_VIP = "10.96.0.65";
const W_BAD_VIP = "10.96.0.66";
// IPv6: the random pick of the IPv6 path reads the same runs of slots.
const PODS6 = { "web-1": "fd00:10:244:1::5", "web-2": "fd00:10:244:1::6" };
const CLIENT6 = "fd00:10:244:1::20";
const W_RANDOM_VIP6 = "fd00:96::62";
// Three backends (web-3 only here, so its id is released when it leaves); a NodePort Service from outside the
// node, to a local and a remote backend (eTP Cluster: masqueraded).
const THREE_VIP = "10.96.0.67";
const WEB3 = "10.244.1.7";
const NP_VIP = "10.96.0.68";
const NODE_PORT = 30680;
const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const WEB4 = "10.244.2.5";
const EXT = "198.51.100.10";
const W_MAGLEV_VIP = "10.96.0.69";
// Backends that reset their connections when told (port 9090 of web-1 and web-2: their own backend ids).
const RST_VIP = "10.96.0.71";
const RESETTER = { name: "rst", port: 81, targetPort: 9090, protocol: "TCP" as const };
// Weighted least-conn over three backends (3:1:1), on the same servers' port 9090 (web-3's too).
const W_THREE_VIP = "10.96.0.72";
const W_THREE = { name: "wthree", port: 82, targetPort: 9090, protocol: "TCP" as const };
const NAMES: Record<string, string> = { ...PODS, "web-3": WEB3, "web-4": WEB4 };

/** `flip`: the weighted random Service's weights the other way round (1:3), as a live change; `noWeb3`: the
 * three-backend Service's EndpointSlice without web-3. */
function manifests(flip = false, noWeb3 = false): string {
  const eps = Object.values(PODS).map((ip) => ({ ip, node: "node-a" }));
  const w = (a: Record<string, string>) =>
    flip ? `${a["web-1"]}=1, ${a["web-2"]}=3` : `${a["web-1"]}=3, ${a["web-2"]}=1`;
  const slice6 = {
    ...endpointSlice(
      "wrandom",
      [WEB],
      Object.values(PODS6).map((ip) => ({ ip, node: "node-a" })),
    ),
    addressType: "IPv6",
  };
  slice6.metadata = { ...slice6.metadata, name: "wrandom-v6" };
  return manifest([
    service("web", VIP, [WEB], LC),
    endpointSlice("web", [WEB], eps),
    service("sink", UDP_VIP, [SINK], LC),
    endpointSlice("sink", [SINK], eps),
    // One annotation names both families' addresses.
    service("wrandom", W_RANDOM_VIP, [WEB], {
      annotations: { "bpfproxy.io/backend-weights": `${w(PODS)}, ${w(PODS6)}` },
      spec: {
        clusterIPs: [W_RANDOM_VIP, W_RANDOM_VIP6],
        ipFamilies: ["IPv4", "IPv6"],
        ipFamilyPolicy: "RequireDualStack",
      },
    }),
    endpointSlice("wrandom", [WEB], eps),
    slice6,
    service("wlc", W_LC_VIP, [WEB], { annotations: { ...LC.annotations, "bpfproxy.io/backend-weights": WEIGHTS } }),
    endpointSlice("wlc", [WEB], eps),
    service("wzero", W_ZERO_VIP, [WEB], { annotations: { "bpfproxy.io/backend-weights": `${PODS["web-1"]}=0` } }),
    endpointSlice("wzero", [WEB], eps),
    // Pod names are not addresses: refused as a whole, served with weight 1.
    service("wbad", W_BAD_VIP, [WEB], { annotations: { "bpfproxy.io/backend-weights": "web-1=3" } }),
    endpointSlice("wbad", [WEB], eps),
    service("plain", PLAIN_VIP, [WEB]),
    endpointSlice("plain", [WEB], eps),
    service("wmaglev", W_MAGLEV_VIP, [WEB], {
      annotations: { "bpfproxy.io/lb-algorithm": "maglev", "bpfproxy.io/backend-weights": WEIGHTS },
    }),
    endpointSlice("wmaglev", [WEB], eps),
    service("rst", RST_VIP, [RESETTER], LC),
    endpointSlice("rst", [RESETTER], eps),
    service("wthree", W_THREE_VIP, [W_THREE], {
      annotations: { ...LC.annotations, "bpfproxy.io/backend-weights": `${PODS["web-1"]}=3` },
    }),
    endpointSlice("wthree", [W_THREE], [...eps, { ip: WEB3, node: "node-a" }]),
    service("three", THREE_VIP, [WEB], LC),
    endpointSlice("three", [WEB], [...eps, ...(noWeb3 ? [] : [{ ip: WEB3, node: "node-a" }])]),
    service("np", NP_VIP, [{ ...WEB, nodePort: NODE_PORT }], { ...LC, spec: { type: "NodePort" } }),
    endpointSlice(
      "np",
      [WEB],
      [
        { ip: PODS["web-1"], node: "node-a" },
        { ip: WEB4, node: "node-b" },
      ],
    ),
    node("node-a", NODE_A, ["10.244.1.0/24", "fd00:10:244:1::/64"]),
    node("node-b", NODE_B, ["10.244.2.0/24", "fd00:10:244:2::/64"]),
  ]);
}

/** Active flows per backend name of the frontend at `vip`, as status shows them. */
function activeOf(s: DataplaneStatus, vip: string): Record<string, number | undefined> {
  const fe = s.frontends.find((f) => f.address === vip);
  assert.ok(fe, `status has the frontend ${vip}`);
  assert.equal(fe.algorithm, "least-conn");
  const name = (ip: string) => Object.entries(NAMES).find(([, a]) => a === ip)?.[0] ?? ip;
  return Object.fromEntries(fe.backends.map((b) => [name(b.address), b.activeFlows]));
}

describe("least-conn end to end", { timeout: 300_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs | undefined;
  let proxy: ProxyNode | undefined;
  const holds: HoldHandle[] = [];
  const quiet: QuietConn[] = [];
  const resetters: ResetServer[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-lc-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    const config = `${dir}.config.yaml`;
    writeFileSync(
      config,
      [
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "kind: KubeProxyConfiguration",
        "conntrack:",
        "  udpTimeout: 2s",
        "bpfproxy:",
        "  conntrackGCInterval: 1s",
        "",
      ].join("\n"),
    );
    lab = await Lab.create({
      prefix: `bpxlc${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          ip6: "2001:db8::a",
          podCIDR6: "fd00:10:244:1::/64",
          pods: [
            ...Object.entries(PODS).map(([name, ip]) => ({ name, ip, ip6: PODS6[name as keyof typeof PODS6] })),
            { name: "client", ip: CLIENT, ip6: CLIENT6 },
            { name: "web-3", ip: WEB3, ip6: "fd00:10:244:1::7" },
          ],
        },
        // A second node with a backend of the NodePort Service only; it needs no daemon (its pod is routed to).
        {
          name: "node-b",
          ip: NODE_B,
          podCIDR: "10.244.2.0/24",
          ip6: "2001:db8::b",
          podCIDR6: "fd00:10:244:2::/64",
          pods: [{ name: "web-4", ip: WEB4, ip6: "fd00:10:244:2::5" }],
        },
      ],
      external: { name: "ext", ip: EXT },
    });
    for (const pod of [...Object.keys(PODS), "web-3"])
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], bind: "::" });
    await startEchoServer(lab, "web-4", { name: "web-4", tcp: [8080] });
    for (const pod of [...Object.keys(PODS), "web-3"])
      resetters.push(await startResetServer(lab, pod, pod, RESETTER.targetPort));
    bpffs = PrivateBpffs.create("lc-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      // Metrics inside node-a's namespace only.
      extraArgs: ["--config", config, "--healthz-bind-address", "", "--metrics-bind-address", "127.0.0.1:10249"],
    });
    await proxy.waitForStatus(
      (s) => s.frontends.some((f) => f.address === VIP && f.algorithm === "least-conn" && f.backends.length === 2),
      10_000,
    );
  });

  after(async () => {
    for (const h of holds) await h.stop().catch(() => undefined);
    for (const c of quiet) await c.close().catch(() => undefined);
    for (const r of resetters) r.stop();
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.config.yaml`, { force: true });
  });

  /** Opens one held connection and returns the backend that answered it. */
  async function open(vip = VIP): Promise<{ h: HoldHandle; backend: string }> {
    const h = startHold(lab, "client", `${vip}:80`, 500, 3000);
    holds.push(h);
    await h.waitFor(1, 10_000);
    const ev = h.events[0]!;
    assert.ok("reply" in ev, `the connection was answered: ${JSON.stringify(ev)}`);
    return { h, backend: ev.reply.split(" ")[0]! };
  }

  async function waitActive(vip: string, want: Record<string, number>, what: string): Promise<void> {
    let last: Record<string, number | undefined> = {};
    try {
      await proxy!.waitForStatus((s) => {
        last = activeOf(s, vip);
        return Object.entries(want).every(([k, v]) => last[k] === v);
      }, 10_000);
    } catch {
      assert.fail(`${what}: status shows ${JSON.stringify(last)}, expected ${JSON.stringify(want)}`);
    }
  }

  test("held connections alternate; closing one backend's sends the next ones all to it; counts return to zero", async () => {
    await waitActive(VIP, { "web-1": 0, "web-2": 0 }, "before any flow");
    const opened: Array<{ h: HoldHandle; backend: string }> = [];
    const per = () => {
      const c: Record<string, number> = { "web-1": 0, "web-2": 0 };
      for (const o of opened) c[o.backend]!++;
      return c;
    };
    // Every connection compares both backends: after each pair the two are level, never more than one apart.
    for (let i = 0; i < 8; i++) {
      opened.push(await open());
      const c = per();
      assert.ok(Math.abs(c["web-1"]! - c["web-2"]!) <= 1, `after ${i + 1} connections: ${JSON.stringify(c)}`);
      if (i % 2 === 1) assert.equal(c["web-1"], c["web-2"], `after ${i + 1} connections: ${JSON.stringify(c)}`);
    }
    await waitActive(VIP, { "web-1": 4, "web-2": 4 }, "8 held connections");

    // Close those to web-1: the client's FIN and the server's answer FIN end each flow (docs/conntrack.md).
    const toA = opened.filter((o) => o.backend === "web-1");
    for (const o of toA) await o.h.stop();
    await waitActive(VIP, { "web-1": 0, "web-2": 4 }, "after closing web-1's connections");
    const next: Array<{ h: HoldHandle; backend: string }> = [];
    for (let i = 0; i < 4; i++) next.push(await open());
    assert.deepEqual(
      next.map((o) => o.backend),
      ["web-1", "web-1", "web-1", "web-1"],
      "the backend with fewer open connections takes every new one until level",
    );
    await waitActive(VIP, { "web-1": 4, "web-2": 4 }, "after 4 more");

    for (const o of [...opened, ...next]) await o.h.stop();
    await waitActive(VIP, { "web-1": 0, "web-2": 0 }, "after every connection closed");
  });

  test("a one-way UDP flow counts until the conntrack GC collects it (udpTimeout 2 s)", async () => {
    await waitActive(UDP_VIP, { "web-1": 0, "web-2": 0 }, "before any datagram");
    const send = `
const s = require("node:dgram").createSocket("udp4");
s.bind(41500, () => s.send("x\\n", ${SINK.port}, "${UDP_VIP}", () => s.close()));`;
    await lab.run("client", [process.execPath, "-e", send]);
    let sum = 0;
    await proxy!.waitForStatus((s) => {
      const a = activeOf(s, UDP_VIP);
      sum = (a["web-1"] ?? 0) + (a["web-2"] ?? 0);
      return sum === 1;
    }, 5_000);
    assert.equal(sum, 1, "the datagram's flow is one active flow");
    const sent = Date.now();
    await waitActive(UDP_VIP, { "web-1": 0, "web-2": 0 }, "after the GC");
    assert.ok(Date.now() - sent >= 1_000, "not before its lifetime");
  });

  /** Sums of bpx_lc_active_v1 and bpx_lc_gone_v1 over every backend id: where each flow was taken off. */
  function lcTotals(): { active: bigint; gone: bigint } {
    const read = (name: string): bigint => {
      const m = BpfMap.openPinned(join(bpffs!.path, name), { readOnly: true });
      try {
        let sum = 0n;
        for (let id = 0; id < 65_536; id++) {
          const raw = m.lookup(u32Key.encode(id));
          if (raw) sum += BigInt.asIntN(64, u64Word.decode(raw));
        }
        return sum;
      } finally {
        m.close();
      }
    };
    return { active: read(MAP_NAMES.lcActive), gone: read(MAP_NAMES.lcGone) };
  }

  /** A connection that sends nothing more unless asked; returns the backend that answered its first request. */
  async function openQuiet(
    vip: string,
    ns = "client",
    port = 80,
    localPort = 0,
  ): Promise<{ c: QuietConn; backend: string; peer: string }> {
    const c = startQuietConn(lab, ns, vip, port, localPort);
    quiet.push(c);
    const ev = await c.first;
    assert.ok("reply" in ev, `the connection was answered: ${JSON.stringify(ev)}`);
    const [backend, peer] = ev.reply.split(" ");
    return { c, backend: backend!, peer: peer! };
  }

  test("connections ended by an RST (SO_LINGER 0) are taken off by BPF at once, not by the GC", async (t) => {
    // On failure too: connections left open would count against the next tests' backends.
    t.after(async () => {
      for (const c of quiet.splice(0)) await c.close();
    });
    await waitActive(VIP, { "web-1": 0, "web-2": 0 }, "before any flow");
    const before = lcTotals();
    const opened: Array<{ c: QuietConn; backend: string }> = [];
    for (let i = 0; i < 6; i++) opened.push(await openQuiet(VIP));
    const per = (list: typeof opened) => {
      const c: Record<string, number> = { "web-1": 0, "web-2": 0 };
      for (const o of list) c[o.backend]!++;
      return c;
    };
    assert.deepEqual(per(opened), { "web-1": 3, "web-2": 3 }, "two backends: level after every pair");
    await waitActive(VIP, { "web-1": 3, "web-2": 3 }, "6 held connections");
    // The client's RST alone ends each flow: no FIN either way, and the established entry would live for hours.
    const t0 = Date.now();
    for (const o of opened.filter((o) => o.backend === "web-2")) await o.c.reset();
    await waitActive(VIP, { "web-1": 3, "web-2": 0 }, "after resetting web-2's connections");
    const took = Date.now() - t0;
    for (const o of opened.filter((o) => o.backend === "web-1")) await o.c.reset();
    await waitActive(VIP, { "web-1": 0, "web-2": 0 }, "after resetting every connection");
    const after = lcTotals();
    assert.equal(after.active - before.active, 0n, "BPF added six and took six off");
    assert.equal(after.gone - before.gone, 0n, "the conntrack GC took none of them off");
    assert.ok(took < 5_000, `taken off within ${took} ms`);
  });

  test("connections the backends end by an RST are taken off by BPF on the reply side", async (t) => {
    t.after(async () => {
      for (const c of quiet.splice(0)) await c.close();
    });
    await waitActive(RST_VIP, { "web-1": 0, "web-2": 0 }, "before any flow");
    const before = lcTotals();
    const opened: string[] = [];
    for (let i = 0; i < 6; i++) opened.push((await openQuiet(RST_VIP, "client", RESETTER.port)).backend);
    assert.deepEqual(opened.filter((b) => b === "web-1").length, 3, JSON.stringify(opened));
    await waitActive(RST_VIP, { "web-1": 3, "web-2": 3 }, "6 held connections");
    assert.equal(await resetters[0]!.resetAll(), 3, "web-1 held three");
    await waitActive(RST_VIP, { "web-1": 0, "web-2": 3 }, "after web-1 reset its connections");
    assert.equal(await resetters[1]!.resetAll(), 3, "web-2 held three");
    await waitActive(RST_VIP, { "web-1": 0, "web-2": 0 }, "after web-2 reset its connections");
    const after = lcTotals();
    assert.equal(after.active - before.active, 0n, "six added, six taken off by BPF");
    assert.equal(after.gone - before.gone, 0n, "none by the GC");
  });

  test("a tuple reused at once after an RST: each new flow on it counts once, the ended one is not taken off again", async (t) => {
    t.after(async () => {
      for (const c of quiet.splice(0)) await c.close();
    });
    await waitActive(VIP, { "web-1": 0, "web-2": 0 }, "before any flow");
    const before = lcTotals();
    const sum = (s: DataplaneStatus) => Object.values(activeOf(s, VIP)).reduce((a: number, b) => a + (b ?? 0), 0);
    // An RST leaves no TIME_WAIT on either side, so the same source port connects again straight away: the SYN
    // meets the concluded (CLOSING) entry of the same tuple, which the new flow replaces.
    for (let i = 0; i < 4; i++) {
      const o = await openQuiet(VIP, "client", 80, 21_000);
      let seen = -1;
      await proxy!
        .waitForStatus((s) => (seen = sum(s)) === 1, 10_000)
        .catch(() => assert.fail(`connection ${i + 1} on the reused tuple: ${seen} active, expected 1`));
      await o.c.reset();
      await proxy!
        .waitForStatus((s) => (seen = sum(s)) === 0, 10_000)
        .catch(() => assert.fail(`after resetting connection ${i + 1}: ${seen} active, expected 0`));
    }
    const after = lcTotals();
    assert.equal(after.active - before.active, 0n, "four added, four taken off, none twice");
    assert.equal(after.gone - before.gone, 0n, "none by the GC");
  });

  test("NodePort from outside the node (masqueraded, a local and a remote backend): level, and zero after close", async () => {
    await waitActive(NP_VIP, { "web-1": 0, "web-4": 0 }, "before any flow");
    const opened: Array<{ h: HoldHandle; backend: string; peer: string }> = [];
    for (let i = 0; i < 6; i++) {
      const h = startHold(lab, "ext", `${NODE_A}:${NODE_PORT}`, 500, 3000);
      holds.push(h);
      await h.waitFor(1, 10_000);
      const ev = h.events[0]!;
      assert.ok("reply" in ev, `the connection was answered: ${JSON.stringify(ev)}`);
      const [backend, peer] = ev.reply.split(" ");
      opened.push({ h, backend: backend!, peer: peer! });
      const n1 = opened.filter((o) => o.backend === "web-1").length;
      assert.ok(
        Math.abs(2 * n1 - opened.length) <= 1,
        `after ${i + 1}: ${JSON.stringify(opened.map((o) => o.backend))}`,
      );
    }
    // Masqueraded (externalTrafficPolicy Cluster): the remote backend sees node-a, not the external client.
    for (const o of opened.filter((o) => o.backend === "web-4"))
      assert.equal(o.peer.split(":")[0], NODE_A, `web-4's peer: ${o.peer}`);
    await waitActive(NP_VIP, { "web-1": 3, "web-4": 3 }, "6 held connections");
    // Closing the remote backend's: their replies come back to node-a from the fabric (north-south reply path).
    for (const o of opened.filter((o) => o.backend === "web-4")) await o.h.stop();
    await waitActive(NP_VIP, { "web-1": 3, "web-4": 0 }, "after closing web-4's connections");
    for (const o of opened.filter((o) => o.backend === "web-1")) await o.h.stop();
    await waitActive(NP_VIP, { "web-1": 0, "web-4": 0 }, "after every connection closed");
  });

  test("three backends: never to the busiest; a removed backend's flows are walked off and its id's counts cleared", async (t) => {
    // On failure too: connections left open would count against the next tests' backends.
    t.after(async () => {
      for (const c of quiet.splice(0)) await c.close();
    });
    const three = { "web-1": 0, "web-2": 0, "web-3": 0 };
    await waitActive(THREE_VIP, three, "before any flow");
    const before = lcTotals();
    const opened: Array<{ c: QuietConn; backend: string }> = [];
    const per = () => {
      const c: Record<string, number> = { "web-1": 0, "web-2": 0, "web-3": 0 };
      for (const o of opened) c[o.backend]!++;
      return c;
    };
    // Two of three compared: the winner has at most the middle count, so a backend busier than both others never
    // takes a new flow (random would, one time in three).
    for (let i = 0; i < 12; i++) {
      const c = per();
      const o = await openQuiet(THREE_VIP);
      opened.push(o);
      const middle = Object.values(c).sort((a, b) => a - b)[1]!;
      assert.ok(c[o.backend]! <= middle, `connection ${i + 1} went to ${o.backend} with ${JSON.stringify(c)}`);
    }
    const held = per();
    assert.ok(held["web-3"]! > 0, `web-3 holds some: ${JSON.stringify(held)}`);
    await waitActive(THREE_VIP, held, "12 held connections");

    // web-3 leaves the EndpointSlice while its connections are open: its id is released (counts zeroed) and the
    // walk ends its flows, clearing their mark, so nothing is taken off that id twice.
    writeFileSync(join(dir, "services.yaml"), manifests(false, true));
    await proxy!.waitForStatus((s) => s.frontends.find((f) => f.address === THREE_VIP)?.backends.length === 2, 10_000);
    await proxy!.waitForLog(/ended tracked flows of removed backends/);
    // Their next request chooses again; web-1 or web-2 knows no such connection and resets it.
    for (const o of opened.filter((o) => o.backend === "web-3")) {
      const ev = await o.c.ping();
      assert.deepEqual(ev, { error: "ECONNRESET" }, "a removed backend's connection is reset");
    }
    const rest = { "web-1": held["web-1"]!, "web-2": held["web-2"]! };
    await waitActive(THREE_VIP, rest, "after web-3 left");
    // New connections spread over the two left, by count.
    const fresh: Array<{ c: QuietConn; backend: string }> = [];
    for (let i = 0; i < 4; i++) fresh.push(await openQuiet(THREE_VIP));
    for (const o of fresh) assert.notEqual(o.backend, "web-3");
    const now = { ...rest };
    for (const o of fresh) now[o.backend as "web-1" | "web-2"]++;
    assert.ok(Math.abs(now["web-1"] - now["web-2"]) <= 1, `level over the rest: ${JSON.stringify(now)}`);
    await waitActive(THREE_VIP, now, "after 4 more");
    // Over every id, what was added less what was taken off is exactly what status shows: web-3's id holds
    // nothing (zeroed on release, its flows unmarked by the walk, the re-chosen and reset flows taken off).
    const mid = lcTotals();
    assert.equal(mid.active - before.active - (mid.gone - before.gone), BigInt(now["web-1"] + now["web-2"]));
    for (const o of [...opened, ...fresh]) await o.c.close();
    await waitActive(THREE_VIP, { "web-1": 0, "web-2": 0 }, "after every connection closed");
    const end = lcTotals();
    assert.equal(end.active - end.gone, before.active - before.gone, "every id back where it was");
  });

  /** New connections (one request each) to `vip`, counted per backend name. */
  async function spread(vip: string, count: number): Promise<Record<string, number>> {
    const host = vip.includes(":") ? `[${vip}]` : vip;
    const res = await echoRequest(lab, "client", { tcp: `${host}:80`, count, timeoutMs: 2000 });
    const c: Record<string, number> = {};
    for (const r of res) {
      assert.ok(r.ok && r.reply, `every connection is answered: ${JSON.stringify(r)}`);
      const name = r.reply.split(" ")[0]!;
      c[name] = (c[name] ?? 0) + 1;
    }
    return c;
  }

  test("weights 3:1 with random: about three of four new connections go to the heavier backend", async () => {
    // 400 connections: web-1's expected share is 300, one standard deviation 8.7; 255..345 is over 5 of them.
    const c = await spread(W_RANDOM_VIP, 400);
    assert.ok(
      (c["web-1"] ?? 0) >= 255 && (c["web-1"] ?? 0) <= 345,
      `web-1 took ${c["web-1"]} of 400: ${JSON.stringify(c)}`,
    );
    // The same pods without weights share about 1:1 (expected 200, 155..245 is over 5 standard deviations).
    const plain = await spread(PLAIN_VIP, 400);
    assert.ok((plain["web-1"] ?? 0) >= 155 && (plain["web-1"] ?? 0) <= 245, `unweighted: ${JSON.stringify(plain)}`);
  });

  test("IPv6: weights 3:1 with random, by the same annotation", async () => {
    const c = await spread(W_RANDOM_VIP6, 400);
    assert.ok(
      (c["web-1"] ?? 0) >= 255 && (c["web-1"] ?? 0) <= 345,
      `web-1 took ${c["web-1"]} of 400: ${JSON.stringify(c)}`,
    );
  });

  test("a live change of the weights (3:1 → 1:3): status lists each backend once, new connections follow", async () => {
    writeFileSync(join(dir, "services.yaml"), manifests(true));
    // The model's weights are in render's shape; status reads the slots: one entry per backend, weights as runs.
    let seen = "";
    await proxy!.waitForStatus((s) => {
      const fe = s.frontends.find((f) => f.address === W_RANDOM_VIP);
      seen = JSON.stringify(fe?.backends.map((b) => b.address));
      return fe !== undefined && fe.backends.length === 2;
    }, 10_000);
    assert.equal(seen, JSON.stringify([PODS["web-1"], PODS["web-2"]]));
    // No signal in status tells the two weightings apart (2 backends either way): wait until web-2 leads.
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (((await spread(W_RANDOM_VIP, 40))["web-2"] ?? 0) > 25) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const c = await spread(W_RANDOM_VIP, 400);
    assert.ok(
      (c["web-2"] ?? 0) >= 255 && (c["web-2"] ?? 0) <= 345,
      `web-2 took ${c["web-2"]} of 400: ${JSON.stringify(c)}`,
    );
    const c6 = await spread(W_RANDOM_VIP6, 400);
    assert.ok(
      (c6["web-2"] ?? 0) >= 255 && (c6["web-2"] ?? 0) <= 345,
      `IPv6: web-2 took ${c6["web-2"]} of 400: ${JSON.stringify(c6)}`,
    );
  });

  test("an invalid value is logged with the Service's name and counted; the Service is served with weight 1", async () => {
    await proxy!.waitForLog(/invalid bpfproxy\.io\/backend-weights .*web-1=3.*not an IP address.*default\/wbad/);
    const text = await lab.run("node-a", [
      process.execPath,
      "-e",
      `fetch("http://127.0.0.1:10249/metrics").then(async (r) => console.log(await r.text()), (e) => { console.error(String(e)); process.exit(1); })`,
    ]);
    assert.match(text, /^bpfproxy_backend_weights_invalid 1$/m);
    const c = await spread(W_BAD_VIP, 40);
    assert.ok((c["web-1"] ?? 0) > 0 && (c["web-2"] ?? 0) > 0, `both backends serve: ${JSON.stringify(c)}`);
  });

  test("weighted Maglev (3:1): each connection goes where the weighted table says, about 3:1", async () => {
    // Fixed source ports make every flow's hash known: the TypeScript twin of the table and the hash names the
    // backend of each of 400 real connections.
    const names = [`${PODS["web-1"]}:8080`, `${PODS["web-2"]}:8080`];
    const table = maglevTable(names, undefined, slotRuns([3, 1]));
    // Below the ephemeral range (32768-60999): no earlier connection in TIME_WAIT holds these ports.
    const sportBase = 20_000;
    const res = await echoRequest(lab, "client", { tcp: `${W_MAGLEV_VIP}:80`, count: 400, timeoutMs: 2000, sportBase });
    const c: Record<string, number> = {};
    res.forEach((r, i) => {
      assert.ok(r.ok && r.reply, `connection ${i} is answered: ${JSON.stringify(r)}`);
      const got = r.reply.split(" ")[0]!;
      const want = names[table[maglevIndex(maglevFlowHash(CLIENT, W_MAGLEV_VIP, sportBase + i, 80, 6))]!]!;
      assert.equal(`${NAMES[got]}:8080`, want, `the flow from port ${sportBase + i}`);
      c[got] = (c[got] ?? 0) + 1;
    });
    // Unweighted, the table would give each about half (expected 200; 255..345 is over 5 standard deviations off).
    assert.ok(
      (c["web-1"] ?? 0) >= 255 && (c["web-1"] ?? 0) <= 345,
      `web-1 took ${c["web-1"]} of 400: ${JSON.stringify(c)}`,
    );
  });

  test("weighted least-conn over three backends (3:1:1): never to the busiest per weight; status follows", async (t) => {
    t.after(async () => {
      for (const c of quiet.splice(0)) await c.close();
    });
    const weight: Record<string, number> = { "web-1": 3, "web-2": 1, "web-3": 1 };
    await waitActive(W_THREE_VIP, { "web-1": 0, "web-2": 0, "web-3": 0 }, "before any flow");
    const c: Record<string, number> = { "web-1": 0, "web-2": 0, "web-3": 0 };
    // Two backends drawn by weight, the lower active/weight wins: the winner's share is at most the middle one, so
    // a backend busier per weight than both others never takes a new flow.
    for (let i = 0; i < 15; i++) {
      const ratio = (b: string) => c[b]! / weight[b]!;
      const middle = Object.keys(c)
        .map(ratio)
        .sort((a, b) => a - b)[1]!;
      const { backend } = await openQuiet(W_THREE_VIP, "client", W_THREE.port);
      assert.ok(ratio(backend) <= middle, `connection ${i + 1} went to ${backend} with ${JSON.stringify(c)}`);
      c[backend]!++;
    }
    await waitActive(W_THREE_VIP, c, "15 held connections");
    for (const q of quiet.splice(0)) await q.close();
    await waitActive(W_THREE_VIP, { "web-1": 0, "web-2": 0, "web-3": 0 }, "after every connection closed");
  });

  test("weight 0: no new connection reaches the backend", async () => {
    const c = await spread(W_ZERO_VIP, 60);
    assert.deepEqual(c, { "web-2": 60 }, "web-1 has weight 0");
  });

  test("weighted least-conn keeps active flows per weight level: 3:1 after every fourth connection", async () => {
    const opened: Array<{ h: HoldHandle; backend: string }> = [];
    const per = () => {
      const c: Record<string, number> = { "web-1": 0, "web-2": 0 };
      for (const o of opened) c[o.backend]!++;
      return c;
    };
    // Two backends: both are compared every time, so each new connection goes to the lower active/weight (a tie
    // to either); from level (3k, k) the next four always end level again at (3k + 3, k + 1).
    for (let i = 0; i < 8; i++) {
      opened.push(await open(W_LC_VIP));
      const c = per();
      assert.ok(
        c["web-1"]! <= 3 * c["web-2"]! + 3 && c["web-2"]! <= Math.ceil(c["web-1"]! / 3) + 1,
        `after ${i + 1}: ${JSON.stringify(c)}`,
      );
      if (i % 4 === 3)
        assert.deepEqual(c, { "web-1": ((i + 1) / 4) * 3, "web-2": (i + 1) / 4 }, `after ${i + 1} connections`);
    }
    await waitActive(W_LC_VIP, { "web-1": 6, "web-2": 2 }, "8 held connections");
    // web-1's six closed: 0/3 against 2/1, so the next six all go to web-1 (until 6/3 = 2/1).
    const toA = opened.filter((o) => o.backend === "web-1");
    for (const o of toA) await o.h.stop();
    await waitActive(W_LC_VIP, { "web-1": 0, "web-2": 2 }, "after closing web-1's connections");
    const next: Array<{ h: HoldHandle; backend: string }> = [];
    for (let i = 0; i < 6; i++) next.push(await open(W_LC_VIP));
    assert.deepEqual(
      next.map((o) => o.backend),
      Array(6).fill("web-1"),
      "web-1 takes every new connection until active per weight is level",
    );
    for (const o of [...opened, ...next]) await o.h.stop();
    await waitActive(W_LC_VIP, { "web-1": 0, "web-2": 0 }, "after every connection closed");
  });
});

// XDP in front of tc: native XDP on node-a's eth0 with tc's ingress program removed there, so a NodePort flow to
// two backends on node-b is chosen, counted and ended by XDP alone (its request and its masqueraded replies both
// cross eth0; XDP sends them back out with XDP_TX). The wire's veths stand in for NICs (prepareLabForXdp).
describe("least-conn end to end, NodePort carried by XDP", { timeout: 120_000 }, () => {
  const XDP_VIP = "10.96.0.70";
  const XDP_NODE_PORT = 30681;
  const REMOTE = { "web-4": "10.244.2.5", "web-5": "10.244.2.6" };
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs | undefined;
  let proxy: ProxyNode | undefined;
  const holds: HoldHandle[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-lcx-"));
    const np = [{ ...WEB, nodePort: XDP_NODE_PORT }];
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service("npx", XDP_VIP, np, { ...LC, spec: { type: "NodePort" } }),
        endpointSlice(
          "npx",
          [WEB],
          Object.values(REMOTE).map((ip) => ({ ip, node: "node-b" })),
        ),
        node("node-a", NODE_A, ["10.244.1.0/24"]),
        node("node-b", NODE_B, ["10.244.2.0/24"]),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxlcx${process.pid}-`,
      nodes: [
        { name: "node-a", ip: NODE_A, podCIDR: "10.244.1.0/24", pods: [] },
        {
          name: "node-b",
          ip: NODE_B,
          podCIDR: "10.244.2.0/24",
          pods: Object.entries(REMOTE).map(([name, ip]) => ({ name, ip })),
        },
      ],
      external: { name: "ext", ip: EXT },
    });
    await prepareLabForXdp(lab);
    for (const pod of Object.keys(REMOTE)) await startEchoServer(lab, pod, { name: pod, tcp: [8080] });
    bpffs = PrivateBpffs.create("lcx-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--healthz-bind-address", "", "--metrics-bind-address", "", "--xdp", "native", "--bypass-netfilter"],
    });
    await proxy.waitForStatus(
      (s) => s.frontends.some((f) => f.address === XDP_VIP && f.algorithm === "least-conn" && f.backends.length === 2),
      10_000,
    );
  });

  after(async () => {
    for (const h of holds) await h.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  const counts = (s: DataplaneStatus) => {
    const fe = s.frontends.find((f) => f.address === XDP_VIP)!;
    const name = (ip: string) => Object.entries(REMOTE).find(([, a]) => a === ip)?.[0] ?? ip;
    return Object.fromEntries(fe.backends.map((b) => [name(b.address), b.activeFlows]));
  };
  async function waitCounts(want: Record<string, number>, what: string): Promise<void> {
    let last = {};
    try {
      await proxy!.waitForStatus((s) => {
        last = counts(s);
        return JSON.stringify(last) === JSON.stringify(want);
      }, 10_000);
    } catch {
      assert.fail(`${what}: status shows ${JSON.stringify(last)}, expected ${JSON.stringify(want)}`);
    }
  }

  test("held connections alternate and the counts follow them to zero, with XDP alone carrying the flows", async (t) => {
    const target = `${NODE_A}:${XDP_NODE_PORT}`;
    // Warm the neighbour entries XDP needs (it leaves unresolved next hops to the stack) while tc is still there.
    const warm = await echoRequest(lab, "ext", { tcp: target, count: 4, timeoutMs: 2000 });
    assert.ok(
      warm.every((r) => r.ok),
      JSON.stringify(warm),
    );
    await waitCounts({ "web-4": 0, "web-5": 0 }, "after the warm-up connections closed");
    await lab.run("node-a", ["tc", "filter", "del", "dev", "eth0", "ingress"]);
    const xdpTx = (s: DataplaneStatus) => s.counters.xdp_tx?.packets ?? 0;
    const tx0 = xdpTx(await proxy!.status());
    const opened: Array<{ h: HoldHandle; backend: string }> = [];
    for (let i = 0; i < 6; i++) {
      const h = startHold(lab, "ext", target, 500, 3000);
      holds.push(h);
      await h.waitFor(1, 10_000);
      const ev = h.events[0]!;
      assert.ok("reply" in ev, `the connection was answered: ${JSON.stringify(ev)}`);
      const [backend, peer] = ev.reply.split(" ");
      assert.equal(peer!.split(":")[0], NODE_A, "masqueraded");
      opened.push({ h, backend: backend! });
      const n4 = opened.filter((o) => o.backend === "web-4").length;
      assert.ok(
        Math.abs(2 * n4 - opened.length) <= 1,
        `after ${i + 1}: ${JSON.stringify(opened.map((o) => o.backend))}`,
      );
    }
    await waitCounts({ "web-4": 3, "web-5": 3 }, "6 held connections");
    for (const o of opened.filter((o) => o.backend === "web-4")) await o.h.stop();
    await waitCounts({ "web-4": 0, "web-5": 3 }, "after closing web-4's connections");
    for (const o of opened.filter((o) => o.backend === "web-5")) await o.h.stop();
    await waitCounts({ "web-4": 0, "web-5": 0 }, "after every connection closed");
    // Six connections, three segments or more each way, every one sent back out of eth0 by XDP.
    const tx = xdpTx(await proxy!.status()) - tx0;
    assert.ok(tx >= 36, `xdp_tx +${tx}`);
    t.diagnostic(`xdp_tx +${tx}`);
    // tc never saw them: its ingress program on eth0 is still gone (the stack would have refused the NodePort).
    assert.equal((await lab.run("node-a", ["tc", "filter", "show", "dev", "eth0", "ingress"])).trim(), "");
  });
});
