// deploy/: the manifests go through the real kubectl (client-side dry run) and a deliberately broken copy
// fails; the objects carry what a kube-proxy replacement needs, with RBAC derived from the code; the Helm
// chart renders (real helm) the same objects.
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
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, symlink, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse as parseYAML } from "yaml";
import { parseConfigText } from "../src/config.js";
import { apiCallsOfTheCode, grants } from "./rbac-helpers.js";
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
  // A slow first sync must not get the pod killed: /livez turns 503 only when a change (the first sync
  // too) has waited 2 x syncPeriod (a failing first list never: test/image.test.ts), then kubelet waits
  // failureThreshold x periodSeconds more.
  const lp = c.livenessProbe!;
  const killAfterS = (lp.initialDelaySeconds ?? 0) + (lp.failureThreshold ?? 3) * (lp.periodSeconds ?? 10);
  assert.ok(killAfterS >= 300, `liveness restarts after ${killAfterS} s of 503, README.md promises 300`);
  assert.equal(c.startupProbe, undefined, "a startup probe on /livez would pass at once (200 before the timeout)");
  // Memory from the measured peak RSS (README.md "Memory": 145 MiB + 21 KiB per Service, 10k Services).
  assert.deepEqual(c.resources, { requests: { cpu: "100m", memory: "384Mi" }, limits: { memory: "768Mi" } });
  // Least privilege: exactly the capabilities the daemon was shown to need (e2e-reliability runs it with them).
  assert.equal(c.securityContext?.privileged, false);
  assert.deepEqual(c.securityContext?.capabilities, { drop: ["ALL"], add: ["BPF", "NET_ADMIN", "PERFMON"] });
  assert.equal(c.securityContext?.allowPrivilegeEscalation, false);

  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const mounts = new Map((c.volumeMounts ?? []).map((m) => [m.mountPath, m]));
  const hostPathOf = (mountPath: string) => volumes.get(mounts.get(mountPath)?.name ?? "")?.hostPath?.path;
  assert.equal(hostPathOf("/sys/fs/bpf"), "/sys/fs/bpf");
  assert.equal(hostPathOf("/run/bpfproxy/cgroupv2"), "/sys/fs/cgroup");
  // Least privilege: only the pins need writing; attaching to the cgroup needs a directory fd only
  // (test/image.test.ts runs the image with the cgroup mounted read-only). Nothing in src/ loads kernel
  // modules or takes the xtables lock, so neither /lib/modules nor /run/xtables.lock is mounted.
  assert.equal(mounts.get("/sys/fs/bpf")?.readOnly, undefined, "pins are written");
  assert.equal(mounts.get("/run/bpfproxy/cgroupv2")?.readOnly, true);
  assert.equal(mounts.get("/etc/bpfproxy")?.readOnly, true);
  assert.deepEqual([...mounts.keys()].sort(), ["/etc/bpfproxy", "/run/bpfproxy/cgroupv2", "/sys/fs/bpf"]);
  assert.deepEqual(
    (pod.volumes ?? []).map((v) => v.name),
    (c.volumeMounts ?? []).map((m) => m.name),
    "every volume is mounted, and only those",
  );
  assert.equal(volumes.get(mounts.get("/etc/bpfproxy")?.name ?? "")?.configMap?.name, "bpfproxy");
  // Bidirectional propagation (privileged init container) makes a bpffs it mounts visible to the host.
  const init = pod.initContainers?.[0];
  const initMount = init?.volumeMounts?.[0];
  assert.equal(init?.securityContext?.privileged, true);
  assert.equal(initMount?.mountPropagation, "Bidirectional");
  assert.equal(volumes.get(initMount?.name ?? "")?.hostPath?.path, "/sys/fs/bpf");

  assert.deepEqual(grants(get<V1ClusterRole>("ClusterRole//bpfproxy")), await apiCallsOfTheCode());
  const crb = get<V1ClusterRoleBinding>("ClusterRoleBinding//bpfproxy");
  assert.deepEqual(crb.subjects, [{ kind: "ServiceAccount", name: "bpfproxy", namespace: "kube-system" }]);
  assert.equal(crb.roleRef.name, "bpfproxy");

  const cm = get<V1ConfigMap>("ConfigMap/kube-system/bpfproxy");
  const parsed = parseConfigText(cm.data?.["config.conf"] ?? "", "deploy/02-configmap.yaml");
  assert.equal(parsed.config.bpffs, "/sys/fs/bpf/bpfproxy", "pins under the mounted bpffs");
  assert.equal(parsed.config.cgroupPath, "/run/bpfproxy/cgroupv2", "the mounted host cgroup2");
});

test("Dockerfile: multi-stage build from public bases by default, runtime without compiler, npm or headers", async () => {
  const df = await readFile(join(DEPLOY, "Dockerfile"), "utf8");
  const arg = (name: string) => new RegExp(`^ARG ${name}=(\\S+)$`, "m").exec(df)?.[1];
  assert.equal(arg("BUILD_BASE"), "node:20-bookworm");
  assert.equal(arg("RUNTIME_BASE"), "debian:bookworm-slim");
  const froms = [...df.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assert.deepEqual(froms, ["${BUILD_BASE}", "${RUNTIME_BASE}"]);
  const [build, runtime] = df.split(/^FROM \$\{RUNTIME_BASE\}$/m);
  // The addon includes /usr/include/libnl3 and links libbpf and libnl-genl-3 (native/binding.gyp).
  for (const s of ["clang", "libbpf-dev", "libnl-genl-3-dev", "npm ci", "npm run build", "--omit=dev"])
    assert.ok(build!.includes(s), s);
  // What the addon loads, and what IPVS mode runs (ip, nft); test/image.test.ts checks the built image.
  for (const s of ["libbpf1", "libnl-3-200", "libnl-genl-3-200", "iproute2", "nftables"])
    assert.ok(runtime!.includes(s), s);
  for (const s of ["clang", "-dev ", "g++", "npm ci"]) assert.ok(!runtime!.includes(s), `runtime stage has ${s}`);
  for (const s of ["bpf/*.o", "native/build/Release/bpfproxy.node", "dist/", "/usr/local/bin/node"])
    assert.ok(runtime!.includes(s), s);
  // The daemon starts through the entry script, with its memory settings (the next test).
  assert.match(runtime!, /^COPY bin\/bpfproxy bin\/bpfproxy$/m);
  assert.match(runtime!, /^ENTRYPOINT \["bin\/bpfproxy", "run"\]$/m);
});

// --- bin/bpfproxy: the entry of the image, the package's bin and the benchmarks (docs/benchmarks.md) ---

const BIN = fileURLToPath(new URL("../bin/bpfproxy", import.meta.url));

/**
 * What node started by bin/bpfproxy runs with: a module imported before dist/cli.js (NODE_OPTIONS) prints the
 * process's V8 flags, its glibc environment and its main script, and exits before the command runs.
 */
async function entrySettings(
  entry: string,
  env: Record<string, string> = {},
): Promise<{ execArgv: string[]; main: string; arenaMax?: string; trimThreshold?: string }> {
  const probe = join(work, "entry-probe.mjs");
  await writeFile(
    probe,
    `console.log(JSON.stringify({ execArgv: process.execArgv, main: process.argv[1], arenaMax: process.env.MALLOC_ARENA_MAX, trimThreshold: process.env.MALLOC_TRIM_THRESHOLD_ })); process.exit(0);`,
  );
  return new Promise((resolve, reject) =>
    execFile(
      entry,
      ["run"],
      {
        timeout: 30_000,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NODE_OPTIONS: `--import=${probe}`, ...env },
      },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${entry}: ${err.message}\n${stderr}`));
        resolve(JSON.parse(stdout) as Awaited<ReturnType<typeof entrySettings>>);
      },
    ),
  );
}

test("bin/bpfproxy starts dist/cli.js with the measured memory settings, also through a symlink (npm's bin)", async () => {
  const link = join(work, "bpfproxy-link");
  await rm(link, { force: true });
  await symlink(BIN, link);
  for (const entry of [BIN, link]) {
    const s = await entrySettings(entry);
    assert.equal(s.main, fileURLToPath(new URL("../dist/cli.js", import.meta.url)), entry);
    assert.equal(s.arenaMax, "2", "glibc: two malloc arenas, not one a thread");
    assert.equal(s.trimThreshold, "131072", "glibc: freed heap top returned above 128 KiB");
    assert.deepEqual(
      s.execArgv,
      ["--heap-growing-percent=50"],
      "V8: the old generation grows by half its live size between full collections (peak RSS)",
    );
  }
  const pkg = JSON.parse(await readFile(fileURLToPath(new URL("../package.json", import.meta.url)), "utf8")) as {
    bin: Record<string, string>;
  };
  assert.equal(pkg.bin.bpfproxy, "bin/bpfproxy");
});

test("bin/bpfproxy: settings given in the environment win over its defaults", async () => {
  const s = await entrySettings(BIN, {
    MALLOC_ARENA_MAX: "4",
    MALLOC_TRIM_THRESHOLD_: "0",
    BPFPROXY_NODE_FLAGS: "--max-old-space-size=300",
  });
  assert.equal(s.arenaMax, "4");
  assert.equal(s.trimThreshold, "0");
  assert.deepEqual(
    s.execArgv.filter((a) => !a.startsWith("--import")),
    ["--max-old-space-size=300"],
  );
  const none = await entrySettings(BIN, { BPFPROXY_NODE_FLAGS: "" });
  assert.deepEqual(
    none.execArgv.filter((a) => !a.startsWith("--import")),
    [],
    "an empty BPFPROXY_NODE_FLAGS means no V8 flag",
  );
});

// --- Helm chart: the real helm (scripts/setup.sh --tests installs it in .tools/) renders it. ---

const HELM = existsSync(fileURLToPath(new URL("../.tools/helm/helm", import.meta.url)))
  ? fileURLToPath(new URL("../.tools/helm/helm", import.meta.url))
  : "helm";

function helm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      HELM,
      args,
      {
        timeout: 60_000,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, HELM_CACHE_HOME: join(work, "helm") },
      },
      (err, stdout, stderr) => {
        if ((err as NodeJS.ErrnoException | null)?.code === "ENOENT")
          return resolve({ code: 127, stdout, stderr: "helm not found: run scripts/setup.sh --tests" });
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

test("the Helm chart renders (helm template) the same objects as deploy/, and helm lint passes", async () => {
  const chart = join(DEPLOY, "helm", "bpfproxy");
  const lint = await helm(["lint", chart, "--namespace", "kube-system"]);
  assert.equal(lint.code, 0, lint.stdout + lint.stderr);
  const r = await helm(["template", "bpfproxy", chart, "--namespace", "kube-system"]);
  assert.equal(r.code, 0, r.stderr);
  const outDir = join(work, "helm-rendered");
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "chart.yaml"), r.stdout);
  const rendered = await manifestObjects(outDir);
  const plain = await manifestObjects(DEPLOY);
  assert.deepEqual(rendered.map(key).sort(), EXPECTED);

  // Same objects, field for field; the embedded config may differ in key order and quoting only (the chart
  // builds it from values with toYaml), so it is compared parsed.
  const norm = (o: Obj): unknown => {
    if (o.kind !== "ConfigMap") return o;
    const { data, ...rest } = o as V1ConfigMap;
    return { ...rest, data: { ...data, "config.conf": parseYAML(data?.["config.conf"] ?? "") as unknown } };
  };
  const plainBy = new Map(plain.map((o) => [key(o), norm(o)]));
  for (const o of rendered) assert.deepEqual(norm(o), plainBy.get(key(o)), key(o));
  assert.deepEqual(grants(rendered.find((o) => o.kind === "ClusterRole") as V1ClusterRole), await apiCallsOfTheCode());

  // A value changes what it should (the chart is really templated, not a copy).
  const r2 = await helm(["template", "bpfproxy", chart, "--namespace", "other", "--set", "image.tag=9.9.9"]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /image: bpfproxy:9\.9\.9/);
  assert.match(r2.stdout, /namespace: other/);

  const dry = await dryRunApply(outDir);
  assert.equal(dry.code, 0, dry.stderr);
  assert.deepEqual(dry.objects.map(key).sort(), EXPECTED);
});
