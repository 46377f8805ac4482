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
import { config as configCodec } from "../src/dataplane/bpf/abi.js";
import { stringify } from "yaml";
import { FakeMap } from "../src/native/fake-map.js";
import { LbReconciler, type LbMaps } from "../src/dataplane/bpf/reconcile.js";
import { MAP_CODECS, MAP_NAMES, svcKey, svcValue, u32Key } from "../src/dataplane/bpf/abi.js";

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

/**
 * The reconciler over in-memory maps, driven as the BPF data plane drives it: a full sync re-reads the maps
 * (restore) and compares everything; otherwise only the Services the model's delta names are encoded.
 */
class ReconcilingDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  readonly maps: Record<keyof LbMaps, FakeMap>;
  private readonly rec: LbReconciler;
  private applied: number | undefined;
  restores = 0;
  /** Map entries encoded by each successful sync, in order. */
  encoded: number[] = [];
  failNext = 0;
  constructor() {
    const m = (name: keyof typeof MAP_CODECS) =>
      new FakeMap({
        name,
        keySize: MAP_CODECS[name].key.size,
        valueSize: MAP_CODECS[name].value.size,
        maxEntries: 4096,
      });
    this.maps = {
      services: m(MAP_NAMES.services),
      backends: m(MAP_NAMES.backends),
      revNat: m(MAP_NAMES.revNat),
      svcMeta: m(MAP_NAMES.svcMeta),
      maglev: m(MAP_NAMES.maglev),
      affinityMatch: m(MAP_NAMES.affinityMatch),
      services6: m(MAP_NAMES.services6),
      backends6: m(MAP_NAMES.backends6),
    };
    this.rec = new LbReconciler(this.maps);
  }
  async start(): Promise<void> {}
  async sync(model: NodeModel, o: { full?: boolean } = {}): Promise<SyncResult> {
    if (this.failNext > 0) {
      this.failNext--;
      this.applied = undefined;
      throw new Error("EIO: injected");
    }
    if (o.full) {
      this.restores++;
      await this.rec.restore();
    }
    const d = model.delta;
    const changed = !o.full && d && d.from !== -1 && d.from === this.applied ? d.services : undefined;
    const res = await this.rec.apply(model, { full: o.full, changed });
    this.applied = d?.to;
    this.encoded.push(res.encoded ?? 0);
    return res;
  }
  async refreshAttachments(): Promise<void> {}
  attachments() {
    return [];
  }
  async stop(): Promise<void> {}
}

const firstKey = (m: FakeMap): Buffer => Buffer.from(m.entries().keys.subarray(0, m.info.keySize));

/** Backend ids the services map's slots point at that the backends map does not hold (drift). */
function danglingSlots(maps: Record<"services" | "backends", FakeMap>): number[] {
  const { keys, values, count } = maps.services.entries();
  const ks = maps.services.info.keySize;
  const vs = maps.services.info.valueSize;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    if (svcKey.decode(keys.subarray(i * ks, (i + 1) * ks)).slot === 0) continue; // a master
    const id = svcValue.decode(values.subarray(i * vs, (i + 1) * vs)).backendId;
    if (maps.backends.lookup(u32Key.encode(id)) === null) out.push(id);
  }
  return out;
}

test("periodic syncs without changes re-read and re-encode nothing; a failure forces a full sync; the full-sync period repairs drift (kube-proxy's FullSyncPeriod)", async () => {
  const src = new FakeSource();
  src.snap = { services: [svc()], endpointSlices: [slice([ep("10.244.1.5"), ep("10.244.1.6")])], nodes: [] };
  const dp = new ReconcilingDataplane();
  const d = new Daemon(src, dp, opts({ syncPeriodMs: 40, fullSyncPeriodMs: 60_000 }));
  src.markSynced();
  await d.start();
  try {
    await until(() => d.syncCount >= 8);
    assert.equal(dp.restores, 1, "only the first sync re-reads the maps");
    assert.equal(d.fullSyncs, 1);
    assert.ok(dp.encoded[0]! > 0, "the first sync encodes the Service");
    assert.deepEqual(dp.encoded.slice(1), new Array(dp.encoded.length - 1).fill(0), "idle ticks encode nothing");

    // Drift: a backend entry removed behind the daemon's back. Idle ticks leave it (no re-read) ...
    const backendKey = firstKey(dp.maps.backends);
    assert.ok(dp.maps.backends.delete(backendKey));
    const before = d.syncCount;
    await until(() => d.syncCount >= before + 3);
    assert.equal(dp.maps.backends.lookup(backendKey), null, "an idle tick does not re-read the maps");
    assert.equal(danglingSlots(dp.maps).length, 1);

    // ... a failed sync makes the next one full, which re-reads the maps and repairs it.
    dp.failNext = 1;
    await until(() => dp.restores === 2, 5000);
    await until(() => d.fullSyncs === 2, 5000);
    assert.deepEqual(danglingSlots(dp.maps), [], "the forced full sync repaired the drift");
    assert.equal(dp.maps.backends.size, 2);
    const afterRepair = d.syncCount;
    await until(() => d.syncCount >= afterRepair + 3);
    assert.equal(dp.restores, 2, "after the forced full sync, ticks are incremental again");
  } finally {
    await d.stop();
  }

  // The full-sync period on its own (no failure) repairs drift too.
  const src2 = new FakeSource();
  src2.snap = { services: [svc()], endpointSlices: [slice([ep("10.244.1.5")])], nodes: [] };
  const dp2 = new ReconcilingDataplane();
  const d2 = new Daemon(src2, dp2, opts({ syncPeriodMs: 40, fullSyncPeriodMs: 400 }));
  src2.markSynced();
  await d2.start();
  try {
    await until(() => d2.syncCount >= 1);
    const k = firstKey(dp2.maps.backends);
    assert.ok(dp2.maps.backends.delete(k));
    await until(() => danglingSlots(dp2.maps).length === 0 && dp2.maps.backends.size === 1, 5000);
    assert.ok(dp2.restores >= 2 && d2.fullSyncs >= 2, `${dp2.restores} restores`);
    assert.ok(d2.syncCount > d2.fullSyncs, "syncs between full ones are incremental");
  } finally {
    await d2.stop();
  }
});
