// Mode selection and IPVS settings that need no IPVS in the kernel (this machine's kernel has none: the
// IPVS data plane itself is tested inside a VM, test/vm-ipvs.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseMode, DISABLE_BPF_ENV, probeBpf } from "../src/dataplane/probe.js";
import { parseConfigText } from "../src/config.js";
import { IpvsDataplane } from "../src/dataplane/ipvs/index.js";

const HEADER = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

test("auto picks bpf on this kernel: every program type, map type and helper probes as present", () => {
  const p = probeBpf();
  assert.deepEqual(p.missing, []);
  const c = chooseMode("auto");
  assert.equal(c.mode, "bpf");
  assert.match(c.reason, /auto/);
});

test(`auto picks ipvs when BPF is made unavailable (${DISABLE_BPF_ENV}=1), naming why`, () => {
  process.env[DISABLE_BPF_ENV] = "1";
  try {
    const c = chooseMode("auto");
    assert.equal(c.mode, "ipvs");
    assert.match(c.reason, new RegExp(DISABLE_BPF_ENV));
  } finally {
    delete process.env[DISABLE_BPF_ENV];
  }
});

test("auto picks ipvs and lists what is missing when a probe says no", () => {
  const c = chooseMode("auto", () => ({ ok: false, missing: ["helper bpf_csum_diff in tc programs"] }));
  assert.equal(c.mode, "ipvs");
  assert.match(c.reason, /bpf_csum_diff/);
});

test("an explicit mode is used as given", () => {
  assert.equal(
    chooseMode("ipvs", () => {
      throw new Error("must not probe");
    }).mode,
    "ipvs",
  );
  assert.equal(
    chooseMode("bpf", () => {
      throw new Error("must not probe");
    }).mode,
    "bpf",
  );
});

test("kube-proxy's ipvs.* fields map to the IPVS data plane's settings", () => {
  const { config, warnings } = parseConfigText(`${HEADER}mode: ipvs
ipvs:
  scheduler: lc
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 30s
  udpTimeout: 10s
  excludeCIDRs: ["10.200.0.0/16"]
`);
  assert.equal(config.mode, "ipvs");
  assert.equal(config.ipvsScheduler, "lc");
  assert.equal(config.ipvsStrictARP, true);
  assert.deepEqual(config.ipvsTimeouts, { tcp: 900, tcpFin: 30, udp: 10 });
  assert.deepEqual(config.ipvsExcludeCIDRs, ["10.200.0.0/16"]);
  assert.deepEqual(
    warnings.filter((w) => w.includes("ipvs")),
    [],
  );
});

test("a bad ipvs.excludeCIDRs entry or an unknown scheduler is refused, naming the field", () => {
  assert.throws(() => parseConfigText(`${HEADER}ipvs:\n  excludeCIDRs: ["nope"]\n`), /ipvs\.excludeCIDRs/);
  const base = { bpffs: "/x", devices: [], podInterfaces: [], clusterCIDRs: [], nodeName: "n" };
  assert.throws(() => new IpvsDataplane({ ...base, scheduler: "fifo" }), /ipvs\.scheduler/);
  for (const s of ["", "rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh"])
    assert.doesNotThrow(() => new IpvsDataplane({ ...base, scheduler: s }));
});
