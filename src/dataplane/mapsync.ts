// Keeps one small map equal to desired contents (node addresses serving NodePorts, source ranges):
// the same mirror-and-diff as the load-balancer reconciler, for maps that no other map points into.
import type { MapHandle } from "../native/index.js";
import { diff, readContents } from "./reconcile.js";
import type { Contents } from "./desired.js";

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
      for (const e of d.upserts) {
        this.map.update(e.key, e.value);
        this.actual.set(e.key.toString("latin1"), e);
      }
      for (const k of d.deletes) {
        this.map.delete(k);
        this.actual.delete(k.toString("latin1"));
      }
    } catch (err) {
      this.restore();
      throw err;
    }
    return { upserts: d.upserts.length, deletes: d.deletes.length };
  }
}
