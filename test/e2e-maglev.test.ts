// End to end: Maglev across two nodes, for both families of a dual-stack Service. An external client sends UDP
// to a ClusterIP (IPv4 and IPv6) routed first through node-a, then through node-b, from the same source ports.
// Each node chose on its own, without shared conntrack, yet every flow must land on the same backend on both.
// Then a backend is added: only the flows whose table entries it takes move, to it (Maglev's minimal
// disruption). Runs the real daemons in private namespaces; everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.40";
const VIP6 = "fd00:96::40";
const EXT = "198.51.100.10";
const EXT6 = "2001:db8:100::10";
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", "web-3": "10.244.2.5", "web-4": "10.244.2.6" };
const PODS6: Record<string, string> = {
  "web-1": "fd00:10:244:1::5",
  "web-2": "fd00:10:244:1::6",
  "web-3": "fd00:10:244:2::5",
  "web-4": "fd00:10:244:2::6",
  "web-5": "fd00:10:244:2::7",
};
const NODE_OF: Record<string, string> = {
  "web-1": "node-a",
  "web-2": "node-a",
  "web-3": "node-b",
  "web-4": "node-b",
  "web-5": "node-b",
};
const PODS5: Record<string, string> = { ...PODS, "web-5": "10.244.2.7" };
const PORTS = Array.from({ length: 40 }, (_, i) => 33000 + i * 11);
/** Flows of the disruption test: asked through one node before the change and the other after, so that no
 * conntrack entry of the first round keeps its backend. */
const PORTS2 = Array.from({ length: 60 }, (_, i) => 36000 + i * 7);
const NODE_IP = { "node-a": { 4: "192.0.2.11", 6: "2001:db8::a" }, "node-b": { 4: "192.0.2.12", 6: "2001:db8::b" } };

/** The dual-stack Service with web-1..4 in both families' slices, and the `extra` pods (web-5). */
function manifests(extra: string[] = []): string {
  const names = [...Object.keys(PODS), ...extra];
  const slice6 = {
    ...endpointSlice(
      "dns",
      [DNS],
      names.map((name) => ({ ip: PODS6[name]!, node: NODE_OF[name]! })),
    ),
    addressType: "IPv6",
  };
  slice6.metadata = { ...slice6.metadata, name: "dns-v6" };
  return manifest([
    service("dns", VIP, [DNS], {
      annotations: { "bpfproxy.io/lb-algorithm": "maglev" },
      spec: { clusterIPs: [VIP, VIP6], ipFamilies: ["IPv4", "IPv6"], ipFamilyPolicy: "RequireDualStack" },
    }),
    endpointSlice(
      "dns",
      [DNS],
      names.map((name) => ({ ip: PODS5[name]!, node: NODE_OF[name]! })),
    ),
    slice6,
    node("node-a", "192.0.2.11", ["10.244.1.0/24", "fd00:10:244:1::/64"]),
    node("node-b", "192.0.2.12", ["10.244.2.0/24", "fd00:10:244:2::/64"]),
  ]);
}

// One datagram per source port from a socket not connected to the VIP, so that any answer is seen, whatever
// its source: the backend's text ("<backend name> <peer it saw>") and the address and port it came from.
const CLIENT = `
const dgram = require("node:dgram");
const [vip, ports, ext] = [process.argv[1], process.argv[2].split(",").map(Number), process.argv[3]];
(async () => {
  const out = {};
  for (const p of ports) {
    out[p] = await new Promise((resolve) => {
      const s = dgram.createSocket(vip.includes(":") ? "udp6" : "udp4");
      const t = setTimeout(() => { s.close(); resolve({ name: "timeout" }); }, 2000);
      s.on("message", (m, r) => {
        clearTimeout(t); s.close();
        const [name, peer] = m.toString().trim().split(" ");
        resolve({ name, peer, from: r.address + ":" + r.port });
      });
      s.bind(p, ext, () => s.send("q\\n", 53, vip));
    });
  }
  console.log(JSON.stringify(out));
})();
`;

type Answer = { name: string; peer?: string; from?: string };

describe("Maglev end to end, IPv4 and IPv6", { timeout: 300_000 }, () => {
  let lab: Lab;
  let dir: string;
  const bpffs: PrivateBpffs[] = [];
  const proxies: ProxyNode[] = [];
  const backendCount = (n: number) => (s: DataplaneStatus) =>
    [VIP, VIP6].every((a) =>
      s.frontends.some((f) => f.address === a && f.algorithm === "maglev" && f.backends.length === n),
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-maglev-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    const pod = (name: string) => ({ name, ip: PODS5[name]!, ip6: PODS6[name]! });
    lab = await Lab.create({
      prefix: `bpxmg${process.pid}-`,
      external: { name: "ext", ip: EXT, ip6: EXT6 },
      nodes: [
        {
          name: "node-a",
          ip: NODE_IP["node-a"][4],
          podCIDR: "10.244.1.0/24",
          ip6: NODE_IP["node-a"][6],
          podCIDR6: "fd00:10:244:1::/64",
          pods: [pod("web-1"), pod("web-2")],
        },
        {
          name: "node-b",
          ip: NODE_IP["node-b"][4],
          podCIDR: "10.244.2.0/24",
          ip6: NODE_IP["node-b"][6],
          podCIDR6: "fd00:10:244:2::/64",
          pods: [pod("web-3"), pod("web-4"), pod("web-5")],
        },
      ],
    });
    for (const pod of Object.keys(PODS5)) await startEchoServer(lab, pod, { name: pod, udp: [5353], bind: "::" });
    for (const node of ["node-a", "node-b"]) {
      const b = PrivateBpffs.create(`maglev-${node}`);
      bpffs.push(b);
      const p = await ProxyNode.start(lab, node, { manifestDir: dir, bpffs: b.path });
      proxies.push(p);
      await p.waitForStatus(backendCount(4), 10_000);
    }
  });

  after(async () => {
    for (const p of proxies) {
      await p.stop().catch(() => undefined);
      await p.cleanup().catch(() => undefined);
    }
    await lab?.destroy();
    for (const b of bpffs) b.release();
    rmSync(dir, { recursive: true, force: true });
  });

  async function ask(family: 4 | 6, via: "node-a" | "node-b", ports = PORTS): Promise<Record<string, Answer>> {
    const vip = family === 4 ? VIP : VIP6;
    if (family === 4)
      await lab.run("ext", ["ip", "route", "replace", `${VIP}/32`, "via", NODE_IP[via][4], "dev", "eth0"]);
    else await lab.run("ext", ["ip", "-6", "route", "replace", `${VIP6}/128`, "via", NODE_IP[via][6]]);
    const out = await lab.run("ext", ["node", "-e", CLIENT, vip, ports.join(","), family === 4 ? EXT : EXT6], {
      timeoutMs: 180_000,
    });
    return JSON.parse(out) as Record<string, Answer>;
  }
  const names = (r: Record<string, Answer>) => Object.fromEntries(Object.entries(r).map(([p, a]) => [p, a.name]));
  // The echo servers listen on "::": an IPv4 peer is written as [::ffff:a.b.c.d]:port.
  const peerAddress = (peer: string) =>
    peer
      .replace(/:\d+$/, "")
      .replace(/^\[(::ffff:)?/, "")
      .replace(/\]$/, "");

  for (const family of [4, 6] as const) {
    const vip = family === 4 ? VIP : VIP6;
    test(`IPv${family}: the same flow lands on the same backend through either node, answered from the Service address`, async () => {
      const viaA = await ask(family, "node-a");
      const viaB = await ask(family, "node-b");
      for (const [via, answers] of [
        ["node-a", viaA],
        ["node-b", viaB],
      ] as const) {
        for (const [port, a] of Object.entries(answers)) {
          assert.ok(a.name in PODS, `via ${via}, port ${port}: not answered by a backend: ${JSON.stringify(a)}`);
          // The answer comes from the address the client asked, as a connected socket needs, whichever node the
          // backend is on; a ClusterIP reached from outside the cluster is masqueraded to the receiving node.
          assert.equal(a.from, `${vip}:53`, `via ${via}, port ${port}: ${JSON.stringify(a)}`);
          assert.equal(peerAddress(a.peer ?? ""), NODE_IP[via][family], `via ${via}, port ${port}: ${a.peer}`);
        }
      }
      assert.deepEqual(names(viaB), names(viaA), "node-b chose like node-a for every source port");
      assert.ok(
        new Set(Object.values(names(viaA))).size >= 3,
        `flows spread over the backends: ${JSON.stringify(viaA)}`,
      );
    });
  }

  test("adding a backend moves only the flows whose table entries it takes, to it, in both families", async () => {
    const before = { 4: await ask(4, "node-a", PORTS2), 6: await ask(6, "node-a", PORTS2) };
    writeFileSync(join(dir, "services.yaml"), manifests(["web-5"]));
    for (const p of proxies) await p.waitForStatus(backendCount(5), 15_000);
    // Through the other node: it has no conntrack entry of these flows, so each is chosen again.
    for (const family of [4, 6] as const) {
      const after = names(await ask(family, "node-b", PORTS2));
      const was = names(before[family]);
      const moved = Object.keys(was).filter((p) => after[p] !== was[p]);
      assert.ok(
        Object.values(was).every((n) => n in PODS) && Object.values(after).every((n) => n in PODS5),
        `IPv${family}: every flow answered: ${JSON.stringify({ was, after })}`,
      );
      assert.deepEqual(
        moved.filter((p) => after[p] !== "web-5"),
        [],
        `IPv${family}: a flow that moved went to the new backend`,
      );
      // About a fifth of the table goes to the fifth backend; a random choice would move about four fifths.
      assert.ok(
        moved.length > 0 && moved.length <= PORTS2.length / 2,
        `IPv${family}: ${moved.length} of ${PORTS2.length} flows moved`,
      );
    }
  });
});
