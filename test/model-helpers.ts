// Builders for model tests: raw Kubernetes objects in a few words, validated by the real schemas.

import assert from "node:assert/strict";
import { validateObject } from "../src/k8s/validate.js";
import { endpointsToSlices } from "../src/k8s/endpoints.js";
import type { EndpointSlice, Node, Service } from "../src/k8s/schemas.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

type Raw = Record<string, unknown>;

function parsed<T>(raw: Raw, kind: string): T {
  const r = validateObject(raw);
  assert.ok(r.ok, `fixture ${kind} must be valid: ${r.ok ? "" : r.reason}`);
  return r.object as T;
}

export interface SvcOpts {
  name?: string;
  namespace?: string;
  type?: string;
  clusterIP?: string;
  clusterIPs?: string[];
  ports?: Raw[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  externalIPs?: string[];
  loadBalancerIP?: string;
  loadBalancerSourceRanges?: string[];
  ingress?: Raw[];
  externalTrafficPolicy?: string;
  internalTrafficPolicy?: string;
  sessionAffinity?: string;
  timeoutSeconds?: number;
  trafficDistribution?: string;
  allocateLoadBalancerNodePorts?: boolean;
  externalName?: string;
  healthCheckNodePort?: number;
}

/** A Service; default default/web, ClusterIP 10.96.0.10, port http 80→8080/TCP. */
export function svc(o: SvcOpts = {}): Service {
  const spec: Raw = {
    type: o.type ?? "ClusterIP",
    ports: o.ports ?? [
      {
        name: "http",
        port: 80,
        targetPort: 8080,
        protocol: "TCP",
        ...(o.type === "NodePort" || o.type === "LoadBalancer" ? { nodePort: 30080 } : {}),
      },
    ],
  };
  if (o.type !== "ExternalName") spec.clusterIP = o.clusterIP ?? "10.96.0.10";
  if (o.clusterIPs) spec.clusterIPs = o.clusterIPs;
  if (o.externalIPs) spec.externalIPs = o.externalIPs;
  if (o.loadBalancerIP) spec.loadBalancerIP = o.loadBalancerIP;
  if (o.loadBalancerSourceRanges) spec.loadBalancerSourceRanges = o.loadBalancerSourceRanges;
  if (o.externalTrafficPolicy) spec.externalTrafficPolicy = o.externalTrafficPolicy;
  if (o.internalTrafficPolicy) spec.internalTrafficPolicy = o.internalTrafficPolicy;
  if (o.sessionAffinity) spec.sessionAffinity = o.sessionAffinity;
  if (o.timeoutSeconds !== undefined) spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: o.timeoutSeconds } };
  if (o.trafficDistribution) spec.trafficDistribution = o.trafficDistribution;
  if (o.allocateLoadBalancerNodePorts !== undefined)
    spec.allocateLoadBalancerNodePorts = o.allocateLoadBalancerNodePorts;
  if (o.externalName) spec.externalName = o.externalName;
  if (o.healthCheckNodePort) spec.healthCheckNodePort = o.healthCheckNodePort;
  return parsed<Service>(
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: o.name ?? "web",
        namespace: o.namespace ?? "default",
        labels: o.labels ?? {},
        annotations: o.annotations ?? {},
      },
      spec,
      ...(o.ingress ? { status: { loadBalancer: { ingress: o.ingress } } } : {}),
    },
    "Service",
  );
}

export interface EpOpts {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  zone?: string;
  forZones?: string[];
  forNodes?: string[];
}

/** An endpoint: ready on node-b (remote) unless told otherwise. */
export function ep(address: string, o: EpOpts = {}): Raw {
  const ready = o.ready ?? !o.terminating;
  const e: Raw = {
    addresses: [address],
    conditions: { ready, serving: o.serving ?? ready, terminating: o.terminating ?? false },
    nodeName: o.node ?? "node-b",
  };
  if (o.zone) e.zone = o.zone;
  if (o.forZones || o.forNodes) {
    e.hints = {
      ...(o.forZones ? { forZones: o.forZones.map((name) => ({ name })) } : {}),
      ...(o.forNodes ? { forNodes: o.forNodes.map((name) => ({ name })) } : {}),
    };
  }
  return e;
}

export interface SliceOpts {
  name?: string;
  service?: string;
  namespace?: string;
  addressType?: string;
  ports?: Raw[];
  labels?: Record<string, string>;
}

/** A slice of default/web with port http 8080/TCP unless told otherwise. */
export function slice(endpoints: Raw[], o: SliceOpts = {}): EndpointSlice {
  const service = o.service ?? "web";
  return parsed<EndpointSlice>(
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        name: o.name ?? `${service}-abcde`,
        namespace: o.namespace ?? "default",
        labels: { "kubernetes.io/service-name": service, ...(o.labels ?? {}) },
      },
      addressType: o.addressType ?? "IPv4",
      ports: o.ports ?? [{ name: "http", port: 8080, protocol: "TCP" }],
      endpoints,
    },
    "EndpointSlice",
  );
}

/** Endpoints (v1) converted to slices, as the folder source does. */
export function endpointsSlices(name: string, subsets: Raw[], namespace = "default"): EndpointSlice[] {
  const r = validateObject({ apiVersion: "v1", kind: "Endpoints", metadata: { name, namespace }, subsets });
  assert.ok(r.ok && r.kind === "Endpoints", `fixture Endpoints must be valid: ${r.ok ? "" : r.reason}`);
  return endpointsToSlices(r.object);
}

export function node(name: string, o: { zone?: string; internal?: string[]; external?: string[] } = {}): Node {
  return parsed<Node>(
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name, labels: o.zone !== undefined ? { "topology.kubernetes.io/zone": o.zone } : {} },
      status: {
        addresses: [
          ...(o.internal ?? []).map((address) => ({ type: "InternalIP", address })),
          ...(o.external ?? []).map((address) => ({ type: "ExternalIP", address })),
          { type: "Hostname", address: name },
        ],
      },
    },
    "Node",
  );
}

/** "ClusterIP 10.96.0.10:80/TCP internal" */
export function frontendId(f: Frontend): string {
  return `${f.type} ${f.address}:${f.port}/${f.protocol} ${f.scope}`;
}

/** "10.244.1.5:8080", with " (T)" for terminating backends. */
export function backendIds(f: Frontend): string[] {
  return f.backends.map((b) => `${b.address}:${b.port}${b.state === "terminating" ? " (T)" : ""}`);
}

/** Frontend id → backend ids, in model order. */
export function summarize(m: NodeModel): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const f of m.frontends) {
    const id = frontendId(f);
    assert.ok(!(id in out), `frontend ${id} appears twice`);
    out[id] = backendIds(f);
  }
  return out;
}
