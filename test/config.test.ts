// --config: kube-proxy's KubeProxyConfiguration plus bpfproxy's section; strict validation with field
// paths; Go durations; flags over file over defaults.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir, hostname } from "node:os";
import { join } from "node:path";
import { parse as parseYAML, stringify } from "yaml";
import {
  splitClusterCIDRs,
  ConfigError,
  conntrackFieldsIpvsCannotHonour,
  DEFAULTS,
  formatDuration,
  healthTimeoutMs,
  loadConfigFile,
  mergeConfig,
  parseConfigText,
  parseDuration,
  parseMapSizes,
  readConfigFile,
} from "../src/config.js";
import { parseNodePortRange, parseSnatPortRange } from "../src/config/validate.js";
import { DEFAULT_MAP_SIZES } from "../src/dataplane/bpf/abi.js";
import { translatedMark } from "../src/dataplane/bpf/index.js";

const HEADER = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

function configError(text: string): ConfigError {
  try {
    parseConfigText(text, "test.yaml");
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the config to be rejected");
}

test("parseDuration: Go's time.ParseDuration forms, in milliseconds", () => {
  const ok: Array<[string, number]> = [
    ["0", 0],
    ["0s", 0],
    ["1s", 1000],
    ["30s", 30_000],
    ["1m0s", 60_000],
    ["15m0s", 900_000],
    ["1h2m3.5s", 3_723_500],
    ["2h45m", 9_900_000],
    ["1.5h", 5_400_000],
    ["300ms", 300],
    ["-1.5s", -1500],
    ["+2s", 2000],
    [".5s", 500],
    ["1.s", 1000],
    ["1500us", 1.5],
    ["1500\u00b5s", 1.5],
    ["1500\u03bcs", 1.5],
    ["2000000ns", 2],
    ["1h1h", 7_200_000],
  ];
  for (const [s, ms] of ok) assert.ok(Math.abs(parseDuration(s) - ms) < 1e-9, `${s} → ${parseDuration(s)}, want ${ms}`);
  for (const bad of ["", "1", "30", "s", "1x", "1s2", "--1s", ". s", "1 s", "abc", "1d", "-"]) {
    assert.throws(() => parseDuration(bad), /invalid duration/, JSON.stringify(bad));
  }
  assert.equal(formatDuration(60_000), "1m0s");
  assert.equal(formatDuration(3_723_500), "1h2m3.5s");
  assert.equal(formatDuration(500), "500ms");
  assert.equal(formatDuration(0), "0s");
});

test("the deploy ConfigMap's embedded configuration validates, without warnings", () => {
  const cm = parseYAML(readFileSync(new URL("../deploy/02-configmap.yaml", import.meta.url), "utf8")) as {
    kind: string;
    data: Record<string, string>;
  };
  assert.equal(cm.kind, "ConfigMap");
  const parsed = parseConfigText(cm.data["config.conf"]!, "deploy/02-configmap.yaml");
  assert.deepEqual(parsed.warnings, []);
  const cfg = mergeConfig(parsed.config, { hostnameOverride: "node-a" });
  assert.equal(cfg.mode, "auto");
  assert.deepEqual(cfg.clusterCIDRs, ["10.244.0.0/16"]);
  assert.equal(cfg.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(cfg.metricsBindAddress, "127.0.0.1:10249");
  assert.equal(cfg.syncPeriodMs, 30_000);
  assert.equal(cfg.minSyncPeriodMs, 1_000);
  assert.equal(cfg.configSyncPeriodMs, 900_000);
  assert.deepEqual(cfg.nodePortAddresses, ["primary"]);
  assert.equal(cfg.bpffs, "/sys/fs/bpf/bpfproxy");
  assert.equal(cfg.cgroupPath, "/run/bpfproxy/cgroupv2");
  assert.deepEqual(cfg.devices, ["eth0"]);
  assert.ok(cfg.podInterfaces.includes("veth*"));
  assert.equal(cfg.nodeName, "node-a");
});

test("the Helm chart's default config validates too", () => {
  const values = parseYAML(readFileSync(new URL("../deploy/helm/bpfproxy/values.yaml", import.meta.url), "utf8")) as {
    config: unknown;
  };
  const parsed = parseConfigText(stringify(values.config), "values.yaml");
  assert.deepEqual(parsed.warnings, []);
});

test("a kubeadm-generated kube-proxy config (zero values everywhere) loads with kube-proxy's defaults", () => {
  const kubeadm = `${HEADER}bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
`;
  const parsed = parseConfigText(kubeadm, "kube-proxy/config.conf");
  assert.deepEqual(parsed.warnings, []);
  const cfg = mergeConfig(parsed.config, {});
  assert.equal(cfg.mode, "auto");
  assert.equal(cfg.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(cfg.metricsBindAddress, "127.0.0.1:10249");
  assert.equal(cfg.syncPeriodMs, 30_000);
  assert.equal(cfg.minSyncPeriodMs, 1_000);
  assert.equal(cfg.configSyncPeriodMs, 900_000);
  assert.equal(cfg.qps, 5);
  assert.equal(cfg.burst, 10);
  assert.equal(cfg.kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
  assert.deepEqual(cfg.clusterCIDRs, ["10.244.0.0/16", "fd00:10:244::/56"]);
  // Dual-stack: the IPv4-only data plane is given the IPv4 CIDR (an IPv6 one made it crash at start);
  // the IPv6 one is reported as skipped. The daemon running this value is tested in e2e-reliability.
  assert.deepEqual(splitClusterCIDRs(cfg.clusterCIDRs), { ipv4: ["10.244.0.0/16"], ipv6: ["fd00:10:244::/56"] });
  assert.equal(cfg.detectLocalMode, "ClusterCIDR");
  assert.deepEqual(cfg.nodePortAddresses, []);
});

test("unknown fields are errors naming their path", () => {
  let e = configError(`${HEADER}syncPeriode: 30s\n`);
  assert.match(e.message, /test\.yaml/);
  assert.match(e.message, /syncPeriode: unknown field/);
  assert.deepEqual(e.problems, [{ path: "syncPeriode", reason: "unknown field" }]);

  e = configError(`${HEADER}bpfproxy:\n  devicez: [eth0]\n`);
  assert.deepEqual(e.problems, [{ path: "bpfproxy.devicez", reason: "unknown field" }]);

  e = configError(`${HEADER}conntrack:\n  maxPerCor: 1\niptables:\n  masqueradeAl: true\n`);
  assert.deepEqual(e.problems.map((p) => p.path).sort(), ["conntrack.maxPerCor", "iptables.masqueradeAl"]);

  e = configError(`${HEADER}logging:\n  vmodule:\n    - filePattern: x\n      verbosity: 2\n      extra: 1\n`);
  assert.deepEqual(e.problems, [{ path: "logging.vmodule[0].extra", reason: "unknown field" }]);
});

test("invalid values are errors naming the path and the reason", () => {
  let e = configError(`${HEADER}syncPeriod: "30"\n`);
  assert.equal(e.problems[0]!.path, "syncPeriod");
  assert.match(e.problems[0]!.reason, /invalid duration "30": missing unit/);

  e = configError(`${HEADER}iptables:\n  minSyncPeriod: -1s\n`);
  assert.equal(e.problems[0]!.path, "iptables.minSyncPeriod");
  assert.match(e.problems[0]!.reason, /0 or more/);

  e = configError(`${HEADER}syncPeriod: 30\n`);
  assert.equal(e.problems[0]!.path, "syncPeriod");
  assert.match(e.problems[0]!.reason, /Go duration string/);

  e = configError(`${HEADER}ipvs:\n  tcpTimeout: 5 minutes\n`);
  assert.equal(e.problems[0]!.path, "ipvs.tcpTimeout");

  e = configError(`${HEADER}healthzBindAddress: "localhost:10256"\nclusterCIDR: 10.244.0.0/33\nbindAddress: node-a\n`);
  assert.deepEqual(e.problems.map((p) => p.path).sort(), ["bindAddress", "clusterCIDR", "healthzBindAddress"]);

  e = configError(`${HEADER}nodePortAddresses: ["10.0.0.0/8", "everywhere"]\n`);
  assert.equal(e.problems[0]!.path, "nodePortAddresses[1]");

  e = configError(`${HEADER}bpfproxy:\n  devices: eth0\n`);
  assert.equal(e.problems[0]!.path, "bpfproxy.devices");

  e = configError(`${HEADER}bpfproxy:\n  bpffs: relative/dir\n`);
  assert.equal(e.problems[0]!.path, "bpfproxy.bpffs");

  e = configError(`${HEADER}detectLocalMode: BridgeInterface\n`);
  assert.equal(e.problems[0]!.path, "detectLocal.bridgeInterface");

  e = configError(`apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n`);
  assert.equal(e.problems[0]!.path, "apiVersion");
  e = configError(`apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n`);
  assert.equal(e.problems[0]!.path, "kind");

  assert.throws(() => parseConfigText("a: [1", "x"), /not valid YAML/);
  assert.throws(() => parseConfigText("- 1\n", "x"), /expected a KubeProxyConfiguration object/);
  assert.throws(() => parseConfigText(`${HEADER}mode: ""\nmode: bpf\n`, "x"), /not valid YAML/, "duplicate keys");
});

test("mode: '' → auto, bpf, ipvs; iptables/nftables → auto with a warning; kernelspace rejected", () => {
  assert.equal(
    parseConfigText(`${HEADER}bpfproxy:\n  socketLBPodNamespaces: true\n`).config.socketLBPodNamespaces,
    true,
  );
  assert.equal(mergeConfig(undefined, {}).socketLBPodNamespaces, false, "the node's namespace only by default");
  assert.equal(parseConfigText(`${HEADER}mode: ""\n`).config.mode, undefined);
  assert.equal(parseConfigText(`${HEADER}mode: bpf\n`).config.mode, "bpf");
  assert.equal(parseConfigText(`${HEADER}mode: ipvs\n`).config.mode, "ipvs");
  for (const m of ["iptables", "nftables"]) {
    const p = parseConfigText(`${HEADER}mode: ${m}\n`);
    assert.equal(p.config.mode, "auto");
    assert.equal(p.warnings.length, 1);
    assert.match(p.warnings[0]!, /^mode: .*bpfproxy replaces/);
  }
  assert.match(configError(`${HEADER}mode: kernelspace\n`).problems[0]!.reason, /Windows/);
  assert.match(configError(`${HEADER}mode: userspace\n`).problems[0]!.reason, /unknown mode/);
});

test("sync periods: top level wins, else the mode's section (ipvs/nftables), else iptables", () => {
  assert.equal(parseConfigText(`${HEADER}iptables:\n  syncPeriod: 10s\n`).config.syncPeriodMs, 10_000);
  assert.equal(
    parseConfigText(`${HEADER}mode: ipvs\nipvs:\n  syncPeriod: 20s\niptables:\n  syncPeriod: 10s\n`).config
      .syncPeriodMs,
    20_000,
  );
  assert.equal(
    parseConfigText(`${HEADER}mode: nftables\nnftables:\n  minSyncPeriod: 250ms\n`).config.minSyncPeriodMs,
    250,
  );
  assert.equal(
    parseConfigText(`${HEADER}syncPeriod: 1m0s\niptables:\n  syncPeriod: 10s\n`).config.syncPeriodMs,
    60_000,
  );
});

test("kube-proxy settings bpfproxy cannot honour stop startup naming each field (every field: config-audit.test.ts)", () => {
  const e = configError(`${HEADER}configSyncPeriod: 1m\nfeatureGates:\n  SomeGate: true\noomScoreAdj: -999\n`);
  assert.deepEqual(e.problems.map((p) => p.path).sort(), ["configSyncPeriod", "featureGates.SomeGate"]);
  assert.match(e.message, /configSyncPeriod: not supported by bpfproxy: /);
});

test("conntrack: kube-proxy's defaults when unset, 0 means the kernel's value, set values apply; GC interval", () => {
  const d = mergeConfig(parseConfigText(HEADER).config, {});
  assert.deepEqual(d.conntrack, {
    tcpEstablishedMs: 86_400_000,
    tcpCloseWaitMs: 3_600_000,
    udpMs: 30_000,
    udpStreamMs: 120_000,
    beLiberal: false,
  });
  assert.equal(d.mapSizes.conntrack, DEFAULT_MAP_SIZES.conntrack, "no maxPerCore/min given: the map keeps its size");
  assert.equal(d.conntrackGCIntervalMs, 15_000);
  const zero = mergeConfig(
    parseConfigText(`${HEADER}conntrack:\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n  maxPerCore: 0\n`)
      .config,
    {},
  );
  assert.equal(zero.conntrack.tcpEstablishedMs, 432_000_000, "the kernel's nf_conntrack_tcp_timeout_established");
  assert.equal(zero.conntrack.tcpCloseWaitMs, 60_000, "the kernel's nf_conntrack_tcp_timeout_close_wait");
  assert.equal(zero.mapSizes.conntrack, DEFAULT_MAP_SIZES.conntrack, "maxPerCore 0: leave the size");
  const file = parseConfigText(
    `${HEADER}conntrack:\n  maxPerCore: 2\n  min: 100000\n  udpTimeout: 7s\nbpfproxy:\n  conntrackGCInterval: 20s\n`,
  ).config;
  const c = mergeConfig(file, {});
  assert.equal(c.conntrack.udpMs, 7_000);
  assert.equal(c.mapSizes.conntrack, 200_000, "2 entries per flow × max(2 × CPUs, 100000)");
  assert.equal(c.conntrackGCIntervalMs, 20_000);
  const flagged = mergeConfig(file, { mapSizes: { conntrack: 4096 } as never, conntrackGCIntervalMs: 5_000 });
  assert.equal(flagged.mapSizes.conntrack, 4096, "an explicit --map-sizes conntrack wins over maxPerCore/min");
  assert.equal(flagged.conntrackGCIntervalMs, 5_000, "the flag wins");
  // IPVS uses the kernel's conntrack: only null, 0 and kube-proxy's defaults pass there.
  assert.deepEqual(conntrackFieldsIpvsCannotHonour(d), []);
  assert.deepEqual(conntrackFieldsIpvsCannotHonour(zero), []);
  assert.deepEqual(conntrackFieldsIpvsCannotHonour(c), [
    "conntrack.udpTimeout",
    "conntrack.maxPerCore",
    "conntrack.min",
  ]);
  assert.throws(
    () => mergeConfig(parseConfigText(`${HEADER}bpfproxy:\n  conntrackGCInterval: 100ms\n`).config, {}),
    /bpfproxy\.conntrackGCInterval: must be at least 1s/,
  );
});

test("bpfproxy.snatPortRange (and --snat-port-range) sets the SNAT ports; an invalid range is refused naming the field", () => {
  assert.equal(mergeConfig(undefined, {}).snatPortRange, "1024-29999", "default");
  const file = parseConfigText(`${HEADER}bpfproxy:\n  snatPortRange: 40000-40999\n`).config;
  assert.equal(mergeConfig(file, {}).snatPortRange, "40000-40999");
  assert.equal(mergeConfig(file, { snatPortRange: "50000-50009" }).snatPortRange, "50000-50009", "the flag wins");
  assert.deepEqual(parseSnatPortRange("1024-29999"), { min: 1024, max: 29999 });
  for (const bad of ["80-1000", "30000-20000", "1024-70000", "1024", "a-b"])
    assert.throws(
      () => mergeConfig(undefined, { snatPortRange: bad }),
      /bpfproxy\.snatPortRange: must/,
      `${bad} is refused`,
    );
});

test("bpfproxy.nodePortRange (and --node-port-range) names the cluster's NodePort range (default kube-apiserver's); an invalid range is refused naming the field", () => {
  assert.equal(mergeConfig(undefined, {}).nodePortRange, "30000-32767", "kube-apiserver's default");
  const file = parseConfigText(`${HEADER}bpfproxy:\n  nodePortRange: 20000-22767\n`).config;
  assert.equal(mergeConfig(file, {}).nodePortRange, "20000-22767");
  assert.equal(mergeConfig(file, { nodePortRange: "80-32767" }).nodePortRange, "80-32767", "the flag wins");
  assert.deepEqual(parseNodePortRange("80-32767"), { min: 80, max: 32767 }, "privileged ports are allowed");
  for (const bad of ["0-100", "32767-30000", "30000-70000", "30000", "a-b"])
    assert.throws(
      () => mergeConfig(undefined, { nodePortRange: bad }),
      /bpfproxy\.nodePortRange: must/,
      `${bad} is refused`,
    );
});

test("bpfproxy.translatedMarkBit sets the mark bit (default 12, -1 off); kube-proxy's bits and bits outside 0-31 are refused", () => {
  assert.equal(mergeConfig(undefined, {}).translatedMarkBit, 12, "default");
  const file = (v: string) => parseConfigText(`${HEADER}bpfproxy:\n  translatedMarkBit: ${v}\n`).config;
  assert.equal(mergeConfig(file("20"), {}).translatedMarkBit, 20);
  assert.equal(mergeConfig(file("-1"), {}).translatedMarkBit, -1, "off");
  assert.equal(translatedMark(12), 0x1000);
  assert.equal(translatedMark(31), 0x80000000);
  assert.equal(translatedMark(-1), 0, "off: no bit");
  for (const bad of ["14", "15", "32", "-2"])
    assert.throws(() => mergeConfig(file(bad), {}), /bpfproxy\.translatedMarkBit/, `${bad} is refused`);
});

test("bpfproxy.lbAlgorithm sets the default backend choice and refuses other values naming the field", () => {
  assert.equal(parseConfigText(`${HEADER}bpfproxy:\n  lbAlgorithm: maglev\n`).config.lbAlgorithm, "maglev");
  assert.equal(parseConfigText(`${HEADER}bpfproxy:\n  lbAlgorithm: least-conn\n`).config.lbAlgorithm, "least-conn");
  assert.equal(parseConfigText(HEADER).config.lbAlgorithm, undefined);
  assert.throws(() => parseConfigText(`${HEADER}bpfproxy:\n  lbAlgorithm: round-robin\n`), /bpfproxy\.lbAlgorithm/);
});

test("bpfproxy.lbMode: snat by default, dsr or hybrid; the --lb-mode flag wins over the file; other values refused naming the field", () => {
  assert.equal(mergeConfig(undefined, {}).lbMode, "snat");
  assert.equal(parseConfigText(`${HEADER}bpfproxy:\n  lbMode: dsr\n`).config.lbMode, "dsr");
  assert.equal(parseConfigText(`${HEADER}bpfproxy:\n  lbMode: hybrid\n`).config.lbMode, "hybrid");
  assert.equal(parseConfigText(HEADER).config.lbMode, undefined);
  const file = parseConfigText(`${HEADER}bpfproxy:\n  lbMode: dsr\n`).config;
  assert.equal(mergeConfig(file, {}).lbMode, "dsr");
  assert.equal(mergeConfig(file, { lbMode: "snat" }).lbMode, "snat", "the flag wins");
  assert.throws(() => parseConfigText(`${HEADER}bpfproxy:\n  lbMode: direct\n`), /bpfproxy\.lbMode/);
});

test("bpfproxy.fullSyncPeriod: kube-proxy's hourly full sync by default; shorter for faster drift repair; bad values refused", () => {
  assert.equal(mergeConfig(undefined, {}).fullSyncPeriodMs, 3_600_000);
  const file = parseConfigText(`${HEADER}syncPeriod: 10s\nbpfproxy:\n  fullSyncPeriod: 30s\n`).config;
  assert.equal(mergeConfig(file, {}).fullSyncPeriodMs, 30_000);
  const zero = parseConfigText(`${HEADER}bpfproxy:\n  fullSyncPeriod: 0s\n`).config;
  assert.equal(mergeConfig(zero, {}).fullSyncPeriodMs, 3_600_000, "0 means the default, as elsewhere in the file");
  assert.throws(
    () => mergeConfig(undefined, { fullSyncPeriodMs: 0 }),
    /bpfproxy\.fullSyncPeriod: must be greater than 0/,
  );
  assert.match(configError(`${HEADER}bpfproxy:\n  fullSyncPeriod: -1m\n`).message, /bpfproxy\.fullSyncPeriod/);
  assert.match(configError(`${HEADER}bpfproxy:\n  fullSyncPeriod: soon\n`).message, /bpfproxy\.fullSyncPeriod/);
});

test("masqueradeAll: bpfproxy's own setting, else kube-proxy's iptables.masqueradeAll", () => {
  assert.equal(parseConfigText(`${HEADER}iptables:\n  masqueradeAll: true\n`).config.masqueradeAll, true);
  assert.equal(
    parseConfigText(`${HEADER}iptables:\n  masqueradeAll: true\nbpfproxy:\n  masqueradeAll: false\n`).config
      .masqueradeAll,
    false,
  );
  assert.equal(parseConfigText(`${HEADER}bpfproxy:\n  masqueradeAll: true\n`).config.masqueradeAll, true);
});

test("map sizes: defaults hold 50,000 frontends and 500,000 slots; file, then --map-sizes per field; bad sizes named", () => {
  const d = mergeConfig(undefined, {}).mapSizes;
  assert.deepEqual(d, DEFAULT_MAP_SIZES);
  assert.ok(d.services >= 50_000 + 500_000 && d.frontends >= 50_000 && d.backends >= 500_000);
  const file = parseConfigText(`${HEADER}bpfproxy:\n  mapSizes:\n    services: 4096\n    conntrack: 0\n`).config;
  assert.deepEqual(file.mapSizes, { services: 4096 }, "0 means default, as elsewhere in the file");
  const cfg = mergeConfig(file, { mapSizes: parseMapSizes("conntrack=1024, backends=2048") as never });
  assert.deepEqual(cfg.mapSizes, { ...DEFAULT_MAP_SIZES, services: 4096, conntrack: 1024, backends: 2048 });
  // The IPv6 maps' sizes, by flag and by file.
  assert.deepEqual(parseMapSizes("services6=4096,backends6=2048,conntrack6=1024"), {
    services6: 4096,
    backends6: 2048,
    conntrack6: 1024,
  });
  assert.equal(
    parseConfigText(`${HEADER}bpfproxy:\n  mapSizes:\n    conntrack6: 8192\n`).config.mapSizes?.conntrack6,
    8192,
  );
  assert.throws(() => parseMapSizes("conntrack7=10"), /NAME one of .*conntrack6/);
  assert.throws(() => parseMapSizes("svc=10"), /"svc=10": expected NAME=ENTRIES/);
  assert.throws(
    () => mergeConfig(undefined, { mapSizes: { services: 3 } as never }),
    /bpfproxy\.mapSizes\.services: must be a whole number from 16/,
  );
  assert.match(configError(`${HEADER}bpfproxy:\n  mapSizes:\n    slots: 10\n`).message, /mapSizes/);
});

test("defaults are kube-proxy's (and bpfproxy's own)", () => {
  const cfg = mergeConfig(undefined, {});
  assert.deepEqual(cfg, {
    mode: "auto",
    hostnameOverride: "",
    nodeName: hostname().trim().toLowerCase(),
    bindAddress: "",
    healthzBindAddress: "0.0.0.0:10256",
    metricsBindAddress: "127.0.0.1:10249",
    bindAddressHardFail: false,
    oomScoreAdj: -999,
    clusterCIDRs: [],
    nodePortAddresses: [],
    syncPeriodMs: 30_000,
    minSyncPeriodMs: 1_000,
    configSyncPeriodMs: 900_000,
    kubeconfig: "",
    qps: 5,
    burst: 10,
    detectLocalMode: "ClusterCIDR",
    detectLocalBridgeInterface: "",
    detectLocalInterfaceNamePrefix: "",
    ipvsScheduler: "",
    ipvsStrictARP: false,
    ipvsExcludeCIDRs: [],
    verbosity: 0,
    source: "",
    devices: [],
    podInterfaces: [],
    bpffs: DEFAULTS.bpffs,
    cgroupPath: "",
    socketLBPodNamespaces: false,
    masqueradeAll: false,
    bypassNetfilter: false,
    translatedMarkBit: 12,
    mapSizes: { ...DEFAULT_MAP_SIZES },
    lbAlgorithm: "random",
    lbMode: "snat",
    xdp: "auto",
    conntrack: {
      tcpEstablishedMs: 86_400_000,
      tcpCloseWaitMs: 3_600_000,
      udpMs: 30_000,
      udpStreamMs: 120_000,
      beLiberal: false,
    },
    conntrackGCIntervalMs: 15_000,
    snatPortRange: "1024-29999",
    nodePortRange: "30000-32767",
    fullSyncPeriodMs: 3_600_000,
  });
  assert.equal(healthTimeoutMs(cfg), 60_000, "kube-proxy: 2 × syncPeriod");

  // IPv6 bindAddress → IPv6 defaults for the servers; a bind address without port gets the default port.
  const v6 = mergeConfig({ bindAddress: "::" }, { metricsBindAddress: "0.0.0.0" });
  assert.equal(v6.healthzBindAddress, "[::]:10256");
  assert.equal(v6.metricsBindAddress, "0.0.0.0:10249");
  assert.equal(mergeConfig({ bindAddress: "::" }, {}).metricsBindAddress, "[::1]:10249");
  assert.equal(mergeConfig({}, { healthzBindAddress: ":10256" }).healthzBindAddress, ":10256");
});

test("flags override the file; unset flags leave the file alone; '' from a flag disables a server", () => {
  const file = parseConfigText(
    `${HEADER}syncPeriod: 10s\nclusterCIDR: 10.244.0.0/16\nhostnameOverride: " Node-A "\nbpfproxy:\n  devices: [eth0]\n  bpffs: /sys/fs/bpf/x\n`,
  ).config;
  const cfg = mergeConfig(file, {
    syncPeriodMs: 5000,
    devices: ["eth1", "eth2"],
    bpffs: undefined,
    healthzBindAddress: "",
  });
  assert.equal(cfg.syncPeriodMs, 5000);
  assert.deepEqual(cfg.devices, ["eth1", "eth2"]);
  assert.equal(cfg.bpffs, "/sys/fs/bpf/x", "undefined flag keeps the file's value");
  assert.deepEqual(cfg.clusterCIDRs, ["10.244.0.0/16"]);
  assert.equal(cfg.hostnameOverride, "node-a", "trimmed and lower-cased like kube-proxy");
  assert.equal(cfg.nodeName, "node-a");
  assert.equal(cfg.healthzBindAddress, "", "--healthz-bind-address='' turns the server off");
  assert.equal(cfg.metricsBindAddress, "127.0.0.1:10249");
});

test("invalid flag values are rejected with the field named", () => {
  assert.throws(
    () => mergeConfig(undefined, { syncPeriodMs: 0 }),
    (e: unknown) => e instanceof ConfigError && /syncPeriod: must be greater than 0/.test(e.message),
  );
  assert.throws(() => mergeConfig(undefined, { clusterCIDRs: ["10.0.0.1"] }), /clusterCIDRs\[0\]/);
  assert.throws(() => mergeConfig(undefined, { metricsBindAddress: "127.0.0.1:99999" }), /metricsBindAddress/);
  // kube-proxy's validateHostPort refuses port 0 (a probe could not find an ephemeral port).
  for (const key of ["healthzBindAddress", "metricsBindAddress"] as const)
    assert.throws(
      () => mergeConfig(undefined, { [key]: "[::]:0" }),
      new RegExp(`${key}: "\\[::\\]:0": port must be a valid port \\(1-65535\\)`),
    );
  assert.equal(mergeConfig(undefined, { healthzBindAddress: "[::1]:10256" }).healthzBindAddress, "[::1]:10256");
  assert.equal(mergeConfig(undefined, { metricsBindAddress: "::1" }).metricsBindAddress, "[::1]:10249");
  // @ts-expect-error: a mode the flag types exclude must still be refused at run time
  assert.throws(() => mergeConfig(undefined, { mode: "iptables" }), /mode: must be auto, bpf or ipvs/);
  assert.throws(() => mergeConfig(undefined, { source: "/srv/manifests" }), /source: must be dir:PATH/);
});

test("loadConfigFile / readConfigFile read a file; a missing file is a ConfigError", async () => {
  const dir = await mkdtemp(join(tmpdir(), "bpfproxy-config-"));
  try {
    const path = join(dir, "config.conf");
    await writeFile(
      path,
      `${HEADER}mode: ipvs\nipvs:\n  scheduler: wrr\n  syncPeriod: 45s\nbpfproxy:\n  source: dir:/srv/svc\n`,
    );
    const cfg = await loadConfigFile(path);
    assert.equal(cfg.mode, "ipvs");
    assert.equal(cfg.ipvsScheduler, "wrr");
    assert.equal(cfg.syncPeriodMs, 45_000);
    assert.equal(cfg.source, "dir:/srv/svc");
    assert.deepEqual((await readConfigFile(path)).config, {
      mode: "ipvs",
      syncPeriodMs: 45_000,
      ipvsScheduler: "wrr",
      source: "dir:/srv/svc",
    });
    await writeFile(
      path,
      JSON.stringify({
        apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
        kind: "KubeProxyConfiguration",
        minSyncPeriod: "2s",
      }),
    );
    assert.equal((await loadConfigFile(path)).minSyncPeriodMs, 2000, "JSON works too");
    await assert.rejects(
      loadConfigFile(join(dir, "missing.conf")),
      (e: unknown) => e instanceof ConfigError && /cannot read config file/.test(e.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("--cluster-cidr is one CIDR or a dual-stack pair; two of one family or three are refused, as kube-proxy does", () => {
  // Accepted: one CIDR of either family, or one of each in either order (file and flags alike).
  for (const list of [["10.244.0.0/16"], ["fd00:10:244::/56"], ["fd00:10:244::/56", "10.244.0.0/16"]]) {
    assert.deepEqual(mergeConfig(undefined, { clusterCIDRs: list }).clusterCIDRs, list);
    const parsed = parseConfigText(`${HEADER}clusterCIDR: ${list.join(",")}\n`, "test.yaml");
    assert.deepEqual(mergeConfig(parsed.config, {}).clusterCIDRs, list);
  }
  for (const [list, why] of [
    [["10.244.0.0/16", "10.245.0.0/16"], /must be a valid DualStack CIDR/],
    [["fd00:10:244::/56", "fd00:10:245::/56"], /must be a valid DualStack CIDR/],
    [["10.244.0.0/16", "fd00:10:244::/56", "10.245.0.0/16"], /only one CIDR allowed or a valid DualStack CIDR/],
  ] as const) {
    assert.throws(
      () => mergeConfig(undefined, { clusterCIDRs: [...list] }),
      (e: unknown) =>
        e instanceof ConfigError && e.problems.some((p) => p.path === "clusterCIDRs" && why.test(p.reason)),
      list.join(","),
    );
    const e = configError(`${HEADER}clusterCIDR: ${list.join(",")}\n`);
    assert.ok(
      e.problems.some((p) => p.path === "clusterCIDR" && why.test(p.reason)),
      list.join(","),
    );
    const dl = configError(`${HEADER}detectLocal:\n  clusterCIDRs: [${list.join(", ")}]\n`);
    assert.ok(
      dl.problems.some((p) => p.path === "detectLocal.clusterCIDRs" && why.test(p.reason)),
      list.join(","),
    );
  }
});
