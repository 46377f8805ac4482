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
//
// The code lives in src/config/, one file per concern: file.ts (read and parse a file), schema.ts (its
// shape), sections.ts (its sections → settings), merge.ts (flags over file over defaults), validate.ts,
// defaults.ts, types.ts, errors.ts, duration.ts (Go durations), flags.ts (--map-sizes), derived.ts (values the
// daemon derives). This module is their public face: import from here.
export { ConfigError } from "./config/errors.js";
export {
  CONFIG_API_VERSION,
  CONFIG_KIND,
  DEFAULT_CONNTRACK,
  DEFAULT_CT_GC_INTERVAL_MS,
  DEFAULT_OOM_SCORE_ADJ,
  DEFAULT_TRANSLATED_MARK_BIT,
  DEFAULTS,
  MAX_MAP_SIZE,
  MIN_MAP_SIZE,
} from "./config/defaults.js";
export { healthTimeoutMs, primaryNodeIP, splitClusterCIDRs } from "./config/derived.js";
export { formatDuration, parseDuration } from "./config/duration.js";
export { loadConfigFile, parseConfigText, readConfigFile } from "./config/file.js";
export { parseMapSizes } from "./config/flags.js";
export { mergeConfig } from "./config/merge.js";
export { kubeProxyConfigurationSchema, type KubeProxyConfigurationFile } from "./config/schema.js";
export type {
  ConntrackSettings,
  DetectLocalMode,
  EffectiveConfig,
  ParsedConfigFile,
  ProxyMode,
  XdpMode,
} from "./config/types.js";
export { conntrackFieldsIpvsCannotHonour } from "./config/validate.js";
