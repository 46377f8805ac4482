// The IPv6 masquerade's configuration (bpf/lib/nat6.h): the node's IPv6 address that masqueraded IPv6 flows get
// as their source. The port range is IPv4's (bpx_nat_config_v1). Written by the daemon at start.
import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import type * as native from "../../native/index.js";
import { ipv6ToBytes } from "../../k8s/ip.js";
import { nat6Config, u32Key } from "./abi.js";

/** IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE (linux/if_addr.h): the kernel never picks such a source. */
const NOT_A_SOURCE = 0x08 | 0x20 | 0x40;

/** Addresses (32 hex digits) the kernel would not choose as a source: /proc/net/if_inet6's flags column. */
function unusableSources(): Set<string> {
  const out = new Set<string>();
  let text: string;
  try {
    text = readFileSync("/proc/net/if_inet6", "utf8");
  } catch {
    return out; // no IPv6 in this kernel or namespace: nothing to avoid
  }
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 6 && parseInt(f[4]!, 16) & NOT_A_SOURCE) out.add(f[0]!.toLowerCase());
  }
  return out;
}

const hex32 = (a: string) => ipv6ToBytes(a).toString("hex");

/**
 * The IPv6 address masqueraded flows get: the first global address of the first device that has one, in the
 * kernel's list order (newest first), skipping deprecated and tentative ones, so it is the source the kernel
 * itself picks toward a destination on the device's prefix (RFC 6724 rule 3: an address added with
 * `preferred_lft 0` is still served, never a source). Never link-local: replies must route back.
 */
export function firstIPv6(ifnames: readonly string[]): string | undefined {
  const all = networkInterfaces();
  const avoid = unusableSources();
  for (const n of ifnames) {
    const a = all[n]?.find(
      (x) => x.family === "IPv6" && !x.internal && !/^fe[89ab]/i.test(x.address) && !avoid.has(hex32(x.address)),
    );
    if (a) return a.address;
  }
  return undefined;
}

/** Writes the masquerade address ("::" when none: flows that need masquerade are then dropped). */
export function writeNat6Config(map: native.BpfMap, masqAddr: string | undefined): void {
  map.update(u32Key.encode(0), nat6Config.encode({ masqAddr: masqAddr ?? "::" }));
}
