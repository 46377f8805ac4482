// End to end: kube-proxy's detectLocalMode InterfaceNamePrefix, BridgeInterface and NodeCIDR. Traffic to a ClusterIP
// that enters through a local interface (a pod veth with the prefix; the pod bridge) keeps the pod's address;
// the same ClusterIP reached from outside the node is masqueraded to the node. The bridge pod is wired the
// way a bridge CNI does it (a veth enslaved to the bridge, the bridge carrying the pods' gateway). Real daemon
// in private namespaces; everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoCommand, echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import type { AttemptResult } from "../src/lab/echo.js";
import { DNS, HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_A = "192.0.2.11";
const EXT = "198.51.100.10";
const VIP = "10.96.0.60";
const POD = { web: "10.244.1.5", client: "10.244.1.20" };
const BRIDGE_GW = "10.244.3.1";
const BRIDGE_POD = "10.244.3.10";
const IN_NODE_CIDR = "10.244.1.99";
const OTHER_POD_RANGE = "10.244.5.5";

function manifests(): string {
  return manifest([
    service("web", VIP, [HTTP, DNS]),
    endpointSlice("web", [HTTP, DNS], [{ ip: POD.web, node: "node-a" }]),
    node("node-a", NODE_A, ["10.244.1.0/24"]),
  ]);
}

function sh(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("sh", ["-ec", script], { timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** The peer addresses the backend saw ("web <peer ip>"), failures included as "error:<code>". */
function peers(results: AttemptResult[]): string[] {
  return [
    ...new Set(
      results.map((r) => (r.ok && r.reply ? r.reply.trim().split(" ")[1]!.split(":")[0]! : `error:${r.error}`)),
    ),
  ].sort();
}

describe("detectLocalMode InterfaceNamePrefix, BridgeInterface and NodeCIDR", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let bridgePod = "";

  /** echo request from the bridge pod (a namespace this test made itself, outside the lab). */
  async function fromBridgePod(
    proto: "tcp" | "udp",
    target: string,
    count = 10,
    timeoutMs = 3000,
  ): Promise<AttemptResult[]> {
    const cmd = [
      "ip",
      "netns",
      "exec",
      bridgePod,
      ...echoCommand(),
      "request",
      `--${proto}`,
      target,
      "--count",
      String(count),
      "--timeout-ms",
      String(timeoutMs),
    ];
    const out = await sh(cmd.map((c) => `'${c}'`).join(" "));
    return (JSON.parse(out) as { results: AttemptResult[] }).results;
  }

  async function startWith(config: string): Promise<void> {
    if (proxy) {
      await proxy.stop();
      proxy = undefined;
    }
    const file = join(dir, "config.yaml");
    writeFileSync(file, `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${config}`);
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      clusterCIDRs: [],
      extraArgs: ["--config", file, "--healthz-bind-address", "", "--metrics-bind-address", ""],
    });
    const deadline = Date.now() + 15_000;
    while (!proxy.logs.includes("bpfproxy running")) {
      assert.ok(Date.now() < deadline, `daemon did not start:\n${proxy.logs}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 1), 10_000);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-detectlocal-"));
    const manifestsDir = dir;
    writeFileSync(join(manifestsDir, "services.yaml"), manifests());
    lab = await Lab.create({
      prefix: `bpxdl${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_A,
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web", ip: POD.web },
            { name: "client", ip: POD.client },
          ],
        },
      ],
      external: { name: "ext", ip: EXT },
    });
    await lab.run("ext", ["ip", "route", "add", "10.96.0.0/16", "via", NODE_A]);
    await startEchoServer(lab, "web", { name: "web", tcp: [8080], udp: [5353] });
    // A pod behind a Linux bridge on node-a, as a bridge CNI wires it.
    bridgePod = `bpxdl${process.pid}-bpod`;
    const node = lab.nsName("node-a");
    await sh(`
      ip netns add ${bridgePod}
      ip -n ${node} link add cbr0 type bridge
      ip -n ${node} addr add ${BRIDGE_GW}/24 dev cbr0
      ip -n ${node} link set cbr0 up
      ip -n ${node} link add vethbpod type veth peer name eth0 netns ${bridgePod}
      ip -n ${node} link set vethbpod master cbr0
      ip -n ${node} link set vethbpod up
      ip -n ${bridgePod} link set lo up
      ip -n ${bridgePod} addr add ${BRIDGE_POD}/24 dev eth0
      ip -n ${bridgePod} link set eth0 up
      ip -n ${bridgePod} route add default via ${BRIDGE_GW}
    `);
    bpffs = PrivateBpffs.create("detectlocal-a");
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    if (bridgePod)
      await sh(`ip netns pids ${bridgePod} | xargs -r kill -9; ip netns del ${bridgePod}`).catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("InterfaceNamePrefix: from a pod veth with the prefix the pod's address is kept; from outside masqueraded", async () => {
    await startWith("detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: lxc\n");
    for (const [proto, target] of [
      ["tcp", `${VIP}:80`],
      ["udp", `${VIP}:53`],
    ] as const) {
      assert.deepEqual(
        peers(await echoRequest(lab, "client", { [proto]: target, count: 10, timeoutMs: 3000 })),
        [POD.client],
        proto,
      );
      assert.deepEqual(
        peers(await echoRequest(lab, "ext", { [proto]: target, count: 10, timeoutMs: 3000 })),
        [NODE_A],
        proto,
      );
    }
  });

  test("NodeCIDR: a source inside this Node's podCIDR keeps its address; another node's pod range and the outside are masqueraded", async () => {
    await startWith("detectLocalMode: NodeCIDR\n");
    // The external namespace also sends from an address in this node's pod range and from one in another
    // node's (10.244.5.0/24): only the first is local under NodeCIDR (under ClusterCIDR both would be).
    await lab.run("ext", ["ip", "addr", "add", `${IN_NODE_CIDR}/32`, "dev", "eth0"]);
    await lab.run("ext", ["ip", "addr", "add", `${OTHER_POD_RANGE}/32`, "dev", "eth0"]);
    for (const src of [IN_NODE_CIDR, OTHER_POD_RANGE])
      await lab.run("node-a", ["ip", "route", "add", `${src}/32`, "via", EXT]);
    const fromExt = async (src: string, proto: "tcp" | "udp", target: string) => {
      await lab.run("ext", ["ip", "route", "replace", `${VIP}/32`, "via", NODE_A, "src", src]);
      return peers(await echoRequest(lab, "ext", { [proto]: target, count: 10, timeoutMs: 3000 }));
    };
    try {
      for (const [proto, target] of [
        ["tcp", `${VIP}:80`],
        ["udp", `${VIP}:53`],
      ] as const) {
        assert.deepEqual(
          peers(await echoRequest(lab, "client", { [proto]: target, count: 10, timeoutMs: 3000 })),
          [POD.client],
          proto,
        );
        assert.deepEqual(
          await fromExt(IN_NODE_CIDR, proto, target),
          [IN_NODE_CIDR],
          `${proto} from this node's pod range`,
        );
        assert.deepEqual(
          await fromExt(OTHER_POD_RANGE, proto, target),
          [NODE_A],
          `${proto} from another node's pod range`,
        );
        assert.deepEqual(await fromExt(EXT, proto, target), [NODE_A], `${proto} from outside`);
      }
    } finally {
      await lab.run("ext", ["ip", "route", "del", `${VIP}/32`]);
    }
  });

  // The node's netfilter is as on a kubeadm node: br_netfilter's bridge-nf-call-iptables is on (the kernel's
  // default once the module is in), so bridged frames meet conntrack before the bridge device's own ingress.
  test("BridgeInterface: from the pod bridge the pod's address is kept; from outside masqueraded", async () => {
    await startWith("detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n");
    const node = lab.nsName("node-a");
    assert.equal((await sh(`ip netns exec ${node} sysctl -n net.bridge.bridge-nf-call-iptables`)).trim(), "1");
    for (const [proto, target] of [
      ["tcp", `${VIP}:80`],
      ["udp", `${VIP}:53`],
    ] as const) {
      assert.deepEqual(peers(await fromBridgePod(proto, target)), [BRIDGE_POD], proto);
      assert.deepEqual(
        peers(await echoRequest(lab, "ext", { [proto]: target, count: 10, timeoutMs: 3000 })),
        [NODE_A],
        proto,
      );
    }
    const st = await proxy!.status();
    assert.ok(
      st.attachments.some((a) => a.interface === "vethbpod" && a.program === "bpx_from_pod"),
      "the bridge's port carries the pod program",
    );
    assert.ok(!st.attachments.some((a) => a.interface === "cbr0"), "the bridge itself carries none");
    assert.equal(st.counters.drop_pod_source?.packets ?? 0, 0, "the bridge pod's own address passes the source check");
    // NetworkPolicy in FORWARD applies to Service traffic from a bridge pod as from a veth pod.
    await sh(`ip netns exec ${node} iptables -I FORWARD -d ${POD.web} -j DROP`);
    try {
      // An answer would come within milliseconds: three attempts of 1 s show the drop (ten of 3 s took 30 s).
      assert.deepEqual(peers(await fromBridgePod("tcp", `${VIP}:80`, 3, 1000)), ["error:timeout"]);
    } finally {
      await sh(`ip netns exec ${node} iptables -D FORWARD -d ${POD.web} -j DROP`);
    }
  });
});
