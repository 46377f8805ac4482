// End to end: a node name longer than the BPF config map's 63-byte field (node names may have 253 characters)
// does not stop the data plane from starting; the daemon serves, and `bpfproxy status` names the node by the
// name's first 63 bytes. Real daemon, private namespaces.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";
import { configNodeName } from "../src/daemon/run.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.10";
// 3 labels of 63 + 61 = 253 characters: the longest node name Kubernetes allows.
const LONG = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;

describe("a 253-character node name", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-nodename-"));
    const eps = [{ ip: "10.244.1.5", node: LONG, ready: true }];
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([service("web", VIP, [HTTP]), endpointSlice("web", [HTTP], eps), node(LONG, "192.0.2.11")]),
    );
    lab = await Lab.create({
      prefix: `bpxnn${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: "10.244.1.5" },
            { name: "client", ip: "10.244.1.20" },
          ],
        },
      ],
    });
    await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080] });
    bpffs = PrivateBpffs.create("nodename-a");
    // The last --hostname-override wins: the daemon's node name is LONG.
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--hostname-override", LONG],
    });
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the data plane starts and serves; status names the node by its first 63 bytes", async () => {
    const s = await proxy!.waitForStatus(
      (st) => st.frontends.some((f) => f.address === VIP && f.backends.length === 1),
      15_000,
    );
    assert.equal(s.node, LONG.slice(0, 63));
    assert.equal(configNodeName(LONG), LONG.slice(0, 63));
    const r = await echoRequest(lab, "client", { tcp: `${VIP}:80`, count: 3 });
    assert.deepEqual(
      r.filter((x) => !x.ok),
      [],
      "traffic to the Service flows",
    );
  });
});
