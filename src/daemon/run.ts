// `bpfproxy run`: wires a source, the model and a data plane into the daemon and keeps it
// running until SIGINT/SIGTERM. Stopping leaves the data plane in place (traffic keeps flowing).
import { log } from "../log.js";
import { BpfDataplane } from "../dataplane/bpf/index.js";
import { IpvsDataplane } from "../dataplane/ipvs/index.js";
import { chooseMode, saveModeChoice } from "../dataplane/probe.js";
import { readDatapathSnapshot } from "../dataplane/bpf/status.js";
import { readIpvsTraffic } from "../dataplane/ipvs/index.js";
import { FolderSource } from "../sources/folder.js";
import { KubernetesSource } from "../sources/kubernetes.js";
import { Daemon } from "./daemon.js";
import { writeFileSync } from "node:fs";
import { parseNodePortRange, parseSnatPortRange } from "../config/validate.js";
import {
  ConfigError,
  conntrackFieldsIpvsCannotHonour,
  primaryNodeIP,
  splitClusterCIDRs,
  type EffectiveConfig,
} from "../config.js";
import { ipv6Skipped } from "../metrics.js";

/**
 * kube-proxy's oomScoreAdj: written to the process's own oom_score_adj at start. Like kube-proxy, a failure
 * (no CAP_SYS_RESOURCE to lower it, a read-only /proc) is logged and the daemon runs on.
 */
export function applyOOMScoreAdj(value: number): boolean {
  try {
    writeFileSync("/proc/self/oom_score_adj", `${value}\n`);
    return true;
  } catch (err) {
    log.warn("cannot apply oomScoreAdj", { oomScoreAdj: value, error: (err as Error).message });
    return false;
  }
}

/** bpx_config.node_name is char[64] (bpf/lib/config.h) and only names the node in `bpfproxy status`. */
const CONFIG_NODE_NAME_BYTES = 63;

/**
 * The node name as the BPF config map can hold it: node names may have 253 characters, the map's field 63
 * bytes. Cut (on a character boundary) rather than refuse: BPF never reads it, and a long node name must not
 * stop the data plane from starting.
 */
export function configNodeName(name: string): string {
  let out = name;
  while (Buffer.byteLength(out, "utf8") > CONFIG_NODE_NAME_BYTES) out = out.slice(0, -1);
  return out;
}

export async function runDaemon(cfg: EffectiveConfig): Promise<void> {
  applyOOMScoreAdj(cfg.oomScoreAdj);
  // Dual-stack clusterCIDR: both families reach the model (detect-local per family) and the data plane.
  const cidrs = splitClusterCIDRs(cfg.clusterCIDRs);
  const allCIDRs = [...cidrs.ipv4, ...cidrs.ipv6];
  const choice = chooseMode(cfg.mode);
  // The BPF data plane's IPv6 path does not use them yet (bpx_config_v1 holds IPv4 CIDRs; docs/ipv6.md): counted.
  ipv6Skipped.set({ kind: "clusterCIDR" }, choice.mode === "bpf" ? cidrs.ipv6.length : 0);
  log.info("data plane mode chosen", { mode: choice.mode, reason: choice.reason });
  if (choice.mode === "ipvs" && cfg.detectLocalMode !== "ClusterCIDR") {
    // The IPVS data plane tells local traffic by clusterCIDR only; anything else would be ignored there.
    throw new ConfigError(
      `invalid configuration: detectLocalMode: ${cfg.detectLocalMode} is served by the bpf data plane only, and mode ${JSON.stringify(cfg.mode)} chose ipvs (${choice.reason})`,
      [{ path: "detectLocalMode", reason: `${cfg.detectLocalMode} needs the bpf data plane` }],
    );
  }
  const ctFields = choice.mode === "ipvs" ? conntrackFieldsIpvsCannotHonour(cfg) : [];
  if (ctFields.length)
    throw new ConfigError(
      `invalid configuration: ${ctFields.join(", ")}: applied by the bpf data plane only, and mode ${JSON.stringify(cfg.mode)} chose ipvs (${choice.reason}); bpfproxy does not write the kernel's nf_conntrack sysctls`,
      ctFields.map((path) => ({ path, reason: "needs the bpf data plane (IPVS uses the kernel's conntrack)" })),
    );
  const common = {
    nodeName: cfg.nodeName,
    bpffs: cfg.bpffs,
    devices: cfg.devices,
    podInterfaces: cfg.podInterfaces,
    clusterCIDRs: allCIDRs,
  };
  const dataplane =
    choice.mode === "ipvs"
      ? new IpvsDataplane({
          ...common,
          scheduler: cfg.ipvsScheduler,
          strictARP: cfg.ipvsStrictARP,
          timeouts: cfg.ipvsTimeouts,
          masqueradeAll: cfg.masqueradeAll,
          excludeCIDRs: cfg.ipvsExcludeCIDRs,
          reason: choice.reason,
        })
      : new BpfDataplane({
          ...common,
          nodeName: configNodeName(cfg.nodeName),
          // detectLocalMode: ClusterCIDR tells in-cluster sources by CIDR; the interface modes by where traffic
          // enters (the bridge / prefix interfaces are pod interfaces, everything on --devices is from outside).
          podInterfaces: [
            ...cfg.podInterfaces,
            ...(cfg.detectLocalMode === "BridgeInterface" ? [cfg.detectLocalBridgeInterface] : []),
            ...(cfg.detectLocalMode === "InterfaceNamePrefix" ? [`${cfg.detectLocalInterfaceNamePrefix}*`] : []),
          ],
          // NodeCIDR: the Node's podCIDRs, written by the daemon once the Node object is known (setLocalCIDRs).
          clusterCIDRs: cfg.detectLocalMode === "ClusterCIDR" ? allCIDRs : [],
          detectLocal: cfg.detectLocalMode === "ClusterCIDR" ? cidrs.ipv4.length > 0 : true,
          masqueradeAll: cfg.masqueradeAll,
          bypassNetfilter: cfg.bypassNetfilter,
          translatedMarkBit: cfg.translatedMarkBit,
          xdp: cfg.xdp,
          mapSizes: cfg.mapSizes,
          cgroupPath: cfg.cgroupPath,
          socketLBPodNamespaces: cfg.socketLBPodNamespaces,
          conntrack: cfg.conntrack,
          conntrackGCIntervalMs: cfg.conntrackGCIntervalMs,
          snatPortRange: parseSnatPortRange(cfg.snatPortRange),
          nodePortRange: parseNodePortRange(cfg.nodePortRange),
          reservePortRanges: true,
          // SCTP frontends BPF does not translate go to the kernel's IPVS where it has one (docs/sctp.md).
          sctpIpvs: { scheduler: cfg.ipvsScheduler, masqueradeAll: cfg.masqueradeAll },
        });
  saveModeChoice(choice);
  const source =
    cfg.source !== ""
      ? new FolderSource(cfg.source.slice("dir:".length))
      : new KubernetesSource({ kubeconfig: cfg.kubeconfig || undefined, nodeName: cfg.nodeName });
  const daemon = new Daemon(source, dataplane, {
    nodeName: cfg.nodeName,
    clusterCIDRs: allCIDRs,
    nodePortAddresses: cfg.nodePortAddresses,
    externalIPsAllowedCIDRs: cfg.externalIPsAllowedCIDRs,
    lbAlgorithm: cfg.lbAlgorithm,
    lbMode: cfg.lbMode,
    minSyncPeriodMs: cfg.minSyncPeriodMs,
    syncPeriodMs: cfg.syncPeriodMs,
    fullSyncPeriodMs: cfg.fullSyncPeriodMs,
    linkPollMs: 1000,
    healthzBindAddress: cfg.healthzBindAddress,
    metricsBindAddress: cfg.metricsBindAddress,
    bindAddressHardFail: cfg.bindAddressHardFail,
    primaryNodeIP: primaryNodeIP(cfg),
    localCIDRsFromNode: cfg.detectLocalMode === "NodeCIDR",
    config: cfg,
    datapathCollector:
      choice.mode === "bpf" && dataplane instanceof BpfDataplane
        ? () => readDatapathSnapshot(cfg.bpffs, dataplane.mapCounts())
        : choice.mode === "ipvs"
          ? // The same bpfproxy_service_*/bpfproxy_backend_* series from the kernel's IPVS stats.
            () => ({ counters: {}, maps: {}, traffic: readIpvsTraffic() })
          : undefined,
  });
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info("stopping; the data plane stays in place", { signal: sig });
      void daemon
        .stop()
        .catch((err: unknown) =>
          log.error("stopping failed", { error: err instanceof Error ? err.message : String(err) }),
        )
        .finally(resolve);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
  await daemon.start();
  log.info("bpfproxy running", {
    node: cfg.nodeName,
    source: cfg.source || "kubernetes",
    bpffs: cfg.bpffs,
    mode: dataplane.mode,
  });
  await stopped;
}
