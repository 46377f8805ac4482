// A BPF map's entries as latin1 key → value strings (desired.ts's Contents): the mirror that both
// mirror-and-diff reconcilers (the load-balancer maps, MapSync's small maps) keep and diff against.
import type { MapEntries, MapHandle } from "../../native/index.js";
import type { Contents } from "./desired.js";

/** Adds entries [from, to) of a dump of `m` to `into`. Values span every CPU on per-CPU maps. */
function decode(into: Contents, m: MapHandle, e: MapEntries, from: number, to: number): void {
  const ks = m.info.keySize;
  const vs = m.valueSizeAll;
  for (let i = from; i < to; i++)
    into.set(e.keys.toString("latin1", i * ks, (i + 1) * ks), e.values.toString("latin1", i * vs, (i + 1) * vs));
}

/** Reads a small map at once. */
export function readContents(m: MapHandle): Contents {
  const e = m.entries();
  const c: Contents = new Map();
  decode(c, m, e, 0, e.count);
  return c;
}

/**
 * Reads a big map off the event loop and decodes it `yieldEvery` entries at a time, yielding between chunks so
 * that the loop (and /healthz) keeps answering while hundreds of thousands of entries are read.
 */
export async function readContentsAsync(m: MapHandle, yieldEvery: number): Promise<Contents> {
  if (!(yieldEvery >= 1)) throw new RangeError(`readContentsAsync: yieldEvery must be 1 or more, got ${yieldEvery}`);
  const e = await m.entriesAsync();
  const c: Contents = new Map();
  for (let i = 0; i < e.count; i += yieldEvery) {
    decode(c, m, e, i, Math.min(e.count, i + yieldEvery));
    if (i + yieldEvery < e.count) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return c;
}
