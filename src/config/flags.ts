// Command-line flag values that have a syntax of their own (the rest are parsed in cli.ts).
import { DEFAULT_MAP_SIZES, type MapSizes } from "../dataplane/bpf/abi.js";

/**
 * Parses --map-sizes "services=N,backends=N,frontends=N,conntrack=N,affinity=N,services6=N,backends6=N,conntrack6=N,
 * affinity6=N" (any subset).
 * Throws naming the bad part.
 */
export function parseMapSizes(text: string): Partial<MapSizes> {
  const out: Partial<MapSizes> = {};
  for (const part of text
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([a-z]+6?)=(\d+)$/.exec(part);
    if (!m || !(m[1]! in DEFAULT_MAP_SIZES)) {
      throw new Error(
        `${JSON.stringify(part)}: expected NAME=ENTRIES with NAME one of ${Object.keys(DEFAULT_MAP_SIZES).join(", ")}`,
      );
    }
    out[m[1] as keyof MapSizes] = Number(m[2]);
  }
  return out;
}
