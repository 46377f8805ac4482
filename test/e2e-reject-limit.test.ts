// End to end: rejects are rate-limited per source (issue 16 item 8, docs/security.md "Reject rate limit").
// A frontend without endpoints answers TCP with RST (kube-proxy's REJECT). A pod floods it with 40 SYNs in a
// burst: it gets the burst's worth of RSTs, the rest are dropped and counted, so a forged flood cannot turn the
// node into a reflector. Another client is answered at once (its own bucket) with a real ECONNREFUSED, and so is
// the flooder again after a quiet second. Real daemon, private namespaces, every wait bounded.
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

const VIP = "10.96.0.20";
const FLOODER = "10.244.1.20";
const FLOOD = 40;

describe("reject rate limit", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-rejrl-"));
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([service("empty", VIP, [HTTP]), endpointSlice("empty", [HTTP], []), node("node-a", "192.0.2.11")]),
    );
    lab = await Lab.create({
      prefix: `bpxrl${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "flooder", ip: FLOODER },
            { name: "other", ip: "10.244.1.21" },
          ],
        },
      ],
    });
    bpffs = PrivateBpffs.create("rejrl-a");
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
    const first = await echoRequest(lab, "flooder", { tcp: `${VIP}:80`, count: 1, timeoutMs: 2000 });
    assert.equal(first[0]?.error, "ECONNREFUSED", `refused: ${JSON.stringify(first)}`);
    await new Promise((r) => setTimeout(r, 1100)); // the bucket is full again
    const before = (await proxy!.status()).counters;
    const t0 = Date.now();
    await sendSpoofedTcp(lab, "flooder", { src: FLOODER, dst: VIP, dport: 80, flags: "S", count: FLOOD });
    const tookMs = Date.now() - t0;
    const after = (await proxy!.status()).counters;
    const sent = (after.reject_no_backend?.packets ?? 0) - (before.reject_no_backend?.packets ?? 0);
    const suppressed = (after.reject_suppressed?.packets ?? 0) - (before.reject_suppressed?.packets ?? 0);
    assert.equal(sent + suppressed, FLOOD, `every SYN rejected or suppressed (sent ${sent}, suppressed ${suppressed})`);
    // The burst, plus at most one per 100 ms the sender took (python start-up included).
    const most = abi.REJECT_BURST + Math.ceil(tookMs / 100);
    assert.ok(sent >= abi.REJECT_BURST && sent <= most, `${sent} RSTs sent: between ${abi.REJECT_BURST} and ${most}`);
    console.log(`# ${FLOOD} SYNs in ${tookMs} ms: ${sent} RSTs, ${suppressed} suppressed`);

    // Another client has its own bucket: refused at once.
    const other = await echoRequest(lab, "other", { tcp: `${VIP}:80`, count: 3, timeoutMs: 2000 });
    assert.deepEqual(
      other.map((r) => r.error),
      ["ECONNREFUSED", "ECONNREFUSED", "ECONNREFUSED"],
      "another client is refused at once",
    );
    // After a quiet second the flooder is answered again.
    await new Promise((r) => setTimeout(r, 1100));
    const again = await echoRequest(lab, "flooder", { tcp: `${VIP}:80`, count: 3, timeoutMs: 2000 });
    assert.deepEqual(
      again.map((r) => r.error),
      ["ECONNREFUSED", "ECONNREFUSED", "ECONNREFUSED"],
      "the flooder is refused again once its bucket refilled",
    );
  });
});
