// End to end (issue 19 items 2 and 3): `bpfproxy monitor` reports the drops of real failures — a Service
// without endpoints or with none ready (rejected), a segment of a flow the node does not know (reset), a client
// outside loadBalancerSourceRanges, a Local-policy NodePort on a node without local endpoints, a pod forging
// another pod's source, rejects held back by the per-source limit, a live connection whose backend was
// removed — and each new flow with the backend it was sent to; nothing is written to the ring
// buffer while nobody listens; the per-Service and per-backend counters (status JSON, --stats, --rate) move by
// exactly the number of connections sent. Real daemon, one lab node, every wait bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, sendSpoofedTcp, startEchoServer, startHold } from "../src/lab/index.js";
import { cliCommand, PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import * as abi from "../src/dataplane/bpf/abi.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import type { Explanation } from "../src/explain/index.js";
import { Monitor } from "./fixtures/monitor.js";
import { HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A = "192.0.2.11";
const EXT = "198.51.100.10";
const WEB = "10.244.1.5";
const CLIENT = "10.244.1.20";
const VIP_WEB = "10.96.0.21";
const VIP_EMPTY = "10.96.0.20";
const VIP_NOT_READY = "10.96.0.24";
const LB_DENIED = "203.0.113.21";
const LOCAL_NODEPORT = 30081;
const CONNS = 7;
const FORGER = "10.244.1.21";
const OLD = "10.244.1.6";
const VIP_STALE = "10.96.0.25";
const FLOOD = 30;

/** The Services of the lab; `staleBackend` is the one endpoint of default/stale. */
function objects(staleBackend: string): unknown[] {
  const lbDenied = service("lb-denied", "10.96.0.22", [{ ...HTTP, nodePort: 30082 }], {
    spec: { type: "LoadBalancer", loadBalancerSourceRanges: ["203.0.113.0/24"] },
  });
  return [
    service("web", VIP_WEB, [HTTP]),
    endpointSlice("web", [HTTP], [{ ip: WEB, node: "node-a" }]),
    service("empty", VIP_EMPTY, [HTTP]),
    endpointSlice("empty", [HTTP], []),
    service("not-ready", VIP_NOT_READY, [HTTP]),
    endpointSlice("not-ready", [HTTP], [{ ip: WEB, node: "node-a", ready: false }]),
    { ...lbDenied, status: { loadBalancer: { ingress: [{ ip: LB_DENIED, ipMode: "VIP" }] } } },
    endpointSlice("lb-denied", [HTTP], [{ ip: WEB, node: "node-a" }]),
    service("local", "10.96.0.23", [{ ...HTTP, nodePort: LOCAL_NODEPORT }], {
      spec: { type: "NodePort", externalTrafficPolicy: "Local" },
    }),
    // Its only endpoint is on another node: node-a has no local endpoint.
    endpointSlice("local", [HTTP], [{ ip: "10.244.2.5", node: "node-b" }]),
    service("stale", VIP_STALE, [HTTP]),
    endpointSlice("stale", [HTTP], [{ ip: staleBackend, node: "node-a" }]),
    node("node-a", NODE_A),
  ];
}

describe("bpfproxy monitor and per-Service counters", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  const monitors: Monitor[] = [];

  const startMonitor = async (args: string[] = []) => {
    const m = new Monitor(
      lab.spawn("node-a", [...cliCommand(), "monitor", "--bpffs", bpffs.path, "-o", "json", ...args]),
    );
    monitors.push(m);
    await m.waitFor(() => /monitor: listening/.test(m.stderr), "the ready line");
    return m;
  };
  const eventsConfig = () => {
    const m = native.BpfMap.openPinned(join(bpffs.path, abi.MAP_NAMES.eventsConfig), { readOnly: true });
    try {
      return abi.eventsConfig.decode(m.lookup(abi.u32Key.encode(0))!);
    } finally {
      m.close();
    }
  };
  const fe = (st: DataplaneStatus, address: string) => st.frontendCounters.find((c) => c.address === address);
  const be = (st: DataplaneStatus, address: string) => st.backendCounters?.find((c) => c.address === address);
  const connectWeb = async (n: number) => {
    const r = await echoRequest(lab, "client", { tcp: `${VIP_WEB}:80`, count: n, timeoutMs: 3000 });
    assert.deepEqual(
      r.filter((x) => !x.ok),
      [],
      "every connection to the Service with an endpoint is answered",
    );
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-monitor-"));
    writeFileSync(join(dir, "services.yaml"), manifest(objects(OLD)));
    lab = await Lab.create({
      prefix: `bpxmon${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_A,
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web", ip: WEB },
            { name: "client", ip: CLIENT },
            { name: "forger", ip: FORGER },
            { name: "old", ip: OLD },
          ],
        },
      ],
      external: { name: "ext", ip: EXT },
    });
    await lab.run("ext", ["ip", "route", "add", "203.0.113.0/24", "via", NODE_A]);
    await startEchoServer(lab, "web", { name: "web", tcp: [8080], udp: [] });
    await startEchoServer(lab, "old", { name: "old", tcp: [8080], udp: [] });
    bpffs = PrivateBpffs.create("monitor-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--metrics-bind-address", `${NODE_A}:10249`, "--healthz-bind-address", `${NODE_A}:10256`],
    });
    await proxy.waitForStatus(
      (s) => s.frontends.some((f) => f.address === LB_DENIED) && s.frontends.some((f) => f.service === "default/local"),
      10_000,
    );
  });

  after(async () => {
    for (const m of monitors) await m.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("nobody listening: events are off and nothing is written to the ring buffer", async () => {
    assert.equal(eventsConfig().untilNs, 0n, "off until a monitor starts");
    const rb = native.ringbufOpen(join(bpffs.path, abi.MAP_NAMES.events));
    try {
      native.ringbufPoll(rb, 0); // whatever an earlier run left (none: a fresh bpffs)
      await connectWeb(3);
      await echoRequest(lab, "client", { tcp: `${VIP_EMPTY}:80`, count: 1, timeoutMs: 2000 });
      assert.deepEqual(native.ringbufPoll(rb, 500), [], "no record while nobody listens");
    } finally {
      native.ringbufClose(rb);
    }
  });

  test(`counters move by exactly the ${CONNS} connections sent; the monitor shows each new flow with its backend`, async () => {
    const m = await startMonitor();
    assert.ok(eventsConfig().untilNs > 0n, "on while the monitor listens");
    const before = await proxy!.status();
    await connectWeb(CONNS);
    const after = await proxy!.status();
    assert.equal(
      (fe(after, VIP_WEB)?.connections ?? 0) - (fe(before, VIP_WEB)?.connections ?? 0),
      CONNS,
      "per-Service connections",
    );
    assert.equal(
      (be(after, WEB)?.connections ?? 0) - (be(before, WEB)?.connections ?? 0),
      CONNS,
      "per-backend connections",
    );
    assert.deepEqual(
      be(after, WEB)?.services,
      ["default/lb-denied", "default/web"],
      "the Services listing the backend",
    );
    // Each connection: SYN, ACK, request, FIN, ACK at least.
    assert.ok(fe(after, VIP_WEB)!.packets - (fe(before, VIP_WEB)?.packets ?? 0) >= CONNS * 4, "packets counted");
    await m.waitFor(
      () => m.events.filter((e) => e.type === "new-flow" && e.service === "default/web").length >= CONNS,
      `${CONNS} new flows of default/web`,
    );
    const flows = m.events.filter((e) => e.type === "new-flow" && e.service === "default/web");
    assert.equal(flows.length, CONNS, "one event per connection");
    for (const e of flows) {
      assert.equal(e.backend, `${WEB}:8080`);
      assert.equal(e.frontend, `${VIP_WEB}:80`);
      assert.match(e.client, new RegExp(`^${CLIENT.replace(/\./g, "\\.")}:\\d+$`));
      assert.equal(e.portName, "http");
      assert.equal(e.reason, "translated_new");
    }
    assert.equal(await m.stop(), 0);
    assert.match(m.stderr, new RegExp(`monitor: ${m.events.length} events shown`));
    assert.equal(eventsConfig().untilNs, 0n, "off again once the monitor stopped");
  });

  test("the monitor reports the drops of real failures with their reason, and per-Service drops count them", async () => {
    const m = await startMonitor();
    const before = await proxy!.status();
    const refused = await echoRequest(lab, "client", { tcp: `${VIP_EMPTY}:80`, count: 2, timeoutMs: 2000 });
    assert.deepEqual(
      refused.map((r) => r.error),
      ["ECONNREFUSED", "ECONNREFUSED"],
    );
    // Both dropped, so each waits out its whole timeout: at once.
    const [denied, local] = await Promise.all([
      echoRequest(lab, "ext", { tcp: `${LB_DENIED}:80`, count: 1, timeoutMs: 1500 }),
      echoRequest(lab, "ext", { tcp: `${NODE_A}:${LOCAL_NODEPORT}`, count: 1, timeoutMs: 1500 }),
    ]);
    assert.match(denied[0]?.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(denied));
    assert.match(local[0]?.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(local));
    const want = [
      { service: "default/empty", reason: "reject_no_backend", client: CLIENT, frontend: `${VIP_EMPTY}:80` },
      { service: "default/lb-denied", reason: "drop_source_range", client: EXT, frontend: `${LB_DENIED}:80` },
      {
        service: "default/local",
        reason: "drop_no_local_backend",
        client: EXT,
        frontend: `${NODE_A}:${LOCAL_NODEPORT}`,
      },
    ];
    const seen = (w: (typeof want)[number]) =>
      m.events.filter(
        (e) =>
          e.type === "drop" &&
          e.service === w.service &&
          e.reason === w.reason &&
          e.client.startsWith(`${w.client}:`) &&
          e.frontend === w.frontend,
      ).length;
    // Every endpoint not ready: rejected as having none.
    const notReady = await echoRequest(lab, "client", { tcp: `${VIP_NOT_READY}:80`, count: 1, timeoutMs: 2000 });
    assert.equal(notReady[0]?.error, "ECONNREFUSED", JSON.stringify(notReady));
    want.push({
      service: "default/not-ready",
      reason: "reject_no_backend",
      client: CLIENT,
      frontend: `${VIP_NOT_READY}:80`,
    });
    // A segment of a flow the node does not know (its entry gone or stale): reset, and reported.
    await sendSpoofedTcp(lab, "client", { src: CLIENT, sport: 40999, dst: VIP_WEB, dport: 80, flags: "A" });
    want.push({ service: "default/web", reason: "reject_no_conntrack", client: CLIENT, frontend: `${VIP_WEB}:80` });
    await m.waitFor(() => want.every((w) => seen(w) > 0), "the five drops");
    assert.equal(seen(want[0]!), 2, "one reject event per refused connection");
    assert.equal(m.events.filter((e) => e.type === "new-flow").length, 0, "no new flow happened");
    const after = await proxy!.status();
    const drops = (st: DataplaneStatus, addr: string, port: number, reason: string) =>
      st.frontendCounters.find((c) => c.address === addr && c.port === port)?.drops?.[reason] ?? 0;
    assert.equal(drops(after, VIP_EMPTY, 80, "no_backend") - drops(before, VIP_EMPTY, 80, "no_backend"), 2);
    assert.equal(
      drops(after, VIP_NOT_READY, 80, "no_backend") - drops(before, VIP_NOT_READY, 80, "no_backend"),
      1,
      "the Service with no endpoint ready counts its one refused connection",
    );
    assert.ok(drops(after, LB_DENIED, 80, "source_range") - drops(before, LB_DENIED, 80, "source_range") >= 1);
    // A NodePort is counted at its one wildcard entry (0.0.0.0).
    assert.ok(
      drops(after, "0.0.0.0", LOCAL_NODEPORT, "no_local_backend") -
        drops(before, "0.0.0.0", LOCAL_NODEPORT, "no_local_backend") >=
        1,
    );
    assert.equal(
      drops(after, VIP_WEB, 80, "no_conntrack") - drops(before, VIP_WEB, 80, "no_conntrack"),
      1,
      "the one segment of an unknown flow, per Service",
    );
    await m.stop();
  });

  test("--service and --drops filter; a second monitor refuses to start while one listens", async () => {
    const m = await startMonitor(["--service", "default/empty", "--drops"]);
    const second = lab.spawn("node-a", [...cliCommand(), "monitor", "--bpffs", bpffs.path]);
    let secondErr = "";
    second.stderr!.setEncoding("utf8").on("data", (d: string) => (secondErr += d));
    const code = await new Promise<number | null>((r) => {
      const t = setTimeout(() => {
        second.kill("SIGKILL");
        r(null);
      }, 15_000);
      second.once("exit", (c) => {
        clearTimeout(t);
        r(c);
      });
    });
    assert.equal(code, 1, `the second monitor exits with an error: ${secondErr}`);
    assert.match(secondErr, /another bpfproxy monitor \(pid \d+\) is listening/);
    await connectWeb(2);
    await echoRequest(lab, "client", { tcp: `${VIP_EMPTY}:80`, count: 1, timeoutMs: 2000 });
    await m.waitFor(() => m.events.length >= 1, "the drop of default/empty");
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(
      m.events.map((e) => [e.type, e.service, e.reason]),
      [["drop", "default/empty", "reject_no_backend"]],
    );
    await m.stop();
  });

  test("status --stats and --rate show the per-Service and per-backend columns; /metrics has the bpfproxy_service_* series", async () => {
    const stats = await lab.run("node-a", [...cliCommand(), "status", "--bpffs", bpffs.path, "--stats"], {
      timeoutMs: 30_000,
    });
    assert.match(stats, /SERVICE\s+TYPE\s+FRONTEND\s+CONNS\s+INPKTS\s+INBYTES\s+DROPS/);
    const st = await proxy!.status();
    const webConns = fe(st, VIP_WEB)!.connections!;
    assert.match(stats, new RegExp(`default/web:http\\s+ClusterIP\\s+${VIP_WEB}:80/TCP\\s+${webConns}\\s`));
    assert.match(stats, /no_backend=\d+/);
    assert.match(stats, new RegExp(`${WEB}:8080/TCP\\s+default/lb-denied,default/web\\s+\\d+`));
    // --rate over one second while 5 connections are made during it.
    const rate = lab.run("node-a", [...cliCommand(), "status", "--bpffs", bpffs.path, "--rate", "-o", "json"], {
      timeoutMs: 30_000,
    });
    await new Promise((r) => setTimeout(r, 300));
    await echoRequest(lab, "client", { tcp: `${VIP_WEB}:80`, count: 5, timeoutMs: 3000 });
    const r = JSON.parse(await rate) as DataplaneStatus & {
      rates: { frontends: { address: string; connectionsPerSecond: number }[] };
    };
    assert.ok(Array.isArray(r.frontends) && Array.isArray(r.frontendCounters), "the status JSON, with rates added");
    const cps = r.rates.frontends.find((f) => f.address === VIP_WEB)?.connectionsPerSecond ?? -1;
    assert.ok(cps >= 0 && cps <= 5, `connections per second ${cps}`);
    const js = `fetch("http://${NODE_A}:10249/metrics").then((r) => r.text()).then((t) => console.log(t)).catch((e) => console.log("error " + e.message))`;
    const metrics = (await lab.exec("node-a", [process.execPath, "-e", js], { timeoutMs: 15_000 })).stdout;
    const now = await proxy!.status();
    const line = (re: RegExp) => metrics.split("\n").find((l) => re.test(l)) ?? "";
    assert.match(
      line(/^bpfproxy_service_connections_total\{service="default\/web",port="http"\}/),
      new RegExp(` ${fe(now, VIP_WEB)!.connections}$`),
    );
    assert.match(
      line(/^bpfproxy_service_drops_total\{service="default\/empty",port="http",reason="no_backend"\}/),
      / [1-9]\d*$/,
    );
    assert.match(
      line(
        /^bpfproxy_backend_connections_total\{service="default\/lb-denied,default\/web",backend="10\.244\.1\.5:8080\/TCP"\}/,
      ),
      / [1-9]\d*$/,
    );
  });

  /** One /metrics scrape of the daemon; returns a reader of one series' value (which must be there). */
  const scrape = async () => {
    const js = `fetch("http://${NODE_A}:10249/metrics").then((r) => r.text()).then((t) => console.log(t)).catch((e) => console.log("error " + e.message))`;
    const text = (await lab.exec("node-a", [process.execPath, "-e", js], { timeoutMs: 15_000 })).stdout;
    return (re: RegExp): number => {
      const l = text.split("\n").find((x) => re.test(x));
      assert.ok(l, `${re} in /metrics`);
      return Number(l.split(" ").pop());
    };
  };

  test(`/metrics: the default/web series move by the ${CONNS} connections sent (exactly) and at least their packets and bytes`, async () => {
    const svc = (what: string) => new RegExp(`^bpfproxy_service_${what}_total\\{service="default/web",port="http"\\} `);
    const bk = (what: string) =>
      new RegExp(
        `^bpfproxy_backend_${what}_total\\{service="default/lb-denied,default/web",backend="10\\.244\\.1\\.5:8080/TCP"\\} `,
      );
    const before = await scrape();
    await connectWeb(CONNS);
    await new Promise((r) => setTimeout(r, 600)); // the daemon reuses a read for 500 ms
    const after = await scrape();
    const delta = (re: RegExp) => after(re) - before(re);
    assert.equal(delta(svc("connections")), CONNS, "service connections");
    assert.equal(delta(bk("connections")), CONNS, "backend connections");
    // Each connection: the client's SYN, ACK, request, FIN and last ACK; each at least 54 bytes
    // (Ethernet, IPv4 and TCP headers) plus the request.
    for (const re of [svc("packets"), bk("packets")]) assert.ok(delta(re) >= CONNS * 4, `${re}: ${delta(re)}`);
    for (const re of [svc("bytes"), bk("bytes")]) assert.ok(delta(re) >= CONNS * 4 * 54, `${re}: ${delta(re)}`);
    console.log(
      `# ${CONNS} connections: service packets +${delta(svc("packets"))} bytes +${delta(svc("bytes"))}, backend packets +${delta(bk("packets"))}`,
    );
  });

  test("a pod forging another pod's source: the drop is reported (drop_pod_source, no Service: none matched yet)", async () => {
    const m = await startMonitor(["--drops"]);
    const before = (await proxy!.status()).counters;
    await sendSpoofedTcp(lab, "forger", { src: CLIENT, sport: 41234, dst: VIP_WEB, dport: 80, flags: "S" });
    const forged = () => m.events.filter((e) => e.reason === "drop_pod_source" && e.client === `${CLIENT}:41234`);
    await m.waitFor(() => forged().length > 0, "the forged SYN's drop");
    const after = (await proxy!.status()).counters;
    assert.equal((after.drop_pod_source?.packets ?? 0) - (before.drop_pod_source?.packets ?? 0), 1, "counted once");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(
      forged().map((e) => [e.type, e.service, e.frontend, e.protocol, e.interface]),
      [["drop", "", `${VIP_WEB}:80`, "TCP", lab.podInterface("forger")]],
    );
    await m.stop();
  });

  test(`a burst of ${FLOOD} SYNs to a Service without endpoints: each RST and each reject held back by the limit is reported`, async () => {
    await new Promise((r) => setTimeout(r, 1100)); // the client's reject bucket is full again
    const m = await startMonitor(["--service", "default/empty"]);
    const s0 = await proxy!.status();
    const before = s0.counters;
    await sendSpoofedTcp(lab, "client", { src: CLIENT, dst: VIP_EMPTY, dport: 80, flags: "S", count: FLOOD });
    const s1 = await proxy!.status();
    const after = s1.counters;
    const d = (r: string) => (after[r]?.packets ?? 0) - (before[r]?.packets ?? 0);
    const sent = d("reject_no_backend");
    const suppressed = d("reject_suppressed");
    assert.equal(sent + suppressed, FLOOD, `every SYN rejected or suppressed (${sent} + ${suppressed})`);
    assert.ok(suppressed > 0, "the limit held some back");
    // Per Service the same split: the rejects sent as no_backend, those held back as reject_suppressed.
    const feDrops = (st: DataplaneStatus, reason: string) =>
      st.frontendCounters.find((c) => c.address === VIP_EMPTY && c.port === 80)?.drops?.[reason] ?? 0;
    const dFe = (reason: string) => feDrops(s1, reason) - feDrops(s0, reason);
    assert.deepEqual([dFe("no_backend"), dFe("reject_suppressed")], [sent, suppressed], "per-Service drops");
    const of = (reason: string) => m.events.filter((e) => e.reason === reason && e.service === "default/empty");
    await m.waitFor(
      () => of("reject_no_backend").length >= sent && of("reject_suppressed").length >= suppressed,
      `${sent} reject and ${suppressed} suppressed events`,
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(of("reject_no_backend").length, sent, "one event per RST sent");
    assert.equal(of("reject_suppressed").length, suppressed, "one event per reject held back");
    for (const e of of("reject_suppressed")) assert.equal(e.frontend, `${VIP_EMPTY}:80`);
    await m.stop();
  });

  test("a live connection whose backend was removed: its next segment is reset, reported as explain reports the tuple", async () => {
    const hold = startHold(lab, "client", `${VIP_STALE}:80`, 1500, 3000);
    try {
      await hold.waitFor(1, 10_000);
      const first = hold.events[0]!;
      const got = "reply" in first ? /^old ([\d.]+):(\d+)/.exec(first.reply) : null;
      assert.ok(got && got[1] === CLIENT, `the held connection reached the old backend: ${JSON.stringify(first)}`);
      const sport = Number(got[2]);
      const m = await startMonitor(["--service", "default/stale"]);
      const staleDrops = (st: DataplaneStatus) =>
        st.frontendCounters.find((c) => c.address === VIP_STALE && c.port === 80)?.drops?.no_conntrack ?? 0;
      const before = staleDrops(await proxy!.status());
      // The backend leaves the Service (and every map); the connection's entries stay.
      writeFileSync(join(dir, "services.yaml"), manifest(objects(WEB)));
      await proxy!.waitForStatus(
        (s) => s.frontends.some((f) => f.address === VIP_STALE && f.backends.some((b) => b.address === WEB)),
        20_000,
      );
      const stale = () =>
        m.events.filter((e) => e.type === "drop" && e.client === `${CLIENT}:${sport}` && e.service === "default/stale");
      await m.waitFor(() => stale().length > 0, "the reset of the held connection's next segment", 15_000);
      assert.deepEqual(
        [stale()[0]!.reason, stale()[0]!.frontend, stale()[0]!.interface],
        ["reject_no_conntrack", `${VIP_STALE}:80`, lab.podInterface("client")],
      );
      await hold.waitFor(hold.events.length + 1, 10_000).catch(() => undefined);
      assert.ok(
        hold.events.some((e) => "error" in e),
        `the held connection was reset: ${JSON.stringify(hold.events.slice(-2))}`,
      );
      // Per Service as no_conntrack: one count per reset or dropped segment, each also reported.
      const counted = staleDrops(await proxy!.status()) - before;
      await new Promise((r) => setTimeout(r, 300));
      const resets = m.events.filter((e) => e.reason === "reject_no_conntrack" && e.service === "default/stale").length;
      assert.ok(counted >= 1 && counted <= resets, `the Service's no_conntrack drops: +${counted}, ${resets} events`);
      await m.stop();
      // explain for the same tuple names the stale entry and the same reason.
      const r = await lab.exec(
        "node-a",
        [
          ...cliCommand(),
          "explain",
          `${VIP_STALE}:80/tcp`,
          "--from",
          `${CLIENT}:${sport}`,
          "--from-pod",
          lab.podInterface("client"),
          "--bpffs",
          bpffs.path,
          "-o",
          "json",
        ],
        { timeoutMs: 60_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      const e = JSON.parse(r.stdout) as Explanation;
      assert.deepEqual(e.causes, ["stale-conntrack-backend-removed"], JSON.stringify(e.packet));
      assert.equal(e.model.frontend?.service, stale()[0]!.service);
      assert.equal(e.packet?.dropReason, stale()[0]!.reason);
    } finally {
      await hold.stop();
    }
  });
});

// The same monitor over IPv6 (docs/ipv6.md): IPv6 single-stack Services on a dual-stack node, the IPv6 path's
// own event records (bpf/lib/events6.h), shown as the rest of the CLI shows IPv6 ("[addr]:port").
const NODE_A6 = "2001:db8::a";
const EXT6 = "2001:db8:100::10";
const WEB6 = "fd00:10:244:1::5";
const CLIENT6 = "fd00:10:244:1::20";
const FORGER6 = "fd00:10:244:1::21";
const VIP6_WEB = "fd00:96::21";
const VIP6_EMPTY = "fd00:96::20";
const VIP6_NOT_READY = "fd00:96::24";
const LB6_DENIED = "2001:db8:1b::21";
const DNS = { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" as const };

function objects6(): unknown[] {
  const v6 = (o: ReturnType<typeof service>) => ({
    ...o,
    spec: { ...o.spec, ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] },
  });
  const slice6 = (...a: Parameters<typeof endpointSlice>) => ({ ...endpointSlice(...a), addressType: "IPv6" });
  const lbDenied = v6(
    service("lb-denied", "fd00:96::22", [{ ...HTTP, nodePort: 30082 }], {
      spec: { type: "LoadBalancer", loadBalancerSourceRanges: ["2001:db8:1c::/64"] },
    }),
  );
  return [
    v6(service("web", VIP6_WEB, [HTTP])),
    slice6("web", [HTTP], [{ ip: WEB6, node: "node-a" }]),
    v6(service("empty", VIP6_EMPTY, [HTTP, DNS])),
    slice6("empty", [HTTP, DNS], []),
    v6(service("not-ready", VIP6_NOT_READY, [HTTP])),
    slice6("not-ready", [HTTP], [{ ip: WEB6, node: "node-a", ready: false }]),
    { ...lbDenied, status: { loadBalancer: { ingress: [{ ip: LB6_DENIED, ipMode: "VIP" }] } } },
    slice6("lb-denied", [HTTP], [{ ip: WEB6, node: "node-a" }]),
    v6(
      service("local", "fd00:96::23", [{ ...HTTP, nodePort: LOCAL_NODEPORT }], {
        spec: { type: "NodePort", externalTrafficPolicy: "Local" },
      }),
    ),
    // Its only endpoint is on another node: node-a has no local endpoint.
    slice6("local", [HTTP], [{ ip: "fd00:10:244:2::5", node: "node-b" }]),
    {
      ...node("node-a", NODE_A, ["10.244.1.0/24", "fd00:10:244:1::/64"]),
      status: {
        addresses: [
          { type: "InternalIP", address: NODE_A },
          { type: "InternalIP", address: NODE_A6 },
        ],
      },
    },
  ];
}

describe("bpfproxy monitor over IPv6", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  const monitors: Monitor[] = [];
  const startMonitor = async (args: string[] = []) => {
    const m = new Monitor(
      lab.spawn("node-a", [...cliCommand(), "monitor", "--bpffs", bpffs.path, "-o", "json", ...args]),
    );
    monitors.push(m);
    await m.waitFor(() => /monitor: listening/.test(m.stderr), "the ready line");
    return m;
  };
  const fe = (st: DataplaneStatus, address: string, port = 80) =>
    st.frontendCounters.find((c) => c.address === address && c.port === port);
  const be = (st: DataplaneStatus, address: string) => st.backendCounters?.find((c) => c.address === address);
  const b = (a: string) => `[${a}]`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-monitor6-"));
    writeFileSync(join(dir, "services.yaml"), manifest(objects6()));
    lab = await Lab.create({
      prefix: `bpxmon6${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_A,
          podCIDR: "10.244.1.0/24",
          ip6: NODE_A6,
          podCIDR6: "fd00:10:244:1::/64",
          pods: [
            { name: "web", ip: WEB, ip6: WEB6 },
            { name: "client", ip: CLIENT, ip6: CLIENT6 },
            { name: "forger", ip: FORGER, ip6: FORGER6 },
          ],
        },
      ],
      external: { name: "ext", ip: EXT, ip6: EXT6 },
    });
    await lab.run("ext", ["ip", "-6", "route", "add", "2001:db8:1b::/64", "via", NODE_A6]);
    await startEchoServer(lab, "web", { name: "web", tcp: [8080], udp: [5353], bind: "::" });
    bpffs = PrivateBpffs.create("monitor6-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
    await proxy.waitForStatus(
      (s) => s.frontends.some((f) => f.address === LB6_DENIED) && s.frontends.some((f) => f.address === NODE_A6),
      10_000,
    );
  });

  after(async () => {
    for (const m of monitors) await m.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("nobody listening: nothing is written to the ring buffer", async () => {
    const rb = native.ringbufOpen(join(bpffs.path, abi.MAP_NAMES.events));
    try {
      native.ringbufPoll(rb, 0);
      await echoRequest(lab, "client", { tcp: `${b(VIP6_WEB)}:80`, count: 2, timeoutMs: 3000 });
      await echoRequest(lab, "client", { tcp: `${b(VIP6_EMPTY)}:80`, count: 1, timeoutMs: 2000 });
      assert.deepEqual(native.ringbufPoll(rb, 500), [], "no record while nobody listens");
    } finally {
      native.ringbufClose(rb);
    }
  });

  test(`each of ${CONNS} new IPv6 flows is shown with its backend, and the counters move by exactly ${CONNS}`, async () => {
    const m = await startMonitor();
    const before = await proxy!.status();
    const r = await echoRequest(lab, "client", { tcp: `${b(VIP6_WEB)}:80`, count: CONNS, timeoutMs: 3000 });
    assert.deepEqual(
      r.filter((x) => !x.ok),
      [],
      "every connection answered",
    );
    const after = await proxy!.status();
    assert.equal((fe(after, VIP6_WEB)?.connections ?? 0) - (fe(before, VIP6_WEB)?.connections ?? 0), CONNS);
    assert.equal((be(after, WEB6)?.connections ?? 0) - (be(before, WEB6)?.connections ?? 0), CONNS);
    const flows = () => m.events.filter((e) => e.type === "new-flow" && e.service === "default/web");
    await m.waitFor(() => flows().length >= CONNS, `${CONNS} new flows of default/web`);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(flows().length, CONNS, "one event per connection");
    for (const e of flows()) {
      assert.equal(e.backend, `${b(WEB6)}:8080`);
      assert.equal(e.frontend, `${b(VIP6_WEB)}:80`);
      assert.match(e.client, /^\[fd00:10:244:1::20\]:\d+$/);
      assert.deepEqual(
        [e.portName, e.reason, e.protocol, e.frontendType, e.interface],
        ["http", "translated_new", "TCP", "ClusterIP", lab.podInterface("client")],
      );
    }
    // Each client port once: the events are the connections, not packets.
    assert.equal(new Set(flows().map((e) => e.client)).size, CONNS);
    assert.equal(await m.stop(), 0);
  });

  test("the drops of real failures, with their reason and Service, and per-Service drops count them", async () => {
    const m = await startMonitor(["--drops"]);
    const before = await proxy!.status();
    const refused = await echoRequest(lab, "client", { tcp: `${b(VIP6_EMPTY)}:80`, count: 2, timeoutMs: 2000 });
    assert.deepEqual(
      refused.map((r) => r.error),
      ["ECONNREFUSED", "ECONNREFUSED"],
    );
    // UDP: the ICMPv6 port unreachable the path sends quotes the datagram; the event names the datagram.
    const udp = await echoRequest(lab, "client", { udp: `${b(VIP6_EMPTY)}:53`, count: 1, timeoutMs: 2000 });
    assert.equal(udp[0]?.error, "ECONNREFUSED", JSON.stringify(udp));
    const notReady = await echoRequest(lab, "client", { tcp: `${b(VIP6_NOT_READY)}:80`, count: 1, timeoutMs: 2000 });
    assert.equal(notReady[0]?.error, "ECONNREFUSED", JSON.stringify(notReady));
    const [denied, local] = await Promise.all([
      echoRequest(lab, "ext", { tcp: `${b(LB6_DENIED)}:80`, count: 1, timeoutMs: 1500 }),
      echoRequest(lab, "ext", { tcp: `${b(NODE_A6)}:${LOCAL_NODEPORT}`, count: 1, timeoutMs: 1500 }),
    ]);
    assert.match(denied[0]?.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(denied));
    assert.match(local[0]?.error ?? "", /timeout|ETIMEDOUT/i, JSON.stringify(local));
    await sendSpoofedTcp(lab, "client", { src: CLIENT6, sport: 40999, dst: VIP6_WEB, dport: 80, flags: "A" });
    const want = [
      { service: "default/empty", reason: "reject_no_backend", client: CLIENT6, frontend: `${b(VIP6_EMPTY)}:80`, n: 2 },
      { service: "default/empty", reason: "reject_no_backend", client: CLIENT6, frontend: `${b(VIP6_EMPTY)}:53`, n: 1 },
      {
        service: "default/not-ready",
        reason: "reject_no_backend",
        client: CLIENT6,
        frontend: `${b(VIP6_NOT_READY)}:80`,
        n: 1,
      },
      { service: "default/lb-denied", reason: "drop_source_range", client: EXT6, frontend: `${b(LB6_DENIED)}:80` },
      {
        service: "default/local",
        reason: "drop_no_local_backend",
        client: EXT6,
        frontend: `${b(NODE_A6)}:${LOCAL_NODEPORT}`,
      },
      { service: "default/web", reason: "reject_no_conntrack", client: CLIENT6, frontend: `${b(VIP6_WEB)}:80`, n: 1 },
    ];
    const seen = (w: (typeof want)[number]) =>
      m.events.filter(
        (e) =>
          e.type === "drop" &&
          e.service === w.service &&
          e.reason === w.reason &&
          e.client.startsWith(`${b(w.client)}:`) &&
          e.frontend === w.frontend,
      );
    await m.waitFor(() => want.every((w) => seen(w).length > 0), "the six drops");
    await new Promise((res) => setTimeout(res, 300));
    for (const w of want) if (w.n !== undefined) assert.equal(seen(w).length, w.n, JSON.stringify(w));
    assert.equal(seen(want[1]!)[0]!.protocol, "UDP");
    assert.equal(seen(want[5]!)[0]!.client, `${b(CLIENT6)}:40999`);
    assert.equal(seen(want[0]!)[0]!.interface, lab.podInterface("client"));
    assert.equal(seen(want[3]!)[0]!.frontendType, "LoadBalancer");
    assert.equal(seen(want[4]!)[0]!.frontendType, "NodePort");
    assert.equal(
      m.events.filter((e) => e.type === "drop").length,
      m.events.filter((e) => want.some((w) => seen(w).includes(e))).length,
      `no other drop: ${JSON.stringify(m.events)}`,
    );
    const after = await proxy!.status();
    const d = (addr: string, port: number, reason: string) =>
      (fe(after, addr, port)?.drops?.[reason] ?? 0) - (fe(before, addr, port)?.drops?.[reason] ?? 0);
    assert.deepEqual(
      [
        d(VIP6_EMPTY, 80, "no_backend"),
        d(VIP6_EMPTY, 53, "no_backend"),
        d(VIP6_NOT_READY, 80, "no_backend"),
        d(VIP6_WEB, 80, "no_conntrack"),
      ],
      [2, 1, 1, 1],
    );
    assert.ok(d(LB6_DENIED, 80, "source_range") >= 1);
    // An IPv6 NodePort is counted at its node-address entry (no wildcard as IPv4's).
    assert.ok(d(NODE_A6, LOCAL_NODEPORT, "no_local_backend") >= 1);
    await m.stop();
  });

  test("the text form shows IPv6 addresses in brackets; a forged pod source is reported without a Service", async () => {
    const text = lab.spawn("node-a", [...cliCommand(), "monitor", "--bpffs", bpffs.path, "--drops"]);
    let out = "";
    let err = "";
    text.stdout!.setEncoding("utf8").on("data", (x: string) => (out += x));
    text.stderr!.setEncoding("utf8").on("data", (x: string) => (err += x));
    const exited = new Promise((r) => text.once("exit", r));
    try {
      const deadline = Date.now() + 10_000;
      while (!/monitor: listening/.test(err) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.match(err, /monitor: listening/);
      const before = (await proxy!.status()).counters;
      await sendSpoofedTcp(lab, "forger", { src: CLIENT6, sport: 41234, dst: VIP6_WEB, dport: 80, flags: "S" });
      await echoRequest(lab, "client", { tcp: `${b(VIP6_EMPTY)}:80`, count: 1, timeoutMs: 2000 });
      const forged = new RegExp(
        ` DROP drop_pod_source - \\[fd00:10:244:1::20\\]:41234 -> \\[fd00:96::21\\]:80/TCP on ${lab.podInterface("forger")}$`,
        "m",
      );
      const rejected = new RegExp(
        ` DROP reject_no_backend default/empty:http \\[fd00:10:244:1::20\\]:\\d+ -> \\[fd00:96::20\\]:80/TCP on ${lab.podInterface("client")}$`,
        "m",
      );
      const until = Date.now() + 10_000;
      while (!(forged.test(out) && rejected.test(out)) && Date.now() < until)
        await new Promise((r) => setTimeout(r, 100));
      assert.match(out, forged);
      assert.match(out, rejected);
      const after = (await proxy!.status()).counters;
      assert.equal((after.drop_pod_source?.packets ?? 0) - (before.drop_pod_source?.packets ?? 0), 1, "counted once");
    } finally {
      text.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
  });

  test(`a burst of ${FLOOD} IPv6 SYNs to a Service without endpoints: each RST and each one held back is reported`, async () => {
    await new Promise((r) => setTimeout(r, 1100)); // the client's reject bucket is full again
    const m = await startMonitor(["--service", "default/empty"]);
    const s0 = await proxy!.status();
    await sendSpoofedTcp(lab, "client", { src: CLIENT6, dst: VIP6_EMPTY, dport: 80, flags: "S", count: FLOOD });
    const s1 = await proxy!.status();
    const d = (r: string) => (s1.counters[r]?.packets ?? 0) - (s0.counters[r]?.packets ?? 0);
    const sent = d("reject_no_backend");
    const suppressed = d("reject_suppressed");
    assert.equal(sent + suppressed, FLOOD, `every SYN rejected or suppressed (${sent} + ${suppressed})`);
    assert.ok(suppressed > 0, "the limit held some back");
    const of = (reason: string) => m.events.filter((e) => e.reason === reason && e.service === "default/empty");
    await m.waitFor(
      () => of("reject_no_backend").length >= sent && of("reject_suppressed").length >= suppressed,
      `${sent} reject and ${suppressed} suppressed events`,
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(of("reject_no_backend").length, sent, "one event per RST sent");
    assert.equal(of("reject_suppressed").length, suppressed, "one event per reject held back");
    for (const e of [...of("reject_no_backend"), ...of("reject_suppressed")])
      assert.equal(e.frontend, `${b(VIP6_EMPTY)}:80`);
    await m.stop();
  });
});
