// IPv6 frontends into the IPv6 load-balancer maps (bpf/lib/lb6.h): bpx_svc6_v1 (master + one slot per
// backend, as bpx_svc_v2) and bpx_backend6_v1 (the same backend id space as bpx_backend_v2). Only the
// frontend kinds of IPV6_SERVED_TYPES are taken (docs/ipv6.md). The reconciler (desired.ts) allocates the
// ids from the one id space both families share and writes the entries; writeLb6/deleteLb6 are for tests.
import type { MapHandle } from "../../native/index.js";
import type { Frontend, FrontendExtras, FrontendType } from "../../model/types.js";
import {
  BACKEND_F_NODE_LOCAL,
  BACKEND_F_TERMINATING,
  IPPROTO_TCP,
  IPPROTO_UDP,
  SCOPE_EXTERNAL,
  SCOPE_INTERNAL,
  SVC_F_DROP_WHEN_EMPTY,
  SVC_F_MASQUERADE,
  SVC_F_MASQ_OUTSIDE,
  SVC_F_SOURCE_RANGES,
  backend6,
  svc6Key,
  svcValue,
  u32Key,
} from "./abi.js";
import { isIPv6 } from "node:net";

/** Ids of one frontend: its own (counters, conntrack) and one per backend, parallel to `fe.backends`. */
export interface Frontend6Ids {
  revNatId: number;
  backendIds: readonly number[];
}

/** Map contents as key bytes -> value bytes, each a latin1 string (as desired.ts Contents). */
export interface Lb6Contents {
  services: Map<string, string>;
  backends: Map<string, string>;
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP };

/**
 * The frontend kinds the IPv6 data path serves; the daemon skips (and warns about) the others. A NodePort
 * frontend is keyed by its own (node IPv6) address, not by IPv4's wildcard entry; NodePort, LoadBalancer and
 * externalIP frontends are masqueraded unless their external traffic policy is Local (as desired.ts masterFlags
 * for IPv4).
 */
export const IPV6_SERVED_TYPES: readonly FrontendType[] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalIP"];

/** The entries of one IPv6 frontend; throws for anything the IPv6 path cannot serve. */
export function encodeFrontend6(
  fe: Frontend,
  ids: Frontend6Ids,
  extras?: Partial<Pick<FrontendExtras, "dropWhenEmpty" | "externalPolicyLocal" | "sourceRanges">>,
): Lb6Contents {
  if (!isIPv6(fe.address)) throw new Error(`not an IPv6 frontend: ${fe.address}`);
  if (!IPV6_SERVED_TYPES.includes(fe.type))
    throw new Error(`the IPv6 data path serves ${IPV6_SERVED_TYPES.join(", ")}, not ${fe.type}`);
  const proto = PROTO[fe.protocol];
  if (proto === undefined) throw new Error(`the IPv6 data path serves TCP and UDP, not ${fe.protocol}`);
  if (ids.backendIds.length !== fe.backends.length)
    throw new Error(`${fe.backends.length} backends but ${ids.backendIds.length} backend ids`);
  if (fe.backends.length > 0xffff) throw new Error(`too many backends for one frontend: ${fe.backends.length}`);
  const scope = fe.scope === "internal" ? SCOPE_INTERNAL : SCOPE_EXTERNAL;
  const key = { address: fe.address, port: fe.port, proto, scope, slot: 0 };
  const out: Lb6Contents = { services: new Map(), backends: new Map() };
  out.services.set(
    svc6Key.encodeBin(key),
    svcValue.encodeBin({
      backendId: 0,
      revNatId: ids.revNatId,
      count: fe.backends.length,
      flags:
        (fe.backends.length === 0 && extras?.dropWhenEmpty ? SVC_F_DROP_WHEN_EMPTY : 0) |
        // kube-proxy's masquerade rules (desired.ts masterFlags): ClusterIP from outside the cluster;
        // NodePort/LB/externalIP with the Cluster policy (the reply must come back through this node).
        (fe.type === "ClusterIP" ? SVC_F_MASQ_OUTSIDE : extras?.externalPolicyLocal ? 0 : SVC_F_MASQUERADE) |
        // loadBalancerSourceRanges: the ranges themselves go to bpx_srcrange6_v1 (srcrange6.ts).
        ((extras?.sourceRanges?.length ?? 0) > 0 ? SVC_F_SOURCE_RANGES : 0),
      affinityTimeout: 0,
    }),
  );
  fe.backends.forEach((b, i) => {
    if (!isIPv6(b.address)) throw new Error(`not an IPv6 backend: ${b.address}`);
    const backendId = ids.backendIds[i]!;
    out.services.set(
      svc6Key.encodeBin({ ...key, slot: i + 1 }),
      svcValue.encodeBin({ backendId, revNatId: ids.revNatId, count: 0, flags: 0, affinityTimeout: 0 }),
    );
    out.backends.set(
      u32Key.encodeBin(backendId),
      backend6.encodeBin({
        address: b.address,
        port: b.port,
        proto,
        flags: (b.state === "terminating" ? BACKEND_F_TERMINATING : 0) | (b.nodeLocal ? BACKEND_F_NODE_LOCAL : 0),
      }),
    );
  });
  return out;
}

/** Writes the entries: backends first, so no slot ever names a missing backend. */
export function writeLb6(maps: { services6: MapHandle; backends6: MapHandle }, c: Lb6Contents): void {
  for (const [k, v] of c.backends) maps.backends6.update(Buffer.from(k, "latin1"), Buffer.from(v, "latin1"));
  for (const [k, v] of c.services) maps.services6.update(Buffer.from(k, "latin1"), Buffer.from(v, "latin1"));
}

/** Removes the entries: frontends first, then their backends. */
export function deleteLb6(maps: { services6: MapHandle; backends6: MapHandle }, c: Lb6Contents): void {
  for (const k of c.services.keys()) maps.services6.delete(Buffer.from(k, "latin1"));
  for (const k of c.backends.keys()) maps.backends6.delete(Buffer.from(k, "latin1"));
}
