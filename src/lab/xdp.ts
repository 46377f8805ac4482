// Lab preparation for XDP runs. XDP sees packets as they would come off a wire, with full checksums; veths
// normally hand over CHECKSUM_PARTIAL packets (only the pseudo-header sum filled in), which an XDP rewrite
// cannot tell apart. So the prepared veths compute checksums in software (tx off), and have GRO on, which
// gives a veth the NAPI context that native XDP_TX or XDP_REDIRECT into its peer needs (the kernel then
// reports NETDEV_XDP_ACT_NDO_XMIT for the peer, and bpfproxy lets XDP send there: src/dataplane/xdp-devs.ts).
//   pods: true   every lab veth, pods' too;
//   pods: false  only the network's: the nodes' and the external client's eth0 and their fabric ports. Pod
//                veths keep the kernel's defaults (GRO off, tx checksum offload on), as CNIs leave them.
import type { Lab } from "./netns.js";

export async function prepareLabForXdp(lab: Lab, opts: { pods?: boolean } = {}): Promise<void> {
  const pods = opts.pods ?? true;
  const podNames = new Set(lab.spec.nodes.flatMap((n) => n.pods.map((p) => p.name)));
  for (const full of lab.namespaces()) {
    const logical = full.slice(lab.spec.prefix.length);
    if (!pods && podNames.has(logical)) continue;
    const links = await lab.exec(logical, ["ip", "-o", "link", "show", "type", "veth"]);
    for (const line of links.stdout.split("\n")) {
      const name = /^\d+:\s+([^@:]+)/.exec(line)?.[1];
      if (!name) continue;
      // In a node's namespace, the pods' host-side veths (lxc...) are pod veths too.
      if (!pods && name !== "eth0" && logical !== "fabric") continue;
      const r = await lab.exec(logical, ["ethtool", "-K", name, "tx", "off", "gro", "on"]);
      if (r.code !== 0) throw new Error(`lab: ethtool -K ${name} in ${logical}: ${r.stderr.trim()}`);
    }
  }
}
