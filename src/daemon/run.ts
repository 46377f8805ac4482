// `bpfproxy run`: wires a source, the model and a data plane into the daemon and keeps it
// running until SIGINT/SIGTERM. Stopping leaves the data plane in place (traffic keeps flowing).
import { log } from "../log.js";
import { BpfDataplane } from "../dataplane/bpf.js";
import { FolderSource } from "../sources/folder.js";
import { KubernetesSource } from "../sources/kubernetes.js";
import { Daemon } from "./daemon.js";

export interface RunOptions {
  /** Manifest folder (standalone); when undefined, the Kubernetes API (kubeconfig or in-cluster). */
  sourceDir?: string;
  kubeconfig?: string;
  nodeName: string;
  bpffs: string;
  devices: string[];
  podInterfaces: string[];
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  minSyncPeriodMs: number;
  syncPeriodMs: number;
}

export async function runDaemon(o: RunOptions): Promise<void> {
  const dataplane = new BpfDataplane({
    nodeName: o.nodeName,
    bpffs: o.bpffs,
    devices: o.devices,
    podInterfaces: o.podInterfaces,
    clusterCIDRs: o.clusterCIDRs,
  });
  const source = o.sourceDir !== undefined
    ? new FolderSource(o.sourceDir)
    : new KubernetesSource({ kubeconfig: o.kubeconfig, nodeName: o.nodeName });
  const daemon = new Daemon(source, dataplane, {
    nodeName: o.nodeName,
    clusterCIDRs: o.clusterCIDRs,
    nodePortAddresses: o.nodePortAddresses,
    minSyncPeriodMs: o.minSyncPeriodMs,
    syncPeriodMs: o.syncPeriodMs,
    linkPollMs: 1000,
  });
  await daemon.start();
  log.info("bpfproxy running", { node: o.nodeName, source: o.sourceDir !== undefined ? `dir:${o.sourceDir}` : "kubernetes", bpffs: o.bpffs });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info("stopping; the data plane stays in place", { signal: sig });
      daemon.stop().finally(resolve);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}
