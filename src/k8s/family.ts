// Dual-stack objects on IPv4-only data planes: the model renders both families, the data planes serve
// IPv4 only so far; this counts the IPv6 objects so the daemon can say so once and export a metric
// instead of silently serving half a dual-stack Service.
import { isIPv6 } from "node:net";
import type { EndpointSlice, Service } from "./schemas.js";

/** Services with at least one IPv6 address (cluster IP, external IP or load-balancer ingress IP). */
export function servicesWithIPv6(services: readonly Service[]): number {
  return services.filter(hasIPv6).length;
}

/** Whether a Service has an IPv6 cluster IP, external IP or load-balancer ingress IP. */
export function hasIPv6(s: Service): boolean {
  return (
    s.spec.clusterIPs.some(isIPv6) ||
    s.spec.externalIPs.some(isIPv6) ||
    s.status.loadBalancer.ingress.some((i) => isIPv6(i.ip))
  );
}

/** EndpointSlices of the IPv6 address type. */
export function ipv6EndpointSlices(slices: readonly EndpointSlice[]): number {
  return slices.filter((s) => s.addressType === "IPv6").length;
}
