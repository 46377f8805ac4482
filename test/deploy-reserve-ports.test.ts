// The shipped DaemonSet reserves the SNAT port range and the NodePort range on the node (net.ipv4.ip_local_reserved_ports), which the
// daemon's own container cannot: its /proc/sys is read-only (not privileged), and pod sysctls do not apply to
// a hostNetwork pod. A privileged init container runs `bpfproxy reserve-ports` with the ConfigMap's config.
// Checked here:
//   - the manifest (test/deploy.test.ts checks the Helm chart renders the same objects): the init container
//     runs the daemon's image with that subcommand and the daemon's --config, privileged, config mounted, in a
//     hostNetwork pod;
//   - its command, taken from the manifest and run in a lab node namespace with the ConfigMap's config.conf,
//     adds the ranges and keeps the entries already there, twice over (idempotent);
//   - the daemon then runs with /proc/sys read-only, as in its container, and finds the range reserved; in a
//     namespace where the init container did not run, it cannot reserve them (the warnings), and the subcommand
//     itself fails there with a message saying what it needs.
// The lab's namespaces and the read-only bind of /proc/sys (inside `ip netns exec`'s private mount namespace)
// go away after, also on failure.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import type { V1ConfigMap, V1DaemonSet } from "@kubernetes/client-node";
import { Lab } from "../src/lab/netns.js";
import { cliCommand, PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { parseConfigText } from "../src/config.js";
import { parseNodePortRange, parseSnatPortRange } from "../src/config/validate.js";
import { DEFAULT_NODE_PORT_RANGE, DEFAULT_SNAT_PORT_RANGE } from "../src/config/defaults.js";
import { parsePortList } from "../src/dataplane/bpf/reserved-ports.js";

const DEPLOY = fileURLToPath(new URL("../deploy/", import.meta.url));
const CONFIG_IN_POD = "/etc/bpfproxy/config.conf";
// Runs the rest of the command line with /proc/sys read-only, as a container that is not privileged has it.
const READ_ONLY_PROC_SYS = [
  "sh",
  "-c",
  'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"',
  "ro-proc-sys",
];

const ds = YAML.parse(readFileSync(join(DEPLOY, "03-daemonset.yaml"), "utf8")) as V1DaemonSet;
const cm = YAML.parse(readFileSync(join(DEPLOY, "02-configmap.yaml"), "utf8")) as V1ConfigMap;
const pod = ds.spec!.template.spec!;
const init = pod.initContainers?.find((c) => c.name === "reserve-ports");
const main = pod.containers.find((c) => c.name === "bpfproxy")!;
const configText = cm.data!["config.conf"]!;
const configured = parseConfigText(configText, "deploy/02-configmap.yaml").config;
const range = parseSnatPortRange(configured.snatPortRange ?? DEFAULT_SNAT_PORT_RANGE);
const nodePorts = parseNodePortRange(configured.nodePortRange ?? DEFAULT_NODE_PORT_RANGE);

test("the DaemonSet reserves the SNAT and NodePort ranges from a privileged init container running the daemon's image", () => {
  assert.ok(init, `an init container reserve-ports: ${JSON.stringify(pod.initContainers?.map((c) => c.name))}`);
  assert.equal(pod.hostNetwork, true, "the node's network namespace: its ip_local_reserved_ports");
  assert.equal(init.image, main.image);
  assert.deepEqual(init.command, ["node", "dist/cli.js", "reserve-ports"]);
  assert.deepEqual(init.args, [`--config=${CONFIG_IN_POD}`]);
  assert.ok(main.args?.includes(`--config=${CONFIG_IN_POD}`), "the daemon reads the same config");
  assert.equal(init.securityContext?.privileged, true, "only a privileged container has /proc/sys writable");
  const mount = init.volumeMounts?.find((m) => m.mountPath === "/etc/bpfproxy");
  assert.equal(pod.volumes?.find((v) => v.name === mount?.name)?.configMap?.name, "bpfproxy");
  // The command is relative to the image's working directory, where the entrypoint (bin/bpfproxy) runs dist/cli.js too.
  const dockerfile = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
  assert.match(dockerfile, /WORKDIR \/opt\/bpfproxy\s[\s\S]*ENTRYPOINT \["bin\/bpfproxy", "run"\]/);
});

let lab: Lab;
let dir: string;
let bpffs: PrivateBpffs | undefined;
const proxies: ProxyNode[] = [];

before(async () => {
  assert.equal(process.getuid?.(), 0, "builds namespaces and loads BPF: run as root");
  dir = mkdtempSync(join(tmpdir(), "bpfproxy-reserve-"));
  writeFileSync(join(dir, "config.conf"), configText);
  lab = await Lab.create({
    prefix: `bpxrp${process.pid}-`,
    nodes: [
      { name: "node-a", ip: "192.0.2.11", podCIDR: "10.244.1.0/24", pods: [] },
      { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [] },
    ],
  });
  bpffs = PrivateBpffs.create("reserve");
});

after(async () => {
  for (const p of proxies) {
    await p.stop().catch(() => undefined);
    await p.cleanup().catch(() => undefined);
  }
  await lab?.destroy();
  bpffs?.release();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The init container's command line from the manifest, with the image's `node dist/cli.js` and config path
 * swapped for this checkout's and the test's copy of the ConfigMap. */
function initCommand(): string[] {
  assert.deepEqual(init?.command?.slice(0, 2), ["node", "dist/cli.js"]);
  const args = [...init.command.slice(2), ...(init.args ?? [])];
  return [...cliCommand(), ...args.map((a) => a.replace(CONFIG_IN_POD, join(dir, "config.conf")))];
}

const reserved = (node: string) =>
  lab.run(node, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).then((s) => s.trim());

test("the init container's command adds the configured ranges to the node's reserved ports, keeping the entries there", async () => {
  // The shipped config's ranges touch (SNAT just below the NodePorts), so the kernel's list shows them as one.
  assert.equal(range.max + 1, nodePorts.min, "the SNAT range ends where the NodePort range starts");
  // An administrator's entries, one below the SNAT range and one above the NodePort range.
  const below = `${range.min - 1}`;
  const above = `${nodePorts.max + 2}-${nodePorts.max + 4}`;
  const had = [below, above].join(",");
  await lab.run("node-a", ["sysctl", "-q", "-w", `net.ipv4.ip_local_reserved_ports=${had}`]);
  const want = [`${range.min - 1}-${nodePorts.max}`, above].join(",");
  for (const round of [1, 2]) {
    const r = await lab.exec("node-a", initCommand(), { timeoutMs: 30_000 });
    assert.equal(r.code, 0, `round ${round}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), `net.ipv4.ip_local_reserved_ports = ${want}`, `round ${round}`);
    assert.equal(await reserved("node-a"), want, `round ${round}: the kernel holds it`);
  }
});

test("the daemon with a read-only /proc/sys finds the ranges reserved; without the init container it cannot reserve them", async () => {
  // node-a: after the init container (previous test). node-b: it never ran.
  const covered = (list: string) =>
    [range, nodePorts].every((want) => parsePortList(list).some((r) => r.min <= want.min && r.max >= want.max));
  assert.ok(covered(await reserved("node-a")), "node-a's init container ran");
  assert.equal(await reserved("node-b"), "", "node-b starts with nothing reserved");
  for (const node of ["node-a", "node-b"]) {
    const manifestDir = join(dir, `services-${node}`); // no Services: only the start-up matters here
    mkdirSync(manifestDir);
    proxies.push(
      await ProxyNode.start(lab, node, {
        manifestDir,
        bpffs: join(bpffs!.path, node),
        wrapper: READ_ONLY_PROC_SYS,
        extraArgs: [
          "--snat-port-range",
          `${range.min}-${range.max}`,
          "--node-port-range",
          `${nodePorts.min}-${nodePorts.max}`,
          "--metrics-bind-address",
          "",
        ],
      }).catch((e: Error) => {
        throw new Error(`${node}: ${e.message}`);
      }),
    );
  }
  const [a, b] = proxies;
  await a!.waitForLog(/reserved the NodePort range/);
  assert.match(a!.logs, /reserved the SNAT port range/);
  assert.doesNotMatch(a!.logs, /could not reserve/, a!.logs);
  await b!.waitForLog(/could not reserve the NodePort range/);
  assert.match(b!.logs, /could not reserve the SNAT port range/);
  assert.equal(await reserved("node-b"), "", "node-b: still nothing reserved");
  assert.ok(covered(await reserved("node-a")), "node-a: still reserved while the daemon runs");

  // The subcommand fails loudly where /proc/sys is read-only (an init container that is not privileged).
  const r = await lab.exec("node-b", [...READ_ONLY_PROC_SYS, ...initCommand()], { timeoutMs: 30_000 });
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr + r.stdout, /cannot reserve .*privileged container with hostNetwork/);
});
