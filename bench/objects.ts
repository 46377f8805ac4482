// Synthetic clusters for the benchmarks and the scale tests: N ClusterIP Services, each with one TCP
// port and E ready endpoints in one EndpointSlice, validated by the real schemas (as a source delivers them).
import { validateObject } from "../src/k8s/validate.js";
import type { EndpointSlice, Node, Service } from "../src/k8s/schemas.js";
import type { ObjectSnapshot } from "../src/sources/types.js";

export function clusterIP(i: number): string {
  return `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

/** The IPv6 ClusterIP of Service i (its second family in dualStack()). */
export function clusterIP6(i: number): string {
  return `fd00:96::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
}

/** IPv6 endpoint j of Service i: unique per (i, j) within fd00:128::/64. */
export function podIP6(i: number, j: number): string {
  return `fd00:128::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}:${j.toString(16)}`;
}

/** Endpoint j of Service i: unique per (i, j) within 10.128.0.0/9. */
export function podIP(i: number, j: number): string {
  const n = i * 64 + j;
  return `10.${128 + ((n >> 16) & 0x7f)}.${(n >> 8) & 0xff}.${n & 0xff}`;
}

function parsed<T>(raw: Record<string, unknown>): T {
  const r = validateObject(raw);
  if (!r.ok) throw new Error(`invalid fixture: ${r.reason}`);
  return r.object as T;
}

/** Service i; dual-stack (RequireDualStack, clusterIP6(i) second) when asked. */
export function service(i: number, dual = false): Service {
  const ip = clusterIP(i);
  return parsed<Service>({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: `svc-${i}`, namespace: "bench", labels: {}, annotations: {} },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: dual ? [ip, clusterIP6(i)] : [ip],
      ...(dual ? { ipFamilyPolicy: "RequireDualStack", ipFamilies: ["IPv4", "IPv6"] } : {}),
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
    },
  });
}

/** The slice of Service i with endpoints; `version` changes the last endpoint (one-endpoint change). */
export function endpointSlice(i: number, endpoints: number, version = 0): EndpointSlice {
  return parsed<EndpointSlice>({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: { name: `svc-${i}-a`, namespace: "bench", labels: { "kubernetes.io/service-name": `svc-${i}` } },
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [j === endpoints - 1 && version > 0 ? podIP(i, 32 + (version % 32)) : podIP(i, j)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: "node-b",
    })),
  });
}

/** The slice of Service i with the given endpoint addresses (e.g. real pods in the lab, conn-rate), of one
 * family (the IPv6 slice has a name of its own beside the IPv4 one). */
export function endpointSliceWith(i: number, addresses: string[], family: 4 | 6 = 4): EndpointSlice {
  return parsed<EndpointSlice>({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: family === 6 ? "IPv6" : "IPv4",
    metadata: {
      name: `svc-${i}-${family === 6 ? "v6" : "a"}`,
      namespace: "bench",
      labels: { "kubernetes.io/service-name": `svc-${i}` },
    },
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: addresses.map((a) => ({
      addresses: [a],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: "node-b",
    })),
  });
}

export function nodeObject(name = "node-a"): Node {
  return parsed<Node>({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, labels: {} },
    status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
  });
}

export function cluster(services: number, endpoints: number): ObjectSnapshot {
  const svcs: Service[] = [];
  const slices: EndpointSlice[] = [];
  for (let i = 0; i < services; i++) {
    svcs.push(service(i));
    slices.push(endpointSlice(i, endpoints));
  }
  return { services: svcs, endpointSlices: slices, nodes: [nodeObject()] };
}

/** The snapshot of cluster() with every Service dual-stack and an IPv6 slice of `endpoints` endpoints beside
 * each IPv4 one. */
export function dualStack(snap: ObjectSnapshot, endpoints: number): ObjectSnapshot {
  const services = snap.services.map((_, i) => service(i, true));
  const v6 = snap.services.map((_, i) =>
    endpointSliceWith(
      i,
      Array.from({ length: endpoints }, (_, j) => podIP6(i, j)),
      6,
    ),
  );
  return { ...snap, services, endpointSlices: [...snap.endpointSlices, ...v6] };
}
