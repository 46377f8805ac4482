// End to end: a pod cannot speak for another pod (issue 16 item 3, docs/security.md "Pod source addresses").
// Pod A holds an established ClusterIP connection. Pod B forges one TCP SYN with A's address and source port
// straight to A's backend, and one to the ClusterIP. kube-proxy's node never lets B's packets touch A's flow
// (rp_filter, and netfilter conntrack keys on the real tuple); bpfproxy must drop them at B's interface before
// they reach conntrack or NAT: A's connection keeps exchanging data without a reset, the drop is counted, and
// B's own (honest) Service traffic still works. Real daemon, private namespaces, every wait bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, startHold } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";
import { sendSpoofedTcp } from "../src/lab/spoof.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.10";
const WEB = "10.244.1.5";
const POD_A = "10.244.1.20";
const POD_B = "10.244.1.21";

describe("a pod cannot forge another pod's source", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-podsrc-"));
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service("web", VIP, [HTTP]),
        endpointSlice("web", [HTTP], [{ ip: WEB, node: "node-a", ready: true }]),
        node("node-a", "192.0.2.11"),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxps${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: WEB },
            { name: "pod-a", ip: POD_A },
            { name: "pod-b", ip: POD_B },
          ],
        },
      ],
    });
    await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080] });
    bpffs = PrivateBpffs.create("podsrc-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 1), 10_000);
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("forged SYNs, RST and FIN with A's tuple (to A's backend and to the ClusterIP) are dropped; A's connection lives on", async () => {
    const hold = startHold(lab, "pod-a", `${VIP}:80`, 100, 2000);
    try {
      await hold.waitFor(5, 10_000);
      const first = hold.events[0]!;
      assert.ok("reply" in first, `A's connection answered: ${JSON.stringify(first)}`);
      // The backend saw A's own address and port (ClusterIP from a pod is not masqueraded).
      const m = /^web-1 ([\d.]+):(\d+)/.exec(first.reply);
      assert.ok(m && m[1] === POD_A, `backend saw A itself: ${first.reply}`);
      const sport = Number(m[2]);

      const before = (await proxy!.status()).counters;
      // A's tracked flow skips the check only on A's interface (the forward entry remembers where its
      // source was checked): B's RST and FIN with A's tuple to the ClusterIP are checked and dropped too.
      for (const [dst, dport, flags] of [
        [WEB, 8080, "S"],
        [VIP, 80, "S"],
        [VIP, 80, "R"],
        [VIP, 80, "FA"],
      ] as const) {
        await sendSpoofedTcp(lab, "pod-b", { src: POD_A, sport, dst, dport, flags });
      }
      // A keeps talking for 2 s more (20 pings): every one answered, no reset.
      const n = hold.events.length;
      await hold.waitFor(n + 20, 10_000);
      const errors = hold.events.filter((e) => "error" in e);
      assert.deepEqual(errors, [], "A's connection never failed");

      const after = (await proxy!.status()).counters;
      const dropped = (after.drop_pod_source?.packets ?? 0) - (before.drop_pod_source?.packets ?? 0);
      assert.equal(dropped, 4, "every forged segment dropped and counted at B's interface");
      assert.equal(
        after.tuple_released?.packets ?? 0,
        before.tuple_released?.packets ?? 0,
        "no state released for A's tuple",
      );
    } finally {
      await hold.stop();
    }
    assert.ok(
      hold.events.every((e) => "reply" in e),
      `A's connection ended cleanly: ${JSON.stringify(hold.events.slice(-2))}`,
    );
  });

  test("B's own Service connections and flows straight to the backend are untouched by the check", async () => {
    const before = (await proxy!.status()).counters;
    const via = await echoRequest(lab, "pod-b", { tcp: `${VIP}:80`, count: 5, timeoutMs: 2000 });
    assert.deepEqual(
      via.filter((r) => !r.ok),
      [],
      "every ClusterIP attempt from B answered",
    );
    const direct = await echoRequest(lab, "pod-b", { tcp: `${WEB}:8080`, count: 5, timeoutMs: 2000 });
    assert.deepEqual(
      direct.filter((r) => !r.ok),
      [],
      "every direct attempt from B answered",
    );
    const after = (await proxy!.status()).counters;
    assert.equal(after.drop_pod_source?.packets ?? 0, before.drop_pod_source?.packets ?? 0, "nothing honest dropped");
  });
});
