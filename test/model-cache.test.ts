// Change tracking in the model: a build renders again only the Services whose inputs changed,
// and the result is the same as a build from scratch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel, ModelCache } from "../src/model/index.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const web = svc();
const api = svc({ name: "api", clusterIP: "10.96.0.11" });
const webSlice = slice([ep("10.244.1.5", { node: "node-a" })]);
const apiSlice = slice([ep("10.244.1.7")], { name: "api-1", service: "api" });
const nodeA = node("node-a", { internal: ["192.0.2.11"] });

function build(cache: ModelCache, over: Partial<Parameters<typeof buildNodeModel>[0]> = {}) {
  const input = {
    services: [web, api],
    endpointSlices: [webSlice, apiSlice],
    nodes: [nodeA],
    nodeName: "node-a",
    ...over,
  };
  const model = buildNodeModel({ ...input, cache });
  assert.deepEqual(model, buildNodeModel(input), "cached build equals a build from scratch");
  return model;
}

test("an unchanged snapshot renders nothing again", () => {
  const cache = new ModelCache();
  build(cache);
  assert.equal(cache.rendered, 2);
  build(cache);
  assert.equal(cache.rendered, 0);
});

test("a changed EndpointSlice renders only its Service again", () => {
  const cache = new ModelCache();
  build(cache);
  const m = build(cache, { endpointSlices: [slice([ep("10.244.1.5"), ep("10.244.1.6")]), apiSlice] });
  assert.equal(cache.rendered, 1);
  assert.equal(m.frontends.find((f) => f.service === "default/web")!.backends.length, 2);
});

test("a changed or removed Service renders (or drops) only that Service", () => {
  const cache = new ModelCache();
  build(cache);
  build(cache, { services: [svc({ clusterIP: "10.96.0.12" }), api] });
  assert.equal(cache.rendered, 1);
  const m = build(cache, { services: [api] });
  assert.equal(cache.rendered, 0);
  assert.deepEqual([...new Set(m.frontends.map((f) => f.service))], ["default/api"]);
});

test("new node facts render every Service again", () => {
  const cache = new ModelCache();
  build(cache);
  build(cache, { nodes: [node("node-a", { internal: ["192.0.2.99"], zone: "z2" })] });
  assert.equal(cache.rendered, 2);
});

test("many small changes keep the order a build from scratch gives (the incremental sort)", () => {
  // Enough Services that one change takes the incremental path (changed entries × 16 < all entries).
  const N = 80;
  const services = Array.from({ length: N }, (_, i) =>
    svc({ name: `s${(i * 37) % N}`, clusterIP: `10.96.1.${i + 1}` }),
  );
  const slices = services.map((s, i) =>
    slice([ep(`10.244.1.${i + 1}`)], { name: `${s.metadata.name}-1`, service: s.metadata.name }),
  );
  const cache = new ModelCache();
  let state = { services: [...services], endpointSlices: [...slices] };
  build(cache, state);
  // A deterministic walk of changes: endpoints replaced, Services removed and added back.
  for (let step = 1; step <= 60; step++) {
    const i = (step * 13) % N;
    const name = services[i]!.metadata.name;
    if (step % 3 === 0) {
      state = {
        services: state.services.filter((s) => s.metadata.name !== name),
        endpointSlices: state.endpointSlices,
      };
    } else if (step % 3 === 1) {
      if (!state.services.some((s) => s.metadata.name === name)) state.services = [...state.services, services[i]!];
      state.endpointSlices = state.endpointSlices.map((s, j) =>
        j === i ? slice([ep(`10.244.2.${step}`), ep(`10.244.3.${step}`)], { name: `${name}-1`, service: name }) : s,
      );
    } else {
      state.services = state.services.map((s, j) =>
        j === 0 ? svc({ name: s.metadata.name, clusterIP: `10.96.2.${step}` }) : s,
      );
    }
    build(cache, state);
  }
});
