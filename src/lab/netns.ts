// A private multi-node test topology built from network namespaces (docs/lab.md).
//
//   ns <prefix><external> ──┐
//                           ├── ns <prefix>fabric (Linux bridge br0) ── ns <prefix><node> ── ns <prefix><pod> ...
//   ns <prefix><node> ──────┘
//
// Safety: every namespace, link, address and route the lab makes lives in a namespace it created
// (`ip netns add`, name = prefix + logical name). Nothing is added to the root namespace; links are created
// directly inside their namespaces (`ip -n NS link add ... peer ... netns OTHER`). Every command is bounded
// in time. destroy() kills what the lab spawned and deletes every namespace it made (which removes veths).
//
// Addressing and naming:
// - node: `eth0` = node.ip/24, its peer in the fabric is `fabricPort(node)` enslaved to br0.
//   Routes: each other node's podCIDR via that node's ip; the external subnet on-link (when it differs);
//   `default via` the upstream router (below), so nothing is unroutable on a node, as on a real one.
//   Sysctls: ip_forward=1, rp_filter=spec.rpFilter (default 2, Debian's) on all/default, set before any link.
//   Netfilter (spec.netfilter, default "conntrack"): filter policies ACCEPT and FORWARD drops ctstate INVALID,
//   as kube-proxy/Docker nodes have; conntrack is therefore live in every node namespace.
// - upstream router: ns <prefix>upstream, `eth0` = the node subnet's last host address (e.g. 192.0.2.254/24)
//   on the same bridge; the nodes' default gateway. ip_forward=0: it silently discards what it is sent to
//   forward (the Internet that never answers), so a packet bpfproxy should have dropped but did not is never
//   answered by it either; a counting rule says what reached it (Lab.upstreamForwarded()).
// - pod: `eth0` = pod.ip/32, `<gw> dev eth0 scope link`, `default via <gw>`, where gw is the first address of
//   the node's podCIDR. The host side of the pair lives in the node namespace, is named
//   `podInterface(pod)` = "lxc" + first 8 hex digits of sha256(pod name) (11 characters), carries gw/32 and a
//   /32 route to the pod. With node.bridge, the host sides are instead ports of that bridge, which carries
//   gw/<podCIDR prefix> (bridge CNIs).
// - external: `eth0` = external.ip/24 in its own subnet (198.51.100.0/24 by default) on the same bridge, with
//   an on-link route to the node subnet; the nodes have an on-link route back. No router in between.
// - There are no routes for the service CIDR anywhere: only the BPF programs translate service addresses.
// - IPv6 (opt-in: give nodes ip6/podCIDR6, pods ip6, the external client ip6; a lab may be IPv6-only): the same
//   layout in the other family. Node eth0 = node.ip6/64, pods ip6/128 with the first address of the node's
//   podCIDR6 as gateway (/128 on each host side, or /prefix on the bridge), routes between nodes' podCIDR6s,
//   `default via` the router's ip6 (its /64's ::1), the external client on its own /64 with on-link routes.
//   Every address is added `nodad` (no 1-2 s of tentative state); link-local addresses, NDP and everything else
//   stay at kernel defaults, and create() returns once the link-locals have passed DAD (waitLinkLocals).
//   Nodes: net.ipv6.conf.all.forwarding=1 and the same filter rules in ip6tables.

import { spawn as spawnProcess, execFileSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { createHash } from "node:crypto";
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { ipv4FromNumber, ipv4ToNumber, isIPv4, isIPv6, parseIPv4Network } from "../k8s/ip.js";
import { bytesToIpv6, ipv6Add, ipv6Network, ipv6ToBytes, parseIPv6CIDR } from "./ip6.js";

export interface LabPodSpec {
  name: string;
  /** IPv4 address; needs the node's podCIDR. At least one of ip and ip6. */
  ip?: string;
  /** IPv6 address, e.g. fd00:10:244:1::10 (configured as /128); needs the node's podCIDR6. */
  ip6?: string;
}

export interface LabNodeSpec {
  name: string;
  /** Node address on the fabric, e.g. 192.0.2.11 (configured as /24). Every node has one, or none has. */
  ip?: string;
  /** e.g. 10.244.1.0/24; its first address is the pod gateway. */
  podCIDR?: string;
  /** IPv6 node address on the fabric, e.g. 2001:db8::a (configured as /64). Every node has one, or none has. */
  ip6?: string;
  /** e.g. fd00:10:244:1::/64; its first address (::1) is the pods' IPv6 gateway. */
  podCIDR6?: string;
  pods: LabPodSpec[];
  /**
   * Pods behind a Linux bridge of this name (e.g. "cni0", as the bridge and flannel CNIs make) instead of one
   * routed veth each: the bridge carries the gateway with the podCIDR's prefix (the route to the pods is the
   * bridge's connected route) and the pods' host-side veths are its ports, with no address or route.
   */
  bridge?: string;
}

export interface LabSpec {
  /** Prefix of every namespace name, e.g. "bpx1234-". Must be unique to the caller. */
  prefix: string;
  nodes: LabNodeSpec[];
  /** An external client on the fabric bridge, e.g. { name: "ext", ip: "198.51.100.10" } (configured as /24). */
  external?: { name: string; ip?: string; ip6?: string };
  /**
   * net.ipv4.conf.{all,default}.rp_filter on nodes and pods. Default 2 (loose: Debian's and Ubuntu's systemd
   * default); 1 is strict (RHEL's); 0 turns the check off (what the lab used to run with).
   */
  rpFilter?: 0 | 1 | 2;
  /**
   * Node netfilter. "conntrack" (default): policies ACCEPT, `-A FORWARD -m conntrack --ctstate INVALID -j
   * DROP` (kube-proxy's and Docker's nodes have it), so conntrack follows every forwarded flow. "empty": no
   * rules, conntrack idle (the lab's old setting).
   */
  netfilter?: "conntrack" | "empty";
}

/** iptables-restore input for a node under netfilter "conntrack" (replaces only the filter table). */
export const NODE_FILTER_RULES = [
  "*filter",
  ":INPUT ACCEPT [0:0]",
  ":FORWARD ACCEPT [0:0]",
  ":OUTPUT ACCEPT [0:0]",
  "-A FORWARD -m conntrack --ctstate INVALID -j DROP",
  "COMMIT",
  "",
].join("\n");

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 when killed by a signal or timed out. */
  code: number;
  timedOut: boolean;
}

export interface ExecOptions {
  /** Default 10000. The process is killed (SIGKILL) after this. */
  timeoutMs?: number;
  /** Written to the process's stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface LabSpawnOptions {
  stdio?: SpawnOptions["stdio"];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const FABRIC = "fabric";
/** Logical name of the upstream router namespace (the nodes' default gateway). */
export const UPSTREAM = "upstream";
const BRIDGE = "br0";
const NODE_PREFIX_LEN = 24;
const EXT_PREFIX_LEN = 24;
const NODE6_PREFIX_LEN = 64;
const EXT6_PREFIX_LEN = 64;
/** Bounds on lab commands are multiplied by BPFPROXY_LAB_TIMEOUT_SCALE (default 1): the VM suite (test/vm/guest.sh)
 * runs under software emulation, where an iptables-restore loading its kernel modules passed 10 s on a loaded host.
 * Only the bounds grow; nothing waits longer when commands finish. */
const TIMEOUT_SCALE = Math.max(1, Number(process.env.BPFPROXY_LAB_TIMEOUT_SCALE) || 1);
const DEFAULT_TIMEOUT_MS = 10_000 * TIMEOUT_SCALE;
const IP_TIMEOUT_MS = 10_000 * TIMEOUT_SCALE;
/** DAD of a link-local address: up to 1 s random delay plus 1 s for its one probe (kernel defaults). */
const LINK_LOCAL_DAD_TIMEOUT_MS = 5_000;

// ---------------------------------------------------------------------------------------------- helpers

function parseCIDR(cidr: string): { network: string; bits: number } {
  const n = parseIPv4Network(cidr);
  if (!n) throw new Error(`lab: invalid IPv4 CIDR ${JSON.stringify(cidr)}`);
  return { network: n.network, bits: n.prefix };
}

function subnetOf(ip: string, bits: number): string {
  return `${parseCIDR(`${ip}/${bits}`).network}/${bits}`;
}

function shortHash(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 8);
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function checkName(what: string, name: string): void {
  if (!NAME_RE.test(name)) throw new Error(`lab: invalid ${what} name ${JSON.stringify(name)}`);
}

function checkIP(what: string, ip: string | undefined): void {
  if (!isIPv4(ip ?? "")) throw new Error(`lab: invalid IPv4 address for ${what}: ${JSON.stringify(ip)}`);
}

function checkIP6(what: string, ip: string | undefined): void {
  if (!isIPv6(ip ?? "")) throw new Error(`lab: invalid IPv6 address for ${what}: ${JSON.stringify(ip)}`);
}

function parseCIDR6(cidr: string): { network: string; bits: number } {
  const n = parseIPv6CIDR(cidr);
  if (!n) throw new Error(`lab: invalid IPv6 CIDR ${JSON.stringify(cidr)}`);
  return n;
}

/** Runs a command with a hard time limit; never throws for a non-zero exit. */
function runBounded(file: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawnProcess(file, args, { stdio: ["pipe", "pipe", "pipe"], env: opts.env, cwd: opts.cwd });
    } catch (e) {
      resolve({ stdout: "", stderr: String(e), code: -1, timedOut: false });
      return;
    }
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    let done = false;
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.stdin!.on("error", () => {});
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    const finish = (code: number, extra = ""): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ stdout, stderr: stderr + extra, code, timedOut });
    };
    child.on("error", (e) => finish(-1, String(e)));
    child.on("close", (code) => finish(code ?? -1));
    child.stdin!.end(opts.input ?? "");
  });
}

async function ip(args: string[], input?: string): Promise<void> {
  const r = await runBounded("ip", args, { input, timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) {
    const what = input !== undefined ? `${args.join(" ")} <<${JSON.stringify(input)}` : args.join(" ");
    throw new Error(`lab: ip ${what} failed (${r.timedOut ? "timeout" : `exit ${r.code}`}): ${r.stderr.trim()}`);
  }
}

/** Runs `ip -n NS -batch -` with the given lines. */
function ipBatch(ns: string, lines: string[]): Promise<void> {
  return ip(["-n", ns, "-batch", "-"], lines.join("\n") + "\n");
}

async function listNetns(): Promise<string[]> {
  const r = await runBounded("ip", ["netns", "list"], { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`lab: ip netns list failed: ${r.stderr.trim()}`);
  return r.stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((n) => n.length > 0);
}

/** Kills (SIGKILL) every process whose network namespace is `ns`. */
async function killNetnsPids(ns: string): Promise<void> {
  const r = await runBounded("ip", ["netns", "pids", ns], { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) return;
  for (const tok of r.stdout.split(/\s+/)) {
    const pid = Number(tok);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

/**
 * A daemon run in a lab namespace records its mode choice and IPVS state per namespace, named by the
 * namespace's inode (src/dataplane/probe.ts modeFile, ipvs stateFile): they go with the namespace.
 */
function forgetNetnsFiles(ns: string): void {
  let ino: number;
  try {
    ino = statSync(`/run/netns/${ns}`).ino;
  } catch {
    return;
  }
  for (const f of [`mode-netns-${ino}.json`, `ipvs-netns-${ino}.json`, `explain-netns-${ino}.sock`])
    rmSync(join("/run/bpfproxy", f), { force: true });
}

async function deleteNetns(ns: string): Promise<boolean> {
  await killNetnsPids(ns);
  forgetNetnsFiles(ns);
  const r = await runBounded("ip", ["netns", "del", ns], { timeoutMs: IP_TIMEOUT_MS });
  if (r.code === 0) return true;
  // Already gone counts as deleted.
  return /No such file|not found|does not exist/i.test(r.stderr);
}

function checkPrefix(prefix: string): void {
  if (prefix.length < 3 || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(prefix)) {
    throw new Error(`lab: prefix must be at least 3 characters of [A-Za-z0-9_.-]: ${JSON.stringify(prefix)}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------- Lab

interface PodInfo {
  name: string;
  ip?: string;
  ip6?: string;
  node: string;
  iface: string;
}

export class Lab {
  readonly spec: LabSpec;
  /** Namespaces this lab created (full names) and has not deleted yet. */
  private readonly created = new Set<string>();
  private readonly children = new Set<ChildProcess>();
  private readonly pods = new Map<string, PodInfo>();
  private readonly gateways = new Map<string, string>();
  private readonly gateways6 = new Map<string, string>();
  /** Milliseconds create() took. */
  createMs = 0;

  private constructor(spec: LabSpec) {
    this.spec = spec;
  }

  /** Builds the topology; on any failure removes whatever it made and rethrows. */
  static async create(spec: LabSpec): Promise<Lab> {
    const t0 = Date.now();
    const lab = new Lab(spec);
    lab.validate();
    try {
      await lab.build();
    } catch (e) {
      await lab.destroy().catch(() => {});
      throw e;
    }
    lab.createMs = Date.now() - t0;
    return lab;
  }

  /** Deletes every namespace whose name starts with `prefix` (crash recovery). Returns the names deleted. */
  static async cleanupPrefix(prefix: string): Promise<string[]> {
    checkPrefix(prefix);
    const names = (await listNetns()).filter((n) => n.startsWith(prefix));
    const deleted: string[] = [];
    await Promise.all(
      names.map(async (n) => {
        if (await deleteNetns(n)) deleted.push(n);
      }),
    );
    return deleted.sort();
  }

  // ------------------------------------------------------------------------------------------ naming

  /** Full namespace name of a logical name ("fabric", a node, a pod or the external client). */
  nsName(logical: string): string {
    return this.spec.prefix + logical;
  }

  /** Host-side veth of a pod, in its node's namespace: "lxc" + sha256(pod name)[0:8]. */
  podInterface(podName: string): string {
    this.pod(podName);
    return Lab.podInterfaceName(podName);
  }

  static podInterfaceName(podName: string): string {
    return "lxc" + shortHash(podName);
  }

  /** Fabric-side veth of a node or the external client, in the fabric namespace: "fab" + sha256(name)[0:8]. */
  static fabricPortName(logical: string): string {
    return "fab" + shortHash(logical);
  }

  /** Logical node name a pod lives on. */
  nodeOf(podName: string): string {
    return this.pod(podName).node;
  }

  podIP(podName: string): string {
    const ip = this.pod(podName).ip;
    if (ip === undefined) throw new Error(`lab: pod ${JSON.stringify(podName)} has no IPv4 address`);
    return ip;
  }

  podIP6(podName: string): string {
    const ip6 = this.pod(podName).ip6;
    if (ip6 === undefined) throw new Error(`lab: pod ${JSON.stringify(podName)} has no IPv6 address`);
    return ip6;
  }

  nodeIP(nodeName: string): string {
    const ip = this.node(nodeName).ip;
    if (ip === undefined) throw new Error(`lab: node ${JSON.stringify(nodeName)} has no IPv4 address`);
    return ip;
  }

  nodeIP6(nodeName: string): string {
    const ip6 = this.node(nodeName).ip6;
    if (ip6 === undefined) throw new Error(`lab: node ${JSON.stringify(nodeName)} has no IPv6 address`);
    return ip6;
  }

  /** The address families of the nodes (and so of the lab): IPv4, IPv6 or both. */
  get hasIPv4(): boolean {
    return this.spec.nodes[0]!.ip !== undefined;
  }

  get hasIPv6(): boolean {
    return this.spec.nodes[0]!.ip6 !== undefined;
  }

  /** The nodes' default gateway: the upstream router's address (last host address of the node subnet). */
  upstreamIP(): string {
    const ip = this.spec.nodes[0]!.ip;
    if (ip === undefined) throw new Error("lab: the lab has no IPv4 (its nodes have no ip)");
    const { network } = parseCIDR(`${ip}/${NODE_PREFIX_LEN}`);
    return ipv4FromNumber(ipv4ToNumber(network) + 2 ** (32 - NODE_PREFIX_LEN) - 2);
  }

  /** The nodes' IPv6 default gateway: the upstream router's address, ::1 of the nodes' /64. */
  upstreamIP6(): string {
    const ip6 = this.spec.nodes[0]!.ip6;
    if (ip6 === undefined) throw new Error("lab: the lab has no IPv6 (its nodes have no ip6)");
    return ipv6Add(ipv6Network(ip6, NODE6_PREFIX_LEN), 1);
  }

  private node(nodeName: string): LabNodeSpec {
    const n = this.spec.nodes.find((x) => x.name === nodeName);
    if (!n) throw new Error(`lab: no node ${JSON.stringify(nodeName)}`);
    return n;
  }

  /**
   * Packets the upstream router was sent to forward (addressed to anybody but itself): what nodes sent out by
   * their default route, IPv4 and IPv6 together. Counted by a rule in its raw PREROUTING chain (ip6tables':
   * multicast and link-local destinations, i.e. NDP and MLD, are not counted); ARP and packets to the router
   * itself are not counted. With `dst` (either family): only those to that address.
   */
  async upstreamForwarded(dst?: string): Promise<number> {
    if (dst !== undefined) {
      // A counting rule of its own for this destination (no target: it only counts), made on first use.
      const v6 = isIPv6(dst);
      if (!v6) checkIP("upstream destination", dst);
      else dst = bytesToIpv6(ipv6ToBytes(dst)); // as ip6tables-save prints it
      const [tables, save, len] = v6 ? ["ip6tables", "ip6tables-save", 128] : ["iptables", "iptables-save", 32];
      const rule = ["PREROUTING", "-d", `${dst}/${len}`];
      const has = await this.exec(UPSTREAM, [tables, "-t", "raw", "-C", ...rule]);
      if (has.code !== 0) await this.run(UPSTREAM, [tables, "-t", "raw", "-I", ...rule]);
      const out = await this.run(UPSTREAM, [save, "-c", "-t", "raw"]);
      const esc = dst.replace(/[.]/g, "\\.");
      const m = new RegExp(`^\\[(\\d+):\\d+\\] -A PREROUTING -d ${esc}/${len}$`, "m").exec(out);
      if (!m) throw new Error(`lab: the upstream router's counting rule for ${dst} is missing:\n${out}`);
      return Number(m[1]);
    }
    let total = 0;
    for (const [on, save] of [
      [this.hasIPv4, "iptables-save"],
      [this.hasIPv6, "ip6tables-save"],
    ] as const) {
      if (!on) continue;
      const out = await this.run(UPSTREAM, [save, "-c", "-t", "raw"]);
      const m = /^\[(\d+):\d+\] -A PREROUTING ! -d \S+ .*sent upstream/m.exec(out);
      if (!m) throw new Error(`lab: the upstream router's counting rule is missing (${save}):\n${out}`);
      total += Number(m[1]);
    }
    return total;
  }

  /** The pod gateway address on a node (first address of its podCIDR). */
  podGateway(nodeName: string): string {
    const gw = this.gateways.get(nodeName);
    if (!gw) throw new Error(`lab: no node ${JSON.stringify(nodeName)}`);
    return gw;
  }

  /** The pods' IPv6 gateway on a node (first address of its podCIDR6). */
  podGateway6(nodeName: string): string {
    const gw = this.gateways6.get(nodeName);
    if (!gw) throw new Error(`lab: no node with IPv6 ${JSON.stringify(nodeName)}`);
    return gw;
  }

  podNames(nodeName?: string): string[] {
    return [...this.pods.values()].filter((p) => nodeName === undefined || p.node === nodeName).map((p) => p.name);
  }

  /** Full names of the namespaces currently owned by this lab. */
  namespaces(): string[] {
    return [...this.created].sort();
  }

  private pod(podName: string): PodInfo {
    const p = this.pods.get(podName);
    if (!p) throw new Error(`lab: no pod ${JSON.stringify(podName)}`);
    return p;
  }

  // ------------------------------------------------------------------------------------------ processes

  /** Runs a command inside a lab namespace (`ip netns exec`), bounded in time; never throws for exit codes. */
  async exec(ns: string, cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.checkOwned(ns);
    if (cmd.length === 0) throw new Error("lab: exec needs a command");
    return runBounded("ip", ["netns", "exec", this.fullName(ns), ...cmd], opts);
  }

  /** Like exec, but throws unless the command exits 0. Returns stdout. */
  async run(ns: string, cmd: string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(ns, cmd, opts);
    if (r.code !== 0) {
      throw new Error(
        `lab: ${cmd.join(" ")} in ${ns} failed (${r.timedOut ? "timeout" : `exit ${r.code}`}): ${r.stderr.trim()}`,
      );
    }
    return r.stdout;
  }

  /**
   * Starts a long-running command inside a lab namespace. The process gets its own process group and is
   * killed by destroy(). `ns` may be a logical or a full namespace name.
   */
  spawn(ns: string, cmd: string[], opts: LabSpawnOptions = {}): ChildProcess {
    this.checkOwned(ns);
    if (cmd.length === 0) throw new Error("lab: spawn needs a command");
    const child = spawnProcess("ip", ["netns", "exec", this.fullName(ns), ...cmd], {
      stdio: opts.stdio ?? ["pipe", "pipe", "pipe"],
      env: opts.env,
      cwd: opts.cwd,
      detached: true,
    });
    this.children.add(child);
    child.on("exit", () => this.children.delete(child));
    child.on("error", () => this.children.delete(child));
    return child;
  }

  private fullName(ns: string): string {
    return this.created.has(ns) ? ns : this.nsName(ns);
  }

  private checkOwned(ns: string): void {
    if (!this.created.has(this.fullName(ns)))
      throw new Error(`lab: ${JSON.stringify(ns)} is not a namespace of this lab`);
  }

  // ------------------------------------------------------------------------------------------ teardown

  /** Kills spawned processes and deletes every namespace the lab made. Idempotent; safe after a failed create. */
  async destroy(): Promise<void> {
    await this.killChildren();
    const errors: string[] = [];
    await Promise.all(
      [...this.created].map(async (ns) => {
        if (await deleteNetns(ns)) this.created.delete(ns);
        else errors.push(ns);
      }),
    );
    if (errors.length > 0) throw new Error(`lab: could not delete namespaces ${errors.join(", ")}`);
  }

  /** Best-effort synchronous teardown, for process 'exit' handlers. */
  destroySync(): void {
    for (const c of this.children) killGroup(c, "SIGKILL");
    this.children.clear();
    for (const ns of [...this.created]) {
      try {
        const pids = execFileSync("ip", ["netns", "pids", ns], { timeout: 5000, encoding: "utf8" });
        for (const tok of pids.split(/\s+/)) {
          const pid = Number(tok);
          if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
            try {
              process.kill(pid, "SIGKILL");
            } catch {
              /* gone */
            }
          }
        }
      } catch {
        /* ignore */
      }
      forgetNetnsFiles(ns);
      try {
        execFileSync("ip", ["netns", "del", ns], { timeout: 5000, stdio: "ignore" });
        this.created.delete(ns);
      } catch {
        /* ignore */
      }
    }
  }

  private async killChildren(): Promise<void> {
    const live = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of live) killGroup(c, "SIGTERM");
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && live.some((c) => c.exitCode === null && c.signalCode === null)) await sleep(20);
    for (const c of live) if (c.exitCode === null && c.signalCode === null) killGroup(c, "SIGKILL");
    const hard = Date.now() + 1000;
    while (Date.now() < hard && live.some((c) => c.exitCode === null && c.signalCode === null)) await sleep(20);
    this.children.clear();
  }

  // ------------------------------------------------------------------------------------------ build

  private validate(): void {
    const { prefix, nodes, external } = this.spec;
    checkPrefix(prefix);
    const logical = new Set<string>([FABRIC, UPSTREAM]);
    if (this.spec.rpFilter !== undefined && ![0, 1, 2].includes(this.spec.rpFilter))
      throw new Error(`lab: rpFilter must be 0, 1 or 2: ${JSON.stringify(this.spec.rpFilter)}`);
    if (this.spec.netfilter !== undefined && !["conntrack", "empty"].includes(this.spec.netfilter))
      throw new Error(`lab: netfilter must be "conntrack" or "empty": ${JSON.stringify(this.spec.netfilter)}`);
    const addName = (what: string, name: string): void => {
      checkName(what, name);
      if (logical.has(name)) throw new Error(`lab: duplicate name ${JSON.stringify(name)}`);
      logical.add(name);
    };
    if (nodes.length === 0) throw new Error("lab: at least one node is needed");
    const v4 = nodes[0]!.ip !== undefined;
    const v6 = nodes[0]!.ip6 !== undefined;
    if (!v4 && !v6) throw new Error(`lab: node ${nodes[0]!.name} needs ip, ip6 or both`);
    if (v4) checkIP(`node ${nodes[0]!.name}`, nodes[0]!.ip);
    if (v6) checkIP6(`node ${nodes[0]!.name}`, nodes[0]!.ip6);
    const nodeSubnet = v4 ? subnetOf(nodes[0]!.ip!, NODE_PREFIX_LEN) : "";
    const nodeSubnet6 = v6 ? ipv6Network(nodes[0]!.ip6!, NODE6_PREFIX_LEN) : "";
    const ifaces = new Set<string>();
    for (const n of nodes) {
      addName("node", n.name);
      if ((n.ip !== undefined) !== v4 || (n.ip6 !== undefined) !== v6)
        throw new Error(`lab: node ${n.name} must have the same address families (ip, ip6) as node ${nodes[0]!.name}`);
      if (n.bridge !== undefined) {
        checkName("bridge", n.bridge);
        if (n.bridge === "eth0" || n.bridge === "lo" || n.bridge.length > 15)
          throw new Error(`lab: invalid bridge name ${JSON.stringify(n.bridge)}`);
      }
      if (v4) {
        checkIP(`node ${n.name}`, n.ip);
        if (n.ip === this.upstreamIP()) throw new Error(`lab: node ${n.name} ip ${n.ip} is the upstream router's`);
        if (subnetOf(n.ip!, NODE_PREFIX_LEN) !== nodeSubnet)
          throw new Error(`lab: node ${n.name} ip ${n.ip} is not in ${nodeSubnet}`);
        if (n.podCIDR === undefined) throw new Error(`lab: node ${n.name} has an ip but no podCIDR`);
        const { network } = parseCIDR(n.podCIDR);
        this.gateways.set(n.name, ipv4FromNumber(ipv4ToNumber(network) + 1));
      }
      if (v6) {
        checkIP6(`node ${n.name}`, n.ip6);
        if (ipv6Network(n.ip6!, 128) === this.upstreamIP6())
          throw new Error(`lab: node ${n.name} ip6 ${n.ip6} is the upstream router's`);
        if (ipv6Network(n.ip6!, NODE6_PREFIX_LEN) !== nodeSubnet6)
          throw new Error(`lab: node ${n.name} ip6 ${n.ip6} is not in ${nodeSubnet6}/${NODE6_PREFIX_LEN}`);
        if (n.podCIDR6 === undefined) throw new Error(`lab: node ${n.name} has an ip6 but no podCIDR6`);
        this.gateways6.set(n.name, ipv6Add(parseCIDR6(n.podCIDR6).network, 1));
      }
      for (const p of n.pods) {
        addName("pod", p.name);
        if (p.ip === undefined && p.ip6 === undefined) throw new Error(`lab: pod ${p.name} needs ip, ip6 or both`);
        if (p.ip !== undefined) {
          if (!v4) throw new Error(`lab: pod ${p.name} has an ip but its node ${n.name} has no IPv4`);
          checkIP(`pod ${p.name}`, p.ip);
        }
        if (p.ip6 !== undefined) {
          if (!v6) throw new Error(`lab: pod ${p.name} has an ip6 but its node ${n.name} has no IPv6`);
          checkIP6(`pod ${p.name}`, p.ip6);
        }
        const iface = Lab.podInterfaceName(p.name);
        if (ifaces.has(iface)) throw new Error(`lab: interface name collision for pod ${p.name}`);
        ifaces.add(iface);
        this.pods.set(p.name, { name: p.name, ip: p.ip, ip6: p.ip6, node: n.name, iface });
      }
    }
    if (external) {
      addName("external", external.name);
      if (external.ip === undefined && external.ip6 === undefined)
        throw new Error(`lab: external ${external.name} needs ip, ip6 or both`);
      if (external.ip !== undefined) {
        if (!v4) throw new Error(`lab: external ${external.name} has an ip but the nodes have no IPv4`);
        checkIP(`external ${external.name}`, external.ip);
      }
      if (external.ip6 !== undefined) {
        if (!v6) throw new Error(`lab: external ${external.name} has an ip6 but the nodes have no IPv6`);
        checkIP6(`external ${external.name}`, external.ip6);
      }
    }
  }

  private async build(): Promise<void> {
    const { nodes, external } = this.spec;
    const v4 = this.hasIPv4;
    const v6 = this.hasIPv6;
    const ns = (n: string): string => this.nsName(n);
    const all = [
      FABRIC,
      UPSTREAM,
      ...nodes.map((n) => n.name),
      ...(external ? [external.name] : []),
      ...nodes.flatMap((n) => n.pods.map((p) => p.name)),
    ];

    // 1. namespaces. Record each one we actually made, so a failure (e.g. a name that already exists)
    //    never deletes somebody else's namespace.
    const made = await Promise.allSettled(
      all.map(async (n) => {
        await ip(["netns", "add", ns(n)]);
        this.created.add(ns(n));
      }),
    );
    const failed = made.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;

    // 2. sysctls (before links, so new links take the defaults) and the bridge.
    //    Nodes and pods get the configured rp_filter; the fabric, the router and the external client 0.
    //    IPv6 has no rp_filter; nodes forward it (all.forwarding also sets default's).
    const nodeNames = new Set(nodes.map((n) => n.name));
    const podNames = new Set(nodes.flatMap((n) => n.pods.map((p) => p.name)));
    const rp = this.spec.rpFilter ?? 2;
    const conntrack = (this.spec.netfilter ?? "conntrack") === "conntrack";
    await Promise.all([
      ...all.map((n) => {
        const v = nodeNames.has(n) || podNames.has(n) ? rp : 0;
        const keys = [`net.ipv4.conf.all.rp_filter=${v}`, `net.ipv4.conf.default.rp_filter=${v}`];
        if (nodeNames.has(n) && v4) keys.push("net.ipv4.ip_forward=1");
        if (nodeNames.has(n) && v6) keys.push("net.ipv6.conf.all.forwarding=1");
        return this.run(n, ["sysctl", "-q", "-w", ...keys]);
      }),
      ...(conntrack && v4
        ? nodes.map((n) => this.run(n.name, ["iptables-restore"], { input: NODE_FILTER_RULES }))
        : []),
      ...(conntrack && v6
        ? nodes.map((n) => this.run(n.name, ["ip6tables-restore"], { input: NODE_FILTER_RULES }))
        : []),
      ipBatch(ns(FABRIC), ["link set lo up", `link add name ${BRIDGE} type bridge`, `link set ${BRIDGE} up`]),
    ]);

    // 3. node and external links (peers created directly inside the fabric / pod namespaces).
    const nodeSubnet = v4 ? subnetOf(nodes[0]!.ip!, NODE_PREFIX_LEN) : undefined;
    const extSubnet = external?.ip !== undefined ? subnetOf(external.ip, EXT_PREFIX_LEN) : undefined;
    const nodeSubnet6 = v6 ? `${ipv6Network(nodes[0]!.ip6!, NODE6_PREFIX_LEN)}/${NODE6_PREFIX_LEN}` : undefined;
    const extSubnet6 =
      external?.ip6 !== undefined ? `${ipv6Network(external.ip6, EXT6_PREFIX_LEN)}/${EXT6_PREFIX_LEN}` : undefined;
    const jobs: Promise<void>[] = [];
    // A namespace's eth0 with its addresses, its peer plugged into the fabric. IPv6 addresses skip DAD
    // (nodad): nothing else in the lab claims them, and tentative addresses would stall the first 1-2 s.
    const fabricLink = (name: string, addrs: Array<string | undefined>) => [
      "link set lo up",
      `link add name eth0 type veth peer name ${Lab.fabricPortName(name)} netns ${ns(FABRIC)}`,
      ...addrs.filter((a): a is string => a !== undefined).map((a) => `addr add ${a} dev eth0`),
      "link set eth0 up",
    ];
    const a4 = (ip4: string | undefined, len: number): string | undefined =>
      ip4 === undefined ? undefined : `${ip4}/${len}`;
    const a6 = (ip6: string | undefined, len: number): string | undefined =>
      ip6 === undefined ? undefined : `${ip6}/${len} nodad`;
    for (const n of nodes) {
      const gw = v4 ? this.podGateway(n.name) : undefined;
      const gw6 = v6 ? this.podGateway6(n.name) : undefined;
      const lines = fabricLink(n.name, [a4(n.ip, NODE_PREFIX_LEN), a6(n.ip6, NODE6_PREFIX_LEN)]);
      if (n.bridge) {
        lines.push(`link add name ${n.bridge} type bridge`);
        if (gw) lines.push(`addr add ${gw}/${parseCIDR(n.podCIDR!).bits} dev ${n.bridge}`);
        if (gw6) lines.push(`addr add ${gw6}/${parseCIDR6(n.podCIDR6!).bits} dev ${n.bridge} nodad`);
        lines.push(`link set ${n.bridge} up`);
      }
      for (const p of n.pods) {
        const iface = Lab.podInterfaceName(p.name);
        lines.push(`link add name ${iface} type veth peer name eth0 netns ${ns(p.name)}`);
        if (n.bridge) lines.push(`link set ${iface} master ${n.bridge}`, `link set ${iface} up`);
        else {
          if (gw) lines.push(`addr add ${gw}/32 dev ${iface}`);
          if (gw6) lines.push(`addr add ${gw6}/128 dev ${iface} nodad`);
          lines.push(`link set ${iface} up`);
          if (p.ip) lines.push(`route add ${p.ip}/32 dev ${iface}`);
          if (p.ip6) lines.push(`route add ${p.ip6}/128 dev ${iface}`);
        }
      }
      for (const o of nodes) {
        if (o === n) continue;
        if (v4) {
          const c = parseCIDR(o.podCIDR!);
          lines.push(`route add ${c.network}/${c.bits} via ${o.ip} dev eth0`);
        }
        if (v6) {
          const c = parseCIDR6(o.podCIDR6!);
          lines.push(`route add ${c.network}/${c.bits} via ${o.ip6} dev eth0`);
        }
      }
      if (extSubnet && extSubnet !== nodeSubnet) lines.push(`route add ${extSubnet} dev eth0 scope link`);
      if (extSubnet6 && extSubnet6 !== nodeSubnet6) lines.push(`route add ${extSubnet6} dev eth0`);
      if (v4) lines.push(`route add default via ${this.upstreamIP()} dev eth0`);
      if (v6) lines.push(`route add ::/0 via ${this.upstreamIP6()} dev eth0`);
      jobs.push(ipBatch(ns(n.name), lines));
    }
    jobs.push(
      ipBatch(
        ns(UPSTREAM),
        fabricLink(UPSTREAM, [
          v4 ? `${this.upstreamIP()}/${NODE_PREFIX_LEN}` : undefined,
          v6 ? `${this.upstreamIP6()}/${NODE6_PREFIX_LEN} nodad` : undefined,
        ]),
      ),
    );
    // The router's counting rules: everything it is asked to forward (for IPv6, not NDP or MLD, which go to
    // multicast and link-local addresses).
    if (v4)
      jobs.push(
        this.run(UPSTREAM, ["iptables-restore"], {
          input: [
            "*raw",
            ":PREROUTING ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            `-A PREROUTING ! -d ${this.upstreamIP()}/32 -m comment --comment "sent upstream" -j ACCEPT`,
            "COMMIT",
            "",
          ].join("\n"),
        }).then(() => undefined),
      );
    if (v6)
      jobs.push(
        this.run(UPSTREAM, ["ip6tables-restore"], {
          input: [
            "*raw",
            ":PREROUTING ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            "-A PREROUTING -d ff00::/8 -j ACCEPT",
            "-A PREROUTING -d fe80::/10 -j ACCEPT",
            `-A PREROUTING ! -d ${this.upstreamIP6()}/128 -m comment --comment "sent upstream" -j ACCEPT`,
            "COMMIT",
            "",
          ].join("\n"),
        }).then(() => undefined),
      );
    if (external) {
      const lines = fabricLink(external.name, [a4(external.ip, EXT_PREFIX_LEN), a6(external.ip6, EXT6_PREFIX_LEN)]);
      if (extSubnet && nodeSubnet && extSubnet !== nodeSubnet)
        lines.push(`route add ${nodeSubnet} dev eth0 scope link`);
      if (extSubnet6 && nodeSubnet6 && extSubnet6 !== nodeSubnet6) lines.push(`route add ${nodeSubnet6} dev eth0`);
      jobs.push(ipBatch(ns(external.name), lines));
    }
    await Promise.all(jobs);

    // 4. fabric ports and pod-side configuration.
    const ports = [...nodes.map((n) => n.name), UPSTREAM, ...(external ? [external.name] : [])].map((name) =>
      Lab.fabricPortName(name),
    );
    const final: Promise<void>[] = [
      ipBatch(
        ns(FABRIC),
        ports.flatMap((p) => [`link set ${p} master ${BRIDGE}`, `link set ${p} up`]),
      ),
    ];
    for (const n of nodes) {
      const gw = v4 ? this.podGateway(n.name) : undefined;
      const gw6 = v6 ? this.podGateway6(n.name) : undefined;
      for (const p of n.pods) {
        const lines = ["link set lo up"];
        if (p.ip) lines.push(`addr add ${p.ip}/32 dev eth0`);
        if (p.ip6) lines.push(`addr add ${p.ip6}/128 dev eth0 nodad`);
        lines.push("link set eth0 up");
        if (p.ip) lines.push(`route add ${gw} dev eth0 scope link`, `route add default via ${gw} dev eth0`);
        if (p.ip6) lines.push(`route add ${gw6} dev eth0`, `route add ::/0 via ${gw6} dev eth0`);
        final.push(ipBatch(ns(p.name), lines));
      }
    }
    await Promise.all(final);
    if (v6) await this.waitLinkLocals(all);
  }

  /**
   * Waits (bounded) until no address in the given namespaces is tentative. Ours are added nodad, but each
   * link's own link-local address goes through DAD for 1-2 s after it comes up (kernel default), and until
   * then a node cannot resolve a neighbour for a packet it forwards (the solicitation needs a usable link-local
   * source), so the first forwarded packets would wait or be lost. A real node's links have long finished;
   * a new pod is not Ready that fast either. The lab is handed over in that settled state.
   */
  private async waitLinkLocals(names: string[]): Promise<void> {
    const deadline = Date.now() + LINK_LOCAL_DAD_TIMEOUT_MS;
    let pending = names;
    while (pending.length > 0) {
      const tentative = await Promise.all(
        pending.map(async (n) => (await this.run(n, ["ip", "-6", "-o", "addr", "show", "tentative"])).trim() !== ""),
      );
      pending = pending.filter((_, i) => tentative[i]);
      if (pending.length === 0) return;
      if (Date.now() > deadline)
        throw new Error(
          `lab: IPv6 addresses still tentative after ${LINK_LOCAL_DAD_TIMEOUT_MS} ms in ${pending.join(", ")}`,
        );
      await sleep(100);
    }
  }
}

function killGroup(c: ChildProcess, sig: NodeJS.Signals): void {
  if (c.pid === undefined) return;
  try {
    process.kill(-c.pid, sig);
  } catch {
    try {
      c.kill(sig);
    } catch {
      /* gone */
    }
  }
}
