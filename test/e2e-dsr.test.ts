// End to end, direct server return (docs/dsr.md) on the two-node lab with the real daemons and real sockets: an
// external client reaches NodePorts on node-a whose only backend is on node-b.
//  - lbMode hybrid (--lb-mode): TCP goes by DSR — the backend (the echo server reports its peer) sees the client's
//    own address, the client's connected socket gets its answer from node-a:NodePort, and the answer never passes
//    node-a (node-a reverse-translates nothing and holds no reply-direction conntrack entry of the flow; node-b
//    counts the option it stripped and the reply it translated); UDP is masqueraded (the backend sees node-a);
//  - bpfproxy.io/forwarding-mode overrides the node's mode both ways (dsr for UDP, snat for TCP), an invalid
//    value is logged with the Service's name and counted, and `status` shows the mode per frontend (as render);
//  - a DSR flow from the client port of an earlier masqueraded flow to the same backend is not masqueraded by it;
//  - a LoadBalancer IP and an externalIP annotated dsr (routed to node-a by the external host): the same, TCP and UDP;
//  - MTU: a UDP client sending full-size (1500-byte) datagrams with DF set gets ICMP fragmentation needed with
//    MTU 1492 from node-a:NodePort, its kernel lowers the path MTU and the next datagram is answered; a TCP
//    transfer of full-size segments through DSR completes (only the SYN carries the option);
//  - lbMode snat (the default), the daemons restarted: the same NodePort is masqueraded again and still works.
// The lab's defaults stay as they are (rp_filter loose, veth GRO off); the suite also runs with strict rp_filter.
// Everything runs in namespaces the lab creates.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import * as abi from "../src/dataplane/bpf/abi.js";
import { BpfMap } from "../src/native/index.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const EXT = "198.51.100.10";
const WEB_B = "10.244.2.5";
const LB_IP = "203.0.113.30"; // a LoadBalancer's ingress IP, routed to node-a by ext (the router in front)
const EXTERNAL_IP = "203.0.113.31"; // a Service's externalIP, likewise

/** Services, each with its NodePorts: `annotation` is bpfproxy.io/forwarding-mode (none: the node's lbMode). */
const SERVICES = [
  { name: "np-node", annotation: undefined, tcp: 30090, udp: 30091 },
  { name: "np-dsr", annotation: "dsr", tcp: 30092, udp: 30093 },
  { name: "np-snat", annotation: "snat", tcp: 30094, udp: 30095 },
  { name: "np-bad", annotation: "direct", tcp: 30096, udp: 30097 },
];

function manifests(): string {
  return [
    ...SERVICES.flatMap((s, i) => [
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: {
          name: s.name,
          namespace: "default",
          ...(s.annotation ? { annotations: { "bpfproxy.io/forwarding-mode": s.annotation } } : {}),
        },
        spec: {
          type: "NodePort",
          clusterIP: `10.96.0.${60 + i}`,
          clusterIPs: [`10.96.0.${60 + i}`],
          externalTrafficPolicy: "Cluster",
          ports: [
            { name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: s.tcp },
            { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", nodePort: s.udp },
          ],
        },
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        addressType: "IPv4",
        metadata: { name: `${s.name}-1`, namespace: "default", labels: { "kubernetes.io/service-name": s.name } },
        ports: [
          { name: "http", port: 8080, protocol: "TCP" },
          { name: "dns", port: 5353, protocol: "UDP" },
        ],
        endpoints: [
          { addresses: [WEB_B], conditions: { ready: true, serving: true, terminating: false }, nodeName: "node-b" },
        ],
      },
    ]),
    // The same backend behind a LoadBalancer IP and an externalIP, both annotated dsr.
    ...[
      {
        name: "lb-dsr",
        clusterIP: "10.96.0.70",
        spec: { type: "LoadBalancer", externalTrafficPolicy: "Cluster" },
        nodePorts: [30098, 30099],
        status: { loadBalancer: { ingress: [{ ip: LB_IP, ipMode: "VIP" }] } },
      },
      { name: "eip-dsr", clusterIP: "10.96.0.71", spec: { type: "ClusterIP", externalIPs: [EXTERNAL_IP] } },
    ].flatMap((s) => [
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: s.name, namespace: "default", annotations: { "bpfproxy.io/forwarding-mode": "dsr" } },
        spec: {
          ...s.spec,
          clusterIP: s.clusterIP,
          clusterIPs: [s.clusterIP],
          ports: [
            {
              name: "http",
              port: 80,
              targetPort: 8080,
              protocol: "TCP",
              ...(s.nodePorts ? { nodePort: s.nodePorts[0] } : {}),
            },
            {
              name: "dns",
              port: 53,
              targetPort: 5353,
              protocol: "UDP",
              ...(s.nodePorts ? { nodePort: s.nodePorts[1] } : {}),
            },
          ],
        },
        ...(s.status ? { status: s.status } : {}),
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        addressType: "IPv4",
        metadata: { name: `${s.name}-1`, namespace: "default", labels: { "kubernetes.io/service-name": s.name } },
        ports: [
          { name: "http", port: 8080, protocol: "TCP" },
          { name: "dns", port: 5353, protocol: "UDP" },
        ],
        endpoints: [
          { addresses: [WEB_B], conditions: { ready: true, serving: true, terminating: false }, nodeName: "node-b" },
        ],
      },
    ]),
    ...["node-a", "node-b"].map((name, i) => ({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name },
      status: { addresses: [{ type: "InternalIP", address: i === 0 ? NODE_A : NODE_B }] },
    })),
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

/** One UDP socket with DF on every datagram (IP_PMTUDISC_DO), connected to dst:port: sends a full-size datagram,
 * and on EMSGSIZE (the ICMP error, then the kernel's lowered path MTU) sends one that fits the MTU it reports. */
const UDP_DF = String.raw`
import errno, json, socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.connect((dst, port))
s.settimeout(1.0)
size, out = 1472, []
for _ in range(8):
    try:
        s.send(b"x" * (size - 1) + b"\n")
        data, peer = s.recvfrom(4096)
        out.append({"size": size, "reply": len(data), "from": "%s:%d" % peer, "head": data[:60].decode(errors="replace")})
        break
    except socket.timeout:
        out.append({"size": size, "error": "timeout"})
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        mtu = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
        out.append({"size": size, "error": name, "mtu": mtu})
        if name == "EMSGSIZE":
            size = mtu - 28
print(json.dumps(out))
`;

/** "web-b 1.2.3.4:5678..." → the peer the backend saw (its address). */
function peerSeen(reply: string | undefined): string {
  const m = /^web-b (\d+\.\d+\.\d+\.\d+):\d+/.exec(reply ?? "");
  assert.ok(m, `an echo answer naming its peer: ${JSON.stringify(reply?.slice(0, 80))}`);
  return m[1]!;
}

for (const rpFilter of [2, 1] as const) {
  describe(`direct server return (end to end), rp_filter ${rpFilter}`, { timeout: 300_000 }, () => {
    let lab: Lab;
    let bpffsA: PrivateBpffs;
    let bpffsB: PrivateBpffs;
    let proxyA: ProxyNode | undefined;
    let proxyB: ProxyNode | undefined;
    let dir: string;

    const start = async (node: "node-a" | "node-b", mode: string[]) => {
      const ip = node === "node-a" ? NODE_A : NODE_B;
      const p = await ProxyNode.start(lab, node, {
        manifestDir: dir,
        bpffs: (node === "node-a" ? bpffsA : bpffsB).path,
        extraArgs: [
          "--healthz-bind-address",
          `${ip}:10256`,
          "--metrics-bind-address",
          "127.0.0.1:10249",
          "--xdp",
          "off",
          ...mode,
        ],
      });
      await p.waitForStatus((s) => s.frontends.some((f) => f.port === 30097), 10_000);
      return p;
    };
    const startBoth = async (mode: string[]) => {
      proxyA = await start("node-a", mode);
      proxyB = await start("node-b", mode);
    };
    const stopBoth = async () => {
      for (const p of [proxyA, proxyB]) {
        await p?.stop();
        await p?.cleanup();
      }
      proxyA = proxyB = undefined;
    };
    const counters = async (p: ProxyNode) => {
      const c = (await p.status()).counters;
      return (name: string) => c[name]?.packets ?? 0;
    };
    /** node-a's conntrack entries (keys and values) from its pinned map. */
    const conntrackA = () => {
      const m = BpfMap.openPinned(join(bpffsA.path, abi.MAP_NAMES.conntrack), { readOnly: true });
      try {
        const { keys, values, count } = m.entries();
        const vs = values.length / Math.max(count, 1);
        return Array.from({ length: count }, (_, i) => ({
          k: abi.ctKey.decode(keys, i * abi.ctKey.size),
          v: abi.ctEntry.decode(values.subarray(i * vs, (i + 1) * vs)),
        }));
      } finally {
        m.close();
      }
    };
    const metricA = async (name: string): Promise<number> => {
      const text = await lab.run("node-a", [
        process.execPath,
        "-e",
        `fetch("http://127.0.0.1:10249/metrics").then(async (r) => console.log(await r.text()), (e) => { console.error(String(e)); process.exit(1); })`,
      ]);
      const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
      assert.ok(m, `metric ${name} in node-a's /metrics`);
      return Number(m[1]);
    };
    const tcp = (port: number, payload?: string) =>
      echoRequest(lab, "ext", { tcp: `${NODE_A}:${port}`, count: 3, timeoutMs: 3000, ...(payload ? { payload } : {}) });
    const udp = (port: number) => echoRequest(lab, "ext", { udp: `${NODE_A}:${port}`, count: 3, timeoutMs: 3000 });
    const seen = (results: { ok: boolean; reply?: string; error?: string }[], what: string): string[] => {
      assert.deepEqual(
        results.filter((r) => !r.ok),
        [],
        `${what}: every attempt answered (a connected socket takes answers from ${NODE_A}:NodePort only)`,
      );
      return [...new Set(results.map((r) => peerSeen(r.reply)))];
    };

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-dsr-"));
      writeFileSync(join(dir, "services.yaml"), manifests());
      lab = await Lab.create({
        prefix: `bpxdsr${rpFilter}${process.pid}-`,
        rpFilter,
        nodes: [
          { name: "node-a", ip: NODE_A, podCIDR: "10.244.1.0/24", pods: [] },
          { name: "node-b", ip: NODE_B, podCIDR: "10.244.2.0/24", pods: [{ name: "web-b", ip: WEB_B }] },
        ],
        external: { name: "ext", ip: EXT },
      });
      await startEchoServer(lab, "web-b", { name: "web-b", tcp: [8080], udp: [5353] });
      // The router in front of the cluster: LoadBalancer and external IPs go to node-a.
      await lab.run("ext", ["ip", "route", "add", "203.0.113.0/24", "via", NODE_A]);
      bpffsA = PrivateBpffs.create(`dsr${rpFilter}-a`);
      bpffsB = PrivateBpffs.create(`dsr${rpFilter}-b`);
      await startBoth(["--lb-mode", "hybrid"]);
    });

    after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

    test("hybrid: TCP by DSR — the backend sees the client, the answer comes from node-a:NodePort and never passes node-a", async () => {
      const a0 = await counters(proxyA!);
      const b0 = await counters(proxyB!);
      assert.deepEqual(seen(await tcp(30090), "TCP 30090"), [EXT], "the backend saw the client's own address");
      const a1 = await counters(proxyA!);
      const b1 = await counters(proxyB!);
      assert.equal(a1("dsr_option_sent") - a0("dsr_option_sent"), 3, "node-a sent each SYN with the option");
      assert.equal(a1("reverse_translated"), a0("reverse_translated"), "node-a translated no answer: none passed it");
      assert.equal(b1("dsr_received") - b0("dsr_received"), 3, "node-b stripped each option");
      assert.ok(b1("reverse_translated") - b0("reverse_translated") >= 6, "node-b gave the answers node-a's address");
      // node-a tracks the flows in the forward direction only, marked DSR.
      const ct = conntrackA().filter((e) => e.k.proto === abi.IPPROTO_TCP && (e.k.saddr === EXT || e.k.daddr === EXT));
      assert.ok(
        ct.some((e) => e.k.dir === abi.CT_DIR_FORWARD && e.k.dport === 30090 && (e.v.xflags ?? 0) & abi.CT_X_DSR),
        "node-a has the flows' forward entries",
      );
      assert.deepEqual(
        ct.filter((e) => e.k.dir === abi.CT_DIR_REPLY),
        [],
        "node-a has no reply-direction entry of them",
      );
    });

    test("hybrid: UDP masqueraded — the backend sees node-a", async () => {
      assert.deepEqual(seen(await udp(30091), "UDP 30091"), [NODE_A]);
    });

    test("the annotation overrides the node's mode both ways; status shows the mode per frontend", async () => {
      assert.deepEqual(seen(await udp(30093), "UDP 30093 (dsr)"), [EXT], "dsr: UDP by DSR too");
      assert.deepEqual(seen(await tcp(30092), "TCP 30092 (dsr)"), [EXT]);
      assert.deepEqual(seen(await tcp(30094), "TCP 30094 (snat)"), [NODE_A], "snat: TCP masqueraded");
      const modes = new Map(
        (await proxyA!.status()).frontends
          .filter((f) => f.type === "NodePort")
          .map((f) => [`${f.port}/${f.protocol}`, f.forwardingMode]),
      );
      assert.deepEqual(
        [30090, 30091, 30092, 30093, 30094, 30095, 30096, 30097].map((p) => modes.get(`${p}/${p % 2 ? "UDP" : "TCP"}`)),
        ["hybrid", "hybrid", "dsr", "dsr", undefined, undefined, "hybrid", "hybrid"],
      );
      assert.match(await proxyA!.statusTable(), /NodePort\s+192\.0\.2\.11:30092\/TCP\s+external\s+dsr\s/);
    });

    test("a LoadBalancer IP and an externalIP by DSR: the backend sees the client, the answer comes from the frontend and never passes node-a", async () => {
      for (const [what, ip] of [
        ["LoadBalancer", LB_IP],
        ["externalIP", EXTERNAL_IP],
      ] as const) {
        const a0 = await counters(proxyA!);
        const b0 = await counters(proxyB!);
        const viaTcp = await echoRequest(lab, "ext", { tcp: `${ip}:80`, count: 3, timeoutMs: 3000 });
        const viaUdp = await echoRequest(lab, "ext", { udp: `${ip}:53`, count: 3, timeoutMs: 3000 });
        // Connected sockets: an answer from any other source than ip:port would not reach them.
        assert.deepEqual(seen(viaTcp, `${what} TCP ${ip}:80`), [EXT], `${what}: the backend saw the client (TCP)`);
        assert.deepEqual(seen(viaUdp, `${what} UDP ${ip}:53`), [EXT], `${what}: the backend saw the client (UDP)`);
        const a1 = await counters(proxyA!);
        const b1 = await counters(proxyB!);
        // 3 SYNs and at least 3 datagrams (a client may repeat one) carried the option.
        assert.ok(a1("dsr_option_sent") - a0("dsr_option_sent") >= 6, `${what}: node-a sent the option`);
        assert.equal(a1("reverse_translated"), a0("reverse_translated"), `${what}: no answer passed node-a`);
        assert.ok(b1("dsr_received") - b0("dsr_received") >= 6, `${what}: node-b stripped the options`);
        const modes = (await proxyA!.status()).frontends
          .filter((f) => f.address === ip)
          .map((f) => `${f.port}/${f.protocol} ${f.forwardingMode}`)
          .sort();
        assert.deepEqual(modes, ["53/UDP dsr", "80/TCP dsr"], `${what}: status shows the mode`);
      }
    });

    test("a DSR flow from the client address and port of an earlier masqueraded flow to the same backend keeps the client's source", async () => {
      // node-a keeps the masqueraded flow's NAT entries until they expire; the DSR flow's packets must not be
      // masqueraded by them at node-a's egress (the backend would answer the old SNAT port: no answer at all).
      const sport = 41000 + rpFilter * 10;
      const viaSnat = await echoRequest(lab, "ext", {
        tcp: `${NODE_A}:30094`,
        count: 2,
        timeoutMs: 3000,
        sportBase: sport,
      });
      assert.deepEqual(seen(viaSnat, "TCP 30094 (snat)"), [NODE_A]);
      const viaDsr = await echoRequest(lab, "ext", {
        tcp: `${NODE_A}:30092`,
        count: 2,
        timeoutMs: 3000,
        sportBase: sport,
      });
      assert.deepEqual(seen(viaDsr, "TCP 30092 (dsr), the same client ports"), [EXT]);
    });

    test("an invalid annotation is logged with the Service's name and counted; the node's mode applies", async () => {
      await proxyA!.waitForLog(/invalid bpfproxy\.io\/forwarding-mode "direct".*default\/np-bad/);
      assert.equal(await metricA("bpfproxy_forwarding_mode_invalid"), 1);
      assert.deepEqual(seen(await tcp(30096), "TCP 30096 (hybrid)"), [EXT]);
      assert.deepEqual(seen(await udp(30097), "UDP 30097 (hybrid)"), [NODE_A]);
    });

    test("MTU: full-size DF datagrams get fragmentation needed (MTU 1492) from node-a and the next one is answered", async () => {
      const before = await counters(proxyA!);
      const out = JSON.parse(await lab.run("ext", ["python3", "-c", UDP_DF, NODE_A, "30093"])) as {
        size: number;
        error?: string;
        mtu?: number;
        reply?: number;
        from?: string;
        head?: string;
      }[];
      const last = out[out.length - 1]!;
      assert.equal(out[0]!.size, 1472, JSON.stringify(out));
      assert.ok(
        out.some((o) => o.error === "EMSGSIZE" && o.mtu === 1492),
        `the client learnt MTU 1492: ${JSON.stringify(out)}`,
      );
      assert.equal(last.size, 1464, JSON.stringify(out));
      assert.equal(last.reply, 1464, "answered in full");
      assert.equal(last.from, `${NODE_A}:30093`);
      assert.equal(peerSeen(last.head), EXT);
      const after = await counters(proxyA!);
      assert.ok(after("dsr_frag_needed") - before("dsr_frag_needed") >= 1, "node-a counted the ICMP it sent");
      // TCP: full-size segments carry no option (only the SYN does): a 4000-byte exchange completes.
      const big = await tcp(30092, "y".repeat(4000));
      assert.deepEqual(seen(big, "TCP 30092, 4000 bytes"), [EXT]);
      for (const r of big) assert.equal(r.reply!.length, 4000);
    });

    test("lbMode snat (the default): with the daemons restarted, the same NodePorts are masqueraded again", async () => {
      await stopBoth();
      await startBoth([]);
      assert.deepEqual(seen(await tcp(30090), "TCP 30090 (snat)"), [NODE_A]);
      assert.deepEqual(seen(await udp(30091), "UDP 30091 (snat)"), [NODE_A]);
      // The annotation still wins.
      assert.deepEqual(seen(await tcp(30092), "TCP 30092 (dsr)"), [EXT]);
      const a = await counters(proxyA!);
      assert.ok(a("reverse_translated") > 0, "node-a translated the masqueraded answers");
    });
  });
}
