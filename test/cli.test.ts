// The command line as users and outside acceptance tests call it (docs/cli.md): the built
// dist/cli.js, its exit codes and its JSON.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CLI = "dist/cli.js";

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("render -o json prints the shape docs/cli.md documents for a manifest folder", () => {
  const r = cli(
    "render",
    "--source",
    "dir:test/fixtures/manifests/demo",
    "--hostname-override",
    "node-a",
    "-o",
    "json",
  );
  assert.equal(r.code, 0, r.stderr);
  const golden = JSON.parse(readFileSync("test/fixtures/manifests/demo.node-a.json", "utf8")) as unknown;
  assert.deepEqual(JSON.parse(r.stdout), golden);
  const state = JSON.parse(r.stdout) as { node: string; mode: string; frontends: Record<string, unknown>[] };
  assert.equal(state.node, "node-a");
  assert.deepEqual(Object.keys(state.frontends[0]!), [
    "service",
    "portName",
    "type",
    "address",
    "port",
    "protocol",
    "scope",
    "sessionAffinity",
    "algorithm",
    "backends",
  ]);
});

test("render on a dual-stack folder shows both families' frontends, IPv6 in RFC 5952 form", () => {
  const args = ["render", "--source", "dir:test/fixtures/manifests/dualstack", "--hostname-override", "node-a"];
  const r = cli(...args, "-o", "json");
  assert.equal(r.code, 0, r.stderr);
  const state = JSON.parse(r.stdout) as {
    frontends: { service: string; type: string; address: string; port: number; backends: { address: string }[] }[];
  };
  assert.deepEqual(
    JSON.parse(r.stdout),
    JSON.parse(readFileSync("test/fixtures/manifests/dualstack.node-a.json", "utf8")),
  );
  // Each family's frontends carry only that family's endpoints; the not-ready IPv6 one is not chosen.
  assert.deepEqual(
    state.frontends.map(
      (f) => `${f.service} ${f.type} ${f.address}:${f.port} ${f.backends.map((b) => b.address).join(",")}`,
    ),
    [
      "default/v6only ClusterIP fd00:96::51:53 fd00:10:244:2::20",
      "default/web ClusterIP 10.96.0.50:80 10.244.1.5,10.244.2.9",
      "default/web ClusterIP fd00:96::50:80 fd00:10:244:1::5",
      "default/web ExternalIP 198.51.100.7:80 10.244.1.5,10.244.2.9",
      "default/web ExternalIP 2001:db8:1::7:80 fd00:10:244:1::5",
      "default/web NodePort 192.0.2.11:30080 10.244.1.5,10.244.2.9",
      "default/web NodePort 2001:db8::11:30080 fd00:10:244:1::5",
    ],
  );
  const t = cli(...args);
  assert.equal(t.code, 0, t.stderr);
  assert.match(
    t.stdout,
    /default\/web\s+http\s+ClusterIP\s+\[fd00:96::50\]:80\/TCP\s+internal\s+-\s+None\s+\[fd00:10:244:1::5\]:8080/,
  );
});

test("render prints a table by default", () => {
  const r = cli("render", "--source", "dir:test/fixtures/manifests/demo", "--hostname-override", "node-a");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^SERVICE\s+PORT\s+TYPE\s+FRONTEND/);
  assert.match(r.stdout, /default\/web\s+http\s+ClusterIP\s+10\.96\.0\.10:80\/TCP/);
});

test("render shows bpfproxy.io/forwarding-mode on external Cluster-policy frontends only; hybrid is kept as given", () => {
  const dir = mkdtempSync(join(tmpdir(), "bpx-dsr-render-"));
  try {
    writeFileSync(join(dir, "node.yaml"), readFileSync("test/fixtures/manifests/demo/node-a.yaml"));
    const svc = (name: string, mode: string, policy: string, port: number) => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: default
  annotations:
    bpfproxy.io/forwarding-mode: ${mode}
spec:
  type: NodePort
  clusterIP: 10.96.0.${port - 30000}
  clusterIPs: [10.96.0.${port - 30000}]
  externalTrafficPolicy: ${policy}
  ports:
    - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: ${port} }
`;
    writeFileSync(
      join(dir, "svc.yaml"),
      [
        svc("dsr", "dsr", "Cluster", 30001),
        svc("hyb", "hybrid", "Cluster", 30002),
        svc("local", "dsr", "Local", 30003),
        svc("bad", "direct", "Cluster", 30004),
      ].join("---\n"),
    );
    const r = cli("render", "--source", `dir:${dir}`, "--hostname-override", "node-a", "-o", "json");
    assert.equal(r.code, 0, r.stderr);
    const fes = (JSON.parse(r.stdout) as { frontends: { service: string; type: string; forwardingMode?: string }[] })
      .frontends;
    const modes = fes.map((f) => `${f.service} ${f.type} ${f.forwardingMode ?? "(none)"}`);
    assert.deepEqual([...new Set(modes)].sort(), [
      "default/bad ClusterIP (none)",
      "default/bad NodePort (none)",
      "default/dsr ClusterIP (none)",
      "default/dsr NodePort dsr",
      "default/hyb ClusterIP (none)",
      "default/hyb NodePort hybrid",
      "default/local ClusterIP (none)",
      "default/local NodePort (none)",
    ]);
    const t = cli("render", "--source", `dir:${dir}`, "--hostname-override", "node-a");
    assert.match(t.stdout, /^SERVICE\s+PORT\s+TYPE\s+FRONTEND\s+SCOPE\s+MODE\s+AFFINITY/);
    assert.match(t.stdout, /default\/dsr\s+http\s+NodePort\s+192\.0\.2\.11:30001\/TCP\s+external\s+dsr\s/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("mistakes in flags are usage errors (exit 2) that say what is wrong", () => {
  for (const [args, msg] of [
    [["render", "--source", "/no/prefix"], /--source must be dir:PATH/],
    [["render", "--bogus"], /Unknown option '--bogus'/],
    [["status", "-o", "yaml"], /-o must be table or json/],
    [["run", "--sync-period", "5x", "--source", "dir:/tmp"], /--sync-period: invalid duration/],
    [["run", "--source", "dir:/tmp", "--kubeconfig", "/x"], /alternatives/],
    [["frobnicate"], /unknown command/],
    [["run", "--source", "dir:/tmp", "--lb-mode", "direct"], /--lb-mode: expected snat, dsr or hybrid, got "direct"/],
  ] as const) {
    const r = cli(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
});

test("run --config rejects unknown and invalid KubeProxyConfiguration fields, naming them", () => {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-cli-"));
  try {
    const f = join(dir, "config.yaml");
    writeFileSync(
      f,
      "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nsyncPeriod: 30s\nfrobnicate: true\n",
    );
    let r = cli("run", "--config", f, "--source", "dir:/tmp");
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /frobnicate/);
    writeFileSync(
      f,
      "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nminSyncPeriod: soon\n",
    );
    r = cli("run", "--config", f, "--source", "dir:/tmp");
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /minSyncPeriod/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("status without pins says which directory it looked in", () => {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-cli-"));
  try {
    const r = cli("status", "--bpffs", dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`no pinned map ${dir}/bpx_`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
