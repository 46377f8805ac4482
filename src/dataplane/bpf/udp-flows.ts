// UDP flows to endpoints that stopped serving, as kube-proxy handles them: its data plane is the
// kernel's conntrack, and it deletes the UDP entries of an endpoint that left a Service, because a
// UDP client that keeps sending would otherwise stay on that endpoint for as long as it sends. TCP
// flows are left to finish (their backend stays in bpx_backend until they are done). Pure: the
// caller reads the conntrack map and deletes what this returns.
import { IPPROTO_UDP, ctEntry, ctKey, svcKey, svcValue, type Codec } from "./abi.js";
import { isMasterKey, type Contents } from "./desired.js";

/**
 * "revNatId/backendId" of every backend slot (of one protocol's frontends when `proto` is given): the
 * backends each frontend serves new flows with.
 */
export function servingPairs(services: Contents, proto?: number): Set<string> {
  const pairs = new Set<string>();
  for (const [key, value] of services) {
    if (isMasterKey(key)) continue;
    if (proto !== undefined && key.charCodeAt(PROTO_OFFSET) !== proto) continue;
    const v = svcValue.decodeBin(value);
    pairs.add(`${v.revNatId}/${v.backendId}`);
  }
  return pairs;
}

const PROTO_OFFSET = svcKey.layout.find((m) => m.c === "proto")!.offset;

/** True when some pair of `before` is missing from `after`: only then can a UDP flow have gone stale. */
export function lostPairs(before: Set<string> | undefined, after: Set<string>): boolean {
  if (!before) return true; // first sync after start: flows may predate this daemon
  for (const p of before) if (!after.has(p)) return true;
  return false;
}

/**
 * Keys of the UDP conntrack entries (forward and reply) whose "revNatId/backendId" pair is stale (its
 * frontend no longer sends new flows to that backend). `keys`/`values` are the map's entries concatenated
 * (MapHandle.entries()); the codecs are bpx_ct_v3's unless given (bpx_ct6_v1's: ct6Key, ct6Entry; the pairs
 * are the same, both families sharing their id spaces).
 */
export function staleUdpFlowKeys(
  keys: Buffer,
  values: Buffer,
  count: number,
  stale: (pair: string) => boolean,
  codecs: { key: Codec<{ proto: number }>; entry: Codec<{ revNatId: number; backendId: number }> } = {
    key: ctKey,
    entry: ctEntry,
  },
): Buffer[] {
  const out: Buffer[] = [];
  const { key: keyCodec, entry: entryCodec } = codecs;
  for (let i = 0; i < count; i++) {
    const k = keys.subarray(i * keyCodec.size, (i + 1) * keyCodec.size);
    if (keyCodec.decode(k).proto !== IPPROTO_UDP) continue;
    const e = entryCodec.decode(values, i * entryCodec.size);
    if (stale(`${e.revNatId}/${e.backendId}`)) out.push(Buffer.from(k));
  }
  return out;
}
