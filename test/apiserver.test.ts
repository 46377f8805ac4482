// Tests for the test apiserver (test/apiserver): the HTTP protocol, real kubectl, client-node informers.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { get as httpGet, type IncomingMessage } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  PatchStrategy,
  makeInformer,
  setHeaderOptions,
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Service,
} from "@kubernetes/client-node";
import { startApiServer, type ApiServer, type Obj } from "./apiserver/index.js";

// ---------------------------------------------------------------------------------------------
// helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** `body` is the parsed JSON, or the raw text (as a string) when the response is not JSON. */
async function api(
  s: ApiServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Obj; contentType: string }> {
  const res = await fetch(s.url + path, {
    method,
    headers: { "content-type": "application/json", accept: "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* text */
  }
  return { status: res.status, body: parsed as Obj, contentType: res.headers.get("content-type") ?? "" };
}

interface RawWatch {
  status: number;
  events: { type: string; object: Obj }[];
  ended: Promise<void>;
  close(): void;
}

function openWatch(s: ApiServer, path: string): Promise<RawWatch> {
  return new Promise((resolve, reject) => {
    const req = httpGet(s.url + path, (res: IncomingMessage) => {
      const events: RawWatch["events"] = [];
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim()) events.push(JSON.parse(line));
        }
      });
      const ended = new Promise<void>((r) => {
        res.on("end", () => r());
        res.on("close", () => r());
        res.on("error", () => r());
      });
      resolve({ status: res.statusCode ?? 0, events, ended, close: () => req.destroy() });
    });
    req.on("error", reject);
    req.setTimeout(15_000, () => req.destroy(new Error("watch request timed out")));
  });
}

const svc = (name: string, extra: Obj = {}): Obj => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default", labels: { app: name } },
  spec: { selector: { app: name }, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
  ...extra,
});

const slice = (name: string, service: string, ips: string[]): Obj => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": service } },
  addressType: "IPv4",
  ports: [{ name: "http", port: 8080 }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
});

async function withServer(
  fn: (s: ApiServer) => Promise<void>,
  opts: Parameters<typeof startApiServer>[0] = {},
): Promise<void> {
  const s = await startApiServer({ host: "127.0.0.1", port: 0, ...opts });
  try {
    await fn(s);
  } finally {
    await s.stop();
  }
}

// ---------------------------------------------------------------------------------------------

describe("apiserver: discovery and OpenAPI", () => {
  it("serves /version, legacy discovery and aggregated discovery", () =>
    withServer(async (s) => {
      const v = await api(s, "GET", "/version");
      assert.equal(v.status, 200);
      assert.equal(v.body.major, "1");
      const apis = await api(s, "GET", "/api");
      assert.equal(apis.body.kind, "APIVersions");
      assert.deepEqual(apis.body.versions, ["v1"]);
      const core = await api(s, "GET", "/api/v1");
      assert.equal(core.body.kind, "APIResourceList");
      const byName = new Map<string, Obj>(core.body.resources.map((r: Obj) => [r.name, r]));
      assert.deepEqual(byName.get("services")?.shortNames, ["svc"]);
      assert.deepEqual(byName.get("endpoints")?.shortNames, ["ep"]);
      assert.deepEqual(byName.get("nodes")?.shortNames, ["no"]);
      assert.equal(byName.get("nodes")?.namespaced, false);
      assert.equal(byName.get("services")?.namespaced, true);
      assert.ok(byName.get("services")?.verbs.includes("watch"));
      assert.ok(byName.has("services/status"));
      const groups = await api(s, "GET", "/apis");
      assert.equal(groups.body.kind, "APIGroupList");
      assert.ok(
        groups.body.groups.some((g: Obj) => g.name === "discovery.k8s.io" && g.preferredVersion.version === "v1"),
      );
      const g = await api(s, "GET", "/apis/discovery.k8s.io");
      assert.equal(g.body.kind, "APIGroup");
      const dv1 = await api(s, "GET", "/apis/discovery.k8s.io/v1");
      assert.equal(dv1.body.resources[0].kind, "EndpointSlice");
      const agg = await api(s, "GET", "/apis", undefined, {
        accept: "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
      });
      assert.match(agg.contentType, /as=APIGroupDiscoveryList/);
      assert.equal(agg.body.kind, "APIGroupDiscoveryList");
      const disc = agg.body.items.find((i: Obj) => i.metadata.name === "discovery.k8s.io");
      assert.equal(disc.versions[0].resources[0].resource, "endpointslices");
      const aggCore = await api(s, "GET", "/api", undefined, {
        accept: "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
      });
      assert.ok(
        aggCore.body.items[0].versions[0].resources.some(
          (r: Obj) => r.resource === "services" && r.scope === "Namespaced",
        ),
      );
      assert.equal((await api(s, "GET", "/apis/nope.example.com/v1")).status, 404);
    }));

  it("serves an OpenAPI v3 index whose PATCH operations carry the GVK and fieldValidation; no v2", () =>
    withServer(async (s) => {
      const idx = await api(s, "GET", "/openapi/v3");
      const url: string = idx.body.paths["api/v1"].serverRelativeURL;
      assert.match(url, /^\/openapi\/v3\/api\/v1\?hash=/);
      const doc = await api(s, "GET", url);
      const op = doc.body.paths["/api/v1/namespaces/{namespace}/services/{name}"].patch;
      assert.deepEqual(op["x-kubernetes-group-version-kind"], { group: "", version: "v1", kind: "Service" });
      assert.ok(op.parameters.some((p: Obj) => p.name === "fieldValidation" && p.in === "query"));
      assert.equal((await api(s, "GET", "/openapi/v2")).status, 404);
    }));
});

describe("apiserver: CRUD", () => {
  it("creates with uid, creationTimestamp, resourceVersion, generateName; keeps unknown fields", () =>
    withServer(async (s) => {
      const r = await api(s, "POST", "/api/v1/namespaces/default/services", svc("web", { extra: { kept: true } }));
      assert.equal(r.status, 201);
      assert.match(r.body.metadata.uid, /^[0-9a-f-]{36}$/);
      assert.match(r.body.metadata.creationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.equal(r.body.metadata.resourceVersion, s.store.resourceVersion);
      assert.deepEqual(r.body.extra, { kept: true });
      assert.equal(r.body.spec.type, "ClusterIP");
      assert.match(r.body.spec.clusterIP, /^10\.(9[6-9]|10[0-9]|11[01])\./);
      assert.equal(r.body.spec.ports[0].protocol, "TCP");
      const gen = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("", { metadata: { generateName: "gen-" } }),
      );
      assert.equal(gen.status, 201);
      assert.match(gen.body.metadata.name, /^gen-[a-z0-9]{5}$/);
      const dup = await api(s, "POST", "/api/v1/namespaces/default/services", svc("web"));
      assert.equal(dup.status, 409);
      assert.equal(dup.body.kind, "Status");
      assert.equal(dup.body.reason, "AlreadyExists");
      assert.equal(dup.body.message, 'services "web" already exists');
      const noName = await api(s, "POST", "/api/v1/namespaces/default/services", svc("", { metadata: {} }));
      assert.equal(noName.status, 422);
      assert.equal(noName.body.reason, "Invalid");
      assert.equal(noName.body.details.causes[0].field, "metadata.name");
      const badJson = await api(s, "POST", "/api/v1/namespaces/default/services", "{nope");
      assert.equal(badJson.status, 400);
      assert.equal(badJson.body.reason, "BadRequest");
      const noNs = await api(s, "POST", "/api/v1/namespaces/missing/services", svc("x", { metadata: { name: "x" } }));
      assert.equal(noNs.status, 404);
      assert.equal(noNs.body.message, 'namespaces "missing" not found');
      const missing = await api(s, "GET", "/api/v1/namespaces/default/services/nope");
      assert.equal(missing.status, 404);
      assert.equal(missing.body.reason, "NotFound");
      assert.equal(missing.body.details.kind, "services");
      const epsMissing = await api(s, "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/nope");
      assert.equal(epsMissing.body.message, 'endpointslices.discovery.k8s.io "nope" not found');
    }));

  it("updates with optimistic concurrency, keeps allocations and status, skips no-op writes", () =>
    withServer(async (s) => {
      const created = (await api(s, "POST", "/api/v1/namespaces/default/services", svc("web"))).body;
      const ip = created.spec.clusterIP;
      const upd = structuredClone(created);
      upd.metadata.labels.tier = "front";
      delete upd.spec.clusterIP;
      delete upd.spec.clusterIPs;
      upd.status = { loadBalancer: { ingress: [{ ip: "1.2.3.4" }] } };
      const r1 = await api(s, "PUT", "/api/v1/namespaces/default/services/web", upd);
      assert.equal(r1.status, 200);
      assert.equal(r1.body.spec.clusterIP, ip, "an update without clusterIP keeps the allocated one");
      assert.deepEqual(r1.body.status, { loadBalancer: {} }, "status is changed only through /status");
      assert.ok(Number(r1.body.metadata.resourceVersion) > Number(created.metadata.resourceVersion));
      const stale = await api(s, "PUT", "/api/v1/namespaces/default/services/web", upd);
      assert.equal(stale.status, 409);
      assert.equal(stale.body.reason, "Conflict");
      const status = await api(s, "PUT", "/api/v1/namespaces/default/services/web/status", {
        ...r1.body,
        status: { loadBalancer: { ingress: [{ ip: "1.2.3.4" }] } },
      });
      assert.equal(status.status, 200);
      assert.equal(status.body.status.loadBalancer.ingress[0].ip, "1.2.3.4");
      const rv = s.store.resourceVersion;
      const same = await api(s, "PUT", "/api/v1/namespaces/default/services/web", status.body);
      assert.equal(same.status, 200);
      assert.equal(s.store.resourceVersion, rv, "a no-op update writes nothing");
      const unconditional = structuredClone(status.body);
      delete unconditional.metadata.resourceVersion;
      unconditional.spec.ports[0].port = 81;
      assert.equal((await api(s, "PUT", "/api/v1/namespaces/default/services/web", unconditional)).status, 200);
      const changeIP = {
        ...unconditional,
        spec: { ...unconditional.spec, clusterIP: "10.96.7.7", clusterIPs: ["10.96.7.7"] },
      };
      assert.equal((await api(s, "PUT", "/api/v1/namespaces/default/services/web", changeIP)).status, 422);
      const wrongName = await api(s, "PUT", "/api/v1/namespaces/default/services/other", unconditional);
      assert.equal(wrongName.status, 400);
      assert.equal((await api(s, "PUT", "/api/v1/namespaces/default/services/ghost", svc("ghost"))).status, 404);
      // endpoints allow create on update, as in the real registry
      const ep = {
        apiVersion: "v1",
        kind: "Endpoints",
        metadata: { name: "web" },
        subsets: [{ addresses: [{ ip: "10.1.0.1" }], ports: [{ port: 80 }] }],
      };
      const epr = await api(s, "PUT", "/api/v1/namespaces/default/endpoints/web", ep);
      assert.equal(epr.status, 201);
      assert.equal(epr.body.subsets[0].ports[0].protocol, "TCP");
    }));

  it("patches: merge, strategic (ports by port, directives), JSON patch, resourceVersion precondition", () =>
    withServer(async (s) => {
      const two = svc("web");
      two.spec.ports = [
        { name: "http", port: 80 },
        { name: "https", port: 443 },
      ];
      await api(s, "POST", "/api/v1/namespaces/default/services", two);
      const path = "/api/v1/namespaces/default/services/web";
      const m = await api(
        s,
        "PATCH",
        path,
        { metadata: { labels: { a: "1", app: null } } },
        { "content-type": "application/merge-patch+json" },
      );
      assert.equal(m.status, 200);
      assert.deepEqual(m.body.metadata.labels, { a: "1" });
      const smp = await api(
        s,
        "PATCH",
        path,
        {
          spec: {
            $setElementOrder: undefined,
            "$setElementOrder/ports": [{ port: 443 }, { port: 80 }],
            ports: [{ port: 443, targetPort: 8443 }],
          },
        },
        { "content-type": "application/strategic-merge-patch+json" },
      );
      assert.equal(smp.status, 200);
      assert.deepEqual(
        smp.body.spec.ports.map((p: Obj) => [p.name, p.port, p.targetPort]),
        [
          ["https", 443, 8443],
          ["http", 80, 80],
        ],
      );
      const del = await api(
        s,
        "PATCH",
        path,
        { spec: { ports: [{ port: 80, $patch: "delete" }] } },
        { "content-type": "application/strategic-merge-patch+json" },
      );
      assert.deepEqual(
        del.body.spec.ports.map((p: Obj) => p.port),
        [443],
      );
      const jp = await api(
        s,
        "PATCH",
        path,
        [
          { op: "add", path: "/metadata/annotations", value: { x: "y" } },
          { op: "replace", path: "/spec/ports/0/name", value: "tls" },
        ],
        {
          "content-type": "application/json-patch+json",
        },
      );
      assert.equal(jp.status, 200);
      assert.equal(jp.body.spec.ports[0].name, "tls");
      assert.equal(jp.body.metadata.annotations.x, "y");
      const stale = await api(
        s,
        "PATCH",
        path,
        { metadata: { resourceVersion: "1", labels: { b: "2" } } },
        { "content-type": "application/merge-patch+json" },
      );
      assert.equal(stale.status, 409);
      const missing = await api(
        s,
        "PATCH",
        "/api/v1/namespaces/default/services/ghost",
        {},
        { "content-type": "application/merge-patch+json" },
      );
      assert.equal(missing.status, 404);
      const badType = await api(s, "PATCH", path, {}, { "content-type": "application/json" });
      assert.equal(badType.status, 415);
    }));

  it("deletes: the object for services, a Status for endpointslices, finalizers, preconditions, namespaces cascade", () =>
    withServer(async (s) => {
      await api(s, "POST", "/api/v1/namespaces/default/services", svc("web"));
      await api(
        s,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        slice("web-1", "web", ["10.1.0.1"]),
      );
      const pre = await api(s, "DELETE", "/api/v1/namespaces/default/services/web", {
        preconditions: { uid: "wrong" },
      });
      assert.equal(pre.status, 409);
      const d1 = await api(s, "DELETE", "/api/v1/namespaces/default/services/web");
      assert.equal(d1.status, 200);
      assert.equal(d1.body.kind, "Service");
      const d2 = await api(s, "DELETE", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-1");
      assert.equal(d2.status, 200);
      assert.equal(d2.body.kind, "Status");
      assert.equal(d2.body.status, "Success");
      assert.equal((await api(s, "DELETE", "/api/v1/namespaces/default/services/web")).status, 404);
      // finalizers hold the object with a deletionTimestamp until they are removed
      const held = svc("held", { metadata: { name: "held", finalizers: ["example.com/hold"] } });
      await api(s, "POST", "/api/v1/namespaces/default/services", held);
      const d3 = await api(s, "DELETE", "/api/v1/namespaces/default/services/held");
      assert.equal(d3.status, 202);
      assert.ok(d3.body.metadata.deletionTimestamp);
      assert.ok(s.store.get("services", "held", "default"));
      await api(
        s,
        "PATCH",
        "/api/v1/namespaces/default/services/held",
        { metadata: { finalizers: null } },
        { "content-type": "application/merge-patch+json" },
      );
      assert.equal(s.store.get("services", "held", "default"), undefined);
      // namespaces: their content goes with them
      s.store.create(svc("a", { metadata: { name: "a", namespace: "team" } }));
      assert.equal(s.store.list("svc", "team").length, 1);
      const dn = await api(s, "DELETE", "/api/v1/namespaces/team");
      assert.equal(dn.status, 200);
      assert.equal(dn.body.status.phase, "Terminating");
      assert.equal(s.store.list("svc", "team").length, 0);
      // dryRun writes nothing
      await api(s, "POST", "/api/v1/namespaces/default/services", svc("web"));
      const rv = s.store.resourceVersion;
      assert.equal((await api(s, "DELETE", "/api/v1/namespaces/default/services/web?dryRun=All")).status, 200);
      assert.equal((await api(s, "POST", "/api/v1/namespaces/default/services?dryRun=All", svc("dry"))).status, 201);
      assert.equal(s.store.resourceVersion, rv);
      assert.ok(s.store.get("svc", "web"));
      assert.equal(s.store.get("svc", "dry"), undefined);
    }));

  it("validates what the real registry validates (ports, addressType, duplicate ClusterIP, NodePort range)", () =>
    withServer(async (s) => {
      const noPorts = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("a", { spec: { selector: { app: "a" } } }),
      );
      assert.equal(noPorts.status, 422);
      assert.equal(noPorts.body.details.causes[0].field, "spec.ports");
      const headless = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("h", { spec: { clusterIP: "None" } }),
      );
      assert.equal(headless.status, 201);
      assert.deepEqual(headless.body.spec.clusterIPs, ["None"]);
      const fixed = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("f", { spec: { clusterIP: "10.96.1.1", ports: [{ port: 53, protocol: "UDP" }] } }),
      );
      assert.equal(fixed.status, 201);
      const dupIP = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("g", { spec: { clusterIP: "10.96.1.1", ports: [{ port: 53 }] } }),
      );
      assert.equal(dupIP.status, 422);
      assert.match(dupIP.body.message, /already allocated/);
      const outside = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("o", { spec: { clusterIP: "192.168.0.1", ports: [{ port: 53 }] } }),
      );
      assert.equal(outside.status, 422);
      const np = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("np", { spec: { type: "NodePort", ports: [{ port: 80 }, { name: "b", port: 81 }] } }),
      );
      assert.equal(np.status, 422, "two ports need names");
      const np2 = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("np", { spec: { type: "NodePort", ports: [{ port: 80 }] } }),
      );
      assert.equal(np2.status, 201);
      assert.ok(np2.body.spec.ports[0].nodePort >= 30000 && np2.body.spec.ports[0].nodePort <= 32767);
      assert.equal(np2.body.spec.externalTrafficPolicy, "Cluster");
      const lb = await api(
        s,
        "POST",
        "/api/v1/namespaces/default/services",
        svc("lb", { spec: { type: "LoadBalancer", externalTrafficPolicy: "Local", ports: [{ port: 80 }] } }),
      );
      assert.ok(lb.body.spec.healthCheckNodePort > 0);
      assert.notEqual(lb.body.spec.healthCheckNodePort, lb.body.spec.ports[0].nodePort);
      const noType = slice("x", "web", ["10.0.0.1"]);
      delete noType.addressType;
      const es = await api(s, "POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", noType);
      assert.equal(es.status, 422);
      const badIP = await api(
        s,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        slice("y", "web", ["fd00::1"]),
      );
      assert.equal(badIP.status, 422);
      const okSlice = await api(
        s,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        slice("z", "web", ["10.0.0.1"]),
      );
      assert.equal(okSlice.body.ports[0].protocol, "TCP");
      const badName = await api(s, "POST", "/api/v1/namespaces/default/services", svc("Bad_Name"));
      assert.equal(badName.status, 422);
      const dual = new Set<string>();
      await withServer(
        async (d) => {
          const r = await api(
            d,
            "POST",
            "/api/v1/namespaces/default/services",
            svc("ds", { spec: { ipFamilyPolicy: "PreferDualStack", ports: [{ port: 80 }] } }),
          );
          for (const f of r.body.spec.ipFamilies) dual.add(f);
          assert.equal(r.body.spec.clusterIPs.length, 2);
        },
        { serviceCIDRs: ["10.96.0.0/12", "fd00:10:96::/108"] },
      );
      assert.deepEqual([...dual], ["IPv4", "IPv6"]);
    }));

  it("serves events in core/v1 and events.k8s.io/v1 from one storage", () =>
    withServer(async (s) => {
      const ev = {
        apiVersion: "events.k8s.io/v1",
        kind: "Event",
        metadata: { name: "web.1", namespace: "default" },
        eventTime: "2024-01-01T00:00:00.000000Z",
        reportingController: "bpfproxy",
        reportingInstance: "node-1",
        action: "Sync",
        reason: "Programmed",
        type: "Normal",
        note: "service programmed",
        regarding: { kind: "Service", name: "web", namespace: "default" },
      };
      const r = await api(s, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev);
      assert.equal(r.status, 201);
      assert.equal(r.body.note, "service programmed");
      const core = await api(s, "GET", "/api/v1/namespaces/default/events/web.1");
      assert.equal(core.body.message, "service programmed");
      assert.equal(core.body.involvedObject.name, "web");
      assert.equal(core.body.reportingComponent, "bpfproxy");
      const sel = await api(s, "GET", "/api/v1/events?fieldSelector=involvedObject.kind%3DService,reason%3DProgrammed");
      assert.equal(sel.body.items.length, 1);
      const incomplete = await api(s, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", {
        ...ev,
        metadata: { name: "web.2" },
        action: undefined,
      });
      assert.equal(incomplete.status, 422);
      const coreEv = await api(s, "POST", "/api/v1/namespaces/default/events", {
        metadata: { name: "x.1" },
        involvedObject: { kind: "Node", name: "n1" },
        reason: "R",
        message: "m",
        type: "Warning",
      });
      assert.equal(coreEv.status, 201);
      assert.equal(s.store.list("events").length, 2);
    }));
});

describe("apiserver: list", () => {
  it("lists cluster-wide and per namespace with List kind and resourceVersion, selectors, limit/continue", () =>
    withServer(async (s) => {
      for (let i = 0; i < 7; i++)
        s.store.create(
          svc(`s${i}`, {
            metadata: { name: `s${i}`, namespace: i % 2 ? "ns-a" : "default", labels: { app: "x", idx: String(i) } },
          }),
        );
      const all = await api(s, "GET", "/api/v1/services");
      assert.equal(all.body.kind, "ServiceList");
      assert.equal(all.body.apiVersion, "v1");
      assert.equal(all.body.metadata.resourceVersion, s.store.resourceVersion);
      assert.equal(all.body.items.length, 7);
      assert.equal(all.body.items[0].kind, "Service");
      const ns = await api(s, "GET", "/api/v1/namespaces/ns-a/services");
      assert.equal(ns.body.items.length, 3);
      assert.ok(ns.body.items.every((o: Obj) => o.metadata.namespace === "ns-a"));
      const byName = await api(s, "GET", "/api/v1/services?fieldSelector=metadata.name%3Ds3");
      assert.deepEqual(
        byName.body.items.map((o: Obj) => o.metadata.name),
        ["s3"],
      );
      const notName = await api(s, "GET", "/api/v1/namespaces/default/services?fieldSelector=metadata.name!%3Ds0");
      assert.equal(notName.body.items.length, 3);
      const labels = await api(
        s,
        "GET",
        `/api/v1/services?labelSelector=${encodeURIComponent("idx in (1,2,5),app=x,!missing")}`,
      );
      assert.deepEqual(labels.body.items.map((o: Obj) => o.metadata.labels.idx).sort(), ["1", "2", "5"]);
      s.store.create(
        svc("headless", { metadata: { name: "headless", labels: { "service.kubernetes.io/headless": "" } } }),
      );
      const proxyable = await api(
        s,
        "GET",
        `/api/v1/services?labelSelector=${encodeURIComponent("!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name")}`,
      );
      assert.equal(proxyable.body.items.length, 7, "kube-proxy's selector leaves out the labelled service");
      s.store.delete("svc", "headless", "default");
      assert.equal((await api(s, "GET", "/api/v1/services?labelSelector=a%3D%3D%3D")).status, 400);
      assert.equal((await api(s, "GET", "/api/v1/services?fieldSelector=spec.nope%3D1")).status, 400);
      // paging from a consistent snapshot
      const p1 = await api(s, "GET", "/api/v1/services?limit=3");
      assert.equal(p1.body.items.length, 3);
      assert.equal(p1.body.metadata.remainingItemCount, 4);
      s.store.create(svc("zz-late"));
      const p2 = await api(
        s,
        "GET",
        `/api/v1/services?limit=3&continue=${encodeURIComponent(p1.body.metadata.continue)}`,
      );
      const p3 = await api(
        s,
        "GET",
        `/api/v1/services?limit=3&continue=${encodeURIComponent(p2.body.metadata.continue)}`,
      );
      assert.equal(p3.body.metadata.continue, undefined);
      assert.equal(p2.body.metadata.resourceVersion, p1.body.metadata.resourceVersion);
      const names = [...p1.body.items, ...p2.body.items, ...p3.body.items].map((o: Obj) => o.metadata.name);
      assert.equal(names.length, 7);
      assert.ok(!names.includes("zz-late"), "pages come from the snapshot of the first page");
      const p1b = await api(s, "GET", "/api/v1/services?limit=2");
      s.forceGone();
      const expired = await api(
        s,
        "GET",
        `/api/v1/services?limit=2&continue=${encodeURIComponent(p1b.body.metadata.continue)}`,
      );
      assert.equal(expired.status, 410);
      assert.equal(expired.body.reason, "Expired");
      assert.equal((await api(s, "GET", "/api/v1/namespaces/default/nodes")).status, 404);
      const nodes = await api(s, "GET", "/api/v1/nodes");
      assert.equal(nodes.body.kind, "NodeList");
      const table = await api(s, "GET", "/api/v1/namespaces/default/services", undefined, {
        accept: "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
      });
      assert.equal(table.body.kind, "Table");
      assert.equal(table.body.columnDefinitions[1].name, "Type");
    }));
});

describe("apiserver: watch", () => {
  it("streams ADDED/MODIFIED/DELETED after a resourceVersion and replays the history since it", () =>
    withServer(async (s) => {
      s.store.create(svc("before"));
      const rv0 = s.store.resourceVersion;
      s.store.create(svc("a"));
      const w = await openWatch(s, `/api/v1/services?watch=true&resourceVersion=${rv0}`);
      assert.equal(w.status, 200);
      await waitUntil(() => w.events.length === 1, "the replayed ADDED");
      assert.equal(w.events[0]!.type, "ADDED");
      assert.equal(w.events[0]!.object.metadata.name, "a");
      s.store.patch("svc", "a", "default", { metadata: { labels: { v: "2" } } });
      s.store.delete("svc", "a", "default");
      await waitUntil(() => w.events.length === 3, "MODIFIED and DELETED");
      assert.deepEqual(
        w.events.map((e) => e.type),
        ["ADDED", "MODIFIED", "DELETED"],
      );
      assert.equal(
        w.events[2]!.object.metadata.resourceVersion,
        s.store.resourceVersion,
        "DELETED carries the deletion's resourceVersion",
      );
      const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
      assert.deepEqual(
        [...rvs].sort((x, y) => x - y),
        rvs,
      );
      w.close();
    }));

  it("filters by namespace and selectors, turning selector transitions into ADDED/DELETED", () =>
    withServer(async (s) => {
      const w = await openWatch(
        s,
        `/api/v1/namespaces/default/services?watch=1&resourceVersion=${s.store.resourceVersion}&labelSelector=sel%3Dyes`,
      );
      s.store.create(svc("other", { metadata: { name: "other", namespace: "ns-b", labels: { sel: "yes" } } }));
      s.store.create(svc("x", { metadata: { name: "x", labels: { sel: "no" } } }));
      s.store.patch("svc", "x", "default", { metadata: { labels: { sel: "yes" } } });
      s.store.patch("svc", "x", "default", { metadata: { labels: { extra: "1" } } });
      s.store.patch("svc", "x", "default", { metadata: { labels: { sel: "no" } } });
      await waitUntil(() => w.events.length === 3, "three events");
      assert.deepEqual(
        w.events.map((e) => e.type),
        ["ADDED", "MODIFIED", "DELETED"],
      );
      assert.equal(
        w.events[2]!.object.metadata.labels.sel,
        "yes",
        "DELETED on leaving the selector shows the last matching state",
      );
      w.close();
    }));

  it("without a resourceVersion starts with the current state; sendInitialEvents ends it with a bookmark", () =>
    withServer(async (s) => {
      s.store.create(svc("a"));
      s.store.create(svc("b"));
      const w = await openWatch(s, "/api/v1/services?watch=true");
      await waitUntil(() => w.events.length === 2, "synthetic ADDED events");
      assert.ok(w.events.every((e) => e.type === "ADDED"));
      w.close();
      const w2 = await openWatch(
        s,
        "/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
      );
      await waitUntil(() => w2.events.length === 3, "initial events and bookmark");
      assert.equal(w2.events[2]!.type, "BOOKMARK");
      assert.equal(w2.events[2]!.object.metadata.annotations["k8s.io/initial-events-end"], "true");
      w2.close();
    }));

  it("sends periodic BOOKMARKs with the current resourceVersion and honours timeoutSeconds", () =>
    withServer(
      async (s) => {
        const w = await openWatch(
          s,
          `/api/v1/services?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=${s.store.resourceVersion}`,
        );
        s.store.create(svc("elsewhere", { metadata: { name: "n1" }, kind: "Node", apiVersion: "v1", spec: {} }));
        await Promise.race([w.ended, sleep(5000).then(() => assert.fail("timeoutSeconds not honoured"))]);
        const marks = w.events.filter((e) => e.type === "BOOKMARK");
        assert.ok(marks.length >= 2, `bookmarks: ${marks.length}`);
        assert.equal(marks.at(-1)!.object.metadata.resourceVersion, s.store.resourceVersion);
        assert.equal(marks[0]!.object.kind, "Service");
      },
      { bookmarkIntervalMs: 200 },
    ));

  it("answers 410 Expired for a resourceVersion older than the history, and forceGone() ends open watches", () =>
    withServer(
      async (s) => {
        const old = s.store.resourceVersion;
        for (let i = 0; i < 8; i++) s.store.create(svc(`s${i}`));
        const w = await openWatch(s, `/api/v1/services?watch=true&resourceVersion=${old}`);
        await w.ended;
        assert.equal(w.status, 200);
        assert.equal(w.events.length, 1);
        assert.equal(w.events[0]!.type, "ERROR");
        assert.equal(w.events[0]!.object.code, 410);
        assert.equal(w.events[0]!.object.reason, "Expired");
        assert.match(w.events[0]!.object.message, /too old resource version/);
        const live = await openWatch(s, `/api/v1/services?watch=true&resourceVersion=${s.store.resourceVersion}`);
        await s.waitForWatches(1);
        const before = s.store.resourceVersion;
        s.forceGone();
        await live.ended;
        assert.equal(live.events.at(-1)!.type, "ERROR");
        assert.equal(live.events.at(-1)!.object.code, 410);
        const again = await openWatch(s, `/api/v1/services?watch=true&resourceVersion=${Number(before) - 1}`);
        await again.ended;
        assert.equal(again.events[0]!.object.code, 410);
        const future = await openWatch(
          s,
          `/api/v1/services?watch=true&resourceVersion=${Number(s.store.resourceVersion) + 100}`,
        );
        await future.ended;
        assert.equal(future.events[0]!.object.code, 410, "a resourceVersion from the future makes the client relist");
        const fresh = await openWatch(s, `/api/v1/services?watch=true&resourceVersion=${s.store.resourceVersion}`);
        s.store.create(svc("after"));
        await waitUntil(() => fresh.events.length === 1, "an event after relist");
        fresh.close();
      },
      { historyLimit: 5 },
    ));

  it("silenceWatches() stops events and bookmarks without closing the watch; new watches too until cancelled", () =>
    withServer(
      async (s) => {
        const path = "/api/v1/services?watch=true&allowWatchBookmarks=true&resourceVersion=" + s.store.resourceVersion;
        const w = await openWatch(s, path);
        await waitUntil(() => w.events.some((e) => e.type === "BOOKMARK"), "a bookmark before the silence");
        const { count, cancel } = s.silenceWatches({ newWatches: true });
        assert.equal(count, 1);
        const seen = w.events.length;
        s.store.create(svc("unseen"));
        const later = await openWatch(s, path);
        await sleep(400); // four bookmark intervals
        assert.equal(w.events.length, seen, "nothing more on the silent watch");
        assert.equal(later.events.length, 0, "nothing on a watch opened while silent");
        assert.equal(s.openWatches().length, 2, "both stay open");
        cancel();
        const fresh = await openWatch(s, path);
        await waitUntil(
          () => fresh.events.some((e) => e.type === "BOOKMARK"),
          "bookmarks on a watch opened after cancel",
        );
        for (const x of [w, later, fresh]) x.close();
      },
      { bookmarkIntervalMs: 100 },
    ));

  it("failRequests() with delayMs and slowOnly answers late and correctly; without slowOnly late and failed", () =>
    withServer(async (s) => {
      s.store.create(svc("a"));
      s.failRequests({ verb: "list", resource: "services" }, { delayMs: 500, slowOnly: true });
      let t = Date.now();
      const slow = await api(s, "GET", "/api/v1/services");
      assert.ok(Date.now() - t >= 480, `answered after ${Date.now() - t} ms`);
      assert.equal(slow.status, 200);
      assert.deepEqual(
        slow.body.items.map((o: Obj) => o.metadata.name),
        ["a"],
      );
      s.failRequests({ verb: "list", resource: "services" }, { delayMs: 300, code: 503 });
      t = Date.now();
      assert.equal((await api(s, "GET", "/api/v1/services")).status, 503);
      assert.ok(Date.now() - t >= 280);
      assert.equal((await api(s, "GET", "/api/v1/services")).status, 200, "one request only");
    }));

  it("dropWatches() cuts the connections; restart() keeps port and store; failRequests() injects errors", async () => {
    const s = await startApiServer({ host: "127.0.0.1", port: 0 });
    try {
      const w = await openWatch(s, "/api/v1/services?watch=true&resourceVersion=" + s.store.resourceVersion);
      await s.waitForWatches(1, { resource: "services" });
      assert.equal(s.dropWatches(), 1);
      await w.ended;
      assert.equal(s.openWatches().length, 0);
      const port = s.port;
      s.store.create(svc("kept"));
      await s.stop();
      assert.equal(s.running, false);
      await assert.rejects(fetch(s.url + "/version", { signal: AbortSignal.timeout(2000) }));
      s.store.create(svc("while-down"));
      await s.start();
      assert.equal(s.port, port);
      const list = await api(s, "GET", "/api/v1/namespaces/default/services");
      assert.deepEqual(list.body.items.map((o: Obj) => o.metadata.name).sort(), ["kept", "while-down"]);
      s.failRequests({ verb: "list", resource: "services" }, { code: 503, times: 1 });
      assert.equal((await api(s, "GET", "/api/v1/services")).status, 503);
      assert.equal((await api(s, "GET", "/api/v1/services")).status, 200);
      assert.ok(s.countRequests({ verb: "list", resource: "services" }) >= 2);
      assert.ok(s.requests.some((r) => r.verb === "watch" && r.resource === "services"));
    } finally {
      await s.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------------

const SVC_YAML = `apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.244.1.5"]
  conditions:
    ready: true
  nodeName: node-a
`;

describe("apiserver: real kubectl", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "apiserver-kubectl-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function kubectl(
    s: ApiServer,
    sub: string,
    args: string[],
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const home = join(dir, sub);
    const kc = s.writeKubeconfig(join(dir, `${sub}.kubeconfig`));
    return new Promise((resolve) => {
      execFile(
        "kubectl",
        ["--kubeconfig", kc, "--cache-dir", join(home, "cache"), ...args],
        { timeout: 30_000, env: { ...process.env, KUBECONFIG: kc, HOME: home } },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }

  async function ok(s: ApiServer, sub: string, args: string[]): Promise<string> {
    const r = await kubectl(s, sub, args);
    assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /warning|error/i, `kubectl ${args.join(" ")} complained: ${r.stderr}`);
    return r.stdout;
  }

  for (const aggregatedDiscovery of [true, false]) {
    it(`create/get/replace/apply/delete -f without extra flags (${aggregatedDiscovery ? "aggregated" : "legacy"} discovery)`, () =>
      withServer(
        async (s) => {
          const sub = aggregatedDiscovery ? "agg" : "legacy";
          const file = join(dir, `${sub}.yaml`);
          writeFileSync(file, SVC_YAML);
          assert.match(
            await ok(s, sub, ["create", "-f", file]),
            /service\/web created\nendpointslice.discovery.k8s.io\/web-abc12 created/,
          );
          if (aggregatedDiscovery)
            assert.ok(s.requests.some((r) => r.kind === "discovery" && /APIGroupDiscoveryList/.test(r.accept ?? "")));
          else
            assert.ok(
              s.requests.some((r) => r.path === "/api/v1"),
              "legacy discovery fetched /api/v1",
            );
          const got = JSON.parse(await ok(s, sub, ["get", "svc", "web", "-o", "json"]));
          assert.equal(got.metadata.name, "web");
          assert.match(got.spec.clusterIP, /^10\./);
          const list = JSON.parse(await ok(s, sub, ["get", "endpointslices", "-o", "json"]));
          assert.equal(list.items[0].endpoints[0].addresses[0], "10.244.1.5");
          const table = await ok(s, sub, ["get", "svc,ep,no,endpointslices", "-A"]);
          assert.match(table, /service\/web\s+ClusterIP\s+10\.\d+\.\d+\.\d+\s+<none>\s+80\/TCP/);
          assert.match(await ok(s, sub, ["get", "ns"]), /kube-system\s+Active/);
          writeFileSync(
            file,
            SVC_YAML.replace("port: 80\n", "port: 8080\n").replace('["10.244.1.5"]', '["10.244.1.6"]'),
          );
          assert.match(await ok(s, sub, ["replace", "-f", file]), /service\/web replaced/);
          assert.equal(s.store.get("svc", "web")!.spec.ports[0].port, 8080);
          assert.equal(s.store.get("svc", "web")!.spec.clusterIP, got.spec.clusterIP);
          // apply over an object created by create: kubectl warns about the missing annotation, as against a real cluster
          const first = await kubectl(s, sub, ["apply", "-f", file]);
          assert.equal(first.code, 0, first.stderr);
          writeFileSync(file, SVC_YAML.replace("port: 80\n", "port: 9090\n"));
          assert.match(await ok(s, sub, ["apply", "--dry-run=client", "-f", file]), /configured \(dry run\)/);
          assert.equal(s.store.get("svc", "web")!.spec.ports[0].port, 8080);
          assert.match(await ok(s, sub, ["apply", "--dry-run=server", "-f", file]), /server dry run/);
          assert.match(await ok(s, sub, ["apply", "-f", file]), /service\/web configured/);
          const svcNow = s.store.get("svc", "web")!;
          assert.deepEqual(
            svcNow.spec.ports.map((p: Obj) => p.port),
            [9090],
            "the strategic merge patch replaced port 8080 by 9090",
          );
          assert.ok(svcNow.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]);
          assert.deepEqual(s.store.get("endpointslices", "web-abc12")!.endpoints[0].addresses, ["10.244.1.5"]);
          assert.match(await ok(s, sub, ["label", "svc", "web", "tier=front"]), /labeled/);
          assert.match(
            await ok(s, sub, ["patch", "svc", "web", "--type=merge", "-p", '{"spec":{"type":"NodePort"}}']),
            /patched/,
          );
          assert.ok(s.store.get("svc", "web")!.spec.ports[0].nodePort >= 30000);
          assert.match(
            await ok(s, sub, ["delete", "-f", file]),
            /service "web" deleted\nendpointslice.discovery.k8s.io "web-abc12" deleted/,
          );
          assert.equal(s.store.list("svc", "default").length, 0);
          assert.match(await ok(s, sub, ["apply", "-f", file]), /service\/web created/);
          const err = await kubectl(s, sub, ["get", "svc", "nope"]);
          assert.notEqual(err.code, 0);
          assert.match(err.stderr, /services "nope" not found/);
          const dup = await kubectl(s, sub, ["create", "-f", file]);
          assert.match(dup.stderr, /AlreadyExists|already exists/);
          assert.match(await ok(s, sub, ["describe", "svc", "web"]), /IP:\s+10\./);
          // typed-client generators send protobuf, which this server refuses clearly
          const proto = await kubectl(s, sub, ["create", "namespace", "team"]);
          assert.notEqual(proto.code, 0);
          assert.match(proto.stderr, /unknown format.*use kubectl create\/apply -f/);
        },
        { aggregatedDiscovery },
      ));
  }

  it("kubectl get -w follows changes", () =>
    withServer(async (s) => {
      s.store.create(svc("web"));
      const sub = "watch";
      const watching = kubectl(s, sub, ["get", "svc", "-w", "-o", "name", "--request-timeout=3s"]);
      await s.waitForWatches(1, { resource: "services" }, 15_000);
      s.store.create(svc("second"));
      const r = await watching;
      assert.match(r.stdout, /service\/web\n(.|\n)*service\/second/);
    }));
});

// ---------------------------------------------------------------------------------------------

interface Tracked<T extends KubernetesObject> {
  adds: string[];
  updates: string[];
  deletes: string[];
  errors: number;
  informer: ReturnType<typeof makeInformer<T>>;
  stop(): Promise<void>;
}

/** Starts an informer the way bpfproxy does: on 'error', start() again after a bounded backoff. */
async function track<T extends KubernetesObject>(
  s: ApiServer,
  path: string,
  list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>,
): Promise<Tracked<T>> {
  const kc = new KubeConfig();
  kc.loadFromOptions(s.kubeConfigOptions());
  const informer = makeInformer<T>(kc, path, list);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const t: Tracked<T> = {
    adds: [],
    updates: [],
    deletes: [],
    errors: 0,
    informer,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await informer.stop();
    },
  };
  const id = (o: T) => `${o.metadata?.namespace}/${o.metadata?.name}`;
  informer.on("add", (o) => t.adds.push(id(o)));
  informer.on("update", (o) => t.updates.push(id(o)));
  informer.on("delete", (o) => t.deletes.push(id(o)));
  informer.on("error", () => {
    t.errors++;
    if (stopped) return;
    const delay = Math.min(50 * 2 ** Math.min(t.errors, 5), 500);
    timer = setTimeout(() => {
      if (!stopped) void informer.start();
    }, delay);
  });
  await informer.start();
  return t;
}

describe("apiserver: client-node informers", () => {
  async function setup(s: ApiServer) {
    const kc = new KubeConfig();
    kc.loadFromOptions(s.kubeConfigOptions());
    const core = kc.makeApiClient(CoreV1Api);
    const disc = kc.makeApiClient(DiscoveryV1Api);
    const services = await track<V1Service>(s, "/api/v1/services", () => core.listServiceForAllNamespaces());
    const slices = await track<V1EndpointSlice>(s, "/apis/discovery.k8s.io/v1/endpointslices", () =>
      disc.listEndpointSliceForAllNamespaces(),
    );
    await s.waitForWatches(2);
    return { core, disc, services, slices, stop: () => Promise.all([services.stop(), slices.stop()]) };
  }

  it("fire add/update/delete for services and endpointslices, for changes made over HTTP and in the store", () =>
    withServer(async (s) => {
      s.store.create(svc("pre"));
      const { core, disc, services, slices, stop } = await setup(s);
      try {
        assert.deepEqual(services.adds, ["default/pre"]);
        await core.createNamespacedService({ namespace: "default", body: svc("web") });
        await disc.createNamespacedEndpointSlice({
          namespace: "default",
          body: slice("web-1", "web", ["10.1.0.1"]) as V1EndpointSlice,
        });
        await waitUntil(() => services.adds.includes("default/web") && slices.adds.includes("default/web-1"), "adds");
        await core.patchNamespacedService(
          { namespace: "default", name: "web", body: { metadata: { labels: { v: "2" } } } },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
        s.store.patch("endpointslices", "web-1", "default", {
          endpoints: [{ addresses: ["10.1.0.2"], conditions: { ready: true } }],
        });
        await waitUntil(
          () => services.updates.includes("default/web") && slices.updates.includes("default/web-1"),
          "updates",
        );
        assert.equal(slices.informer.get("web-1", "default")?.endpoints[0]?.addresses[0], "10.1.0.2");
        await core.deleteNamespacedService({ namespace: "default", name: "web" });
        s.store.delete("endpointslices", "web-1", "default");
        await waitUntil(
          () => services.deletes.includes("default/web") && slices.deletes.includes("default/web-1"),
          "deletes",
        );
        assert.deepEqual(
          services.informer.list().map((o) => o.metadata?.name),
          ["pre"],
        );
        assert.equal(services.errors + slices.errors, 0);
      } finally {
        await stop();
      }
    }));

  it("relist after forceGone() and keep working", () =>
    withServer(async (s) => {
      const { services, stop } = await setup(s);
      try {
        s.store.create(svc("a"));
        await waitUntil(() => services.adds.includes("default/a"), "add a");
        const lists = s.countRequests({ verb: "list", resource: "services" });
        s.forceGone();
        await waitUntil(() => s.countRequests({ verb: "list", resource: "services" }) > lists, "a relist");
        await s.waitForWatches(2);
        s.store.create(svc("b"));
        s.store.delete("svc", "a", "default");
        await waitUntil(
          () => services.adds.includes("default/b") && services.deletes.includes("default/a"),
          "changes after the relist",
        );
        assert.deepEqual(
          services.informer.list().map((o) => o.metadata?.name),
          ["b"],
        );
      } finally {
        await stop();
      }
    }));

  it("reconnect after dropWatches() without losing changes", () =>
    withServer(async (s) => {
      const { services, slices, stop } = await setup(s);
      try {
        for (let round = 0; round < 3; round++) {
          const watchesBefore = s.countRequests({ verb: "watch" });
          assert.equal(s.dropWatches(), 2);
          s.store.create(svc(`r${round}`));
          s.store.create(slice(`r${round}-x`, `r${round}`, ["10.2.0.1"]));
          await waitUntil(
            () => services.adds.includes(`default/r${round}`) && slices.adds.includes(`default/r${round}-x`),
            `round ${round} changes`,
          );
          await waitUntil(() => s.countRequests({ verb: "watch" }) >= watchesBefore + 2, "new watches");
        }
        await s.waitForWatches(2);
      } finally {
        await stop();
      }
    }));

  it("converge after the server is down and back on the same port, with changes made meanwhile", () =>
    withServer(async (s) => {
      s.store.create(svc("stay"));
      s.store.create(svc("goes"));
      const { services, slices, stop } = await setup(s);
      try {
        await s.stop();
        s.store.create(svc("new"));
        s.store.delete("svc", "goes", "default");
        s.store.patch("svc", "stay", "default", { metadata: { labels: { changed: "yes" } } });
        s.store.create(slice("new-1", "new", ["10.3.0.1"]));
        await sleep(700);
        assert.ok(services.errors > 0, "the informer saw the outage");
        await s.start();
        await waitUntil(
          () =>
            services.adds.includes("default/new") &&
            services.deletes.includes("default/goes") &&
            services.informer.get("stay", "default")?.metadata?.labels?.changed === "yes" &&
            slices.adds.includes("default/new-1"),
          "convergence after restart",
        );
        await s.waitForWatches(2);
        s.store.create(svc("later"));
        await waitUntil(() => services.adds.includes("default/later"), "live again");
      } finally {
        await stop();
      }
    }));

  it("converge by relisting when the history was lost while the server was down", () =>
    withServer(async (s) => {
      s.store.create(svc("stay"));
      s.store.create(svc("goes"));
      const { services, stop } = await setup(s);
      try {
        await s.stop();
        s.store.delete("svc", "goes", "default");
        s.store.create(svc("new"));
        s.store.compact();
        await s.start();
        await waitUntil(
          () => services.adds.includes("default/new") && services.deletes.includes("default/goes"),
          "relist after 410",
        );
        assert.deepEqual(
          services.informer
            .list()
            .map((o) => o.metadata?.name)
            .sort(),
          ["new", "stay"],
        );
      } finally {
        await stop();
      }
    }));
});
