// The IPv6 masquerade's configuration (bpf/lib/nat6.h): the node's IPv6 address that masqueraded IPv6 flows get
// as their source. The port range is IPv4's (bpx_nat_config_v1). Written by the daemon at start.
import { networkInterfaces } from "node:os";
import type * as native from "../../native/index.js";
import { nat6Config, u32Key } from "./abi.js";

/** The first global IPv6 address of the first device that has one (never link-local: replies must route back). */
export function firstIPv6(ifnames: readonly string[]): string | undefined {
  const all = networkInterfaces();
  for (const n of ifnames) {
    const a = all[n]?.find((x) => x.family === "IPv6" && !x.internal && !/^fe[89ab]/i.test(x.address));
    if (a) return a.address;
  }
  return undefined;
}

/** Writes the masquerade address ("::" when none: flows that need masquerade are then dropped). */
export function writeNat6Config(map: native.BpfMap, masqAddr: string | undefined): void {
  map.update(u32Key.encode(0), nat6Config.encode({ masqAddr: masqAddr ?? "::" }));
}
