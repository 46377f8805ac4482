// The reconciler against in-memory maps with kernel semantics: what it writes, in which order,
// and that it converges and restores (id reuse within a pass: reconcile-ids.test.ts).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { FakeMap } from "../src/native/fake-map.js";
import { LbReconciler, type ApplyStats, type LbMaps } from "../src/dataplane/bpf/reconcile.js";
import { frontendsFromMaps } from "../src/dataplane/bpf/status.js";
import { desiredNodePortAddrs, ipv6Name, SourceRangesCache } from "../src/dataplane/bpf/desired.js";
import { ipv6Hex } from "../src/k8s/ip.js";
import {
  backend,
  backend6,
  maglevKey,
  maglevTable,
  svcKey,
  svc6Key,
  srcRange6Key,
  svcValue,
  u32Key,
  MAP_CODECS,
  MAP_NAMES,
  SVC_F_AFFINITY,
  SVC_F_MAGLEV,
  SVC_F_MAP_FULL,
  SVC_F_MASQ_OUTSIDE,
} from "../src/dataplane/bpf/abi.js";
import { maglevTable as computeMaglev } from "../src/dataplane/bpf/maglev.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";
import { buildNodeModel, buildNodeModelFrom, ModelCache } from "../src/model/index.js";
import { ObjectIndex } from "../src/sources/object-index.js";
import { ep, slice, svc } from "./model-helpers.js";

type Op = { map: string; op: "upsert" | "delete"; what: string };

class RecordingMap extends FakeMap {
  constructor(
    readonly label: string,
    name: keyof typeof MAP_CODECS,
    private readonly log: Op[],
    maxEntries = 65536,
  ) {
    super({ name, keySize: MAP_CODECS[name].key.size, valueSize: MAP_CODECS[name].value.size, maxEntries });
  }
  private describe(key: Buffer): string {
    if (this.label === "services") {
      const k = svcKey.decode(key);
      return `${k.address}:${k.port}#${k.slot}`;
    }
    if (this.label === "services6") {
      const k = svc6Key.decode(key);
      return `[${k.address}]:${k.port}#${k.slot}`;
    }
    if (this.label === "maglev") {
      const k = maglevKey.decode(key);
      return `${k.revNatId}/${k.scope}`;
    }
    return String(this.label === "backends" ? u32Key.decode(key) : u32Key.decode(key));
  }
  override updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void {
    super.updateBatch(keys, values, count, flags);
    const ks = this.info.keySize;
    for (let i = 0; i < count; i++)
      this.log.push({ map: this.label, op: "upsert", what: this.describe(keys.subarray(i * ks, (i + 1) * ks)) });
  }
  override deleteBatch(keys: Buffer, count: number): number {
    const n = super.deleteBatch(keys, count);
    const ks = this.info.keySize;
    for (let i = 0; i < count; i++)
      this.log.push({ map: this.label, op: "delete", what: this.describe(keys.subarray(i * ks, (i + 1) * ks)) });
    return n;
  }
}

function maps(sizes: { services?: number; backends?: number; frontends?: number } = {}): {
  maps: LbMaps & Record<string, RecordingMap>;
  log: Op[];
} {
  const log: Op[] = [];
  return {
    log,
    maps: {
      services: new RecordingMap("services", MAP_NAMES.services, log, sizes.services),
      backends: new RecordingMap("backends", MAP_NAMES.backends, log, sizes.backends),
      revNat: new RecordingMap("revNat", MAP_NAMES.revNat, log, sizes.frontends),
      svcMeta: new RecordingMap("svcMeta", MAP_NAMES.svcMeta, log, sizes.frontends),
      maglev: new RecordingMap("maglev", MAP_NAMES.maglev, log),
      affinityMatch: new RecordingMap("affinityMatch", MAP_NAMES.affinityMatch, log),
      services6: new RecordingMap("services6", MAP_NAMES.services6, log, sizes.services),
      backends6: new RecordingMap("backends6", MAP_NAMES.backends6, log, sizes.backends),
    },
  };
}

const be = (address: string, port = 8080, state: BackendModel["state"] = "active"): BackendModel => ({
  address,
  port,
  state,
  nodeLocal: true,
});

function fe(address: string, backends: BackendModel[], over: Partial<Frontend> = {}): Frontend {
  return {
    service: "default/web",
    portName: "http",
    type: "ClusterIP",
    address,
    port: 80,
    protocol: "TCP",
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends,
    ...over,
  };
}

function model(frontends: Frontend[], retained: BackendModel[][] = []): NodeModel {
  return {
    node: "node-a",
    frontends,
    extras: frontends.map((_, i) => ({ retainedBackends: retained[i] ?? [], sourceRanges: [] })),
  };
}

const backendIds = (m: LbMaps) => {
  const out = new Map<string, number>();
  const { keys, values, count } = m.backends.entries();
  for (let i = 0; i < count; i++) {
    const b = backend.decode(values, i * backend.size);
    out.set(`${b.address}:${b.port}`, u32Key.decode(keys, i * 4));
  }
  return out;
};

const counts = (s: ApplyStats) => ({ upserts: s.upserts, deletes: s.deletes, skipped: s.skipped });

const indexOf = (log: Op[], map: string, op: Op["op"], what?: string) =>
  log.findIndex((o) => o.map === map && o.op === op && (what === undefined || o.what === what));
const lastIndexOf = (log: Op[], map: string, op: Op["op"]) =>
  log.map((o) => o.map === map && o.op === op).lastIndexOf(true);

describe("LB reconciler", () => {
  test("a full sync re-reads the maps unless they were empty at the last read and nothing was applied since", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    // Fresh pins: still empty, nothing to read again.
    assert.equal(await r.restoreUnlessEmpty(), false);
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    // Written since: read again, and an entry changed behind the reconciler's back is found and repaired.
    const held = await m.backends.entriesAsync();
    assert.equal(held.count, 1);
    m.backends.delete(held.keys.subarray(0, m.backends.info.keySize));
    assert.equal(await r.restoreUnlessEmpty(), true);
    const stats = await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]), { full: true });
    assert.equal(stats.upserts, 1);
    assert.equal((await m.backends.entriesAsync()).count, 1);
    // Maps found holding entries are read on every full sync.
    assert.equal(await r.restoreUnlessEmpty(), true);
  });

  test("a new service is written backends first and its master entry last", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const stats = await r.apply(model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]));
    assert.equal(stats.deletes, 0);
    assert.equal(stats.upserts, 2 + 1 + 1 + 3);
    const master = indexOf(log, "services", "upsert", "10.96.0.10:80#0");
    assert.ok(master === log.length - 1, JSON.stringify(log));
    assert.ok(lastIndexOf(log, "backends", "upsert") < indexOf(log, "services", "upsert", "10.96.0.10:80#1"));
    assert.ok(indexOf(log, "revNat", "upsert") < master);
  });

  test("the maps read back as the same frontends (status shape equals render shape)", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const frontends = [
      fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6", 8080, "terminating")], {
        sessionAffinity: { type: "ClientIP", timeoutSeconds: 600 },
      }),
      fe("10.96.0.11", [], { service: "default/empty", portName: "" }),
      fe("192.0.2.11", [be("10.244.2.7", 9090)], {
        type: "NodePort",
        scope: "external",
        port: 30080,
        protocol: "UDP",
        service: "default/np",
      }),
    ];
    await r.apply(model(frontends));
    // A NodePort is one wildcard entry, listed once per node address that serves NodePorts.
    const nodePortAddrs = new FakeMap({ name: MAP_NAMES.nodePortAddrs, keySize: 4, valueSize: 4, maxEntries: 256 });
    for (const [k, v] of desiredNodePortAddrs({ ...model(frontends), nodePortIPs: ["192.0.2.11"] }))
      nodePortAddrs.update(Buffer.from(k, "latin1"), Buffer.from(v, "latin1"));
    assert.deepEqual(frontendsFromMaps({ ...m, nodePortAddrs }), [frontends[1], frontends[2], frontends[0]]); // sorted by service
    const masterRaw = m.services.lookup(
      svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }),
    )!;
    const master = svcValue.decode(masterRaw);
    assert.equal(master.flags & SVC_F_AFFINITY, SVC_F_AFFINITY);
    assert.equal(master.affinityTimeout, 600);
  });

  test("applying the same model again writes nothing", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const mod = model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]);
    await r.apply(mod);
    const n = log.length;
    assert.deepEqual(counts(await r.apply(mod)), { upserts: 0, deletes: 0, skipped: [] });
    assert.equal(log.length, n);
  });

  test("removing a backend lowers the count before the stale slot goes, and the backend goes last", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]));
    const idsBefore = backendIds(m);
    log.length = 0;
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    const masterAt = indexOf(log, "services", "upsert", "10.96.0.10:80#0");
    const staleSlotAt = indexOf(log, "services", "delete", "10.96.0.10:80#2");
    const backendAt = indexOf(log, "backends", "delete");
    assert.ok(masterAt >= 0 && staleSlotAt > masterAt && backendAt > staleSlotAt, JSON.stringify(log));
    assert.equal(backendIds(m).get("10.244.1.5:8080"), idsBefore.get("10.244.1.5:8080"), "kept backend keeps its id");
    assert.equal(backendIds(m).size, 1);
  });

  test("removing a frontend deletes its master before its slots, then rev-NAT, metadata and backends", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    log.length = 0;
    await r.apply(model([]));
    assert.deepEqual(
      log.map((o) => `${o.map}:${o.op}:${o.what}`),
      [
        "services:delete:10.96.0.10:80#0",
        "services:delete:10.96.0.10:80#1",
        "revNat:delete:1",
        "svcMeta:delete:1",
        "backends:delete:1",
      ],
    );
    for (const map of Object.values(m)) assert.equal(map.entries().count, 0);
  });

  test("a restarted reconciler restores ids from the maps and rewrites nothing", async () => {
    const { maps: m, log } = maps();
    const mod = model([
      fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")]),
      fe("10.96.0.11", [be("10.244.1.7")], { service: "default/b" }),
    ]);
    const first = new LbReconciler(m);
    await first.restore();
    await first.apply(mod);
    const ids = backendIds(m);
    log.length = 0;
    const second = new LbReconciler(m);
    await second.restore();
    assert.deepEqual(counts(await second.apply(mod)), { upserts: 0, deletes: 0, skipped: [] });
    assert.equal(log.length, 0);
    // A new backend gets a fresh id, not one in use.
    await second.apply(
      model([
        ...mod.frontends.slice(0, 1),
        fe("10.96.0.11", [be("10.244.1.7"), be("10.244.1.8")], { service: "default/b" }),
      ]),
    );
    const after = backendIds(m);
    for (const [k, id] of ids) assert.equal(after.get(k), id, k);
    assert.ok(![...ids.values()].includes(after.get("10.244.1.8:8080")!));
  });

  test("a failed kernel write leaves bookkeeping true to the kernel, and the next pass converges", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const mod = model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]);
    (m.services as FakeMap).failNthWrite(2, "ENOMEM");
    await assert.rejects(r.apply(mod), (e: Error & { code?: string }) => e.code === "ENOMEM");
    // The master entry must not be live: the failure happened while writing slots.
    assert.equal(
      m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 })),
      null,
    );
    await r.apply(mod);
    assert.deepEqual(frontendsFromMaps(m), mod.frontends);
    assert.deepEqual(counts(await r.apply(mod)), { upserts: 0, deletes: 0, skipped: [] });
  });

  test("a full sync written in several chunks per map keeps the order, also when a chunk in the middle fails", async () => {
    // 3,000 frontends x 15 backends: 45,000 backends and 48,000 service entries, more than two 20,000-entry
    // chunks per map (each written on a libuv worker).
    const { maps: m, log } = maps({ services: 65536, backends: 65536, frontends: 4096 });
    const r = new LbReconciler(m);
    await r.restore();
    const frontends = Array.from({ length: 3000 }, (_, i) =>
      fe(
        `10.96.${i >> 8}.${i & 255}`,
        Array.from({ length: 15 }, (_, j) => be(`10.${100 + (i >> 8)}.${i & 255}.${j + 1}`)),
        { service: `ns/svc-${i}` },
      ),
    );
    const mod = model(frontends);
    (m.services as FakeMap).failNthWrite(30_000, "ENOMEM");
    await assert.rejects(r.apply(mod, { full: true }), (e: Error & { code?: string }) => e.code === "ENOMEM");
    // Every backend, rev-NAT and metadata entry landed before the first slot; no master was written.
    const firstSlot = log.findIndex((o) => o.map === "services");
    assert.ok(firstSlot > 0);
    assert.equal(log.slice(firstSlot).filter((o) => o.map !== "services").length, 0);
    assert.equal(log.filter((o) => o.map === "backends").length, 45_000);
    assert.equal(log.filter((o) => o.map === "services" && o.what.endsWith("#0")).length, 0);
    // The next pass converges, and the one after writes nothing.
    log.length = 0;
    await r.apply(mod, { full: true });
    const byAddress = (fs: Frontend[]) => [...fs].sort((a, b) => (a.address < b.address ? -1 : 1));
    assert.deepEqual(byAddress(frontendsFromMaps(m)), byAddress(mod.frontends));
    const masters = log.flatMap((o, i) => (o.map === "services" && o.what.endsWith("#0") ? [i] : []));
    const slots = log.flatMap((o, i) => (o.map === "services" && !o.what.endsWith("#0") ? [i] : []));
    assert.ok(masters.length === 3000 && Math.min(...masters) > Math.max(...slots), "masters after every slot");
    assert.deepEqual(counts(await r.apply(mod)), { upserts: 0, deletes: 0, skipped: [] });
  });

  test("retained (terminating) backends stay in the backend map without a slot", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])], [[be("10.244.1.6", 8080, "terminating")]]));
    assert.deepEqual([...backendIds(m).keys()].sort(), ["10.244.1.5:8080", "10.244.1.6:8080"]);
    assert.deepEqual(
      frontendsFromMaps(m)[0]!.backends.map((b) => b.address),
      ["10.244.1.5"],
    );
  });

  test("frontends the BPF data plane cannot serve are reported, not written: SCTP with a port rewrite", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const stats = await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")], { protocol: "SCTP" })]));
    assert.equal(stats.skipped.length, 1);
    assert.match(stats.skipped[0]!.reason, /^SCTP, served by IPVS: port 80 -> 8080/);
    assert.equal(m.services.entries().count, 0);
  });

  test("SCTP whose backends listen on the frontend's port is written (addresses only), with ids apart from TCP's", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const sctp = fe("10.96.0.10", [be("10.244.1.5", 80)], { protocol: "SCTP", portName: "sig" });
    const tcp = fe("10.96.0.10", [be("10.244.1.5", 80)]);
    const stats = await r.apply(model([tcp, sctp]));
    assert.deepEqual(stats.skipped, []);
    // A master and a slot each, and two backends: the same address and port under another protocol.
    assert.equal(m.services.entries().count, 4);
    assert.equal(m.backends.entries().count, 2);
    assert.equal(m.revNat.entries().count, 2);
    // IPv6 SCTP is IPVS's (the IPv6 BPF path has no SCTP).
    const v6 = await r.apply(model([tcp, fe("fd00::10", [be("fd00::5", 80)], { protocol: "SCTP" })]));
    assert.match(v6.skipped[0]!.reason, /^SCTP, served by IPVS: the IPv6 BPF path/);
  });

  test("a dual-stack model: every IPv6 kind is written into the IPv6 maps, each family's source ranges into its own LPM", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const dual = buildNodeModel({
      services: [
        svc({
          type: "LoadBalancer",
          clusterIP: "10.96.0.10",
          clusterIPs: ["10.96.0.10", "fd00:96::10"],
          externalIPs: ["198.51.100.7", "2001:db8:1::7"],
          ingress: [{ ip: "198.51.100.20" }, { ip: "2001:db8:2::20" }],
          loadBalancerSourceRanges: ["203.0.113.0/24", "2001:db8:9::/48"],
        }),
      ],
      endpointSlices: [
        slice([ep("10.244.1.5")], { name: "web-v4" }),
        slice([ep("fd00:10:244::1:5")], { name: "web-v6", addressType: "IPv6" }),
      ],
      nodeName: "node-a",
      config: { nodeIPs: ["192.0.2.11", "2001:db8::11"] },
    });
    const v6 = dual.frontends.filter((f) => f.address.includes(":"));
    assert.equal(v6.length, 4, "IPv6 ClusterIP, NodePort, LoadBalancer and ExternalIP");
    const stats = await r.apply(dual);
    assert.deepEqual(stats.skipped, []);
    const written = frontendsFromMaps(m).map(
      (f) => `${f.type} ${f.address}:${f.port} ${f.backends.map((b) => b.address).join(",")}`,
    );
    assert.deepEqual(written.sort(), [
      "ClusterIP 10.96.0.10:80 10.244.1.5",
      "ClusterIP fd00:96::10:80 fd00:10:244::1:5",
      "ExternalIP 198.51.100.7:80 10.244.1.5",
      "ExternalIP 2001:db8:1::7:80 fd00:10:244::1:5",
      "LoadBalancer 198.51.100.20:80 10.244.1.5",
      "LoadBalancer 2001:db8:2::20:80 fd00:10:244::1:5",
      "NodePort 0.0.0.0:30080 10.244.1.5",
      // IPv6 NodePorts are keyed by the node's own IPv6 address (no wildcard entry).
      "NodePort 2001:db8::11:30080 fd00:10:244::1:5",
    ]);
    assert.deepEqual([...backendIds(m).keys()], ["10.244.1.5:8080"], "IPv6 backends stay out of the IPv4 map");
    assert.equal(m.backends6.entries().count, 1);
    // One id space: the IPv6 backend's id is not the IPv4 one's; nor are the frontends' ids.
    const id6 = u32Key.decode(m.backends6.entries().keys);
    assert.notEqual(id6, backendIds(m).get("10.244.1.5:8080"));
    assert.equal(new Set([...m.svcMeta.entries().keys.toString("hex").match(/.{8}/g)!]).size, 8);
    // Each family's LoadBalancer gets its own family's range, in its own LPM trie.
    const ranges = new SourceRangesCache(4).desired(dual, undefined, (n) => r.revNatIdOf(n));
    assert.equal(ranges.size, 1);
    const ranges6 = new SourceRangesCache(6).desired(dual, undefined, (n) => r.revNatIdOf(n));
    assert.deepEqual(
      [...ranges6.keys()].map((k) => srcRange6Key.decode(Buffer.from(k, "latin1"))),
      [
        {
          prefixlen: 32 + 48,
          revNatId: r.revNatIdOf(ipv6Name(ipv6Hex("2001:db8:2::20")!, 80, 6)),
          addr: "2001:db8:9::",
        },
      ],
    );
    // Converged: a second full pass writes nothing.
    const again = await r.apply(dual, { full: true });
    assert.deepEqual([again.upserts, again.deletes], [0, 0]);
  });

  test("a rev-NAT id above 65535 is stored whole (32-bit ids)", async () => {
    const { maps: m } = maps({ frontends: 70_000 });
    // A kernel left by an earlier run holds rev-NAT id 70000; it is restored and kept.
    m.services.update(
      svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }),
      svcValue.encode({ backendId: 0, count: 0, revNatId: 70_000, flags: 0, affinityTimeout: 0 }),
    );
    const r = new LbReconciler(m);
    await r.restore();
    await r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    const master = svcValue.decode(
      m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }))!,
    );
    assert.equal(master.revNatId, 70_000);
    assert.ok(m.revNat.lookup(u32Key.encode(70_000)), "rev-NAT entry under the 32-bit id");
  });
});

describe("LB reconciler at scale: O(change) syncs and full maps", () => {
  const N = 1000;
  const frontendsOf = (n: number, perSvc = 10) =>
    Array.from({ length: n }, (_, i) =>
      fe(
        `10.96.${i >> 8}.${i & 255}`,
        Array.from({ length: perSvc }, (_, j) => be(`10.${100 + (i >> 8)}.${i & 255}.${j + 1}`)),
        { service: `ns/svc-${i}` },
      ),
    );

  test("one endpoint change re-encodes only its Service and writes only what changed", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const frontends = frontendsOf(N);
    // Unchanged Services hand back the very same Frontend objects (as the model cache does).
    const extras = frontends.map(() => ({ retainedBackends: [], sourceRanges: [] }));
    const next = (fs: Frontend[]): NodeModel => ({ node: "node-a", frontends: fs, extras });
    const first = await r.apply(next(frontends));
    assert.equal(first.servicesEncoded, N);
    assert.equal((await r.apply(next(frontends))).encoded, 0, "nothing changed, nothing encoded");

    log.length = 0;
    const changed = [...frontends];
    const old = changed[500]!;
    changed[500] = { ...old, backends: [...old.backends.slice(0, 9), be("10.250.0.1")] }; // one endpoint replaced
    const stats = await r.apply(next(changed));
    assert.equal(stats.servicesEncoded, 1);
    // Its entries only: master + 10 slots + 10 backends + rev-NAT + metadata.
    assert.equal(stats.encoded, 1 + 10 + 10 + 1 + 1);
    // Written: the new backend, slot 10 pointing at it; the old backend deleted.
    assert.deepEqual({ upserts: stats.upserts, deletes: stats.deletes }, { upserts: 2, deletes: 1 });
    assert.equal(log.length, 3);
    assert.deepEqual(
      frontendsFromMaps(m)
        .find((f) => f.service === "ns/svc-500")!
        .backends.map((b) => b.address)
        .at(-1),
      "10.250.0.1",
    );

    // A full pass compares everything and finds nothing to write.
    await r.restore();
    const full = await r.apply(next(changed), { full: true });
    assert.equal(full.servicesEncoded, N);
    assert.deepEqual({ upserts: full.upserts, deletes: full.deletes }, { upserts: 0, deletes: 0 });
  });

  test("the changes after a full sync fit the tables it sized: no table is copied to grow at the first new key", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    let frontends = frontendsOf(N);
    const extras = frontends.map(() => ({ retainedBackends: [], sourceRanges: [] }));
    const next = (fs: Frontend[]): NodeModel => ({ node: "node-a", frontends: fs, extras });
    await r.apply(next(frontends), { full: true });
    const room = r.tableRoom();
    const counts = r.entryCounts();
    // Every table the sync filled has room for more than it holds (a table sized to the last entry doubled,
    // copying all of it, at the first change that added a key: 22 ms for 300,000 backends).
    for (const k of ["services", "backends", "revNat", "svcMeta"] as const) assert.ok(room[k] > counts[k], k);
    // 50 changes, each replacing one endpoint with a new address: the new backend is added before the old goes.
    for (let c = 0; c < 50; c++) {
      frontends = [...frontends];
      const i = (c * 37) % N;
      const old = frontends[i]!;
      frontends[i] = { ...old, backends: [...old.backends.slice(1), be(`10.250.${c}.1`)] };
      const s = await r.apply(next(frontends));
      assert.equal(s.servicesEncoded, 1);
    }
    assert.deepEqual(r.tableRoom(), room);
    assert.deepEqual(r.entryCounts(), counts);
  });

  test("a full map: Services that fit are applied, the rest are named with the map, none half written, removals go first", async () => {
    // Room for 3 Services of 1 master + 10 slots.
    const { maps: m } = maps({ services: 34 }); // room for 3 Services of 1 master + 10 slots, and one more entry
    const r = new LbReconciler(m);
    await r.restore();
    const fs = frontendsOf(5);
    const s1 = await r.apply(model(fs));
    assert.deepEqual(
      s1.notProgrammed!.map((n) => n.service),
      ["ns/svc-3", "ns/svc-4"],
    );
    assert.deepEqual(s1.notProgrammed![0]!.maps, [MAP_NAMES.services]);
    assert.equal(s1.notProgrammed![0]!.needed[MAP_NAMES.services], 11);
    const programmed = () =>
      frontendsFromMaps(m)
        .map((f) => `${f.service}:${f.backends.length}`)
        .sort();
    // The first refused Service gets its master alone (the one entry left): no backends, flagged map-full, so
    // its packets are rejected and reported as such (docs/observability.md); the second finds no room.
    assert.deepEqual(
      programmed(),
      ["ns/svc-0:10", "ns/svc-1:10", "ns/svc-2:10", "ns/svc-3:0"],
      "only whole frontends, or a map-full master without slots",
    );
    assert.equal(m.services.entries().count, 34);
    const { keys, values, count } = m.services.entries();
    const flagsOf = (address: string) => {
      for (let i = 0; i < count; i++) {
        const k = svcKey.decode(keys, i * svcKey.size);
        if (k.address === address && k.slot === 0) return svcValue.decode(values, i * svcValue.size);
      }
      return undefined;
    };
    const full = flagsOf(fs[3]!.address);
    assert.deepEqual([full?.count, full?.backendId, full?.flags], [0, 0, SVC_F_MAP_FULL]);
    assert.ok(full!.revNatId > 0, "with its own frontend id (per-Service counters, monitor names)");
    assert.equal(flagsOf(fs[4]!.address), undefined);

    // Removing a Service and growing another in the same pass: the removal makes room, so later changes apply.
    const grown = { ...fs[1]!, backends: [...fs[1]!.backends, be("10.99.0.1")] };
    const s2 = await r.apply(model([fs[0]!, grown, fs[3]!, fs[4]!]));
    assert.deepEqual(programmed(), ["ns/svc-0:10", "ns/svc-1:11", "ns/svc-3:10"]);
    assert.deepEqual(
      s2.notProgrammed!.map((n) => n.service),
      ["ns/svc-4"],
    );

    // Retried on every pass and applied once there is room, without the model changing.
    await r.apply(model([fs[0]!, fs[3]!, fs[4]!]));
    assert.deepEqual(programmed(), ["ns/svc-0:10", "ns/svc-3:10", "ns/svc-4:10"]);
    const s4 = await r.apply(model([fs[0]!, fs[3]!, fs[4]!]));
    assert.deepEqual({ up: s4.upserts, del: s4.deletes, np: s4.notProgrammed }, { up: 0, del: 0, np: [] });
  });

  test("a Service too big for the map keeps what it had instead of being half written", async () => {
    const { maps: m } = maps({ services: 24 });
    const r = new LbReconciler(m);
    await r.restore();
    const [a, b] = frontendsOf(2);
    await r.apply(model([a!, b!]));
    const bigger = {
      ...a!,
      backends: [...a!.backends, ...Array.from({ length: 5 }, (_, j) => be(`10.98.0.${j + 1}`))],
    };
    const s = await r.apply(model([bigger, b!]));
    assert.deepEqual(
      s.notProgrammed!.map((n) => n.service),
      ["ns/svc-0"],
    );
    const got = frontendsFromMaps(m).find((f) => f.service === "ns/svc-0")!;
    assert.deepEqual(
      got.backends.map((x) => x.address),
      a!.backends.map((x) => x.address),
      "the old backends, all of them",
    );
    // Shrinking the other Service makes room; the next pass programs the bigger one whole.
    await r.apply(model([bigger, { ...b!, backends: b!.backends.slice(0, 2) }]));
    assert.equal(frontendsFromMaps(m).find((f) => f.service === "ns/svc-0")!.backends.length, 15);
  });

  test("admission is per key: a backend shared by an admitted and a refused Service is written for the admitted one", async () => {
    const { maps: m } = maps({ backends: 3 });
    const r = new LbReconciler(m);
    await r.restore();
    const shared = be("10.1.0.1");
    const a = fe("10.96.0.1", [shared], { service: "ns/a" });
    // b wants the shared backend and three more: four new backends, in a map with room for three.
    const b = fe("10.96.0.2", [shared, be("10.1.0.2"), be("10.1.0.3"), be("10.1.0.4")], { service: "ns/b" });
    const s = await r.apply(model([a, b]));
    assert.deepEqual(
      s.notProgrammed!.map((n) => n.service),
      ["ns/b"],
    );
    assert.deepEqual([...backendIds(m).keys()], ["10.1.0.1:8080"], "the shared backend is in the map");
    const got = frontendsFromMaps(m).find((f) => f.service === "ns/a")!;
    assert.deepEqual(
      got.backends.map((x) => x.address),
      ["10.1.0.1"],
      "a's slot names a backend that exists",
    );
  });

  test("an encoding that throws leaves the Service as it was; a retry does not release its old entries twice", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const shared = be("10.1.0.1");
    const a = fe("10.96.0.1", [shared], { service: "ns/a" });
    const b = fe("10.96.0.2", [shared], { service: "ns/b" });
    await r.apply(model([a, b]));
    // A port name the 64-byte field cannot hold (the model was not validated: a bug elsewhere must not cascade).
    const bad = { ...b, portName: "p".repeat(64) };
    for (let pass = 0; pass < 2; pass++) {
      const s = await r.apply(model([a, bad]));
      assert.match(
        s.skipped.map((x) => `${x.service} ${x.reason}`).join(),
        /ns\/b cannot be encoded.*longer than 63 bytes/,
      );
    }
    assert.deepEqual([...backendIds(m).keys()], ["10.1.0.1:8080"], "the shared backend stays");
    assert.deepEqual(
      frontendsFromMaps(m)
        .map((f) => `${f.service} ${f.backends.map((x) => x.address).join()}`)
        .sort(),
      ["ns/a 10.1.0.1", "ns/b 10.1.0.1"],
      "both Services as they were",
    );
    // Removing b later releases its entries once: a keeps its backend.
    await r.apply(model([a]));
    assert.deepEqual([...backendIds(m).keys()], ["10.1.0.1:8080"]);
    await r.restore();
    const full = await r.apply(model([a]), { full: true });
    assert.deepEqual({ up: full.upserts, del: full.deletes }, { up: 0, del: 0 }, "mirror and kernel agree");
  });

  test("an encoding that throws after changing a shared backend's value leaves that value as it was", async () => {
    // Services encode straight into the shared tables: the failed encoding must be undone, values included.
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const a = fe("10.96.0.1", [be("10.1.0.1")], { service: "ns/a" });
    const b = fe("10.96.0.2", [be("10.1.0.1")], { service: "ns/b" });
    await r.apply(model([a, b]));
    const flagsOf = () => {
      const { values, count } = m.backends.entries();
      assert.equal(count, 1);
      return backend.decode(values, 0).flags;
    };
    const before = flagsOf();
    // b's new encoding marks the shared backend terminating, then throws at its port name.
    const bad = { ...b, backends: [be("10.1.0.1", 8080, "terminating")], portName: "p".repeat(64) };
    const s = await r.apply(model([a, bad]));
    assert.match(s.skipped.map((x) => x.reason).join(), /cannot be encoded/);
    assert.equal(s.upserts, 0, "nothing written");
    assert.equal(flagsOf(), before, "the shared backend keeps a's value");
    const full = await r.apply(model([a, bad]), { full: true });
    assert.equal(full.upserts, 0, "the wanted tables agree with the kernel");
  });

  test("a Maglev frontend's table is written before its master and removed with it", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const backends = [be("10.244.1.5"), be("10.244.2.6"), be("10.244.3.7")];
    await r.apply(model([fe("10.96.0.10", backends, { algorithm: "maglev" })]));
    assert.ok(indexOf(log, "maglev", "upsert", "1/1") >= 0, "table written");
    assert.ok(
      indexOf(log, "maglev", "upsert", "1/1") < indexOf(log, "services", "upsert", "10.96.0.10:80#0"),
      "table before master",
    );
    const master = svcValue.decode(
      m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }))!,
    );
    assert.equal(master.flags & SVC_F_MAGLEV, SVC_F_MAGLEV);

    // The table names backend ids in the order the pure table assigns backend names.
    const ids = maglevTable.decode(m.maglev.lookup(maglevKey.encode({ revNatId: master.revNatId, scope: 1 }))!);
    const nameOfId = new Map<number, string>();
    const all = m.backends.entries();
    for (let i = 0; i < all.count; i++) {
      nameOfId.set(
        u32Key.decode(Buffer.from(all.keys.subarray(i * 4, i * 4 + 4))),
        backend.decode(Buffer.from(all.values.subarray(i * 8, i * 8 + 8))).address,
      );
    }
    const expected = computeMaglev(backends.map((b) => `${b.address}:8080`));
    for (const i of [0, 1, 100, 16380])
      assert.equal(nameOfId.get(ids[i]!), backends[expected[i]!]!.address, `entry ${i}`);

    log.length = 0;
    await r.apply(model([fe("10.96.0.10", backends)]));
    // Removals go first: the table leaves before the master loses its flag (the program falls back to a random slot).
    assert.ok(indexOf(log, "maglev", "delete", "1/1") >= 0, "table removed");
    assert.equal(m.maglev.entries().count, 0);
    const after = svcValue.decode(
      m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }))!,
    );
    assert.equal(after.flags & SVC_F_MAGLEV, 0, "flag cleared");
  });
});

describe("LB reconciler: the kernel's state kept once (issue 18 item 2)", () => {
  /** What the maps hold, as the reconciler's `contents` spells it (latin1 key → value). */
  const kernel = (m: LbMaps) =>
    Object.fromEntries(
      Object.entries(m).map(([name, map]) => {
        const { keys, values, count } = (map as FakeMap).entries();
        const ks = (map as FakeMap).info.keySize;
        const vs = (map as FakeMap).info.valueSize;
        const out = new Map<string, string>();
        for (let i = 0; i < count; i++)
          out.set(keys.toString("latin1", i * ks, (i + 1) * ks), values.toString("latin1", i * vs, (i + 1) * vs));
        return [name, out];
      }),
    );

  test("random changes with shared backends: the reconciler's idea of the kernel is the maps, with no second copy", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    let seed = 18;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
    // 30 Services over a pool of 12 backends: most backends are shared by several Services.
    const svcs = new Map<number, Frontend>();
    const make = (i: number): Frontend =>
      fe(
        `10.96.1.${i}`,
        Array.from({ length: 1 + rnd(4) }, () => be(`10.244.9.${1 + rnd(12)}`)),
        {
          service: `ns/s${i}`,
          port: 80 + rnd(2),
          sessionAffinity: rnd(3) === 0 ? { type: "ClientIP", timeoutSeconds: 60 } : { type: "None" },
        },
      );
    const dedupe = (f: Frontend): Frontend => ({
      ...f,
      backends: [...new Map(f.backends.map((b) => [b.address, b])).values()],
    });
    for (let step = 0; step < 200; step++) {
      const i = rnd(30);
      const op = rnd(4);
      if (op === 0) svcs.delete(i);
      else svcs.set(i, dedupe(make(i)));
      const frontends = [...svcs.values()];
      const full = rnd(10) === 0; // a full pass without re-reading the maps now and then
      await r.apply(model(frontends), { full });
      assert.deepEqual(r.contents, kernel(m), `step ${step}`);
      assert.equal(r.otherKernelEntries(), 0, `step ${step}: nothing kept beside the wanted tables`);
      assert.deepEqual(
        frontendsFromMaps(m)
          .map((f) => f.service)
          .sort(),
        frontends.map((f) => f.service).sort(),
        `step ${step}`,
      );
    }
    // A restart reads the maps into the table of other entries; the first pass matches them all and writes nothing.
    const again = new LbReconciler(m);
    await again.restore();
    assert.ok(again.otherKernelEntries() > 0);
    const res = await again.apply(model([...svcs.values()]));
    assert.deepEqual({ upserts: res.upserts, deletes: res.deletes }, { upserts: 0, deletes: 0 });
    assert.equal(again.otherKernelEntries(), 0, "every entry read back is now held by the wanted tables");
    assert.deepEqual(again.contents, kernel(m));
  });

  test("a restart whose maps hold entries nothing wants and stale values: deleted and rewritten, then nothing kept twice", async () => {
    const { maps: m } = maps();
    const first = new LbReconciler(m);
    await first.restore();
    await first.apply(
      model([
        fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")]),
        fe("10.96.0.11", [be("10.244.1.7")], { service: "default/b" }),
      ]),
    );
    const second = new LbReconciler(m);
    await second.restore();
    const res = await second.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    assert.ok(res.deletes > 0 && res.upserts > 0, JSON.stringify(res));
    assert.deepEqual(second.contents, kernel(m));
    assert.equal(second.otherKernelEntries(), 0);
    assert.deepEqual(frontendsFromMaps(m), [fe("10.96.0.10", [be("10.244.1.5")])]);
  });
});

describe("LB reconciler ordering against what the kernel still names (issue 16 item 6)", () => {
  test("a Maglev table is rewritten before a backend it names is deleted", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const backends = [be("10.244.1.5"), be("10.244.2.6"), be("10.244.3.7")];
    await r.apply(model([fe("10.96.0.10", backends, { algorithm: "maglev" })]));
    const gone = backendIds(m).get("10.244.3.7:8080")!;
    log.length = 0;
    // The last backend goes: its slot is deleted, not rewritten, so only the old table still names it.
    await r.apply(model([fe("10.96.0.10", backends.slice(0, 2), { algorithm: "maglev" })]));
    const tableWritten = indexOf(log, "maglev", "upsert");
    const backendDeleted = indexOf(log, "backends", "delete", String(gone));
    assert.ok(tableWritten >= 0 && backendDeleted >= 0, JSON.stringify(log));
    assert.ok(
      tableWritten < backendDeleted,
      `table rewritten (op ${tableWritten}) before the backend it named is deleted (op ${backendDeleted}): ${JSON.stringify(log)}`,
    );
    const master = svcValue.decode(
      m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }))!,
    );
    const ids = maglevTable.decode(m.maglev.lookup(maglevKey.encode({ revNatId: master.revNatId, scope: 1 }))!);
    assert.ok(!ids.includes(gone), "the new table no longer names it");
  });
});

describe("LB reconciler fed the model's delta", () => {
  test("applying only the Services each delta names gives the maps a full pass gives, and encodes only them", async () => {
    const index = new ObjectIndex();
    const cache = new ModelCache();
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const services = Array.from({ length: 40 }, (_, i) => svc({ name: `s${i}`, clusterIP: `10.96.0.${1 + (i % 30)}` }));
    const slices = services.map((s, i) =>
      slice([ep(`10.244.0.${i + 1}`)], { name: `e${i}`, service: s.metadata.name }),
    );
    index.replaceAll(services, slices, []);
    let last: number | undefined;
    const step = async () => {
      const model = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
      const d = model.delta!;
      const changed = d.from !== -1 && d.from === last ? d.services : undefined;
      const stats = await r.apply(model, { changed });
      last = d.to;
      // A reconciler that starts from nothing and applies the same model in full holds the same frontends.
      const fresh = maps();
      const r2 = new LbReconciler(fresh.maps);
      await r2.restore();
      await r2.apply(
        buildNodeModel({
          services: [...index.serviceKeys()].map((k) => index.service(k)!),
          endpointSlices: slices,
          nodeName: "node-a",
        }),
      );
      const strip = (fs: Frontend[]) => fs.map((f) => JSON.stringify(f)).sort();
      assert.deepEqual(strip(frontendsFromMaps(m)), strip(frontendsFromMaps(fresh.maps)));
      return { stats, changed: changed?.size, owners: d.byService };
    };
    await step();
    for (let i = 0; i < 40; i += 3) {
      // An endpoint replaced (one Service), a Service removed, and one whose cluster IP collides with another's.
      const e = slice([ep(`10.244.1.${i + 1}`)], { name: `e${i}`, service: `s${i}` });
      slices[i] = e;
      index.upsertSlice(`default/e${i}`, e);
      const a = await step();
      // One Service, unless another owns its address (s0 wins 10.96.0.1 over s30): then nothing changed.
      assert.equal(a.changed, a.owners.has(`default/s${i}`) ? 1 : 0, `i=${i}`);
      assert.equal(a.stats.servicesEncoded, a.changed);
      index.removeService(`default/s${i + 1}`);
      const b = await step();
      assert.ok(b.changed! <= 2, `removal touched ${b.changed}`); // the removed one, and one taking over its address
      index.upsertService(`default/s${i + 1}`, services[i + 1]!);
      await step();
    }
  });
});

describe("LB reconciler: IPv6 frontends (bpx_svc6_v1, bpx_backend6_v1)", () => {
  const v6 = (backends: BackendModel[], over: Partial<Frontend> = {}) => fe("fd00:96::50", backends, over);
  const b6 = (n: number) => be(`fd00:10:244::${n}`);
  const svc6 = (m: LbMaps) => {
    const out: string[] = [];
    const { keys, values, count } = m.services6.entries();
    for (let i = 0; i < count; i++) {
      const k = svc6Key.decode(keys, i * svc6Key.size);
      const v = svcValue.decode(values, i * svcValue.size);
      out.push(
        k.slot === 0 ? `[${k.address}]:${k.port} count=${v.count} flags=${v.flags}` : `#${k.slot} -> ${v.backendId}`,
      );
    }
    return out.sort();
  };
  const ids6 = (m: LbMaps) => {
    const out = new Map<string, number>();
    const { keys, values, count } = m.backends6.entries();
    for (let i = 0; i < count; i++)
      out.set(backend6.decode(values, i * backend6.size).address, u32Key.decode(keys, i * 4));
    return out;
  };

  test("written make-before-break, shrunk and removed whole; ids shared with IPv4; re-adopted on restart without writes", async () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const v4 = fe("10.96.0.50", [be("10.244.1.5")]);
    const first = v6([b6(5), b6(6)]);
    await r.apply(model([v4, first]));
    // Backends before the slots that name them, slots before the master that makes them live.
    assert.ok(lastIndexOf(log, "backends6", "upsert") < indexOf(log, "services6", "upsert", "[fd00:96::50]:80#1"));
    assert.ok(
      indexOf(log, "services6", "upsert", "[fd00:96::50]:80#2") <
        indexOf(log, "services6", "upsert", "[fd00:96::50]:80#0"),
    );
    const ids = ids6(m);
    assert.deepEqual([...ids.keys()].sort(), ["fd00:10:244::5", "fd00:10:244::6"]);
    assert.equal(new Set([...ids.values(), ...backendIds(m).values()]).size, 3, "one id space for both families");
    assert.deepEqual(svc6(m), [
      `#1 -> ${ids.get("fd00:10:244::5")}`,
      `#2 -> ${ids.get("fd00:10:244::6")}`,
      `[fd00:96::50]:80 count=2 flags=${SVC_F_MASQ_OUTSIDE}`,
    ]);
    assert.equal(m.svcMeta.entries().count, 2, "metadata for both frontends");
    assert.equal(m.revNat.entries().count, 1, "no IPv4 rev-NAT entry for the IPv6 frontend");
    const [meta6] = frontendsFromMaps(m).filter((f) => f.address.includes(":"));
    assert.deepEqual([meta6!.service, meta6!.portName, meta6!.type], ["default/web", "http", "ClusterIP"]);

    // A restarted daemon adopts what is there: same ids, nothing written.
    const r2 = new LbReconciler(m);
    await r2.restore();
    log.length = 0;
    const again = await r2.apply(model([v4, first]));
    assert.deepEqual([again.upserts, again.deletes, log.length], [0, 0, 0]);
    // A new IPv6 backend after the restart gets an id no one holds.
    await r2.apply(model([v4, v6([b6(5), b6(6), b6(7)])]));
    assert.equal(new Set([...ids6(m).values(), ...backendIds(m).values()]).size, 4);
    assert.equal(ids6(m).get("fd00:10:244::5"), ids.get("fd00:10:244::5"));

    // Losing a backend: the count drops before its slot goes, the backend goes last.
    log.length = 0;
    await r2.apply(model([v4, v6([b6(5), b6(7)])]));
    const shrink = indexOf(log, "services6", "upsert", "[fd00:96::50]:80#0");
    assert.ok(shrink >= 0 && shrink < indexOf(log, "services6", "delete", "[fd00:96::50]:80#3"));
    assert.ok(indexOf(log, "services6", "delete") < indexOf(log, "backends6", "delete"));
    assert.deepEqual([...ids6(m).keys()].sort(), ["fd00:10:244::5", "fd00:10:244::7"]);

    // The Service's IPv6 frontend goes: every IPv6 entry and its metadata, the IPv4 one stays.
    await r2.apply(model([v4]));
    assert.deepEqual([m.services6.entries().count, m.backends6.entries().count, m.svcMeta.entries().count], [0, 0, 1]);
    assert.equal(m.services.entries().count, 2);
  });

  test("a released IPv6 frontend or backend id is reported and free again", async () => {
    const { maps: m } = maps();
    const released: string[] = [];
    const r = new LbReconciler(m, { onIdReleased: (kind, id) => released.push(`${kind}:${id}`) });
    await r.restore();
    await r.apply(model([v6([b6(5)])]));
    const fid = u32Key.decode(m.svcMeta.entries().keys);
    const bid = ids6(m).get("fd00:10:244::5")!;
    const name = ipv6Name(ipv6Hex("fd00:96::50")!, 80, 6);
    assert.equal(r.revNatIdOf(name), fid);
    await r.apply(model([]));
    assert.deepEqual(released.sort(), [`backend:${bid}`, `frontend:${fid}`].sort());
    assert.equal(r.revNatIdOf(name), undefined);
  });

  test("an IPv6 Service that does not fit is refused whole and gets a map-full master; it lands once there is room", async () => {
    const { maps: m } = maps({ services: 4 });
    const r = new LbReconciler(m);
    await r.restore();
    const small = fe("fd00:96::1", [b6(1)], { service: "ns/a" });
    const big = fe("fd00:96::2", [b6(2), b6(3), b6(4)], { service: "ns/b" });
    const s = await r.apply(model([small, big]));
    assert.deepEqual(
      s.notProgrammed!.map((n) => [n.service, n.maps, n.needed]),
      [["ns/b", [MAP_NAMES.services6], { [MAP_NAMES.services6]: 4 }]],
    );
    assert.deepEqual(
      svc6(m).filter((l) => l.startsWith("[")),
      [`[fd00:96::1]:80 count=1 flags=${SVC_F_MASQ_OUTSIDE}`, `[fd00:96::2]:80 count=0 flags=${SVC_F_MAP_FULL}`],
    );
    assert.deepEqual([...ids6(m).keys()], ["fd00:10:244::1"], "no backend of the refused Service");
    // The small one leaves: now the big one fits and replaces its map-full master.
    const s2 = await r.apply(model([big]));
    assert.deepEqual(s2.notProgrammed, []);
    assert.deepEqual(
      svc6(m).filter((l) => l.startsWith("[")),
      [`[fd00:96::2]:80 count=3 flags=${SVC_F_MASQ_OUTSIDE}`],
    );
    assert.equal(m.backends6.entries().count, 3);
  });

  test("an IPv6 encoding that throws is rolled back: the Service keeps what it had, other Services apply", async () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    await r.restore();
    const good = [fe("10.96.0.50", [be("10.244.1.5")]), v6([b6(5)])];
    await r.apply(model(good));
    const before = { svc: svc6(m), be: [...ids6(m)], v4: m.services.entries().count };
    // An IPv4 backend in an IPv6 frontend cannot be written (lb6.ts throws after ids and other entries were put).
    const broken = [fe("10.96.0.50", [be("10.244.1.5"), be("10.244.1.6")]), v6([b6(5), be("10.244.1.7")])];
    const other = fe("10.96.0.60", [be("10.244.2.1")], { service: "default/other" });
    const s = await r.apply(model([...broken, other]));
    assert.ok(
      s.skipped.length === 2 && s.skipped.every((x) => /cannot be encoded.*not an IPv6 backend/.test(x.reason)),
    );
    assert.deepEqual({ svc: svc6(m), be: [...ids6(m)], v4: m.services.entries().count - 2 }, before);
    assert.ok(
      frontendsFromMaps(m).some((f) => f.service === "default/other"),
      "the other Service applied",
    );
    // Fixed again: converges to what a fresh reconciler writes.
    await r.apply(model([...good, other]));
    const fresh = maps();
    const r2 = new LbReconciler(fresh.maps);
    await r2.restore();
    await r2.apply(model([...good, other]));
    assert.deepEqual(frontendsFromMaps(m), frontendsFromMaps(fresh.maps));
  });
});
