// ServiceChangeTracker: which Services' entries changed between two node models.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildNodeModel } from "../src/model/build.js";
import { changedServices, groupByService, ServiceChangeTracker } from "../src/model/tracker.js";
import type { EndpointSlice, Service } from "../src/k8s/schemas.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const NODE_A = node("node-a", { zone: "zone-a", internal: ["192.0.2.11"] });

function model(services: Service[], slices: EndpointSlice[]) {
  return buildNodeModel({ services, endpointSlices: slices, nodes: [NODE_A], nodeName: "node-a" });
}

const web = svc();
const api = svc({ name: "api", clusterIP: "10.96.0.11" });
const webSlice = slice([ep("10.244.2.1")]);
const apiSlice = slice([ep("10.244.2.5")], { service: "api" });

describe("ServiceChangeTracker", () => {
  test("the first update reports every Service", () => {
    const t = new ServiceChangeTracker();
    assert.deepEqual([...t.update(model([web, api], [webSlice, apiSlice]))].sort(), ["default/api", "default/web"]);
    assert.deepEqual(t.keys(), ["default/api", "default/web"]);
    const c = t.changes().get("default/web");
    assert.equal(c?.previous, undefined);
    assert.equal(c?.current?.frontends.length, 1);
  });

  test("an identical model reports nothing", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    assert.deepEqual([...t.update(model([api, web], [apiSlice, webSlice]))], []);
    assert.equal(t.changes().size, 0);
  });

  test("an endpoint change reports only its Service, with previous and current", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    const changed = t.update(model([web, api], [slice([ep("10.244.2.1"), ep("10.244.2.2")]), apiSlice]));
    assert.deepEqual([...changed], ["default/web"]);
    const c = t.changes().get("default/web")!;
    assert.deepEqual(c.previous!.frontends[0]!.backends.map((b) => b.address), ["10.244.2.1"]);
    assert.deepEqual(c.current!.frontends[0]!.backends.map((b) => b.address), ["10.244.2.1", "10.244.2.2"]);
  });

  test("an endpoint turning terminating changes the Service (retained backends are part of its entries)", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web], [slice([ep("10.244.2.1"), ep("10.244.2.2")])]));
    const changed = t.update(model([web], [slice([ep("10.244.2.1"), ep("10.244.2.2", { terminating: true, serving: true })])]));
    assert.deepEqual([...changed], ["default/web"]);
  });

  test("a removed Service is reported with current undefined and is forgotten", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    assert.deepEqual([...t.update(model([web], [webSlice]))], ["default/api"]);
    assert.equal(t.changes().get("default/api")!.current, undefined);
    assert.equal(t.get("default/api"), undefined);
    assert.ok(t.get("default/web"));
  });

  test("a Service that stops being ours (proxy-name label added) is reported as removed", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    const moved = svc({ name: "api", clusterIP: "10.96.0.11", labels: { "service.kubernetes.io/service-proxy-name": "other" } });
    assert.deepEqual([...t.update(model([web, moved], [webSlice, apiSlice]))], ["default/api"]);
  });

  test("a Service spec change (affinity) is reported", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    assert.deepEqual([...t.update(model([svc({ sessionAffinity: "ClientIP" }), api], [webSlice, apiSlice]))], ["default/web"]);
  });

  test("reset makes the next update report everything again", () => {
    const t = new ServiceChangeTracker();
    t.update(model([web, api], [webSlice, apiSlice]));
    t.reset();
    assert.equal(t.update(model([web, api], [webSlice, apiSlice])).size, 2);
  });

  test("changedServices compares two models directly", () => {
    const a = model([web, api], [webSlice, apiSlice]);
    const b = model([web], [slice([ep("10.244.2.9")])]);
    assert.deepEqual([...changedServices(a, b)].sort(), ["default/api", "default/web"]);
    assert.deepEqual([...changedServices(undefined, a)].sort(), ["default/api", "default/web"]);
    assert.equal(changedServices(a, model([web, api], [webSlice, apiSlice])).size, 0);
  });

  test("groupByService keeps frontends and extras parallel", () => {
    const m = buildNodeModel({
      services: [svc({ type: "NodePort", externalTrafficPolicy: "Local" })],
      endpointSlices: [slice([ep("10.244.2.1"), ep("10.244.1.1", { node: "node-a" })])],
      nodes: [NODE_A],
      nodeName: "node-a",
    });
    const g = groupByService(m).get("default/web")!;
    assert.equal(g.frontends.length, 3);
    assert.equal(g.extras.length, 3);
  });
});
