// Writes the desired load-balancer map contents into the kernel, touching only what differs.
//
// Cost O(change): the entries of each Service are encoded once and kept; a sync re-encodes only the
// Services whose frontends changed (the model cache hands back the very same Frontend objects for an
// unchanged Service) and diffs only their keys. A full sync (start, periodic, after an error) re-reads
// the kernel and compares everything.
//
// Order: removals first, so a full map never blocks the changes that would make room; then
// make-before-break so a lookup racing the update never finds a slot pointing nowhere:
//   removed masters → masters whose count shrinks → stale slots → stale rev-NAT/metadata →
//   stale Maglev tables and affinity members → unreferenced backends → new backends →
//   rev-NAT/metadata → slots → Maglev tables and affinity members → masters (their count and flags
//   make them live) → backends that slots or Maglev tables named until this pass.
//
// Capacity: before writing, the new keys of each changed Service are counted against the room each
// map has after the removals. A Service that does not fit is not written at all (its frontends keep
// what they had, or stay absent when new), is reported with the map that is full, and is tried again
// on the next sync; every other Service is applied. So no frontend is ever half written and a full
// map never stops removals or other Services' changes. Keys can be shared (a backend of two Services): such
// a key is charged once, to the first admitted Service wanting it, and written whenever any admitted Service
// wants it.
//
// A Service whose new encoding throws (a field the map layout cannot hold) keeps its old encoding and is
// reported with its frontends as skipped: encoding happens before the old encoding is released.
//
// The in-memory mirror of the kernel changes only after a write succeeded; after a failed write the
// mirror is re-read from the kernel, so the next pass is a correct full diff.
import { sameRefs } from "../../model/build.js";
import type { MapHandle } from "../../native/index.js";
import { IPPROTO_UDP, backend, svcKey, svcValue, u32Key } from "./abi.js";
import {
  backendName,
  emptyLbContents,
  encodeFrontend,
  frontendName,
  isMasterKey,
  newIds,
  serviceGroups,
  type Contents,
  type IdName,
  type Ids,
  type LbContents,
} from "./desired.js";
import { servingPairs } from "./udp-flows.js";
import { readContentsAsync } from "./map-contents.js";
import { deleteBatch, updateBatch } from "./batch.js";
import type { Frontend, FrontendExtras, NodeModel } from "../../model/types.js";

export interface LbMaps {
  services: MapHandle;
  backends: MapHandle;
  revNat: MapHandle;
  svcMeta: MapHandle;
  maglev: MapHandle;
  affinityMatch: MapHandle;
}
type MapName = keyof LbMaps;
const MAPS: readonly MapName[] = ["services", "backends", "revNat", "svcMeta", "maglev", "affinityMatch"];

/** One empty record per map. */
function perMap<T>(make: () => T): Record<MapName, T> {
  return { services: make(), backends: make(), revNat: make(), svcMeta: make(), maglev: make(), affinityMatch: make() };
}

export interface NotProgrammed {
  service: string;
  /** The maps without room for the Service's new entries. */
  maps: string[];
  /** New entries the Service needed in each of those maps. */
  needed: Record<string, number>;
}

export interface ApplyStats {
  upserts: number;
  deletes: number;
  /** Frontends present in the model but not programmable (e.g. SCTP). */
  skipped: { service: string; address: string; port: number; protocol: string; reason: string }[];
  /** Map entries encoded by this pass (O(change) for incremental passes). */
  encoded?: number;
  /** Services re-encoded by this pass. */
  servicesEncoded?: number;
  /** Services left out because a map was full (kept as before; retried on the next sync). */
  notProgrammed?: NotProgrammed[];
  /**
   * "revNatId/backendId" pairs of UDP frontends (a frontend sending new flows to a backend) that changed or
   * removed Services no longer have: flows of such a pair went to a backend that stopped serving that frontend. O(change).
   */
  lostServing?: Set<string>;
  /**
   * Services whose kernel entries may still be an older encoding than the model's (refused for room, or an
   * encoding that threw): whatever covers their old entries (the pre-filter's bits) must stay until they leave.
   */
  heldBack?: ReadonlySet<string>;
}

/**
 * "revNatId/backendId" of every UDP backend slot in one Service's service-map contents: only UDP flows are
 * flushed when their backend stops serving (TCP ones end by themselves, as with kube-proxy), so a TCP-only
 * change never walks the conntrack table.
 */
const udpSlotPairs = (services: Contents) => servingPairs(services, IPPROTO_UDP);

interface ServiceState {
  frontends: Frontend[];
  extras: (FrontendExtras | undefined)[];
  /** This Service's encoded entries per map (latin1 key → latin1 value). */
  contents: LbContents;
  skipped: ApplyStats["skipped"];
}

export interface ReconcilerOptions {
  /** Frontends encoded between yields to the event loop (keeps /healthz answering during big syncs). */
  yieldEvery?: number;
  /** An id was released (its entries are gone): the per-id traffic counters start over for its next owner. */
  onIdReleased?: (kind: "frontend" | "backend", id: number) => void;
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Map entries handled between yields in the loops over whole maps. */
const YIELD_ENTRIES = 20_000;

/** Fixed-size latin1 keys or values packed into one buffer for a batch syscall. */
function pack(list: readonly string[], size: number): Buffer {
  const buf = Buffer.allocUnsafe(list.length * size);
  list.forEach((s, i) => buf.write(s, i * size, size, "latin1"));
  return buf;
}

/** Adds the backend ids a Maglev table value (latin1, little-endian u32 per entry) names. */
function tableBackends(value: string, into: Set<number>): void {
  let last = -1;
  for (let i = 0; i + 3 < value.length; i += 4) {
    const id =
      (value.charCodeAt(i) |
        (value.charCodeAt(i + 1) << 8) |
        (value.charCodeAt(i + 2) << 16) |
        (value.charCodeAt(i + 3) << 24)) >>>
      0;
    if (id !== last) into.add((last = id));
  }
}

const svcCount = (value: string) => svcValue.decodeBin(value).count;
const slotBackend = (value: string) => svcValue.decodeBin(value).backendId;

export class LbReconciler {
  private actual: LbContents = emptyLbContents();
  private ids: Ids = newIds();
  /** Union of every Service's encoding (key → value, latin1); undefined until the first full pass. */
  private wanted: Record<MapName, Map<string, string>> | undefined;
  /**
   * References beyond the first to a wanted key (rev-NAT ids and backends can be shared by Services); only
   * shared keys are here, so the common key costs one Map entry and no object.
   */
  private shared: Record<MapName, Map<string, number>> = perMap(() => new Map<string, number>());
  private services = new Map<string, ServiceState>();
  /** Services with frontends the data plane cannot serve (their ServiceState.skipped is not empty). */
  private withSkipped = new Set<string>();
  /** Keys whose kernel state may still differ from `wanted` (a Service that did not fit). */
  private pending: Record<MapName, Set<string>> = perMap(() => new Set<string>());
  /** Services the kernel may still hold an older encoding of, and why (ApplyStats.heldBack). */
  private readonly heldBack = new Map<string, "room" | "encoding">();
  private readonly yieldEvery: number;
  private readonly onIdReleased: ReconcilerOptions["onIdReleased"];

  constructor(
    private readonly maps: LbMaps,
    opts: ReconcilerOptions = {},
  ) {
    this.yieldEvery = opts.yieldEvery ?? 500;
    this.onIdReleased = opts.onIdReleased;
  }

  /** Rebuilds the mirror and the id tables from what the kernel holds (start-up, full syncs, after errors). */
  async restore(): Promise<void> {
    this.actual = {
      services: await readContentsAsync(this.maps.services, YIELD_ENTRIES),
      backends: await readContentsAsync(this.maps.backends, YIELD_ENTRIES),
      revNat: await readContentsAsync(this.maps.revNat, YIELD_ENTRIES),
      svcMeta: await readContentsAsync(this.maps.svcMeta, YIELD_ENTRIES),
      maglev: await readContentsAsync(this.maps.maglev, YIELD_ENTRIES),
      affinityMatch: await readContentsAsync(this.maps.affinityMatch, YIELD_ENTRIES),
    };
    this.ids = newIds();
    let n = 0;
    for (const [key, value] of this.actual.backends) {
      const b = backend.decodeBin(value);
      this.ids.backends.restore(backendName(b.address, b.port, b.proto), u32Key.decodeBin(key));
      if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
    }
    for (const [key, value] of this.actual.services) {
      if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
      if (!isMasterKey(key)) continue; // a slot: only masters name rev-NAT ids
      const k = svcKey.decodeBin(key);
      this.ids.revNat.restore(frontendName(k.address, k.port, k.proto), svcValue.decodeBin(value).revNatId);
    }
    // rev-NAT ids whose master is gone but whose entry survived (an interrupted pass) stay reserved.
    for (const key of this.actual.revNat.keys()) {
      const id = u32Key.decodeBin(key);
      if (!this.ids.revNat.isTaken(id)) this.ids.revNat.restore(`orphan:${id}`, id);
    }
    // The next pass compares everything.
    this.wanted = undefined;
    this.services.clear();
    this.withSkipped.clear();
    this.heldBack.clear();
    for (const m of MAPS) this.pending[m].clear();
  }

  /** Current mirror (what the kernel holds as far as this reconciler knows). */
  get contents(): LbContents {
    return this.actual;
  }

  /** The rev-NAT id of a frontend ("address:port/proto", frontendName), once one is allocated. */
  revNatIdOf(name: IdName): number | undefined {
    return this.ids.revNat.get(name);
  }

  /**
   * Makes the maps hold the model. Incremental unless `full` (or nothing was applied since the last
   * restore): then every key is compared. `changed`: the only Services whose frontends may differ from
   * the model this reconciler applied last (the model's delta); without it every Service is compared by
   * identity.
   */
  async apply(model: NodeModel, opts: { full?: boolean; changed?: ReadonlySet<string> } = {}): Promise<ApplyStats> {
    const full = opts.full || this.wanted === undefined;
    const candidates: Record<MapName, Set<string>> = perMap(() => new Set<string>());
    if (full) {
      this.wanted = perMap(() => new Map<string, string>());
      this.shared = perMap(() => new Map<string, number>());
      this.services.clear();
      this.withSkipped.clear();
      // Every key is compared (write() walks wanted and actual directly; no candidate sets).
      for (const m of MAPS) this.pending[m].clear();
    }
    const wanted = this.wanted!;
    for (const m of MAPS) for (const k of this.pending[m]) candidates[m].add(k);

    // Which Services changed: new, gone, or their frontends are not the very same objects as last time.
    const groups = serviceGroups(model);
    const visit = !full && opts.changed ? opts.changed : undefined;
    let encoded = 0;
    let servicesEncoded = 0;
    let sinceYield = 0;
    const lostServing = new Set<string>();
    /** Frontends of Services whose new encoding threw (kept as they were; tried again when they change). */
    const notEncoded: ApplyStats["skipped"] = [];
    const lose = (before: ServiceState, after: ServiceState | undefined): void => {
      const keep = after ? udpSlotPairs(after.contents.services) : new Set<string>();
      for (const p of udpSlotPairs(before.contents.services)) if (!keep.has(p)) lostServing.add(p);
    };
    for (const [name, st] of visit ? [...visit].map((n) => [n, this.services.get(n)] as const) : this.services) {
      if (!st || groups.has(name)) continue;
      this.unref(st, candidates);
      this.services.delete(name);
      this.withSkipped.delete(name);
      this.heldBack.delete(name);
      lose(st, undefined);
    }
    for (const [name, g] of visit ? [...visit].map((n) => [n, groups.get(n)] as const) : groups) {
      if (!g) continue;
      const prev = this.services.get(name);
      if (prev && sameRefs(prev.frontends, g.frontends) && sameRefs(prev.extras, g.extras)) continue;
      // Encoded whole before the old encoding is released: an encoding that throws (a field the map layout
      // cannot hold) leaves the Service as it was, and a later pass cannot release the old encoding twice.
      const contents = emptyLbContents();
      const skipped: ApplyStats["skipped"] = [];
      try {
        g.frontends.forEach((fe, i) => {
          const reason = encodeFrontend(fe, g.extras[i], this.ids, contents);
          if (reason)
            skipped.push({ service: fe.service, address: fe.address, port: fe.port, protocol: fe.protocol, reason });
        });
      } catch (err) {
        const reason = `cannot be encoded for the BPF maps: ${(err as Error).message}`;
        for (const fe of g.frontends)
          notEncoded.push({ service: fe.service, address: fe.address, port: fe.port, protocol: fe.protocol, reason });
        if (prev) this.heldBack.set(name, "encoding");
        continue;
      }
      if (prev) this.unref(prev, candidates);
      const st: ServiceState = { frontends: g.frontends, extras: g.extras, contents, skipped };
      for (const m of MAPS) {
        encoded += contents[m].size;
        const want = wanted[m];
        const shared = this.shared[m];
        for (const [k, v] of contents[m]) {
          const size = want.size;
          want.set(k, v); // a shared key takes the last encoder's value
          if (want.size === size) shared.set(k, (shared.get(k) ?? 0) + 1);
          if (!full) candidates[m].add(k);
        }
      }
      this.services.set(name, st);
      this.heldBack.delete(name);
      if (skipped.length) this.withSkipped.add(name);
      else this.withSkipped.delete(name);
      if (prev) lose(prev, st);
      servicesEncoded++;
      sinceYield += g.frontends.length;
      if (sinceYield >= this.yieldEvery) {
        sinceYield = 0;
        await yieldToLoop();
      }
    }

    try {
      const res = await this.write(full ? undefined : candidates);
      // Refused for room: retried (and reported again while refused) on every pass, so one not named now is whole.
      const refused = new Set(res.notProgrammed?.map((n) => n.service));
      for (const [name, why] of this.heldBack) if (why === "room" && !refused.has(name)) this.heldBack.delete(name);
      for (const name of refused) this.heldBack.set(name, "room");
      const skipped = [...[...this.withSkipped].flatMap((n) => this.services.get(n)!.skipped), ...notEncoded];
      return { ...res, skipped, encoded, servicesEncoded, lostServing, heldBack: new Set(this.heldBack.keys()) };
    } catch (err) {
      await this.restore();
      throw err;
    }
  }

  private unref(st: ServiceState, candidates: Record<MapName, Set<string>>): void {
    const wanted = this.wanted!;
    for (const m of MAPS) {
      const shared = this.shared[m];
      for (const k of st.contents[m].keys()) {
        const extra = shared.get(k);
        if (extra === undefined) {
          if (!wanted[m].delete(k)) continue;
        } else if (extra === 1) shared.delete(k);
        else shared.set(k, extra - 1);
        candidates[m].add(k);
      }
    }
  }

  /** Plans and performs the writes for the candidate keys (undefined: every key wanted or held). */
  private async write(candidates: Record<MapName, Set<string>> | undefined): Promise<Omit<ApplyStats, "skipped">> {
    const wanted = this.wanted!;
    const deletes: Record<MapName, string[]> = perMap(() => []);
    const upserts: Record<MapName, { k: string; v: string; existed: boolean }[]> = perMap(() => []);
    let n = 0;
    for (const m of MAPS) {
      const want = wanted[m];
      const actual = this.actual[m];
      const compare = (k: string, v: string | undefined): void => {
        const a = actual.get(k);
        if (v === undefined) {
          if (a !== undefined) deletes[m].push(k);
          else this.releaseId(m, k);
        } else if (a !== v) {
          upserts[m].push({ k, v, existed: a !== undefined });
        }
      };
      if (candidates) {
        for (const k of candidates[m]) {
          if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
          compare(k, want.get(k));
        }
        continue;
      }
      // Every key: the wanted ones, then the held ones nothing wants.
      for (const [k, v] of want) {
        if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
        compare(k, v);
      }
      for (const k of actual.keys()) {
        if (++n % YIELD_ENTRIES === 0) await yieldToLoop();
        if (!want.has(k)) compare(k, undefined);
      }
    }

    // Masters whose count shrinks are lowered before their stale slots go (in place: no room needed).
    const shrinking = upserts.services.filter(
      (u) => u.existed && isMasterKey(u.k) && svcCount(u.v) < svcCount(this.actual.services.get(u.k)!),
    );
    const shrinkingKeys = new Set(shrinking.map((u) => u.k));

    // Backends a slot in the kernel still names until its rewrite: deleted last.
    const namedBySlots = new Set<number>();
    for (const u of upserts.services) {
      if (u.existed && !isMasterKey(u.k)) namedBySlots.add(slotBackend(this.actual.services.get(u.k)!));
    }
    // A Maglev table in the kernel names backends too: a pick-up between a backend's delete and its table's
    // rewrite would find no backend (issue 16 item 6).
    for (const u of upserts.maglev) if (u.existed) tableBackends(this.actual.maglev.get(u.k)!, namedBySlots);
    const backendId = (key: string) => u32Key.decodeBin(key);
    const earlyBackendDeletes = deletes.backends.filter((k) => !namedBySlots.has(backendId(k)));
    const lateBackendDeletes = deletes.backends.filter((k) => namedBySlots.has(backendId(k)));

    // Admission per Service: new keys must fit the room left after the removals.
    const room: Record<MapName, number> = {
      services: this.maps.services.info.maxEntries - (this.actual.services.size - deletes.services.length),
      backends: this.maps.backends.info.maxEntries - (this.actual.backends.size - earlyBackendDeletes.length),
      revNat: this.maps.revNat.info.maxEntries - (this.actual.revNat.size - deletes.revNat.length),
      svcMeta: this.maps.svcMeta.info.maxEntries - (this.actual.svcMeta.size - deletes.svcMeta.length),
      maglev: this.maps.maglev.info.maxEntries - (this.actual.maglev.size - deletes.maglev.length),
      affinityMatch:
        this.maps.affinityMatch.info.maxEntries - (this.actual.affinityMatch.size - deletes.affinityMatch.length),
    };
    // Per-Service accounting only when the new keys together do not fit (a full sync usually fits whole).
    const fitsWhole = MAPS.every((m) => upserts[m].reduce((c, u) => c + (u.existed ? 0 : 1), 0) <= room[m]);
    const notProgrammed: NotProgrammed[] = [];
    const admittedKeys = fitsWhole ? undefined : this.admit(upserts, room, notProgrammed);
    /** Admission is per key: a key is written when any admitted Service wants it (keys can be shared). */
    const admitted = (m: MapName) => (u: { k: string }) => !admittedKeys || admittedKeys[m].has(u.k);

    let nUp = 0;
    let nDel = 0;
    const up = async (m: MapName, list: { k: string; v: string }[]) => {
      nUp += list.length;
      await this.upsert(m, list);
    };
    const del = async (m: MapName, keys: string[]) => {
      nDel += keys.length;
      await this.remove(m, keys);
    };

    // Removals (and lowered counts) first.
    await del("services", deletes.services.filter(isMasterKey));
    await up("services", shrinking);
    await del(
      "services",
      deletes.services.filter((k) => !isMasterKey(k)),
    );
    // A Maglev table or affinity member only matters while a master names it: a missing table falls back
    // to a random slot, a missing member to a new choice.
    await del("maglev", deletes.maglev);
    await del("affinityMatch", deletes.affinityMatch);
    await del("revNat", deletes.revNat);
    await del("svcMeta", deletes.svcMeta);
    await del("backends", earlyBackendDeletes);
    // Then the admitted Services, make-before-break.
    await up("backends", upserts.backends.filter(admitted("backends")));
    await up("revNat", upserts.revNat.filter(admitted("revNat")));
    await up("svcMeta", upserts.svcMeta.filter(admitted("svcMeta")));
    await up(
      "services",
      upserts.services.filter((u) => admitted("services")(u) && !isMasterKey(u.k)),
    );
    await up("maglev", upserts.maglev.filter(admitted("maglev")));
    await up("affinityMatch", upserts.affinityMatch.filter(admitted("affinityMatch")));
    await up(
      "services",
      upserts.services.filter((u) => admitted("services")(u) && isMasterKey(u.k) && !shrinkingKeys.has(u.k)),
    );
    // A slot of a Service left out still names its old backend: that backend stays.
    const stillNamed = new Set<number>();
    for (const u of upserts.services) {
      if (!admitted("services")(u) && u.existed && !isMasterKey(u.k))
        stillNamed.add(slotBackend(this.actual.services.get(u.k)!));
    }
    for (const u of upserts.maglev)
      if (!admitted("maglev")(u) && u.existed) tableBackends(this.actual.maglev.get(u.k)!, stillNamed);
    await del(
      "backends",
      lateBackendDeletes.filter((k) => !stillNamed.has(backendId(k))),
    );

    // What was left out is compared again on the next pass (every pending key was a candidate now).
    for (const m of MAPS) this.pending[m] = new Set(upserts[m].filter((u) => !admitted(m)(u)).map((u) => u.k));
    for (const k of lateBackendDeletes) if (stillNamed.has(backendId(k))) this.pending.backends.add(k);
    return { upserts: nUp, deletes: nDel, notProgrammed };
  }

  /**
   * Which of the keys to write fit, decided per Service in name order: a Service is admitted when the new keys
   * it wants that no Service admitted before it already brought fit the room left; every key it wants is then
   * written. So a key shared by an admitted and a refused Service (a backend, say) is written for the admitted
   * one and charged once. Walks every Service's encoding: only when the new keys together do not fit.
   */
  private admit(
    upserts: Record<MapName, { k: string; existed: boolean }[]>,
    room: Record<MapName, number>,
    notProgrammed: NotProgrammed[],
  ): Record<MapName, Set<string>> {
    const isNew = perMap(() => new Set<string>());
    const toWrite = perMap(() => new Set<string>());
    for (const m of MAPS) {
      for (const u of upserts[m]) {
        toWrite[m].add(u.k);
        if (!u.existed) isNew[m].add(u.k);
      }
    }
    const admittedKeys = perMap(() => new Set<string>());
    const names = [...this.services.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const contents = this.services.get(name)!.contents;
      const need = perMap(() => 0);
      let wants = false;
      for (const m of MAPS) {
        for (const k of contents[m].keys()) {
          if (!toWrite[m].has(k)) continue;
          wants = true;
          if (isNew[m].has(k) && !admittedKeys[m].has(k)) need[m]++;
        }
      }
      if (!wants) continue;
      const full = MAPS.filter((m) => need[m] > room[m]);
      if (full.length) {
        notProgrammed.push({
          service: name,
          maps: full.map((m) => mapLabel(this.maps[m])),
          needed: Object.fromEntries(full.map((m) => [mapLabel(this.maps[m]), need[m]])),
        });
        continue;
      }
      for (const m of MAPS) {
        room[m] -= need[m];
        for (const k of contents[m].keys()) if (toWrite[m].has(k)) admittedKeys[m].add(k);
      }
    }
    return admittedKeys;
  }

  private releaseId(m: MapName, k: string): void {
    if (m === "backends") {
      this.ids.backends.releaseId(u32Key.decodeBin(k));
      this.onIdReleased?.("backend", u32Key.decodeBin(k));
    } else if (m === "revNat" && !this.wanted!.svcMeta.has(k)) {
      this.ids.revNat.releaseId(u32Key.decodeBin(k));
      this.onIdReleased?.("frontend", u32Key.decodeBin(k));
    }
  }

  /** Writes in chunks, yielding between them: a 150,000-entry phase must not hold the event loop. */
  private async upsert(map: MapName, list: readonly { k: string; v: string }[]): Promise<void> {
    const m = this.maps[map];
    for (let at = 0; at < list.length; at += YIELD_ENTRIES) {
      const chunk = list.slice(at, at + YIELD_ENTRIES);
      await updateBatch(
        m,
        pack(
          chunk.map((u) => u.k),
          m.info.keySize,
        ),
        pack(
          chunk.map((u) => u.v),
          m.valueSizeAll,
        ),
        chunk.length,
      );
      for (const u of chunk) this.actual[map].set(u.k, u.v);
    }
  }

  private async remove(map: MapName, keys: readonly string[]): Promise<void> {
    for (let at = 0; at < keys.length; at += YIELD_ENTRIES) {
      const chunk = keys.slice(at, at + YIELD_ENTRIES);
      await deleteBatch(this.maps[map], pack(chunk, this.maps[map].info.keySize), chunk.length);
      for (const k of chunk) {
        this.actual[map].delete(k);
        this.releaseId(map, k);
      }
    }
  }
}

function mapLabel(m: MapHandle): string {
  return m.info.name;
}
