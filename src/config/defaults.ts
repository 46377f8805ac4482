// Defaults: kube-proxy's where the field is kube-proxy's, bpfproxy's own for its `bpfproxy:` section.
import type { ConntrackSettings } from "./types.js";

/** The smallest size accepted for a map (the kernel would take 1; this keeps typos from loading a useless map). */
export const MIN_MAP_SIZE = 16;
export const MAX_MAP_SIZE = 1 << 26;

/** kube-proxy's defaults (a field left null). */
export const DEFAULT_CONNTRACK: Readonly<ConntrackSettings> = Object.freeze({
  tcpEstablishedMs: 24 * 3_600_000,
  tcpCloseWaitMs: 3_600_000,
  udpMs: 30_000,
  udpStreamMs: 120_000,
  beLiberal: false,
});
/** What a 0 in conntrack's timeouts means: the kernel's nf_conntrack default. */
export const KERNEL_CONNTRACK_ZERO = {
  tcpEstablishedMs: 432_000_000,
  tcpCloseWaitMs: 60_000,
  udpMs: 30_000,
  udpStreamMs: 120_000,
};

/**
 * Default source ports of masqueraded flows (bpfproxy.snatPortRange, --snat-port-range): 28,976 ports, the size
 * of Cilium's and Linux's default ephemeral range (32768-60999, 28,232), below Kubernetes' NodePort range
 * (30000-32767) and outside Linux's ephemeral one, so reserving them (ip_local_reserved_ports) takes nothing from
 * the node's own connections on a default node. netfilter's MASQUERADE uses 1024-65535, which cannot be
 * reserved without starving the host.
 */
export const DEFAULT_SNAT_PORT_RANGE = "1024-29999";
/**
 * Default NodePort range (bpfproxy.nodePortRange, --node-port-range): kube-apiserver's default
 * --service-node-port-range. Reserved in ip_local_reserved_ports as Cilium does: a host connection whose ephemeral
 * port is a NodePort would have its replies taken for NodePort traffic by the BPF data plane (netfilter would see
 * them as replies of the host's own flow). Outside Linux's default ephemeral range, so nothing is taken there.
 */
export const DEFAULT_NODE_PORT_RANGE = "30000-32767";
/** Default interval of the conntrack garbage collector (bpfproxy.conntrackGCInterval, --conntrack-gc-interval). */
export const DEFAULT_CT_GC_INTERVAL_MS = 15_000;
/** kube-proxy's FullSyncPeriod: a sync re-reads and compares everything this often (and after a failure). */
export const DEFAULT_FULL_SYNC_PERIOD_MS = 60 * 60_000;

/** kube-proxy's defaults for fields bpfproxy cannot change; written out, they are accepted. */
export const KUBE_PROXY_CONTENT_TYPE = "application/vnd.kubernetes.protobuf";
export const KUBE_PROXY_MASQUERADE_BIT = 14;
/** kube-proxy's dropBit: its KUBE-MARK-DROP rules set it. */
export const KUBE_PROXY_DROP_BIT = 15;
/**
 * Default skb mark bit for packets tc ingress translated completely (bpfproxy.translatedMarkBit): tc egress clears
 * it and skips them. Bit 12 (0x1000): outside kube-proxy's (14, 15), Calico's (0xffff0000), Cilium's (0x0f00)
 * and the upper bits kube-router and Weave use.
 */
export const DEFAULT_TRANSLATED_MARK_BIT = 12;
export const KUBE_PROXY_CONNTRACK: Record<string, number> = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeout: 24 * 3_600_000,
  tcpCloseWaitTimeout: 3_600_000,
  udpTimeout: 0,
  udpStreamTimeout: 0,
};
/** kube-proxy's --oom-score-adj default (qos.KubeProxyOOMScoreAdj). */
export const DEFAULT_OOM_SCORE_ADJ = -999;

export const CONFIG_API_VERSION = "kubeproxy.config.k8s.io/v1alpha1";
export const CONFIG_KIND = "KubeProxyConfiguration";

export const DEFAULTS = {
  healthzBindAddress: "0.0.0.0:10256",
  healthzBindAddressIPv6: "[::]:10256",
  metricsBindAddress: "127.0.0.1:10249",
  metricsBindAddressIPv6: "[::1]:10249",
  syncPeriodMs: 30_000,
  minSyncPeriodMs: 1_000,
  configSyncPeriodMs: 15 * 60_000,
  qps: 5,
  burst: 10,
  bpffs: "/sys/fs/bpf/bpfproxy",
} as const;
