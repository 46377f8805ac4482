// End to end: connections and datagrams straight to a backend that reuse the tuple of an earlier Service flow.
// A pod talks to a ClusterIP from N fixed source ports (each flow is DNATed to one of two backends and
// tracked), then from the same source ports straight to each backend's pod IP. The tracked Service flows
// still hold reply entries for exactly those tuples; if one captured the direct flow, the backend's answer
// would be rewritten to the ClusterIP and the client would drop it (connect times out). kube-proxy's
// conntrack never confuses the two: every direct attempt must be answered. Real daemon, private namespaces.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const WEB_VIP = "10.96.0.10";
const DNS_VIP = "10.96.0.53";
const PODS: Record<string, string> = { "web-1": "10.244.1.5", "web-2": "10.244.1.6" };
const N = 60;

describe("flows straight to a backend on a reused Service tuple", { timeout: 300_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-direct-"));
    const eps = Object.values(PODS).map((ip) => ({ ip, node: "node-a", ready: true }));
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service("web", WEB_VIP, [HTTP]),
        endpointSlice("web", [HTTP], eps),
        service("dns", DNS_VIP, [DNS]),
        endpointSlice("dns", [DNS], eps),
        node("node-a", "192.0.2.11"),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxdf${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [...Object.entries(PODS).map(([name, ip]) => ({ name, ip })), { name: "client", ip: "10.244.1.20" }],
        },
      ],
    });
    for (const pod of Object.keys(PODS)) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
    bpffs = PrivateBpffs.create("direct-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
    await proxy.waitForStatus(
      (s) => [WEB_VIP, DNS_VIP].every((vip) => s.frontends.some((f) => f.address === vip && f.backends.length === 2)),
      10_000,
    );
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const proto of ["tcp", "udp"] as const) {
    test(`${proto}: every direct attempt from a port a Service flow used is answered by the backend itself`, async () => {
      const sportBase = proto === "tcp" ? 21000 : 22000;
      const vip = proto === "tcp" ? `${WEB_VIP}:80` : `${DNS_VIP}:53`;
      const via = await echoRequest(lab, "client", { [proto]: vip, count: N, sportBase, timeoutMs: 2000 });
      assert.deepEqual(
        via.filter((r) => !r.ok),
        [],
        "every Service attempt answered",
      );
      const used = new Set(via.map((r) => r.reply!.split(" ")[0]));
      assert.equal(used.size, 2, "both backends served the Service flows");

      for (const [name, ip] of Object.entries(PODS)) {
        const port = proto === "tcp" ? 8080 : 5353;
        const direct = await echoRequest(lab, "client", {
          [proto]: `${ip}:${port}`,
          count: N,
          sportBase,
          timeoutMs: 1000,
        });
        const failed = direct.filter((r) => !r.ok || !r.reply!.startsWith(`${name} `));
        assert.equal(
          failed.length,
          0,
          `${failed.length}/${N} direct attempts to ${name} failed: ${JSON.stringify(failed[0])}`,
        );
      }
      const st = await proxy!.status();
      assert.ok((st.counters.tuple_released?.packets ?? 0) > 0, "the data plane released reused tuples");
    });
  }
});
