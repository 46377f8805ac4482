// bpfproxy.io/backend-weights: a Service's per-endpoint weights (docs/leastconn.md, "Weighted backends").
// EndpointSlice v1 has no weight, so the Service carries them, keyed by endpoint address: "10.0.0.5=3, 10.0.0.6=1".
// An endpoint the annotation does not name has weight 1; 0 takes no new flows (IPVS's quiescent real server).
// A value that does not parse is reported (daemon: log line and gauge) and the whole Service keeps weight 1:
// half-applied weights would be a distribution nobody asked for.
import { canonicalIP, isIPv4, isIPv6 } from "../k8s/ip.js";
import { ANNOTATION_BACKEND_WEIGHTS } from "../k8s/labels.js";
import type { Service } from "../k8s/schemas.js";

/** The largest weight: ratios up to 1000:1 are exact in the BPF slots (desired.ts) as long as they fit the bound. */
export const MAX_BACKEND_WEIGHT = 1000;

/** Endpoint address (canonical) → weight; or why the value was refused. */
export type ParsedWeights = { weights: Map<string, number> } | { error: string };

/** Parses an annotation value: comma- or space-separated ADDRESS=WEIGHT, each address once. */
export function parseBackendWeights(value: string): ParsedWeights {
  const weights = new Map<string, number>();
  const items = value.split(/[\s,]+/).filter((x) => x !== "");
  if (items.length === 0) return { error: "empty: expected ADDRESS=WEIGHT, ..." };
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) return { error: `${JSON.stringify(item)} is not ADDRESS=WEIGHT` };
    const address = item.slice(0, eq);
    const w = item.slice(eq + 1);
    if (!isIPv4(address) && !isIPv6(address)) return { error: `${JSON.stringify(address)} is not an IP address` };
    if (!/^[0-9]{1,4}$/.test(w) || Number(w) > MAX_BACKEND_WEIGHT)
      return { error: `weight ${JSON.stringify(w)} of ${address} is not an integer from 0 to ${MAX_BACKEND_WEIGHT}` };
    const key = canonicalIP(address);
    if (weights.has(key)) return { error: `${address} is given twice` };
    weights.set(key, Number(w));
  }
  return { weights };
}

/** The Service's weights, or undefined when it has none or they are invalid (every endpoint then weighs 1). */
export function backendWeightsOf(svc: Service): ReadonlyMap<string, number> | undefined {
  const v = svc.metadata.annotations[ANNOTATION_BACKEND_WEIGHTS];
  if (v === undefined) return undefined;
  const p = parseBackendWeights(v);
  return "weights" in p ? p.weights : undefined;
}

/** Why the Service's bpfproxy.io/backend-weights is refused ("value: reason"); undefined when absent or valid. */
export function invalidBackendWeights(svc: Service): string | undefined {
  const v = svc.metadata.annotations[ANNOTATION_BACKEND_WEIGHTS];
  if (v === undefined) return undefined;
  const p = parseBackendWeights(v);
  return "error" in p ? `${JSON.stringify(v)}: ${p.error}` : undefined;
}
