// IPv6 address arithmetic for the lab and the packet fixtures, over the product's text <-> bytes (src/k8s/ip.ts).

import { isIPv6 } from "node:net";
import { ipv6ToBytes, bytesToIpv6 } from "../k8s/ip.js";

export { ipv6ToBytes, bytesToIpv6 };

/** The network address of `ip`/`bits` and `bits`, e.g. ("fd00:10:244:1::a", 64) -> "fd00:10:244:1::". */
export function ipv6Network(ip: string, bits: number): string {
  if (!Number.isInteger(bits) || bits < 0 || bits > 128) throw new Error(`invalid IPv6 prefix length ${bits}`);
  const b = ipv6ToBytes(ip);
  for (let i = 0; i < 16; i++) {
    const keep = Math.min(8, Math.max(0, bits - i * 8));
    b[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return bytesToIpv6(b);
}

/** Parses "addr/bits" (IPv6); undefined when it is not one. */
export function parseIPv6CIDR(cidr: string): { network: string; bits: number } | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!m || !isIPv6(m[1]!) || Number(m[2]) > 128) return undefined;
  return { network: ipv6Network(m[1]!, Number(m[2])), bits: Number(m[2]) };
}

/** `ip` plus a small offset (added to the last 32 bits, carrying no further). */
export function ipv6Add(ip: string, n: number): string {
  const b = ipv6ToBytes(ip);
  b.writeUInt32BE((b.readUInt32BE(12) + n) >>> 0, 12);
  return bytesToIpv6(b);
}
