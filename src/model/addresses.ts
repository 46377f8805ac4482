// The node's own addresses, as kube-proxy lists them for NodePorts: every address on a local interface
// except loopback (NodePorts on localhost are not served) and except the Service addresses IPVS mode binds
// to its dummy interface.
import { networkInterfaces } from "node:os";
import { canonicalIP, compareAddresses } from "../k8s/ip.js";

/**
 * IPVS mode's dummy interface. Its addresses are Service IPs (ours, or kube-proxy's before a migration),
 * never the node's: counted as node addresses every ClusterIP would serve NodePorts, and every new Service
 * would change the node facts the model is rendered from. kube-proxy's IPVS mode leaves it out the same way
 * (GetAllLocalAddressesExcept(kube-ipvs0)).
 */
export const SERVICE_ADDRESS_DEVICE = "kube-ipvs0";

/** What networkInterfaces() returns (a parameter so the filters can be tested on given interfaces). */
type Interfaces = ReturnType<typeof networkInterfaces>;

export function localIPv4Addresses(
  except: readonly string[] = [SERVICE_ADDRESS_DEVICE],
  interfaces: Interfaces = networkInterfaces(),
): string[] {
  const out = new Set<string>();
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (except.includes(name)) continue;
    for (const a of addrs ?? [])
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("127.")) out.add(a.address);
  }
  return [...out].sort();
}

/**
 * The node's addresses of both families, as kube-proxy's per-family proxiers list them: the IPv4 ones above,
 * and every IPv6 address on a local interface except loopback (::1) and link-local ones (fe80::/10: they
 * name an address only together with an interface, and Kubernetes never reports them as node addresses).
 * IPv6 in canonical form.
 */
export function localNodeAddresses(
  except: readonly string[] = [SERVICE_ADDRESS_DEVICE],
  interfaces: Interfaces = networkInterfaces(),
): string[] {
  const v6 = new Set<string>();
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (except.includes(name)) continue;
    for (const a of addrs ?? [])
      if (a.family === "IPv6" && !a.internal && !isLinkLocal6(a.address)) v6.add(canonicalIP(a.address));
  }
  return [...localIPv4Addresses(except, interfaces), ...[...v6].sort(compareAddresses)];
}

/** fe80::/10. */
function isLinkLocal6(address: string): boolean {
  return /^fe[89ab]/i.test(address);
}
