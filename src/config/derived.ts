// Values derived from an effective configuration where the daemon needs them.
import { isIP } from "node:net";
import type { EffectiveConfig } from "./types.js";

/**
 * Dual-stack clusterCIDR (e.g. "10.244.0.0/16,fd00:10:244::/56", kubeadm's usual value): the data plane is
 * IPv4 only, so the IPv4 CIDRs are served and the IPv6 ones are set aside (the daemon logs them once and
 * exports bpfproxy_ipv6_skipped{kind="clusterCIDR"}) rather than refused or crashing the daemon.
 */
export function splitClusterCIDRs(cidrs: readonly string[]): { ipv4: string[]; ipv6: string[] } {
  const out = { ipv4: [] as string[], ipv6: [] as string[] };
  for (const c of cidrs) (isIP(c.trim().split("/")[0]!) === 6 ? out.ipv6 : out.ipv4).push(c.trim());
  return out;
}

/**
 * The node's primary IPv4 given by bindAddress, as kube-proxy takes a specific bindAddress as the node IP;
 * undefined when it is unset or unspecified (0.0.0.0, ::), then the Node object's address is used.
 */
export function primaryNodeIP(cfg: Pick<EffectiveConfig, "bindAddress">): string | undefined {
  return isIP(cfg.bindAddress) === 4 && cfg.bindAddress !== "0.0.0.0" ? cfg.bindAddress : undefined;
}

/** The health timeout kube-proxy derives from the config: 2 × syncPeriod. */
export function healthTimeoutMs(cfg: Pick<EffectiveConfig, "syncPeriodMs">): number {
  return 2 * cfg.syncPeriodMs;
}
