// `bpfproxy run`: wires a source, the model and a data plane into the daemon and keeps it
// running until SIGINT/SIGTERM. Stopping leaves the data plane in place (traffic keeps flowing).
import { log } from "../log.js";
import { BpfDataplane } from "../dataplane/bpf.js";
import { readDatapathSnapshot } from "../dataplane/status.js";
import { FolderSource } from "../sources/folder.js";
import { KubernetesSource } from "../sources/kubernetes.js";
import { Daemon } from "./daemon.js";
import type { EffectiveConfig } from "../config.js";

export async function runDaemon(cfg: EffectiveConfig): Promise<void> {
  if (cfg.mode === "ipvs") throw new Error("--mode=ipvs: the IPVS data plane is not available in this build");
  const dataplane = new BpfDataplane({
    nodeName: cfg.nodeName,
    bpffs: cfg.bpffs,
    devices: cfg.devices,
    // detectLocalMode: ClusterCIDR tells in-cluster sources by CIDR; the interface modes by where traffic
    // enters (the bridge / prefix interfaces are pod interfaces, everything on --devices is from outside).
    podInterfaces: [
      ...cfg.podInterfaces,
      ...(cfg.detectLocalMode === "BridgeInterface" ? [cfg.detectLocalBridgeInterface] : []),
      ...(cfg.detectLocalMode === "InterfaceNamePrefix" ? [`${cfg.detectLocalInterfaceNamePrefix}*`] : []),
    ],
    clusterCIDRs: cfg.detectLocalMode === "ClusterCIDR" ? cfg.clusterCIDRs : [],
    detectLocal: cfg.detectLocalMode === "ClusterCIDR" ? cfg.clusterCIDRs.length > 0 : true,
    masqueradeAll: cfg.masqueradeAll,
    xdp: cfg.xdp,
  });
  const source = cfg.source !== ""
    ? new FolderSource(cfg.source.slice("dir:".length))
    : new KubernetesSource({ kubeconfig: cfg.kubeconfig || undefined, nodeName: cfg.nodeName });
  const daemon = new Daemon(source, dataplane, {
    nodeName: cfg.nodeName,
    clusterCIDRs: cfg.clusterCIDRs,
    nodePortAddresses: cfg.nodePortAddresses,
    minSyncPeriodMs: cfg.minSyncPeriodMs,
    syncPeriodMs: cfg.syncPeriodMs,
    linkPollMs: 1000,
    healthzBindAddress: cfg.healthzBindAddress,
    metricsBindAddress: cfg.metricsBindAddress,
    bindAddressHardFail: cfg.bindAddressHardFail,
    config: cfg,
    datapathCollector: () => readDatapathSnapshot(cfg.bpffs),
  });
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info("stopping; the data plane stays in place", { signal: sig });
      daemon.stop().finally(resolve);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
  await daemon.start();
  log.info("bpfproxy running", { node: cfg.nodeName, source: cfg.source || "kubernetes", bpffs: cfg.bpffs, mode: dataplane.mode });
  await stopped;
}
