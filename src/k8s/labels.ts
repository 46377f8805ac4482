// Well-known label and annotation keys bpfproxy reads.

/** Services (and their slices) carrying this label belong to another proxy unless the value is ours. */
export const LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name";
/** Set by the EndpointSlice controller on slices of headless services; kube-proxy ignores such objects. */
export const LABEL_HEADLESS = "service.kubernetes.io/headless";
/** Names the Service an EndpointSlice belongs to. */
export const LABEL_SERVICE_NAME = "kubernetes.io/service-name";
/** The node's zone, used for same-zone topology. */
export const LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone";
/** Set by every EndpointSlice manager on its slices; hints are derived from trafficDistribution only without it. */
export const LABEL_SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by";
/** bpfproxy's own: "random" (default), "maglev" or "least-conn" (docs/leastconn.md). */
export const ANNOTATION_LB_ALGORITHM = "bpfproxy.io/lb-algorithm";
/** bpfproxy's own: "snat" (default), "dsr" or "hybrid" (docs/dsr.md). */
export const ANNOTATION_FORWARDING_MODE = "bpfproxy.io/forwarding-mode";
/** bpfproxy's own: "ADDRESS=WEIGHT, ..." per endpoint address, weights 0..1000, unnamed ones 1 (docs/leastconn.md). */
export const ANNOTATION_BACKEND_WEIGHTS = "bpfproxy.io/backend-weights";
/** Set by the EndpointSlice controller; read for the network-programming latency metric (metrics.ts). */
export const ANNOTATION_LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time";

/** The only labels and annotations validated objects keep (packed.ts): everything above, nothing else. */
export const KEPT_LABELS: readonly string[] = [
  LABEL_SERVICE_PROXY_NAME,
  LABEL_HEADLESS,
  LABEL_SERVICE_NAME,
  LABEL_TOPOLOGY_ZONE,
  LABEL_SLICE_MANAGED_BY,
];
export const KEPT_ANNOTATIONS: readonly string[] = [
  ANNOTATION_LB_ALGORITHM,
  ANNOTATION_FORWARDING_MODE,
  ANNOTATION_BACKEND_WEIGHTS,
  ANNOTATION_LAST_CHANGE_TRIGGER_TIME,
];
