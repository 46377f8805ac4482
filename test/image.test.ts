// The image, built from deploy/Dockerfile by scripts/image.sh (buildah), run the way the DaemonSet runs it:
// its entrypoint, working directory and environment from the image's config, the container's arguments from
// deploy/03-daemonset.yaml, the ConfigMap's config.conf, the DaemonSet's capabilities and its volume mounts
// (read from the manifest, read-only where it says so), inside a lab node namespace.
//
// No container runtime can start containers on this machine, so the image's root file system is mounted
// (`buildah mount`) and the entrypoint runs in it with chroot under `ip netns exec`: that command gives the
// process its own mount namespace (with a /sys of the node namespace), where a small host shell binds the
// DaemonSet's volumes into the root file system and then chroots. Those binds vanish with the process.
// What differs from a cluster, and why:
// - hostPath /sys/fs/bpf is the test's private bpffs, and hostPath /sys/fs/cgroup is a child cgroup of a
//   private cgroup2 mount (programs are never attached to the machine's root cgroup);
// - the ConfigMap's config.conf is used with two fields changed: clientConnection.kubeconfig names a
//   kubeconfig for the test API server (the in-cluster service-account path needs TLS and a token, which
//   the test API server does not have), and podInterfaces is the lab's "lxc*";
// - `bpfproxy status` runs as `kubectl debug node/... --profile=sysadmin` would run it (all capabilities:
//   reading program names needs CAP_SYS_ADMIN, which the DaemonSet's container does not have).
// Everything made is removed after, also on failure; the build cache (.image-cache/, buildah's layers)
// stays so that reruns are quick.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Server } from "node:net";
import type { ChildProcess } from "node:child_process";
import YAML from "yaml";
import type { V1ClusterRole, V1ConfigMap, V1DaemonSet, V1Volume } from "@kubernetes/client-node";
import { startApiServer, type ApiServer } from "./apiserver/index.js";
import { unixToTcp } from "./fixtures/relay.js";
import { grants } from "./rbac-helpers.js";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "the image test mounts images, builds namespaces and loads BPF: run it as root");

const ROOT_DIR = fileURLToPath(new URL("../", import.meta.url));
const DEPLOY = join(ROOT_DIR, "deploy");
const TAG = `localhost/bpfproxy-imagetest:${process.pid}`;
const VIP = "10.96.0.10";
const POD = { web1: "10.244.1.5", web2: "10.244.1.6", client: "10.244.1.20" };
const API_IN_NODE = "127.0.0.1:6443";
const GONE = "10.244.1.99:8080"; // an endpoint that no longer exists
const BUILD_TIMEOUT_MS = 40 * 60_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a host command, bounded; never throws for a non-zero exit. */
function host(cmd: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === "number"
          ? (err as { code: number }).code
          : -1
        : 0;
      resolve({ code, stdout, stderr: stderr + (err && code === -1 ? err.message : "") });
    });
  });
}

async function hostOK(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const r = await host(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

const sh = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

const manifests = (file: string) =>
  YAML.parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8")).map((d) => d.toJS() as Record<string, unknown>);

// The daemon recorded the cgroup as it saw it (/run/bpfproxy/cgroupv2); a debug pod has the host's at /host.
const DEBUG_SETUP = "mkdir -p /run/bpfproxy && ln -sfn /host/sys/fs/cgroup /run/bpfproxy/cgroupv2";

/**
 * deploy/README.md's command for `bpfproxy status` / `cleanup` in a node debug pod (what follows `--` on
 * its `kubectl debug node/...` lines). The README must carry it verbatim, so the test runs what users run.
 */
function readmeCommand(verb: "status" | "cleanup", extra: string[] = []): string[] {
  const script = `${DEBUG_SETUP} && exec node /opt/bpfproxy/dist/cli.js ${verb} --bpffs /host/sys/fs/bpf/bpfproxy`;
  const readme = readFileSync(join(DEPLOY, "README.md"), "utf8");
  assert.ok(readme.includes(`-- sh -c '${script}'`), `deploy/README.md runs: sh -c '${script}'`);
  return ["sh", "-c", `${script} "$@"`, "sh", ...extra];
}

describe("the image, run as the DaemonSet runs it", { timeout: BUILD_TIMEOUT_MS + 10 * 60_000 }, () => {
  let buildSeconds = 0;
  let container = "";
  let rootfs = "";
  let entrypoint: string[] = [];
  let workdir = "";
  let imageEnv: string[] = [];
  let dsArgs: string[] = [];
  let dsCaps: string[] = [];
  /** The DaemonSet container's volume mounts, each with the test's stand-in for its host path. */
  let dsMounts: { mountPath: string; source: string; readOnly: boolean }[] = [];
  let dir = "";
  let confDir = "";
  let api: ApiServer | undefined;
  let relay: Server | undefined;
  let lab: Lab | undefined;
  let bpffs: PrivateBpffs | undefined;
  let cgRoot = "";
  let cgroup = "";
  let daemon: { child: ChildProcess; output: () => string } | undefined;

  /**
   * The host shell that, inside `ip netns exec` (its own mount namespace), binds a pod's volumes into the
   * image's root and chroots into it.
   * - "daemonset": the DaemonSet's container (its volumes; caps: its capability set, via the image's setpriv);
   * - "bare": no volumes (a node whose /sys/fs/bpf has no bpffs);
   * - "debug": the README's `kubectl debug node/NODE --profile=sysadmin --image=<this image> -- ARGV`, a
   *   privileged pod (all capabilities) in the host network namespace with the host's root at /host. Here
   *   "the host" is the lab node: its bpffs and cgroup appear at /host/sys/fs/bpf and /host/sys/fs/cgroup.
   */
  function inPod(
    kind: "daemonset" | "debug" | "bare",
    argv: string[],
    caps?: string[],
    env: Record<string, string> = {},
  ) {
    const r = rootfs;
    const envArgs = [...imageEnv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)];
    const setpriv = caps
      ? [
          "/usr/bin/setpriv",
          `--bounding-set=-all,${caps.map((c) => `+${c.toLowerCase()}`).join(",")}`,
          "--inh-caps=-all",
          "--",
        ]
      : [];
    const inner = [...setpriv, "/usr/bin/env", "-i", "-C", workdir, ...envArgs, ...argv];
    const volumes =
      kind === "daemonset"
        ? dsMounts.flatMap((m) => [
            `mkdir -p ${sh(r + m.mountPath)}`,
            `mount --bind ${sh(m.source)} ${sh(r + m.mountPath)}`,
            ...(m.readOnly ? [`mount -o remount,bind,ro ${sh(r + m.mountPath)}`] : []),
          ])
        : kind === "bare"
          ? []
          : [
              // A pod of its own: an empty /run, the node's bpffs and cgroup2 under /host.
              `mount -t tmpfs tmpfs ${sh(r + "/run")}`,
              `mkdir -p ${sh(r + "/host/sys/fs/bpf")} ${sh(r + "/host/sys/fs/cgroup")}`,
              `mount --bind ${sh(bpffs!.path)} ${sh(r + "/host/sys/fs/bpf")}`,
              `mount --bind ${sh(cgroup)} ${sh(r + "/host/sys/fs/cgroup")}`,
            ];
    const script = [
      "set -e",
      // /sys of the node namespace (ip netns exec mounted it), /proc, /dev: what a container sees.
      `mount --rbind /sys ${sh(r + "/sys")}`,
      `mount -t proc proc ${sh(r + "/proc")}`,
      `mount --rbind /dev ${sh(r + "/dev")}`,
      ...volumes,
      `exec chroot ${sh(r)} ${inner.map(sh).join(" ")}`,
    ].join("\n");
    return ["/bin/sh", "-c", script];
  }

  /** deploy/README.md's `bpfproxy status` (with extra arguments) in a node debug pod. */
  async function status(): Promise<DataplaneStatus> {
    const r = await lab!.exec("node-a", inPod("debug", readmeCommand("status", ["-o", "json"])), {
      timeoutMs: 30_000,
    });
    if (r.code !== 0) throw new Error(`status in the image failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as DataplaneStatus;
  }

  async function waitForStatus(pred: (s: DataplaneStatus) => boolean, timeoutMs: number): Promise<DataplaneStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: string;
    for (;;) {
      if (daemon && daemon.child.exitCode !== null) throw new Error(`the daemon exited:\n${daemon.output()}`);
      try {
        const s = await status();
        if (pred(s)) return s;
        last = JSON.stringify(s.frontends);
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline)
        throw new Error(`status not reached in ${timeoutMs} ms; last: ${last}\n${daemon?.output()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** The DaemonSet's container: entrypoint + args, NODE_NAME from the downward API, its capabilities. */
  function startDaemon(extraArgs: string[] = []): void {
    const args = dsArgs.map((a) => a.replace("$(NODE_NAME)", "node-a"));
    const child = lab!.spawn(
      "node-a",
      inPod("daemonset", [...entrypoint, ...args, ...extraArgs], dsCaps, { NODE_NAME: "node-a" }),
    );
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
    daemon = { child, output: () => out };
  }

  async function stopDaemon(): Promise<void> {
    const d = daemon;
    daemon = undefined;
    if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
    const done = new Promise<void>((r) => d.child.once("exit", () => r()));
    d.child.kill("SIGTERM"); // sh exec'd chroot, which exec'd setpriv, env and node: the pid is the daemon's
    const t = setTimeout(() => d.child.kill("SIGKILL"), 10_000);
    await done;
    clearTimeout(t);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-image-"));
    // 1. Build (cold: debootstrap, apt, npm ci; warm: buildah's layer cache), timed.
    const t0 = Date.now();
    const build = await new Promise<Run>((resolve) => {
      const p = spawn("bash", ["scripts/image.sh", "--engine", "buildah", "--base-from-debootstrap", "--tag", TAG], {
        cwd: ROOT_DIR,
      });
      let stdout = "";
      let stderr = "";
      p.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      p.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const t = setTimeout(() => p.kill("SIGKILL"), BUILD_TIMEOUT_MS);
      p.on("close", (code) => {
        clearTimeout(t);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
    buildSeconds = Math.round((Date.now() - t0) / 1000);
    assert.equal(build.code, 0, `scripts/image.sh failed:\n${build.stderr.slice(-6000)}`);
    assert.equal(build.stdout.trim().split("\n").pop(), TAG);

    // 2. The image's config and root file system.
    const inspect = JSON.parse(await hostOK("buildah", ["inspect", "--type", "image", TAG])) as {
      OCIv1: { config: { Entrypoint?: string[]; WorkingDir?: string; Env?: string[] } };
    };
    entrypoint = inspect.OCIv1.config.Entrypoint ?? [];
    workdir = inspect.OCIv1.config.WorkingDir ?? "/";
    imageEnv = inspect.OCIv1.config.Env ?? [];
    container = (await hostOK("buildah", ["from", "--pull-never", TAG])).trim();
    rootfs = (await hostOK("buildah", ["mount", container])).trim();

    // 3. The DaemonSet's container and the ConfigMap's config, as deployed.
    const ds = manifests("03-daemonset.yaml")[0] as unknown as V1DaemonSet;
    const c = ds.spec!.template.spec!.containers[0]!;
    dsArgs = c.args ?? [];
    dsCaps = c.securityContext?.capabilities?.add ?? [];
    assert.deepEqual(c.command, undefined, "the DaemonSet uses the image's entrypoint");
    const cm = manifests("02-configmap.yaml")[0] as unknown as V1ConfigMap;
    const conf = YAML.parse(cm.data!["config.conf"]!) as Record<string, Record<string, unknown>>;
    conf.clientConnection!.kubeconfig = "/etc/bpfproxy/kubeconfig";
    conf.bpfproxy!.podInterfaces = ["lxc*"];
    confDir = join(dir, "config");
    mkdirSync(confDir);
    writeFileSync(join(confDir, "config.conf"), YAML.stringify(conf));
    writeFileSync(
      join(confDir, "kubeconfig"),
      YAML.stringify({
        apiVersion: "v1",
        kind: "Config",
        "current-context": "test",
        // client-node refuses plain http unless TLS verification is explicitly off.
        clusters: [{ name: "test", cluster: { server: `http://${API_IN_NODE}`, "insecure-skip-tls-verify": true } }],
        contexts: [{ name: "test", context: { cluster: "test", user: "test" } }],
        users: [{ name: "test", user: {} }],
      }),
    );

    // 4. API server with a Service, its EndpointSlice and the Node; the lab; the host paths.
    api = await startApiServer({ port: 0 });
    const put = (o: Record<string, unknown>) => api!.store.create(o);
    put({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a", labels: { "kubernetes.io/hostname": "node-a" } },
      status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
    });
    put({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: {
        type: "ClusterIP",
        clusterIP: VIP,
        clusterIPs: [VIP],
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
      },
    });
    put({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: "IPv4",
      metadata: { name: "web-1", namespace: "default", labels: { "kubernetes.io/service-name": "web" } },
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      endpoints: [POD.web1, POD.web2].map((ip) => ({
        addresses: [ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: "node-a",
      })),
    });
    const sock = join(dir, "api.sock");
    relay = await unixToTcp(sock, "127.0.0.1", api.port);
    lab = await Lab.create({
      prefix: `bpximg${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [
            { name: "web-1", ip: POD.web1 },
            { name: "web-2", ip: POD.web2 },
            { name: "client", ip: POD.client },
          ],
        },
      ],
    });
    const r = lab.spawn(
      "node-a",
      [process.execPath, "--import", "tsx", "test/fixtures/relay.ts", "tcp-to-unix", API_IN_NODE, sock],
      {
        cwd: ROOT_DIR,
      },
    );
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("relay not ready")), 10_000);
      r.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && (clearTimeout(t), resolve()));
    });
    for (const pod of ["web-1", "web-2"]) await startEchoServer(lab, pod, { name: pod, tcp: [8080] });
    bpffs = PrivateBpffs.create("image");
    cgRoot = mkdtempSync(join(tmpdir(), "bpximg-cgroup-"));
    await hostOK("mount", ["-t", "cgroup2", "none", cgRoot]);
    cgroup = join(cgRoot, `bpfproxy-image-test-${process.pid}`);
    mkdirSync(cgroup);

    // The host paths the DaemonSet mounts, each replaced by the lab's own (see the top of this file).
    const standIn = (v: V1Volume): string => {
      if (v.configMap?.name === "bpfproxy") return confDir;
      if (v.hostPath?.path === "/sys/fs/bpf") return bpffs!.path;
      if (v.hostPath?.path === "/sys/fs/cgroup") return cgroup;
      throw new Error(`the image test has no stand-in for volume ${JSON.stringify(v)}: add one`);
    };
    const volumes = new Map((ds.spec!.template.spec!.volumes ?? []).map((v) => [v.name, v]));
    dsMounts = (c.volumeMounts ?? []).map((m) => ({
      mountPath: m.mountPath,
      source: standIn(volumes.get(m.name)!),
      readOnly: m.readOnly === true,
    }));
  });

  after(async () => {
    // Each step on its own so one failure does not leave the rest behind.
    await stopDaemon().catch(() => undefined);
    if (lab && rootfs && bpffs)
      await lab.exec("node-a", inPod("debug", readmeCommand("cleanup"))).catch(() => undefined);
    await lab?.destroy().catch(() => undefined);
    bpffs?.release();
    if (cgroup && existsSync(cgroup)) rmdirSync(cgroup);
    if (cgRoot) {
      await host("umount", [cgRoot]);
      rmSync(cgRoot, { recursive: true, force: true });
    }
    relay?.close();
    await api?.stop().catch(() => undefined);
    if (container) {
      await host("buildah", ["umount", container]);
      await host("buildah", ["rm", container]);
    }
    await host("buildah", ["rmi", TAG]); // untags; the layers stay as the build cache
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the runtime image has no compiler, no headers, no npm, and every library the addon links", async () => {
    console.log(`# image build: ${buildSeconds} s`);
    const size = Number((await hostOK("du", ["-sb", "--one-file-system", rootfs])).split(/\s/)[0]);
    console.log(`# image root file system: ${(size / 2 ** 20).toFixed(0)} MiB`);
    for (const f of ["usr/bin/gcc", "usr/bin/cc", "usr/bin/g++", "usr/bin/clang", "usr/bin/make", "usr/local/bin/npm"])
      assert.ok(!existsSync(join(rootfs, f)), `${f} is in the image`);
    // Headers: none but the one iproute2 itself ships (bpf_elf.h, part of the runtime package).
    const iproute2Files = new Set(readFileSync(join(rootfs, "var/lib/dpkg/info/iproute2.list"), "utf8").split("\n"));
    for (const d of ["usr/include", "usr/local/include", "usr/local/lib/node_modules"]) {
      const files = existsSync(join(rootfs, d))
        ? readdirSync(join(rootfs, d), { recursive: true, withFileTypes: true })
            .filter((e) => !e.isDirectory())
            .map((e) => join(e.parentPath, e.name).slice(rootfs.length))
        : [];
      assert.deepEqual(
        files.filter((f) => !iproute2Files.has(f)),
        [],
        `${d} holds only iproute2's files`,
      );
    }
    const pkgs = (await hostOK("dpkg-query", [`--admindir=${rootfs}/var/lib/dpkg`, "-W", "-f", "${Package}\\n"])).split(
      "\n",
    );
    assert.deepEqual(
      pkgs.filter((p) => /-dev$|^(gcc|g\+\+|clang|cpp|llvm|binutils|make)(-\d+)?$/.test(p)),
      [],
      "development packages",
    );
    for (const p of ["libbpf1", "libnl-3-200", "libnl-genl-3-200", "iproute2", "nftables"])
      assert.ok(pkgs.includes(p), p);
    const ldd = await hostOK("chroot", [rootfs, "ldd", join(workdir, "native/build/Release/bpfproxy.node")]);
    assert.doesNotMatch(ldd, /not found/, ldd);
    for (const lib of ["libbpf.so.1", "libnl-genl-3.so.200", "libnl-3.so.200"]) assert.match(ldd, new RegExp(lib));
    assert.ok(size < 300 * 2 ** 20, `image root ${size} bytes`);
  });

  test("the init container's command mounts a bpffs at /sys/fs/bpf where the node has none, and only there", async () => {
    const init = (manifests("03-daemonset.yaml")[0] as unknown as V1DaemonSet).spec!.template.spec!.initContainers![0]!;
    assert.equal(init.securityContext?.privileged, true); // all capabilities, as inPod gives without caps
    const cmd = [...(init.command ?? []), ...(init.args ?? [])];
    const count = `grep -c ' /sys/fs/bpf bpf ' /proc/mounts || true`;
    const run = (kind: "bare" | "daemonset") =>
      lab!.run("node-a", inPod(kind, ["/bin/sh", "-c", `"$@" && ${count}`, "sh", ...cmd]), { timeoutMs: 30_000 });
    const before = await lab!.run("node-a", inPod("bare", ["/bin/sh", "-c", count]), { timeoutMs: 30_000 });
    assert.equal(before.trim(), "0", "no bpffs in a bare pod");
    assert.equal((await run("bare")).trim(), "1", "mounted where there was none");
    assert.equal((await run("daemonset")).trim(), "1", "left alone where one is mounted");
  });

  test("the DaemonSet's container starts, attaches the programs (socket hooks on the read-only cgroup mount), a ClusterIP answers, and kube-proxy's stale rules no longer matter", async () => {
    // kube-proxy's leftovers after `kubectl delete daemonset kube-proxy` (README step 1): its service-portal
    // chain, still hooked in, with a DNAT of the ClusterIP to an endpoint that is gone.
    const stale = [
      ["-N", "KUBE-SERVICES"],
      ["-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
      ["-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
      ["-A", "KUBE-SERVICES", "-d", `${VIP}/32`, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", GONE],
    ];
    for (const rule of stale) await lab!.run("node-a", ["iptables", "-w", "5", "-t", "nat", ...rule]);
    const before = await echoRequest(lab!, "client", { tcp: `${VIP}:80`, count: 3, timeoutMs: 1000 });
    assert.deepEqual(
      before.filter((r) => r.ok),
      [],
      "before bpfproxy the stale rule sends the ClusterIP to the gone endpoint",
    );

    startDaemon();
    const st = await waitForStatus(
      (s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 2),
      60_000,
    );
    assert.equal(st.node, "node-a");
    assert.equal(st.mode, "bpf");
    const progs = new Set(st.attachments.map((a) => `${a.interface}:${a.program}`));
    assert.ok(progs.has("eth0:bpx_from_device"), JSON.stringify(st.attachments));
    for (const pod of ["web-1", "web-2", "client"])
      assert.ok(progs.has(`${lab!.podInterface(pod)}:bpx_from_pod`), `${pod}: ${JSON.stringify(st.attachments)}`);
    const sock = st.attachments.filter((a) => a.hook.startsWith("cgroup-"));
    assert.ok(sock.length > 0, JSON.stringify(st.attachments));
    assert.ok(
      sock.every((a) => a.interface === "/run/bpfproxy/cgroupv2"),
      `socket hooks on the mounted cgroup only: ${JSON.stringify(sock)}`,
    );
    const cg = await lab!.run("node-a", ["bpftool", "cgroup", "show", cgroup]);
    assert.match(cg, /cgroup_inet4_connect\s+bpx_sock_conn4/, `attached to the test's cgroup: ${cg}`);

    const res = await echoRequest(lab!, "client", { tcp: `${VIP}:80`, count: 20 });
    assert.deepEqual(
      res.filter((r) => !r.ok),
      [],
    );
    assert.deepEqual([...new Set(res.map((r) => r.reply!.split(" ")[0]))].sort(), ["web-1", "web-2"]);
    // The stale rule is still in place and matches nothing any more: bpfproxy translates before netfilter.
    assert.match(
      await lab!.run("node-a", ["iptables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"]),
      /10\.244\.1\.99/,
    );

    // The table form of the README's status command too.
    const table = await lab!.run("node-a", inPod("debug", readmeCommand("status")), { timeoutMs: 30_000 });
    assert.match(table, new RegExp(VIP.replaceAll(".", "\\.")));
  });

  test("the requests the daemon made are exactly what the ClusterRole grants", () => {
    const used = new Set<string>();
    for (const r of api!.requests) if (r.kind === "resource") used.add(`${r.group ?? ""}/${r.resource} ${r.verb}`);
    const role = manifests("01-rbac.yaml").find((o) => o.kind === "ClusterRole") as unknown as V1ClusterRole;
    assert.deepEqual([...used].sort(), grants(role));
  });

  test("a first list that keeps failing never fails /livez (kube-proxy: healthy while starting up), and the daemon syncs once it succeeds", async () => {
    // What the liveness probe's budget (README.md "Probes") rests on: no change has been queued while the
    // first list fails, so nothing is late and liveness cannot restart a node whose first list is slow. With
    // syncPeriod cut to 2 s, 10 s of a failing list is 5 x syncPeriod.
    await stopDaemon();
    const livez = async () => {
      const r = await lab!.exec("node-a", [
        process.execPath,
        "-e",
        "fetch('http://127.0.0.1:10256/livez').then((r) => console.log(r.status), () => console.log(0))",
      ]);
      return Number(r.stdout.trim());
    };
    const stopFailing = api!.failRequests({ resource: "services", verb: "list" }, { times: Infinity });
    try {
      const t0 = Date.now();
      startDaemon(["--sync-period=2s"]);
      const seen: { ms: number; code: number }[] = [];
      while (Date.now() - t0 < 10_000) {
        seen.push({ ms: Date.now() - t0, code: await livez() });
        await new Promise((r) => setTimeout(r, 250));
      }
      // 0 until the health server listens; after that only 200.
      const answered = seen.filter((s) => s.code !== 0);
      assert.ok(
        answered.some((s) => s.ms >= 4000),
        `answers past 2 x syncPeriod: ${JSON.stringify(seen)}`,
      );
      assert.deepEqual(
        answered.filter((s) => s.code !== 200),
        [],
        `only 200 while the first list fails: ${JSON.stringify(seen)}`,
      );
      assert.doesNotMatch(daemon!.output(), /synced resource="\/api\/v1\/services"/);
    } finally {
      stopFailing();
    }
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !/synced resource="\/api\/v1\/services"/.test(daemon!.output()))
      await new Promise((r) => setTimeout(r, 250));
    assert.match(daemon!.output(), /synced resource="\/api\/v1\/services"/, "the Services list after it recovered");
    assert.equal(await livez(), 200);
    await stopDaemon();
  });

  test("IPVS mode runs its probe and stops at the kernel's missing IPVS, not at a missing binary or library", async () => {
    await stopDaemon();
    // The tools the IPVS data plane runs work in the image, with the DaemonSet's capabilities, against the
    // node namespace's kernel state.
    for (const cmd of [
      ["ip", "-j", "link", "show", "dev", "eth0"],
      ["nft", "list", "tables"],
    ]) {
      const r = await lab!.exec("node-a", inPod("daemonset", cmd, dsCaps));
      assert.equal(r.code, 0, `${cmd.join(" ")}: ${r.stderr}`);
    }
    startDaemon(["--mode=ipvs"]);
    const d = daemon!;
    const deadline = Date.now() + 30_000;
    // A failed start ends the process (kube-proxy's behaviour), so the pod restarts at once.
    while (d.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const out = d.output();
    const exitCode = d.child.exitCode;
    await stopDaemon();
    assert.equal(exitCode, 1, `the daemon exits with 1 when its data plane cannot start: ${out}`);
    assert.match(out, /data plane mode chosen mode="ipvs"/, out);
    // The probe's own answer (the addon asked the kernel over generic netlink through libnl).
    assert.match(out, /ipvs mode: the kernel's IPVS is not available: .*generic netlink family IPVS/s, out);
    assert.doesNotMatch(out, /spawn\S* (ip|nft) ENOENT|command not found|cannot open shared object/i, out);
  });

  test("the README's rollback cleanup (a debug pod) detaches every program and removes the pins", async () => {
    const out = await lab!.run("node-a", inPod("debug", readmeCommand("cleanup")), { timeoutMs: 30_000 });
    assert.match(out, /detached bpx_from_device from eth0/, out);
    for (const dev of ["eth0", lab!.podInterface("client")])
      assert.equal((await lab!.run("node-a", ["tc", "filter", "show", "dev", dev, "ingress"])).trim(), "", dev);
    const cg = await lab!.run("node-a", ["bpftool", "cgroup", "show", cgroup]);
    assert.equal(cg.trim(), "", `socket programs left on the cgroup: ${cg}`);
    const pins = join(bpffs!.path, "bpfproxy");
    assert.deepEqual(existsSync(pins) ? readdirSync(pins) : [], []);
  });
});
