// End to end, masquerade (SNAT) under pressure, on the two-node lab with the real daemon: a Cluster-policy NodePort
// on node-a whose only backend is on node-b, so every flow through node-a is masqueraded to node-a's address.
//  - a SYN flood (10,000 spoofed SYNs from 120 sources that never answer) leaves the NodePort serving: 20 of 20
//    legitimate connections succeed at once;
//  - two UDP clients sharing the backend through a one-port SNAT range with short UDP timeouts: each reply reaches
//    only the client that owns the port at that moment, across the timeout;
//  - the SNAT range is reserved in node-a's ip_local_reserved_ports, so a host process with a widened
//    ip_local_port_range never gets one of its ports, and its replies reach it (never reverse-translated); the
//    reservation is gone after `bpfproxy cleanup`;
//  - the NodePort range is reserved too: a host connection never gets a NodePort as its source port (the
//    backend's SYN-ACK to node:NodePort would be taken for NodePort traffic of no flow and reset).
// Once per family: over IPv6 (docs/ipv6.md) the same Services are IPv6 single-stack on a dual-stack lab, masqueraded to
// node-a's IPv6 address by the IPv6 path's own SNAT (bpf/lib/nat6.h) from the same port range and reservations.
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
import { sendSpoofedTcp } from "../src/lab/spoof.js";
import { parsePortList } from "../src/dataplane/bpf/reserved-ports.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const V4 = {
  NODE_A: "192.0.2.11",
  NODE_B: "192.0.2.12",
  EXT: "198.51.100.10",
  EXT_2: "198.51.100.11",
  WEB_B: "10.244.2.5",
  VIP: "10.96.0.51",
  /** The flood's sources: on ext's network, no host has them (they never answer the SYN-ACK). */
  floodSource: (i: number) => `198.51.100.${100 + i}`,
  extLen: 24,
};
const V6: typeof V4 = {
  NODE_A: "2001:db8::a",
  NODE_B: "2001:db8::b",
  EXT: "2001:db8:100::10",
  EXT_2: "2001:db8:100::11",
  WEB_B: "fd00:10:244:2::5",
  VIP: "fd00:96::51",
  floodSource: (i: number) => `2001:db8:100::${(0x100 + i).toString(16)}`,
  extLen: 64,
};
/** "addr:port", an IPv6 address in brackets. */
const hp = (a: string, port: number | string) => (a.includes(":") ? `[${a}]:${port}` : `${a}:${port}`);
const DEFAULT_RANGE = { min: 1024, max: 29999 };
const NODE_PORTS = { min: 30000, max: 32767 };
const NODE_PORT_TOP = 32766;

function manifests(A: typeof V4): string {
  const { NODE_A, NODE_B, WEB_B } = A;
  const v6 = A === V6;
  return [
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "np-remote", namespace: "default" },
      spec: {
        type: "NodePort",
        clusterIP: A.VIP,
        clusterIPs: [A.VIP],
        ...(v6 ? { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] } : {}),
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30090 },
          { name: "dns", port: 53, targetPort: 5353, protocol: "UDP", nodePort: 30091 },
          // At the top of the NodePort range: the host's ephemeral ports start right above it.
          { name: "top", port: 81, targetPort: 8080, protocol: "TCP", nodePort: NODE_PORT_TOP },
        ],
      },
    },
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: v6 ? "IPv6" : "IPv4",
      metadata: { name: "np-remote-1", namespace: "default", labels: { "kubernetes.io/service-name": "np-remote" } },
      ports: [
        { name: "http", port: 8080, protocol: "TCP" },
        { name: "dns", port: 5353, protocol: "UDP" },
      ],
      endpoints: [
        { addresses: [WEB_B], conditions: { ready: true, serving: true, terminating: false }, nodeName: "node-b" },
      ],
    },
    ...["node-a", "node-b"].map((name, i) => ({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name },
      status: {
        addresses: [
          { type: "InternalIP", address: i === 0 ? V4.NODE_A : V4.NODE_B },
          ...(v6 ? [{ type: "InternalIP", address: i === 0 ? NODE_A : NODE_B }] : []),
        ],
      },
    })),
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

/** Opens up to `n` TCP connections at once to dst and keeps them open: each one's source port, and whether it
 * was answered (or the errno that refused it). */
const HOST_CONNECTS = String.raw`
import errno, json, socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out, keep = [], []
for _ in range(n):
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((dst, port))
        sport = s.getsockname()[1]
        s.sendall(b"q\n")
        out.append({"port": sport, "reply": s.recv(200).decode(errors="replace")})
        keep.append(s)
    except socket.timeout:
        out.append({"port": s.getsockname()[1], "error": "timeout"})
    except OSError as e:
        out.append({"error": errno.errorcode.get(e.errno, str(e.errno))})
print(json.dumps(out))
`;

/** Two UDP sockets on ext (EXT:41000 and EXT_2:41001, unconnected: they receive from anyone) run a schedule of
 * sends and report every datagram each received, with the step it arrived in. */
const UDP_PAIR = String.raw`
import json, select, socket, sys, time
o = json.loads(sys.argv[1])
socks = {}
for name, (addr, port) in o["clients"].items():
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    socks[name] = s
got = {name: [] for name in socks}
def drain(step, secs):
    end = time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        r, _, _ = select.select(list(socks.values()), [], [], left)
        for s in r:
            name = [n for n, x in socks.items() if x is s][0]
            data, peer = s.recvfrom(2048)
            frm = ("[%s]:%d" if ":" in peer[0] else "%s:%d") % peer[:2]
            got[name].append({"step": step, "from": frm, "data": data.decode(errors="replace")})
for i, (who, wait) in enumerate(o["steps"]):
    if who:
        socks[who].sendto(b"q\n", (o["dst"], o["dport"]))
    drain(i, wait)
print(json.dumps(got))
`;

for (const family of [4, 6] as const) {
  const A = family === 4 ? V4 : V6;
  const { NODE_A, EXT, EXT_2, WEB_B } = A;
  const v6 = family === 6;

  describe(`masquerade under pressure (end to end), IPv${family}`, { timeout: 300_000 }, () => {
    let lab: Lab;
    let bpffsA: PrivateBpffs;
    let bpffsB: PrivateBpffs;
    let proxyA: ProxyNode | undefined;
    let proxyB: ProxyNode | undefined;
    let dir: string;

    const startA = async (extra: string[] = []) => {
      proxyA = await ProxyNode.start(lab, "node-a", {
        manifestDir: dir,
        bpffs: bpffsA.path,
        extraArgs: [
          "--healthz-bind-address",
          hp(V4.NODE_A, 10256),
          "--metrics-bind-address",
          "",
          "--xdp",
          "off",
          ...extra,
        ],
      });
      await proxyA.waitForStatus((s) => s.frontends.some((f) => f.port === 30090), 10_000);
    };
    const restartA = async (extra: string[]) => {
      await proxyA?.stop();
      await proxyA?.cleanup();
      proxyA = undefined;
      await startA(extra);
    };
    const reserved = async () =>
      (await lab.run("node-a", ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"])).trim();

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-snat-"));
      writeFileSync(join(dir, "services.yaml"), manifests(A));
      const six = (ip6: string, podCIDR6: string) => (v6 ? { ip6, podCIDR6 } : {});
      lab = await Lab.create({
        prefix: `bpxsn${family}${process.pid}-`,
        nodes: [
          {
            name: "node-a",
            ip: V4.NODE_A,
            podCIDR: "10.244.1.0/24",
            ...six(V6.NODE_A, "fd00:10:244:1::/64"),
            pods: [],
          },
          {
            name: "node-b",
            ip: V4.NODE_B,
            podCIDR: "10.244.2.0/24",
            ...six(V6.NODE_B, "fd00:10:244:2::/64"),
            pods: [{ name: "web-b", ip: V4.WEB_B, ...(v6 ? { ip6: V6.WEB_B } : {}) }],
          },
        ],
        external: { name: "ext", ip: V4.EXT, ...(v6 ? { ip6: V6.EXT } : {}) },
      });
      await lab.run("ext", ["ip", "addr", "add", `${EXT_2}/${A.extLen}`, "dev", "eth0", ...(v6 ? ["nodad"] : [])]);
      await startEchoServer(lab, "web-b", { name: "web-b", tcp: [8080], udp: [5353], ...(v6 ? { bind: "::" } : {}) });
      bpffsA = PrivateBpffs.create("sn-a");
      bpffsB = PrivateBpffs.create("sn-b");
      await startA();
      proxyB = await ProxyNode.start(lab, "node-b", {
        manifestDir: dir,
        bpffs: bpffsB.path,
        extraArgs: ["--healthz-bind-address", hp(V4.NODE_B, 10256), "--metrics-bind-address", "", "--xdp", "off"],
      });
    });

    after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

    test("after 10,000 spoofed SYNs from 120 sources at a masqueraded NodePort, 20 of 20 legitimate connections succeed at once", async () => {
      const warm = await echoRequest(lab, "ext", { tcp: hp(NODE_A, 30090), count: 3, timeoutMs: 3000 });
      assert.deepEqual(
        warm.filter((r) => !r.ok),
        [],
        "the NodePort answers before the flood",
      );
      const before = (await proxyA!.status()).counters;
      // 120 sources on ext's network that never answer the SYN-ACK (no host has them).
      const sources = Array.from({ length: 120 }, (_, i) => A.floodSource(i));
      const sent = await sendSpoofedTcp(lab, "ext", {
        src: sources,
        dst: NODE_A,
        dport: 30090,
        flags: "S",
        count: 10_000,
        ratePps: 5_000,
      });
      assert.equal(sent, 10_000);
      const after = (await proxyA!.status()).counters;
      const newFlows = (after.translated_new?.packets ?? 0) - (before.translated_new?.packets ?? 0);
      assert.ok(newFlows >= 9_000, `the flood reached the NodePort and took SNAT ports: ${newFlows} new flows`);
      const results = await echoRequest(lab, "ext", { tcp: hp(NODE_A, 30090), count: 20, timeoutMs: 3000 });
      const ok = results.filter((r) => r.ok && r.reply?.startsWith("web-b "));
      assert.equal(
        ok.length,
        20,
        `legitimate connections answered right after the flood: ${ok.length}/20; failures: ${JSON.stringify(results.filter((r) => !r.ok).slice(0, 3))}; counters: ${JSON.stringify(after)}`,
      );
    });

    test("two UDP clients share the backend through one SNAT port: each reply reaches only the flow that owns the port, across the UDP timeout", async () => {
      const cfg = join(dir, "short-udp.yaml");
      writeFileSync(
        cfg,
        [
          "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
          "kind: KubeProxyConfiguration",
          "conntrack:",
          "  udpTimeout: 2s",
          "  udpStreamTimeout: 3s",
          "bpfproxy:",
          "  conntrackGCInterval: 1s",
          "  snatPortRange: 20000-20000",
          "",
        ].join("\n"),
      );
      await restartA(["--config", cfg]);
      assert.match(await reserved(), /(^|,)20000(,|$)/, "the one-port range is reserved");
      const plan = {
        clients: { a: [EXT, 41000], b: [EXT_2, 41001] },
        dst: NODE_A,
        dport: 30091,
        // [sender, seconds to listen after]: a owns the port; b finds it taken; after a's stream (3 s) has expired
        // b takes it; a then finds it taken.
        steps: [
          ["a", 1],
          ["b", 1],
          ["", 4.5],
          ["b", 1],
          ["a", 1.5],
        ],
      };
      const r = await lab.exec("ext", ["python3", "-c", UDP_PAIR, JSON.stringify(plan)], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `udp pair: ${r.stderr}`);
      const got = JSON.parse(r.stdout) as Record<"a" | "b", { step: number; from: string; data: string }[]>;
      const where = JSON.stringify(got);
      // The backend sees both flows as node-a:20000; the reply goes to whichever client owns that port now.
      assert.deepEqual(
        got.a.map((x) => x.step),
        [0],
        `client a gets exactly the answer to its first datagram: ${where}`,
      );
      assert.deepEqual(
        got.b.map((x) => x.step),
        [3],
        `client b gets exactly the answer to its datagram after a's flow expired: ${where}`,
      );
      for (const x of [...got.a, ...got.b]) {
        assert.equal(x.from, hp(NODE_A, 30091), `answers come from the NodePort: ${where}`);
        assert.ok(x.data.startsWith(`web-b ${hp(NODE_A, 20000)}`), `masqueraded to the one port: ${where}`);
      }
      const st = await proxyA!.status();
      assert.ok(
        (st.counters.drop_snat_exhausted?.packets ?? 0) >= 2,
        `the two refused datagrams are counted: ${JSON.stringify(st.counters)}`,
      );
      await restartA([]);
    });

    test("the NodePort range is reserved on the node: host connections never take a NodePort as their source port, and all are answered", async () => {
      const list = await reserved();
      assert.ok(
        parsePortList(list).some((r) => r.min <= NODE_PORTS.min && r.max >= NODE_PORTS.max),
        `ip_local_reserved_ports holds the NodePort range: ${JSON.stringify(list)}`,
      );
      // Eight ephemeral ports around the NodePort 32766: four of them are NodePorts.
      await lab.run("node-a", ["sysctl", "-qw", "net.ipv4.ip_local_port_range=32764 32771"]);
      try {
        const res = JSON.parse(
          await lab.run("node-a", ["python3", "-c", HOST_CONNECTS, WEB_B, "8080", "8"], { timeoutMs: 30_000 }),
        ) as {
          port?: number;
          reply?: string;
          error?: string;
        }[];
        const answered = res.filter((r) => r.reply !== undefined);
        assert.deepEqual(
          answered.map((r) => r.port).sort(),
          [32768, 32769, 32770, 32771],
          `only ports above the NodePort range are used, and each connection is answered: ${JSON.stringify(res)}`,
        );
        assert.ok(
          answered.every((r) => r.reply!.startsWith("web-b ")),
          `the backend answered: ${JSON.stringify(answered)}`,
        );
        assert.deepEqual(
          res.filter((r) => r.reply === undefined).map((r) => r.error),
          ["EADDRNOTAVAIL", "EADDRNOTAVAIL", "EADDRNOTAVAIL", "EADDRNOTAVAIL"],
          "the rest find no free port (the NodePorts are not handed out)",
        );
      } finally {
        await lab.run("node-a", ["sysctl", "-qw", "net.ipv4.ip_local_port_range=32768 60999"]);
      }
    });

    test("the SNAT range is reserved on the node: a host process with ip_local_port_range 1024-65535 never gets one of its ports, and its replies reach it", async () => {
      const list = await reserved();
      assert.ok(
        parsePortList(list).some((r) => r.min <= DEFAULT_RANGE.min && r.max >= DEFAULT_RANGE.max),
        `ip_local_reserved_ports holds the SNAT range: ${JSON.stringify(list)}`,
      );
      // Masqueraded flows hold SNAT ports toward the backend meanwhile.
      const ext = await echoRequest(lab, "ext", { tcp: hp(NODE_A, 30090), count: 20, timeoutMs: 3000 });
      assert.equal(ext.filter((x) => x.ok).length, 20, "masqueraded flows work");
      await lab.run("node-a", ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"]);
      // Ephemeral binds pick a random port of the range each time: 900 of them sample it (connect() walks
      // it from a per-destination offset, so a few hundred connections cover only a window of it).
      const bound = await lab.run("node-a", [
        "python3",
        "-c",
        "import socket\nss=[socket.socket() for _ in range(900)]\nfor s in ss: s.bind(('0.0.0.0', 0))\nprint(' '.join(str(s.getsockname()[1]) for s in ss))",
      ]);
      const sample = bound.trim().split(" ").map(Number);
      assert.equal(sample.length, 900);
      const taken = sample.filter((p) => p >= DEFAULT_RANGE.min && p <= DEFAULT_RANGE.max);
      assert.deepEqual(taken.slice(0, 5), [], `${taken.length} of 900 ephemeral ports fell in the SNAT range`);
      const nodePorts = sample.filter((p) => p >= NODE_PORTS.min && p <= NODE_PORTS.max);
      assert.deepEqual(nodePorts.slice(0, 5), [], `${nodePorts.length} of 900 ephemeral ports were NodePorts`);
      assert.ok(
        sample.some((p) => p < 32768 || p > 60999),
        "the widened range is in use (ports outside Linux's default)",
      );
      const host = await echoRequest(lab, "node-a", { tcp: hp(WEB_B, 8080), count: 200, timeoutMs: 3000 });
      const failed = host.filter((x) => !x.ok);
      assert.deepEqual(failed.slice(0, 3), [], `every host connection is answered (${failed.length} failed)`);
      const ports = host.map((x) => Number(/:(\d+)$/.exec(x.reply!.trim().split(" ")[1]!)![1]));
      const inRange = ports.filter((p) => p >= DEFAULT_RANGE.min && p <= NODE_PORTS.max);
      assert.deepEqual(inRange, [], `host connections' source ports (as the backend saw them) avoid both ranges`);
      // cleanup releases the reservation and keeps the other entries.
      await lab.run("node-a", ["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=8080,1024-32767,61000"]);
      await proxyA!.stop();
      await proxyA!.cleanup();
      proxyA = undefined;
      // (8080 lies inside the range and merges with it: it goes too, as docs/conntrack.md says.)
      assert.equal(await reserved(), "61000", "bpfproxy cleanup removed its ranges only");
    });
  });
}
