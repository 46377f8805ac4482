// IPv6 frontends into the IPv6 load-balancer maps (bpf/lib/lb6.h): bpx_svc6_v1 (master + one slot per
// backend, as bpx_svc_v2) and bpx_backend6_v1 (the same backend id space as bpx_backend_v2), and, as IPv4's
// (desired.ts), a Maglev frontend's table in bpx_maglev_v1 and a ClientIP frontend's backends in
// bpx_affinity_match_v1: both are keyed by ids, which the families share. Every frontend kind is served
// (docs/ipv6.md). The reconciler (desired.ts) allocates the ids from the one id space both families share and
// writes the entries; writeLb6/deleteLb6 are for tests.
import type { MapHandle } from "../../native/index.js";
import type { Frontend, FrontendExtras } from "../../model/types.js";
import {
  BACKEND_F_NODE_LOCAL,
  BACKEND_F_TERMINATING,
  IPPROTO_TCP,
  IPPROTO_UDP,
  SCOPE_EXTERNAL,
  SCOPE_INTERNAL,
  SVC_F_AFFINITY,
  SVC_F_DROP_WHEN_EMPTY,
  SVC_F_MAGLEV,
  SVC_F_MASQUERADE,
  SVC_F_MASQ_OUTSIDE,
  SVC_F_SOURCE_RANGES,
  affinityMatchKey,
  backend6,
  maglevKey,
  maglevTable as maglevCodec,
  svc6Key,
  svcValue,
  u32Key,
  u8Value,
} from "./abi.js";
import { maglevName, maglevTable } from "./maglev.js";
import { slotRuns } from "./slots.js";
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
  /** bpx_maglev_v1: the frontend's table, when it uses Maglev and has backends. */
  maglev: Map<string, string>;
  /** bpx_affinity_match_v1: (backend, frontend, scope) for each backend of a ClientIP frontend. */
  affinityMatch: Map<string, string>;
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP };

/** The entries of one IPv6 frontend; throws for anything the IPv6 path cannot serve. */
export function encodeFrontend6(
  fe: Frontend,
  ids: Frontend6Ids,
  extras?: Partial<Pick<FrontendExtras, "dropWhenEmpty" | "externalPolicyLocal" | "sourceRanges">>,
): Lb6Contents {
  if (!isIPv6(fe.address)) throw new Error(`not an IPv6 frontend: ${fe.address}`);
  const proto = PROTO[fe.protocol];
  if (proto === undefined) throw new Error(`the IPv6 data path serves TCP and UDP, not ${fe.protocol}`);
  if (ids.backendIds.length !== fe.backends.length)
    throw new Error(`${fe.backends.length} backends but ${ids.backendIds.length} backend ids`);
  if (fe.backends.length > 0xffff) throw new Error(`too many backends for one frontend: ${fe.backends.length}`);
  const scope = fe.scope === "internal" ? SCOPE_INTERNAL : SCOPE_EXTERNAL;
  const key = { address: fe.address, port: fe.port, proto, scope, slot: 0 };
  const out: Lb6Contents = { services: new Map(), backends: new Map(), maglev: new Map(), affinityMatch: new Map() };
  const affinity = fe.sessionAffinity.type === "ClientIP";
  // bpfproxy.io/backend-weights: runs of slots, as IPv4's (slots.ts); undefined: one slot per backend.
  const runs = fe.backends.some((b) => b.weight !== undefined)
    ? slotRuns(fe.backends.map((b) => b.weight ?? 1))
    : undefined;
  const count = runs ? runs.reduce((a, b) => a + b, 0) : fe.backends.length;
  // A frontend without backends rejects: it needs no table (desired.ts).
  const maglev = fe.algorithm === "maglev" && count > 0;
  out.services.set(
    svc6Key.encodeBin(key),
    svcValue.encodeBin({
      backendId: 0,
      revNatId: ids.revNatId,
      count,
      flags:
        (fe.backends.length === 0 && extras?.dropWhenEmpty ? SVC_F_DROP_WHEN_EMPTY : 0) |
        // kube-proxy's masquerade rules (desired.ts masterFlags): ClusterIP from outside the cluster;
        // NodePort/LB/externalIP with the Cluster policy (the reply must come back through this node).
        (fe.type === "ClusterIP" ? SVC_F_MASQ_OUTSIDE : extras?.externalPolicyLocal ? 0 : SVC_F_MASQUERADE) |
        // loadBalancerSourceRanges: the ranges themselves go to bpx_srcrange6_v1 (srcrange6.ts).
        ((extras?.sourceRanges?.length ?? 0) > 0 ? SVC_F_SOURCE_RANGES : 0) |
        (affinity ? SVC_F_AFFINITY : 0) |
        (maglev ? SVC_F_MAGLEV : 0),
      affinityTimeout: fe.sessionAffinity.type === "ClientIP" ? fe.sessionAffinity.timeoutSeconds : 0,
    }),
  );
  let at = 0;
  fe.backends.forEach((b, i) => {
    if (!isIPv6(b.address)) throw new Error(`not an IPv6 backend: ${b.address}`);
    const backendId = ids.backendIds[i]!;
    if (!runs)
      out.services.set(
        svc6Key.encodeBin({ ...key, slot: i + 1 }),
        svcValue.encodeBin({ backendId, revNatId: ids.revNatId, count: 0, flags: 0, affinityTimeout: 0 }),
      );
    else {
      const run = svcValue.encodeBin({ backendId, revNatId: ids.revNatId, count: runs[i]!, flags: 0, affinityTimeout: at });
      for (let k = 0; k < runs[i]!; k++) out.services.set(svc6Key.encodeBin({ ...key, slot: ++at }), run);
    }
    out.backends.set(
      u32Key.encodeBin(backendId),
      backend6.encodeBin({
        address: b.address,
        port: b.port,
        proto,
        flags: (b.state === "terminating" ? BACKEND_F_TERMINATING : 0) | (b.nodeLocal ? BACKEND_F_NODE_LOCAL : 0),
      }),
    );
    // The backends an affinity entry may name: the model lists a terminating one only when no ready one is left.
    if (affinity) out.affinityMatch.set(affinityMatchKey.encodeBin({ backendId, revNatId: ids.revNatId, scope }), one);
  });
  if (maglev) {
    const table = maglevTable(
      fe.backends.map((b) => maglevName(b.address, b.port)),
      undefined,
      runs,
    );
    out.maglev.set(
      maglevKey.encodeBin({ revNatId: ids.revNatId, scope }),
      maglevCodec.encode(Uint32Array.from(table, (i) => ids.backendIds[i]!)).toString("latin1"),
    );
  }
  return out;
}

const one = u8Value.encodeBin(1);

/** The maps writeLb6/deleteLb6 use; `maglev` and `affinityMatch` only when the contents have such entries. */
export interface Lb6Maps {
  services6: MapHandle;
  backends6: MapHandle;
  maglev?: MapHandle;
  affinityMatch?: MapHandle;
}

function extraMap(maps: Lb6Maps, c: Lb6Contents, m: "maglev" | "affinityMatch"): MapHandle | undefined {
  if (c[m].size > 0 && !maps[m]) throw new Error(`contents with ${m} entries need the ${m} map`);
  return maps[m];
}

/** Writes the entries: backends first, so no slot, table or affinity member ever names a missing backend. */
export function writeLb6(maps: Lb6Maps, c: Lb6Contents): void {
  const put = (m: MapHandle | undefined, e: Map<string, string>) => {
    for (const [k, v] of e) m!.update(Buffer.from(k, "latin1"), Buffer.from(v, "latin1"));
  };
  put(maps.backends6, c.backends);
  put(extraMap(maps, c, "affinityMatch"), c.affinityMatch);
  put(extraMap(maps, c, "maglev"), c.maglev);
  put(maps.services6, c.services);
}

/** Removes the entries: frontends first, then their tables and affinity members, then their backends. */
export function deleteLb6(maps: Lb6Maps, c: Lb6Contents): void {
  const del = (m: MapHandle | undefined, e: Map<string, string>) => {
    for (const k of e.keys()) m!.delete(Buffer.from(k, "latin1"));
  };
  del(maps.services6, c.services);
  del(extraMap(maps, c, "maglev"), c.maglev);
  del(extraMap(maps, c, "affinityMatch"), c.affinityMatch);
  del(maps.backends6, c.backends);
}
