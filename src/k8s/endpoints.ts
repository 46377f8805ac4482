// Endpoints (v1) → EndpointSlice form, for selector-less Services whose endpoints are written by hand in the
// manifest folder. This mirrors what the EndpointSlice mirroring controller does in a cluster: one slice per
// subset and address family, ready addresses with ready=serving=true, notReadyAddresses with
// ready=serving=false (never terminating: Endpoints cannot express it), and the Service name label.

import { isIPv4 } from "./ip.js";
import { LABEL_SERVICE_NAME } from "./labels.js";
import type { EndpointSlice, Endpoints, SliceEndpoint } from "./schemas.js";
import { compactSlice } from "./packed.js";

export function endpointsToSlices(ep: Endpoints): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  ep.subsets.forEach((subset, i) => {
    for (const family of ["IPv4", "IPv6"] as const) {
      const endpoints: SliceEndpoint[] = [];
      const add = (a: { ip: string; nodeName?: string | null | undefined }, ready: boolean): void => {
        if (isIPv4(a.ip) !== (family === "IPv4")) return;
        endpoints.push({
          addresses: [a.ip],
          conditions: { ready, serving: ready, terminating: false },
          nodeName: a.nodeName ?? "",
          zone: "",
          hints: { forZones: [], forNodes: [] },
        });
      };
      for (const a of subset.addresses) add(a, true);
      for (const a of subset.notReadyAddresses) add(a, false);
      if (endpoints.length === 0) continue;
      out.push(
        compactSlice({
          metadata: {
            name: `${ep.metadata.name}-endpoints-${i}${family === "IPv6" ? "-v6" : ""}`,
            namespace: ep.metadata.namespace,
            labels: { ...ep.metadata.labels, [LABEL_SERVICE_NAME]: ep.metadata.name },
            annotations: ep.metadata.annotations,
          },
          addressType: family,
          endpoints,
          ports: subset.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.port })),
        }),
      );
    }
  });
  return out;
}
