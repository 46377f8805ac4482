// Which devices XDP may send translated packets to (bpx_xdp_devs_v1, a DEVMAP). A native XDP_REDIRECT or
// XDP_TX to a device that cannot transmit XDP frames drops them (the driver's ndo_xdp_xmit fails, or there
// is none): bridges, vxlan and other tunnels have no ndo_xdp_xmit; a veth takes frames only when its peer
// runs an XDP program or has GRO on (veth_xdp_xmit needs the peer's NAPI, else -ENXIO); a NIC only once an
// XDP program set up its XDP transmit resources (virtio_net, ixgbe, mlx5 and others refuse otherwise). The
// data plane therefore lists a device only when bpfproxy attached its XDP program to it and
//   - native (driver) mode: the kernel says it can transmit XDP frames: NETDEV_XDP_ACT_NDO_XMIT in its
//     xdp_features (Linux 6.3+, generic netlink family "netdev"; for a veth the kernel sets it from the peer's
//     XDP program or GRO), or, on kernels without xdp_features, it is a physical device
//     (/sys/class/net/IF/device), whose driver set up XDP transmit when the program was attached;
//   - generic (skb) mode: always. Generic XDP sends an skb (generic_xdp_tx), which every device takes, and
//     the mode is the same on every device a daemon attaches to (--xdp), so no native program redirects there.
// Everything else is reached through tc: XDP passes the packet untouched, with no state written.
import { existsSync } from "node:fs";
import * as native from "../../native/index.js";

// include/uapi/linux/netdev.h
const NETDEV_CMD_DEV_GET = 1;
const NETDEV_A_DEV_IFINDEX = 1;
const NETDEV_A_DEV_XDP_FEATURES = 3;
export const NETDEV_XDP_ACT_NDO_XMIT = 1n << 2n;
const NLA_TYPE_MASK = 0x3fff;

/** The device's xdp_features bits, or undefined when the kernel has no "netdev" family (before Linux 6.3). */
export function xdpFeatures(ifindex: number): bigint | undefined {
  const attr = Buffer.alloc(8);
  attr.writeUInt16LE(8, 0);
  attr.writeUInt16LE(NETDEV_A_DEV_IFINDEX, 2);
  attr.writeUInt32LE(ifindex, 4);
  let replies: Buffer[];
  try {
    replies = native.genlRequest("netdev", 1, NETDEV_CMD_DEV_GET, false, attr);
  } catch (err) {
    if (/genl_ctrl_resolve/.test((err as Error).message)) return undefined;
    throw err;
  }
  for (const r of replies) {
    for (let off = 0; off + 4 <= r.length;) {
      const len = r.readUInt16LE(off);
      if (len < 4) break;
      if ((r.readUInt16LE(off + 2) & NLA_TYPE_MASK) === NETDEV_A_DEV_XDP_FEATURES && len >= 12)
        return r.readBigUInt64LE(off + 4);
      off += (len + 3) & ~3;
    }
  }
  return 0n;
}

/** Whether XDP may send to the device (see above), given the mode bpfproxy's XDP program is attached to it in. */
export function takesXdpFrames(ifname: string, ifindex: number, mode: "native" | "generic"): boolean {
  if (mode === "generic") return true;
  const features = xdpFeatures(ifindex);
  if (features === undefined) return existsSync(`/sys/class/net/${ifname}/device`);
  return (features & NETDEV_XDP_ACT_NDO_XMIT) !== 0n;
}
