// Keeps one small map equal to desired contents (node addresses serving NodePorts, source ranges):
// the same mirror-and-diff as the load-balancer reconciler, for maps that no other map points into.
import type { MapHandle } from "../native/index.js";
import type { Contents } from "./desired.js";

function readContents(m: MapHandle): Contents {
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

function diff(desired: Contents, actual: Contents): { upserts: { key: Buffer; value: Buffer }[]; deletes: Buffer[] } {
  const upserts: { key: Buffer; value: Buffer }[] = [];
  const deletes: Buffer[] = [];
  for (const [k, e] of desired) {
    const cur = actual.get(k);
    if (!cur || !cur.value.equals(e.value)) upserts.push(e);
  }
  for (const [k, e] of actual) if (!desired.has(k)) deletes.push(e.key);
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
