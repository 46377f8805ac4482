// The compact form the sources keep objects in (issue 18 item 1): one copy of each object, validated and slimmed.
//
// - Labels and annotations: only the keys bpfproxy reads (labels.ts) are kept; Helm's and kubectl's are dropped.
// - EndpointSlice endpoints: an IPv4 slice whose endpoints have one address each (what the EndpointSlice
//   controller writes) keeps them in one array of small integers and shared tuples — per endpoint the address
//   as an int32 and its (conditions, nodeName, zone, hints) tuple, shared by every endpoint with the same: 16
//   bytes an endpoint instead of five small objects and an address string (~400 bytes). `endpoints` decodes
//   them when read (the model reads each slice once per change). Other slices keep plain endpoint objects.
// - Strings repeated across objects (node names, zones, hints, label values every slice carries) and the
//   condition, hints and port-list objects are shared (frozen: nothing may change them through one object).
// - Object keys ("namespace/name") are flat strings, made once by the reflector and used by every map after it
//   (a template literal makes a rope of ~56 bytes, plus the flat copy a Map lookup makes of it).
import type { EndpointSlice, SliceEndpoint, SlicePort } from "./schemas.js";
import { KEPT_ANNOTATIONS, KEPT_LABELS, LABEL_SERVICE_NAME } from "./labels.js";

/** "namespace/name", or "name" without a namespace, as one flat string (join builds flat; `+` builds a rope). */
export function objectKeyOf(namespace: string | undefined, name: string): string {
  return namespace ? [namespace, name].join("/") : name;
}

/**
 * A bounded table of shared values by content. When full it starts over, which only costs sharing (objects keep
 * what they hold), so values that come and go over months do not accumulate.
 */
class SharedTable<T> {
  #m = new Map<string, T>();
  constructor(private readonly limit: number) {}
  get(key: string, make: () => T): T {
    let v = this.#m.get(key);
    if (v === undefined) {
      if (this.#m.size >= this.limit) this.#m = new Map();
      this.#m.set(key, (v = make()));
    }
    return v;
  }
}

const labelValues = new SharedTable<string>(10_000);

/** A copy of a label or annotation map with only the keys bpfproxy reads; one shared empty map otherwise. */
export function keptKeys(m: Record<string, string>, keys: readonly string[]): Record<string, string> {
  let out: Record<string, string> | undefined;
  for (const k of keys) {
    const v = m[k];
    if (v === undefined) continue;
    // Every slice carries endpointslice.kubernetes.io/managed-by (one value per cluster, 31 characters);
    // the Service name label is per Service, and annotations (a trigger time) mostly per object: not shared.
    (out ??= {})[k] = k === LABEL_SERVICE_NAME || keys === KEPT_ANNOTATIONS ? v : labelValues.get(v, () => v);
  }
  return out ?? EMPTY_MAP;
}
const EMPTY_MAP: Record<string, string> = Object.freeze({});
export const keptLabels = (m: Record<string, string>) => keptKeys(m, KEPT_LABELS);
export const keptAnnotations = (m: Record<string, string>) => keptKeys(m, KEPT_ANNOTATIONS);

const portLists = new SharedTable<readonly object[]>(10_000);

/**
 * One frozen copy of each port list by content (a Service's or a slice's): most Services of a cluster have the
 * same few (80 → 8080/TCP "http"), so 60k objects share a handful of lists instead of ~130 bytes each.
 */
export function sharedPorts<P extends object>(ports: P[]): P[] {
  if (ports.length === 0) return EMPTY_PORTS as P[];
  return portLists.get(JSON.stringify(ports), () => Object.freeze(ports.map((p) => Object.freeze(p)))) as P[];
}
const EMPTY_PORTS: readonly object[] = Object.freeze([]);

type Conditions = SliceEndpoint["conditions"];
/** The eight condition combinations, by bits ready 1, serving 2, terminating 4. */
const CONDITIONS: readonly Conditions[] = Array.from({ length: 8 }, (_, b) =>
  Object.freeze({ ready: (b & 1) !== 0, serving: (b & 2) !== 0, terminating: (b & 4) !== 0 }),
);
const conditionBits = (c: Conditions) => (c.ready ? 1 : 0) | (c.serving ? 2 : 0) | (c.terminating ? 4 : 0);

/** What endpoints share: where they run, the hints they carry and their conditions. */
export interface EndpointAttrs {
  readonly nodeName: string;
  readonly zone: string;
  readonly hints: SliceEndpoint["hints"];
  readonly conditions: Conditions;
}

/** Shared tuples by content (node names come and go: bounded). */
const attrsTable = new SharedTable<EndpointAttrs>(50_000);

function sharedAttrs(e: SliceEndpoint): EndpointAttrs {
  const bits = conditionBits(e.conditions);
  const { forZones, forNodes } = e.hints;
  const key = `${bits}\n${e.nodeName}\n${e.zone}\n${forZones.join(",")}\n${forNodes.join(",")}`;
  return attrsTable.get(key, () =>
    Object.freeze({
      nodeName: e.nodeName,
      zone: e.zone,
      hints: Object.freeze({
        forZones: Object.freeze([...forZones]) as string[],
        forNodes: Object.freeze([...forNodes]) as string[],
      }),
      conditions: CONDITIONS[bits]!,
    }),
  );
}

/** Dotted-quad IPv4 (already validated) → int32 (a small integer V8 stores unboxed). */
function ipv4ToI32(s: string): number {
  let n = 0;
  let part = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      n = (n << 8) | part;
      part = 0;
    } else part = part * 10 + (c - 48);
  }
  return (n << 8) | part;
}

export const i32ToIPv4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/**
 * An EndpointSlice whose endpoints are packed: one array of [address as int32, shared tuple] pairs, 16 bytes an
 * endpoint (a Uint32Array is 8, but costs ~240 bytes of its own per slice: more for the few endpoints most slices
 * have). Reads like any EndpointSlice.
 */
class PackedSlice implements EndpointSlice {
  readonly #packed: (number | EndpointAttrs)[];

  constructor(
    readonly metadata: EndpointSlice["metadata"],
    readonly addressType: EndpointSlice["addressType"],
    packed: (number | EndpointAttrs)[],
    readonly ports: SlicePort[],
  ) {
    this.#packed = packed;
  }

  /** Decoded on every read: new endpoint objects (the address array is the caller's), shared conditions and hints. */
  get endpoints(): SliceEndpoint[] {
    const p = this.#packed;
    const out = new Array<SliceEndpoint>(p.length >> 1);
    for (let i = 0; i < p.length; i += 2) {
      const a = p[i + 1] as EndpointAttrs;
      out[i >> 1] = {
        addresses: [i32ToIPv4(p[i] as number)],
        conditions: a.conditions,
        nodeName: a.nodeName,
        zone: a.zone,
        hints: a.hints,
      };
    }
    return out;
  }

  toJSON(): EndpointSlice {
    return { metadata: this.metadata, addressType: this.addressType, endpoints: this.endpoints, ports: this.ports };
  }

  /** The packed pairs themselves (address as int32, shared tuple): read, never changed. */
  get packed(): readonly (number | EndpointAttrs)[] {
    return this.#packed;
  }
}

/**
 * A packed slice's [address as int32, shared tuple] pairs, or undefined for any other slice: the model reads them
 * without decoding an endpoint object and an address string per endpoint (a full sync's largest garbage).
 */
export function packedEndpoints(s: EndpointSlice): readonly (number | EndpointAttrs)[] | undefined {
  return s instanceof PackedSlice ? s.packed : undefined;
}

/**
 * The compact form of a validated slice: packed when it is IPv4 with one address per endpoint, otherwise the same
 * slice with shared endpoint attributes.
 */
export function compactSlice(s: EndpointSlice): EndpointSlice {
  const eps = s.endpoints;
  if (s.addressType === "IPv4" && eps.length > 0 && eps.every((e) => e.addresses.length === 1)) {
    const packed = new Array<number | EndpointAttrs>(eps.length * 2);
    eps.forEach((e, i) => {
      packed[2 * i] = ipv4ToI32(e.addresses[0]!);
      packed[2 * i + 1] = sharedAttrs(e);
    });
    return new PackedSlice(s.metadata, s.addressType, packed, sharedPorts(s.ports));
  }
  return {
    ...s,
    ports: sharedPorts(s.ports),
    endpoints: eps.map((e) => {
      const a = sharedAttrs(e);
      return { addresses: e.addresses, conditions: a.conditions, nodeName: a.nodeName, zone: a.zone, hints: a.hints };
    }),
  };
}
