// End to end: rejects are rate-limited per source (issue 16 item 8, docs/security.md "Reject rate limit").
// A frontend without endpoints answers TCP with RST (kube-proxy's REJECT). A pod floods it with 40 SYNs in a
// burst: it gets the burst's worth of RSTs, the rest are dropped and counted, so a forged flood cannot turn the
// node into a reflector. Another client is answered at once (its own bucket) with a real ECONNREFUSED, and so is
// the flooder again after a quiet second. Once per family: over IPv6 an IPv6 single-stack Service on a dual-stack
// node, limited per 16-byte source in the IPv6 path's own bucket map (bpx_reject6_rl_v1, docs/ipv6.md).
// Real daemon, private namespaces, every wait bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as abi from "../src/dataplane/bpf/abi.js";
import { HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";
import { sendSpoofedTcp } from "../src/lab/spoof.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const FLOOD = 40;

for (const family of [4, 6] as const) {
  const v6 = family === 6;
  const VIP = v6 ? "fd00:96::20" : "10.96.0.20";
  const FLOODER = v6 ? "fd00:10:244:1::20" : "10.244.1.20";
  const target = v6 ? `[${VIP}]:80` : `${VIP}:80`;

  describe(`reject rate limit, IPv${family}`, { timeout: 120_000 }, () => {
    let lab: Lab;
    let dir: string;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-rejrl-"));
      writeFileSync(
        join(dir, "services.yaml"),
        manifest([
          service("empty", VIP, [HTTP], v6 ? { spec: { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] } } : {}),
          { ...endpointSlice("empty", [HTTP], []), addressType: v6 ? "IPv6" : "IPv4" },
          node("node-a", "192.0.2.11"),
        ]),
      );
      lab = await Lab.create({
        prefix: `bpxrl${family}${process.pid}-`,
        nodes: [
          {
            name: "node-a",
            ip: "192.0.2.11",
            podCIDR: "10.244.1.0/24",
            ...(v6 ? { ip6: "2001:db8::a", podCIDR6: "fd00:10:244:1::/64" } : {}),
            pods: [
              { name: "flooder", ip: "10.244.1.20", ...(v6 ? { ip6: FLOODER } : {}) },
              { name: "other", ip: "10.244.1.21", ...(v6 ? { ip6: "fd00:10:244:1::21" } : {}) },
            ],
          },
        ],
      });
      bpffs = PrivateBpffs.create(`rejrl-a${family}`);
      proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
      await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP), 10_000);
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    test(`a burst of ${FLOOD} SYNs to a frontend without endpoints gets ${abi.REJECT_BURST} RSTs, the rest are counted as suppressed`, async () => {
      // A real connection is refused (RST) before the flood: the frontend rejects.
      const first = await echoRequest(lab, "flooder", { tcp: target, count: 1, timeoutMs: 2000 });
      assert.equal(first[0]?.error, "ECONNREFUSED", `refused: ${JSON.stringify(first)}`);
      await new Promise((r) => setTimeout(r, 1100)); // the bucket is full again
      const before = (await proxy!.status()).counters;
      const t0 = Date.now();
      await sendSpoofedTcp(lab, "flooder", { src: FLOODER, dst: VIP, dport: 80, flags: "S", count: FLOOD });
      const tookMs = Date.now() - t0;
      const after = (await proxy!.status()).counters;
      const sent = (after.reject_no_backend?.packets ?? 0) - (before.reject_no_backend?.packets ?? 0);
      const suppressed = (after.reject_suppressed?.packets ?? 0) - (before.reject_suppressed?.packets ?? 0);
      assert.equal(
        sent + suppressed,
        FLOOD,
        `every SYN rejected or suppressed (sent ${sent}, suppressed ${suppressed})`,
      );
      // The burst, plus at most one per 100 ms the sender took (python start-up included).
      const most = abi.REJECT_BURST + Math.ceil(tookMs / 100);
      assert.ok(sent >= abi.REJECT_BURST && sent <= most, `${sent} RSTs sent: between ${abi.REJECT_BURST} and ${most}`);
      console.log(`# ${FLOOD} SYNs in ${tookMs} ms: ${sent} RSTs, ${suppressed} suppressed`);

      // Another client has its own bucket: refused at once.
      const other = await echoRequest(lab, "other", { tcp: target, count: 3, timeoutMs: 2000 });
      assert.deepEqual(
        other.map((r) => r.error),
        ["ECONNREFUSED", "ECONNREFUSED", "ECONNREFUSED"],
        "another client is refused at once",
      );
      // After a quiet second the flooder is answered again.
      await new Promise((r) => setTimeout(r, 1100));
      const again = await echoRequest(lab, "flooder", { tcp: target, count: 3, timeoutMs: 2000 });
      assert.deepEqual(
        again.map((r) => r.error),
        ["ECONNREFUSED", "ECONNREFUSED", "ECONNREFUSED"],
        "the flooder is refused again once its bucket refilled",
      );
    });
  });
}
