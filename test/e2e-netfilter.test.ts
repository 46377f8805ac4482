// End to end: netfilter's FORWARD chain and rp_filter apply to Service traffic by default, as after kube-proxy's
// DNAT (bpf/lib/fib.h), and --bypass-netfilter skips them. A node's `iptables -I FORWARD -d POD -j DROP` (what
// Calico's iptables mode and kube-router do for NetworkPolicy) must stop ClusterIP and NodePort traffic to that pod
// by default, and only by default. rp_filter is set as production ships it (RHEL 1, Debian 2) in every namespace,
// so a translated packet that enters the stack with a node's own address as its source (a martian) is dropped
// the way a real node drops it. Everything is made in namespaces the lab owns and removed after.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, prepareLabForXdp, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode, teardownLab } from "../src/lab/proxy.js";
import type { AttemptResult } from "../src/lab/echo.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A = "192.0.2.11";
const NODE_B = "192.0.2.12";
const EXT = "198.51.100.10";
const POD = { webA: "10.244.1.5", client: "10.244.1.20", webB: "10.244.2.5" };
const VIP_A = "10.96.0.10"; // ClusterIP, backend web-a (node-a)
const VIP_B = "10.96.0.11"; // ClusterIP, backend web-b (node-b)
const NP_A = 30080; // NodePort (Cluster policy: masqueraded), backend web-a
const NP_A_LOCAL = 30081; // NodePort with externalTrafficPolicy Local (client address kept), backend web-a

function manifests(): string {
  const svc = (name: string, ip: string, spec: Record<string, unknown>) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: {
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP", ...(spec.np ? { nodePort: spec.np } : {}) },
        {
          name: "dns",
          port: 53,
          targetPort: 5353,
          protocol: "UDP",
          ...(spec.np ? { nodePort: (spec.np as number) + 100 } : {}),
        },
      ],
      type: spec.np ? "NodePort" : "ClusterIP",
      ...(spec.local ? { externalTrafficPolicy: "Local", healthCheckNodePort: 32001 } : {}),
    },
  });
  const slice = (svcName: string, ip: string, node: string) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: { name: `${svcName}-1`, namespace: "default", labels: { "kubernetes.io/service-name": svcName } },
    ports: [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "dns", port: 5353, protocol: "UDP" },
    ],
    endpoints: [{ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: node }],
  });
  const node = (name: string, ip: string) => ({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name },
    status: { addresses: [{ type: "InternalIP", address: ip }] },
  });
  return [
    svc("web-a", VIP_A, {}),
    slice("web-a", POD.webA, "node-a"),
    svc("web-b", VIP_B, {}),
    slice("web-b", POD.webB, "node-b"),
    svc("np-a", "10.96.0.20", { np: NP_A }),
    slice("np-a", POD.webA, "node-a"),
    svc("np-a-local", "10.96.0.21", { np: NP_A_LOCAL, local: true }),
    slice("np-a-local", POD.webA, "node-a"),
    node("node-a", NODE_A),
    node("node-b", NODE_B),
  ]
    .map((d) => YAML.stringify(d))
    .join("---\n");
}

/** Replies are "<backend name> <peer ip>:<peer port>": the names answered, the peers the backends saw. */
function tally(results: AttemptResult[]): { ok: number; names: Set<string>; peers: Set<string>; errors: string[] } {
  const names = new Set<string>();
  const peers = new Set<string>();
  const errors: string[] = [];
  let ok = 0;
  for (const r of results) {
    if (!r.ok || !r.reply) {
      errors.push(r.error ?? "no reply");
      continue;
    }
    ok++;
    const [name, peer] = r.reply.trim().split(" ");
    names.add(name!);
    peers.add(peer!.split(":")[0]!);
  }
  return { ok, names, peers, errors };
}

/** The flows each case sends: who asks, where to, which backend answers and what source it must see. */
const CASES = [
  { what: "ClusterIP from a pod (TCP)", ns: "client", tcp: `${VIP_A}:80`, peer: POD.client },
  { what: "ClusterIP from a pod (UDP)", ns: "client", udp: `${VIP_A}:53`, peer: POD.client },
  { what: "NodePort on node-a, Cluster policy (TCP)", ns: "ext", tcp: `${NODE_A}:${NP_A}`, peer: NODE_A },
  { what: "NodePort on node-a, Cluster policy (UDP)", ns: "ext", udp: `${NODE_A}:${NP_A + 100}`, peer: NODE_A },
  { what: "NodePort on node-a, Local policy (TCP)", ns: "ext", tcp: `${NODE_A}:${NP_A_LOCAL}`, peer: EXT },
  { what: "NodePort on node-a, Local policy (UDP)", ns: "ext", udp: `${NODE_A}:${NP_A_LOCAL + 100}`, peer: EXT },
  // Translated on node-b (masqueraded to node-b's address), forwarded by node-a as plain pod traffic.
  { what: "NodePort on node-b to web-a (TCP)", ns: "ext", tcp: `${NODE_B}:${NP_A}`, peer: NODE_B },
] as const;

type Case = (typeof CASES)[number];

/** `parallel`: all attempts at once, for attempts expected to be dropped (each waits out its whole timeout). */
const send = (lab: Lab, c: Case, count: number, timeoutMs = 2000, parallel = false) =>
  echoRequest(lab, c.ns, {
    ...("tcp" in c ? { tcp: c.tcp } : { udp: c.udp }),
    count,
    timeoutMs,
    parallel,
  });

/** Whether an `iptables -S` line is the rule given as `iptables -I FORWARD` arguments (same options, any order
 * of its printed form's extra `-m tcp`). */
function sameRule(line: string, rule: string[]): boolean {
  const printed = line
    .replace(/ -c \d+ \d+/, "")
    .replace(/ -m tcp/, "")
    .split(/\s+/)
    .slice(2);
  const norm = (a: string[]) => a.map((x) => (/^\d+\.\d+\.\d+\.\d+$/.test(x) ? `${x}/32` : x)).join(" ");
  return norm(printed) === norm(rule);
}

/** The packets the FORWARD rule `-d web-a -j DROP` matched so far on node-a. */
async function dropRulePackets(lab: Lab): Promise<number> {
  const out = await lab.run("node-a", ["iptables", "-L", "FORWARD", "-v", "-n", "-x"]);
  const line = out.split("\n").find((l) => /\bDROP\b/.test(l) && l.includes(POD.webA));
  assert.ok(line, `no DROP rule for ${POD.webA} in node-a's FORWARD chain:\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

for (const mode of [
  { bypass: false, rpFilter: 1, xdp: "off" },
  { bypass: false, rpFilter: 2, xdp: "off" },
  // Native XDP in front (the wire's veths take XDP frames, the pods' are as CNIs leave them): by default it must
  // pass every Service packet to tc, or the FORWARD rule would be skipped.
  { bypass: false, rpFilter: 1, xdp: "native" },
  { bypass: true, rpFilter: 1, xdp: "off" },
] as const)
  describe(
    `netfilter FORWARD and Service traffic (${mode.bypass ? "--bypass-netfilter" : "default"}, rp_filter=${mode.rpFilter}, xdp ${mode.xdp})`,
    { timeout: 300_000 },
    () => {
      let lab: Lab;
      let bpffsA: PrivateBpffs;
      let bpffsB: PrivateBpffs;
      let proxyA: ProxyNode | undefined;
      let proxyB: ProxyNode | undefined;
      let dir: string;

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), "bpfproxy-nf-"));
        writeFileSync(join(dir, "services.yaml"), manifests());
        lab = await Lab.create({
          prefix: `bpxnf${process.pid}${mode.bypass ? "b" : "d"}${mode.rpFilter}${mode.xdp[0]}-`,
          nodes: [
            {
              name: "node-a",
              ip: NODE_A,
              podCIDR: "10.244.1.0/24",
              pods: [
                { name: "web-a", ip: POD.webA },
                { name: "client", ip: POD.client },
              ],
            },
            { name: "node-b", ip: NODE_B, podCIDR: "10.244.2.0/24", pods: [{ name: "web-b", ip: POD.webB }] },
          ],
          external: { name: "ext", ip: EXT },
        });
        if (mode.xdp !== "off") await prepareLabForXdp(lab, { pods: false });
        // Production's reverse-path filter (the lab's default is 0): `all` raises every interface to it.
        for (const ns of ["node-a", "node-b", "ext", "web-a", "client", "web-b"]) {
          const v = String(mode.rpFilter);
          await lab.run(ns, [
            "sysctl",
            "-q",
            "-w",
            `net.ipv4.conf.all.rp_filter=${v}`,
            `net.ipv4.conf.default.rp_filter=${v}`,
          ]);
          assert.equal((await lab.run(ns, ["sysctl", "-n", "net.ipv4.conf.all.rp_filter"])).trim(), v);
        }
        for (const pod of ["web-a", "web-b"]) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
        bpffsA = PrivateBpffs.create("nf-a");
        bpffsB = PrivateBpffs.create("nf-b");
        const args = (nodeIP: string) => [
          "--healthz-bind-address",
          `${nodeIP}:10256`,
          "--metrics-bind-address",
          "",
          "--xdp",
          mode.xdp,
          ...(mode.bypass ? ["--bypass-netfilter"] : []),
        ];
        proxyA = await ProxyNode.start(lab, "node-a", {
          manifestDir: dir,
          bpffs: bpffsA.path,
          extraArgs: args(NODE_A),
        });
        proxyB = await ProxyNode.start(lab, "node-b", {
          manifestDir: dir,
          bpffs: bpffsB.path,
          extraArgs: args(NODE_B),
        });
        for (const p of [proxyA, proxyB])
          await p.waitForStatus((s) => s.frontends.some((f) => f.service === "default/np-a-local"), 10_000);
      });

      after(() => teardownLab({ proxies: [proxyA, proxyB], lab, bpffs: [bpffsA, bpffsB], dirs: [dir] }));

      test("without a FORWARD rule every Service flow is answered, and the backend sees the expected source", async () => {
        if (mode.xdp !== "off") {
          for (const node of ["node-a", "node-b"]) {
            const link = await lab.run(node, ["ip", "-d", "link", "show", "dev", "eth0"]);
            const logs = (node === "node-a" ? proxyA : proxyB)!.logs.split("\n").filter((l) => /xdp/i.test(l));
            assert.match(link, /\bxdp\b/, `${node}: native XDP on eth0: ${link}\n${logs.join("\n")}`);
            assert.doesNotMatch(link, /xdpgeneric/, link);
          }
        }
        for (const c of CASES) {
          const t = tally(await send(lab, c, 10));
          assert.equal(t.ok, 10, `${c.what}: ${t.ok} of 10 answered (${t.errors.join(", ")})`);
          assert.deepEqual([...t.names], ["web-a"], c.what);
          assert.deepEqual([...t.peers], [c.peer], c.what);
        }
        const remote = tally(await echoRequest(lab, "client", { tcp: `${VIP_B}:80`, count: 10 }));
        assert.equal(remote.ok, 10, `ClusterIP to node-b's pod: ${remote.errors.join(", ")}`);
      });

      test(`iptables -I FORWARD -d web-a -j DROP on node-a ${mode.bypass ? "is bypassed by Service traffic translated on node-a" : "stops ClusterIP and NodePort traffic to web-a"}`, async () => {
        await lab.run("node-a", ["iptables", "-I", "FORWARD", "-d", POD.webA, "-j", "DROP"]);
        try {
          for (const c of CASES) {
            // node-b translated this flow; node-a only forwards pod traffic, which FORWARD sees in both modes.
            const dropped = !mode.bypass || c.what.includes("node-b");
            const before = await dropRulePackets(lab);
            // A dropped attempt waits out its whole 1.5 s: the three run at once (an answer through the rule would
            // come within milliseconds).
            const t = tally(await send(lab, c, 3, 1500, dropped));
            const matched = (await dropRulePackets(lab)) - before;
            if (dropped) {
              assert.equal(t.ok, 0, `${c.what}: ${t.ok} of 3 answered through the FORWARD DROP rule`);
              assert.ok(matched >= 3, `${c.what}: the DROP rule matched ${matched} packets, expected every attempt`);
            } else {
              assert.equal(
                t.ok,
                3,
                `${c.what}: ${t.ok} of 3 answered with the stack bypassed (${t.errors.join(", ")})`,
              );
              assert.equal(matched, 0, `${c.what}: the DROP rule matched ${matched} packets although bypassed`);
            }
          }
          // The rule names one pod: Service traffic to another still flows.
          const remote = tally(await echoRequest(lab, "client", { tcp: `${VIP_B}:80`, count: 5 }));
          assert.equal(remote.ok, 5, `ClusterIP to node-b's pod with the rule in place: ${remote.errors.join(", ")}`);
        } finally {
          await lab.run("node-a", ["iptables", "-D", "FORWARD", "-d", POD.webA, "-j", "DROP"]);
        }
        // And once it is gone, web-a answers again.
        const t = tally(await send(lab, CASES[0], 3));
        assert.equal(t.ok, 3, `after removing the rule: ${t.errors.join(", ")}`);
      });

      // The translated mark (bpfproxy.translatedMarkBit, default 12): tc ingress sets it on a packet it translated
      // completely so tc egress skips it. On the stack path it must reach netfilter FORWARD on that packet and on no
      // other: a reply and a masqueraded flow's packet carry no mark and get egress's full treatment (the client
      // sees the frontend, the backend sees the node's address), as the tally's peers check.
      if (!mode.bypass && mode.xdp === "off" && mode.rpFilter === 1)
        test("the translated mark bit reaches FORWARD on a translated ClusterIP packet only; replies and masqueraded flows carry none", async () => {
          const MARK = "0x1000/0x1000";
          // Counting rules (no target): each only counts the packets it matches.
          const rules = {
            clusterIpMarked: [
              "-s",
              POD.client,
              "-d",
              POD.webA,
              "-p",
              "tcp",
              "--dport",
              "8080",
              "-m",
              "mark",
              "--mark",
              MARK,
            ],
            repliesMarked: ["-s", POD.webA, "-m", "mark", "--mark", MARK],
            nodePortMarked: ["-s", EXT, "-d", POD.webA, "-m", "mark", "--mark", MARK],
            nodePortAll: ["-s", EXT, "-d", POD.webA],
          };
          // Its packet counter, from `iptables -S -v` (`... -c PACKETS BYTES`).
          const count = async (rule: string[]) => {
            const save = await lab.run("node-a", ["iptables", "-S", "FORWARD", "-v"]);
            const line = save.split("\n").find((l) => l.startsWith("-A FORWARD") && sameRule(l, rule));
            assert.ok(line, `rule ${rule.join(" ")} not found in:\n${save}`);
            return Number(/ -c (\d+) \d+/.exec(line)![1]);
          };
          for (const r of Object.values(rules)) await lab.run("node-a", ["iptables", "-I", "FORWARD", ...r]);
          try {
            const ci = tally(await send(lab, CASES[0], 5));
            assert.equal(ci.ok, 5, `ClusterIP: ${ci.errors.join(", ")}`);
            assert.deepEqual([...ci.peers], [POD.client]);
            const np = tally(await send(lab, CASES[2], 5));
            assert.equal(np.ok, 5, `NodePort: ${np.errors.join(", ")}`);
            assert.deepEqual([...np.peers], [NODE_A], "the NodePort flow is masqueraded at egress");
            const seen = {
              clusterIpMarked: await count(rules.clusterIpMarked),
              repliesMarked: await count(rules.repliesMarked),
              nodePortMarked: await count(rules.nodePortMarked),
              nodePortAll: await count(rules.nodePortAll),
            };
            const what = `FORWARD counters ${JSON.stringify(seen)}:\n${await lab.run("node-a", ["iptables", "-S", "FORWARD", "-v"])}`;
            // Every ClusterIP exchange sends at least SYN, ACK, data, FIN from the client.
            assert.ok(seen.clusterIpMarked >= 5 * 3, `translated ClusterIP packets carry the mark in FORWARD; ${what}`);
            assert.equal(seen.repliesMarked, 0, `a backend's reply carries no mark; ${what}`);
            assert.ok(seen.nodePortAll >= 5 * 3, `the NodePort flow's packets cross FORWARD; ${what}`);
            assert.equal(seen.nodePortMarked, 0, `a flow left to egress to masquerade carries no mark; ${what}`);
          } finally {
            for (const r of Object.values(rules))
              await lab.run("node-a", ["iptables", "-D", "FORWARD", ...r]).catch(() => undefined);
          }
        });
    },
  );
