// Health-check node ports (kube-proxy's service health server): for every LoadBalancer Service with
// externalTrafficPolicy Local and a healthCheckNodePort, the number of this node's ready endpoints, so that
// the cloud load balancer sends traffic only to nodes that can serve it locally. Pure.

import { canonicalIP, ipFamily } from "../k8s/ip.js";
import type { EndpointSlice, Service } from "../k8s/schemas.js";
import {
  serviceFrontendCount,
  indexSlices,
  resolveNodeContext,
  serviceKey,
  type ModelInput,
  type NodeContext,
} from "./build.js";
import type { ServiceHealthCheck } from "./types.js";

function needsHealthCheck(svc: Service): boolean {
  return (
    svc.spec.type === "LoadBalancer" && svc.spec.externalTrafficPolicy === "Local" && svc.spec.healthCheckNodePort !== 0
  );
}

/**
 * Sorted by service. Counting follows kube-proxy: ready (not terminating-only) endpoints on this node, counted
 * once per IP across all of the Service's slice ports (slices without a usable port do not count). A Service
 * that this node does not program at all (other proxy, headless, no cluster IP) gets no health check.
 *
 * Dual-stack: kube-proxy has one health server per family proxier, each counting its own family's endpoints
 * (and on one port only one of them can listen). We serve one health check per Service: endpoints are counted
 * per family of the Service's cluster IPs and the larger count is reported, so a pod with an address of each
 * family counts once, and the node passes while either family can serve locally.
 */
export function buildHealthChecks(
  input: Pick<ModelInput, "services" | "endpointSlices" | "nodes" | "nodeName" | "config">,
): ServiceHealthCheck[] {
  const ctx = resolveNodeContext(input);
  const slicesBySvc = indexSlices(input.endpointSlices, ctx.proxyName);
  const out: ServiceHealthCheck[] = [];
  const seen = new Set<string>();
  for (const svc of input.services) {
    const key = serviceKey(svc);
    if (seen.has(key)) continue;
    seen.add(key);
    const check = healthCheckOf(svc, slicesBySvc.get(key) ?? [], ctx);
    if (check) out.push(check);
  }
  return out.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
}

/** One Service's health check (see buildHealthChecks); `slices` are its usable slices. */
export function healthCheckOf(
  svc: Service,
  slices: readonly EndpointSlice[],
  ctx: NodeContext,
): ServiceHealthCheck | undefined {
  if (!needsHealthCheck(svc)) return undefined;
  if (serviceFrontendCount(svc, [], ctx) === 0) return undefined;
  const families = new Set(svc.spec.clusterIPs.map(ipFamily));
  const ips = { 4: new Set<string>(), 6: new Set<string>() };
  for (const s of slices) {
    if (!s.ports.some((p) => p.port !== null)) continue;
    for (const e of s.endpoints) {
      const a = e.addresses[0];
      const family = a === undefined ? undefined : ipFamily(a);
      if (family === undefined || !families.has(family)) continue;
      if (e.conditions.ready && ctx.nodeName !== "" && e.nodeName === ctx.nodeName) ips[family].add(canonicalIP(a!));
    }
  }
  const localEndpoints = Math.max(ips[4].size, ips[6].size);
  return { service: serviceKey(svc), nodePort: svc.spec.healthCheckNodePort, localEndpoints };
}
