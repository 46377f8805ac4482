// The model half of `bpfproxy explain` (docs/cli.md): which frontend a tuple matches, or why none does, and
// each endpoint of its Service port with the reason it is in or out of this node's choice. Computed by the
// daemon from the objects and node facts of its last sync, with the model's own rule (endpointExclusion),
// so the reasons are the sync's, not a second reading of them.
import { ipInCIDR, isIPv6, parseCIDR } from "../k8s/ip.js";
import type { EndpointSlice, Service } from "../k8s/schemas.js";
import {
  endpointExclusion,
  endpointsForPort,
  modelEndpoint,
  setRules,
  usableSlices,
  type EndpointExclusion,
  type Frontend,
  type FrontendExtras,
  type ModelEndpoint,
  type NodeContext,
  type NodeModel,
} from "../model/index.js";

export type NoMatchReason =
  "no-such-address" | "no-such-port" | "wrong-protocol" | "not-a-nodeport-address" | "external-ip-not-allowed";

export interface ExplainQuery {
  dst: string;
  port: number;
  protocol: "TCP" | "UDP";
  /** Client address; undefined: not given (source ranges are not judged). */
  src?: string;
  /** The packet enters at a pod interface (always in-cluster) rather than a node device. */
  fromPod: boolean;
}

export interface ExplainedEndpoint {
  address: string;
  port: number;
  nodeName: string;
  zone: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** New connections on this frontend may go to it. */
  selected: boolean;
  /** Why not (null when selected). */
  reason: EndpointExclusion | null;
}

export interface ModelExplanation {
  node: string;
  /** The scope the data plane looks up first for this source (internal: pods and cluster CIDRs). */
  scope: "internal" | "external";
  frontend: (Frontend & { sourceRanges: string[]; dropWhenEmpty: boolean; externalPolicyLocal: boolean }) | null;
  noMatch: { reason: NoMatchReason; detail: string } | null;
  /** Only with a frontend and a source: whether loadBalancerSourceRanges admit it. */
  sourceRangeAllows: boolean | null;
  /** The frontend is in the model but not in the maps (a full map); the maps it needed. */
  notProgrammed: { maps: string[] } | null;
  /** Which endpoint set the frontend uses: Cluster or Local (traffic policy and scope). */
  endpointSet: "cluster" | "local" | null;
  endpoints: ExplainedEndpoint[];
  /** The selected endpoints are exactly the last sync's backends of the frontend (false: objects changed since). */
  matchesLastSync: boolean | null;
}

/** What the daemon keeps from its last sync for explain. */
export interface ExplainState {
  model: NodeModel;
  ctx: NodeContext;
  service: (key: string) => Service | undefined;
  slices: (key: string) => EndpointSlice[];
  clusterCIDRs: string[];
  notProgrammed: { service: string; maps: string[] }[];
  /** "namespace/name ip" of externalIPs the allow-list refused. */
  deniedExternalIPs: string[];
}

function inAny(ip: string, cidrs: readonly string[]): boolean {
  return cidrs.some((c) => {
    const p = parseCIDR(c);
    return p !== undefined && ipInCIDR(ip, p);
  });
}

export function explainModel(st: ExplainState, q: ExplainQuery): ModelExplanation {
  const internal = q.fromPod || (q.src !== undefined && inAny(q.src, st.clusterCIDRs));
  const scope = internal ? "internal" : "external";
  const out: ModelExplanation = {
    node: st.model.node,
    scope,
    frontend: null,
    noMatch: null,
    sourceRangeAllows: null,
    notProgrammed: null,
    endpointSet: null,
    endpoints: [],
    matchesLastSync: null,
  };
  const fes = st.model.frontends;
  const same = (f: Frontend) => f.address === q.dst && f.port === q.port && f.protocol === q.protocol;
  // The data plane looks up the packet's scope first and falls back to external (lb.h).
  let i = fes.findIndex((f) => same(f) && f.scope === scope);
  if (i < 0) i = fes.findIndex((f) => same(f) && f.scope === "external");
  if (i < 0) {
    out.noMatch = noMatch(st, q);
    return out;
  }
  const f = fes[i]!;
  const x: FrontendExtras = st.model.extras[i]!;
  out.frontend = {
    ...f,
    sourceRanges: x.sourceRanges,
    dropWhenEmpty: x.dropWhenEmpty === true,
    externalPolicyLocal: x.externalPolicyLocal === true,
  };
  if (q.src !== undefined && x.sourceRanges.length > 0) out.sourceRangeAllows = inAny(q.src, x.sourceRanges);
  const np = st.notProgrammed.find((n) => n.service === f.service);
  if (np) out.notProgrammed = { maps: np.maps };

  const svc = st.service(f.service);
  const port = svc?.spec.ports.find((p) => p.name === f.portName && p.protocol === f.protocol);
  if (!svc || !port) return out;
  // The set this frontend uses, as buildServiceEntries chose it.
  const externallyAccessible =
    svc.spec.type === "LoadBalancer" ||
    svc.spec.type === "NodePort" ||
    (svc.spec.type === "ClusterIP" && svc.spec.externalIPs.length > 0);
  const externalLocal = externallyAccessible && svc.spec.externalTrafficPolicy === "Local";
  const set: "cluster" | "local" =
    f.type === "ClusterIP"
      ? svc.spec.internalTrafficPolicy === "Local"
        ? "local"
        : "cluster"
      : f.scope === "external" && externalLocal
        ? "local"
        : "cluster";
  out.endpointSet = set;
  const family = isIPv6(f.address) ? 6 : 4;
  const eps = endpointsForPort(
    svc,
    port,
    usableSlices(st.slices(f.service), f.service, st.ctx.proxyName),
    st.ctx.nodeName,
    family,
  );
  const rules = setRules(eps, set, st.ctx.nodeName, st.ctx.zone, family);
  const all: ModelEndpoint[] = [
    ...eps,
    ...otherFamily(st.slices(f.service), family === 6 ? "IPv6" : "IPv4", port.name, port.protocol, st.ctx.nodeName),
  ];
  out.endpoints = all.map((ep) => {
    const reason = endpointExclusion(ep, rules);
    return {
      address: ep.address,
      port: ep.port,
      nodeName: ep.nodeName,
      zone: ep.zone,
      ready: ep.ready,
      serving: ep.serving,
      terminating: ep.terminating,
      selected: reason === null,
      reason,
    };
  });
  const chosen = out.endpoints
    .filter((e) => e.selected)
    .map((e) => `${e.address}:${e.port}`)
    .sort();
  const synced = f.backends.map((b) => `${b.address}:${b.port}`).sort();
  out.matchesLastSync = chosen.length === synced.length && chosen.every((k, j) => k === synced[j]);
  return out;
}

/** Endpoints of the port in slices of another address family than the frontend's: listed, never chosen. */
function otherFamily(
  slices: readonly EndpointSlice[],
  family: "IPv4" | "IPv6",
  name: string,
  protocol: string,
  nodeName: string,
): ModelEndpoint[] {
  const out: ModelEndpoint[] = [];
  for (const s of slices) {
    if (s.addressType === family) continue;
    for (const sp of s.ports) {
      if (sp.name !== name || sp.protocol !== protocol || sp.port === null) continue;
      for (const e of s.endpoints) {
        const address = e.addresses[0];
        if (address === undefined) continue;
        out.push(modelEndpoint(e, address, sp.port, e.nodeName === nodeName));
      }
    }
  }
  return out;
}

function noMatch(st: ExplainState, q: ExplainQuery): { reason: NoMatchReason; detail: string } {
  const fes = st.model.frontends;
  const denied = st.deniedExternalIPs.find((d) => d.endsWith(` ${q.dst}`));
  if (denied)
    return {
      reason: "external-ip-not-allowed",
      detail: `${q.dst} is an externalIP of ${denied.split(" ")[0]} outside externalIPsAllowedCIDRs`,
    };
  const other = fes.find((f) => f.address === q.dst && f.port === q.port);
  if (other)
    return {
      reason: "wrong-protocol",
      detail: `${q.dst}:${q.port} is ${other.service} over ${other.protocol}, not ${q.protocol}`,
    };
  const nodeIPs = st.model.nodeIPs ?? [];
  const npIPs = st.model.nodePortIPs ?? [];
  if (nodeIPs.includes(q.dst) && !npIPs.includes(q.dst)) {
    const np = fes.find((f) => f.type === "NodePort" && f.port === q.port && f.protocol === q.protocol);
    if (np)
      return {
        reason: "not-a-nodeport-address",
        detail: `${q.dst} is a node address outside nodePortAddresses (NodePorts are served on ${npIPs.join(", ") || "none"})`,
      };
  }
  if (fes.some((f) => f.address === q.dst))
    return { reason: "no-such-port", detail: `no Service serves port ${q.port}/${q.protocol} on ${q.dst}` };
  return { reason: "no-such-address", detail: `no Service frontend has the address ${q.dst}` };
}
