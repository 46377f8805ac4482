// detect-local per family: which source CIDRs make traffic "from inside the cluster" (kube-proxy's
// LocalTrafficDetector, one per family proxier). Pure.
import { parseCIDR } from "../k8s/ip.js";

export interface FamilyCIDRs {
  ipv4: string[];
  ipv6: string[];
}

/** Splits CIDRs by family (trimmed; anything that is not a CIDR is left out: validation reports it). */
export function cidrsByFamily(cidrs: readonly string[]): FamilyCIDRs {
  const out: FamilyCIDRs = { ipv4: [], ipv6: [] };
  for (const c of cidrs) {
    const family = parseCIDR(c)?.family;
    if (family === 4) out.ipv4.push(c.trim());
    else if (family === 6) out.ipv6.push(c.trim());
  }
  return out;
}

/**
 * The local-traffic CIDRs of each family. ClusterCIDR: the --cluster-cidr of the family; NodeCIDR: the Node's
 * spec.podCIDRs of the family (podCIDR alone on older API servers, as the schema reads it). A family with none
 * has no detect-local (kube-proxy's no-op detector for it). The interface modes need no CIDRs.
 */
export function detectLocalCIDRs(
  mode: string,
  clusterCIDRs: readonly string[],
  node: { spec: { podCIDRs: readonly string[] } } | undefined,
): FamilyCIDRs {
  if (mode === "ClusterCIDR") return cidrsByFamily(clusterCIDRs);
  if (mode === "NodeCIDR") return cidrsByFamily(node?.spec.podCIDRs ?? []);
  return { ipv4: [], ipv6: [] };
}
