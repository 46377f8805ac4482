// End to end: Maglev across two nodes. An external client sends UDP to a ClusterIP routed first
// through node-a, then through node-b, from the same source ports. Each node chose on its own,
// without shared conntrack, yet every flow must land on the same backend on both. Runs the real
// daemons in private namespaces; everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.40";
const EXT = "198.51.100.10";
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", "web-3": "10.244.2.5", "web-4": "10.244.2.6" };
const NODE_OF: Record<string, string> = { "web-1": "node-a", "web-2": "node-a", "web-3": "node-b", "web-4": "node-b" };
const PORTS = Array.from({ length: 40 }, (_, i) => 33000 + i * 11);

function manifests(): string {
  return manifest([
    service("dns", VIP, [DNS], { annotations: { "bpfproxy.io/lb-algorithm": "maglev" } }),
    endpointSlice(
      "dns",
      [DNS],
      Object.entries(PODS).map(([name, ip]) => ({ ip, node: NODE_OF[name]! })),
    ),
    node("node-a", "192.0.2.11"),
    node("node-b", "192.0.2.12"),
  ]);
}

// One datagram per source port from a socket not connected to the VIP, so that any answer is seen, whatever
// its source: the backend's text ("<backend name> <peer it saw>") and the address and port it came from.
const CLIENT = `
const dgram = require("node:dgram");
const [vip, ports] = [process.argv[1], process.argv[2].split(",").map(Number)];
(async () => {
  const out = {};
  for (const p of ports) {
    out[p] = await new Promise((resolve) => {
      const s = dgram.createSocket("udp4");
      const t = setTimeout(() => { s.close(); resolve({ name: "timeout" }); }, 2000);
      s.on("message", (m, r) => {
        clearTimeout(t); s.close();
        const [name, peer] = m.toString().trim().split(" ");
        resolve({ name, peer, from: r.address + ":" + r.port });
      });
      s.bind(p, "${EXT}", () => s.send("q\\n", 53, vip));
    });
  }
  console.log(JSON.stringify(out));
})();
`;

type Answer = { name: string; peer?: string; from?: string };

describe("Maglev end to end", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  const bpffs: PrivateBpffs[] = [];
  const proxies: ProxyNode[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-maglev-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    lab = await Lab.create({
      prefix: `bpxmg${process.pid}-`,
      external: { name: "ext", ip: EXT },
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: PODS["web-1"] },
            { name: "web-2", ip: PODS["web-2"] },
          ],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          pods: [
            { name: "web-3", ip: PODS["web-3"] },
            { name: "web-4", ip: PODS["web-4"] },
          ],
        },
      ],
    });
    for (const pod of Object.keys(PODS)) await startEchoServer(lab, pod, { name: pod, udp: [5353] });
    for (const node of ["node-a", "node-b"]) {
      const b = PrivateBpffs.create(`maglev-${node}`);
      bpffs.push(b);
      const p = await ProxyNode.start(lab, node, { manifestDir: dir, bpffs: b.path });
      proxies.push(p);
      await p.waitForStatus(
        (s) => s.frontends.some((f) => f.address === VIP && f.algorithm === "maglev" && f.backends.length === 4),
        10_000,
      );
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

  async function ask(via: string): Promise<Record<string, Answer>> {
    await lab.run("ext", ["ip", "route", "replace", `${VIP}/32`, "via", via, "dev", "eth0"]);
    const out = await lab.run("ext", ["node", "-e", CLIENT, VIP, PORTS.join(",")], { timeoutMs: 120_000 });
    return JSON.parse(out) as Record<string, Answer>;
  }

  test("the same flow lands on the same backend through either node, answered from the Service address", async () => {
    const viaA = await ask("192.0.2.11");
    const viaB = await ask("192.0.2.12");
    for (const [via, answers, nodeIP] of [
      ["node-a", viaA, "192.0.2.11"],
      ["node-b", viaB, "192.0.2.12"],
    ] as const) {
      for (const [port, a] of Object.entries(answers)) {
        assert.ok(a.name in PODS, `via ${via}, port ${port}: not answered by a backend: ${JSON.stringify(a)}`);
        // The answer comes from the address the client asked, as a connected socket needs, whichever node the
        // backend is on; a ClusterIP reached from outside the cluster is masqueraded to the receiving node.
        assert.equal(a.from, `${VIP}:53`, `via ${via}, port ${port}: ${JSON.stringify(a)}`);
        assert.match(a.peer ?? "", new RegExp(`^${nodeIP.replace(/\./g, "\\.")}:\\d+$`), `via ${via}, port ${port}`);
      }
    }
    const names = (r: Record<string, Answer>) => Object.fromEntries(Object.entries(r).map(([p, a]) => [p, a.name]));
    assert.deepEqual(names(viaB), names(viaA), "node-b chose like node-a for every source port");
    assert.ok(new Set(Object.values(names(viaA))).size >= 3, `flows spread over the backends: ${JSON.stringify(viaA)}`);
  });
});
