// Lab preparation for XDP runs. XDP sees packets as they would come off a wire, with full checksums; veths
// normally hand over CHECKSUM_PARTIAL packets (only the pseudo-header sum filled in), which an XDP rewrite
// cannot tell apart. So every lab veth computes checksums in software (tx off), and has GRO on, which gives
// veth the NAPI context that native XDP_REDIRECT into a veth needs.
import type { Lab } from "./netns.js";

export async function prepareLabForXdp(lab: Lab): Promise<void> {
  for (const full of lab.namespaces()) {
    const logical = full.slice(lab.spec.prefix.length);
    const links = await lab.exec(logical, ["ip", "-o", "link", "show", "type", "veth"]);
    for (const line of links.stdout.split("\n")) {
      const name = /^\d+:\s+([^@:]+)/.exec(line)?.[1];
      if (!name) continue;
      const r = await lab.exec(logical, ["ethtool", "-K", name, "tx", "off", "gro", "on"]);
      if (r.code !== 0) throw new Error(`lab: ethtool -K ${name} in ${logical}: ${r.stderr.trim()}`);
    }
  }
}
