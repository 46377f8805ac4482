// Well-known label and annotation keys bpfproxy reads.

/** Services (and their slices) carrying this label belong to another proxy unless the value is ours. */
export const LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name";
/** Set by the EndpointSlice controller on slices of headless services; kube-proxy ignores such objects. */
export const LABEL_HEADLESS = "service.kubernetes.io/headless";
/** Names the Service an EndpointSlice belongs to. */
export const LABEL_SERVICE_NAME = "kubernetes.io/service-name";
/** The node's zone, used for same-zone topology. */
export const LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone";
/** bpfproxy's own: "random" (default) or "maglev". */
export const ANNOTATION_LB_ALGORITHM = "bpfproxy.io/lb-algorithm";
