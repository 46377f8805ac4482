// Keeps one small map equal to desired contents (node addresses serving NodePorts, source ranges):
// the same mirror-and-diff as the load-balancer reconciler, for maps that no other map points into.
import type { MapHandle } from "../../native/index.js";
import { bytes, type Contents } from "./desired.js";
import { readContents } from "./map-contents.js";

function diff(desired: Contents, actual: Contents): { upserts: [string, string][]; deletes: string[] } {
  const upserts: [string, string][] = [];
  const deletes: string[] = [];
  for (const [k, v] of desired) if (actual.get(k) !== v) upserts.push([k, v]);
  for (const k of actual.keys()) if (!desired.has(k)) deletes.push(k);
  return { upserts, deletes };
}

export class MapSync {
  private actual: Contents = new Map();

  constructor(private readonly map: MapHandle) {}

  restore(): void {
    this.actual = readContents(this.map);
  }

  get contents(): Contents {
    return this.actual;
  }

  /** Writes additions and changes first, then removes what is no longer desired. Returns the writes. */
  apply(desired: Contents): { upserts: number; deletes: number } {
    const d = diff(desired, this.actual);
    try {
      for (const [k, v] of d.upserts) {
        this.map.update(bytes(k), bytes(v));
        this.actual.set(k, v);
      }
      for (const k of d.deletes) {
        this.map.delete(bytes(k));
        this.actual.delete(k);
      }
    } catch (err) {
      this.restore();
      throw err;
    }
    return { upserts: d.upserts.length, deletes: d.deletes.length };
  }
}
