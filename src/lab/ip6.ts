// IPv6 address arithmetic for the lab and the packet fixtures (the product's src/k8s/ip.ts is IPv4-only).
// Text is parsed by hand (Node has no inet_pton) and printed by the WHATWG URL serializer (RFC 5952 form).

import { isIPv6 } from "node:net";

/** The 16 bytes of an IPv6 address (any RFC 4291 text form, IPv4-embedded tails included); throws if invalid. */
export function ipv6ToBytes(s: string): Buffer {
  if (!isIPv6(s)) throw new Error(`invalid IPv6 address ${JSON.stringify(s)}`);
  let text = s.replace(/%.*$/, "");
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const groups = (x: string | undefined): string[] => (x ? x.split(":") : []);
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** RFC 5952 text of 16 bytes. */
export function bytesToIpv6(b: Buffer, offset = 0): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(offset + i * 2).toString(16));
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

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
