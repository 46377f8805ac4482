// Lab preparation for XDP runs: the lab's "wire" stands in for real NICs. XDP on a NIC sees frames as they
// came off the wire, with full checksums, and a NIC can XDP_TX/XDP_REDIRECT. A veth normally hands over
// CHECKSUM_PARTIAL packets (only the pseudo-header sum filled in), and a native XDP_TX or XDP_REDIRECT into
// a veth needs its peer's NAPI context, which GRO gives it (the kernel then reports NETDEV_XDP_ACT_NDO_XMIT
// for the peer, and bpfproxy lets XDP send there: src/dataplane/bpf/xdp-devs.ts). So the prepared veths compute
// checksums in software (tx off) and have GRO on.
//   pods: false (default)  only the network's veths: the nodes', the upstream router's and the external
//                          client's eth0 and their fabric ports. Pod veths keep the kernel's defaults (GRO
//                          off, tx checksum offload on), as CNIs leave them: production's setting.
//   pods: true             every lab veth, pods' too. Kinder than production (it hides the ENXIO of a native
//                          redirect into a pod's veth, and CHECKSUM_PARTIAL/GSO from pods): only for a test
//                          that says why it needs it.
// Not calling this at all leaves every veth at the kernel's defaults: a node whose device is itself a veth
// (kind, nested containers), which test/e2e-northsouth.test.ts runs too.
import type { Lab } from "./netns.js";

export async function prepareLabForXdp(lab: Lab, opts: { pods?: boolean } = {}): Promise<void> {
  const pods = opts.pods ?? false;
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
