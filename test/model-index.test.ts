// Builds from the object index visit only the Services its change log names, and still give exactly
// what a build from scratch gives — including conflicts between Services, Services and slices that come
// and go, slices that move to another Service, and node facts that change. The delta each build reports
// must name every Service whose frontends changed (the data plane writes nothing else).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildHealthChecks,
  buildNodeModel,
  buildNodeModelFrom,
  buildNodeModelFromAsync,
  deniedExternalIPs,
  ModelCache,
} from "../src/model/index.js";
import { ObjectIndex } from "../src/sources/object-index.js";
import { ServiceFacts } from "../src/daemon/service-facts.js";
import { resolveNodeContext } from "../src/model/build.js";
import { ipv6EndpointSlices, servicesWithIPv6 } from "../src/k8s/family.js";
import type { EndpointSlice, Node, Service } from "../src/k8s/schemas.js";
import type { NodeModel } from "../src/model/types.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const plain = (m: NodeModel) => ({
  node: m.node,
  frontends: m.frontends,
  extras: m.extras,
  nodePortIPs: m.nodePortIPs,
  nodeIPs: m.nodeIPs,
});

/** A small deterministic PRNG (xorshift32): the walk is the same on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

const N = 24;
/** Service i: a few shapes, and clusterIPs drawn from a small pool so that Services collide. */
function makeService(i: number, v: number): Service {
  const ip = `10.96.0.${1 + ((i + v) % 9)}`;
  switch ((i + v) % 4) {
    case 0:
      return svc({ name: `s${i}`, clusterIP: ip });
    case 1:
      return svc({
        name: `s${i}`,
        clusterIP: ip,
        type: "LoadBalancer",
        externalTrafficPolicy: "Local",
        ports: [{ name: "http", port: 80, targetPort: 8080, nodePort: 30000 + i, protocol: "TCP" }],
        healthCheckNodePort: 32000 + i,
        ingress: [{ ip: `198.51.100.${1 + (v % 3)}` }],
        loadBalancerSourceRanges: v % 2 ? ["203.0.113.0/24"] : [],
      });
    case 2:
      return svc({
        name: `s${i}`,
        clusterIP: ip,
        internalTrafficPolicy: "Local",
        externalIPs: [`192.0.2.${50 + (v % 4)}`, "2001:db8::1"],
      });
    default:
      return svc({
        name: `s${i}`,
        clusterIP: ip,
        sessionAffinity: "ClientIP",
        ports: [{ name: "dns", port: 53, protocol: "UDP" }],
      });
  }
}

function makeSlice(i: number, owner: number, v: number): EndpointSlice {
  const n = 1 + (v % 3);
  return slice(
    Array.from({ length: n }, (_, j) =>
      ep(v % 7 === 6 ? `fd00::${i}:${j + 1}` : `10.244.${i}.${j + 1 + (v % 5)}`, {
        node: j % 2 ? "node-a" : "node-b",
        ready: (v + j) % 4 !== 0,
      }),
    ),
    {
      name: `slice-${i}`,
      service: `s${owner}`,
      addressType: v % 7 === 6 ? "IPv6" : "IPv4",
      ports: [
        { name: "http", port: 8080, protocol: "TCP" },
        { name: "dns", port: 5353, protocol: "UDP" },
      ],
    },
  );
}

test("index builds equal builds from scratch over a random walk of changes, visiting only what changed", () => {
  const next = rng(7);
  const services = new Map<number, Service>();
  const slices = new Map<number, EndpointSlice>();
  let nodes: Node[] = [node("node-a", { internal: ["192.0.2.11"], zone: "z1" })];
  for (let i = 0; i < N; i++) {
    services.set(i, makeService(i, 0));
    slices.set(i, makeSlice(i, i, 0));
  }
  const index = new ObjectIndex();
  const cache = new ModelCache();
  const facts = new ServiceFacts();
  const allowed = ["192.0.2.48/30"];
  const config = { externalIPsAllowedCIDRs: allowed };
  const sync = () => index.replaceAll([...services.values()], [...slices.values()], nodes);
  sync();
  let prev = buildNodeModelFrom(index, cache, { nodes, nodeName: "node-a", config });
  let prevGroups = new Map(prev.delta!.byService);
  // The walk must reach the cases it is about (or it proves nothing).
  const seen = { conflicts: 0, checks: 0, denied: 0, ipv6: 0, itpEmpty: 0, incremental: 0 };
  for (let step = 1; step <= 300; step++) {
    const i = Math.floor(next() * N);
    const r = next();
    const touched = new Set<string>();
    if (r < 0.3) {
      services.set(i, makeService(i, step));
      touched.add(`default/s${i}`);
    } else if (r < 0.4) {
      services.delete(i);
      touched.add(`default/s${i}`);
    } else if (r < 0.75) {
      slices.set(i, makeSlice(i, i, step));
      touched.add(`default/s${i}`);
    } else if (r < 0.85) {
      // The slice moves to another Service: both are visited.
      const owner = Math.floor(next() * N);
      slices.set(i, makeSlice(i, owner, step));
      touched.add(`default/s${i}`).add(`default/s${owner}`);
    } else if (r < 0.92) {
      slices.delete(i);
      touched.add(`default/s${i}`);
    } else if (r < 0.96) {
      nodes = [node("node-a", { internal: ["192.0.2.11"], zone: step % 2 ? "z1" : "z2" })];
    } else {
      // Nothing changed at all.
    }
    sync();
    const model = buildNodeModelFrom(index, cache, {
      nodes,
      nodeName: "node-a",
      config,
      onConflict: () => seen.conflicts++,
    });
    const scratchInput = {
      services: [...services.values()],
      endpointSlices: [...slices.values()],
      nodes,
      nodeName: "node-a",
      config,
    };
    assert.deepEqual(plain(model), plain(buildNodeModel(scratchInput)), `step ${step}`);
    const d = model.delta!;
    if (d.from !== -1) {
      // O(change): at most the Services the change touched (the slice's old owner too) are visited.
      assert.ok(cache.visited <= touched.size + 1, `step ${step}: visited ${cache.visited}`);
      assert.equal(d.from, prev.delta!.to);
      // Every Service whose record is not the very same object is in the delta, and only those.
      const keys = new Set([...prevGroups.keys(), ...d.byService.keys()]);
      for (const k of keys) {
        const a = prevGroups.get(k);
        const b = d.byService.get(k);
        const same = a !== undefined && a === b;
        assert.equal(d.services.has(k), !same, `step ${step}: ${k} in delta`);
      }
    }
    assert.equal(d.frontendCount, model.frontends.length);
    // The daemon's per-Service facts equal the functions over everything.
    facts.update(index, model, resolveNodeContext({ nodes, nodeName: "node-a", config }), allowed);
    assert.deepEqual(facts.healthChecks(), buildHealthChecks(scratchInput), `step ${step}: health checks`);
    assert.deepEqual(
      [...facts.denied()].sort(),
      deniedExternalIPs(scratchInput.services, allowed).sort(),
      `step ${step}: denied`,
    );
    assert.equal(facts.ipv6Services, servicesWithIPv6(scratchInput.services));
    assert.equal(facts.ipv6Slices, ipv6EndpointSlices(scratchInput.endpointSlices));
    const itpLocal = new Set(
      scratchInput.services
        .filter((s) => s.spec.internalTrafficPolicy === "Local")
        .map((s) => `default/${s.metadata.name}`),
    );
    assert.equal(
      facts.internalLocalEmpty,
      new Set(
        model.frontends
          .filter((f) => f.type === "ClusterIP" && f.backends.length === 0 && itpLocal.has(f.service))
          .map((f) => f.service),
      ).size,
      `step ${step}: internal no-local`,
    );
    if (d.from !== -1) seen.incremental++;
    if (facts.healthChecks().length) seen.checks++;
    if (facts.denied().length) seen.denied++;
    if (facts.ipv6Slices) seen.ipv6++;
    if (facts.internalLocalEmpty) seen.itpEmpty++;
    prev = model;
    prevGroups = new Map(d.byService);
  }
  for (const [what, n] of Object.entries(seen)) assert.ok(n > 10, `${what}: ${n}`);
});

test("one change among thousands of Services visits and renders one Service", () => {
  const index = new ObjectIndex();
  const cache = new ModelCache();
  const services = Array.from({ length: 3000 }, (_, i) =>
    svc({ name: `s${i}`, clusterIP: `10.96.${i >> 8}.${i & 0xff}` }),
  );
  const slices = services.map((s, i) =>
    slice([ep(`10.244.${i >> 8}.${i & 0xff}`)], { name: `e${i}`, service: s.metadata.name }),
  );
  index.replaceAll(services, slices, []);
  const first = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  assert.equal(cache.visited, 3000);
  assert.equal(first.delta!.services.size, 3000);
  const changed = slice([ep("10.244.200.1")], { name: "e17", service: "s17" });
  index.upsertSlice("default/e17", changed);
  const m = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  assert.equal(cache.visited, 1);
  assert.equal(cache.rendered, 1);
  assert.deepEqual([...m.delta!.services], ["default/s17"]);
  assert.deepEqual(
    m
      .delta!.byService.get("default/s17")!
      .frontends()[0]!
      .backends.map((b) => b.address),
    ["10.244.200.1"],
  );
  // Nothing changed: nothing visited.
  buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  assert.equal(cache.visited, 0);
});

test("an older model's frontend list cannot be read after the next build (it would show the newer state)", () => {
  const index = new ObjectIndex();
  const cache = new ModelCache();
  index.replaceAll([svc()], [], []);
  const m1 = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  assert.throws(() => m1.frontends, /superseded/);
});

test("a reader further behind than the change log visits everything", () => {
  const index = new ObjectIndex();
  index.upsertService("default/web", svc());
  assert.equal(index.changedSince(-1), undefined);
  const v = index.version;
  index.upsertService("default/api", svc({ name: "api" }));
  assert.deepEqual([...index.changedSince(v)!], ["default/api"]);
  // The same object again is no change.
  index.upsertService("default/api", index.service("default/api")!);
  assert.deepEqual([...index.changedSince(v + 1)!], []);
});

test("a big build from the index yields to the event loop (the daemon's /healthz keeps answering at start)", async () => {
  const index = new ObjectIndex();
  const n = 5000;
  index.replaceAll(
    Array.from({ length: n }, (_, i) => svc({ name: `s${i}`, clusterIP: `10.96.${i >> 8}.${i & 0xff}` })),
    [],
    [],
  );
  let ticks = 0;
  let running = true;
  const tick = () => {
    ticks++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  let m;
  try {
    m = await buildNodeModelFromAsync(index, new ModelCache(), { nodeName: "node-a" });
  } finally {
    running = false;
  }
  assert.equal(m.delta!.frontendCount, n);
  // One turn of the event loop at least every 1000 Services visited.
  assert.ok(ticks >= n / 1000 - 1, `${ticks} turns of the event loop during the build`);
});

test("a build that throws half-way loses nothing: the next build hands out what it had updated", () => {
  const index = new ObjectIndex();
  const cache = new ModelCache();
  const a = svc({ name: "a", clusterIP: "10.96.0.1" });
  index.replaceAll([a], [slice([ep("10.244.0.1")], { name: "a-1", service: "a" })], []);
  const first = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  // b claims a's address and a's endpoints change; the build dies in the middle (here: in a callback).
  index.upsertService("default/b", svc({ name: "b", clusterIP: "10.96.0.1" }));
  index.upsertSlice("default/a-1", slice([ep("10.244.0.2")], { name: "a-1", service: "a" }));
  assert.throws(() =>
    buildNodeModelFrom(index, cache, {
      nodeName: "node-a",
      onConflict: () => {
        throw new Error("boom");
      },
    }),
  );
  const next = buildNodeModelFrom(index, cache, { nodeName: "node-a" });
  const scratch = buildNodeModel({
    services: [index.service("default/a")!, index.service("default/b")!],
    endpointSlices: index.slices("default/a"),
    nodeName: "node-a",
  });
  assert.deepEqual(plain(next), plain(scratch));
  // A data plane that applied the first build can apply this one's delta alone.
  assert.equal(next.delta!.from, first.delta!.to);
  assert.ok(next.delta!.services.has("default/a"), "a's new endpoint is in the delta");
});
