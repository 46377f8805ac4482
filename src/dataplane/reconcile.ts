// Writes the desired load-balancer map contents into the kernel, touching only what
// differs, in make-before-break order so that a lookup racing the update never finds a
// slot pointing nowhere:
//   backends → rev-NAT/metadata → backend slots → master entries (their count makes new
//   slots live) → removed masters → stale slots → stale rev-NAT/metadata → orphan backends.
// The in-memory mirror of the kernel changes only after a write succeeded; after a failed
// write the mirror is re-read from the kernel, so the next pass is a correct full diff.
import type { MapHandle } from "../native/index.js";
import { backend, svcKey, svcValue, u32Key, u16Key } from "./abi.js";
import { backendName, desiredContents, emptyLbContents, frontendName, newIds, type Contents, type Ids, type LbContents } from "./desired.js";
import type { NodeModel } from "../model/types.js";

export interface LbMaps {
  services: MapHandle;
  backends: MapHandle;
  revNat: MapHandle;
  svcMeta: MapHandle;
}

export interface ApplyStats {
  upserts: number;
  deletes: number;
  /** Frontends present in the model but not programmable (e.g. SCTP). */
  skipped: { service: string; address: string; port: number; protocol: string; reason: string }[];
}

export function readContents(m: MapHandle): Contents {
  const { keys, values, count } = m.entries();
  const ks = m.info.keySize;
  const vs = m.info.valueSize;
  const c: Contents = new Map();
  for (let i = 0; i < count; i++) {
    const key = Buffer.from(keys.subarray(i * ks, (i + 1) * ks));
    c.set(key.toString("latin1"), { key, value: Buffer.from(values.subarray(i * vs, (i + 1) * vs)) });
  }
  return c;
}

export interface Delta {
  upserts: { key: Buffer; value: Buffer }[];
  deletes: Buffer[];
}

export function diff(desired: Contents, actual: Contents): Delta {
  const upserts: Delta["upserts"] = [];
  const deletes: Buffer[] = [];
  for (const [k, e] of desired) {
    const cur = actual.get(k);
    if (!cur || !cur.value.equals(e.value)) upserts.push(e);
  }
  for (const [k, e] of actual) if (!desired.has(k)) deletes.push(e.key);
  return { upserts, deletes };
}

const isMaster = (key: Buffer) => svcKey.decode(key).slot === 0;

export class LbReconciler {
  private actual: LbContents = emptyLbContents();
  private ids: Ids = newIds();

  constructor(private readonly maps: LbMaps) {}

  /** Rebuilds the mirror and the id tables from what the kernel holds (start-up, after errors). */
  restore(): void {
    this.actual = {
      services: readContents(this.maps.services),
      backends: readContents(this.maps.backends),
      revNat: readContents(this.maps.revNat),
      svcMeta: readContents(this.maps.svcMeta),
    };
    this.ids = newIds();
    for (const { key, value } of this.actual.backends.values()) {
      const b = backend.decode(value);
      this.ids.backends.restore(backendName(b.address, b.port, b.proto), u32Key.decode(key));
    }
    for (const { key, value } of this.actual.services.values()) {
      const k = svcKey.decode(key);
      if (k.slot === 0) this.ids.revNat.restore(frontendName(k.address, k.port, k.proto), svcValue.decode(value).revNatId);
    }
    // rev-NAT ids whose master is gone but whose entry survived (an interrupted pass) stay reserved.
    for (const { key } of this.actual.revNat.values()) {
      const id = u16Key.decode(key);
      if (!this.ids.revNat.isTaken(id)) this.ids.revNat.restore(`orphan:${id}`, id);
    }
  }

  /** Current mirror (what the kernel holds as far as this reconciler knows). */
  get contents(): LbContents {
    return this.actual;
  }

  apply(model: NodeModel): ApplyStats {
    const { contents: desired, skipped } = desiredContents(model, this.ids);
    const d = {
      services: diff(desired.services, this.actual.services),
      backends: diff(desired.backends, this.actual.backends),
      revNat: diff(desired.revNat, this.actual.revNat),
      svcMeta: diff(desired.svcMeta, this.actual.svcMeta),
    };
    const slotUpserts = d.services.upserts.filter((e) => !isMaster(e.key));
    const masterUpserts = d.services.upserts.filter((e) => isMaster(e.key));
    const masterDeletes = d.services.deletes.filter(isMaster);
    const slotDeletes = d.services.deletes.filter((k) => !isMaster(k));

    try {
      this.upsert("backends", d.backends.upserts);
      this.upsert("revNat", d.revNat.upserts);
      this.upsert("svcMeta", d.svcMeta.upserts);
      this.upsert("services", slotUpserts);
      this.upsert("services", masterUpserts);
      this.remove("services", masterDeletes);
      this.remove("services", slotDeletes);
      this.remove("revNat", d.revNat.deletes);
      this.remove("svcMeta", d.svcMeta.deletes);
      this.remove("backends", d.backends.deletes);
    } catch (err) {
      this.restore();
      throw err;
    }

    // Forget ids the kernel no longer holds.
    const liveBackends = new Set<string>();
    for (const { value } of this.actual.backends.values()) {
      const b = backend.decode(value);
      liveBackends.add(backendName(b.address, b.port, b.proto));
    }
    this.ids.backends.retainOnly(liveBackends);
    const liveFrontends = new Set<string>();
    for (const { key } of this.actual.services.values()) {
      const k = svcKey.decode(key);
      if (k.slot === 0) liveFrontends.add(frontendName(k.address, k.port, k.proto));
    }
    this.ids.revNat.retainOnly(liveFrontends);

    const all = Object.values(d);
    return {
      upserts: all.reduce((n, x) => n + x.upserts.length, 0),
      deletes: all.reduce((n, x) => n + x.deletes.length, 0),
      skipped: skipped.map(({ frontend: f, reason }) => ({ service: f.service, address: f.address, port: f.port, protocol: f.protocol, reason })),
    };
  }

  private upsert(map: keyof LbMaps, entries: { key: Buffer; value: Buffer }[]): void {
    if (entries.length === 0) return;
    const m = this.maps[map];
    m.updateBatch(Buffer.concat(entries.map((e) => e.key)), Buffer.concat(entries.map((e) => e.value)), entries.length);
    for (const e of entries) this.actual[map].set(e.key.toString("latin1"), e);
  }

  private remove(map: keyof LbMaps, keys: Buffer[]): void {
    if (keys.length === 0) return;
    this.maps[map].deleteBatch(Buffer.concat(keys), keys.length);
    for (const k of keys) this.actual[map].delete(k.toString("latin1"));
  }
}
