// --config: kube-proxy's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) plus a `bpfproxy:`
// section, validated strictly (an unknown field anywhere is an error naming its path, as kube-proxy's
// strict decoding does), turned into one flat EffectiveConfig; command-line flags override the file and
// kube-proxy's defaults fill the rest.
//
// Zero values in the file mean "default", as kube-proxy's defaulting treats them ("" bind addresses,
// "0s" periods, qps 0): kubeadm writes such zero values into the ConfigMaps it generates, and those files
// must load unchanged. A flag set to "" (e.g. --healthz-bind-address="") disables that server, as it does
// in kube-proxy.
//
// mode: "" → auto (bpf when the kernel can, else ipvs), "bpf", "ipvs". kube-proxy's "iptables" and
// "nftables" are accepted with a warning and treated as auto: a config copied from a kube-proxy
// deployment asks for "the node's service proxy", which bpfproxy now is; bpfproxy never programs
// iptables/nftables service rules. "kernelspace" (Windows) is an error.
//
// Every field either works as in kube-proxy or, set to anything but its zero value or kube-proxy's default,
// stops startup with an error naming it (docs/config.md has the table): nothing is accepted and ignored.
import { readFile } from "node:fs/promises";
import { cpus, hostname } from "node:os";
import { isIP } from "node:net";
import { parse as parseYAML } from "yaml";
import { z } from "zod";
import { log } from "./log.js";
import { parseBindAddress } from "./health/http.js";
import { isCIDR, parseCIDR } from "./k8s/ip.js";
import { DEFAULT_MAP_SIZES, type MapSizes } from "./dataplane/abi.js";

/** The smallest size accepted for a map (the kernel would take 1; this keeps typos from loading a useless map). */
export const MIN_MAP_SIZE = 16;
export const MAX_MAP_SIZE = 1 << 26;

/**
 * Parses --map-sizes "services=N,backends=N,frontends=N,conntrack=N,affinity=N" (any subset).
 * Throws naming the bad part.
 */
export function parseMapSizes(text: string): Partial<MapSizes> {
  const out: Partial<MapSizes> = {};
  for (const part of text
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([a-z]+)=(\d+)$/.exec(part);
    if (!m || !(m[1]! in DEFAULT_MAP_SIZES)) {
      throw new Error(
        `${JSON.stringify(part)}: expected NAME=ENTRIES with NAME one of ${Object.keys(DEFAULT_MAP_SIZES).join(", ")}`,
      );
    }
    out[m[1] as keyof MapSizes] = Number(m[2]);
  }
  return out;
}

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

/** kube-proxy's defaults (a field left null), and what a 0 means (the kernel's nf_conntrack defaults). */
export const DEFAULT_CONNTRACK: Readonly<ConntrackSettings> = Object.freeze({
  tcpEstablishedMs: 24 * 3_600_000,
  tcpCloseWaitMs: 3_600_000,
  udpMs: 30_000,
  udpStreamMs: 120_000,
  beLiberal: false,
});
const KERNEL_CONNTRACK_ZERO = {
  tcpEstablishedMs: 432_000_000,
  tcpCloseWaitMs: 60_000,
  udpMs: 30_000,
  udpStreamMs: 120_000,
};

/**
 * The IPVS data plane uses the kernel's conntrack, whose sysctls bpfproxy does not write: there only "leave as is"
 * (null, 0) and kube-proxy's defaults are accepted, as before this conntrack existed. Returns the offending fields.
 */
export function conntrackFieldsIpvsCannotHonour(cfg: EffectiveConfig): string[] {
  const out: string[] = [];
  const c = cfg.conntrack;
  for (const [k, path] of [
    ["tcpEstablishedMs", "tcpEstablishedTimeout"],
    ["tcpCloseWaitMs", "tcpCloseWaitTimeout"],
    ["udpMs", "udpTimeout"],
    ["udpStreamMs", "udpStreamTimeout"],
  ] as const)
    if (c[k] !== DEFAULT_CONNTRACK[k] && c[k] !== KERNEL_CONNTRACK_ZERO[k]) out.push(`conntrack.${path}`);
  if (c.beLiberal) out.push("conntrack.tcpBeLiberal");
  if (cfg.conntrackMaxPerCore && cfg.conntrackMaxPerCore !== KUBE_PROXY_CONNTRACK.maxPerCore)
    out.push("conntrack.maxPerCore");
  if (cfg.conntrackMin && cfg.conntrackMin !== KUBE_PROXY_CONNTRACK.min) out.push("conntrack.min");
  return out;
}

/** Default interval of the conntrack garbage collector (bpfproxy.conntrackGCInterval, --conntrack-gc-interval). */
export const DEFAULT_CT_GC_INTERVAL_MS = 15_000;

/** kube-proxy's defaults for fields bpfproxy cannot change; written out, they are accepted. */
const KUBE_PROXY_CONTENT_TYPE = "application/vnd.kubernetes.protobuf";
const KUBE_PROXY_MASQUERADE_BIT = 14;
const KUBE_PROXY_CONNTRACK: Record<string, number> = {
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

/** A problem in the configuration (file or flags); the message names the field path and the reason. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly problems: Array<{ path: string; reason: string }> = [],
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

// ---------------------------------------------------------------------------------------------
// Go durations

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "\u00b5s": 1e-3, // µ (micro sign)
  "\u03bcs": 1e-3, // μ (Greek mu)
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a Go duration (time.ParseDuration) into milliseconds: "300ms", "1.5h", "2h45m", "1m0s",
 * "1h2m3.5s", "-1.5s", ".5s", "0". Units ns, us (µs, μs), ms, s, m, h; every number needs a unit
 * except a lone "0". Throws an Error saying what is wrong.
 */
export function parseDuration(input: string): number {
  const bad = (why: string) => new Error(`invalid duration ${JSON.stringify(input)}: ${why}`);
  let s = input;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw bad("empty");
  let total = 0;
  const re = /^(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)/;
  while (s !== "") {
    const m = re.exec(s);
    if (!m) throw bad(/^[\d.]/.test(s) ? "missing unit (use ns, us, ms, s, m or h)" : "expected a number");
    const [whole, intPart, fracPart, unit] = m;
    if (intPart === "" && (fracPart === undefined || fracPart === "")) throw bad("expected a number");
    const perUnit = UNIT_MS[unit!]; // the unit group is not optional
    if (perUnit === undefined) throw bad(`unknown unit ${JSON.stringify(unit)} (use ns, us, ms, s, m or h)`);
    total += Number(`${intPart || "0"}.${fracPart || "0"}`) * perUnit;
    s = s.slice(whole.length);
  }
  if (!Number.isFinite(total)) throw bad("out of range");
  return sign * total;
}

/** Formats milliseconds the way Go prints a time.Duration ("1m0s", "1.5s", "500ms", "0s"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const neg = ms < 0;
  let rest = Math.abs(ms);
  let out: string;
  if (rest < 1000) {
    out = `${+rest.toFixed(6)}ms`;
  } else {
    const h = Math.floor(rest / 3_600_000);
    rest -= h * 3_600_000;
    const m = Math.floor(rest / 60_000);
    rest -= m * 60_000;
    const sec = `${+(rest / 1000).toFixed(9)}s`;
    out = h > 0 ? `${h}h${m}m${sec}` : m > 0 ? `${m}m${sec}` : sec;
  }
  return neg ? `-${out}` : out;
}

// ---------------------------------------------------------------------------------------------
// Schema of the file

const str = z.string().nullish();
const bool = z.boolean().nullish();
const int32 = z.number().int().nullish();
const strList = z.array(z.string()).nullish();
/** metav1.Duration: a Go duration string, kept as text here and parsed with its path in toPartial(). */
const duration = z.string({ error: 'must be a Go duration string such as "30s" or "1m0s"' }).nullish();

const clientConnection = z.strictObject({
  kubeconfig: str,
  acceptContentTypes: str,
  contentType: str,
  qps: z.number().nullish(),
  burst: int32,
});

/** logging.options.{json,text}: kubeadm writes infoBufferSize "0"; bpfproxy logs unbuffered to one stream. */
const logStream = z.strictObject({ infoBufferSize: z.union([z.string(), z.number()]).nullish(), splitStream: bool });

const logging = z.strictObject({
  format: str,
  flushFrequency: z.union([z.number(), z.string()]).nullish(),
  verbosity: z.number().int().min(0).nullish(),
  vmodule: z.array(z.strictObject({ filePattern: z.string(), verbosity: z.number().int().min(0) })).nullish(),
  options: z.strictObject({ json: logStream.nullish(), text: logStream.nullish() }).nullish(),
});

const iptables = z.strictObject({
  masqueradeBit: int32,
  masqueradeAll: bool,
  localhostNodePorts: bool,
  syncPeriod: duration,
  minSyncPeriod: duration,
});

const ipvs = z.strictObject({
  syncPeriod: duration,
  minSyncPeriod: duration,
  scheduler: str,
  excludeCIDRs: strList,
  strictARP: bool,
  tcpTimeout: duration,
  tcpFinTimeout: duration,
  udpTimeout: duration,
});

const nftables = z.strictObject({
  masqueradeBit: int32,
  masqueradeAll: bool,
  syncPeriod: duration,
  minSyncPeriod: duration,
});

const winkernel = z.strictObject({
  networkName: str,
  sourceVip: str,
  enableDSR: bool,
  rootHnsEndpointName: str,
  forwardHealthCheckVip: bool,
});

const detectLocal = z.strictObject({
  bridgeInterface: str,
  interfaceNamePrefix: str,
  clusterCIDRs: strList,
});

const conntrack = z.strictObject({
  maxPerCore: int32,
  min: int32,
  tcpEstablishedTimeout: duration,
  tcpCloseWaitTimeout: duration,
  tcpBeLiberal: bool,
  udpTimeout: duration,
  udpStreamTimeout: duration,
});

const bpfproxySection = z.strictObject({
  /** "dir:PATH" serves from a manifest folder instead of the Kubernetes API. */
  source: str,
  devices: strList,
  podInterfaces: strList,
  bpffs: str,
  cgroupPath: str,
  masqueradeAll: bool,
  /** CVE-2020-8554 mitigation: serve Service externalIPs only inside these CIDRs ([] = none; absent = all). */
  externalIPsAllowedCIDRs: strList,
  /** BPF map sizes (entries); unset ones keep their defaults. */
  mapSizes: z
    .strictObject({
      services: int32,
      backends: int32,
      frontends: int32,
      conntrack: int32,
      affinity: int32,
    })
    .nullish(),
  /** Backend choice for Services without the bpfproxy.io/lb-algorithm annotation. */
  lbAlgorithm: z.enum(["random", "maglev"], { error: 'must be "random" or "maglev"' }).nullish(),
  /** XDP on --devices: off, native, generic or auto (native where the driver allows, else tc only). */
  xdp: str,
  /** How often the conntrack garbage collector walks the map (docs/conntrack.md). */
  conntrackGCInterval: duration,
});

export const kubeProxyConfigurationSchema = z.strictObject({
  apiVersion: z.literal(CONFIG_API_VERSION, { error: `must be ${JSON.stringify(CONFIG_API_VERSION)}` }),
  kind: z.literal(CONFIG_KIND, { error: `must be ${JSON.stringify(CONFIG_KIND)}` }),
  featureGates: z.record(z.string(), z.boolean()).nullish(),
  clientConnection: clientConnection.nullish(),
  logging: logging.nullish(),
  hostnameOverride: str,
  bindAddress: str,
  healthzBindAddress: str,
  metricsBindAddress: str,
  bindAddressHardFail: bool,
  enableProfiling: bool,
  showHiddenMetricsForVersion: str,
  mode: str,
  iptables: iptables.nullish(),
  ipvs: ipvs.nullish(),
  nftables: nftables.nullish(),
  winkernel: winkernel.nullish(),
  detectLocalMode: str,
  detectLocal: detectLocal.nullish(),
  clusterCIDR: str,
  nodePortAddresses: strList,
  oomScoreAdj: int32,
  conntrack: conntrack.nullish(),
  configSyncPeriod: duration,
  /** Top-level periods as in kube-proxy's newer config; they win over the per-mode sections. */
  syncPeriod: duration,
  minSyncPeriod: duration,
  portRange: str,
  windowsRunAsService: bool,
  bpfproxy: bpfproxySection.nullish(),
});

export type KubeProxyConfigurationFile = z.infer<typeof kubeProxyConfigurationSchema>;

// ---------------------------------------------------------------------------------------------
// Effective configuration

export type ProxyMode = "auto" | "bpf" | "ipvs";
export type DetectLocalMode = "ClusterCIDR" | "NodeCIDR" | "BridgeInterface" | "InterfaceNamePrefix";

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
  masqueradeAll: boolean;
  /** bpfproxy.externalIPsAllowedCIDRs: undefined serves every externalIP (kube-proxy's default); [] none. */
  externalIPsAllowedCIDRs?: string[];
  /** BPF map sizes in entries (docs/maps.md). */
  mapSizes: MapSizes;
  /** Default backend choice (the Service annotation bpfproxy.io/lb-algorithm wins). */
  lbAlgorithm: "random" | "maglev";
  /** XDP on --devices: "auto" (native where the driver allows, else tc), "native", "generic" or "off". */
  xdp: XdpMode;
  /** kube-proxy's `conntrack` timeouts and tcpBeLiberal, applied by the BPF conntrack. */
  conntrack: ConntrackSettings;
  /** conntrack.maxPerCore / .min as given (unset: undefined); they size bpx_ct_v2 unless mapSizes.conntrack is set. */
  conntrackMaxPerCore?: number;
  conntrackMin?: number;
  /** Interval of the conntrack garbage collector. */
  conntrackGCIntervalMs: number;
}

export type XdpMode = "auto" | "native" | "generic" | "off";
const XDP_MODES: XdpMode[] = ["auto", "native", "generic", "off"];

/** A parsed file: only the settings it gave (zero values left out), and warnings about what it ignores. */
export interface ParsedConfigFile {
  config: Partial<EffectiveConfig>;
  warnings: string[];
}

type Problems = Array<{ path: string; reason: string }>;

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || "(top level)";
}

function throwProblems(origin: string, problems: Problems): never {
  const lines = problems.map((p) => `  ${p.path}: ${p.reason}`);
  throw new ConfigError(`invalid configuration in ${origin}:\n${lines.join("\n")}`, problems);
}

const DETECT_LOCAL_MODES: DetectLocalMode[] = ["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"];
const NODEPORT_KEYWORDS = new Set(["primary"]);

/** kube-proxy's --nodeport-addresses takes CIDRs and "primary" only; anything else is refused, naming the field. */
function nodePortAddressProblem(a: string): string | undefined {
  if (NODEPORT_KEYWORDS.has(a) || isCIDR(a)) return undefined;
  if (a === "all" || a === "localhost")
    return `${JSON.stringify(a)} is not a kube-proxy value: leave nodePortAddresses unset to serve every local address; NodePorts are never served on localhost`;
  return `${JSON.stringify(a)} is neither a CIDR nor "primary"`;
}

function parseMode(v: string, path: string, problems: Problems, warnings: string[]): ProxyMode | undefined {
  switch (v) {
    case "":
      return undefined;
    case "auto":
    case "bpf":
    case "ipvs":
      return v;
    case "iptables":
    case "nftables":
      warnings.push(
        `${path}: ${JSON.stringify(v)} is a kube-proxy data plane that bpfproxy replaces; using mode "auto" (bpf, or ipvs where BPF is unavailable)`,
      );
      return "auto";
    case "kernelspace":
      problems.push({
        path,
        reason: `"kernelspace" is the Windows proxy mode; bpfproxy runs on Linux: use "bpf", "ipvs" or ""`,
      });
      return undefined;
    default:
      problems.push({ path, reason: `unknown mode ${JSON.stringify(v)}: use "" (auto), "bpf" or "ipvs"` });
      return undefined;
  }
}

/**
 * Parses and validates the text of a config file (YAML or JSON). Throws ConfigError naming every bad
 * field path. `origin` names the file in messages.
 */
export function parseConfigText(text: string, origin = "config"): ParsedConfigFile {
  let raw: unknown;
  try {
    raw = parseYAML(text, { uniqueKeys: true });
  } catch (err) {
    throw new ConfigError(`invalid configuration in ${origin}: not valid YAML/JSON: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`invalid configuration in ${origin}: expected a ${CONFIG_KIND} object`);
  }
  const r = kubeProxyConfigurationSchema.safeParse(raw);
  if (!r.success) {
    const problems: Problems = [];
    for (const issue of r.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const k of issue.keys) problems.push({ path: formatPath([...issue.path, k]), reason: "unknown field" });
      } else {
        problems.push({ path: formatPath(issue.path), reason: issue.message });
      }
    }
    throwProblems(origin, problems);
  }
  return toPartial(r.data, origin);
}

function toPartial(f: KubeProxyConfigurationFile, origin: string): ParsedConfigFile {
  const problems: Problems = [];
  const warnings: string[] = [];
  const out: Partial<EffectiveConfig> = {};

  const dur = (path: string, v: string | null | undefined, rule: "positive" | "nonnegative"): number | undefined => {
    if (v === null || v === undefined) return undefined;
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch (err) {
      problems.push({ path, reason: (err as Error).message });
      return undefined;
    }
    if (ms < 0) {
      problems.push({
        path,
        reason: `must be ${rule === "positive" ? "greater than 0" : "0 or more"}, got ${JSON.stringify(v)}`,
      });
      return undefined;
    }
    return ms === 0 ? undefined : ms; // zero value → default
  };
  /** A field bpfproxy cannot honour: set to anything but its zero value or kube-proxy's default, startup stops. */
  const refuse = (path: string, set: boolean, why: string) => {
    if (set) problems.push({ path, reason: `not supported by bpfproxy: ${why}; remove it or leave it at its default` });
  };
  const nonEmpty = (v: string | null | undefined): v is string => typeof v === "string" && v !== "";

  // mode first: it picks the section the sync periods come from.
  const modeText = f.mode ?? "";
  const mode = parseMode(modeText, "mode", problems, warnings);
  if (mode) out.mode = mode;

  if (nonEmpty(f.hostnameOverride)) out.hostnameOverride = f.hostnameOverride.trim().toLowerCase();
  if (nonEmpty(f.bindAddress)) {
    if (isIP(f.bindAddress) === 0)
      problems.push({ path: "bindAddress", reason: `must be an IP address, got ${JSON.stringify(f.bindAddress)}` });
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
      problems.push({ path: key, reason: (err as Error).message });
    }
  }
  if (f.bindAddressHardFail) out.bindAddressHardFail = true;

  if (nonEmpty(f.clusterCIDR)) {
    const cidrs = f.clusterCIDR.split(",").map((s) => s.trim());
    cidrs.forEach((c) => {
      if (!isCIDR(c))
        problems.push({ path: "clusterCIDR", reason: `${JSON.stringify(c)} is not a CIDR (e.g. 10.244.0.0/16)` });
    });
    if (cidrs.length > 2) problems.push({ path: "clusterCIDR", reason: "at most two CIDRs (one per IP family)" });
    out.clusterCIDRs = cidrs;
  }
  const dlCIDRs = f.detectLocal?.clusterCIDRs ?? [];
  dlCIDRs.forEach((c, i) => {
    if (!isCIDR(c))
      problems.push({ path: `detectLocal.clusterCIDRs[${i}]`, reason: `${JSON.stringify(c)} is not a CIDR` });
  });
  if (!out.clusterCIDRs && dlCIDRs.length) out.clusterCIDRs = [...dlCIDRs];

  if (f.nodePortAddresses?.length) {
    f.nodePortAddresses.forEach((a, i) => {
      const why = nodePortAddressProblem(a);
      if (why) problems.push({ path: `nodePortAddresses[${i}]`, reason: why });
    });
    out.nodePortAddresses = [...f.nodePortAddresses];
  }

  // Sync periods: top level wins, else the section of the requested mode (kube-proxy's conversion rule).
  const section = modeText === "ipvs" ? "ipvs" : modeText === "nftables" ? "nftables" : "iptables";
  const sec = f[section];
  const sp = dur("syncPeriod", f.syncPeriod, "positive") ?? dur(`${section}.syncPeriod`, sec?.syncPeriod, "positive");
  const msp =
    dur("minSyncPeriod", f.minSyncPeriod, "nonnegative") ??
    dur(`${section}.minSyncPeriod`, sec?.minSyncPeriod, "nonnegative");
  // Validate the other sections' periods too (a typo there is still a typo).
  for (const other of ["iptables", "ipvs", "nftables"] as const) {
    if (other === section) continue;
    dur(`${other}.syncPeriod`, f[other]?.syncPeriod, "positive");
    dur(`${other}.minSyncPeriod`, f[other]?.minSyncPeriod, "nonnegative");
  }
  if (sp !== undefined) out.syncPeriodMs = sp;
  if (msp !== undefined) out.minSyncPeriodMs = msp;
  const csp = dur("configSyncPeriod", f.configSyncPeriod, "positive");
  // An informer resync only re-delivers cached objects; bpfproxy's watches have none, and its data plane is
  // re-read and repaired every syncPeriod instead.
  refuse(
    "configSyncPeriod",
    csp !== undefined && csp !== DEFAULTS.configSyncPeriodMs,
    "bpfproxy's watches have no informer resync (the data plane is fully re-synced every syncPeriod)",
  );

  const cc = f.clientConnection;
  if (nonEmpty(cc?.kubeconfig)) out.kubeconfig = cc.kubeconfig;
  // bpfproxy's client makes one list and one watch per resource and has no request rate limiter to tune.
  const noLimiter =
    "bpfproxy's API client makes one list and one watch per resource and has no client-side rate limiter";
  if (cc?.qps !== undefined && cc.qps !== null) {
    if (cc.qps < 0) problems.push({ path: "clientConnection.qps", reason: "must be 0 or more" });
    else refuse("clientConnection.qps", cc.qps !== 0 && cc.qps !== DEFAULTS.qps, noLimiter);
  }
  if (cc?.burst !== undefined && cc.burst !== null) {
    if (cc.burst < 0) problems.push({ path: "clientConnection.burst", reason: "must be 0 or more" });
    else refuse("clientConnection.burst", cc.burst !== 0 && cc.burst !== DEFAULTS.burst, noLimiter);
  }
  refuse(
    "clientConnection.acceptContentTypes",
    nonEmpty(cc?.acceptContentTypes) && cc.acceptContentTypes !== "application/json",
    "bpfproxy's client accepts application/json only",
  );
  refuse(
    "clientConnection.contentType",
    nonEmpty(cc?.contentType) && !["application/json", KUBE_PROXY_CONTENT_TYPE].includes(cc.contentType),
    "bpfproxy's client sends application/json (kube-proxy's default protobuf is accepted and means the same API objects)",
  );

  if (nonEmpty(f.detectLocalMode)) {
    if (!(DETECT_LOCAL_MODES as string[]).includes(f.detectLocalMode))
      problems.push({
        path: "detectLocalMode",
        reason: `must be one of ${DETECT_LOCAL_MODES.join(", ")}, got ${JSON.stringify(f.detectLocalMode)}`,
      });
    else out.detectLocalMode = f.detectLocalMode as DetectLocalMode;
  }
  if (nonEmpty(f.detectLocal?.bridgeInterface)) out.detectLocalBridgeInterface = f.detectLocal.bridgeInterface;
  if (nonEmpty(f.detectLocal?.interfaceNamePrefix))
    out.detectLocalInterfaceNamePrefix = f.detectLocal.interfaceNamePrefix;
  if (out.detectLocalMode === "BridgeInterface" && !out.detectLocalBridgeInterface)
    problems.push({ path: "detectLocal.bridgeInterface", reason: "required when detectLocalMode is BridgeInterface" });
  if (out.detectLocalMode === "InterfaceNamePrefix" && !out.detectLocalInterfaceNamePrefix)
    problems.push({
      path: "detectLocal.interfaceNamePrefix",
      reason: "required when detectLocalMode is InterfaceNamePrefix",
    });

  if (f.logging?.verbosity) out.verbosity = f.logging.verbosity;
  refuse("logging.format", nonEmpty(f.logging?.format) && f.logging?.format !== "text", "bpfproxy logs text only");
  refuse(
    "logging.vmodule",
    !!f.logging?.vmodule?.length,
    "bpfproxy has one verbosity for all its code (logging.verbosity)",
  );
  // flushFrequency bounds how long a line may sit in a buffer; bpfproxy writes each line at once, so any value holds.
  const ff = f.logging?.flushFrequency;
  if (typeof ff === "number" && !(ff >= 0))
    problems.push({ path: "logging.flushFrequency", reason: "must be 0 or more" });
  if (typeof ff === "string") dur("logging.flushFrequency", ff, "nonnegative");
  for (const stream of ["json", "text"] as const) {
    const o = f.logging?.options?.[stream];
    const size = o?.infoBufferSize;
    refuse(
      `logging.options.${stream}.infoBufferSize`,
      size !== undefined && size !== null && size !== "" && String(size) !== "0",
      "bpfproxy writes log lines unbuffered",
    );
    refuse(`logging.options.${stream}.splitStream`, !!o?.splitStream, "bpfproxy writes every log line to stderr");
  }

  if (nonEmpty(f.ipvs?.scheduler)) out.ipvsScheduler = f.ipvs.scheduler;
  const isSetDur = (v: string | null | undefined) => {
    if (v === null || v === undefined) return false;
    try {
      return parseDuration(v) !== 0;
    } catch {
      return true;
    }
  };
  // IPVS mode's settings (used by --mode ipvs, and by auto when it picks ipvs).
  const ipvsT = {
    tcp: dur("ipvs.tcpTimeout", f.ipvs?.tcpTimeout, "nonnegative"),
    tcpFin: dur("ipvs.tcpFinTimeout", f.ipvs?.tcpFinTimeout, "nonnegative"),
    udp: dur("ipvs.udpTimeout", f.ipvs?.udpTimeout, "nonnegative"),
  };
  if (ipvsT.tcp || ipvsT.tcpFin || ipvsT.udp) {
    out.ipvsTimeouts = {
      tcp: Math.round((ipvsT.tcp ?? 0) / 1000),
      tcpFin: Math.round((ipvsT.tcpFin ?? 0) / 1000),
      udp: Math.round((ipvsT.udp ?? 0) / 1000),
    };
  }
  if (f.ipvs?.strictARP) out.ipvsStrictARP = true;
  if (f.ipvs?.excludeCIDRs?.length) {
    for (const c of f.ipvs.excludeCIDRs)
      if (!parseCIDR(c)) problems.push({ path: "ipvs.excludeCIDRs", reason: `not an IPv4 CIDR: ${JSON.stringify(c)}` });
    out.ipvsExcludeCIDRs = [...f.ipvs.excludeCIDRs];
  }
  for (const k of ["iptables", "nftables"] as const) {
    const bit = f[k]?.masqueradeBit;
    if (bit !== undefined && bit !== null && (bit < 0 || bit > 31))
      problems.push({ path: `${k}.masqueradeBit`, reason: "must be from 0 to 31" });
    else
      refuse(
        `${k}.masqueradeBit`,
        bit !== undefined && bit !== null && bit !== KUBE_PROXY_MASQUERADE_BIT,
        "the BPF data plane masquerades without packet marks, so there is no mark bit to move",
      );
  }
  refuse(
    "iptables.localhostNodePorts",
    f.iptables?.localhostNodePorts === true,
    "NodePorts are never served on 127.0.0.1 (route_localnet is not enabled); leave it null or set false",
  );

  // kube-proxy writes these into the kernel's conntrack; bpfproxy's own conntrack applies them (lifetimes in
  // bpx_ct_config_v1, the map size from maxPerCore/min). A 0 means what it means to kube-proxy: the kernel's value.
  const ct = f.conntrack;
  for (const k of ["maxPerCore", "min"] as const) {
    const v = ct?.[k];
    if (v === undefined || v === null) continue;
    if (v < 0) problems.push({ path: `conntrack.${k}`, reason: "must be 0 or more" });
    else out[k === "maxPerCore" ? "conntrackMaxPerCore" : "conntrackMin"] = v;
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
    let zero = false;
    try {
      zero = parseDuration(v) === 0;
    } catch {
      // dur() reports it
    }
    const ms = zero ? 0 : dur(`conntrack.${k}`, v, "nonnegative");
    if (ms === undefined) continue;
    if (ms > 0 && ms < 1000) problems.push({ path: `conntrack.${k}`, reason: "must be 0 or at least 1s" });
    else ctSet[js] = ms === 0 ? KERNEL_CONNTRACK_ZERO[js] : ms;
  }
  if (ct?.tcpBeLiberal) ctSet.beLiberal = true;
  if (Object.keys(ctSet).length) out.conntrack = { ...DEFAULT_CONNTRACK, ...ctSet };
  for (const gate of Object.keys(f.featureGates ?? {}))
    refuse(
      `featureGates.${gate}`,
      true,
      "kube-proxy's feature gates switch kube-proxy's own code, which bpfproxy does not contain",
    );
  const wk = f.winkernel;
  for (const k of ["networkName", "sourceVip", "rootHnsEndpointName"] as const)
    refuse(`winkernel.${k}`, nonEmpty(wk?.[k]), "Windows only; bpfproxy runs on Linux");
  for (const k of ["enableDSR", "forwardHealthCheckVip"] as const)
    refuse(`winkernel.${k}`, !!wk?.[k], "Windows only; bpfproxy runs on Linux");
  refuse("windowsRunAsService", !!f.windowsRunAsService, "Windows only; bpfproxy runs on Linux");
  refuse("portRange", nonEmpty(f.portRange), "it configured kube-proxy's removed userspace mode");
  refuse(
    "enableProfiling",
    !!f.enableProfiling,
    "bpfproxy serves no /debug/pprof endpoints (use node --inspect or --cpu-prof)",
  );
  refuse(
    "showHiddenMetricsForVersion",
    nonEmpty(f.showHiddenMetricsForVersion),
    "bpfproxy has no hidden (deprecated) metrics to show",
  );

  const b = f.bpfproxy;
  if (nonEmpty(b?.source)) {
    if (!b.source.startsWith("dir:") || b.source.length <= 4)
      problems.push({ path: "bpfproxy.source", reason: `must be dir:PATH, got ${JSON.stringify(b.source)}` });
    else out.source = b.source;
  }
  if (b?.devices?.length) out.devices = [...b.devices];
  if (b?.podInterfaces?.length) out.podInterfaces = [...b.podInterfaces];
  if (nonEmpty(b?.bpffs)) {
    if (!b.bpffs.startsWith("/")) problems.push({ path: "bpfproxy.bpffs", reason: "must be an absolute path" });
    else out.bpffs = b.bpffs;
  }
  if (nonEmpty(b?.cgroupPath)) {
    if (!b.cgroupPath.startsWith("/"))
      problems.push({ path: "bpfproxy.cgroupPath", reason: "must be an absolute path" });
    else out.cgroupPath = b.cgroupPath;
  }
  if (b?.externalIPsAllowedCIDRs !== undefined && b.externalIPsAllowedCIDRs !== null) {
    b.externalIPsAllowedCIDRs.forEach((c, i) => {
      if (!isCIDR(c.trim()))
        problems.push({ path: `bpfproxy.externalIPsAllowedCIDRs[${i}]`, reason: `${JSON.stringify(c)} is not a CIDR` });
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
  if (isSetDur(b?.conntrackGCInterval)) {
    const ms = dur("bpfproxy.conntrackGCInterval", b?.conntrackGCInterval, "nonnegative");
    if (ms !== undefined) out.conntrackGCIntervalMs = ms;
  }
  // masqueradeAll: bpfproxy's own setting wins; else kube-proxy's iptables/nftables one.
  if (nonEmpty(b?.xdp)) {
    if (!(XDP_MODES as string[]).includes(b.xdp))
      problems.push({
        path: "bpfproxy.xdp",
        reason: `must be one of ${XDP_MODES.join(", ")}, got ${JSON.stringify(b.xdp)}`,
      });
    else out.xdp = b.xdp as XdpMode;
  }
  if (b?.masqueradeAll !== undefined && b.masqueradeAll !== null) out.masqueradeAll = b.masqueradeAll;
  else if (f.iptables?.masqueradeAll || f.nftables?.masqueradeAll) out.masqueradeAll = true;

  if (problems.length) throwProblems(origin, problems);
  return { config: out, warnings };
}

/** Reads and validates a config file; logs its warnings. Returns only what the file sets. */
export async function readConfigFile(path: string): Promise<ParsedConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  const parsed = parseConfigText(text, path);
  for (const w of parsed.warnings) log.warn(`config ${path}: ${w}`);
  return parsed;
}

/** Reads a config file and fills every unset field with its default (no flags). */
export async function loadConfigFile(path: string): Promise<EffectiveConfig> {
  return mergeConfig((await readConfigFile(path)).config, {});
}

/**
 * The effective configuration: `flags` (only the keys present and not undefined) override `file`, and
 * defaults fill the rest. Derived defaults follow kube-proxy: with an IPv6 bindAddress the health and
 * metrics servers default to "[::]:10256" and "[::1]:10249"; a bind address without a port gets the
 * default port. Throws ConfigError when the result is invalid (naming the field).
 */
export function mergeConfig(
  file: Partial<EffectiveConfig> | undefined,
  flags: Partial<EffectiveConfig>,
): EffectiveConfig {
  const given: Partial<EffectiveConfig> = { ...(file ?? {}) };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) (given as Record<string, unknown>)[k] = v;

  const bindAddress = given.bindAddress ?? "";
  const v6 = isIP(bindAddress) === 6;
  const hostnameOverride = (given.hostnameOverride ?? "").trim().toLowerCase();
  const cfg: EffectiveConfig = {
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
    masqueradeAll: given.masqueradeAll ?? false,
    ...(given.externalIPsAllowedCIDRs !== undefined
      ? { externalIPsAllowedCIDRs: [...given.externalIPsAllowedCIDRs] }
      : {}),
    // Partial sizes (file and flag) fill in over the defaults, the flag's on top of the file's.
    mapSizes: { ...DEFAULT_MAP_SIZES, ...(file?.mapSizes ?? {}), ...(flags.mapSizes ?? {}) },
    lbAlgorithm: given.lbAlgorithm ?? "random",
    xdp: given.xdp ?? "auto",
    conntrack: { ...DEFAULT_CONNTRACK, ...(given.conntrack ?? {}) },
    ...(given.conntrackMaxPerCore !== undefined ? { conntrackMaxPerCore: given.conntrackMaxPerCore } : {}),
    ...(given.conntrackMin !== undefined ? { conntrackMin: given.conntrackMin } : {}),
    conntrackGCIntervalMs: given.conntrackGCIntervalMs ?? DEFAULT_CT_GC_INTERVAL_MS,
  };
  // kube-proxy sizes nf_conntrack_max as max(maxPerCore × CPUs, min) (maxPerCore 0: leave it); bpx_ct_v2 holds
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

  // Validate the result (flags have not been checked yet) and normalize bind addresses.
  const problems: Problems = [];
  if (!["auto", "bpf", "ipvs"].includes(cfg.mode))
    problems.push({ path: "mode", reason: `must be auto, bpf or ipvs, got ${JSON.stringify(cfg.mode)}` });
  if (cfg.bindAddress !== "" && isIP(cfg.bindAddress) === 0)
    problems.push({ path: "bindAddress", reason: "must be an IP address" });
  // A specific address is the node's primary IP (kube-proxy); the data plane is IPv4 only, so an IPv6 one cannot be.
  else if (isIP(cfg.bindAddress) === 6 && !/^[:0]+$/.test(cfg.bindAddress))
    problems.push({
      path: "bindAddress",
      reason:
        'an IPv6 node address cannot be the primary IP of bpfproxy\'s IPv4 data plane; use "::" or an IPv4 address',
    });
  if (!Number.isInteger(cfg.oomScoreAdj) || cfg.oomScoreAdj < -1000 || cfg.oomScoreAdj > 1000)
    problems.push({ path: "oomScoreAdj", reason: `must be a whole number from -1000 to 1000, got ${cfg.oomScoreAdj}` });
  for (const [key, port] of [
    ["healthzBindAddress", 10256],
    ["metricsBindAddress", 10249],
  ] as const) {
    const v = cfg[key];
    if (v === "") continue;
    try {
      const hp = parseBindAddress(v, port);
      cfg[key] = hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
    } catch (err) {
      problems.push({ path: key, reason: (err as Error).message });
    }
  }
  cfg.clusterCIDRs.forEach((c, i) => {
    if (!isCIDR(c)) problems.push({ path: `clusterCIDRs[${i}]`, reason: `${JSON.stringify(c)} is not a CIDR` });
  });
  cfg.externalIPsAllowedCIDRs?.forEach((c, i) => {
    if (!isCIDR(c))
      problems.push({ path: `externalIPsAllowedCIDRs[${i}]`, reason: `${JSON.stringify(c)} is not a CIDR` });
  });
  cfg.nodePortAddresses.forEach((a, i) => {
    const why = nodePortAddressProblem(a);
    if (why) problems.push({ path: `nodePortAddresses[${i}]`, reason: why });
  });
  if (!(cfg.syncPeriodMs > 0)) problems.push({ path: "syncPeriod", reason: "must be greater than 0" });
  if (!(cfg.minSyncPeriodMs >= 0)) problems.push({ path: "minSyncPeriod", reason: "must be 0 or more" });
  if (!(cfg.conntrackGCIntervalMs >= 1000))
    problems.push({ path: "bpfproxy.conntrackGCInterval", reason: "must be at least 1s" });
  if (!(cfg.configSyncPeriodMs > 0)) problems.push({ path: "configSyncPeriod", reason: "must be greater than 0" });
  if (!Number.isInteger(cfg.verbosity) || cfg.verbosity < 0)
    problems.push({ path: "verbosity", reason: "must be a whole number, 0 or more" });
  if (!(DETECT_LOCAL_MODES as string[]).includes(cfg.detectLocalMode))
    problems.push({ path: "detectLocalMode", reason: `must be one of ${DETECT_LOCAL_MODES.join(", ")}` });
  if (!cfg.bpffs.startsWith("/")) problems.push({ path: "bpffs", reason: "must be an absolute path" });
  if (!(XDP_MODES as string[]).includes(cfg.xdp))
    problems.push({ path: "xdp", reason: `must be one of ${XDP_MODES.join(", ")}` });
  if (cfg.source !== "" && !cfg.source.startsWith("dir:"))
    problems.push({ path: "source", reason: "must be dir:PATH" });
  for (const [k, n] of Object.entries(cfg.mapSizes)) {
    if (!Number.isInteger(n) || n < MIN_MAP_SIZE || n > MAX_MAP_SIZE) {
      problems.push({
        path: `bpfproxy.mapSizes.${k}`,
        reason: `must be a whole number from ${MIN_MAP_SIZE} to ${MAX_MAP_SIZE}, got ${n}`,
      });
    }
  }
  if (problems.length) throwProblems("configuration", problems);
  return cfg;
}

/**
 * Dual-stack clusterCIDR (e.g. "10.244.0.0/16,fd00:10:244::/56", kubeadm's usual value): the data plane is
 * IPv4 only, so the IPv4 CIDRs are served and the IPv6 ones are set aside (the daemon logs them once and
 * exports bpfproxy_ipv6_skipped{kind="clusterCIDR"}) rather than refused or crashing the daemon.
 */
export function splitClusterCIDRs(cidrs: readonly string[]): { ipv4: string[]; ipv6: string[] } {
  const out = { ipv4: [] as string[], ipv6: [] as string[] };
  for (const c of cidrs) (isIP(c.trim().split("/")[0]!) === 6 ? out.ipv6 : out.ipv4).push(c.trim());
  return out;
}

/**
 * The node's primary IPv4 given by bindAddress, as kube-proxy takes a specific bindAddress as the node IP;
 * undefined when it is unset or unspecified (0.0.0.0, ::), then the Node object's address is used.
 */
export function primaryNodeIP(cfg: Pick<EffectiveConfig, "bindAddress">): string | undefined {
  return isIP(cfg.bindAddress) === 4 && cfg.bindAddress !== "0.0.0.0" ? cfg.bindAddress : undefined;
}

/** The health timeout kube-proxy derives from the config: 2 × syncPeriod. */
export function healthTimeoutMs(cfg: Pick<EffectiveConfig, "syncPeriodMs">): number {
  return 2 * cfg.syncPeriodMs;
}
