// Issue 6 item 10: every KubeProxyConfiguration field either works as in kube-proxy or stops startup with an
// error naming it; zero values and kube-proxy's own defaults (kubeadm's default ConfigMap) are accepted.
// Item 5: detectLocalMode NodeCIDR takes the node's spec.podCIDRs into the data plane.
import { ObjectIndex } from "../src/sources/object-index.js";
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYAML, stringify } from "yaml";
import { z } from "zod";
import {
  ConfigError,
  kubeProxyConfigurationSchema,
  mergeConfig,
  parseConfigText,
  primaryNodeIP,
  type EffectiveConfig,
} from "../src/config.js";
import { Daemon, type DaemonOptions } from "../src/daemon/daemon.js";
import { validateObject } from "../src/k8s/validate.js";
import type { Node } from "../src/k8s/schemas.js";
import type { Dataplane, SyncResult } from "../src/dataplane/types.js";
import type { NodeModel } from "../src/model/types.js";
import type { ObjectSnapshot, Source } from "../src/sources/types.js";
import { svc } from "./model-helpers.js";

const API = { apiVersion: "kubeproxy.config.k8s.io/v1alpha1", kind: "KubeProxyConfiguration" };

/** Builds a config with `path` set to `value` (plus `extra` top-level fields), as YAML text. */
function configWith(path: string, value: unknown, extra: Record<string, unknown> = {}): string {
  const root: Record<string, unknown> = { ...API, ...extra };
  const parts = path.split(".");
  let at = root;
  for (const p of parts.slice(0, -1)) at = (at[p] ??= {}) as Record<string, unknown>;
  at[parts.at(-1)!] = value;
  return stringify(root);
}

function effective(text: string): EffectiveConfig {
  return mergeConfig(parseConfigText(text, "t.yaml").config, {});
}

function problems(text: string): string[] {
  try {
    effective(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.problems.map((p) => p.path);
  }
  return [];
}

type Row = {
  /** Leaf path of the schema. */
  path: string;
  /** Values that must load (zero values, kube-proxy's defaults, or values that work). */
  accepts: unknown[];
  /** Works: a value and its effect on the effective configuration. */
  works?: { value: unknown; extra?: Record<string, unknown>; check: (c: EffectiveConfig) => void };
  /** Refused: a value that must stop startup with a problem at this path (default: the row's path). */
  refuses?: { value: unknown; at?: string; extra?: Record<string, unknown> };
};

const eq = (k: keyof EffectiveConfig, want: unknown) => (c: EffectiveConfig) => assert.deepEqual(c[k], want, String(k));

const ROWS: Row[] = [
  { path: "apiVersion", accepts: [API.apiVersion], refuses: { value: "kubeproxy.config.k8s.io/v1beta1" } },
  { path: "kind", accepts: [API.kind], refuses: { value: "KubeletConfiguration" } },
  {
    path: "featureGates",
    accepts: [{}, null],
    refuses: { value: { NFTablesProxyMode: true }, at: "featureGates.NFTablesProxyMode" },
  },
  {
    path: "clientConnection.kubeconfig",
    accepts: [""],
    works: {
      value: "/var/lib/kube-proxy/kubeconfig.conf",
      check: eq("kubeconfig", "/var/lib/kube-proxy/kubeconfig.conf"),
    },
  },
  {
    path: "clientConnection.acceptContentTypes",
    accepts: ["", "application/json"],
    refuses: { value: "application/yaml" },
  },
  {
    path: "clientConnection.contentType",
    accepts: ["", "application/json", "application/vnd.kubernetes.protobuf"],
    refuses: { value: "application/yaml" },
  },
  { path: "clientConnection.qps", accepts: [0, 5, null], refuses: { value: 50 } },
  { path: "clientConnection.burst", accepts: [0, 10, null], refuses: { value: 100 } },
  { path: "logging.format", accepts: ["", "text"], refuses: { value: "json" } },
  // Lines are written unbuffered, so every flush frequency holds; a negative one is still a mistake.
  { path: "logging.flushFrequency", accepts: [0, "5s", 5_000_000_000], refuses: { value: "-1s" } },
  { path: "logging.verbosity", accepts: [0], works: { value: 4, check: eq("verbosity", 4) } },
  { path: "logging.vmodule", accepts: [[], null], refuses: { value: [{ filePattern: "proxier*", verbosity: 4 }] } },
  { path: "logging.options.json.infoBufferSize", accepts: ["0", 0, ""], refuses: { value: "1Mi" } },
  { path: "logging.options.json.splitStream", accepts: [false], refuses: { value: true } },
  { path: "logging.options.text.infoBufferSize", accepts: ["0", 0, ""], refuses: { value: "64Ki" } },
  { path: "logging.options.text.splitStream", accepts: [false], refuses: { value: true } },
  { path: "hostnameOverride", accepts: [""], works: { value: " Node-B ", check: eq("nodeName", "node-b") } },
  {
    path: "bindAddress",
    accepts: ["", "0.0.0.0", "::"],
    works: { value: "192.0.2.10", check: (c) => assert.equal(primaryNodeIP(c), "192.0.2.10") },
    refuses: { value: "fd00::10" },
  },
  {
    path: "healthzBindAddress",
    accepts: [""],
    works: { value: "127.0.0.1:10266", check: eq("healthzBindAddress", "127.0.0.1:10266") },
  },
  {
    path: "metricsBindAddress",
    accepts: [""],
    works: { value: "0.0.0.0:10259", check: eq("metricsBindAddress", "0.0.0.0:10259") },
  },
  { path: "bindAddressHardFail", accepts: [false], works: { value: true, check: eq("bindAddressHardFail", true) } },
  { path: "enableProfiling", accepts: [false, null], refuses: { value: true } },
  { path: "showHiddenMetricsForVersion", accepts: [""], refuses: { value: "1.30" } },
  {
    path: "mode",
    accepts: ["", "iptables", "nftables"],
    works: { value: "ipvs", check: eq("mode", "ipvs") },
    refuses: { value: "kernelspace" },
  },
  { path: "iptables.masqueradeBit", accepts: [null, 14], refuses: { value: 15 } },
  { path: "iptables.masqueradeAll", accepts: [false], works: { value: true, check: eq("masqueradeAll", true) } },
  { path: "iptables.localhostNodePorts", accepts: [null, false], refuses: { value: true } },
  { path: "iptables.syncPeriod", accepts: ["0s"], works: { value: "10s", check: eq("syncPeriodMs", 10_000) } },
  { path: "iptables.minSyncPeriod", accepts: ["0s"], works: { value: "2s", check: eq("minSyncPeriodMs", 2_000) } },
  {
    path: "ipvs.syncPeriod",
    accepts: ["0s"],
    works: { value: "20s", extra: { mode: "ipvs" }, check: eq("syncPeriodMs", 20_000) },
  },
  {
    path: "ipvs.minSyncPeriod",
    accepts: ["0s"],
    works: { value: "3s", extra: { mode: "ipvs" }, check: eq("minSyncPeriodMs", 3_000) },
  },
  { path: "ipvs.scheduler", accepts: [""], works: { value: "wrr", check: eq("ipvsScheduler", "wrr") } },
  {
    path: "ipvs.excludeCIDRs",
    accepts: [null, []],
    works: { value: ["10.0.0.0/8"], check: eq("ipvsExcludeCIDRs", ["10.0.0.0/8"]) },
  },
  { path: "ipvs.strictARP", accepts: [false], works: { value: true, check: eq("ipvsStrictARP", true) } },
  {
    path: "ipvs.tcpTimeout",
    accepts: ["0s"],
    works: { value: "900s", check: (c) => assert.equal(c.ipvsTimeouts?.tcp, 900) },
  },
  {
    path: "ipvs.tcpFinTimeout",
    accepts: ["0s"],
    works: { value: "2m", check: (c) => assert.equal(c.ipvsTimeouts?.tcpFin, 120) },
  },
  {
    path: "ipvs.udpTimeout",
    accepts: ["0s"],
    works: { value: "45s", check: (c) => assert.equal(c.ipvsTimeouts?.udp, 45) },
  },
  { path: "nftables.masqueradeBit", accepts: [null, 14], refuses: { value: 3 } },
  { path: "nftables.masqueradeAll", accepts: [false], works: { value: true, check: eq("masqueradeAll", true) } },
  {
    path: "nftables.syncPeriod",
    accepts: ["0s"],
    works: { value: "12s", extra: { mode: "nftables" }, check: eq("syncPeriodMs", 12_000) },
  },
  {
    path: "nftables.minSyncPeriod",
    accepts: ["0s"],
    works: { value: "4s", extra: { mode: "nftables" }, check: eq("minSyncPeriodMs", 4_000) },
  },
  { path: "winkernel.networkName", accepts: [""], refuses: { value: "flannel.4096" } },
  { path: "winkernel.sourceVip", accepts: [""], refuses: { value: "10.244.1.2" } },
  { path: "winkernel.enableDSR", accepts: [false], refuses: { value: true } },
  { path: "winkernel.rootHnsEndpointName", accepts: [""], refuses: { value: "cbr0" } },
  { path: "winkernel.forwardHealthCheckVip", accepts: [false], refuses: { value: true } },
  {
    path: "detectLocalMode",
    accepts: ["", "ClusterCIDR"],
    works: { value: "NodeCIDR", check: eq("detectLocalMode", "NodeCIDR") },
    refuses: { value: "PodCIDR" },
  },
  {
    path: "detectLocal.bridgeInterface",
    accepts: [""],
    works: {
      value: "cbr0",
      extra: { detectLocalMode: "BridgeInterface" },
      check: eq("detectLocalBridgeInterface", "cbr0"),
    },
    refuses: { value: "", extra: { detectLocalMode: "BridgeInterface" } },
  },
  {
    path: "detectLocal.interfaceNamePrefix",
    accepts: [""],
    works: {
      value: "veth",
      extra: { detectLocalMode: "InterfaceNamePrefix" },
      check: eq("detectLocalInterfaceNamePrefix", "veth"),
    },
    refuses: { value: "", extra: { detectLocalMode: "InterfaceNamePrefix" } },
  },
  {
    path: "detectLocal.clusterCIDRs",
    accepts: [null, []],
    works: { value: ["10.244.0.0/16"], check: eq("clusterCIDRs", ["10.244.0.0/16"]) },
  },
  {
    path: "clusterCIDR",
    accepts: [""],
    works: { value: "10.244.0.0/16", check: eq("clusterCIDRs", ["10.244.0.0/16"]) },
    refuses: { value: "10.244.0.0" },
  },
  {
    path: "nodePortAddresses",
    accepts: [null, []],
    works: { value: ["192.0.2.0/24", "primary"], check: eq("nodePortAddresses", ["192.0.2.0/24", "primary"]) },
  },
  {
    path: "oomScoreAdj",
    accepts: [null, -999],
    works: { value: 500, check: eq("oomScoreAdj", 500) },
    refuses: { value: 1001 },
  },
  // bpfproxy's own conntrack applies these (docs/conntrack.md; packet tests in datapath-conntrack.test.ts).
  // maxPerCore/min size bpx_ct_v3 as kube-proxy sizes nf_conntrack_max: 2 entries per flow × max(perCore × CPUs, min).
  {
    path: "conntrack.maxPerCore",
    accepts: [null, 0, 32768],
    works: {
      value: 1,
      extra: { conntrack: { maxPerCore: 1, min: 5000 } },
      check: (c) => assert.equal(c.mapSizes.conntrack, 10_000),
    },
    refuses: { value: -1 },
  },
  {
    path: "conntrack.min",
    accepts: [null, 0, 131072],
    works: {
      value: 4_000_000,
      check: (c) => assert.equal(c.mapSizes.conntrack, 2 * Math.max(32768 * cpus().length, 4_000_000)),
    },
    refuses: { value: -5 },
  },
  {
    path: "conntrack.tcpEstablishedTimeout",
    accepts: [null, "0s", "24h0m0s"],
    works: { value: "1h", check: (c) => assert.equal(c.conntrack.tcpEstablishedMs, 3_600_000) },
    refuses: { value: "500ms" },
  },
  {
    path: "conntrack.tcpCloseWaitTimeout",
    accepts: [null, "0s", "1h0m0s"],
    works: { value: "5m", check: (c) => assert.equal(c.conntrack.tcpCloseWaitMs, 300_000) },
    refuses: { value: "-1s" },
  },
  {
    path: "conntrack.tcpBeLiberal",
    accepts: [false],
    works: { value: true, check: (c) => assert.equal(c.conntrack.beLiberal, true) },
  },
  {
    path: "conntrack.udpTimeout",
    accepts: [null, "0s"],
    works: { value: "10s", check: (c) => assert.equal(c.conntrack.udpMs, 10_000) },
    refuses: { value: "1x" },
  },
  {
    path: "conntrack.udpStreamTimeout",
    accepts: [null, "0s"],
    works: { value: "3m", check: (c) => assert.equal(c.conntrack.udpStreamMs, 180_000) },
    refuses: { value: "0.5s" },
  },
  { path: "configSyncPeriod", accepts: ["0s", "15m0s"], refuses: { value: "1m" } },
  { path: "syncPeriod", accepts: ["0s"], works: { value: "45s", check: eq("syncPeriodMs", 45_000) } },
  { path: "minSyncPeriod", accepts: ["0s"], works: { value: "500ms", check: eq("minSyncPeriodMs", 500) } },
  { path: "portRange", accepts: [""], refuses: { value: "30000-32767" } },
  { path: "windowsRunAsService", accepts: [false], refuses: { value: true } },
];

/** Leaf paths of a zod object schema (records count as leaves); bpfproxy's own section is tested elsewhere. */
function leaves(schema: z.ZodType, prefix = ""): string[] {
  let s = schema as z.ZodType & { def: { type: string; innerType?: z.ZodType } };
  while (s.def.type === "optional" || s.def.type === "nullable") s = s.def.innerType as typeof s;
  if (s.def.type !== "object") return [prefix];
  const out: string[] = [];
  for (const [k, v] of Object.entries((s as unknown as z.ZodObject).shape)) {
    if (!prefix && k === "bpfproxy") continue;
    out.push(...leaves(v as z.ZodType, prefix ? `${prefix}.${k}` : k));
  }
  return out;
}

test("the audit table covers every KubeProxyConfiguration field of the schema, and no field twice", () => {
  const paths = ROWS.map((r) => r.path);
  assert.equal(new Set(paths).size, paths.length);
  assert.deepEqual([...paths].sort(), leaves(kubeProxyConfigurationSchema).sort());
  for (const r of ROWS) assert.ok(r.works || r.refuses, `${r.path}: neither an effect nor a refusal`);
});

for (const row of ROWS) {
  test(`${row.path}: ${[row.works && "works", row.refuses && "refused when set"].filter(Boolean).join(", ")}; zero values and kube-proxy's defaults load`, () => {
    for (const v of row.accepts) {
      assert.deepEqual(problems(configWith(row.path, v)), [], `${row.path}: ${JSON.stringify(v)} must be accepted`);
    }
    if (row.works) row.works.check(effective(configWith(row.path, row.works.value, row.works.extra)));
    if (row.refuses) {
      const at = row.refuses.at ?? row.path;
      const got = problems(configWith(row.path, row.refuses.value, row.refuses.extra));
      assert.ok(
        got.includes(at),
        `${row.path}: ${JSON.stringify(row.refuses.value)} must stop startup naming ${at}; got ${JSON.stringify(got)}`,
      );
      // The message says why, not just where.
      try {
        effective(configWith(row.path, row.refuses.value, row.refuses.extra));
      } catch (err) {
        const reason = (err as ConfigError).problems.find((p) => p.path === at)!.reason;
        assert.ok(reason.length > 10, `${at}: ${reason}`);
      }
    }
  });
}

test("kubeadm's default kube-proxy ConfigMap loads unchanged, with no warning, as kube-proxy's defaults", () => {
  const cm = parseYAML(
    readFileSync(new URL("./fixtures/kubeadm-kube-proxy-configmap.yaml", import.meta.url), "utf8"),
  ) as {
    data: Record<string, string>;
  };
  const parsed = parseConfigText(cm.data["config.conf"]!, "kube-proxy/config.conf");
  assert.deepEqual(parsed.warnings, []);
  const cfg = mergeConfig(parsed.config, { hostnameOverride: "node-a" });
  assert.equal(cfg.mode, "auto");
  assert.equal(cfg.oomScoreAdj, -999, "kube-proxy's default --oom-score-adj");
  assert.equal(primaryNodeIP(cfg), undefined, "bindAddress 0.0.0.0: the node IP comes from the Node object");
  assert.equal(cfg.kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
  assert.deepEqual(cfg.clusterCIDRs, ["10.244.0.0/16"]);
  assert.equal(cfg.detectLocalMode, "ClusterCIDR");
  assert.equal(cfg.masqueradeAll, false);
  assert.equal(cfg.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(cfg.metricsBindAddress, "127.0.0.1:10249");
  assert.equal(cfg.syncPeriodMs, 30_000);
  assert.equal(cfg.minSyncPeriodMs, 1_000);
  assert.deepEqual(cfg.nodePortAddresses, []);
});

test("oomScoreAdj is written to the daemon's own /proc/self/oom_score_adj (checked in a child process)", async () => {
  const runJs = new URL("../dist/daemon/run.js", import.meta.url).href;
  // Raising the score needs no privilege (lowering needs CAP_SYS_RESOURCE, which a container may lack).
  for (const want of [500, 800]) {
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const m = await import(${JSON.stringify(runJs)}); console.log(m.applyOOMScoreAdj(${want}) ? "applied" : "failed"); setTimeout(() => {}, 20000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("child did not report in 15 s")), 15_000);
        child.stdout.once("data", (d: Buffer) => {
          clearTimeout(t);
          resolve(d.toString().trim());
        });
        child.once("exit", (c) => {
          clearTimeout(t);
          reject(new Error(`child exited ${c}`));
        });
      });
      assert.equal(line, "applied");
      assert.equal(readFileSync(`/proc/${child.pid}/oom_score_adj`, "utf8").trim(), String(want));
    } finally {
      child.kill("SIGKILL");
    }
  }
  assert.notEqual(
    readFileSync("/proc/self/oom_score_adj", "utf8").trim(),
    "500",
    "the test runner's own score is untouched",
  );
});

test("--oom-score-adj and --bind-address flags: bad values are refused naming the flag or field", async () => {
  const { spawnSync } = await import("node:child_process");
  const cli = (...a: string[]) =>
    spawnSync(process.execPath, ["dist/cli.js", ...a], { encoding: "utf8", timeout: 30_000 });
  let r = cli("run", "--source", "dir:/nonexistent", "--oom-score-adj=lots");
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--oom-score-adj: expected a whole number/);
  r = cli("run", "--source", "dir:/nonexistent", "--oom-score-adj=-1001");
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /oomScoreAdj: must be a whole number from -1000 to 1000/);
  r = cli("run", "--source", "dir:/nonexistent", "--bind-address", "fd00::1");
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /bindAddress: an IPv6 node address/);
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-audit-"));
  try {
    const f = join(dir, "config.yaml");
    writeFileSync(f, configWith("enableProfiling", true));
    r = cli("run", "--config", f, "--source", "dir:/nonexistent");
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /enableProfiling: not supported by bpfproxy/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// The daemon: bindAddress as the primary node IP, NodeCIDR from the Node's podCIDRs.

class FakeSource extends EventEmitter implements Source {
  constructor(public snap: ObjectSnapshot) {
    super();
  }
  async start(): Promise<void> {}
  async synced(): Promise<void> {}
  snapshot(): ObjectSnapshot {
    return this.snap;
  }
  private readonly idx = new ObjectIndex();
  index(): ObjectIndex {
    // Identity diff against the last call: what a real source's change log holds.
    this.idx.replaceAll(this.snap.services, this.snap.endpointSlices, this.snap.nodes);
    return this.idx;
  }
  async stop(): Promise<void> {}
}

class FakeBpf implements Dataplane {
  readonly mode = "bpf" as const;
  syncs: NodeModel[] = [];
  /** Every setLocalCIDRs call, and how many syncs had run before it. */
  local: Array<{ cidrs: string[]; beforeSync: number }> = [];
  async start(): Promise<void> {}
  setLocalCIDRs(cidrs: string[]): void {
    this.local.push({ cidrs: [...cidrs], beforeSync: this.syncs.length });
  }
  async sync(model: NodeModel): Promise<SyncResult> {
    this.syncs.push(model);
    return { upserts: 0, deletes: 0, skipped: [] };
  }
  async refreshAttachments(): Promise<void> {}
  attachments() {
    return [];
  }
  async stop(): Promise<void> {}
}

const opts = (over: Partial<DaemonOptions> = {}): DaemonOptions => ({
  nodeName: "node-a",
  clusterCIDRs: [],
  nodePortAddresses: [],
  minSyncPeriodMs: 20,
  syncPeriodMs: 60_000,
  linkPollMs: 60_000,
  healthzBindAddress: "",
  metricsBindAddress: "",
  ...over,
});

function nodeObj(podCIDRs: string[] | undefined, podCIDR?: string): Node {
  const r = validateObject({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-a" },
    spec: { ...(podCIDRs ? { podCIDRs } : {}), ...(podCIDR ? { podCIDR } : {}) },
    status: { addresses: [{ type: "InternalIP", address: "192.0.2.1" }] },
  });
  assert.ok(r.ok);
  return r.object as Node;
}

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("NodeCIDR: the Node's IPv4 podCIDRs reach the data plane before the sync that needs them, again when they change", async () => {
  const src = new FakeSource({ services: [svc()], endpointSlices: [], nodes: [] });
  const dp = new FakeBpf();
  const d = new Daemon(src, dp, opts({ localCIDRsFromNode: true }));
  await d.start();
  try {
    await until(() => dp.syncs.length >= 1);
    assert.deepEqual(
      dp.local,
      [{ cidrs: [], beforeSync: 0 }],
      "no Node yet: no local CIDR (everything from outside is masqueraded)",
    );
    src.snap = { ...src.snap, nodes: [nodeObj(["10.244.1.0/24", "fd00:10:244:1::/64"])] };
    src.emit("change");
    await until(() => dp.local.length === 2);
    assert.deepEqual(dp.local[1]!.cidrs, ["10.244.1.0/24"], "IPv4 only: the data plane is IPv4");
    const before = dp.local[1]!.beforeSync;
    await until(() => dp.syncs.length > before);
    src.snap = { ...src.snap, services: [svc({ name: "other" })] };
    src.emit("change");
    await until(() => dp.syncs.length > before + 1);
    assert.equal(dp.local.length, 2, "unchanged podCIDRs are not rewritten");
    src.snap = { ...src.snap, nodes: [nodeObj(undefined, "10.244.7.0/24")] };
    src.emit("change");
    await until(() => dp.local.length === 3);
    assert.deepEqual(dp.local[2]!.cidrs, ["10.244.7.0/24"], "spec.podCIDR alone (older API servers) counts too");
  } finally {
    await d.stop();
  }
});

test("without NodeCIDR the daemon never rewrites the local CIDRs; bindAddress becomes the model's primary node IP", async () => {
  const src = new FakeSource({
    services: [svc({ type: "NodePort" })],
    endpointSlices: [],
    nodes: [nodeObj(["10.244.1.0/24"])],
  });
  const dp = new FakeBpf();
  const d = new Daemon(src, dp, opts({ primaryNodeIP: "192.0.2.77", nodePortAddresses: ["primary"] }));
  await d.start();
  try {
    await until(() => dp.syncs.length >= 1);
    assert.deepEqual(dp.local, []);
    const nodePorts = dp.syncs[0]!.frontends.filter((f) => f.type === "NodePort").map((f) => f.address);
    assert.ok(nodePorts.length > 0 && nodePorts.every((a) => a === "192.0.2.77"), JSON.stringify(nodePorts));
  } finally {
    await d.stop();
  }
});

test("BpfDataplane.setLocalCIDRs rewrites bpx_config_v1: the local CIDRs change, the flags and node name stay", async () => {
  assert.equal(process.getuid?.(), 0, "loads BPF programs: run as root (scripts/test.sh)");
  const native = await import("../src/native/index.js");
  const { BpfDataplane } = await import("../src/dataplane/bpf/index.js");
  const { CFG_F_DETECT_LOCAL, CFG_F_MASQUERADE_ALL, CFG_F_POD_SOURCE_CHECK, MAP_NAMES, config, u32Key } =
    await import("../src/dataplane/bpf/abi.js");
  // The daemon always checks pod sources (datapath.h pod_source_valid).
  const flags = CFG_F_DETECT_LOCAL | CFG_F_POD_SOURCE_CHECK;
  const base = mkdtempSync(join(tmpdir(), "bpfproxy-audit-dp-"));
  const bpffs = join(base, "pins");
  const read = () => {
    const m = native.BpfMap.openPinned(join(bpffs, MAP_NAMES.config), { readOnly: true });
    try {
      return config.decode(m.lookup(u32Key.encode(0))!);
    } finally {
      m.close();
    }
  };
  try {
    // As run.ts builds it for detectLocalMode NodeCIDR: no CIDR until the Node is known, detection on.
    const dp = new BpfDataplane({
      nodeName: "node-t",
      bpffs,
      devices: [],
      podInterfaces: [],
      clusterCIDRs: [],
      detectLocal: true,
      masqueradeAll: false,
    });
    await dp.start();
    assert.deepEqual(read(), { flags, clusterCidrs: [], nodeName: "node-t" });
    dp.setLocalCIDRs(["10.244.1.0/24"]);
    assert.deepEqual(read(), { flags, clusterCidrs: ["10.244.1.0/24"], nodeName: "node-t" });
    dp.setLocalCIDRs(["10.244.7.0/24", "10.245.0.0/16"]);
    assert.deepEqual(read().clusterCidrs, ["10.244.7.0/24", "10.245.0.0/16"]);
    assert.equal(read().flags & CFG_F_MASQUERADE_ALL, 0);
    await dp.stop();
  } finally {
    const { cleanup } = await import("../src/dataplane/bpf/status.js");
    cleanup(bpffs);
    try {
      native.umount(bpffs);
    } catch {
      // not mounted
    }
    rmSync(base, { recursive: true, force: true });
  }
});
