// The daemon's sync loop with a fake source and a fake data plane: nothing is written before the
// source has synced, bursts of changes coalesce, a failed write is retried, and a busy health
// port is fatal only with bindAddressHardFail.
import { ObjectIndex } from "../src/sources/object-index.js";
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { createServer, type Server } from "node:net";
import { Daemon, type DaemonOptions } from "../src/daemon/daemon.js";
import { SyncRunner } from "../src/daemon/sync-runner.js";
import * as metrics from "../src/metrics.js";
import type { Dataplane, SyncResult } from "../src/dataplane/types.js";
import type { ObjectSnapshot, Source } from "../src/sources/types.js";
import type { NodeModel } from "../src/model/types.js";
import { ep, slice, svc } from "./model-helpers.js";
import { FolderState } from "../src/sources/folder.js";
import { config as configCodec } from "../src/dataplane/abi.js";
import { stringify } from "yaml";

class FakeSource extends EventEmitter implements Source {
  snap: ObjectSnapshot = { services: [svc()], endpointSlices: [], nodes: [] };
  private resolveSynced!: () => void;
  private readonly syncedP = new Promise<void>((r) => (this.resolveSynced = r));
  async start(): Promise<void> {}
  synced(): Promise<void> {
    return this.syncedP;
  }
  markSynced(): void {
    this.resolveSynced();
  }
  snapshot(): ObjectSnapshot {
    return this.snap;
  }
  private readonly idx = new ObjectIndex();
  index(): ObjectIndex {
    // Identity diff against the last call: what a real source's change log holds.
    this.idx.replaceAll(this.snap.services, this.snap.endpointSlices, this.snap.nodes);
    return this.idx;
  }
  async stop(): Promise<void> {}
}

class FakeDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  syncs: NodeModel[] = [];
  failNext = 0;
  async start(): Promise<void> {}
  async sync(model: NodeModel): Promise<SyncResult> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error("ENOMEM: injected");
    }
    this.syncs.push(model);
    return { upserts: 1, deletes: 0, skipped: [] };
  }
  async refreshAttachments(): Promise<void> {}
  attachments() {
    return [];
  }
  async stop(): Promise<void> {}
}

const opts = (over: Partial<DaemonOptions> = {}): DaemonOptions => ({
  nodeName: "node-a",
  clusterCIDRs: [],
  nodePortAddresses: [],
  minSyncPeriodMs: 50,
  syncPeriodMs: 60_000,
  linkPollMs: 60_000,
  healthzBindAddress: "",
  metricsBindAddress: "",
  ...over,
});

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("nothing is written before the source has synced once", async () => {
  const src = new FakeSource();
  const dp = new FakeDataplane();
  const d = new Daemon(src, dp, opts());
  const started = d.start();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(dp.syncs.length, 0);
  src.markSynced();
  await started;
  await until(() => dp.syncs.length === 1);
  assert.deepEqual(
    dp.syncs[0]!.frontends.map((f) => f.address),
    ["10.96.0.10"],
  );
  await d.stop();
});

test("a burst of changes makes few syncs, and the last state wins", async () => {
  const src = new FakeSource();
  const dp = new FakeDataplane();
  const d = new Daemon(src, dp, opts({ minSyncPeriodMs: 200 }));
  src.markSynced();
  await d.start();
  await until(() => dp.syncs.length === 1);
  for (let i = 0; i < 20; i++) {
    src.snap = { ...src.snap, services: [svc({ clusterIP: `10.96.0.${20 + i}` })] };
    src.emit("change", "service");
  }
  await until(() => dp.syncs.at(-1)?.frontends[0]?.address === "10.96.0.39");
  assert.ok(dp.syncs.length <= 3, `${dp.syncs.length} syncs for 20 changes`);
  await d.stop();
});

test("a failed write is retried until it succeeds", async () => {
  const src = new FakeSource();
  const dp = new FakeDataplane();
  dp.failNext = 1;
  const d = new Daemon(src, dp, opts());
  src.markSynced();
  await d.start();
  await until(() => dp.syncs.length === 1, 5000);
  await d.stop();
});

test("a busy health port is fatal only with bindAddressHardFail", async () => {
  const busy: Server = createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
  const port = (busy.address() as { port: number }).port;
  try {
    const src = new FakeSource();
    src.markSynced();
    const hard = new Daemon(
      src,
      new FakeDataplane(),
      opts({ healthzBindAddress: `127.0.0.1:${port}`, bindAddressHardFail: true }),
    );
    await assert.rejects(hard.start(), /healthz/);
    await hard.stop();

    const dp = new FakeDataplane();
    const soft = new Daemon(src, dp, opts({ healthzBindAddress: `127.0.0.1:${port}` }));
    await soft.start();
    await until(() => dp.syncs.length === 1);
    await soft.stop();
  } finally {
    busy.close();
  }
});

test("a failing sync backs off even while changes keep asking for runs", async () => {
  let runs = 0;
  const runner = new SyncRunner(
    async () => {
      runs++;
      throw new Error("E2BIG: injected");
    },
    { minIntervalMs: 10, maxIntervalMs: 10_000, retryMs: 100 },
  );
  runner.request();
  const spam = setInterval(() => runner.request(), 5);
  await new Promise((r) => setTimeout(r, 1000));
  clearInterval(spam);
  runner.stop();
  // Backoff 100, 200, 400 ms: at most 4 runs in a second, where the minimum period alone would allow ~90.
  assert.ok(runs >= 2 && runs <= 4, `${runs} runs`);
  assert.ok(runner.consecutiveFailures >= 2);
});

test("Services that do not fit a full map are reported and counted once each; the sync still counts as done and later changes apply", async () => {
  const src = new FakeSource();
  const dp = new FakeDataplane();
  const big = { service: "default/big", maps: ["bpx_svc_v2"], needed: { bpx_svc_v2: 11 } };
  const other = { service: "default/other", maps: ["bpx_svc_v2"], needed: { bpx_svc_v2: 3 } };
  const refusals = [[big], [big], [big, other], []];
  dp.sync = async (model: NodeModel) => {
    dp.syncs.push(model);
    return { upserts: 1, deletes: 0, skipped: [], notProgrammed: refusals[dp.syncs.length - 1] ?? [] };
  };
  const d = new Daemon(src, dp, opts());
  src.markSynced();
  await d.start();
  await until(() => dp.syncs.length === 1);
  const text = await metrics.registry.metrics();
  assert.match(text, /^bpfproxy_services_not_programmed 1$/m);
  assert.match(text, /^bpfproxy_map_full_total\{map="bpx_svc_v2"\} 1$/m);
  // Retried while it stays out: not counted again; a second Service refused is.
  src.emit("change", "service");
  await until(() => dp.syncs.length === 2);
  assert.match(await metrics.registry.metrics(), /^bpfproxy_map_full_total\{map="bpx_svc_v2"\} 1$/m);
  src.emit("change", "service");
  await until(() => dp.syncs.length === 3);
  assert.match(await metrics.registry.metrics(), /^bpfproxy_map_full_total\{map="bpx_svc_v2"\} 2$/m);
  assert.match(await metrics.registry.metrics(), /^bpfproxy_services_not_programmed 2$/m);
  src.snap = { ...src.snap, services: [] };
  src.emit("change", "service");
  await until(() => dp.syncs.length === 4);
  assert.deepEqual(dp.syncs[3]!.frontends, []);
  assert.match(await metrics.registry.metrics(), /^bpfproxy_services_not_programmed 0$/m);
  await d.stop();
});

test("healthy while the source has not synced (a slow first list); judged from the first sync on, as kube-proxy", async () => {
  const src = new FakeSource();
  const dp = new FakeDataplane();
  dp.failNext = Infinity; // the data plane never manages a sync
  // healthTimeout = 2 × syncPeriod = 300 ms
  const d = new Daemon(src, dp, opts({ syncPeriodMs: 150 }));
  const health = (d as unknown as { health: { isHealthy(): boolean } }).health;
  const started = d.start();
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(health.isHealthy(), true, "a first list slower than healthTimeout does not fail liveness");
  src.markSynced();
  await started;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(health.isHealthy(), true, "the first sync is pending, not late yet");
  await until(() => !health.isHealthy(), 3000);
  await d.stop();
});

test("detectLocalMode NodeCIDR: a Node with a podCIDR that is not a CIDR is refused at validation, not in every sync", async () => {
  // Through the folder source's validation, as objects reach the daemon.
  const state = new FolderState("/virtual");
  const node = (podCIDRs: string[]) => ({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-a" },
    spec: { podCIDRs },
  });
  const good = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: "default" },
    spec: { clusterIP: "10.96.0.10", ports: [{ port: 80 }] },
  };
  state.apply(new Map([["a.yaml", [good, node(["10.244.1.0/33"])].map((d) => stringify(d)).join("---\n")]]));
  const src = new FakeSource();
  src.snap = state.snapshot();
  const dp = new FakeDataplane() as FakeDataplane & { setLocalCIDRs(c: string[]): void };
  const written: string[][] = [];
  // What the BPF data plane does with them: encode bpx_config (throws on anything but IPv4 CIDRs).
  dp.setLocalCIDRs = (cidrs) => {
    configCodec.encode({ flags: 0, clusterCidrs: cidrs, nodeName: "node-a" });
    written.push(cidrs);
  };
  const d = new Daemon(src, dp, opts({ localCIDRsFromNode: true }));
  src.markSynced();
  await d.start();
  await until(() => dp.syncs.length === 1);
  assert.deepEqual(
    dp.syncs[0]!.frontends.map((f) => f.address),
    ["10.96.0.10"],
  );
  assert.deepEqual(written, [[]], "no podCIDR known: nothing local yet");
  // A valid one later is applied.
  state.apply(new Map([["a.yaml", [good, node(["10.244.1.0/24"])].map((x) => stringify(x)).join("---\n")]]));
  src.snap = state.snapshot();
  src.emit("change");
  await until(() => written.length === 2);
  assert.deepEqual(written[1], ["10.244.1.0/24"]);
  await d.stop();
});

test("healthCheckNodePorts listen on the addresses nodePortAddresses selects, as kube-proxy; on every address without it", async () => {
  const freePort = async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
    const p = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    return p;
  };
  const get = (host: string, port: number) =>
    fetch(`http://${host}:${port}/`, { signal: AbortSignal.timeout(3000) }).then(
      (r) => r.status,
      (e: Error) => `${(e.cause as { code?: string } | undefined)?.code ?? e.message}`,
    );
  for (const selective of [true, false]) {
    const port = await freePort();
    const src = new FakeSource();
    src.snap = {
      services: [svc({ type: "LoadBalancer", externalTrafficPolicy: "Local", healthCheckNodePort: port })],
      endpointSlices: [slice([ep("10.244.1.5", { node: "node-a" })])],
      nodes: [],
    };
    const d = new Daemon(
      src,
      new FakeDataplane(),
      opts(selective ? { nodePortAddresses: ["primary"], primaryNodeIP: "127.0.0.1" } : {}),
    );
    src.markSynced();
    await d.start();
    try {
      let status: number | string = "";
      await until(() => {
        void get("127.0.0.1", port).then((s) => (status = s));
        return status === 200;
      });
      // 127.0.0.2 is this host too (the loopback /8): answered only by a listener on every address.
      const other = await get("127.0.0.2", port);
      if (selective) assert.equal(other, "ECONNREFUSED", "nodePortAddresses [primary]: only 127.0.0.1");
      else assert.equal(other, 200, "no nodePortAddresses: every address");
    } finally {
      await d.stop();
    }
  }
});
