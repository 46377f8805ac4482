// Side-by-side migration of pinned maps: when the pins under the bpffs directory are of an older
// layout (the v1 names) or of another size than configured, the new maps are created next to them,
// filled from them (converted where the layout changed), the programs are swapped to the new maps
// (tc filter replace is atomic), the flow tables are topped up with what the old programs created in
// the meantime, and only then are the old pins removed. An established flow keeps its conntrack
// entry throughout, so it is never re-balanced or left without reverse translation.
//
// Crash safety: the old pins are the source of truth until finish(); maps of an existing name but a
// different size are created under a staging directory and renamed into place at the very end, so a
// daemon killed half-way finds the old pins intact and starts over (a stale staging directory is
// removed first).
import { existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import * as native from "../../native/index.js";
import type { MapHandle } from "../../native/index.js";
import { MAP_NAMES, backend as backendCodec, ctEntry, u32Key } from "./abi.js";
import { convertV1Entry, V1_MAPS, type V1MapName } from "./migrate-v1.js";
import { log } from "../../log.js";

// bpffs refuses names with a dot.
export const STAGING_DIR = "bpfproxy_staging";

/** v2 map name → current name of maps whose layout changed since v2: the conntrack entry carries its
 * backend's address and port (bpx_ct_v3; v2's 24 bytes are its first 24). */
const V2_MAPS: Record<string, string> = { bpx_ct_v2: MAP_NAMES.conntrack };
const CT_V2_VALUE_SIZE = 24;

/** Maps whose entries are worth carrying over (config is rewritten at start; counters restart). */
const CARRIED = new Set<string>([
  MAP_NAMES.services,
  MAP_NAMES.backends,
  MAP_NAMES.revNat,
  MAP_NAMES.svcMeta,
  MAP_NAMES.conntrack,
  MAP_NAMES.affinity,
]);
/** Flow state the old programs keep writing until the swap: copied again after it. */
const FLOW_MAPS = new Set<string>([MAP_NAMES.conntrack, MAP_NAMES.affinity]);

interface Source {
  /** Map of the new object this feeds. */
  target: string;
  /** Where the old map is pinned now. */
  oldPath: string;
  old: native.BpfMap;
  /** Converts one old entry (v1 layouts); identity for a resize. */
  convert: (key: Buffer, value: Buffer) => { key: Buffer; value: Buffer };
  /** Conntrack of a layout without the backend's address (v1, v2): filled from the backends map. */
  fillBackend?: boolean;
  /** For a resize: the new map's pin path while both exist (renamed to oldPath at the end). */
  stagedPath?: string;
}

export interface MigrationReport {
  /** "v1" (older layout), "resize" (same layout, other size), or both. */
  reasons: string[];
  copied: Record<string, number>;
  /** Entries that did not fit the new map (it is smaller than what the old one held). */
  dropped: Record<string, number>;
}

/**
 * Looks at the pins before load and sets up the object so that load() creates new maps where the
 * pinned ones cannot be reused. Returns undefined when there is nothing to migrate.
 */
export class PinMigration {
  private constructor(
    private readonly bpffs: string,
    private readonly sources: Source[],
    readonly reasons: string[],
  ) {}

  static prepare(
    obj: native.BpfObject,
    bpffs: string,
    wanted: Map<string, { type: number; keySize: number; valueSize: number; maxEntries: number }>,
  ): PinMigration | undefined {
    const staging = join(bpffs, STAGING_DIR);
    removeDir(staging); // left by a daemon killed half-way: its old pins are still in place
    const sources: Source[] = [];
    const reasons = new Set<string>();
    for (const [name, want] of wanted) {
      const path = join(bpffs, name);
      if (!existsSync(path)) continue;
      const old = native.BpfMap.openPinned(path);
      const i = old.info;
      if (
        i.type === want.type &&
        i.keySize === want.keySize &&
        i.valueSize === want.valueSize &&
        i.maxEntries === want.maxEntries
      ) {
        old.close();
        continue; // libbpf reuses it
      }
      if (i.type !== want.type || i.keySize !== want.keySize || i.valueSize !== want.valueSize) {
        // A layout change without a new name would be a bug in the ABI versioning; refuse rather than guess.
        old.close();
        if (!CARRIED.has(name)) {
          // counters/config: nothing to carry over, a fresh map replaces it.
          mkdirSync(staging, { recursive: true });
          obj.setMapPinPath(name, join(staging, name));
          sources.push({
            target: name,
            oldPath: path,
            old: native.BpfMap.openPinned(path),
            convert: () => {
              throw new Error("not carried");
            },
            stagedPath: join(staging, name),
          });
          reasons.add("layout");
          continue;
        }
        throw new Error(
          `pinned map ${path} has another layout than this build's (key ${i.keySize}/${want.keySize}, value ${i.valueSize}/${want.valueSize} bytes): remove it with \`bpfproxy cleanup\``,
        );
      }
      mkdirSync(staging, { recursive: true });
      obj.setMapPinPath(name, join(staging, name));
      sources.push({
        target: name,
        oldPath: path,
        old,
        convert: (key, value) => ({ key, value }),
        stagedPath: join(staging, name),
      });
      reasons.add("resize");
    }
    for (const [oldName, target] of Object.entries(V1_MAPS)) {
      const path = join(bpffs, oldName);
      if (!existsSync(path)) continue;
      sources.push({
        target,
        oldPath: path,
        old: native.BpfMap.openPinned(path),
        convert: (k, v) => convertV1Entry(oldName as V1MapName, k, v),
        fillBackend: target === MAP_NAMES.conntrack,
      });
      reasons.add("v1");
    }
    for (const [oldName, target] of Object.entries(V2_MAPS)) {
      const path = join(bpffs, oldName);
      if (!existsSync(path)) continue;
      sources.push({
        target,
        oldPath: path,
        old: native.BpfMap.openPinned(path),
        convert: (key, value) => {
          const v = Buffer.alloc(ctEntry.size);
          value.copy(v, 0, 0, CT_V2_VALUE_SIZE);
          return { key, value: v };
        },
        fillBackend: true,
      });
      reasons.add("v2");
    }
    if (sources.length === 0) return undefined;
    return new PinMigration(bpffs, sources, [...reasons]);
  }

  /** After load, before the programs are attached: fills the new maps from the old ones. */
  async copy(open: (name: string) => MapHandle): Promise<MigrationReport> {
    const report: MigrationReport = { reasons: this.reasons, copied: {}, dropped: {} };
    for (const s of this.sources) {
      if (!CARRIED.has(s.target)) continue;
      const { written, dropped } = await copyEntries(s, open(s.target), false, open);
      report.copied[s.target] = (report.copied[s.target] ?? 0) + written;
      if (dropped) report.dropped[s.target] = (report.dropped[s.target] ?? 0) + dropped;
    }
    return report;
  }

  /**
   * After the new programs are attached everywhere: copies the flows the old programs created since
   * copy() (entries the new maps do not have yet), then removes the old pins and moves staged ones
   * into place.
   */
  async finish(open: (name: string) => MapHandle): Promise<number> {
    let topped = 0;
    for (const s of this.sources) {
      if (FLOW_MAPS.has(s.target)) topped += (await copyEntries(s, open(s.target), true, open)).written;
    }
    for (const s of this.sources) {
      s.old.close();
      unlinkSync(s.oldPath);
      if (s.stagedPath) renameSync(s.stagedPath, s.oldPath);
    }
    removeDir(join(this.bpffs, STAGING_DIR));
    return topped;
  }

  /** Closes the old maps' handles without touching any pin (start failed). */
  abandon(): void {
    for (const s of this.sources) s.old.close();
  }
}

/**
 * A conntrack entry of an older layout (no backend address) gets its backend's address and port from the
 * new backends map (filled before conntrack: its source comes first); a backend that is gone leaves them
 * zero, which the data plane handles as today's stale entry (the flow ends, docs/conntrack.md).
 */
function withBackend(value: Buffer, backends: MapHandle): Buffer {
  const e = ctEntry.decode(value);
  const raw = backends.lookup(u32Key.encode(e.backendId));
  if (!raw) return value;
  const b = backendCodec.decode(raw);
  return ctEntry.encode({ ...e, backendAddr: b.address, backendPort: b.port });
}

async function copyEntries(
  s: Source,
  to: MapHandle,
  onlyMissing: boolean,
  open: (name: string) => MapHandle,
): Promise<{ written: number; dropped: number }> {
  const backends = s.fillBackend ? open(MAP_NAMES.backends) : undefined;
  const { keys, values, count } = await s.old.entriesAsync();
  const ks = s.old.info.keySize;
  const vs = s.old.valueSizeAll;
  let have: Set<string> | undefined;
  if (onlyMissing) {
    const cur = await to.entriesAsync();
    const tks = to.info.keySize;
    have = new Set();
    for (let i = 0; i < cur.count; i++) have.add(cur.keys.toString("latin1", i * tks, (i + 1) * tks));
  }
  const outK: Buffer[] = [];
  const outV: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const e = s.convert(keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs));
    if (have?.has(e.key.toString("latin1"))) continue;
    outK.push(e.key);
    outV.push(backends ? withBackend(e.value, backends) : e.value);
  }
  // Never more than the new map holds: a hash map refuses the rest (E2BIG), an LRU would evict
  // entries just copied. What is left out is counted and logged.
  const room = Math.max(0, to.info.maxEntries - (onlyMissing ? have!.size : 0));
  const n = Math.min(outK.length, room);
  if (n > 0) await to.updateBatchAsync(Buffer.concat(outK.slice(0, n)), Buffer.concat(outV.slice(0, n)), n);
  const dropped = outK.length - n;
  if (dropped) log.warn("migration: the new map is smaller than what the old one held", { map: s.target, dropped });
  return { written: n, dropped };
}

function removeDir(dir: string): void {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) unlinkSync(join(dir, f));
  rmdirSync(dir);
}
