// The schema of a config file: kube-proxy's KubeProxyConfiguration plus a `bpfproxy:` section. Every object is
// strict, so an unknown field anywhere is an error naming its path (kube-proxy's strict decoding).
import { z } from "zod";
import { CONFIG_API_VERSION, CONFIG_KIND } from "./defaults.js";

const str = z.string().nullish();
const bool = z.boolean().nullish();
const int32 = z.number().int().nullish();
const strList = z.array(z.string()).nullish();
/** metav1.Duration: a Go duration string, kept as text here and parsed with its path in sections.ts. */
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
  /** Socket load balancing in pods' network namespaces too (default: the node's own only). */
  socketLBPodNamespaces: bool,
  masqueradeAll: bool,
  /** Deliver translated packets past the host stack (netfilter FORWARD, rp_filter); default false. */
  bypassNetfilter: bool,
  /** Mark bit tc ingress sets on packets it translated completely, so tc egress skips them (-1 = off; default 12). */
  translatedMarkBit: z.number().int().nullish(),
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
      services6: int32,
      backends6: int32,
      conntrack6: int32,
      affinity6: int32,
    })
    .nullish(),
  /** Backend choice for Services without the bpfproxy.io/lb-algorithm annotation. */
  lbAlgorithm: z
    .enum(["random", "maglev", "least-conn"], { error: 'must be "random", "maglev" or "least-conn"' })
    .nullish(),
  /** Forwarding of external Cluster-policy flows for Services without bpfproxy.io/forwarding-mode (docs/dsr.md). */
  lbMode: z.enum(["snat", "dsr", "hybrid"], { error: 'must be "snat", "dsr" or "hybrid"' }).nullish(),
  /** XDP on --devices: off, native, generic or auto (native where the driver allows, else tc only). */
  xdp: str,
  /** How often the conntrack garbage collector walks the map (docs/conntrack.md). */
  conntrackGCInterval: duration,
  /** Source ports of masqueraded flows, "MIN-MAX" (docs/conntrack.md); reserved on the node. */
  snatPortRange: str,
  /** The cluster's NodePort range, "MIN-MAX" (kube-apiserver --service-node-port-range); reserved on the node. */
  nodePortRange: str,
  /** How often a periodic sync re-reads the maps and repairs drift (kube-proxy's FullSyncPeriod, 1h). */
  fullSyncPeriod: duration,
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
