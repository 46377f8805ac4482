// IP and CIDR helpers shared by the schemas and the model. Pure; no I/O.
//
// The model is dual-stack: IPv4 and IPv6 literals are accepted wherever an object may carry one, and the
// model keeps each family apart (as kube-proxy's per-family proxiers do). IPv6 addresses are shown in their
// canonical form (RFC 5952) whatever form the object had, so that one address is one frontend key.

import { BlockList, SocketAddress, isIPv4, isIPv6 } from "node:net";

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

/** True when IPv4 address `ip` lies inside IPv4 CIDR `cidr`; any other family never matches. */
export function ipv4InCIDR(ip: string, cidr: CIDR): boolean {
  if (cidr.family !== 4 || !isIPv4(ip)) return false;
  const mask = ipv4PrefixMask(cidr.prefix);
  return (ipv4ToNumber(ip) & mask) >>> 0 === (ipv4ToNumber(cidr.address) & mask) >>> 0;
}

/** 4 or 6 for an IP literal (the schemas' rules), undefined for anything else. */
export function ipFamily(s: string): 4 | 6 | undefined {
  return !Number.isNaN(ipv4ToNumber(s)) ? 4 : isIPv6(s) ? 6 : undefined;
}

/** Canonical IPv6 forms already computed (addresses recur on every build; bounded so it cannot grow forever). */
const canonical6 = new Map<string, string>();
const CANONICAL6_MAX = 65536;

/**
 * An IP literal in canonical form: IPv4 as it is (the schemas accept only canonical dotted quads), IPv6 as
 * RFC 5952 section 4 writes it (lower case, no leading zeros, the longest run of zero groups compressed) by
 * the C library's inet_ntop. Anything else is returned unchanged.
 */
export function canonicalIP(s: string): string {
  if (!s.includes(":")) return s;
  let c = canonical6.get(s);
  if (c !== undefined) return c;
  try {
    c = new SocketAddress({ address: s, family: "ipv6" }).address;
  } catch {
    return s;
  }
  if (canonical6.size >= CANONICAL6_MAX) canonical6.clear();
  canonical6.set(s, c);
  return c;
}

/** The 16 bytes of an IPv6 address (any RFC 4291 text form, IPv4-embedded tails and zone ids included); throws if invalid. */
export function ipv6ToBytes(s: string): Buffer {
  if (!isIPv6(s)) throw new RangeError(`invalid IPv6 address ${JSON.stringify(s)}`);
  let text = s.replace(/%.*$/, "");
  // A trailing dotted quad (::ffff:1.2.3.4) is two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** RFC 5952 text of the 16 bytes at `offset` (the WHATWG URL serializer writes that form). */
export function bytesToIpv6(b: Uint8Array, offset = 0): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((b[offset + i * 2]! << 8) | b[offset + i * 2 + 1]!).toString(16));
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

/** The 16 bytes of an IPv6 literal as 32 hex digits (compares like the number); undefined when not IPv6. */
export function ipv6Hex(s: string): string | undefined {
  return isIPv6(s) ? ipv6ToBytes(s).toString("hex") : undefined;
}

const blockLists = new WeakMap<CIDR, BlockList>();

/** True when `ip` lies inside `cidr` (either family; an address of the other family never matches). */
export function ipInCIDR(ip: string, cidr: CIDR): boolean {
  if (cidr.family === 4) return ipv4InCIDR(ip, cidr);
  if (!isIPv6(ip)) return false;
  let bl = blockLists.get(cidr);
  if (!bl) {
    bl = new BlockList();
    bl.addSubnet(cidr.address, cidr.prefix, "ipv6");
    blockLists.set(cidr, bl);
  }
  return bl.check(ip, "ipv6");
}

/** Orders IPv4 addresses numerically, then IPv6 addresses numerically, then anything else by string. */
export function compareAddresses(a: string, b: string): number {
  const na = ipv4ToNumber(a);
  const nb = ipv4ToNumber(b);
  if (!Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  if (!Number.isNaN(na)) return -1;
  if (!Number.isNaN(nb)) return 1;
  const ha = a.includes(":") ? ipv6Hex(a) : undefined;
  const hb = b.includes(":") ? ipv6Hex(b) : undefined;
  if (ha !== undefined && hb !== undefined) return ha < hb ? -1 : ha > hb ? 1 : 0;
  if (ha !== undefined) return -1;
  if (hb !== undefined) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Why a cluster CIDR list is not one CIDR or a dual-stack pair, as kube-proxy's config validation words it
 * (two CIDRs of one family are refused, not merged); undefined when it is fine. Each entry must be a CIDR
 * (checked on its own by the callers).
 */
export function dualStackCIDRsProblem(cidrs: readonly string[]): string | undefined {
  if (cidrs.length > 2)
    return "only one CIDR allowed or a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)";
  if (cidrs.length === 2) {
    const [a, b] = cidrs.map((c) => parseCIDR(c)?.family);
    if (a !== undefined && b !== undefined && a === b)
      return "must be a valid DualStack CIDR: one IPv4 and one IPv6 CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)";
  }
  return undefined;
}
