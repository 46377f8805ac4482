// Merging: flags override the file, defaults fill the rest, and the result is validated (validate.ts).
import { cpus, hostname } from "node:os";
import { isIP } from "node:net";
import { DEFAULT_MAP_SIZES } from "../dataplane/bpf/abi.js";
import {
  DEFAULT_CONNTRACK,
  DEFAULT_CT_GC_INTERVAL_MS,
  DEFAULT_SNAT_PORT_RANGE,
  DEFAULT_NODE_PORT_RANGE,
  DEFAULT_TRANSLATED_MARK_BIT,
  DEFAULT_FULL_SYNC_PERIOD_MS,
  DEFAULT_OOM_SCORE_ADJ,
  DEFAULTS,
  KUBE_PROXY_CONNTRACK,
} from "./defaults.js";
import type { EffectiveConfig } from "./types.js";
import { validateEffective } from "./validate.js";

type Given = Partial<EffectiveConfig>;

/**
 * The effective configuration: `flags` (only the keys present and not undefined) override `file`, and
 * defaults fill the rest. Derived defaults follow kube-proxy: with an IPv6 bindAddress the health and
 * metrics servers default to "[::]:10256" and "[::1]:10249"; a bind address without a port gets the
 * default port. Throws ConfigError when the result is invalid (naming the field).
 */
export function mergeConfig(file: Given | undefined, flags: Given): EffectiveConfig {
  const given: Given = { ...(file ?? {}) };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) (given as Record<string, unknown>)[k] = v;
  const cfg = withDefaults(given, file, flags);
  sizeConntrackMap(cfg, file, flags);
  validateEffective(cfg);
  return cfg;
}

/** Every field: as given, else its default (some derived from others, as kube-proxy derives them). */
function withDefaults(given: Given, file: Given | undefined, flags: Given): EffectiveConfig {
  const bindAddress = given.bindAddress ?? "";
  const v6 = isIP(bindAddress) === 6;
  const hostnameOverride = (given.hostnameOverride ?? "").trim().toLowerCase();
  return {
    mode: given.mode ?? "auto",
    hostnameOverride,
    nodeName: hostnameOverride || hostname().trim().toLowerCase(),
    bindAddress,
    healthzBindAddress:
      given.healthzBindAddress ?? (v6 ? DEFAULTS.healthzBindAddressIPv6 : DEFAULTS.healthzBindAddress),
    metricsBindAddress:
      given.metricsBindAddress ?? (v6 ? DEFAULTS.metricsBindAddressIPv6 : DEFAULTS.metricsBindAddress),
    bindAddressHardFail: given.bindAddressHardFail ?? false,
    oomScoreAdj: given.oomScoreAdj ?? DEFAULT_OOM_SCORE_ADJ,
    clusterCIDRs: [...(given.clusterCIDRs ?? [])],
    nodePortAddresses: [...(given.nodePortAddresses ?? [])],
    syncPeriodMs: given.syncPeriodMs ?? DEFAULTS.syncPeriodMs,
    minSyncPeriodMs: given.minSyncPeriodMs ?? DEFAULTS.minSyncPeriodMs,
    configSyncPeriodMs: given.configSyncPeriodMs ?? DEFAULTS.configSyncPeriodMs,
    kubeconfig: given.kubeconfig ?? "",
    qps: given.qps ?? DEFAULTS.qps,
    burst: given.burst ?? DEFAULTS.burst,
    detectLocalMode: given.detectLocalMode ?? "ClusterCIDR",
    detectLocalBridgeInterface: given.detectLocalBridgeInterface ?? "",
    detectLocalInterfaceNamePrefix: given.detectLocalInterfaceNamePrefix ?? "",
    ipvsScheduler: given.ipvsScheduler ?? "",
    ipvsStrictARP: given.ipvsStrictARP ?? false,
    ...(given.ipvsTimeouts ? { ipvsTimeouts: { ...given.ipvsTimeouts } } : {}),
    ipvsExcludeCIDRs: [...(given.ipvsExcludeCIDRs ?? [])],
    verbosity: given.verbosity ?? 0,
    source: given.source ?? "",
    devices: [...(given.devices ?? [])],
    podInterfaces: [...(given.podInterfaces ?? [])],
    bpffs: given.bpffs ?? DEFAULTS.bpffs,
    cgroupPath: given.cgroupPath ?? "",
    socketLBPodNamespaces: given.socketLBPodNamespaces ?? false,
    masqueradeAll: given.masqueradeAll ?? false,
    bypassNetfilter: given.bypassNetfilter ?? false,
    translatedMarkBit: given.translatedMarkBit ?? DEFAULT_TRANSLATED_MARK_BIT,
    ...(given.externalIPsAllowedCIDRs !== undefined
      ? { externalIPsAllowedCIDRs: [...given.externalIPsAllowedCIDRs] }
      : {}),
    // Partial sizes (file and flag) fill in over the defaults, the flag's on top of the file's.
    mapSizes: { ...DEFAULT_MAP_SIZES, ...(file?.mapSizes ?? {}), ...(flags.mapSizes ?? {}) },
    lbAlgorithm: given.lbAlgorithm ?? "random",
    lbMode: given.lbMode ?? "snat",
    xdp: given.xdp ?? "auto",
    conntrack: { ...DEFAULT_CONNTRACK, ...(given.conntrack ?? {}) },
    ...(given.conntrackMaxPerCore !== undefined ? { conntrackMaxPerCore: given.conntrackMaxPerCore } : {}),
    ...(given.conntrackMin !== undefined ? { conntrackMin: given.conntrackMin } : {}),
    conntrackGCIntervalMs: given.conntrackGCIntervalMs ?? DEFAULT_CT_GC_INTERVAL_MS,
    snatPortRange: given.snatPortRange ?? DEFAULT_SNAT_PORT_RANGE,
    nodePortRange: given.nodePortRange ?? DEFAULT_NODE_PORT_RANGE,
    fullSyncPeriodMs: given.fullSyncPeriodMs ?? DEFAULT_FULL_SYNC_PERIOD_MS,
  };
}

/** conntrack.maxPerCore/min size the BPF conntrack map as they size nf_conntrack_max in kube-proxy. */
function sizeConntrackMap(cfg: EffectiveConfig, file: Given | undefined, flags: Given): void {
  // kube-proxy sizes nf_conntrack_max as max(maxPerCore × CPUs, min) (maxPerCore 0: leave it); bpx_ct_v3 holds
  // two entries per flow. An explicit mapSizes.conntrack (flag or file) wins.
  if (
    file?.mapSizes?.conntrack === undefined &&
    flags.mapSizes?.conntrack === undefined &&
    (cfg.conntrackMaxPerCore !== undefined || cfg.conntrackMin !== undefined)
  ) {
    const perCore = cfg.conntrackMaxPerCore ?? KUBE_PROXY_CONNTRACK.maxPerCore!;
    if (perCore > 0)
      cfg.mapSizes.conntrack = 2 * Math.max(perCore * cpus().length, cfg.conntrackMin ?? KUBE_PROXY_CONNTRACK.min!);
  }
}
