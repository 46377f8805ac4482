// The reconciler against in-memory maps with kernel semantics: what it writes, in which order,
// and that it converges, restores and never reuses an id within a pass.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { FakeMap } from "../src/native/fake-map.js";
import { LbReconciler, type LbMaps } from "../src/dataplane/reconcile.js";
import { frontendsFromMaps } from "../src/dataplane/status.js";
import { desiredNodePortAddrs } from "../src/dataplane/desired.js";
import { backend, svcKey, svcValue, u16Key, u32Key, MAP_CODECS, MAP_NAMES, SVC_F_AFFINITY } from "../src/dataplane/abi.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";

type Op = { map: string; op: "upsert" | "delete"; what: string };

class RecordingMap extends FakeMap {
  constructor(readonly label: string, name: keyof typeof MAP_CODECS, private readonly log: Op[]) {
    super({ name, keySize: MAP_CODECS[name].key.size, valueSize: MAP_CODECS[name].value.size, maxEntries: 65536 });
  }
  private describe(key: Buffer): string {
    if (this.label === "services") {
      const k = svcKey.decode(key);
      return `${k.address}:${k.port}#${k.slot}`;
    }
    return String(this.label === "backends" ? u32Key.decode(key) : u16Key.decode(key));
  }
  override updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void {
    super.updateBatch(keys, values, count, flags);
    const ks = this.info.keySize;
    for (let i = 0; i < count; i++) this.log.push({ map: this.label, op: "upsert", what: this.describe(keys.subarray(i * ks, (i + 1) * ks)) });
  }
  override deleteBatch(keys: Buffer, count: number): number {
    const n = super.deleteBatch(keys, count);
    const ks = this.info.keySize;
    for (let i = 0; i < count; i++) this.log.push({ map: this.label, op: "delete", what: this.describe(keys.subarray(i * ks, (i + 1) * ks)) });
    return n;
  }
}

function maps(): { maps: LbMaps & Record<string, RecordingMap>; log: Op[] } {
  const log: Op[] = [];
  return {
    log,
    maps: {
      services: new RecordingMap("services", MAP_NAMES.services, log),
      backends: new RecordingMap("backends", MAP_NAMES.backends, log),
      revNat: new RecordingMap("revNat", MAP_NAMES.revNat, log),
      svcMeta: new RecordingMap("svcMeta", MAP_NAMES.svcMeta, log),
    },
  };
}

const be = (address: string, port = 8080, state: BackendModel["state"] = "active"): BackendModel => ({ address, port, state, nodeLocal: true });

function fe(address: string, backends: BackendModel[], over: Partial<Frontend> = {}): Frontend {
  return {
    service: "default/web", portName: "http", type: "ClusterIP", address, port: 80, protocol: "TCP", scope: "internal",
    sessionAffinity: { type: "None" }, algorithm: "random", backends, ...over,
  };
}

function model(frontends: Frontend[], retained: BackendModel[][] = []): NodeModel {
  return { node: "node-a", frontends, extras: frontends.map((_, i) => ({ retainedBackends: retained[i] ?? [], sourceRanges: [] })) };
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

const indexOf = (log: Op[], map: string, op: Op["op"], what?: string) => log.findIndex((o) => o.map === map && o.op === op && (what === undefined || o.what === what));
const lastIndexOf = (log: Op[], map: string, op: Op["op"]) => log.map((o) => o.map === map && o.op === op).lastIndexOf(true);

describe("LB reconciler", () => {
  test("a new service is written backends first and its master entry last", () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    r.restore();
    const stats = r.apply(model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]));
    assert.equal(stats.deletes, 0);
    assert.equal(stats.upserts, 2 + 1 + 1 + 3);
    const master = indexOf(log, "services", "upsert", "10.96.0.10:80#0");
    assert.ok(master === log.length - 1, JSON.stringify(log));
    assert.ok(lastIndexOf(log, "backends", "upsert") < indexOf(log, "services", "upsert", "10.96.0.10:80#1"));
    assert.ok(indexOf(log, "revNat", "upsert") < master);
  });

  test("the maps read back as the same frontends (status shape equals render shape)", () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    r.restore();
    const frontends = [
      fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6", 8080, "terminating")], { sessionAffinity: { type: "ClientIP", timeoutSeconds: 600 } }),
      fe("10.96.0.11", [], { service: "default/empty", portName: "" }),
      fe("192.0.2.11", [be("10.244.2.7", 9090)], { type: "NodePort", scope: "external", port: 30080, protocol: "UDP", service: "default/np" }),
    ];
    r.apply(model(frontends));
    // A NodePort is one wildcard entry, listed once per node address that serves NodePorts.
    const nodePortAddrs = new FakeMap({ name: MAP_NAMES.nodePortAddrs, keySize: 4, valueSize: 4, maxEntries: 256 });
    for (const e of desiredNodePortAddrs({ ...model(frontends), nodePortIPs: ["192.0.2.11"] }).values()) nodePortAddrs.update(e.key, e.value);
    assert.deepEqual(frontendsFromMaps({ ...m, nodePortAddrs }), [frontends[1], frontends[2], frontends[0]]); // sorted by service
    const masterRaw = m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 }))!;
    const master = svcValue.decode(masterRaw);
    assert.equal(master.flags & SVC_F_AFFINITY, SVC_F_AFFINITY);
    assert.equal(master.affinityTimeout, 600);
  });

  test("applying the same model again writes nothing", () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    r.restore();
    const mod = model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]);
    r.apply(mod);
    const n = log.length;
    assert.deepEqual(r.apply(mod), { upserts: 0, deletes: 0, skipped: [] });
    assert.equal(log.length, n);
  });

  test("removing a backend lowers the count before the stale slot goes, and the backend goes last", () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    r.restore();
    r.apply(model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]));
    const idsBefore = backendIds(m);
    log.length = 0;
    r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    const masterAt = indexOf(log, "services", "upsert", "10.96.0.10:80#0");
    const staleSlotAt = indexOf(log, "services", "delete", "10.96.0.10:80#2");
    const backendAt = indexOf(log, "backends", "delete");
    assert.ok(masterAt >= 0 && staleSlotAt > masterAt && backendAt > staleSlotAt, JSON.stringify(log));
    assert.equal(backendIds(m).get("10.244.1.5:8080"), idsBefore.get("10.244.1.5:8080"), "kept backend keeps its id");
    assert.equal(backendIds(m).size, 1);
  });

  test("removing a frontend deletes its master before its slots, then rev-NAT, metadata and backends", () => {
    const { maps: m, log } = maps();
    const r = new LbReconciler(m);
    r.restore();
    r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    log.length = 0;
    r.apply(model([]));
    assert.deepEqual(log.map((o) => `${o.map}:${o.op}:${o.what}`), [
      "services:delete:10.96.0.10:80#0",
      "services:delete:10.96.0.10:80#1",
      "revNat:delete:1",
      "svcMeta:delete:1",
      "backends:delete:1",
    ]);
    for (const map of Object.values(m)) assert.equal(map.entries().count, 0);
  });

  test("an id freed in a pass is not reused in the same pass", () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    r.restore();
    r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
    const oldId = backendIds(m).get("10.244.1.5:8080");
    r.apply(model([fe("10.96.0.10", [be("10.244.1.9")])]));
    assert.notEqual(backendIds(m).get("10.244.1.9:8080"), oldId);
  });

  test("a restarted reconciler restores ids from the maps and rewrites nothing", () => {
    const { maps: m, log } = maps();
    const mod = model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")]), fe("10.96.0.11", [be("10.244.1.7")], { service: "default/b" })]);
    const first = new LbReconciler(m);
    first.restore();
    first.apply(mod);
    const ids = backendIds(m);
    log.length = 0;
    const second = new LbReconciler(m);
    second.restore();
    assert.deepEqual(second.apply(mod), { upserts: 0, deletes: 0, skipped: [] });
    assert.equal(log.length, 0);
    // A new backend gets a fresh id, not one in use.
    second.apply(model([...mod.frontends.slice(0, 1), fe("10.96.0.11", [be("10.244.1.7"), be("10.244.1.8")], { service: "default/b" })]));
    const after = backendIds(m);
    for (const [k, id] of ids) assert.equal(after.get(k), id, k);
    assert.ok(![...ids.values()].includes(after.get("10.244.1.8:8080")!));
  });

  test("a failed kernel write leaves bookkeeping true to the kernel, and the next pass converges", () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    r.restore();
    const mod = model([fe("10.96.0.10", [be("10.244.1.5"), be("10.244.1.6")])]);
    (m.services as FakeMap).failNthWrite(2, "ENOMEM");
    assert.throws(() => r.apply(mod), (e: Error & { code?: string }) => e.code === "ENOMEM");
    // The master entry must not be live: the failure happened while writing slots.
    assert.equal(m.services.lookup(svcKey.encode({ address: "10.96.0.10", port: 80, proto: 6, scope: 1, slot: 0 })), null);
    r.apply(mod);
    assert.deepEqual(frontendsFromMaps(m), mod.frontends);
    assert.deepEqual(r.apply(mod), { upserts: 0, deletes: 0, skipped: [] });
  });

  test("retained (terminating) backends stay in the backend map without a slot", () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    r.restore();
    r.apply(model([fe("10.96.0.10", [be("10.244.1.5")])], [[be("10.244.1.6", 8080, "terminating")]]));
    assert.deepEqual([...backendIds(m).keys()].sort(), ["10.244.1.5:8080", "10.244.1.6:8080"]);
    assert.deepEqual(frontendsFromMaps(m)[0]!.backends.map((b) => b.address), ["10.244.1.5"]);
  });

  test("frontends the BPF data plane cannot serve are reported, not written", () => {
    const { maps: m } = maps();
    const r = new LbReconciler(m);
    r.restore();
    const stats = r.apply(model([fe("10.96.0.10", [be("10.244.1.5")], { protocol: "SCTP" })]));
    assert.equal(stats.skipped.length, 1);
    assert.match(stats.skipped[0]!.reason, /SCTP/);
    assert.equal(m.services.entries().count, 0);
  });
});
