// The rendered per-node service model. Its JSON form is the stable shape of
// `bpfproxy render -o json` and the `frontends` part of `bpfproxy status -o json`
// (DESIGN.md §3): keep field names and order as they are.

export type FrontendType = "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalIP";
export type Protocol = "TCP" | "UDP" | "SCTP";
export type Scope = "internal" | "external";
export type Algorithm = "random" | "maglev";

export type SessionAffinity = { type: "None" } | { type: "ClientIP"; timeoutSeconds: number };

export interface BackendModel {
  address: string;
  port: number;
  state: "active" | "terminating";
  nodeLocal: boolean;
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
  /** loadBalancerSourceRanges as CIDRs; empty = any source. */
  sourceRanges: string[];
}

/** The model's full output for one node: frontends in render order, extras parallel to them. */
export interface NodeModel {
  node: string;
  frontends: Frontend[];
  extras: FrontendExtras[];
}
