// deploy/: the manifests go through the real kubectl (client-side dry run) and a deliberately broken copy
// fails; the objects carry what a kube-proxy replacement needs; the Helm chart renders the same objects.
//
// kubectl's client dry run still needs the server's discovery (REST mapping) and looks the objects up
// before "creating" them, so the test serves a tiny read-only discovery endpoint on 127.0.0.1 that knows
// the kinds deploy/ uses and answers 404 for every object. Schema validation would need the server's
// OpenAPI documents, which do not exist offline, hence --validate=false; kubectl still rejects broken
// YAML, objects without kind/apiVersion, and unknown kinds or API versions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse as parseYAML, stringify } from "yaml";
import { parseConfigText } from "../src/config.js";
import type {
  KubernetesObject,
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1ConfigMap,
  V1DaemonSet,
} from "@kubernetes/client-node";

const DEPLOY = fileURLToPath(new URL("../deploy/", import.meta.url));
const KUBECTL = "kubectl"; // from PATH, as scripts/setup.sh checks

/** A manifest as parsed: a Kubernetes object whose other fields the test narrows to client-node's types. */
type Obj = KubernetesObject & Record<string, unknown>;

interface Res {
  name: string;
  singularName: string;
  namespaced: boolean;
  kind: string;
}
const GROUPS: Record<string, Res[]> = {
  v1: [
    { name: "namespaces", singularName: "namespace", namespaced: false, kind: "Namespace" },
    { name: "serviceaccounts", singularName: "serviceaccount", namespaced: true, kind: "ServiceAccount" },
    { name: "configmaps", singularName: "configmap", namespaced: true, kind: "ConfigMap" },
    { name: "services", singularName: "service", namespaced: true, kind: "Service" },
    { name: "nodes", singularName: "node", namespaced: false, kind: "Node" },
  ],
  "apps/v1": [{ name: "daemonsets", singularName: "daemonset", namespaced: true, kind: "DaemonSet" }],
  "rbac.authorization.k8s.io/v1": [
    { name: "clusterroles", singularName: "clusterrole", namespaced: false, kind: "ClusterRole" },
    { name: "clusterrolebindings", singularName: "clusterrolebinding", namespaced: false, kind: "ClusterRoleBinding" },
    { name: "roles", singularName: "role", namespaced: true, kind: "Role" },
    { name: "rolebindings", singularName: "rolebinding", namespaced: true, kind: "RoleBinding" },
  ],
};
const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/** Legacy discovery (/api, /apis, /api/v1, /apis/G/V) and 404 for everything else. */
function discoveryServer(): Server {
  return createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (path === "/api")
      return json(200, {
        kind: "APIVersions",
        versions: ["v1"],
        serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }],
      });
    if (path === "/apis") {
      const groups = Object.keys(GROUPS)
        .filter((gv) => gv.includes("/"))
        .map((gv) => {
          const [name, version] = gv.split("/");
          const v = { groupVersion: gv, version };
          return { name, versions: [v], preferredVersion: v };
        });
      return json(200, { kind: "APIGroupList", apiVersion: "v1", groups });
    }
    const gv =
      path === "/api/v1" ? "v1" : path.startsWith("/apis/") && path.split("/").length === 4 ? path.slice(6) : undefined;
    if (gv && GROUPS[gv]) {
      return json(200, {
        kind: "APIResourceList",
        apiVersion: "v1",
        groupVersion: gv,
        resources: GROUPS[gv].map((r) => ({ ...r, verbs: VERBS })),
      });
    }
    if (path === "/version") return json(200, { major: "1", minor: "32", gitVersion: "v1.32.0" });
    json(404, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "the server could not find the requested resource",
      reason: "NotFound",
      code: 404,
    });
  });
}

let server: Server;
let serverURL = "";
let work = "";

before(async () => {
  work = await mkdtemp(join(tmpdir(), "bpfproxy-deploy-"));
  server = discoveryServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  serverURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(work, { recursive: true, force: true });
});

function kubectl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      KUBECTL,
      [...args, `--server=${serverURL}`, `--cache-dir=${join(work, "cache")}`, "--request-timeout=10s"],
      {
        timeout: 60_000,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, KUBECONFIG: join(work, "no-kubeconfig") },
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** kubectl apply --dry-run=client on a directory; returns the objects kubectl would apply. */
async function dryRunApply(dir: string): Promise<{ code: number; objects: Obj[]; stderr: string }> {
  const r = await kubectl(["apply", "--dry-run=client", "--validate=false", "-o", "yaml", "-f", dir]);
  if (r.code !== 0) return { code: r.code, objects: [], stderr: r.stderr };
  const out = parseYAML(r.stdout) as Obj;
  const objects = out.kind === "List" ? (out as unknown as { items: Obj[] }).items : [out];
  return { code: 0, objects, stderr: r.stderr };
}

async function manifestObjects(dir: string): Promise<Obj[]> {
  const files = (await readdir(dir)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
  const out: Obj[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(await readFile(join(dir, f), "utf8"))) {
      assert.equal(doc.errors.length, 0, `${f}: ${doc.errors.map((e) => e.message).join("; ")}`);
      const o = doc.toJS() as Obj | null;
      if (o) out.push(o);
    }
  }
  return out;
}

const key = (o: Obj) => `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
const EXPECTED = [
  "ClusterRole//bpfproxy",
  "ClusterRoleBinding//bpfproxy",
  "ConfigMap/kube-system/bpfproxy",
  "DaemonSet/kube-system/bpfproxy",
  "ServiceAccount/kube-system/bpfproxy",
];

test("kubectl accepts deploy/ (client-side dry run)", async () => {
  const r = await dryRunApply(DEPLOY);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.objects.map(key).sort(), EXPECTED);
});

test("kubectl rejects a broken copy of deploy/", async () => {
  const objects = await readdir(DEPLOY);
  const cases: Array<[string, (files: Record<string, string>) => void, RegExp]> = [
    [
      "broken YAML",
      (f) => (f["03-daemonset.yaml"] = f["03-daemonset.yaml"]!.replace("spec:\n  selector:", "spec:\n  selector: [\n")),
      /error parsing .*03-daemonset\.yaml/,
    ],
    [
      "unknown kind",
      (f) => (f["03-daemonset.yaml"] = f["03-daemonset.yaml"]!.replace("kind: DaemonSet", "kind: DaemonSett")),
      /no matches for kind "DaemonSett"/,
    ],
    [
      "unknown API version",
      (f) =>
        (f["01-rbac.yaml"] = f["01-rbac.yaml"]!.replace(
          /rbac\.authorization\.k8s\.io\/v1\nkind: ClusterRole\n/,
          "rbac.authorization.k8s.io/v2\nkind: ClusterRole\n",
        )),
      /no matches for kind "ClusterRole" in version "rbac\.authorization\.k8s\.io\/v2"/,
    ],
    [
      "missing kind",
      (f) => (f["00-serviceaccount.yaml"] = f["00-serviceaccount.yaml"]!.replace("kind: ServiceAccount\n", "")),
      /Object 'Kind' is missing/,
    ],
  ];
  for (const [name, breakIt, why] of cases) {
    const dir = join(work, name.replace(/\W+/g, "-"));
    await mkdir(dir, { recursive: true });
    const files: Record<string, string> = {};
    for (const f of objects.filter((x) => x.endsWith(".yaml"))) files[f] = await readFile(join(DEPLOY, f), "utf8");
    const before = JSON.stringify(files);
    breakIt(files);
    assert.notEqual(JSON.stringify(files), before, `${name}: the edit applied`);
    for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
    const r = await dryRunApply(dir);
    assert.notEqual(r.code, 0, `${name}: kubectl should fail`);
    assert.match(r.stderr, why, `${name}: kubectl says why`);
  }
});

test("the objects carry what a kube-proxy replacement needs", async () => {
  const objs = await manifestObjects(DEPLOY);
  const by = new Map(objs.map((o) => [key(o), o]));
  // The manifest under `k`, as the client-node type of its kind (a parse boundary: kubectl checks the schema).
  const get = <T>(k: string): T => {
    const o = by.get(k);
    assert.ok(o, `${k} is in deploy/`);
    return o as unknown as T;
  };
  const ds = get<V1DaemonSet>("DaemonSet/kube-system/bpfproxy");
  const pod = ds.spec!.template.spec!;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.priorityClassName, "system-node-critical");
  assert.equal(pod.serviceAccountName, "bpfproxy");
  assert.deepEqual(pod.tolerations, [{ operator: "Exists" }]);
  assert.deepEqual(ds.spec!.updateStrategy, { type: "RollingUpdate", rollingUpdate: { maxUnavailable: "10%" } });

  const c = pod.containers[0]!;
  assert.deepEqual(c.env, [{ name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } }]);
  assert.ok(c.args?.includes("--hostname-override=$(NODE_NAME)"));
  assert.ok(c.args?.includes("--config=/etc/bpfproxy/config.conf"));
  assert.deepEqual([c.livenessProbe?.httpGet?.path, c.livenessProbe?.httpGet?.port], ["/livez", 10256]);
  assert.deepEqual([c.readinessProbe?.httpGet?.path, c.readinessProbe?.httpGet?.port], ["/healthz", 10256]);
  // Least privilege: exactly the capabilities the daemon was shown to need (e2e-reliability runs it with them).
  assert.equal(c.securityContext?.privileged, false);
  assert.deepEqual(c.securityContext?.capabilities, { drop: ["ALL"], add: ["BPF", "NET_ADMIN", "PERFMON"] });
  assert.equal(c.securityContext?.allowPrivilegeEscalation, false);

  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const mounts = new Map((c.volumeMounts ?? []).map((m) => [m.mountPath, m]));
  const hostPathOf = (mountPath: string) => volumes.get(mounts.get(mountPath)?.name ?? "")?.hostPath?.path;
  assert.equal(hostPathOf("/sys/fs/bpf"), "/sys/fs/bpf");
  assert.equal(hostPathOf("/lib/modules"), "/lib/modules");
  assert.equal(mounts.get("/lib/modules")?.readOnly, true);
  assert.equal(hostPathOf("/run/xtables.lock"), "/run/xtables.lock");
  assert.equal(hostPathOf("/run/bpfproxy/cgroupv2"), "/sys/fs/cgroup");
  assert.equal(volumes.get(mounts.get("/etc/bpfproxy")?.name ?? "")?.configMap?.name, "bpfproxy");
  // Bidirectional propagation (privileged init container) makes a bpffs it mounts visible to the host.
  const init = pod.initContainers?.[0];
  const initMount = init?.volumeMounts?.[0];
  assert.equal(init?.securityContext?.privileged, true);
  assert.equal(initMount?.mountPropagation, "Bidirectional");
  assert.equal(volumes.get(initMount?.name ?? "")?.hostPath?.path, "/sys/fs/bpf");

  const cr = get<V1ClusterRole>("ClusterRole//bpfproxy");
  const can = (group: string, resource: string, verb: string) =>
    (cr.rules ?? []).some(
      (r) => r.apiGroups?.includes(group) && r.resources?.includes(resource) && r.verbs.includes(verb),
    );
  for (const v of ["list", "watch"]) {
    assert.ok(can("", "services", v));
    assert.ok(can("discovery.k8s.io", "endpointslices", v));
    assert.ok(can("", "nodes", v));
  }
  assert.ok(can("", "nodes", "get"));
  for (const v of ["create", "patch", "update"]) {
    assert.ok(can("", "events", v));
    assert.ok(can("events.k8s.io", "events", v));
  }
  const crb = get<V1ClusterRoleBinding>("ClusterRoleBinding//bpfproxy");
  assert.deepEqual(crb.subjects, [{ kind: "ServiceAccount", name: "bpfproxy", namespace: "kube-system" }]);
  assert.equal(crb.roleRef.name, "bpfproxy");

  const cm = get<V1ConfigMap>("ConfigMap/kube-system/bpfproxy");
  const parsed = parseConfigText(cm.data?.["config.conf"] ?? "", "deploy/02-configmap.yaml");
  assert.equal(parsed.config.bpffs, "/sys/fs/bpf/bpfproxy", "pins under the mounted bpffs");
  assert.equal(parsed.config.cgroupPath, "/run/bpfproxy/cgroupv2", "the mounted host cgroup2");
});

test("Dockerfile: multi-stage build, slim runtime with libbpf, entrypoint `node dist/cli.js run`", async () => {
  const df = await readFile(join(DEPLOY, "Dockerfile"), "utf8");
  const froms = [...df.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assert.deepEqual(froms, ["node:20-bookworm", "node:20-bookworm-slim"]);
  for (const s of [
    "clang",
    "libbpf-dev",
    "npm ci",
    "npm run build",
    "--omit=dev",
    "libbpf1",
    "libelf1",
    "iproute2",
    "bpf/*.o",
    "native/build/Release/bpfproxy.node",
    "dist/",
  ])
    assert.ok(df.includes(s), s);
  assert.match(df, /^ENTRYPOINT \["node", "dist\/cli\.js", "run"\]$/m);
});

// --- Helm chart (no helm binary here): render the small template subset the chart uses, then compare. ---

function lookup(ctx: Obj, path: string): unknown {
  let v: unknown = ctx;
  for (const part of path.replace(/^\./, "").split(".")) {
    if (v === null || typeof v !== "object" || !(part in (v as Obj))) throw new Error(`template: no value at ${path}`);
    v = (v as Obj)[part];
  }
  return v;
}

/** Renders `{{ .X.y }}`, `{{ .X.y | quote }}` and `{{- toYaml .X.y | nindent N }}`; anything else fails. */
function renderTemplate(tpl: string, ctx: Obj): string {
  const out = tpl.replace(
    /([ \t]*\n?[ \t]*)?\{\{(-?)\s*(.*?)\s*(-?)\}\}/g,
    (_m, pre: string | undefined, trimLeft: string, expr: string) => {
      const lead = trimLeft ? "" : (pre ?? "");
      let m = /^toYaml (\S+) \| nindent (\d+)$/.exec(expr);
      if (m) {
        const text = stringify(lookup(ctx, m[1]!), { sortMapEntries: true, lineWidth: 0 }).trimEnd();
        const pad = " ".repeat(Number(m[2]!));
        return (
          lead +
          "\n" +
          text
            .split("\n")
            .map((l) => pad + l)
            .join("\n")
        );
      }
      m = /^(\.\S+) \| quote$/.exec(expr);
      if (m) return lead + JSON.stringify(String(lookup(ctx, m[1]!)));
      m = /^(\.\S+)$/.exec(expr);
      if (m) return lead + String(lookup(ctx, m[1]!));
      throw new Error(`template: unsupported expression {{ ${expr} }}`);
    },
  );
  return out;
}

test("the Helm chart renders the same objects as deploy/", async () => {
  const chart = join(DEPLOY, "helm", "bpfproxy");
  const meta = parseYAML(await readFile(join(chart, "Chart.yaml"), "utf8")) as Obj;
  assert.equal(meta.apiVersion, "v2");
  assert.equal(meta.name, "bpfproxy");
  const values = parseYAML(await readFile(join(chart, "values.yaml"), "utf8")) as Obj;
  const ctx = {
    Values: values,
    Release: { Namespace: "kube-system", Name: "bpfproxy" },
    Chart: { AppVersion: meta.appVersion, Name: meta.name },
  };

  const outDir = join(work, "helm-rendered");
  await mkdir(outDir, { recursive: true });
  for (const f of (await readdir(join(chart, "templates"))).filter((x) => x.endsWith(".yaml"))) {
    await writeFile(join(outDir, f), renderTemplate(await readFile(join(chart, "templates", f), "utf8"), ctx));
  }
  const rendered = await manifestObjects(outDir);
  const plain = await manifestObjects(DEPLOY);
  assert.deepEqual(rendered.map(key).sort(), EXPECTED);

  // Same objects; the embedded config may differ in key order only (toYaml sorts keys).
  const norm = (o: Obj): unknown => {
    if (o.kind !== "ConfigMap") return o;
    const { data, ...rest } = o as V1ConfigMap;
    return { ...rest, data: { ...data, "config.conf": parseYAML(data?.["config.conf"] ?? "") as unknown } };
  };
  const plainBy = new Map(plain.map((o) => [key(o), norm(o)]));
  for (const o of rendered) assert.deepEqual(norm(o), plainBy.get(key(o)), key(o));

  const r = await dryRunApply(outDir);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.objects.map(key).sort(), EXPECTED);
});
