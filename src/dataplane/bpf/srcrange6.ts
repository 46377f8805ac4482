// loadBalancerSourceRanges of IPv6 frontends into bpx_srcrange6_v1 (bpf/lib/srcrange6.h), as desired.ts writes
// IPv4's into bpx_srcrange_v1: one LPM entry per (frontend id, IPv6 CIDR), host bits cleared. The frontend's
// master must carry SVC_F_SOURCE_RANGES (encodeFrontend6's sourceRanges extra sets it).
import type { MapHandle } from "../../native/index.js";
import { bytesToIpv6, ipv6ToBytes, parseCIDR } from "../../k8s/ip.js";
import { srcRange6Key, u32Key } from "./abi.js";

/** The LPM entries (key -> value, latin1 strings as Lb6Contents) of a frontend's IPv6 source ranges. */
export function encodeSourceRanges6(revNatId: number, cidrs: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of cidrs) {
    const c = parseCIDR(s);
    if (!c || c.family !== 6) throw new Error(`not an IPv6 CIDR: ${s}`);
    const b = ipv6ToBytes(c.address);
    for (let i = 0; i < 16; i++) {
      const keep = Math.max(0, Math.min(8, c.prefix - i * 8));
      b[i] = b[i]! & ((0xff << (8 - keep)) & 0xff);
    }
    out.set(srcRange6Key.encodeBin({ prefixlen: 32 + c.prefix, revNatId, addr: bytesToIpv6(b) }), u32Key.encodeBin(1));
  }
  return out;
}

export function writeSourceRanges6(map: MapHandle, entries: Map<string, string>): void {
  for (const [k, v] of entries) map.update(Buffer.from(k, "latin1"), Buffer.from(v, "latin1"));
}
