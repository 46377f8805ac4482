// Endpoint selection for one service port on one node: which endpoints new connections may go to under
// "Cluster" and under "Local" traffic policy, taking readiness, the serving-terminating fallback and topology
// (zone / node hints) into account. Same decisions as kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go),
// written for our types.
import { ipv4ToNumber } from "../k8s/ip.js";

/** One endpoint of one service port, after merging and de-duplicating the Service's slices. */
export interface ModelEndpoint {
  address: string;
  /** The address as a number when the endpoint came from a packed IPv4 slice (saves parsing `address`). */
  readonly addr4?: number;
  port: number;
  nodeName: string;
  zone: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** hints.forZones names. */
  zoneHints: readonly string[];
  /** hints.forNodes names. */
  nodeHints: readonly string[];
  /** nodeName === this node. */
  isLocal: boolean;
}

/** What a service port uses, in kube-proxy's terms (ServicePort.UsesClusterEndpoints / UsesLocalEndpoints). */
export interface EndpointPolicy {
  /** internalTrafficPolicy: Local. */
  internalPolicyLocal: boolean;
  /** externalTrafficPolicy: Local on an externally accessible Service. */
  externalPolicyLocal: boolean;
  /** This port has a NodePort, a VIP-mode load-balancer IP or an external IP. */
  externallyAccessible: boolean;
}

export type TopologyMode = "" | "PreferSameZone" | "PreferSameNode";

export interface CategorizedEndpoints {
  /** Endpoints for "Cluster" traffic policy; null when the port never uses Cluster policy. */
  cluster: ModelEndpoint[] | null;
  /** Endpoints for "Local" traffic policy; null when the port never uses Local policy. */
  local: ModelEndpoint[] | null;
  /** Some endpoint anywhere in the cluster is usable (even if none is reachable from this node). */
  hasAnyEndpoints: boolean;
  /** The topology mode applied to the Cluster set. */
  topologyMode: TopologyMode;
}

export function usesClusterEndpoints(p: EndpointPolicy): boolean {
  // Even with externalTrafficPolicy Local, in-cluster traffic to an external address uses the Cluster set.
  return !p.internalPolicyLocal || p.externallyAccessible;
}

export function usesLocalEndpoints(p: EndpointPolicy): boolean {
  return p.internalPolicyLocal || (p.externalPolicyLocal && p.externallyAccessible);
}

function isServingTerminating(ep: ModelEndpoint): boolean {
  return ep.serving && ep.terminating;
}

/**
 * Chooses the topology mode from the hints of the ready endpoints:
 * - every ready endpoint has a node hint and one is for this node → PreferSameNode;
 * - otherwise every ready endpoint has a zone hint and one is for this node's zone → PreferSameZone;
 * - otherwise no topology. (With no ready endpoints there is nothing to prefer.)
 */
export function topologyModeFromHints(
  endpoints: readonly ModelEndpoint[],
  nodeName: string,
  zone: string,
): TopologyMode {
  let anyReady = false;
  let allNodeHints = true;
  let forThisNode = false;
  let allZoneHints = true;
  let forThisZone = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    anyReady = true;
    if (ep.nodeHints.length === 0) allNodeHints = false;
    else if (ep.nodeHints.includes(nodeName)) forThisNode = true;
    if (ep.zoneHints.length === 0) allZoneHints = false;
    else if (zone !== "" && ep.zoneHints.includes(zone)) forThisZone = true;
  }
  if (!anyReady) return "";
  if (allNodeHints && forThisNode) return "PreferSameNode";
  if (allZoneHints && forThisZone) return "PreferSameZone";
  return "";
}

function availableForTopology(ep: ModelEndpoint, mode: TopologyMode, nodeName: string, zone: string): boolean {
  switch (mode) {
    case "":
      return true;
    case "PreferSameNode":
      return ep.nodeHints.includes(nodeName);
    case "PreferSameZone":
      return ep.zoneHints.includes(zone);
  }
}

/** Why an endpoint is not in a set (docs/cli.md, `bpfproxy explain`); null: it is in. */
export type EndpointExclusion =
  "not-ready" | "terminating-with-ready-peers" | "other-zone" | "other-node" | "not-local" | "other-family";

/** What decides membership of one set (Cluster or Local) of one service port on this node. */
export interface SetRules {
  set: "cluster" | "local";
  /** The topology mode of the Cluster set ("" for the Local set). */
  mode: TopologyMode;
  nodeName: string;
  zone: string;
  /** No candidate is ready: serving-and-terminating endpoints are used instead (kube-proxy's fallback). */
  fallback: boolean;
  /** The frontend's address family: endpoints of the other family are never in a set. */
  family: 4 | 6;
}

/** The rules categorizeEndpoints applies to one set, from all of the port's endpoints. */
export function setRules(
  endpoints: readonly ModelEndpoint[],
  set: "cluster" | "local",
  nodeName: string,
  zone: string,
  family: 4 | 6 = 4,
): SetRules {
  if (set === "cluster") {
    // The mode is chosen so that some ready endpoint matches it: no ready endpoint at all means fallback.
    const mode = topologyModeFromHints(endpoints, nodeName, zone);
    return { set, mode, nodeName, zone, fallback: !endpoints.some((ep) => ep.ready), family };
  }
  return { set, mode: "", nodeName, zone, fallback: !endpoints.some((ep) => ep.isLocal && ep.ready), family };
}

/**
 * The one rule for an endpoint's membership of a set: null when new connections may use it, else why not.
 * categorizeEndpoints is this filter; `bpfproxy explain` prints its reasons.
 */
export function endpointExclusion(ep: ModelEndpoint, r: SetRules): EndpointExclusion | null {
  // Each family's frontends use that family's endpoints only (endpointsForPort never yields others; explain
  // lists them with this reason). IPv6 literals are the only addresses with a colon.
  if (r.family === 4 ? ep.addr4 === undefined && Number.isNaN(ipv4ToNumber(ep.address)) : !ep.address.includes(":"))
    return "other-family";
  if (r.set === "local" && !ep.isLocal) return "not-local";
  if (r.fallback) return isServingTerminating(ep) ? null : "not-ready";
  if (!ep.ready) return isServingTerminating(ep) ? "terminating-with-ready-peers" : "not-ready";
  // Topology applies to the Cluster set only, and not to the terminating fallback.
  if (r.set === "cluster" && !availableForTopology(ep, r.mode, r.nodeName, r.zone))
    return r.mode === "PreferSameNode" ? "other-node" : "other-zone";
  return null;
}

/**
 * Splits a service port's endpoints into the Cluster and Local sets for this node.
 *
 * "Usable" means ready; only when there is no ready endpoint do serving-and-terminating endpoints count
 * instead, and that fallback is decided separately for the Cluster set and the Local set. Topology applies to
 * the Cluster set only; it never empties it (the mode is chosen so that some ready endpoint matches), and it is
 * not applied to the terminating fallback. Membership is endpointExclusion.
 */
export function categorizeEndpoints(
  endpoints: readonly ModelEndpoint[],
  policy: EndpointPolicy,
  nodeName: string,
  zone: string,
  family: 4 | 6 = 4,
): CategorizedEndpoints {
  const out: CategorizedEndpoints = { cluster: null, local: null, hasAnyEndpoints: false, topologyMode: "" };
  const useCluster = usesClusterEndpoints(policy);
  const useLocal = usesLocalEndpoints(policy);
  if (useCluster) out.cluster = [];
  if (useLocal) out.local = [];
  if (endpoints.length === 0) return out;

  if (useCluster) {
    const rules = setRules(endpoints, "cluster", nodeName, zone, family);
    out.topologyMode = rules.mode;
    out.cluster = endpoints.filter((ep) => endpointExclusion(ep, rules) === null);
    if (out.cluster.length > 0) out.hasAnyEndpoints = true;
  }

  if (useLocal) {
    if (endpoints.some((ep) => ep.ready || isServingTerminating(ep))) out.hasAnyEndpoints = true;
    const rules = setRules(endpoints, "local", nodeName, zone, family);
    out.local = endpoints.filter((ep) => endpointExclusion(ep, rules) === null);
  }
  return out;
}
