// The per-node service model: from validated Services, EndpointSlices and Nodes to the frontends this node
// programs and the backends each may use. Pure: no I/O, no clock, no randomness; the same input always gives
// the same output (sorted as docs/cli.md says).
//
// Semantics follow kube-proxy:
// - Services labelled service.kubernetes.io/service-proxy-name belong to another proxy (unless the value is
//   our proxyName); objects labelled service.kubernetes.io/headless are ignored; so are headless Services
//   (clusterIP None) and ExternalName Services.
// - All slices of a Service (label kubernetes.io/service-name) are merged; a Service port takes its endpoint
//   port from the slice port with the same name and protocol (that is how named targetPorts resolve);
//   endpoints are de-duplicated by address:port.
// - Endpoint selection is categorizeEndpoints (topology.ts).
// - Dual-stack as kube-proxy's per-family proxiers: each family (IPv4, IPv6) gets frontends only when the
//   Service has a cluster IP of that family, and then only that family's externalIPs, load-balancer ingress
//   IPs, loadBalancerSourceRanges, node addresses (nodePortAddresses applied per family) and EndpointSlices
//   (addressType IPv4 or IPv6; FQDN slices are ignored). Topology and traffic policies apply per family.
//   spec.ipFamilies / ipFamilyPolicy need no reading of their own: the apiserver allocates clusterIPs from
//   them, and kube-proxy, like us, serves what clusterIPs holds. IPv6 addresses are in canonical form.

import {
  canonicalIP,
  compareAddresses,
  ipFamily,
  ipInCIDR,
  isIPv4,
  isIPv6,
  parseCIDR,
  ipv4ToNumber,
  type CIDR,
} from "../k8s/ip.js";
import {
  ANNOTATION_FORWARDING_MODE,
  ANNOTATION_LB_ALGORITHM,
  LABEL_HEADLESS,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
  LABEL_TOPOLOGY_ZONE,
} from "../k8s/labels.js";
import type { EndpointSlice, Node, Service, ServicePort, SliceEndpoint } from "../k8s/schemas.js";
import { LABEL_SLICE_MANAGED_BY } from "../k8s/labels.js";
import { type EndpointAttrs, i32ToIPv4, packedEndpoints } from "../k8s/packed.js";
import type { ObjectIndex } from "../sources/object-index.js";
import { AFFINITY_NONE, FRONTEND_TYPES, RecordBuilder, ServiceRecord } from "./record.js";
import { categorizeEndpoints, type EndpointPolicy, type ModelEndpoint } from "./topology.js";
import { backendWeightsOf } from "./weights.js";
import type {
  Algorithm,
  Frontend,
  FrontendExtras,
  FrontendType,
  ForwardingMode,
  ModelConfig,
  ModelDelta,
  NodeModel,
  SessionAffinity,
} from "./types.js";
import { ALGORITHM_VALUES, FORWARDING_MODE_VALUES } from "./types.js";

export interface ModelInput {
  services: readonly Service[];
  endpointSlices: readonly EndpointSlice[];
  nodes?: readonly Node[];
  nodeName: string;
  config?: Partial<ModelConfig>;
  /**
   * Called when two Services claim the same (address, port, protocol, scope): the first in frontend order
   * is kept, the other dropped, so that the data plane never sees two owners for one key.
   */
  onConflict?: (kept: Frontend, dropped: Frontend) => void;
  /** Keeps each Service's entries between builds so only changed Services are rendered again. */
  cache?: ModelCache;
}

/** Node facts resolved once per build. */
export interface NodeContext {
  nodeName: string;
  zone: string;
  /** IPv4 addresses NodePorts are served on (after nodePortAddresses). */
  nodePortIPs: string[];
  /** Every IPv4 address of the node (before nodePortAddresses). */
  nodeIPs: string[];
  /** IPv6 addresses NodePorts are served on (after nodePortAddresses), canonical. */
  nodePortIPs6: string[];
  /** Every IPv6 address of the node (before nodePortAddresses), canonical. */
  nodeIPs6: string[];
  proxyName: string | undefined;
  /** Parsed ModelConfig.externalIPsAllowedCIDRs (both families); undefined: every externalIP is allowed. */
  externalIPsAllowed: CIDR[] | undefined;
  /** Backend choice for Services without the lb-algorithm annotation. */
  defaultAlgorithm?: Algorithm;
  /** Forwarding of external Cluster-policy flows for Services without the forwarding-mode annotation. */
  defaultForwardingMode?: ForwardingMode;
}

/** True when the allow-list (if any) admits this externalIP. */
export function externalIPAllowed(ip: string, allowed: readonly CIDR[] | undefined): boolean {
  return allowed === undefined || allowed.some((c) => ipInCIDR(ip, c));
}

/**
 * The Services' externalIPs (either family) that the allow-list refuses, as "namespace/name ip" (for the
 * daemon's log line and metric); the model leaves them out.
 */
export function deniedExternalIPs(services: readonly Service[], allowedCIDRs: readonly string[] | undefined): string[] {
  if (allowedCIDRs === undefined) return [];
  const allowed = parseAllowed(allowedCIDRs);
  const out: string[] = [];
  for (const svc of services) {
    for (const ip of svc.spec.externalIPs)
      if (ipFamily(ip) !== undefined && !externalIPAllowed(ip, allowed))
        out.push(`${serviceKey(svc)} ${canonicalIP(ip)}`);
  }
  return out;
}

function parseAllowed(cidrs: readonly string[]): CIDR[] {
  return cidrs.map((s) => parseCIDR(s)).filter((c): c is CIDR => c !== undefined);
}

/** The Service's own key, "namespace/name". */
export function serviceKey(svc: { metadata: { namespace: string; name: string } }): string {
  return `${svc.metadata.namespace}/${svc.metadata.name}`;
}

function nodeAddresses(node: Node | undefined): { internal: string[]; external: string[] } {
  const internal: string[] = [];
  const external: string[] = [];
  for (const a of node?.status.addresses ?? []) {
    if (ipFamily(a.address) === undefined) continue;
    if (a.type === "InternalIP") internal.push(canonicalIP(a.address));
    else if (a.type === "ExternalIP") external.push(canonicalIP(a.address));
  }
  return { internal, external };
}

/**
 * Resolves zone, node IPs and the NodePort addresses for this node, per family.
 *
 * nodePortAddresses follows kube-proxy's --nodeport-addresses for each family on its own (as its per-family
 * proxiers do): the family's CIDRs select the node IPs inside them, "primary" selects the node's primary
 * address of the family; with no entry of the family at all (empty list, or CIDRs of the other family only)
 * every node IP of the family is used.
 */
export function resolveNodeContext(input: Pick<ModelInput, "nodes" | "nodeName" | "config">): NodeContext {
  const config = input.config ?? {};
  const nodeName = input.nodeName || config.nodeName || "";
  const node = (input.nodes ?? []).find((n) => n.metadata.name === nodeName);
  const zone = config.nodeZone ?? node?.metadata.labels[LABEL_TOPOLOGY_ZONE] ?? "";
  const addrs = nodeAddresses(node);
  const all = config.nodeIPs ?? [...addrs.internal, ...addrs.external];
  const nodeIPs = unique(all.filter(isIPv4));
  const nodeIPs6 = unique(all.filter((ip) => ip.includes(":") && isIPv6(ip)).map(canonicalIP));
  const configPrimary = config.primaryNodeIP === undefined ? undefined : canonicalIP(config.primaryNodeIP);
  const primaryOf = (family: 4 | 6, ips: readonly string[]): string | undefined => {
    const of = (ip: string | undefined) => ip !== undefined && ipFamily(ip) === family;
    if (of(configPrimary)) return configPrimary;
    return addrs.internal.find(of) ?? addrs.external.find(of) ?? ips[0];
  };

  const wanted = config.nodePortAddresses ?? [];
  const cidrs = wanted.map((s) => parseCIDR(s)).filter((c) => c !== undefined);
  const wantPrimary = wanted.some((s) => s.trim() === "primary");
  const select = (family: 4 | 6, ips: string[]): string[] => {
    const own = cidrs.filter((c) => c.family === family);
    if (own.length === 0 && !wantPrimary) return ips;
    const selected = ips.filter((ip) => own.some((c) => ipInCIDR(ip, c)));
    const primary = wantPrimary ? primaryOf(family, ips) : undefined;
    if (primary !== undefined) selected.push(primary);
    return unique(selected);
  };
  const externalIPsAllowed =
    config.externalIPsAllowedCIDRs === undefined ? undefined : parseAllowed(config.externalIPsAllowedCIDRs);
  return {
    nodeName,
    zone,
    nodePortIPs: select(4, nodeIPs),
    nodeIPs,
    nodePortIPs6: select(6, nodeIPs6),
    nodeIPs6,
    proxyName: config.proxyName,
    externalIPsAllowed,
    defaultAlgorithm: config.defaultAlgorithm,
    defaultForwardingMode: config.defaultForwardingMode,
  };
}

function unique<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

/** kube-proxy's label filters, applied to Services and slices alike. */
function handledByUs(labels: Record<string, string>, proxyName: string | undefined): boolean {
  if (LABEL_HEADLESS in labels) return false;
  const owner = labels[LABEL_SERVICE_PROXY_NAME];
  if (owner === undefined) return true;
  return proxyName !== undefined && proxyName !== "" && owner === proxyName;
}

function isExternallyAccessibleService(svc: Service): boolean {
  const t = svc.spec.type;
  return t === "LoadBalancer" || t === "NodePort" || (t === "ClusterIP" && svc.spec.externalIPs.length > 0);
}

function sessionAffinityOf(svc: Service): SessionAffinity {
  return svc.spec.sessionAffinity === "ClientIP"
    ? { type: "ClientIP", timeoutSeconds: svc.spec.sessionAffinityTimeoutSeconds }
    : AFFINITY_NONE;
}

function algorithmOf(svc: Service, fallback: Algorithm = "random"): Algorithm {
  // An unknown value means the node's default: it must not take a Service down (invalidAlgorithm reports it).
  const a = svc.metadata.annotations[ANNOTATION_LB_ALGORITHM];
  return a !== undefined && (ALGORITHM_VALUES as readonly string[]).includes(a) ? (a as Algorithm) : fallback;
}

/**
 * The Service's bpfproxy.io/lb-algorithm when it is not a value bpfproxy knows (the Service is served with the
 * node's default, bpfproxy.lbAlgorithm); undefined when it is absent or valid. For the daemon's log line and metric.
 */
export function invalidAlgorithm(svc: Service): string | undefined {
  const a = svc.metadata.annotations[ANNOTATION_LB_ALGORITHM];
  return a === undefined || (ALGORITHM_VALUES as readonly string[]).includes(a) ? undefined : a;
}

function forwardingModeOf(svc: Service, fallback: ForwardingMode = "snat"): ForwardingMode {
  // Like the algorithm: an unknown value means the node's mode (invalidForwardingMode reports it).
  const a = svc.metadata.annotations[ANNOTATION_FORWARDING_MODE];
  return a !== undefined && (FORWARDING_MODE_VALUES as readonly string[]).includes(a)
    ? (a as ForwardingMode)
    : fallback;
}

/**
 * The Service's bpfproxy.io/forwarding-mode when it is not snat, dsr or hybrid (the Service is forwarded as the
 * node's bpfproxy.lbMode says); undefined when it is absent or valid. For the daemon's log line and metric.
 */
export function invalidForwardingMode(svc: Service): string | undefined {
  const a = svc.metadata.annotations[ANNOTATION_FORWARDING_MODE];
  return a === undefined || (FORWARDING_MODE_VALUES as readonly string[]).includes(a) ? undefined : a;
}

/** Trafficdistribution values and the hints the EndpointSlice controller derives for them. */
function derivedHintsFor(trafficDistribution: string): "zone" | "node" | undefined {
  switch (trafficDistribution) {
    case "PreferClose":
    case "PreferSameZone":
      return "zone";
    case "PreferSameNode":
      return "node";
    default:
      return undefined;
  }
}

/** One slice endpoint as the topology rules see it (the sync here, `bpfproxy explain` for other families). */
export function modelEndpoint(e: SliceEndpoint, address: string, port: number, isLocal: boolean): ModelEndpoint {
  return {
    address,
    port,
    nodeName: e.nodeName,
    zone: e.zone,
    ready: e.conditions.ready,
    serving: e.conditions.serving,
    terminating: e.conditions.terminating,
    zoneHints: e.hints.forZones,
    nodeHints: e.hints.forNodes,
    isLocal,
  };
}

/**
 * An endpoint of a packed IPv4 slice (src/k8s/packed.ts): its address kept as the number the slice holds, the
 * dotted string made only if something reads it (explain, an unsorted merge): a full sync reads hundreds of
 * thousands of endpoints and otherwise made an endpoint object, an address array and a string for each first.
 */
class PackedEndpoint implements ModelEndpoint {
  #address: string | undefined;
  readonly addr4: number;
  readonly nodeName: string;
  readonly zone: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  zoneHints: readonly string[];
  nodeHints: readonly string[];

  constructor(
    i32: number,
    readonly port: number,
    a: EndpointAttrs,
    readonly isLocal: boolean,
  ) {
    this.addr4 = i32 >>> 0;
    this.nodeName = a.nodeName;
    this.zone = a.zone;
    this.ready = a.conditions.ready;
    this.serving = a.conditions.serving;
    this.terminating = a.conditions.terminating;
    this.zoneHints = a.hints.forZones;
    this.nodeHints = a.hints.forNodes;
  }

  get address(): string {
    return (this.#address ??= i32ToIPv4(this.addr4));
  }
}

/**
 * The endpoints of one Service port, merged over all of the Service's slices.
 *
 * De-duplication is by address:port, as kube-proxy does: the first occurrence (slices in name order) wins,
 * except that an occurrence on this node replaces a remote one.
 *
 * trafficDistribution: kube-proxy itself only reads hints, which the EndpointSlice controller writes from the
 * Service's trafficDistribution. Slices written by hand (the manifest folder) or mirrored from Endpoints have
 * no controller behind them, so when NO endpoint of the port carries any hint and the Service asks for a
 * trafficDistribution we derive the hints the controller would have written: PreferClose / PreferSameZone →
 * forZones=[own zone]; PreferSameNode → forNodes=[own node] and forZones=[own zone]. Where hints exist they
 * are authoritative, exactly as in kube-proxy. Slices that name a manager (the `endpointslice.kubernetes.io/
 * managed-by` label every controller sets, the EndpointSlice controller's included) are taken as kube-proxy
 * takes them: a controller that wrote no hints decided against them (a zone without endpoints, nodes without
 * zone labels, too few endpoints), so nothing is derived for them.
 */
export function endpointsForPort(
  svc: Service,
  port: ServicePort,
  slices: readonly EndpointSlice[],
  nodeName: string,
  family: 4 | 6 = 4,
): ModelEndpoint[] {
  if (family === 6) return deriveHints(svc, slices, endpointsForPort6(port, slices, nodeName));
  // Every occurrence in order with its numeric address:port key; duplicates (rare) are merged afterwards, so
  // the common case builds no string or Map per endpoint.
  let eps: ModelEndpoint[] = [];
  const keys: number[] = [];
  for (const slice of slices) {
    const packed = packedEndpoints(slice);
    // Read once per slice: compact slices decode their endpoints on each read (src/k8s/packed.ts).
    let endpoints: readonly SliceEndpoint[] | undefined;
    for (const sp of slice.ports) {
      if (sp.name !== port.name || sp.protocol !== port.protocol || sp.port === null) continue;
      if (packed) {
        for (let i = 0; i < packed.length; i += 2) {
          const a = packed[i + 1] as EndpointAttrs;
          const ep = new PackedEndpoint(packed[i] as number, sp.port, a, nodeName !== "" && a.nodeName === nodeName);
          eps.push(ep);
          keys.push(ep.addr4 * 131072 + sp.port);
        }
        continue;
      }
      for (const e of (endpoints ??= slice.endpoints)) {
        const address = e.addresses[0];
        if (address === undefined) continue;
        // ipv4ToNumber accepts exactly what isIPv4 does, without its regular expression (once per endpoint).
        const a = ipv4ToNumber(address);
        if (Number.isNaN(a)) continue;
        eps.push(modelEndpoint(e, address, sp.port, nodeName !== "" && e.nodeName === nodeName));
        keys.push(a * 131072 + sp.port); // exact: 49 bits
      }
    }
  }
  if (eps.length > 1) {
    if (hasDuplicate(keys)) {
      // The first occurrence keeps its place; one on this node replaces a remote one there.
      const at = new Map<number, number>();
      const merged: ModelEndpoint[] = [];
      eps.forEach((ep, i) => {
        const j = at.get(keys[i]!);
        if (j === undefined) {
          at.set(keys[i]!, merged.length);
          merged.push(ep);
        } else if (ep.isLocal) merged[j] = ep;
      });
      eps = merged;
    }
  }
  return deriveHints(svc, slices, eps);
}

/** endpointsForPort for IPv6 slices: the same merge, keyed by the canonical address (not the hot path). */
function endpointsForPort6(port: ServicePort, slices: readonly EndpointSlice[], nodeName: string): ModelEndpoint[] {
  const at = new Map<string, number>();
  const eps: ModelEndpoint[] = [];
  for (const slice of slices) {
    if (slice.addressType !== "IPv6") continue;
    let endpoints: readonly SliceEndpoint[] | undefined;
    for (const sp of slice.ports) {
      if (sp.name !== port.name || sp.protocol !== port.protocol || sp.port === null) continue;
      for (const e of (endpoints ??= slice.endpoints)) {
        const raw = e.addresses[0];
        if (raw === undefined || !isIPv6(raw)) continue;
        const address = canonicalIP(raw);
        const ep = modelEndpoint(e, address, sp.port, nodeName !== "" && e.nodeName === nodeName);
        const key = `${address}|${sp.port}`;
        const j = at.get(key);
        if (j === undefined) {
          at.set(key, eps.length);
          eps.push(ep);
        } else if (ep.isLocal) eps[j] = ep;
      }
    }
  }
  return eps;
}

/** Hints the EndpointSlice controller would have written, for hand-written slices (see endpointsForPort). */
function deriveHints(svc: Service, slices: readonly EndpointSlice[], eps: ModelEndpoint[]): ModelEndpoint[] {
  const derive = derivedHintsFor(svc.spec.trafficDistribution);
  const handWritten = slices.every((sl) => sl.metadata.labels[LABEL_SLICE_MANAGED_BY] === undefined);
  if (derive && handWritten && eps.every((ep) => ep.zoneHints.length === 0 && ep.nodeHints.length === 0)) {
    for (const ep of eps) {
      ep.zoneHints = ep.zone !== "" ? [ep.zone] : [];
      if (derive === "node") ep.nodeHints = ep.nodeName !== "" ? [ep.nodeName] : [];
    }
  }
  return eps;
}

/** Scratch for numeric sort keys (one model build at a time; no typed array allocated per port). */
let keyScratch = new Float64Array(64);
function scratchKeys(n: number): Float64Array {
  if (keyScratch.length < n) keyScratch = new Float64Array(Math.max(n, keyScratch.length * 2));
  return keyScratch;
}

/** Some key occurs twice: pairwise for the usual few endpoints, by sorting a copy for many. */
function hasDuplicate(keys: readonly number[]): boolean {
  const n = keys.length;
  if (n <= 16) {
    for (let i = 1; i < n; i++) for (let j = 0; j < i; j++) if (keys[i] === keys[j]) return true;
    return false;
  }
  const sorted = scratchKeys(n).subarray(0, n);
  for (let i = 0; i < n; i++) sorted[i] = keys[i]!;
  sorted.sort();
  for (let i = 1; i < n; i++) if (sorted[i] === sorted[i - 1]) return true;
  return false;
}

/** The one builder of Service records (the model is synchronous per Service). */
const builder = new RecordBuilder();

/**
 * The frontends of one Service on this node as a record (frontends sorted as docs/cli.md says), or undefined
 * when it has none (not ours to program, headless, no frontend). `slices` are the Service's slices (already
 * filtered by label and address type), in name order.
 */
export function buildServiceRecord(
  svc: Service,
  slices: readonly EndpointSlice[],
  ctx: NodeContext,
): ServiceRecord | undefined {
  if (!handledByUs(svc.metadata.labels, ctx.proxyName)) return undefined;
  if (svc.spec.type === "ExternalName") return undefined;
  if (svc.spec.clusterIP === "None" || svc.spec.clusterIP === "") return undefined;
  const b = builder;
  b.reset();
  try {
    // kube-proxy's proxier of a family skips a Service without a cluster IP of that family entirely (its
    // external addresses too): each family below stands alone.
    const clusterIPs = svc.spec.clusterIPs.filter(isIPv4);
    let anyIPv6 = false;
    for (const ip of svc.spec.clusterIPs) if (ip.includes(":")) anyIPv6 = true;
    let slices4 = slices;
    let slices6: readonly EndpointSlice[] = [];
    if (anyIPv6 || slices.some((s) => s.addressType !== "IPv4")) {
      slices4 = slices.filter((s) => s.addressType === "IPv4");
      slices6 = slices.filter((s) => s.addressType === "IPv6");
    }
    if (clusterIPs.length > 0) familyFrontends(svc, slices4, ctx, 4, clusterIPs, b);
    if (anyIPv6) {
      const clusterIPs6 = unique(svc.spec.clusterIPs.filter(isIPv6).map(canonicalIP));
      if (clusterIPs6.length > 0) familyFrontends(svc, slices6, ctx, 6, clusterIPs6, b);
    }
    const n = b.frontendCount;
    if (n === 0) return undefined;
    return b.finish(serviceKey(svc), svc.spec.ports, frontendOrder(b, svc));
  } finally {
    b.reset();
  }
}

/** The number of frontends the Service has on this node (0: none, or not ours). */
export function serviceFrontendCount(svc: Service, slices: readonly EndpointSlice[], ctx: NodeContext): number {
  return buildServiceRecord(svc, slices, ctx)?.size ?? 0;
}

/** When one Service reaches the same key twice, the more specific type wins (it carries source ranges). */
const TYPE_PRIORITY = [0, 3, 1, 2]; // by FRONTEND_TYPES: ClusterIP, NodePort, LoadBalancer, ExternalIP

/**
 * The builder's frontends to keep, in frontend order (compareFrontends within one Service): one per key
 * (address, port, protocol, scope), the more specific type where a Service reaches a key twice.
 */
function frontendOrder(b: RecordBuilder, svc: Service): number[] | undefined {
  const n = b.frontendCount;
  if (n === 1) return undefined;
  let keep: number[] = [];
  const byKey = new Map<number | string, number>();
  for (let k = 0; k < n; k++) {
    const key = b.frontendKey(k);
    const have = byKey.get(key);
    if (have === undefined) {
      byKey.set(key, keep.length);
      keep.push(k);
    } else if (TYPE_PRIORITY[b.frontendType(k)]! < TYPE_PRIORITY[b.frontendType(keep[have]!)]!) keep[have] = k;
  }
  const fields = keep.map((k) => ({ k, ...b.frontendFields(k) }));
  const ports = svc.spec.ports;
  fields.sort(
    (x, y) =>
      str(ports[x.portIndex]!.name, ports[y.portIndex]!.name) ||
      str(FRONTEND_TYPES[x.type]!, FRONTEND_TYPES[y.type]!) ||
      compareAddressFields(x, y) ||
      (x.scopeInternal === y.scopeInternal ? 0 : x.scopeInternal ? 1 : -1) ||
      x.port - y.port ||
      str(PROTOCOL_NAMES[x.proto]!, PROTOCOL_NAMES[y.proto]!),
  );
  keep = fields.map((f) => f.k);
  return keep;
}
const PROTOCOL_NAMES = ["TCP", "UDP", "SCTP"];

/** compareAddresses for an address held as an IPv4 number or a string. */
function compareAddressFields(
  x: { address: string | number; isString: boolean },
  y: { address: string | number; isString: boolean },
): number {
  if (!x.isString && !y.isString) return (x.address as number) - (y.address as number);
  if (!x.isString) return -1;
  if (!y.isString) return 1;
  return compareAddresses(x.address as string, y.address as string);
}

/** One family's frontends of a Service (its cluster IPs of that family given), added to the builder. */
function familyFrontends(
  svc: Service,
  slices: readonly EndpointSlice[],
  ctx: NodeContext,
  family: 4 | 6,
  clusterIPs: readonly string[],
  b: RecordBuilder,
): void {
  const affinity = b.affinity(sessionAffinityOf(svc));
  const algorithm = algorithmOf(svc, ctx.defaultAlgorithm);
  const forwardingMode = forwardingModeOf(svc, ctx.defaultForwardingMode);
  const weights = backendWeightsOf(svc);
  const inFamily = family === 4 ? isIPv4 : isIPv6;
  const canonical = family === 4 ? (ip: string) => ip : canonicalIP;
  // Anyone who may create a Service may claim any address as an externalIP (CVE-2020-8554): only those the
  // operator's allow-list admits are served.
  const externalIPs = unique(svc.spec.externalIPs.filter(inFamily).map(canonical)).filter((ip) =>
    externalIPAllowed(ip, ctx.externalIPsAllowed),
  );
  // Only VIP-mode ingress IPs are programmed (ipMode Proxy means the load balancer proxies to the nodes).
  // spec.loadBalancerIP is a request to the cloud provider, not an address to serve: like kube-proxy, we
  // serve what status reports.
  const lbIPs = unique(
    svc.status.loadBalancer.ingress
      .filter((i) => i.ip !== "" && i.ipMode !== "Proxy" && inFamily(i.ip))
      .map((i) => canonical(i.ip)),
  );
  // Source ranges of this family; with none of its own, the family is open (as kube-proxy does).
  const sourceRanges = b.rangeList(svc.spec.loadBalancerSourceRanges.filter((c) => parseCIDR(c)?.family === family));
  const servesNodePorts = svc.spec.type === "NodePort" || svc.spec.type === "LoadBalancer";
  const externalPolicyLocal = isExternallyAccessibleService(svc) && svc.spec.externalTrafficPolicy === "Local";
  const internalPolicyLocal = svc.spec.internalTrafficPolicy === "Local";
  const nodePortIPs = family === 4 ? ctx.nodePortIPs : ctx.nodePortIPs6;

  svc.spec.ports.forEach((port, portIndex) => {
    // SCTP stays in the model (and in render): the BPF data plane translates TCP and UDP only and is expected
    // to skip SCTP frontends (reporting them), not to make them disappear from the desired state.
    const nodePort = servesNodePorts ? port.nodePort : 0;
    const policy: EndpointPolicy = {
      internalPolicyLocal,
      externalPolicyLocal,
      externallyAccessible: nodePort !== 0 || lbIPs.length > 0 || externalIPs.length > 0,
    };
    const eps = endpointsForPort(svc, port, slices, ctx.nodeName, family);
    const cat = categorizeEndpoints(eps, policy, ctx.nodeName, ctx.zone, family);
    const clusterSet = b.endpointSet(cat.cluster, weights);
    const localSet = cat.local === cat.cluster ? clusterSet : b.endpointSet(cat.local, weights);
    const internal = internalPolicyLocal ? cat.local : cat.cluster;
    const external = externalPolicyLocal ? cat.local : cat.cluster;
    const internalSet = internalPolicyLocal ? localSet : clusterSet;
    const externalSet = externalPolicyLocal ? localSet : clusterSet;
    // Endpoints kept for existing flows only, per chosen set (at most two per port).
    const retained = new Map<number, number>();
    const retainedFor = (set: number, chosen: readonly ModelEndpoint[] | null): number => {
      let r = retained.get(set);
      if (r === undefined) retained.set(set, (r = b.endpointSet(retainedOf(eps, chosen))));
      return r;
    };

    const add = (
      type: FrontendType,
      address: string,
      frontendPort: number,
      scope: Frontend["scope"],
      set: number,
      chosen: readonly ModelEndpoint[] | null,
    ): void => {
      const empty = !chosen || chosen.length === 0;
      b.frontend({
        type,
        address,
        port: frontendPort,
        protocol: port.protocol,
        scope,
        portIndex,
        algorithm,
        affinity,
        backends: set,
        retained: retainedFor(set, chosen),
        ranges: type === "LoadBalancer" ? sourceRanges : 0,
        dropWhenEmpty: empty && cat.hasAnyEndpoints,
        externalPolicyLocal: type !== "ClusterIP" && externalPolicyLocal,
        // Only where it can apply (external frontends, Cluster policy) and differs from the default.
        forwardingMode: type !== "ClusterIP" && !externalPolicyLocal ? forwardingMode : "snat",
      });
    };

    // ClusterIP: in-cluster traffic only, subject to internalTrafficPolicy.
    for (const ip of clusterIPs) add("ClusterIP", ip, port.port, "internal", internalSet, internal);

    // NodePort, LoadBalancer and external IPs: traffic from outside, subject to externalTrafficPolicy.
    //
    // With externalTrafficPolicy Local, kube-proxy still sends traffic that starts inside the cluster (from a
    // pod, or from the node itself) to such an address through the Cluster set ("short-circuit"), so it never
    // blackholes on a node without local endpoints. We express that as a second frontend with scope internal
    // and the Cluster set; it is emitted only when the two sets differ, and the data plane looks up scope
    // internal first for in-cluster sources and falls back to scope external. With Cluster policy both kinds
    // of traffic use the same set, so one external entry serves both.
    const externalFrontends: Array<[FrontendType, string, number]> = [];
    if (nodePort !== 0) for (const ip of nodePortIPs) externalFrontends.push(["NodePort", ip, nodePort]);
    for (const ip of lbIPs) externalFrontends.push(["LoadBalancer", ip, port.port]);
    for (const ip of externalIPs) externalFrontends.push(["ExternalIP", ip, port.port]);
    const twoScopes = externalPolicyLocal && !b.sameSet(externalSet, clusterSet);
    for (const [type, ip, p] of externalFrontends) {
      add(type, ip, p, "external", externalSet, external);
      if (twoScopes) add(type, ip, p, "internal", clusterSet, cat.cluster);
    }
  });
}

/**
 * Endpoints that still exist but are not offered to new connections on this frontend (terminating, not
 * ready, or filtered by policy/topology). The data plane keeps them so that established flows keep their
 * translation; they are never picked for a new flow. Not-ready ones are shown as "terminating" (no new flows).
 */
function retainedOf(all: readonly ModelEndpoint[], chosen: readonly ModelEndpoint[] | null): ModelEndpoint[] | null {
  // Every endpoint chosen (the common case: all ready, Cluster policy): nothing is only retained.
  const n = chosen?.length ?? 0;
  if (n === all.length) return null;
  if (n === 0) return all as ModelEndpoint[];
  // The chosen sets are filtered from the same endpoint objects (categorizeEndpoints).
  const picked = new Set(chosen);
  return all.filter((ep) => !picked.has(ep));
}

const sliceGroups = new WeakMap<EndpointSlice, { proxyName: string | undefined; key: string | null }>();

/** The Service key a slice belongs to, or null when it is not ours to program (kept per object). */
function sliceGroup(s: EndpointSlice, proxyName: string | undefined): string | null {
  const have = sliceGroups.get(s);
  if (have && have.proxyName === proxyName) return have.key;
  let key: string | null = null;
  // IPv4 and IPv6 slices feed their family's frontends; FQDN slices are ignored, not invalid.
  if (s.addressType !== "FQDN" && handledByUs(s.metadata.labels, proxyName)) {
    const svcName = s.metadata.labels[LABEL_SERVICE_NAME];
    if (svcName) key = `${s.metadata.namespace}/${svcName}`;
  }
  sliceGroups.set(s, { proxyName, key });
  return key;
}

/** Groups usable slices by their Service's key, each group in slice-name order. */
export function indexSlices(
  slices: readonly EndpointSlice[],
  proxyName: string | undefined,
): Map<string, EndpointSlice[]> {
  const out = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const key = sliceGroup(s, proxyName);
    if (key === null) continue;
    let list = out.get(key);
    if (!list) out.set(key, (list = []));
    list.push(s);
  }
  for (const list of out.values())
    if (list.length > 1)
      list.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  return out;
}

const str = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The claimants of one frontend key: one record, or several with the owner (first by Service key) first. */
type Claim = ServiceRecord | ServiceRecord[];

/** The index of the frontend with claim key `k` in `r`. */
function frontendWithKey(r: ServiceRecord, k: number | string): number {
  for (let i = 0; i < r.size; i++) if (r.claimKey(i) === k) return i;
  return -1;
}

/**
 * kube-proxy's change tracking for the model: remembers, per Service, the inputs it was rendered from
 * (its Service object and EndpointSlices) and the result, and which Service owns each frontend key.
 * A build visits only the Services whose inputs may have changed (all of them when handed arrays; the
 * changed keys when handed an ObjectIndex) and renders again those whose inputs are not the very same
 * objects: sources hand out new objects for changed ones and keep unchanged ones. A change of node
 * facts (zone, addresses, config) renders everything again.
 */
export class ModelCache {
  private byService = new Map<
    string,
    { svc: Service; slices: readonly EndpointSlice[]; record: ServiceRecord | undefined }
  >();
  /** Frontend key → the records claiming it, the owner (first in frontend order, i.e. by Service key) first. */
  private claims = new Map<number | string, Claim>();
  /** Per Service: the record of the frontends it owns (its whole record unless another Service owns some). */
  private effective = new Map<string, ServiceRecord>();
  /** For an effective record that is a subset: its whole record and the frontends kept. */
  private subsets = new Map<string, { whole: ServiceRecord; keep: string }>();
  private sortedKeys: string[] | undefined;
  private context = "";
  private generation = 0;
  private reset = true;
  private touched = new Set<string>();
  private changed = new Set<string>();
  private frontendCount = 0;
  private onConflict: ModelInput["onConflict"];
  /** The ObjectIndex version this cache has caught up with (-1: none). */
  indexVersion = -1;
  /** Services rendered (not reused) by the last build. */
  rendered = 0;
  /** Services visited (inputs compared) by the last build. */
  visited = 0;

  /** Starts a build; a different node context invalidates everything. Returns false when it did. */
  begin(ctx: NodeContext, onConflict?: ModelInput["onConflict"]): boolean {
    // What rendering reads: nodeIPs only passes through to the model (modelOf), so a node address outside
    // nodePortAddresses re-renders nothing.
    const fp = JSON.stringify(ctx, (k, v: unknown) => (k === "nodeIPs" || k === "nodeIPs6" ? undefined : v));
    this.rendered = 0;
    this.visited = 0;
    // `touched` and `changed` carry over from a build that threw before finish(): its Services were
    // updated here but never handed out, so the next build's delta must still name them.
    this.onConflict = onConflict;
    if (fp === this.context) return true;
    this.byService.clear();
    this.claims.clear();
    this.effective.clear();
    this.subsets.clear();
    this.sortedKeys = undefined;
    this.frontendCount = 0;
    this.context = fp;
    this.reset = true;
    this.indexVersion = -1;
    return false;
  }

  get currentGeneration(): number {
    return this.generation;
  }

  /** Keys of every Service the cache holds. */
  keys(): IterableIterator<string> {
    return this.byService.keys();
  }

  /** Brings one Service up to date: `svc` undefined means it is gone (or not ours). */
  visit(key: string, svc: Service | undefined, slices: readonly EndpointSlice[], ctx: NodeContext): void {
    this.visited++;
    const prev = this.byService.get(key);
    if (svc === undefined) {
      if (!prev) return;
      if (prev.record) this.retract(prev.record);
      this.touched.add(key);
      this.byService.delete(key);
      this.sortedKeys = undefined;
      return;
    }
    if (
      prev &&
      prev.svc === svc &&
      prev.slices.length === slices.length &&
      prev.slices.every((s, i) => s === slices[i])
    )
      return;
    const record = buildServiceRecord(svc, slices, ctx);
    this.rendered++;
    if (prev?.record) this.retract(prev.record);
    if (!prev) this.sortedKeys = undefined;
    this.touched.add(key);
    this.byService.set(key, { svc, slices, record });
    if (record) this.claim(record);
  }

  private retract(r: ServiceRecord): void {
    for (let i = 0; i < r.size; i++) {
      const k = r.claimKey(i);
      const c = this.claims.get(k);
      if (c === undefined) continue;
      if (c === r) {
        this.claims.delete(k);
        continue;
      }
      if (!Array.isArray(c)) continue;
      const at = c.indexOf(r);
      if (at < 0) continue;
      c.splice(at, 1);
      if (at === 0) this.touched.add(c[0]!.service); // the next claimant owns it now
      if (c.length === 1) this.claims.set(k, c[0]!);
    }
  }

  private claim(r: ServiceRecord): void {
    for (let i = 0; i < r.size; i++) {
      const k = r.claimKey(i);
      const c = this.claims.get(k);
      if (c === undefined) {
        this.claims.set(k, r);
        continue;
      }
      // Two Services claim one address/port/protocol/scope: the first in frontend order (Service key) wins.
      const list = Array.isArray(c) ? c : [c];
      if (list !== c) this.claims.set(k, list);
      let at = 0;
      while (at < list.length && str(list[at]!.service, r.service) < 0) at++;
      list.splice(at, 0, r);
      const kept = list[0]!;
      const dropped = at === 0 ? list[1]! : r;
      if (at === 0) this.touched.add(list[1]!.service);
      this.onConflict?.(kept.frontend(frontendWithKey(kept, k)), dropped.frontend(frontendWithKey(dropped, k)));
    }
  }

  /** The frontends of `r` this Service owns. */
  private owned(r: ServiceRecord): ServiceRecord | undefined {
    let keep: number[] | undefined;
    for (let i = 0; i < r.size; i++) {
      const c = this.claims.get(r.claimKey(i));
      const owner = Array.isArray(c) ? c[0] : c;
      if (owner === r) keep?.push(i);
      else if (!keep) keep = Array.from({ length: i }, (_, j) => j);
    }
    if (!keep) {
      this.subsets.delete(r.service);
      return r;
    }
    if (keep.length === 0) return undefined;
    // The same subset as before: the same record (an unchanged Service is not in the delta).
    const key = keep.join(",");
    const had = this.subsets.get(r.service);
    const prev = this.effective.get(r.service);
    if (had && prev && had.whole === r && had.keep === key) return prev;
    this.subsets.set(r.service, { whole: r, keep: key });
    return r.subset(keep);
  }

  /** Ends a build: recomputes the owned frontends of the Services it touched; returns the delta. */
  finish(): ModelDelta {
    for (const key of this.touched) {
      const record = this.byService.get(key)?.record;
      const next = record ? this.owned(record) : undefined;
      const prev = this.effective.get(key);
      if (next === prev) continue;
      if (next) this.effective.set(key, next);
      else {
        this.effective.delete(key);
        this.subsets.delete(key);
      }
      this.changed.add(key);
      this.frontendCount += (next?.size ?? 0) - (prev?.size ?? 0);
    }
    const from = this.reset ? -1 : this.generation;
    this.reset = false;
    const services = this.changed;
    this.touched = new Set();
    this.changed = new Set();
    return {
      from,
      to: ++this.generation,
      services,
      byService: this.effective,
      frontendCount: this.frontendCount,
    };
  }

  /** Every frontend in frontend order (Services by key, each one's frontends sorted) with its extras. */
  ordered(): { frontends: Frontend[]; extras: FrontendExtras[] } {
    this.sortedKeys ??= [...this.byService.keys()].sort(str);
    const frontends: Frontend[] = [];
    const extras: FrontendExtras[] = [];
    for (const k of this.sortedKeys) {
      const r = this.effective.get(k);
      if (!r) continue;
      for (const f of r.frontends()) frontends.push(f);
      for (const x of r.extrasList()) extras.push(x);
    }
    return { frontends, extras };
  }
}

/** The same objects in the same order (how a Service's cached frontends are told unchanged). */
export const sameRefs = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The Service's usable slices (IPv4 and IPv6, ours), in slice-name order. */
export function usableSlices(
  slices: readonly EndpointSlice[],
  key: string,
  proxyName: string | undefined,
): EndpointSlice[] {
  const out = slices.filter((s) => sliceGroup(s, proxyName) === key);
  if (out.length > 1)
    out.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  return out;
}

/** A model whose frontend list is computed on first use (incremental consumers read `delta` instead). */
function modelOf(cache: ModelCache, ctx: NodeContext, delta: ModelDelta): NodeModel {
  let ordered: { frontends: Frontend[]; extras: FrontendExtras[] } | undefined;
  const get = () => {
    // The cache holds only its latest build: an older model's lists cannot be made any more.
    if (!ordered && cache.currentGeneration !== delta.to)
      throw new Error("model superseded: its frontends were not read before the next build with its cache");
    return (ordered ??= cache.ordered());
  };
  const model = { node: ctx.nodeName, ...nodeFacts(ctx) } as NodeModel;
  Object.defineProperty(model, "frontends", { get: () => get().frontends, enumerable: true });
  Object.defineProperty(model, "extras", { get: () => get().extras, enumerable: true });
  Object.defineProperty(model, "delta", { value: delta, enumerable: false });
  return model;
}

/**
 * The model from an ObjectIndex, visiting only the Services that changed since the cache last caught
 * up with it (every Service the first time and after a change of node facts): O(change).
 */
export function buildNodeModelFrom(
  index: ObjectIndex,
  cache: ModelCache,
  input: Pick<ModelInput, "nodes" | "nodeName" | "config" | "onConflict">,
): NodeModel {
  const b = beginFrom(index, cache, input);
  for (const key of b.keys) b.visit(key);
  return b.finish();
}

/** Services visited between yields to the event loop by buildNodeModelFromAsync. */
const VISITS_PER_YIELD = 1000;

/** buildNodeModelFrom yielding to the event loop while it visits many Services (start, node changes). */
export async function buildNodeModelFromAsync(
  index: ObjectIndex,
  cache: ModelCache,
  input: Pick<ModelInput, "nodes" | "nodeName" | "config" | "onConflict">,
): Promise<NodeModel> {
  const b = beginFrom(index, cache, input);
  let n = 0;
  for (const key of b.keys) {
    b.visit(key);
    if (++n % VISITS_PER_YIELD === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return b.finish();
}

function beginFrom(
  index: ObjectIndex,
  cache: ModelCache,
  input: Pick<ModelInput, "nodes" | "nodeName" | "config" | "onConflict">,
) {
  const ctx = resolveNodeContext(input);
  const warm = cache.begin(ctx, input.onConflict);
  // Changes arriving while an async build yields are after this version: the next build visits them.
  const version = index.version;
  const changed = warm ? index.changedSince(cache.indexVersion) : undefined;
  return {
    keys: changed ?? new Set([...index.serviceKeys(), ...cache.keys()]),
    visit: (key: string) => {
      const svc = index.service(key);
      cache.visit(key, svc, svc ? usableSlices(index.slices(key), key, ctx.proxyName) : [], ctx);
    },
    finish: () => {
      cache.indexVersion = version;
      return modelOf(cache, ctx, cache.finish());
    },
  };
}

/** Builds the complete model for one node. */
export function buildNodeModel(input: ModelInput): NodeModel {
  const ctx = resolveNodeContext(input);
  const slicesBySvc = indexSlices(input.endpointSlices, ctx.proxyName);
  const cache = input.cache;
  if (cache) {
    // Arrays carry no change log: every Service is visited (compared by identity).
    cache.begin(ctx, input.onConflict);
    const seen = new Set<string>();
    for (const svc of input.services) {
      const key = serviceKey(svc);
      if (seen.has(key)) continue; // a source should never hand us two; keep the first
      seen.add(key);
      cache.visit(key, svc, slicesBySvc.get(key) ?? [], ctx);
    }
    for (const key of [...cache.keys()]) if (!seen.has(key)) cache.visit(key, undefined, [], ctx);
    cache.indexVersion = -1;
    return modelOf(cache, ctx, cache.finish());
  }
  const seenServices = new Set<string>();
  const records: ServiceRecord[] = [];
  for (const svc of input.services) {
    const key = serviceKey(svc);
    if (seenServices.has(key)) continue; // a source should never hand us two; keep the first
    seenServices.add(key);
    const r = buildServiceRecord(svc, slicesBySvc.get(key) ?? [], ctx);
    if (r) records.push(r);
  }
  // Frontend order is by Service first: Services by key, each record's frontends already sorted.
  records.sort((a, b) => str(a.service, b.service));

  const frontends: Frontend[] = [];
  const extras: FrontendExtras[] = [];
  const owners = new Map<number | string, Frontend>();
  for (const r of records) {
    const fes = r.frontends();
    for (let i = 0; i < fes.length; i++) {
      const k = r.claimKey(i);
      const owner = owners.get(k);
      if (owner) {
        // Two Services claim one address/port/protocol/scope: the first in frontend order wins.
        input.onConflict?.(owner, fes[i]!);
        continue;
      }
      owners.set(k, fes[i]!);
      frontends.push(fes[i]!);
      extras.push(r.extras(i));
    }
  }
  return { node: ctx.nodeName, frontends, extras, ...nodeFacts(ctx) };
}

/** The node addresses a model carries for the data plane. */
function nodeFacts(ctx: NodeContext): Pick<NodeModel, "nodePortIPs" | "nodeIPs" | "nodePortIPs6" | "nodeIPs6"> {
  return { nodePortIPs: ctx.nodePortIPs, nodeIPs: ctx.nodeIPs, nodePortIPs6: ctx.nodePortIPs6, nodeIPs6: ctx.nodeIPs6 };
}
