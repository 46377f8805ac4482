// What the daemon reports per Service besides the model: health-check node ports, externalIPs the
// allow-list refuses, IPv6 parts not served, internalTrafficPolicy Local Services without a local
// endpoint. Kept per Service and brought up to date from the object index's change log and the model's
// delta, so a sync costs O(change) here too.
import { hasIPv6 } from "../k8s/family.js";
import {
  deniedExternalIPs,
  healthCheckOf,
  invalidAlgorithm,
  invalidForwardingMode,
  invalidBackendWeights,
  usableSlices,
  type NodeContext,
} from "../model/index.js";
import type { EndpointSlice } from "../k8s/schemas.js";
import type { NodeModel, ServiceHealthCheck } from "../model/types.js";
import type { ObjectIndex } from "../sources/object-index.js";
import { serviceGroups } from "../dataplane/bpf/desired.js";

interface Facts {
  check: ServiceHealthCheck | undefined;
  denied: string[];
  ipv6Service: boolean;
  ipv6Slices: number;
  /** internalTrafficPolicy Local and a ClusterIP frontend with no backend on this node. */
  internalLocalEmpty: boolean;
  /** bpfproxy.io/lb-algorithm with a value bpfproxy does not know (served with the default). */
  badAlgorithm: string | undefined;
  /** bpfproxy.io/forwarding-mode with a value bpfproxy does not know (forwarded as the node's lbMode says). */
  badForwardingMode: string | undefined;
  /** bpfproxy.io/backend-weights that does not parse ("value: reason"; served with weight 1 everywhere). */
  badWeights: string | undefined;
}

export class ServiceFacts {
  private version = -1;
  private context = "";
  private readonly byKey = new Map<string, Facts>();
  private checks: ServiceHealthCheck[] | undefined;
  private deniedList: string[] | undefined;
  ipv6Services = 0;
  ipv6Slices = 0;
  internalLocalEmpty = 0;
  private badAlgorithms: Map<string, string> | undefined;
  private badForwardingModes: Map<string, string> | undefined;
  private badWeightsList: Map<string, string> | undefined;
  /** Keys visited by the last update. */
  visited = 0;

  /**
   * Brings the facts up to date; returns the slices of the Services that changed since the last update
   * (every slice after a reset), whose trigger times the programming-latency metric reads.
   */
  update(
    index: ObjectIndex,
    model: NodeModel,
    ctx: NodeContext,
    allowedCIDRs: readonly string[] | undefined,
  ): EndpointSlice[] {
    const fp = JSON.stringify([ctx, allowedCIDRs ?? null]);
    let keys: Set<string> | undefined = fp === this.context ? index.changedSince(this.version) : undefined;
    const delta = model.delta;
    if (keys && delta && delta.from !== -1) for (const k of delta.services) keys.add(k);
    else if (keys) keys = undefined; // a model without a usable delta: its groups may all differ
    if (!keys) {
      keys = new Set([...index.serviceKeys(), ...this.byKey.keys()]);
      // Slices without a Service of their own (their key ends in "/") count for IPv6 too.
      for (const k of index.sliceServiceKeys()) keys.add(k);
    }
    this.context = fp;
    this.version = index.version;
    this.visited = keys.size;
    const groups = serviceGroups(model);
    const slices: EndpointSlice[] = [];
    for (const key of keys) {
      const old = this.byKey.get(key);
      if (old) this.count(old, -1);
      this.byKey.delete(key);
      const svc = index.service(key);
      const own = index.slices(key);
      for (const s of own) slices.push(s);
      const group = groups.get(key);
      const f: Facts = {
        check: svc && healthCheckOf(svc, usableSlices(own, key, ctx.proxyName), ctx),
        denied: svc ? deniedExternalIPs([svc], allowedCIDRs) : [],
        ipv6Service: svc !== undefined && hasIPv6(svc),
        ipv6Slices: own.filter((s) => s.addressType === "IPv6").length,
        internalLocalEmpty:
          svc?.spec.internalTrafficPolicy === "Local" &&
          group !== undefined &&
          Array.from({ length: group.size }, (_, i) => i).some(
            (i) => group.typeIndex(i) === 0 && group.backendCount(i) === 0, // 0: ClusterIP (FRONTEND_TYPES)
          ),
        badAlgorithm: svc && invalidAlgorithm(svc),
        badForwardingMode: svc && invalidForwardingMode(svc),
        badWeights: svc && invalidBackendWeights(svc),
      };
      if (
        f.check ||
        f.denied.length ||
        f.ipv6Service ||
        f.ipv6Slices ||
        f.internalLocalEmpty ||
        f.badAlgorithm ||
        f.badForwardingMode ||
        f.badWeights
      ) {
        this.byKey.set(key, f);
        this.count(f, 1);
      }
      if (old?.check || f.check) this.checks = undefined;
      if (old?.denied.length || f.denied.length) this.deniedList = undefined;
      if (old?.badAlgorithm !== undefined || f.badAlgorithm !== undefined) this.badAlgorithms = undefined;
      if (old?.badForwardingMode !== undefined || f.badForwardingMode !== undefined)
        this.badForwardingModes = undefined;
      if (old?.badWeights !== undefined || f.badWeights !== undefined) this.badWeightsList = undefined;
    }
    return slices;
  }

  private count(f: Facts, d: 1 | -1): void {
    if (f.ipv6Service) this.ipv6Services += d;
    this.ipv6Slices += d * f.ipv6Slices;
    if (f.internalLocalEmpty) this.internalLocalEmpty += d;
  }

  /** Health checks, sorted by Service. */
  healthChecks(): ServiceHealthCheck[] {
    if (!this.checks) {
      const out: ServiceHealthCheck[] = [];
      for (const f of this.byKey.values()) if (f.check) out.push(f.check);
      this.checks = out.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
    }
    return this.checks;
  }

  /** Services whose bpfproxy.io/lb-algorithm is not a known value: "namespace/name" → the value. */
  invalidAlgorithms(): Map<string, string> {
    if (!this.badAlgorithms) {
      const out = new Map<string, string>();
      for (const [key, f] of this.byKey) if (f.badAlgorithm !== undefined) out.set(key, f.badAlgorithm);
      this.badAlgorithms = out;
    }
    return this.badAlgorithms;
  }

  /** Services whose bpfproxy.io/backend-weights does not parse: "namespace/name" → "value: reason". */
  invalidBackendWeights(): Map<string, string> {
    if (!this.badWeightsList) {
      const out = new Map<string, string>();
      for (const [key, f] of this.byKey) if (f.badWeights !== undefined) out.set(key, f.badWeights);
      this.badWeightsList = out;
    }
    return this.badWeightsList;
  }

  /** Services whose bpfproxy.io/forwarding-mode is not a known value: "namespace/name" → the value. */
  invalidForwardingModes(): Map<string, string> {
    if (!this.badForwardingModes) {
      const out = new Map<string, string>();
      for (const [key, f] of this.byKey) if (f.badForwardingMode !== undefined) out.set(key, f.badForwardingMode);
      this.badForwardingModes = out;
    }
    return this.badForwardingModes;
  }

  /** Refused externalIPs as "namespace/name ip". */
  denied(): string[] {
    if (!this.deniedList) {
      const out: string[] = [];
      for (const f of this.byKey.values()) for (const d of f.denied) out.push(d);
      this.deniedList = out;
    }
    return this.deniedList;
  }
}
