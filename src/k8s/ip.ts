// IP and CIDR helpers shared by the schemas and the model. Pure; no I/O.
//
// The model programs IPv4 only. IPv6 literals are accepted by the schemas wherever a dual-stack object may
// carry one (clusterIPs, externalIPs, load-balancer ingress, node addresses, source ranges) so that a
// dual-stack Service is not rejected as a whole; the model then keeps only the IPv4 part.

import { isIPv4, isIPv6 } from "node:net";

export { isIPv4, isIPv6 };

/** True for an IPv4 dotted quad (no leading zeros, as the apiserver requires) or an IPv6 literal. */
export function isIP(s: string): boolean {
  return isIPv4(s) || isIPv6(s);
}

/** IPv4 address as an unsigned 32-bit number; NaN when `s` is not IPv4. */
export function ipv4ToNumber(s: string): number {
  // One pass without allocation (it runs in every backend sort): exactly the dotted quads isIPv4 accepts.
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return NaN;
      n = n * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return NaN; // a leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return NaN;
    } else return NaN;
  }
  if (dots !== 3 || digits === 0) return NaN;
  return n * 256 + part;
}

/** Writes IPv4 address `s` into `buf` at `off` in network byte order (4 bytes); throws when `s` is not IPv4. */
export function writeIPv4(buf: Buffer, off: number, s: string): void {
  const n = ipv4ToNumber(s);
  if (Number.isNaN(n)) throw new RangeError(`not an IPv4 address: ${JSON.stringify(s)}`);
  buf.writeUInt32BE(n, off);
}

/** The dotted quad of an unsigned 32-bit IPv4 address. */
export function ipv4FromNumber(n: number): string {
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 0xff).join(".");
}

/** The netmask of an IPv4 prefix length (0..32) as an unsigned 32-bit number. */
export function ipv4PrefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export interface CIDR {
  family: 4 | 6;
  address: string;
  prefix: number;
}

/** Parses "a.b.c.d/n" or an IPv6 CIDR; surrounding whitespace is tolerated (as kube-proxy does). */
export function parseCIDR(s: string): CIDR | undefined {
  const t = s.trim();
  const slash = t.indexOf("/");
  if (slash < 0) return undefined;
  const address = t.slice(0, slash);
  const bits = t.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits)) return undefined;
  const prefix = Number(bits);
  if (isIPv4(address) && prefix <= 32) return { family: 4, address, prefix };
  if (isIPv6(address) && prefix <= 128) return { family: 6, address, prefix };
  return undefined;
}

/** An IPv4 CIDR's network address (host bits cleared) and prefix length; undefined when `s` is not one. */
export function parseIPv4Network(s: string): { network: string; prefix: number } | undefined {
  const c = parseCIDR(s);
  if (c?.family !== 4) return undefined;
  return { network: ipv4FromNumber((ipv4ToNumber(c.address) & ipv4PrefixMask(c.prefix)) >>> 0), prefix: c.prefix };
}

export function isCIDR(s: string): boolean {
  return parseCIDR(s) !== undefined;
}

/** True when IPv4 address `ip` lies inside IPv4 CIDR `cidr`. IPv6 never matches (the model is IPv4 only). */
export function ipv4InCIDR(ip: string, cidr: CIDR): boolean {
  if (cidr.family !== 4 || !isIPv4(ip)) return false;
  const mask = ipv4PrefixMask(cidr.prefix);
  return (ipv4ToNumber(ip) & mask) >>> 0 === (ipv4ToNumber(cidr.address) & mask) >>> 0;
}

/** Orders IPv4 addresses numerically; anything else after them, by string. */
export function compareAddresses(a: string, b: string): number {
  const na = ipv4ToNumber(a);
  const nb = ipv4ToNumber(b);
  if (!Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  if (!Number.isNaN(na)) return -1;
  if (!Number.isNaN(nb)) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}
