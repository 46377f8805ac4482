// The node's own addresses, as kube-proxy lists them for NodePorts: every IPv4 address on a local interface
// except loopback (NodePorts on localhost are not served).
import { networkInterfaces } from "node:os";

export function localIPv4Addresses(): string[] {
  const out = new Set<string>();
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? [])
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("127.")) out.add(a.address);
  }
  return [...out].sort();
}
