// End to end: drift in the kernel's maps (entries removed behind the daemon's back: an operator's
// `bpftool map delete`, another tool, a bug) is repaired by the full sync every bpfproxy.fullSyncPeriod,
// as kube-proxy's hourly full resync repairs rules deleted from iptables. The partial syncs of every
// syncPeriod in between apply only what changed in the objects, so with the default (1h) the same drift
// stays until the next full sync: that is the cost of an idle daemon using no CPU between changes.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { BpfMap } from "../src/native/index.js";
import { MAP_NAMES, svcKey } from "../src/dataplane/bpf/abi.js";
import { endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.90";
const WEB = "10.244.1.5";
const CLIENT = "10.244.1.9";
const HTTP = { name: "http", port: 80, targetPort: 8080, protocol: "TCP" } as const;

/** Removes every service-map entry of the VIP from the pinned map, as a foreign tool would. */
function deleteVipEntries(bpffs: string): number {
  const m = BpfMap.openPinned(join(bpffs, MAP_NAMES.services));
  try {
    const { keys, count } = m.entries();
    const ks = m.info.keySize;
    let deleted = 0;
    for (let i = 0; i < count; i++) {
      const key = keys.subarray(i * ks, (i + 1) * ks);
      if (svcKey.decode(key).address === VIP && m.delete(Buffer.from(key))) deleted++;
    }
    return deleted;
  } finally {
    m.close();
  }
}

describe("full sync repairs drift in the kernel's maps", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-fullsync-"));
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service("web", VIP, [HTTP]),
        endpointSlice("web", [HTTP], [{ ip: WEB, node: "node-a" }]),
        node("node-a", "192.0.2.11"),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxfs${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: WEB },
            { name: "client", ip: CLIENT },
          ],
        },
      ],
    });
    await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080] });
  });

  after(async () => {
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a daemon with the given config lines, deletes the VIP's entries, returns whether they came back. */
  async function driftRepaired(
    name: string,
    configLines: string[],
    waitMs: number,
    checkDrop: boolean,
  ): Promise<boolean> {
    const config = join(dir, `${name}.yaml`);
    writeFileSync(
      config,
      ["apiVersion: kubeproxy.config.k8s.io/v1alpha1", "kind: KubeProxyConfiguration", ...configLines].join("\n"),
    );
    const bpffs = PrivateBpffs.create(`fullsync-${name}`);
    let proxy: ProxyNode | undefined;
    try {
      proxy = await ProxyNode.start(lab, "node-a", {
        manifestDir: dir,
        bpffs: bpffs.path,
        extraArgs: ["--config", config, "--healthz-bind-address", "", "--metrics-bind-address", ""],
      });
      const served = (s: Awaited<ReturnType<ProxyNode["status"]>>) =>
        s.frontends.some((f) => f.address === VIP && f.backends.length === 1);
      await proxy.waitForStatus(served, 10_000);
      const [before] = await echoRequest(lab, "client", { tcp: `${VIP}:80` });
      assert.equal(before?.reply?.split(" ")[0], "web-1", `served before the drift: ${JSON.stringify(before)}`);

      assert.ok(deleteVipEntries(bpffs.path) > 0, "the VIP had entries to delete");
      if (checkDrop) {
        // Only where no full sync can come in between: a 2 s period could repair it before the request.
        assert.ok(!served(await proxy.status()), "the deletion shows in status (read from the maps)");
        const [during] = await echoRequest(lab, "client", { tcp: `${VIP}:80`, timeoutMs: 1000 });
        assert.ok(!during?.ok, `with its entries deleted the VIP is not served: ${JSON.stringify(during)}`);
      }

      const repaired = await proxy.waitForStatus(served, waitMs).then(
        () => true,
        () => false,
      );
      if (repaired) {
        const [after] = await echoRequest(lab, "client", { tcp: `${VIP}:80` });
        assert.equal(after?.reply?.split(" ")[0], "web-1", `served after the repair: ${JSON.stringify(after)}`);
      }
      return repaired;
    } finally {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      bpffs.release();
    }
  }

  test("bpfproxy.fullSyncPeriod 2s: entries deleted behind the daemon's back come back within a few seconds", async () => {
    assert.ok(await driftRepaired("short", ["syncPeriod: 1s", "bpfproxy:", "  fullSyncPeriod: 2s"], 8_000, false));
  });

  test("default (1h): the syncPeriod's partial syncs leave the drift alone, as kube-proxy's do", async () => {
    assert.ok(!(await driftRepaired("default", ["syncPeriod: 1s"], 4_000, true)));
  });
});
