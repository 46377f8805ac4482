// The node's own addresses, as kube-proxy lists them for NodePorts: every IPv4 address on a local interface
// except loopback (NodePorts on localhost are not served) and except the Service addresses IPVS mode binds
// to its dummy interface.
import { networkInterfaces } from "node:os";

/**
 * IPVS mode's dummy interface. Its addresses are Service IPs (ours, or kube-proxy's before a migration),
 * never the node's: counted as node addresses every ClusterIP would serve NodePorts, and every new Service
 * would change the node facts the model is rendered from. kube-proxy's IPVS mode leaves it out the same way
 * (GetAllLocalAddressesExcept(kube-ipvs0)).
 */
export const SERVICE_ADDRESS_DEVICE = "kube-ipvs0";

export function localIPv4Addresses(except: readonly string[] = [SERVICE_ADDRESS_DEVICE]): string[] {
  const out = new Set<string>();
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (except.includes(name)) continue;
    for (const a of addrs ?? [])
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("127.")) out.add(a.address);
  }
  return [...out].sort();
}
