// Property-based fuzzing of the object path every source uses (validateObject → reportResult → the
// model → the desired map contents), with fast-check. Objects come from two generators: one derived from
// the zod schemas themselves (their JSON Schema, with field-aware strings so that a good share passes),
// and one that mutates valid objects (a field deleted, nulled, retyped or replaced by anything). Over
// 10 000 objects per run: nothing throws, no promise is left rejected, every rejected object is logged
// with its name, and a well-formed Service next to them is programmed exactly as without them, except that
// a fuzzed Service claiming its address, port and protocol wins it only when its key sorts first (reported as
// a conflict). A third generator aims at that Service (its name, its slice's name and label, its cluster IP
// and port, from another namespace), so collisions happen in every run. Validity is counted per kind and per
// generator, never counting an object equal to a fixture.
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import assert from "node:assert/strict";
import fc from "fast-check";
import { z } from "zod";
import { endpointSliceSchema, nodeSchema, serviceSchema } from "../src/k8s/schemas.js";
import { objectKey, reportResult, validateObject, type ValidObject } from "../src/k8s/validate.js";
import { endpointsToSlices } from "../src/k8s/endpoints.js";
import { buildNodeModel } from "../src/model/index.js";
import type { Frontend } from "../src/model/types.js";
import { desiredContents, newIds } from "../src/dataplane/bpf/desired.js";
import { log } from "../src/log.js";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  enum?: Json[];
  minimum?: number;
  maximum?: number;
  minItems?: number;
};

// Strings shaped like what the field holds, plus near misses and junk, so that generated objects reach past
// the first check while still probing it.
const dnsLabel = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/);
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
const nearIp = fc.oneof(
  ipv4.map((s) => s + ".1"),
  ipv4.map((s) => s.replace(/^(\d+)/, "0$1")),
  fc.constant("256.1.1.1"),
  fc.constant("::ffff:10.0.0.1"),
  fc.constant("1.2.3"),
  fc.constant(" 10.0.0.1"),
);
const ipish = fc.oneof(
  { weight: 4, arbitrary: ipv4 },
  { weight: 1, arbitrary: fc.ipV6() },
  { weight: 1, arbitrary: nearIp },
  { weight: 1, arbitrary: fc.string() },
);
const cidrish = fc.oneof(
  fc.tuple(ipv4, fc.integer({ min: 0, max: 40 })).map(([a, b]) => `${a}/${b}`),
  fc.constant("fd00::/56"),
  fc.string(),
);
const timeish = fc.oneof(
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.string(),
);
const junk = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme", maxLength: 300 }),
  fc.constant(""),
  fc.constant("None"),
);

function stringFor(field: string, tame: boolean): fc.Arbitrary<string> {
  const f = field.toLowerCase();
  if (tame) {
    // Well-formed values only, so that a derived object with many fields still passes now and then.
    if (f.includes("ip") || f === "address" || f === "addresses") return ipv4;
    if (f.includes("ranges") || f.includes("cidr")) return ipv4.map((a) => `${a}/32`);
    if (f.includes("timestamp") || f.includes("time"))
      return fc.date({ noInvalidDate: true }).map((d) => d.toISOString());
    return dnsLabel;
  }
  if (f === "name" || f === "namespace" || f === "nodename" || f === "hostname" || f === "zone") {
    return fc.oneof({ weight: 6, arbitrary: dnsLabel }, { weight: 1, arbitrary: junk });
  }
  if (f.includes("ip") || f === "address" || f === "addresses") return ipish;
  if (f.includes("ranges") || f.includes("cidr")) return cidrish;
  if (f.includes("timestamp") || f.includes("time")) return timeish;
  return fc.oneof({ weight: 3, arbitrary: dnsLabel }, { weight: 1, arbitrary: junk });
}

/** fast-check arbitrary for a JSON Schema produced by z.toJSONSchema (the subset it emits). */
/** `tame`: in-range values and no dropped required field (the wild half probes validation, this half the model). */
function fromJsonSchema(s: JsonSchema, field = "", depth = 0, tame = false): fc.Arbitrary<Json> {
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => fromJsonSchema(x, field, depth, tame)));
  if (s.enum) {
    if (tame) return fc.constantFrom(...s.enum);
    return fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...s.enum) }, { weight: 1, arbitrary: junk });
  }
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (types.length > 1) return fc.oneof(...types.map((t) => fromJsonSchema({ ...s, type: t }, field, depth, tame)));
  switch (types[0]) {
    case "object": {
      if (s.properties) {
        const req = new Set(s.required ?? []);
        const entries = Object.entries(s.properties).map(
          ([k, v]) => [k, fromJsonSchema(v, k, depth + 1, tame)] as const,
        );
        // Required fields nearly always there; optional ones about half the time.
        return fc
          .record(Object.fromEntries(entries), { requiredKeys: [...req].filter(() => true) })
          .chain((o) =>
            fc.boolean().map((dropReq) => {
              if (tame || !dropReq || req.size === 0) return o;
              const copy = { ...(o as Record<string, Json>) };
              delete copy[[...req][0]!];
              return copy;
            }),
          )
          .map((x) => x);
      }
      return fc.dictionary(fc.oneof(dnsLabel, fc.string()), fc.string(), { maxKeys: 3 });
    }
    case "array":
      return fc.array(fromJsonSchema(s.items ?? {}, field, depth + 1, tame), {
        minLength: 0,
        maxLength: depth > 3 ? 2 : 4,
      });
    case "string":
      return stringFor(field, tame);
    case "integer":
    case "number": {
      const inRange = fc.integer({ min: s.minimum ?? (tame ? 1 : -10), max: s.maximum ?? (tame ? 65535 : 100_000) });
      if (tame) return inRange;
      return fc.oneof(
        { weight: 6, arbitrary: inRange },
        { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.constant(-1), fc.constant(65536)) },
      );
    }
    case "boolean":
      return fc.boolean();
    case "null":
      return fc.constant(null);
    default:
      return fc.jsonValue() as fc.Arbitrary<Json>;
  }
}

type Gen = "derived" | "mutated" | "colliding";

const SCHEMAS = { Service: serviceSchema, EndpointSlice: endpointSliceSchema, Node: nodeSchema } as const;
type Kind = keyof typeof SCHEMAS;
const API_VERSION: Record<Kind, string> = { Service: "v1", EndpointSlice: "discovery.k8s.io/v1", Node: "v1" };

function derived(kind: Kind): fc.Arbitrary<Json> {
  const js = z.toJSONSchema(SCHEMAS[kind], { io: "input", unrepresentable: "any" }) as JsonSchema;
  return fc
    .oneof({ weight: 1, arbitrary: fromJsonSchema(js) }, { weight: 3, arbitrary: fromJsonSchema(js, "", 0, true) })
    .map((o) => (o && typeof o === "object" && !Array.isArray(o) ? { ...o, apiVersion: API_VERSION[kind], kind } : o));
}

// Valid objects to mutate: what kubectl and the controllers write.
const VALID: Record<Kind, Json> = {
  Service: {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "m", namespace: "fuzz", labels: { app: "m" } },
    spec: {
      type: "LoadBalancer",
      clusterIP: "10.96.1.1",
      clusterIPs: ["10.96.1.1", "fd00:10:96::1"],
      ipFamilies: ["IPv4", "IPv6"],
      externalIPs: ["198.51.100.1"],
      externalTrafficPolicy: "Local",
      healthCheckNodePort: 31000,
      sessionAffinity: "ClientIP",
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
      loadBalancerSourceRanges: ["203.0.113.0/24"],
      ports: [
        { name: "http", port: 80, targetPort: "http", nodePort: 30080, protocol: "TCP" },
        { name: "dns", port: 53, targetPort: 5353, protocol: "UDP" },
      ],
    },
    status: { loadBalancer: { ingress: [{ ip: "203.0.113.9" }] } },
  },
  EndpointSlice: {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: {
      name: "m-1",
      namespace: "fuzz",
      labels: { "kubernetes.io/service-name": "m" },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": "2025-01-01T00:00:00Z" },
    },
    ports: [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "dns", port: 5353, protocol: "UDP" },
    ],
    endpoints: [
      {
        addresses: ["10.244.1.5"],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: "node-a",
        zone: "z1",
        hints: { forZones: [{ name: "z1" }] },
      },
      { addresses: ["10.244.2.5"], conditions: { ready: false, serving: true, terminating: true }, nodeName: "node-b" },
    ],
  },
  Node: {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-a", labels: { "topology.kubernetes.io/zone": "z1" } },
    spec: { taints: [{ key: "ToBeDeletedByClusterAutoscaler", effect: "NoSchedule" }] },
    status: {
      addresses: [
        { type: "InternalIP", address: "192.0.2.11" },
        { type: "Hostname", address: "node-a" },
      ],
    },
  },
};

function paths(v: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

function setAt(root: Json, path: (string | number)[], f: (old: Json) => Json | undefined): Json {
  if (path.length === 0) return f(root) ?? null;
  const copy = structuredClone(root) as Record<string | number, Json>;
  let cur = copy;
  for (const p of path.slice(0, -1)) cur = cur[p] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  const next = f(cur[last]!);
  if (next === undefined) {
    if (Array.isArray(cur)) (cur as Json[]).splice(Number(last), 1);
    else delete cur[last];
  } else cur[last] = next;
  return copy;
}

function mutated(kind: Kind): fc.Arbitrary<Json> {
  const base = VALID[kind];
  const all = paths(base).filter((p) => p.length > 0 && p[0] !== "kind" && p[0] !== "apiVersion");
  const replacement = fc.oneof(
    fc.constant<Json | undefined>(undefined),
    fc.constant(null),
    fc.constant(""),
    fc.constant(0),
    fc.constant(-1),
    fc.constant(70000),
    fc.constant<Json>([]),
    fc.constant<Json>({}),
    fc.constant("a".repeat(300)),
    fc.jsonValue() as fc.Arbitrary<Json>,
    ipish,
    fc.string(),
  );
  const one = fc.tuple(fc.constantFrom(...all), replacement);
  return fc.array(one, { minLength: 1, maxLength: 3 }).map((ms) => {
    let o = base;
    for (const [p, r] of ms) {
      try {
        o = setAt(o, p, () => r);
      } catch {
        /* the path vanished under an earlier mutation */
      }
    }
    return o;
  });
}

// Objects aimed at the good Service (below): mutated Services and slices from another namespace that take
// its name, its slice's name and service-name label, and its cluster IP and port. A namesake elsewhere must
// change nothing; a Service claiming the same address, port and protocol is a conflict, which the model
// settles for the first Service key (kube-proxy's order) and reports.
function colliding(kind: "Service" | "EndpointSlice"): fc.Arbitrary<Json> {
  return fc.tuple(mutated(kind), fc.boolean(), fc.boolean()).map(([o, sameIP, samePort]) => {
    if (!o || typeof o !== "object" || Array.isArray(o)) return o;
    const c = structuredClone(o) as Record<string, Json>;
    const meta = (
      c.metadata && typeof c.metadata === "object" && !Array.isArray(c.metadata) ? c.metadata : {}
    ) as Record<string, Json>;
    c.metadata = meta;
    if (kind === "Service") {
      meta.name = "good";
      const spec = (c.spec && typeof c.spec === "object" && !Array.isArray(c.spec) ? c.spec : {}) as Record<
        string,
        Json
      >;
      c.spec = spec;
      if (sameIP) {
        spec.clusterIP = GOOD_IP;
        spec.clusterIPs = [GOOD_IP];
      }
      if (samePort && Array.isArray(spec.ports) && spec.ports[0] && typeof spec.ports[0] === "object")
        Object.assign(spec.ports[0], { port: 80, protocol: "TCP" });
    } else {
      meta.name = "good-1";
      meta.labels = { "kubernetes.io/service-name": "good" };
    }
    return c;
  });
}

const GOOD_IP = "10.255.254.253";

// The well-formed Service that must come out the same whatever arrives next to it, unless a fuzzed Service
// wins its address by conflict. Its namespace is kept out of the fuzzed objects, whose own changes to it
// would be legitimate.
const GOOD = {
  service: {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "good", namespace: "good-ns" },
    spec: { clusterIP: GOOD_IP, ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }] },
  },
  slice: {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: { name: "good-1", namespace: "good-ns", labels: { "kubernetes.io/service-name": "good" } },
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: [
      { addresses: ["10.254.1.5"], conditions: { ready: true }, nodeName: "node-a" },
      { addresses: ["10.254.1.6"], conditions: { ready: true }, nodeName: "node-a" },
    ],
  },
};
const outsideGood = (o: Json) =>
  !(
    o &&
    typeof o === "object" &&
    !Array.isArray(o) &&
    (o.metadata as Record<string, Json> | undefined)?.namespace === "good-ns"
  );

function buildAll(valid: ValidObject[], onConflict?: (kept: Frontend, dropped: Frontend) => void) {
  const services = valid.flatMap((v) => (v.kind === "Service" ? [v.object] : []));
  const endpointSlices = valid.flatMap((v) =>
    v.kind === "EndpointSlice" ? [v.object] : v.kind === "Endpoints" ? endpointsToSlices(v.object) : [],
  );
  const nodes = valid.flatMap((v) => (v.kind === "Node" ? [v.object] : []));
  const model = buildNodeModel({
    services,
    endpointSlices,
    nodes,
    nodeName: "node-a",
    config: { nodeName: "node-a", clusterCIDRs: ["10.244.0.0/16"] },
    onConflict,
  });
  desiredContents(model, newIds());
  return model;
}

const goodFrontends = (m: ReturnType<typeof buildNodeModel>) => m.frontends.filter((f) => f.service === "good-ns/good");

test(
  "fuzzed Services, EndpointSlices and Nodes (10 000+ objects): no crash, every rejection logged by name, good objects unaffected",
  { timeout: 120_000 },
  async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (r: unknown) => unhandled.push(r);
    process.on("unhandledRejection", onUnhandled);
    const goodValid = [validateObject(GOOD.service), validateObject(GOOD.slice)].map<ValidObject>((r) => {
      assert.ok(r.ok);
      return r;
    });
    const baseline = goodFrontends(buildAll(goodValid));
    assert.equal(baseline.length, 1);
    assert.equal(baseline[0]!.backends.length, 2);

    const warned: string[] = [];
    const origWarn = log.warn.bind(log);
    log.warn = (msg, fields) => {
      if (msg === "skipping invalid object") warned.push(String(fields?.object));
    };
    // Counted per kind and per generator; an object equal to a fixture (a mutation that changed nothing) is
    // counted apart, so the fixtures never make a generator look productive.
    const stats = {
      objects: 0,
      valid: 0,
      rejected: 0,
      ignored: 0,
      fixtures: 0,
      byKind: {} as Record<string, { valid: number; rejected: number }>,
      byGen: {} as Record<string, { valid: number; rejected: number }>,
      goodLostByConflict: 0,
      namesakes: 0,
    };
    const started = Date.now();
    try {
      const tag = (gen: Gen, a: fc.Arbitrary<Json>) => a.map((o) => ({ gen, o }));
      const objectArb = fc
        .oneof(
          ...(Object.keys(SCHEMAS) as Kind[]).flatMap((k) => [tag("derived", derived(k)), tag("mutated", mutated(k))]),
          tag("colliding", colliding("Service")),
          tag("colliding", colliding("EndpointSlice")),
        )
        .filter((x) => outsideGood(x.o));
      fc.assert(
        fc.property(fc.array(objectArb, { minLength: 100, maxLength: 100 }), (batch) => {
          warned.length = 0;
          const valid: ValidObject[] = [...goodValid];
          const rejectedKeys: string[] = [];
          for (const { gen, o: raw } of batch) {
            stats.objects++;
            const r = validateObject(raw);
            const kind =
              typeof (raw as { kind?: unknown })?.kind === "string" ? String((raw as { kind: string }).kind) : "?";
            const fixture = kind in VALID && isDeepStrictEqual(raw, VALID[kind as Kind]);
            if (fixture) stats.fixtures++;
            const k = (stats.byKind[kind] ??= { valid: 0, rejected: 0 });
            const g = (stats.byGen[`${kind}/${gen}`] ??= { valid: 0, rejected: 0 });
            if (r.ok) {
              stats.valid++;
              if (!fixture) {
                k.valid++;
                g.valid++;
              }
              if (r.kind !== "Node" && r.object.metadata.name.startsWith("good")) stats.namesakes++;
              valid.push(r);
              continue;
            }
            // A schema that throws is a bug even though validateObject catches it.
            assert.doesNotMatch(r.reason, /^validation failed:/, r.reason);
            if (r.ignored) {
              stats.ignored++;
              continue;
            }
            stats.rejected++;
            k.rejected++;
            g.rejected++;
            reportResult(r);
            rejectedKeys.push(objectKey(raw));
          }
          assert.deepEqual(warned, rejectedKeys, "each rejected object logged once, with its namespace/name");
          const conflicts: Array<[Frontend, Frontend]> = [];
          const model = buildAll(valid, (kept, dropped) => conflicts.push([kept, dropped]));
          // A frontend of the good Service that a fuzzed Service took by conflict: reported, and only ever to
          // a Service whose key sorts first. Everything else of the good Service is exactly as without them.
          const key = (f: Frontend) => `${f.address}|${f.port}|${f.protocol}|${f.scope}`;
          const lost = new Set<string>();
          for (const [kept, dropped] of conflicts) {
            if (dropped.service !== "good-ns/good") continue;
            assert.ok(kept.service < "good-ns/good", `${kept.service} won over good-ns/good`);
            lost.add(key(dropped));
          }
          if (lost.size > 0) stats.goodLostByConflict++;
          assert.deepEqual(
            goodFrontends(model),
            baseline.filter((f) => !lost.has(key(f))),
            "the good Service is programmed as without the fuzzed objects, but for conflicts it lost",
          );
        }),
        { numRuns: 102, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31), endOnFailure: true },
      );
      await new Promise((r) => setImmediate(r));
    } finally {
      log.warn = origWarn;
      process.off("unhandledRejection", onUnhandled);
    }
    const ms = Date.now() - started;
    console.log(`# figures fuzz-objects: ${JSON.stringify({ ...stats, ms })}`);
    assert.deepEqual(unhandled, []);
    assert.ok(stats.objects >= 10_000, `${stats.objects} objects`);
    // Each generator must reach past validation for each kind, or the model is never fuzzed by it; and be
    // refused often enough to probe validation. Fixtures do not count.
    for (const kind of Object.keys(SCHEMAS)) {
      assert.ok((stats.byKind[kind]?.valid ?? 0) > 50, `${kind}: only ${stats.byKind[kind]?.valid ?? 0} valid objects`);
      assert.ok(
        (stats.byKind[kind]?.rejected ?? 0) > 100,
        `${kind}: only ${stats.byKind[kind]?.rejected ?? 0} rejected objects`,
      );
      for (const gen of ["derived", "mutated"]) {
        const g = stats.byGen[`${kind}/${gen}`];
        assert.ok((g?.valid ?? 0) > 20, `${kind} from the ${gen} generator: only ${g?.valid ?? 0} valid objects`);
        assert.ok((g?.rejected ?? 0) > 20, `${kind} from the ${gen} generator: only ${g?.rejected ?? 0} rejected`);
      }
    }
    // The good Service was really contested: namesakes in other namespaces, and its address taken by conflict.
    assert.ok(stats.namesakes > 50, `only ${stats.namesakes} valid objects named like the good Service`);
    assert.ok(stats.goodLostByConflict > 0, "no fuzzed Service ever claimed the good Service's address and port");
    assert.ok(ms < 60_000, `${ms} ms`);
  },
);
