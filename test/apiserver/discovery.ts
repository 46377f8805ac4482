// Discovery documents (legacy and aggregated v2) and a minimal OpenAPI v3 that lets kubectl do its field
// validation check and strategic-merge-patch fallback without client-side schema validation.
import { createHash } from "node:crypto";
import { type Obj } from "./errors.js";
import { apiVersionOf, type ResourceDef } from "./resources.js";

export const SERVER_VERSION = {
  major: "1",
  minor: "32",
  gitVersion: "v1.32.0-bpfproxy-test",
  gitCommit: "0000000000000000000000000000000000000000",
  gitTreeState: "clean",
  buildDate: "2024-12-11T00:00:00Z",
  goVersion: "go1.23.4",
  compiler: "gc",
  platform: "linux/amd64",
};

export interface GroupVersion {
  group: string;
  version: string;
}

export function groupVersions(defs: ResourceDef[]): GroupVersion[] {
  const seen = new Map<string, GroupVersion>();
  for (const d of defs) seen.set(apiVersionOf(d), { group: d.group, version: d.version });
  return [...seen.values()];
}

const subresourceVerbs = (sub: string) => (sub === "finalize" ? ["update"] : ["get", "patch", "update"]);

export function apiResourceList(defs: ResourceDef[], gv: GroupVersion): Obj {
  const resources: Obj[] = [];
  for (const d of defs.filter((x) => x.group === gv.group && x.version === gv.version)) {
    const r: Obj = {
      name: d.resource,
      singularName: d.singular,
      namespaced: d.namespaced,
      kind: d.kind,
      verbs: d.verbs,
    };
    if (d.shortNames?.length) r.shortNames = d.shortNames;
    if (d.categories?.length) r.categories = d.categories;
    r.storageVersionHash = createHash("sha256")
      .update(`${d.group}/${d.version}/${d.kind}`)
      .digest("base64")
      .slice(0, 11);
    resources.push(r);
    for (const sub of d.subresources ?? [])
      resources.push({
        name: `${d.resource}/${sub}`,
        singularName: "",
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: subresourceVerbs(sub),
      });
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion: apiVersionOf(gv), resources };
}

export function apiVersions(serverAddress: string): Obj {
  return {
    kind: "APIVersions",
    versions: ["v1"],
    serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress }],
  };
}

export function apiGroup(gvs: GroupVersion[], group: string): Obj | undefined {
  const versions = gvs
    .filter((g) => g.group === group)
    .map((g) => ({ groupVersion: apiVersionOf(g), version: g.version }));
  if (!versions.length) return undefined;
  return { kind: "APIGroup", apiVersion: "v1", name: group, versions, preferredVersion: versions[0] };
}

export function apiGroupList(gvs: GroupVersion[]): Obj {
  const groups = [...new Set(gvs.filter((g) => g.group).map((g) => g.group))].map((g) => {
    const x = apiGroup(gvs, g)!;
    delete x.kind;
    delete x.apiVersion;
    return x;
  });
  return { kind: "APIGroupList", apiVersion: "v1", groups };
}

/** The v2 (or v2beta1) aggregated discovery document for /api (core) or /apis (named groups). */
export function aggregatedDiscovery(defs: ResourceDef[], core: boolean, apiVersion: string): Obj {
  const gvs = groupVersions(defs).filter((g) => (core ? g.group === "" : g.group !== ""));
  const groups = [...new Set(gvs.map((g) => g.group))];
  return {
    kind: "APIGroupDiscoveryList",
    apiVersion,
    metadata: {},
    items: groups.map((group) => ({
      metadata: group ? { name: group, creationTimestamp: null } : { creationTimestamp: null },
      versions: gvs
        .filter((g) => g.group === group)
        .map((gv) => ({
          version: gv.version,
          freshness: "Current",
          resources: defs
            .filter((d) => d.group === gv.group && d.version === gv.version)
            .map((d) => {
              const r: Obj = {
                resource: d.resource,
                responseKind: { group: d.group, version: d.version, kind: d.kind },
                scope: d.namespaced ? "Namespaced" : "Cluster",
                singularResource: d.singular,
                verbs: d.verbs,
              };
              if (d.shortNames?.length) r.shortNames = d.shortNames;
              if (d.categories?.length) r.categories = d.categories;
              if (d.subresources?.length)
                r.subresources = d.subresources.map((s) => ({
                  subresource: s,
                  responseKind: { group: d.group, version: d.version, kind: d.kind },
                  verbs: subresourceVerbs(s),
                }));
              return r;
            }),
        })),
    })),
  };
}

export const gvPath = (gv: GroupVersion) => (gv.group ? `apis/${gv.group}/${gv.version}` : `api/${gv.version}`);

/**
 * OpenAPI v3 for one group/version: only paths, no schemas. Each PATCH operation names its GVK and the
 * fieldValidation query parameter, so kubectl's --validate=strict (its default) leaves validation to the server
 * rather than fetching schemas; the PATCH operations have no requestBody, so `kubectl apply` computes its
 * strategic merge patch from its compiled-in types.
 */
export function openapiV3Doc(defs: ResourceDef[], gv: GroupVersion): Obj {
  const paths: Obj = {};
  const param = (name: string, loc: string) => ({ name, in: loc, schema: { type: "string", uniqueItems: true } });
  const queryParams = ["dryRun", "fieldManager", "fieldValidation", "pretty"].map((n) => param(n, "query"));
  for (const d of defs.filter((x) => x.group === gv.group && x.version === gv.version)) {
    const gvk = { group: d.group, version: d.version, kind: d.kind };
    const base = `/${gvPath(gv)}${d.namespaced ? "/namespaces/{namespace}" : ""}/${d.resource}`;
    const op = (action: string, extra: Obj[] = []) => ({
      operationId: `${action}${d.kind}`,
      parameters: [...extra, ...queryParams],
      responses: { "200": { description: "OK" } },
      "x-kubernetes-action": action,
      "x-kubernetes-group-version-kind": gvk,
    });
    const nsParam = d.namespaced ? [param("namespace", "path")] : [];
    paths[base] = { get: op("list", nsParam), post: op("post", nsParam) };
    paths[`${base}/{name}`] = {
      get: op("get", [...nsParam, param("name", "path")]),
      put: op("put", [...nsParam, param("name", "path")]),
      patch: op("patch", [...nsParam, param("name", "path")]),
      delete: op("delete", [...nsParam, param("name", "path")]),
    };
  }
  return {
    openapi: "3.0.0",
    info: { title: "Kubernetes", version: SERVER_VERSION.gitVersion },
    paths,
    components: { schemas: {} },
  };
}

export function openapiV3Index(defs: ResourceDef[]): Obj {
  const paths: Obj = {};
  for (const gv of groupVersions(defs)) {
    const hash = createHash("sha512")
      .update(JSON.stringify(openapiV3Doc(defs, gv)))
      .digest("hex")
      .slice(0, 64)
      .toUpperCase();
    paths[gvPath(gv)] = { serverRelativeURL: `/openapi/v3/${gvPath(gv)}?hash=${hash}` };
  }
  return { paths };
}
