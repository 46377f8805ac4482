// The rendered per-node service model. Its JSON form is the stable shape of
// `bpfproxy render -o json` and the `frontends` part of `bpfproxy status -o json`
// (docs/cli.md): keep field names and order as they are.
import type { ServiceRecord } from "./record.js";

export type FrontendType = "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalIP";
export type Protocol = "TCP" | "UDP" | "SCTP";
export type Scope = "internal" | "external";
export type Algorithm = "random" | "maglev" | "least-conn";
/** Every value of bpfproxy.io/lb-algorithm and bpfproxy.lbAlgorithm. */
export const ALGORITHM_VALUES: readonly Algorithm[] = ["random", "maglev", "least-conn"];
/** How external flows reach a backend on another node (docs/dsr.md): masqueraded, direct server return, or DSR for
 * TCP and masquerade for UDP. */
export type ForwardingMode = "snat" | "dsr" | "hybrid";
/** Every value of bpfproxy.io/forwarding-mode and bpfproxy.lbMode. */
export const FORWARDING_MODE_VALUES: readonly ForwardingMode[] = ["snat", "dsr", "hybrid"];

export type SessionAffinity = { type: "None" } | { type: "ClientIP"; timeoutSeconds: number };

export interface BackendModel {
  address: string;
  port: number;
  state: "active" | "terminating";
  nodeLocal: boolean;
  /** bpfproxy.io/backend-weights (docs/leastconn.md): absent = 1; 0 = no new flows, existing ones keep it. */
  weight?: number;
  /** `bpfproxy status` only, least-conn frontends of the BPF data plane: the backend's active flows as the data
   * plane counts them (all its least-conn frontends together). Absent everywhere else. */
  activeFlows?: number;
}

export interface Frontend {
  /** "namespace/name" */
  service: string;
  /** Service port name; "" when unnamed. */
  portName: string;
  type: FrontendType;
  address: string;
  port: number;
  protocol: Protocol;
  scope: Scope;
  sessionAffinity: SessionAffinity;
  algorithm: Algorithm;
  /** NodePort/LoadBalancer/externalIP with externalTrafficPolicy Cluster only, and only when not "snat" (the
   * default, absent): bpfproxy.io/forwarding-mode, else bpfproxy.lbMode (docs/dsr.md). */
  forwardingMode?: ForwardingMode;
  /** Exactly the backends new connections may be sent to; empty = reject new connections. */
  backends: BackendModel[];
}

export interface RenderedState {
  node: string;
  mode: "bpf" | "ipvs";
  frontends: Frontend[];
}

/** Facts the data plane needs beyond the rendered shape; never printed by render. */
export interface FrontendExtras {
  /** Backends kept for flows that already exist (serving-terminating endpoints not chosen for new flows). */
  retainedBackends: BackendModel[];
  /**
   * No backends only because a Local traffic policy leaves none on this node while the cluster has
   * endpoints: kube-proxy drops such traffic (so load balancers' health checks steer away) instead
   * of rejecting it as it does when a Service has no endpoints at all.
   */
  dropWhenEmpty?: boolean;
  /** loadBalancerSourceRanges as CIDRs; empty = any source. */
  sourceRanges: string[];
  /**
   * externalTrafficPolicy Local on this NodePort/LoadBalancer/externalIP frontend: external traffic keeps its
   * source address (no masquerade), as in kube-proxy. Unset for ClusterIP frontends.
   */
  externalPolicyLocal?: boolean;
}

/** The model's full output for one node: frontends in render order, extras parallel to them. */
export interface NodeModel {
  node: string;
  frontends: Frontend[];
  extras: FrontendExtras[];
  /**
   * IPv4 addresses of this node that serve NodePorts (kube-proxy's nodePortAddresses applied to the node's
   * addresses). The data plane programs one wildcard entry per NodePort and serves it on these.
   */
  nodePortIPs?: string[];
  /** Every IPv4 address of this node: a backend there is a host-network socket. */
  nodeIPs?: string[];
  /** nodePortIPs of the IPv6 family (canonical form); the IPv6 NodePort frontends are on these. */
  nodePortIPs6?: string[];
  /** nodeIPs of the IPv6 family (canonical form). */
  nodeIPs6?: string[];
  /**
   * Set by builds with a ModelCache (not enumerable): what changed since the previous build, so that the data
   * plane touches only those Services. Such a model's `frontends` and `extras` are computed on first use.
   */
  delta?: ModelDelta;
}

/** What an incremental build changed; see NodeModel.delta. */
export interface ModelDelta {
  /** The generation of the build this one follows (-1: none, or the cache was reset: compare everything). */
  from: number;
  /** This build's generation. */
  to: number;
  /** Services whose record is not the very same object as after build `from` (new, changed, gone). */
  services: ReadonlySet<string>;
  /**
   * Every Service with frontends, as its compact record (record.ts: the frontends this Service owns after
   * conflicts, in frontend order), live: valid until the next build with the same cache.
   */
  byService: ReadonlyMap<string, ServiceRecord>;
  /** Number of frontends in the model. */
  frontendCount: number;
}

// ---------------------------------------------------------------------------------------------------------
// Model inputs (added with the model builder; the types above are the stable output shape).

/** Per-node settings the model needs. Only `nodeName` is required in spirit; the rest have defaults. */
export interface ModelConfig {
  nodeName: string;
  /** This node's zone; default: the Node object's topology.kubernetes.io/zone label. */
  nodeZone?: string;
  /**
   * Addresses NodePorts may be served on, both families. Default: the Node object's InternalIP then
   * ExternalIP addresses. The daemon passes every local address of the node (kube-proxy's default).
   */
  nodeIPs?: string[];
  /**
   * The node's primary address of its family for nodePortAddresses "primary"; the other family's primary is
   * taken from the defaults. Default per family: first InternalIP, else first ExternalIP, else first nodeIP.
   */
  primaryNodeIP?: string;
  /** --nodeport-addresses: CIDRs and/or "primary", applied per family. No entry of a family: every node IP of it. */
  nodePortAddresses?: string[];
  /** Serve Services labelled service.kubernetes.io/service-proxy-name=<proxyName>; unset: only unlabelled ones. */
  proxyName?: string;
  /** Backend choice for Services without the bpfproxy.io/lb-algorithm annotation (default "random"). */
  defaultAlgorithm?: Algorithm;
  /** Forwarding of external flows for Services without bpfproxy.io/forwarding-mode (default "snat"). */
  defaultForwardingMode?: ForwardingMode;
  /** Pod CIDRs (at most one per family); passed through for the data plane (which traffic counts as in-cluster), unused by the model. */
  clusterCIDRs?: string[];
  /**
   * CVE-2020-8554 mitigation: spec.externalIPs are served only inside these CIDRs. Unset: every externalIP
   * (kube-proxy's behaviour); [] : none. What kube-proxy users get from an admission policy
   * (DenyServiceExternalIPs, or an allow-list webhook), enforced where the traffic is programmed.
   */
  externalIPsAllowedCIDRs?: string[];
}

/** A healthCheckNodePort this node must serve (LoadBalancer Service with externalTrafficPolicy Local). */
export interface ServiceHealthCheck {
  /** "namespace/name" */
  service: string;
  nodePort: number;
  /**
   * Distinct IPs of ready endpoints on this node (any port), counted per family of the Service's cluster IPs
   * and the larger count taken (a dual-stack pod counts once); 0 → the health check answers 503.
   */
  localEndpoints: number;
}
