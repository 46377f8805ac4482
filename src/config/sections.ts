// A schema-checked file → the settings it gives, one reader per section. Zero values are left out (they mean
// "default", as kube-proxy's defaulting treats them); every problem is collected, so one error names them all.
import { isIP } from "node:net";
import type { MapSizes } from "../dataplane/bpf/abi.js";
import { parseBindAddress } from "../health/http.js";
import { dualStackCIDRsProblem, isCIDR, parseCIDR } from "../k8s/ip.js";
import {
  DEFAULT_CONNTRACK,
  DEFAULTS,
  KERNEL_CONNTRACK_ZERO,
  KUBE_PROXY_CONTENT_TYPE,
  KUBE_PROXY_MASQUERADE_BIT,
} from "./defaults.js";
import { parseDuration } from "./duration.js";
import { throwProblems, type Problems } from "./errors.js";
import type { KubeProxyConfigurationFile as File } from "./schema.js";
import {
  DETECT_LOCAL_MODES,
  XDP_MODES,
  type ConntrackSettings,
  type DetectLocalMode,
  type EffectiveConfig,
  type ParsedConfigFile,
  type XdpMode,
} from "./types.js";
import { nodePortAddressProblem } from "./validate.js";

type Text = string | null | undefined;

/** What the section readers share: the settings found so far, and the problems and warnings about them. */
class Reading {
  readonly out: Partial<EffectiveConfig> = {};
  readonly problems: Problems = [];
  readonly warnings: string[] = [];

  problem(path: string, reason: string): void {
    this.problems.push({ path, reason });
  }

  /** A metav1.Duration in ms; undefined when unset, zero (→ default) or bad (then a problem is recorded). */
  duration(path: string, v: Text, rule: "positive" | "nonnegative"): number | undefined {
    if (v === null || v === undefined) return undefined;
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch (err) {
      this.problem(path, (err as Error).message);
      return undefined;
    }
    if (ms < 0) {
      this.problem(path, `must be ${rule === "positive" ? "greater than 0" : "0 or more"}, got ${JSON.stringify(v)}`);
      return undefined;
    }
    return ms === 0 ? undefined : ms; // zero value → default
  }

  /** A field bpfproxy cannot honour: set to anything but its zero value or kube-proxy's default, startup stops. */
  refuse(path: string, set: boolean, why: string): void {
    if (set) this.problem(path, `not supported by bpfproxy: ${why}; remove it or leave it at its default`);
  }
}

const nonEmpty = (v: Text): v is string => typeof v === "string" && v !== "";

/** A duration set to anything but zero; a malformed one counts as set (Reading.duration reports it). */
function isSetDuration(v: Text): boolean {
  if (v === null || v === undefined) return false;
  try {
    return parseDuration(v) !== 0;
  } catch {
    return true;
  }
}

/** The settings a schema-checked file gives. Throws ConfigError naming every bad field; `origin` names the file. */
export function toPartial(f: File, origin: string): ParsedConfigFile {
  const r = new Reading();
  readMode(f, r); // first: it picks the section the sync periods come from
  readNodeAndServers(f, r);
  readClusterCIDRs(f, r);
  readNodePortAddresses(f, r);
  readSyncPeriods(f, r);
  readClientConnection(f, r);
  readDetectLocal(f, r);
  readLogging(f, r);
  readIpvs(f, r);
  readIptablesAndNftables(f, r);
  readConntrack(f, r);
  refuseOtherPlatforms(f, r);
  readBpfproxy(f, r);
  if (r.problems.length) throwProblems(origin, r.problems);
  return { config: r.out, warnings: r.warnings };
}

function readMode(f: File, r: Reading): void {
  const v = f.mode ?? "";
  switch (v) {
    case "":
      return;
    case "auto":
    case "bpf":
    case "ipvs":
      r.out.mode = v;
      return;
    case "iptables":
    case "nftables":
      r.warnings.push(
        `mode: ${JSON.stringify(v)} is a kube-proxy data plane that bpfproxy replaces; using mode "auto" (bpf, or ipvs where BPF is unavailable)`,
      );
      r.out.mode = "auto";
      return;
    case "kernelspace":
      r.problem("mode", `"kernelspace" is the Windows proxy mode; bpfproxy runs on Linux: use "bpf", "ipvs" or ""`);
      return;
    default:
      r.problem("mode", `unknown mode ${JSON.stringify(v)}: use "" (auto), "bpf" or "ipvs"`);
  }
}

/** The node's name and address, and the health and metrics servers. */
function readNodeAndServers(f: File, r: Reading): void {
  const out = r.out;
  if (nonEmpty(f.hostnameOverride)) out.hostnameOverride = f.hostnameOverride.trim().toLowerCase();
  if (nonEmpty(f.bindAddress)) {
    if (isIP(f.bindAddress) === 0)
      r.problem("bindAddress", `must be an IP address, got ${JSON.stringify(f.bindAddress)}`);
    else out.bindAddress = f.bindAddress;
  }
  if (f.oomScoreAdj !== undefined && f.oomScoreAdj !== null) out.oomScoreAdj = f.oomScoreAdj;
  for (const key of ["healthzBindAddress", "metricsBindAddress"] as const) {
    const v = f[key];
    if (!nonEmpty(v)) continue;
    try {
      parseBindAddress(v, 1);
      out[key] = v;
    } catch (err) {
      r.problem(key, (err as Error).message);
    }
  }
  if (f.bindAddressHardFail) out.bindAddressHardFail = true;
}

/** clusterCIDR (comma-separated, one per family), else detectLocal.clusterCIDRs. */
function readClusterCIDRs(f: File, r: Reading): void {
  if (nonEmpty(f.clusterCIDR)) {
    const cidrs = f.clusterCIDR.split(",").map((s) => s.trim());
    cidrs.forEach((c) => {
      if (!isCIDR(c)) r.problem("clusterCIDR", `${JSON.stringify(c)} is not a CIDR (e.g. 10.244.0.0/16)`);
    });
    const pair = dualStackCIDRsProblem(cidrs);
    if (pair) r.problem("clusterCIDR", pair);
    r.out.clusterCIDRs = cidrs;
  }
  const dlCIDRs = f.detectLocal?.clusterCIDRs ?? [];
  dlCIDRs.forEach((c, i) => {
    if (!isCIDR(c)) r.problem(`detectLocal.clusterCIDRs[${i}]`, `${JSON.stringify(c)} is not a CIDR`);
  });
  const dlPair = dualStackCIDRsProblem(dlCIDRs);
  if (dlPair) r.problem("detectLocal.clusterCIDRs", dlPair);
  if (!r.out.clusterCIDRs && dlCIDRs.length) r.out.clusterCIDRs = [...dlCIDRs];
}

function readNodePortAddresses(f: File, r: Reading): void {
  if (!f.nodePortAddresses?.length) return;
  f.nodePortAddresses.forEach((a, i) => {
    const why = nodePortAddressProblem(a);
    if (why) r.problem(`nodePortAddresses[${i}]`, why);
  });
  r.out.nodePortAddresses = [...f.nodePortAddresses];
}

/** Sync periods: top level wins, else the section of the requested mode (kube-proxy's conversion rule). */
function readSyncPeriods(f: File, r: Reading): void {
  const modeText = f.mode ?? "";
  const section = modeText === "ipvs" ? "ipvs" : modeText === "nftables" ? "nftables" : "iptables";
  const sec = f[section];
  const sp =
    r.duration("syncPeriod", f.syncPeriod, "positive") ??
    r.duration(`${section}.syncPeriod`, sec?.syncPeriod, "positive");
  const msp =
    r.duration("minSyncPeriod", f.minSyncPeriod, "nonnegative") ??
    r.duration(`${section}.minSyncPeriod`, sec?.minSyncPeriod, "nonnegative");
  // Validate the other sections' periods too (a typo there is still a typo).
  for (const other of ["iptables", "ipvs", "nftables"] as const) {
    if (other === section) continue;
    r.duration(`${other}.syncPeriod`, f[other]?.syncPeriod, "positive");
    r.duration(`${other}.minSyncPeriod`, f[other]?.minSyncPeriod, "nonnegative");
  }
  if (sp !== undefined) r.out.syncPeriodMs = sp;
  if (msp !== undefined) r.out.minSyncPeriodMs = msp;
  const csp = r.duration("configSyncPeriod", f.configSyncPeriod, "positive");
  // An informer resync only re-delivers cached objects; bpfproxy's watches have none, and its data plane is
  // re-read and repaired every bpfproxy.fullSyncPeriod instead.
  r.refuse(
    "configSyncPeriod",
    csp !== undefined && csp !== DEFAULTS.configSyncPeriodMs,
    "bpfproxy's watches have no informer resync (the data plane is re-read and repaired every bpfproxy.fullSyncPeriod)",
  );
}

function readClientConnection(f: File, r: Reading): void {
  const cc = f.clientConnection;
  if (nonEmpty(cc?.kubeconfig)) r.out.kubeconfig = cc.kubeconfig;
  // bpfproxy's client makes one list and one watch per resource and has no request rate limiter to tune.
  const noLimiter =
    "bpfproxy's API client makes one list and one watch per resource and has no client-side rate limiter";
  if (cc?.qps !== undefined && cc.qps !== null) {
    if (cc.qps < 0) r.problem("clientConnection.qps", "must be 0 or more");
    else r.refuse("clientConnection.qps", cc.qps !== 0 && cc.qps !== DEFAULTS.qps, noLimiter);
  }
  if (cc?.burst !== undefined && cc.burst !== null) {
    if (cc.burst < 0) r.problem("clientConnection.burst", "must be 0 or more");
    else r.refuse("clientConnection.burst", cc.burst !== 0 && cc.burst !== DEFAULTS.burst, noLimiter);
  }
  r.refuse(
    "clientConnection.acceptContentTypes",
    nonEmpty(cc?.acceptContentTypes) && cc.acceptContentTypes !== "application/json",
    "bpfproxy's client accepts application/json only",
  );
  r.refuse(
    "clientConnection.contentType",
    nonEmpty(cc?.contentType) && !["application/json", KUBE_PROXY_CONTENT_TYPE].includes(cc.contentType),
    "bpfproxy's client sends application/json (kube-proxy's default protobuf is accepted and means the same API objects)",
  );
}

/** detectLocalMode and the interface settings it requires (its clusterCIDRs are read with clusterCIDR). */
function readDetectLocal(f: File, r: Reading): void {
  const out = r.out;
  if (nonEmpty(f.detectLocalMode)) {
    if (!(DETECT_LOCAL_MODES as string[]).includes(f.detectLocalMode))
      r.problem(
        "detectLocalMode",
        `must be one of ${DETECT_LOCAL_MODES.join(", ")}, got ${JSON.stringify(f.detectLocalMode)}`,
      );
    else out.detectLocalMode = f.detectLocalMode as DetectLocalMode;
  }
  if (nonEmpty(f.detectLocal?.bridgeInterface)) out.detectLocalBridgeInterface = f.detectLocal.bridgeInterface;
  if (nonEmpty(f.detectLocal?.interfaceNamePrefix))
    out.detectLocalInterfaceNamePrefix = f.detectLocal.interfaceNamePrefix;
  if (out.detectLocalMode === "BridgeInterface" && !out.detectLocalBridgeInterface)
    r.problem("detectLocal.bridgeInterface", "required when detectLocalMode is BridgeInterface");
  if (out.detectLocalMode === "InterfaceNamePrefix" && !out.detectLocalInterfaceNamePrefix)
    r.problem("detectLocal.interfaceNamePrefix", "required when detectLocalMode is InterfaceNamePrefix");
}

function readLogging(f: File, r: Reading): void {
  const lg = f.logging;
  if (lg?.verbosity) r.out.verbosity = lg.verbosity;
  r.refuse("logging.format", nonEmpty(lg?.format) && lg?.format !== "text", "bpfproxy logs text only");
  r.refuse("logging.vmodule", !!lg?.vmodule?.length, "bpfproxy has one verbosity for all its code (logging.verbosity)");
  // flushFrequency bounds how long a line may sit in a buffer; bpfproxy writes each line at once, so any value holds.
  const ff = lg?.flushFrequency;
  if (typeof ff === "number" && !(ff >= 0)) r.problem("logging.flushFrequency", "must be 0 or more");
  if (typeof ff === "string") r.duration("logging.flushFrequency", ff, "nonnegative");
  for (const stream of ["json", "text"] as const) {
    const o = lg?.options?.[stream];
    const size = o?.infoBufferSize;
    r.refuse(
      `logging.options.${stream}.infoBufferSize`,
      size !== undefined && size !== null && size !== "" && String(size) !== "0",
      "bpfproxy writes log lines unbuffered",
    );
    r.refuse(`logging.options.${stream}.splitStream`, !!o?.splitStream, "bpfproxy writes every log line to stderr");
  }
}

/** IPVS mode's settings (used by --mode ipvs, and by auto when it picks ipvs); its periods are read above. */
function readIpvs(f: File, r: Reading): void {
  const ipvs = f.ipvs;
  if (nonEmpty(ipvs?.scheduler)) r.out.ipvsScheduler = ipvs.scheduler;
  const t = {
    tcp: r.duration("ipvs.tcpTimeout", ipvs?.tcpTimeout, "nonnegative"),
    tcpFin: r.duration("ipvs.tcpFinTimeout", ipvs?.tcpFinTimeout, "nonnegative"),
    udp: r.duration("ipvs.udpTimeout", ipvs?.udpTimeout, "nonnegative"),
  };
  if (t.tcp || t.tcpFin || t.udp) {
    r.out.ipvsTimeouts = {
      tcp: Math.round((t.tcp ?? 0) / 1000),
      tcpFin: Math.round((t.tcpFin ?? 0) / 1000),
      udp: Math.round((t.udp ?? 0) / 1000),
    };
  }
  if (ipvs?.strictARP) r.out.ipvsStrictARP = true;
  if (ipvs?.excludeCIDRs?.length) {
    for (const c of ipvs.excludeCIDRs)
      if (!parseCIDR(c)) r.problem("ipvs.excludeCIDRs", `not an IPv4 CIDR: ${JSON.stringify(c)}`);
    r.out.ipvsExcludeCIDRs = [...ipvs.excludeCIDRs];
  }
}

/** What the iptables and nftables sections set besides periods and masqueradeAll: nothing bpfproxy can move. */
function readIptablesAndNftables(f: File, r: Reading): void {
  for (const k of ["iptables", "nftables"] as const) {
    const bit = f[k]?.masqueradeBit;
    if (bit !== undefined && bit !== null && (bit < 0 || bit > 31))
      r.problem(`${k}.masqueradeBit`, "must be from 0 to 31");
    else
      r.refuse(
        `${k}.masqueradeBit`,
        bit !== undefined && bit !== null && bit !== KUBE_PROXY_MASQUERADE_BIT,
        "the BPF data plane masquerades without packet marks, so there is no mark bit to move",
      );
  }
  r.refuse(
    "iptables.localhostNodePorts",
    f.iptables?.localhostNodePorts === true,
    "NodePorts are never served on 127.0.0.1 (route_localnet is not enabled); leave it null or set false",
  );
}

// kube-proxy writes these into the kernel's conntrack; bpfproxy's own conntrack applies them (lifetimes in
// bpx_ct_config_v1, the map size from maxPerCore/min). A 0 means what it means to kube-proxy: the kernel's value.
function readConntrack(f: File, r: Reading): void {
  const ct = f.conntrack;
  for (const k of ["maxPerCore", "min"] as const) {
    const v = ct?.[k];
    if (v === undefined || v === null) continue;
    if (v < 0) r.problem(`conntrack.${k}`, "must be 0 or more");
    else r.out[k === "maxPerCore" ? "conntrackMaxPerCore" : "conntrackMin"] = v;
  }
  const ctSet: Partial<ConntrackSettings> = {};
  for (const [k, js] of [
    ["tcpEstablishedTimeout", "tcpEstablishedMs"],
    ["tcpCloseWaitTimeout", "tcpCloseWaitMs"],
    ["udpTimeout", "udpMs"],
    ["udpStreamTimeout", "udpStreamMs"],
  ] as const) {
    const v = ct?.[k];
    if (v === undefined || v === null || v === "") continue;
    const ms = isSetDuration(v) ? r.duration(`conntrack.${k}`, v, "nonnegative") : 0;
    if (ms === undefined) continue;
    if (ms > 0 && ms < 1000) r.problem(`conntrack.${k}`, "must be 0 or at least 1s");
    else ctSet[js] = ms === 0 ? KERNEL_CONNTRACK_ZERO[js] : ms;
  }
  if (ct?.tcpBeLiberal) ctSet.beLiberal = true;
  if (Object.keys(ctSet).length) r.out.conntrack = { ...DEFAULT_CONNTRACK, ...ctSet };
}

/** Feature gates, Windows settings and removed kube-proxy fields: none has anything to act on here. */
function refuseOtherPlatforms(f: File, r: Reading): void {
  for (const gate of Object.keys(f.featureGates ?? {}))
    r.refuse(
      `featureGates.${gate}`,
      true,
      "kube-proxy's feature gates switch kube-proxy's own code, which bpfproxy does not contain",
    );
  const wk = f.winkernel;
  for (const k of ["networkName", "sourceVip", "rootHnsEndpointName"] as const)
    r.refuse(`winkernel.${k}`, nonEmpty(wk?.[k]), "Windows only; bpfproxy runs on Linux");
  for (const k of ["enableDSR", "forwardHealthCheckVip"] as const)
    r.refuse(`winkernel.${k}`, !!wk?.[k], "Windows only; bpfproxy runs on Linux");
  r.refuse("windowsRunAsService", !!f.windowsRunAsService, "Windows only; bpfproxy runs on Linux");
  r.refuse("portRange", nonEmpty(f.portRange), "it configured kube-proxy's removed userspace mode");
  r.refuse(
    "enableProfiling",
    !!f.enableProfiling,
    "bpfproxy serves no /debug/pprof endpoints (use node --inspect or --cpu-prof)",
  );
  r.refuse(
    "showHiddenMetricsForVersion",
    nonEmpty(f.showHiddenMetricsForVersion),
    "bpfproxy has no hidden (deprecated) metrics to show",
  );
}

/** bpfproxy's own section (and masqueradeAll, which kube-proxy's iptables/nftables sections also carry). */
function readBpfproxy(f: File, r: Reading): void {
  const out = r.out;
  const b = f.bpfproxy;
  if (nonEmpty(b?.source)) {
    if (!b.source.startsWith("dir:") || b.source.length <= 4)
      r.problem("bpfproxy.source", `must be dir:PATH, got ${JSON.stringify(b.source)}`);
    else out.source = b.source;
  }
  if (b?.devices?.length) out.devices = [...b.devices];
  if (b?.podInterfaces?.length) out.podInterfaces = [...b.podInterfaces];
  for (const k of ["bpffs", "cgroupPath"] as const) {
    const v = b?.[k];
    if (!nonEmpty(v)) continue;
    if (!v.startsWith("/")) r.problem(`bpfproxy.${k}`, "must be an absolute path");
    else out[k] = v;
  }
  if (b?.socketLBPodNamespaces !== undefined && b.socketLBPodNamespaces !== null)
    out.socketLBPodNamespaces = b.socketLBPodNamespaces;
  if (b?.externalIPsAllowedCIDRs !== undefined && b.externalIPsAllowedCIDRs !== null) {
    b.externalIPsAllowedCIDRs.forEach((c, i) => {
      if (!isCIDR(c.trim())) r.problem(`bpfproxy.externalIPsAllowedCIDRs[${i}]`, `${JSON.stringify(c)} is not a CIDR`);
    });
    out.externalIPsAllowedCIDRs = b.externalIPsAllowedCIDRs.map((c) => c.trim());
  }
  if (b?.mapSizes) {
    const sizes: Partial<MapSizes> = {};
    for (const [k, v] of Object.entries(b.mapSizes))
      if (v !== undefined && v !== null && v !== 0) sizes[k as keyof MapSizes] = v;
    if (Object.keys(sizes).length) out.mapSizes = sizes as MapSizes;
  }
  if (b?.lbAlgorithm) out.lbAlgorithm = b.lbAlgorithm;
  if (b?.lbMode) out.lbMode = b.lbMode;
  if (isSetDuration(b?.conntrackGCInterval)) {
    const ms = r.duration("bpfproxy.conntrackGCInterval", b?.conntrackGCInterval, "nonnegative");
    if (ms !== undefined) out.conntrackGCIntervalMs = ms;
  }
  if (nonEmpty(b?.snatPortRange)) out.snatPortRange = b.snatPortRange.trim();
  if (nonEmpty(b?.nodePortRange)) out.nodePortRange = b.nodePortRange.trim();
  if (isSetDuration(b?.fullSyncPeriod)) {
    const ms = r.duration("bpfproxy.fullSyncPeriod", b?.fullSyncPeriod, "positive");
    if (ms !== undefined) out.fullSyncPeriodMs = ms;
  }
  if (nonEmpty(b?.xdp)) {
    if (!(XDP_MODES as string[]).includes(b.xdp))
      r.problem("bpfproxy.xdp", `must be one of ${XDP_MODES.join(", ")}, got ${JSON.stringify(b.xdp)}`);
    else out.xdp = b.xdp as XdpMode;
  }
  if (b?.bypassNetfilter !== undefined && b.bypassNetfilter !== null) out.bypassNetfilter = b.bypassNetfilter;
  if (b?.translatedMarkBit !== undefined && b.translatedMarkBit !== null) out.translatedMarkBit = b.translatedMarkBit;
  // masqueradeAll: bpfproxy's own setting wins; else kube-proxy's iptables/nftables one.
  if (b?.masqueradeAll !== undefined && b.masqueradeAll !== null) out.masqueradeAll = b.masqueradeAll;
  else if (f.iptables?.masqueradeAll || f.nftables?.masqueradeAll) out.masqueradeAll = true;
}
