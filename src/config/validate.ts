// Validation of a merged configuration (flags reach it unchecked), and of what a data plane cannot honour.
import { isIP } from "node:net";
import { parseBindAddress } from "../health/http.js";
import { dualStackCIDRsProblem, isCIDR } from "../k8s/ip.js";
import {
  DEFAULT_CONNTRACK,
  KERNEL_CONNTRACK_ZERO,
  KUBE_PROXY_CONNTRACK,
  KUBE_PROXY_DROP_BIT,
  KUBE_PROXY_MASQUERADE_BIT,
  MAX_MAP_SIZE,
  MIN_MAP_SIZE,
} from "./defaults.js";
import { throwProblems, type Problems } from "./errors.js";
import { DETECT_LOCAL_MODES, XDP_MODES, type EffectiveConfig } from "./types.js";

const NODEPORT_KEYWORDS = new Set(["primary"]);

/** kube-proxy's --nodeport-addresses takes CIDRs and "primary" only; anything else is refused, naming the field. */
export function nodePortAddressProblem(a: string): string | undefined {
  if (NODEPORT_KEYWORDS.has(a) || isCIDR(a)) return undefined;
  if (a === "all" || a === "localhost")
    return `${JSON.stringify(a)} is not a kube-proxy value: leave nodePortAddresses unset to serve every local address; NodePorts are never served on localhost`;
  return `${JSON.stringify(a)} is neither a CIDR nor "primary"`;
}

/** Checks a merged configuration and writes its bind addresses as HOST:PORT. Throws ConfigError naming every bad field. */
export function validateEffective(cfg: EffectiveConfig): void {
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
      // kube-proxy's validateHostPort: port 0 (an ephemeral port no probe could find) is refused.
      if (hp.port === 0) throw new Error(`${JSON.stringify(v)}: port must be a valid port (1-65535)`);
      cfg[key] = hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
    } catch (err) {
      problems.push({ path: key, reason: (err as Error).message });
    }
  }
  cfg.clusterCIDRs.forEach((c, i) => {
    if (!isCIDR(c)) problems.push({ path: `clusterCIDRs[${i}]`, reason: `${JSON.stringify(c)} is not a CIDR` });
  });
  const pair = dualStackCIDRsProblem(cfg.clusterCIDRs);
  if (pair) problems.push({ path: "clusterCIDRs", reason: pair });
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
  const markBit = cfg.translatedMarkBit;
  if (!Number.isInteger(markBit) || markBit < -1 || markBit > 31)
    problems.push({ path: "bpfproxy.translatedMarkBit", reason: "must be a bit from 0 to 31, or -1 (off)" });
  else if (markBit === KUBE_PROXY_MASQUERADE_BIT || markBit === KUBE_PROXY_DROP_BIT)
    problems.push({
      path: "bpfproxy.translatedMarkBit",
      reason: `bit ${markBit} is kube-proxy's (masquerade 14, drop 15), which iptables rules on the node may still set`,
    });
  const snat = portRangeProblem(parseSnatPortRange, cfg.snatPortRange);
  if (snat) problems.push({ path: "bpfproxy.snatPortRange", reason: snat });
  const nodePorts = portRangeProblem(parseNodePortRange, cfg.nodePortRange);
  if (nodePorts) problems.push({ path: "bpfproxy.nodePortRange", reason: nodePorts });
  if (!(cfg.fullSyncPeriodMs > 0)) problems.push({ path: "bpfproxy.fullSyncPeriod", reason: "must be greater than 0" });
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
}

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

function parsePortRange(text: string, lowest: number, example: string): { min: number; max: number } {
  const m = /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(text);
  if (!m) throw new Error(`must be MIN-MAX (e.g. ${example}), got ${JSON.stringify(text)}`);
  const min = Number(m[1]);
  const max = Number(m[2]);
  if (min < lowest || max > 65535 || min > max)
    throw new Error(`must lie within ${lowest}-65535 with MIN <= MAX, got ${JSON.stringify(text)}`);
  return { min, max };
}

/** "MIN-MAX" with 1024 <= MIN <= MAX <= 65535 (privileged ports are the node's services'). */
export function parseSnatPortRange(text: string): { min: number; max: number } {
  return parsePortRange(text, 1024, "1024-29999");
}

/** "MIN-MAX" within 1-65535, as kube-apiserver's --service-node-port-range. */
export function parseNodePortRange(text: string): { min: number; max: number } {
  return parsePortRange(text, 1, "30000-32767");
}

function portRangeProblem(parse: (text: string) => unknown, text: string): string | undefined {
  try {
    parse(text);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
