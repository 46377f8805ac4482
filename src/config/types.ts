// The configuration `bpfproxy run` works from: one flat, typed record (durations in milliseconds).
import type { MapSizes } from "../dataplane/bpf/abi.js";

/** kube-proxy's `conntrack` settings as bpfproxy's own conntrack applies them (docs/conntrack.md). */
export interface ConntrackSettings {
  /** Idle lifetime of an established TCP flow (tcpEstablishedTimeout; 0 there = the kernel's 5 days). */
  tcpEstablishedMs: number;
  /** Idle lifetime of a half-closed TCP flow (tcpCloseWaitTimeout; 0 there = the kernel's 60 s). */
  tcpCloseWaitMs: number;
  /** UDP flow without replies (udpTimeout; 0 = the kernel's 30 s). */
  udpMs: number;
  /** UDP flow that saw replies (udpStreamTimeout; 0 = the kernel's 120 s). */
  udpStreamMs: number;
  /** tcpBeLiberal: RSTs are accepted without the window check. */
  beLiberal: boolean;
}

export type ProxyMode = "auto" | "bpf" | "ipvs";
export type DetectLocalMode = "ClusterCIDR" | "NodeCIDR" | "BridgeInterface" | "InterfaceNamePrefix";
export const DETECT_LOCAL_MODES: DetectLocalMode[] = [
  "ClusterCIDR",
  "NodeCIDR",
  "BridgeInterface",
  "InterfaceNamePrefix",
];

/** Everything `bpfproxy run` needs, flat and typed; durations in milliseconds. */
export interface EffectiveConfig {
  mode: ProxyMode;
  /** hostnameOverride as given (trimmed, lower-cased); "" when not set. */
  hostnameOverride: string;
  /** The node name used: hostnameOverride, else the host name (lower-cased), as kube-proxy. */
  nodeName: string;
  /** Override for the node's primary IP ("" or unspecified 0.0.0.0/:: = from the Node object). */
  bindAddress: string;
  /** "" = no health server. */
  healthzBindAddress: string;
  /** "" = no metrics server. */
  metricsBindAddress: string;
  /** Written to /proc/self/oom_score_adj at start (kube-proxy's default -999). */
  oomScoreAdj: number;
  /** Exit when the healthz or metrics port cannot be bound (else log and retry). */
  bindAddressHardFail: boolean;
  clusterCIDRs: string[];
  /** CIDRs and "primary"; [] = every local address of the node (kube-proxy's default). */
  nodePortAddresses: string[];
  syncPeriodMs: number;
  minSyncPeriodMs: number;
  configSyncPeriodMs: number;
  /** "" = in-cluster configuration. */
  kubeconfig: string;
  qps: number;
  burst: number;
  detectLocalMode: DetectLocalMode;
  detectLocalBridgeInterface: string;
  detectLocalInterfaceNamePrefix: string;
  /** IPVS scheduler for --mode ipvs ("" = rr). */
  ipvsScheduler: string;
  /** ipvs.strictARP: arp_ignore=1/arp_announce=2 in IPVS mode. */
  ipvsStrictARP: boolean;
  /** ipvs.tcpTimeout/tcpFinTimeout/udpTimeout in seconds; undefined = the kernel's. */
  ipvsTimeouts?: { tcp: number; tcpFin: number; udp: number };
  /** ipvs.excludeCIDRs: virtual services there are never deleted by bpfproxy. */
  ipvsExcludeCIDRs: string[];
  verbosity: number;
  /** "dir:PATH" for the manifest-folder source; "" = the Kubernetes API. */
  source: string;
  devices: string[];
  podInterfaces: string[];
  bpffs: string;
  /** cgroup v2 directory for socket-level load balancing; "" = off. */
  cgroupPath: string;
  /** Socket load balancing for pods' network namespaces too; false = the node's own namespace only. */
  socketLBPodNamespaces: boolean;
  masqueradeAll: boolean;
  /**
   * bpfproxy.bypassNetfilter / --bypass-netfilter: deliver translated packets past the host stack (FIB lookup +
   * redirect), skipping netfilter FORWARD (NetworkPolicy there) and rp_filter. false (default): the stack forwards them.
   */
  bypassNetfilter: boolean;
  /**
   * bpfproxy.translatedMarkBit: the skb mark bit tc ingress sets on a packet it translated completely, so tc egress
   * (bpx_reverse) clears it and skips its lookups; -1 = off. Like kube-proxy's masqueradeBit, a bit nothing else uses.
   */
  translatedMarkBit: number;
  /** bpfproxy.externalIPsAllowedCIDRs: undefined serves every externalIP (kube-proxy's default); [] none. */
  externalIPsAllowedCIDRs?: string[];
  /** BPF map sizes in entries (docs/maps.md). */
  mapSizes: MapSizes;
  /** Default backend choice (the Service annotation bpfproxy.io/lb-algorithm wins). */
  lbAlgorithm: "random" | "maglev" | "least-conn";
  /** bpfproxy.lbMode / --lb-mode: external Cluster-policy flows to other nodes masqueraded ("snat", default), by
   * direct server return ("dsr"), or DSR for TCP and masquerade for UDP ("hybrid"); the Service annotation
   * bpfproxy.io/forwarding-mode wins (docs/dsr.md). */
  lbMode: "snat" | "dsr" | "hybrid";
  /** XDP on --devices: "auto" (native where the driver allows, else tc), "native", "generic" or "off". */
  xdp: XdpMode;
  /** kube-proxy's `conntrack` timeouts and tcpBeLiberal, applied by the BPF conntrack. */
  conntrack: ConntrackSettings;
  /** conntrack.maxPerCore / .min as given (unset: undefined); they size bpx_ct_v3 unless mapSizes.conntrack is set. */
  conntrackMaxPerCore?: number;
  conntrackMin?: number;
  /** Interval of the conntrack garbage collector. */
  conntrackGCIntervalMs: number;
  /** Source ports of masqueraded flows, "MIN-MAX" (bpfproxy.snatPortRange, --snat-port-range). */
  snatPortRange: string;
  /** The cluster's NodePort range, "MIN-MAX" (bpfproxy.nodePortRange, --node-port-range), reserved on the node. */
  nodePortRange: string;
  /** bpfproxy.fullSyncPeriod: how often a sync re-reads the kernel and repairs drift (default 1h). */
  fullSyncPeriodMs: number;
}

export type XdpMode = "auto" | "native" | "generic" | "off";
export const XDP_MODES: XdpMode[] = ["auto", "native", "generic", "off"];

/** A parsed file: only the settings it gave (zero values left out), and warnings about what it ignores. */
export interface ParsedConfigFile {
  config: Partial<EffectiveConfig>;
  warnings: string[];
}
