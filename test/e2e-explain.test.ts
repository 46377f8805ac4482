// End to end: `bpfproxy explain` on a live node (issue 19 item 1, docs/observability.md). One lab node runs
// the real daemon; each Service is broken in one way a user meets, and explain must name that cause in its
// JSON, from the model (frontend, endpoints and why each is in or out) and from the packet (the loaded
// program run on a crafted packet in a copy, BPF_PROG_TEST_RUN). A working Service must come out reachable
// with the backend a real connection reaches. Every pinned map must be byte-identical before and after.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startHold, type HoldHandle } from "../src/lab/index.js";
import { cliCommand, PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { ctKey, MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import { Monitor } from "./fixtures/monitor.js";
import { explainOn, type Ran } from "./fixtures/explain.js";
import { endpointSlice, manifest, node, service, type PortSpec } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_IP = "192.0.2.11";
const EXT = "198.51.100.10";
const A1 = "10.244.1.10";
const A2 = "10.244.1.11";
const A3 = "10.244.1.12";
const CLIENT = "10.244.1.20";
const HTTP: PortSpec = { name: "http", port: 80, targetPort: 8080, protocol: "TCP" };
const VIP = {
  web: "10.96.0.10",
  empty: "10.96.0.11",
  notready: "10.96.0.12",
  localonly: "10.96.0.13",
  ranged: "10.96.0.14",
  stale: "10.96.0.15",
  zbig: "10.96.0.16",
  dns: "10.96.0.17",
  term: "10.96.0.18",
  zoned: "10.96.0.19",
  dual: "10.96.0.21",
  extip: "10.96.0.22",
};
/** node-a's second address (on eth0): a node address outside nodePortAddresses (the config file's 192.0.2.11/32). */
const NODE_IP_2 = "192.0.2.13";
/** An externalIP outside bpfproxy.externalIPsAllowedCIDRs (the config file's 203.0.113.0/24). */
const EXT_IP_DENIED = "198.51.100.50";
const CONFIG = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
nodePortAddresses: ["${NODE_IP}/32"]
bpfproxy:
  externalIPsAllowedCIDRs: ["203.0.113.0/24"]
`;
const DNS: PortSpec = { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" };
const LB_IP = "192.0.2.100";
const BIG = 60;

/** An explanation whose packet part ran. */

/** A slice whose endpoints get the given extra fields (conditions, zone) over endpointSlice()'s. */
function sliceWith(
  svc: string,
  eps: { ip: string; extra?: Record<string, unknown> }[],
  addressType = "IPv4",
  name = `${svc}-1`,
): unknown {
  const s = endpointSlice(
    svc,
    [HTTP],
    eps.map((e) => ({ ip: e.ip, node: "node-a" })),
  );
  return {
    ...s,
    addressType,
    metadata: { ...s.metadata, name },
    endpoints: s.endpoints.map((e, i) => ({ ...e, ...eps[i]!.extra })),
  };
}

function objects(staleBackend: string): unknown[] {
  const np = (nodePort: number): PortSpec => ({ ...HTTP, nodePort });
  const nodeA = node("node-a", NODE_IP);
  return [
    // In zone z1.
    { ...nodeA, metadata: { name: "node-a", labels: { "topology.kubernetes.io/zone": "z1" } } },
    // One endpoint ready, one terminating (still serving): the terminating one is out while a ready one exists.
    service("term", VIP.term, [HTTP]),
    sliceWith("term", [
      { ip: A1 },
      { ip: A2, extra: { conditions: { ready: false, serving: true, terminating: true } } },
    ]),
    // Topology-aware routing (PreferClose): hints for each endpoint's own zone; A2's zone is not node-a's.
    service("zoned", VIP.zoned, [HTTP], { spec: { trafficDistribution: "PreferClose" } }),
    sliceWith("zoned", [
      { ip: A1, extra: { zone: "z1" } },
      { ip: A2, extra: { zone: "z2" } },
    ]),
    // An IPv6 slice beside the IPv4 one: listed, never programmed.
    service("dual", VIP.dual, [HTTP]),
    sliceWith("dual", [{ ip: A1 }]),
    sliceWith("dual", [{ ip: "fd00:10:244::10" }], "IPv6", "dual-v6"),
    // An externalIP outside the allow-list: not served.
    service("extip", VIP.extip, [HTTP], { spec: { externalIPs: [EXT_IP_DENIED] } }),
    endpointSlice("extip", [HTTP], [{ ip: A1, node: "node-a" }]),
    service("web", VIP.web, [HTTP]),
    endpointSlice(
      "web",
      [HTTP],
      [
        { ip: A1, node: "node-a" },
        { ip: A2, node: "node-a" },
      ],
    ),
    service("empty", VIP.empty, [HTTP]),
    endpointSlice("empty", [HTTP], []),
    service("notready", VIP.notready, [HTTP]),
    endpointSlice(
      "notready",
      [HTTP],
      [
        { ip: A1, node: "node-a", ready: false },
        { ip: A2, node: "node-a", ready: false },
      ],
    ),
    // externalTrafficPolicy Local, its only endpoint on another node.
    service("localonly", VIP.localonly, [np(30080)], { spec: { type: "NodePort", externalTrafficPolicy: "Local" } }),
    endpointSlice("localonly", [HTTP], [{ ip: "10.244.2.10", node: "node-b" }]),
    {
      ...service("ranged", VIP.ranged, [np(30081)], {
        spec: { type: "LoadBalancer", loadBalancerSourceRanges: ["203.0.113.0/24"] },
      }),
      status: { loadBalancer: { ingress: [{ ip: LB_IP }] } },
    },
    endpointSlice("ranged", [HTTP], [{ ip: A1, node: "node-a" }]),
    service("stale", VIP.stale, [HTTP]),
    endpointSlice("stale", [HTTP], [{ ip: staleBackend, node: "node-a" }]),
    service("dns", VIP.dns, [DNS], { annotations: { "bpfproxy.io/lb-algorithm": "maglev" } }),
    endpointSlice(
      "dns",
      [DNS],
      [
        { ip: A1, node: "node-a" },
        { ip: A2, node: "node-a" },
        { ip: A3, node: "node-a" },
      ],
    ),
    // More backends than the backends map holds (--map-sizes backends=40): refused, the rest programmed.
    service("zbig", VIP.zbig, [HTTP]),
    endpointSlice(
      "zbig",
      [HTTP],
      Array.from({ length: BIG }, (_, i) => ({ ip: `10.244.3.${i + 1}`, node: "node-b" })),
    ),
  ];
}

describe("bpfproxy explain", { timeout: 300_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let hold: HoldHandle | undefined;

  const explain = (target: string, args: string[] = []): Promise<Ran> =>
    explainOn(lab, "node-a", bpffs.path, target, args);
  const explainTable = async (target: string, args: string[]): Promise<string> => {
    const r = await lab.exec("node-a", [...cliCommand(), "explain", target, "--bpffs", bpffs.path, ...args], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, `explain ${target} failed: ${r.stderr}`);
    console.log(r.stdout.replace(/^/gm, "# "));
    return r.stdout;
  };
  const fromClient = () => ["--from", `${CLIENT}:41000`, "--from-pod", lab.podInterface("client")];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-explain-"));
    writeFileSync(join(dir, "services.yaml"), manifest(objects(A3)));
    writeFileSync(`${dir}.config.yaml`, CONFIG);
    lab = await Lab.create({
      prefix: `bpxex${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_IP,
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "a1", ip: A1 },
            { name: "a2", ip: A2 },
            { name: "a3", ip: A3 },
            { name: "client", ip: CLIENT },
          ],
        },
      ],
      external: { name: "ext", ip: EXT },
    });
    // A node address outside nodePortAddresses (the daemon reads the node's addresses at start).
    await lab.run("node-a", ["ip", "addr", "add", `${NODE_IP_2}/32`, "dev", "eth0"]);
    for (const p of ["a1", "a2", "a3"]) await startEchoServer(lab, p, { name: p, tcp: [8080], udp: [5353] });
    bpffs = PrivateBpffs.create("explain-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--config", `${dir}.config.yaml`, "--map-sizes", "backends=40"],
    });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP.stale), 20_000);
    await proxy.waitForLog(/BPF map full/, 20_000);
  });

  after(async () => {
    await hold?.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.config.yaml`, { force: true });
  });

  test("a working Service: the frontend, both endpoints selected, forwarded by DNAT to the backend a connection reaches", async () => {
    const e = await explain(`${VIP.web}:80/tcp`, fromClient());
    assert.deepEqual(e.causes, [], JSON.stringify(e, null, 1));
    assert.equal(e.model.frontend?.service, "default/web");
    assert.equal(e.model.frontend?.type, "ClusterIP");
    assert.equal(e.model.frontend?.scope, "internal");
    assert.equal(e.model.matchesLastSync, true);
    assert.deepEqual(
      e.model.endpoints.map((x) => [x.address, x.selected, x.reason]),
      [
        [A1, true, null],
        [A2, true, null],
      ],
    );
    assert.equal(e.packet.sameProgram, true, "the copy runs the attached program's code");
    assert.equal(e.packet.verdict, "forward");
    assert.deepEqual(e.packet.reasons, ["translated_new"]);
    assert.ok(e.packet.backend && [A1, A2].includes(e.packet.backend.address), JSON.stringify(e.packet));
    assert.equal(e.packet.backend.port, 8080);
    assert.deepEqual(e.packet.rewrites, { dst: e.packet.backend.address, dport: 8080 });
    const table = await explainTable(`${VIP.web}:80/tcp`, fromClient());
    assert.match(table, /default\/web port http: ClusterIP 10\.96\.0\.10:80\/TCP scope internal/);
    assert.match(table, /^Reachable\.$/m);
    // What a real connection does agrees: it is answered by one of the selected backends.
    const r = await echoRequest(lab, "client", { tcp: `${VIP.web}:80`, count: 1, timeoutMs: 3000 });
    assert.match(r[0]?.reply ?? JSON.stringify(r), /^a[12] /);
  });

  test("Maglev: explain names the exact backend each real flow then reaches", async () => {
    const names: Record<string, string> = { [A1]: "a1", [A2]: "a2", [A3]: "a3" };
    const base = 22000;
    const picked: string[] = [];
    for (let i = 0; i < 6; i++) {
      const e = await explain(`${VIP.dns}:53/udp`, [
        "--from",
        `${CLIENT}:${base + i}`,
        "--from-pod",
        lab.podInterface("client"),
      ]);
      assert.equal(e.model.frontend?.algorithm, "maglev");
      assert.equal(e.packet.verdict, "forward");
      picked.push(names[e.packet.backend!.address]!);
    }
    const real = await echoRequest(lab, "client", { udp: `${VIP.dns}:53`, count: 6, sportBase: base, timeoutMs: 3000 });
    assert.deepEqual(
      real.map((r) => r.reply?.split(" ")[0]),
      picked,
      `explain's picks ${picked.join(",")} are the backends that answered`,
    );
    console.log(`# maglev picks for source ports ${base}..${base + 5}: ${picked.join(" ")}`);
  });

  test("every pinned map is byte-identical before and after explain", async () => {
    const snap = () => {
      const out = new Map<string, string[]>();
      for (const name of readdirSync(bpffs.path)) {
        // A ring buffer has no entries to compare (and no iteration); explain's copy has its own, fresh one.
        if (name === MAP_NAMES.events) continue;
        let m: native.BpfMap;
        try {
          m = native.BpfMap.openPinned(join(bpffs.path, name), { readOnly: true });
        } catch {
          continue; // a program or link pin
        }
        try {
          const e = m.entries();
          const ks = m.info.keySize;
          const vs = m.valueSizeAll;
          const rows: string[] = [];
          for (let i = 0; i < e.count; i++)
            rows.push(
              e.keys.subarray(i * ks, (i + 1) * ks).toString("hex") +
                "=" +
                e.values.subarray(i * vs, (i + 1) * vs).toString("hex"),
            );
          out.set(name, rows.sort());
        } finally {
          m.close();
        }
      }
      return out;
    };
    const before = snap();
    assert.ok(before.has(MAP_NAMES.conntrack) && before.has(MAP_NAMES.services), [...before.keys()].join(" "));
    await explain(`${VIP.web}:80/tcp`, fromClient());
    await explain(`${VIP.empty}:80/tcp`, fromClient());
    await explain(`${NODE_IP}:30080/tcp`, ["--from", `${EXT}:41001`]);
    const after = snap();
    assert.deepEqual([...after.keys()], [...before.keys()]);
    for (const [name, rows] of before) assert.deepEqual(after.get(name), rows, `map ${name} changed`);
    console.log(
      `# ${before.size} pinned maps compared, ${[...before.values()].reduce((n, r) => n + r.length, 0)} entries`,
    );
  });

  test("no endpoints: named, and the packet is rejected with a TCP RST", async () => {
    const e = await explain(`${VIP.empty}:80/tcp`, fromClient());
    assert.deepEqual(e.causes, ["no-endpoints"]);
    assert.deepEqual(e.model.endpoints, []);
    assert.equal(e.packet.verdict, "reject");
    assert.equal(e.packet.dropReason, "reject_no_backend");
    assert.equal(e.packet.reply, "TCP RST");
  });

  test("all endpoints not ready: each endpoint says so, the packet is rejected", async () => {
    const e = await explain(`${VIP.notready}:80/tcp`, fromClient());
    assert.deepEqual(e.causes, ["all-endpoints-not-ready"]);
    assert.deepEqual(
      e.model.endpoints.map((x) => [x.address, x.selected, x.reason]),
      [
        [A1, false, "not-ready"],
        [A2, false, "not-ready"],
      ],
    );
    assert.equal(e.packet.verdict, "reject");
    assert.equal(e.packet.dropReason, "reject_no_backend");
  });

  test("Local policy on a node without endpoints: the endpoint is not local, external traffic is dropped", async () => {
    const e = await explain(`${NODE_IP}:30080/tcp`, ["--from", `${EXT}:41001`]);
    assert.deepEqual(e.causes, ["no-local-endpoints"]);
    assert.equal(e.model.frontend?.type, "NodePort");
    assert.equal(e.model.scope, "external");
    assert.equal(e.model.endpointSet, "local");
    assert.deepEqual(
      e.model.endpoints.map((x) => [x.address, x.nodeName, x.reason]),
      [["10.244.2.10", "node-b", "not-local"]],
    );
    assert.equal(e.packet.program, "bpx_from_device");
    assert.equal(e.packet.verdict, "drop");
    assert.equal(e.packet.dropReason, "drop_no_local_backend");
    const table = await explainTable(`${NODE_IP}:30080/tcp`, ["--from", `${EXT}:41001`]);
    assert.match(table, /- 10\.244\.2\.10:8080 node node-b: not local under Local traffic policy/);
    assert.match(table, /SYN: drop \(drop_no_local_backend\)/);
    assert.match(table, /^Causes: no-local-endpoints$/m);
    // From a pod the same address uses the Cluster set (kube-proxy's short-circuit): the endpoint is selected.
    const inside = await explain(`${NODE_IP}:30080/tcp`, fromClient());
    assert.equal(inside.model.endpointSet, "cluster");
    assert.deepEqual(
      inside.model.endpoints.map((x) => x.selected),
      [true],
    );
  });

  test("a source range refusing the client: named, and the packet is dropped for it", async () => {
    const e = await explain(`${LB_IP}:80/tcp`, ["--from", `${EXT}:41002`]);
    assert.deepEqual(e.causes, ["source-range-refused"]);
    assert.equal(e.model.frontend?.type, "LoadBalancer");
    assert.deepEqual(e.model.frontend?.sourceRanges, ["203.0.113.0/24"]);
    assert.equal(e.model.sourceRangeAllows, false);
    assert.equal(e.packet.verdict, "drop");
    assert.equal(e.packet.dropReason, "drop_source_range");
    // A client inside the range is forwarded.
    const ok = await explain(`${LB_IP}:80/tcp`, ["--from", "203.0.113.7:41003"]);
    assert.equal(ok.model.sourceRangeAllows, true);
    assert.equal(ok.packet.verdict, "forward");
    assert.equal(ok.packet.backend?.address, A1);
  });

  test("a Service the full backends map refused: named, its frontend rejects as reject_map_full, monitor reports it, its drops count", async () => {
    const e = await explain(`${VIP.zbig}:80/tcp`, fromClient());
    assert.deepEqual(e.causes, ["not-programmed-map-full"]);
    assert.deepEqual(e.model.notProgrammed?.maps, [MAP_NAMES.backends]);
    assert.equal(e.model.frontend?.backends.length, BIG);
    // Its frontend is written with no backends (BPX_SVC_F_MAP_FULL): rejected, not passed to the stack.
    assert.equal(e.packet.verdict, "reject");
    assert.equal(e.packet.dropReason, "reject_map_full");
    assert.deepEqual(e.packet.reasons, ["reject_map_full"]);
    assert.equal(e.packet.reply, "TCP RST");

    const m = new Monitor(
      lab.spawn("node-a", [...cliCommand(), "monitor", "--bpffs", bpffs.path, "-o", "json", "--drops"]),
    );
    try {
      await m.waitFor(() => /monitor: listening/.test(m.stderr), "the ready line");
      const fe = (st: DataplaneStatus) => st.frontendCounters.find((c) => c.address === VIP.zbig && c.port === 80);
      const drops = (st: DataplaneStatus, reason: string) => fe(st)?.drops?.[reason] ?? 0;
      const s0 = await proxy!.status(); // a frontend with nothing counted yet is not listed: 0
      const r = await echoRequest(lab, "client", { tcp: `${VIP.zbig}:80`, count: 2, timeoutMs: 2000 });
      assert.deepEqual(
        r.map((x) => x.error),
        ["ECONNREFUSED", "ECONNREFUSED"],
        "refused at once, as a Service without endpoints",
      );
      const full = () => m.events.filter((x) => x.reason === "reject_map_full" && x.service === "default/zbig");
      await m.waitFor(() => full().length >= 2, "two reject_map_full events");
      assert.equal(full()[0]!.frontend, `${VIP.zbig}:80`);
      assert.match(full()[0]!.client, new RegExp(`^${CLIENT.replace(/\./g, "\\.")}:\\d+$`));
      // Per Service under its own reason, not as a Service without endpoints.
      const st = await proxy!.status();
      assert.equal(drops(st, "map_full") - drops(s0, "map_full"), 2, "the per-Service map_full drops");
      assert.equal(drops(st, "no_backend") - drops(s0, "no_backend"), 0, "nothing counted as no_backend");
      assert.equal(st.counters.reject_map_full?.packets, 2, "the global reason counter");
    } finally {
      await m.stop();
    }
  });

  test("no frontend: wrong protocol and unknown address are told apart", async () => {
    const udp = await explain(`${VIP.web}:80/udp`, fromClient());
    assert.deepEqual(udp.causes, ["wrong-protocol"]);
    assert.equal(udp.model.frontend, null);
    const none = await explain(`10.96.9.9:80/tcp`, fromClient());
    assert.deepEqual(none.causes, ["no-such-address"]);
    assert.equal(none.packet.verdict, "pass");
  });

  test("no frontend: not a NodePort address, an externalIP outside the allow-list, no such port", async () => {
    const notNp = await explain(`${NODE_IP_2}:30080/tcp`, ["--from", `${EXT}:41010`]);
    assert.deepEqual(notNp.causes, ["not-a-nodeport-address"]);
    assert.equal(notNp.model.frontend, null);
    assert.match(notNp.model.noMatch?.detail ?? "", /outside nodePortAddresses/);
    assert.equal(notNp.packet.verdict, "pass");
    // The same NodePort on the address inside nodePortAddresses matches.
    const np = await explain(`${NODE_IP}:30080/tcp`, ["--from", `${EXT}:41010`]);
    assert.equal(np.model.frontend?.service, "default/localonly");

    const ext = await explain(`${EXT_IP_DENIED}:80/tcp`, ["--from", `${EXT}:41011`]);
    assert.deepEqual(ext.causes, ["external-ip-not-allowed"]);
    assert.match(ext.model.noMatch?.detail ?? "", /externalIP of default\/extip outside externalIPsAllowedCIDRs/);
    assert.equal(ext.packet.verdict, "pass");
    assert.deepEqual(ext.packet.reasons, ["not_service"]);

    const port = await explain(`${VIP.web}:81/tcp`, fromClient());
    assert.deepEqual(port.causes, ["no-such-port"]);
    assert.equal(port.packet.verdict, "pass");
  });

  test("endpoints left out: terminating with ready peers, another zone under topology hints, other family", async () => {
    const term = await explain(`${VIP.term}:80/tcp`, fromClient());
    assert.deepEqual(term.causes, []);
    assert.deepEqual(
      term.model.endpoints.map((x) => [x.address, x.selected, x.reason, x.terminating]),
      [
        [A1, true, null, false],
        [A2, false, "terminating-with-ready-peers", true],
      ],
    );
    assert.equal(term.packet.verdict, "forward");
    assert.equal(term.packet.backend?.address, A1);

    const zoned = await explain(`${VIP.zoned}:80/tcp`, fromClient());
    assert.deepEqual(zoned.causes, []);
    assert.deepEqual(
      zoned.model.endpoints.map((x) => [x.address, x.zone, x.selected, x.reason]),
      [
        [A1, "z1", true, null],
        [A2, "z2", false, "other-zone"],
      ],
    );
    assert.equal(zoned.packet.backend?.address, A1);

    const dual = await explain(`${VIP.dual}:80/tcp`, fromClient());
    assert.deepEqual(dual.causes, []);
    assert.deepEqual(
      dual.model.endpoints.map((x) => [x.address, x.selected, x.reason]),
      [
        [A1, true, null],
        ["fd00:10:244::10", false, "other-family"],
      ],
    );
    assert.equal(dual.packet.backend?.address, A1);
  });

  test("exit status: 2 for a usage mistake, 1 where no daemon answers, with a message naming the socket", async () => {
    const usage = await lab.exec("node-a", [...cliCommand(), "explain", VIP.web, "--bpffs", bpffs.path], {
      timeoutMs: 60_000,
    });
    assert.equal(usage.code, 2, usage.stderr);
    assert.match(usage.stderr, /expected <ipv4>:<port>/);
    // The external client's namespace runs no daemon.
    const none = await lab.exec("ext", [...cliCommand(), "explain", `${VIP.web}:80`, "--bpffs", bpffs.path], {
      timeoutMs: 60_000,
    });
    assert.equal(none.code, 1, none.stderr);
    assert.match(none.stderr, /no bpfproxy daemon answers on \/run\/bpfproxy\/explain-netns-\d+\.sock/);
  });

  test("a conntrack entry to a removed backend: named as stale, its next segment is reset", async () => {
    hold = startHold(lab, "client", `${VIP.stale}:80`, 600_000, 5000);
    await hold.waitFor(1, 10_000);
    // The held connection's client port, from the live conntrack table.
    const ct = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.conntrack), { readOnly: true });
    let sport = 0;
    try {
      const e = ct.entries();
      for (let i = 0; i < e.count; i++) {
        const k = ctKey.decode(e.keys, i * ctKey.size);
        if (k.dir === 0 && k.saddr === CLIENT && k.daddr === VIP.stale && k.dport === 80) sport = k.sport;
      }
    } finally {
      ct.close();
    }
    assert.ok(sport > 0, "the held connection is tracked");
    const fresh = await explain(`${VIP.stale}:80/tcp`, [
      "--from",
      `${CLIENT}:${sport}`,
      "--from-pod",
      lab.podInterface("client"),
    ]);
    assert.deepEqual(fresh.causes, []);
    assert.equal(fresh.packet.packet.tcpFlags, "ACK");
    assert.equal(fresh.packet.existing.conntrack.find((c) => c.dir === "forward")?.backend, `${A3}:8080`);
    assert.equal(fresh.packet.verdict, "forward");
    assert.deepEqual(fresh.packet.reasons, ["translated_established"]);

    // The backend (used by no other Service) goes away: the entry stays (TCP flows are not flushed) and
    // names a backend that is gone from the maps.
    writeFileSync(join(dir, "services.yaml"), manifest(objects(A2)));
    await proxy!.waitForStatus(
      (s) => s.frontends.some((f) => f.address === VIP.stale && f.backends.some((b) => b.address === A2)),
      20_000,
    );
    let e = await explain(`${VIP.stale}:80/tcp`, [
      "--from",
      `${CLIENT}:${sport}`,
      "--from-pod",
      lab.podInterface("client"),
    ]);
    for (let i = 0; i < 20 && e.packet.existing.conntrack.some((c) => c.backend !== null); i++) {
      await new Promise((r) => setTimeout(r, 500)); // the backend's entry goes once no frontend names it
      e = await explain(`${VIP.stale}:80/tcp`, [
        "--from",
        `${CLIENT}:${sport}`,
        "--from-pod",
        lab.podInterface("client"),
      ]);
    }
    assert.deepEqual(e.causes, ["stale-conntrack-backend-removed"], JSON.stringify(e.packet, null, 1));
    const fwd = e.packet.existing.conntrack.find((c) => c.dir === "forward");
    assert.equal(fwd?.backend, null);
    // A random-choice Service cannot move a running TCP flow: the next segment is answered with a reset
    // (a SYN on the same tuple would choose again).
    assert.deepEqual(e.packet.reasons, ["reject_no_conntrack"]);
    assert.equal(e.packet.verdict, "reject");
    assert.equal(e.packet.dropReason, "reject_no_conntrack");
    assert.deepEqual(
      e.model.endpoints.map((x) => [x.address, x.selected]),
      [[A2, true]],
    );
  });
});
