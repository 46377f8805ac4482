// The IPVS data plane: the fallback where BPF cannot run. The same NodeModel becomes IPVS virtual services
// (masquerading forwarding) over generic netlink, service addresses on the dummy interface kube-ipvs0, and
// one nftables table for masquerading and traffic policy. Each sync diffs against what the kernel holds.
import { spawn } from "node:child_process";
import { BlockList } from "node:net";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { log } from "../../log.js";
import { isIPv6, parseCIDR } from "../../k8s/ip.js";
import { SERVICE_ADDRESS_DEVICE } from "../../model/addresses.js";
import * as nl from "./netlink.js";
import type { Frontend, FrontendExtras, NodeModel } from "../../model/types.js";
import type { Attachment, Dataplane, DataplaneOptions, DataplaneStatus, SyncResult } from "../types.js";

/** kube-ipvs0: the node-address discovery leaves its addresses out (they are Service IPs, not NodePort addresses). */
export const DUMMY_IF = SERVICE_ADDRESS_DEVICE;
export const NFT_TABLE = "bpfproxy-ipvs";
/** Marks connections to masquerade (kube-proxy's masqueradeBit 14 default). */
const MASQ_MARK = 0x4000;
/** How often draining real servers (weight 0) are checked for their last connection. */
const DRAIN_CHECK_MS = 2000;
export const SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh"];
/** Longest an `ip` or `nft` run may take before it is killed (and the step counted as failed). */
export const COMMAND_TIMEOUT_MS = 15_000;

export interface CommandResult {
  ok: boolean;
  out: string;
  err: string;
}
export type RunCommand = (cmd: string, args: string[], input?: string) => Promise<CommandResult>;

/** The kernel interfaces the IPVS data plane drives; tests pass fakes (this machine's kernel has no IPVS). */
export interface IpvsHost {
  ipvs: Pick<
    typeof nl,
    | "ipvsAvailable"
    | "setTimeouts"
    | "listServices"
    | "listDestinations"
    | "addService"
    | "editService"
    | "deleteService"
    | "addDestination"
    | "editDestination"
    | "deleteDestination"
  >;
  run: RunCommand;
  sysctl: (path: string, value: string) => void;
}

export interface IpvsDataplaneOptions extends DataplaneOptions {
  nodeName: string;
  /** kube-proxy's ipvs.scheduler; "" = rr. */
  scheduler: string;
  /** ipvs.strictARP: arp_ignore=1, arp_announce=2 so the dummy's addresses are not answered for. */
  strictARP?: boolean;
  /** ipvs.tcpTimeout / tcpFinTimeout / udpTimeout in seconds (0 = leave the kernel's). */
  timeouts?: { tcp: number; tcpFin: number; udp: number };
  masqueradeAll?: boolean;
  /** ipvs.excludeCIDRs: virtual services with an address in these are never deleted. */
  excludeCIDRs?: string[];
  /** Why this mode was chosen (shown by status). */
  reason?: string;
  /** Default: the kernel (netlink, `ip`, `nft`, /proc/sys). */
  host?: IpvsHost;
  /** Default: stateFile(). */
  stateFile?: string;
}

type VsKey = string;
const vsKey = (v: { protocol: string; address: string; port: number }): VsKey => `${v.protocol}|${v.address}|${v.port}`;
const rsKey = (r: { address: string; port: number }) => `${r.address}:${r.port}`;

interface DesiredVs {
  vs: nl.VirtualServer;
  frontend: Frontend;
  extras: FrontendExtras;
  /** real server → weight (1 serves new connections, 0 keeps existing ones only). */
  dests: Map<string, { address: string; port: number; weight: number }>;
}

/** Where status and cleanup find what the daemon in this network namespace programmed (names, owned addresses). */
export function stateFile(): string {
  let ino = 0;
  try {
    ino = statSync("/proc/self/ns/net").ino;
  } catch {
    /* no procfs: one file for all */
  }
  return `/run/bpfproxy/ipvs-netns-${ino}.json`;
}

interface SavedState {
  node: string;
  reason: string;
  frontends: Frontend[];
  /** NodePort addresses (not on the dummy) whose virtual services are ours. */
  ownedAddresses: string[];
}

export function readState(file = stateFile()): SavedState | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as SavedState;
  } catch {
    return undefined;
  }
}

/** Runs a command off the event loop (the daemon keeps serving health checks meanwhile), killed after timeoutMs. */
export function runCommand(
  cmd: string,
  args: string[],
  input?: string,
  timeoutMs = COMMAND_TIMEOUT_MS,
): Promise<CommandResult> {
  return new Promise((resolve) => {
    let out = "";
    let err = "";
    let done = false;
    const finish = (ok: boolean, extra = "") => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ok, out, err: err + extra });
    };
    const c = spawn(cmd, args, { stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    const timer = setTimeout(() => {
      c.kill("SIGKILL");
      finish(false, `${cmd} killed: no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    c.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
    c.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    c.once("error", (e) => finish(false, String(e)));
    c.once("close", (code, signal) => finish(code === 0, signal ? `${cmd} killed by ${signal}` : ""));
    if (input !== undefined) {
      c.stdin!.on("error", () => undefined); // EPIPE when the command exits early: its status says why
      c.stdin!.end(input);
    }
  });
}

function writeSysctl(path: string, value: string): void {
  try {
    writeFileSync(`/proc/sys/${path}`, value);
  } catch (err) {
    log.warn("sysctl not set", { sysctl: path.replaceAll("/", "."), value, error: (err as Error).message });
  }
}

const realHost: IpvsHost = { ipvs: nl, run: runCommand, sysctl: writeSysctl };

/**
 * Service addresses currently on the dummy interface, both families; undefined when they cannot be read (no
 * interface, `ip` failed). The kernel's own IPv6 link-local address (the interface set up) is not one of ours.
 */
export async function dummyAddresses(run: RunCommand = runCommand): Promise<string[] | undefined> {
  const r = await run("ip", ["-j", "addr", "show", "dev", DUMMY_IF]);
  if (!r.ok) return undefined;
  try {
    return (JSON.parse(r.out) as { addr_info: { local: string; scope?: string }[] }[]).flatMap((l) =>
      l.addr_info.filter((a) => a.scope !== "link").map((a) => a.local),
    );
  } catch {
    return undefined;
  }
}

/**
 * The `ip -batch` line binding or unbinding a Service address on the dummy interface. IPv6 ones are /128 with
 * nodad (no duplicate address detection: the address is usable at once, never tentative or "dadfailed"), as
 * kube-proxy binds them (its dummy is NOARP, which skips DAD too).
 */
export function addressCommand(op: "add" | "del", address: string): string {
  return isIPv6(address)
    ? `address ${op} ${address}/128 dev ${DUMMY_IF}${op === "add" ? " nodad" : ""}`
    : `address ${op} ${address}/32 dev ${DUMMY_IF}`;
}

/** ipvs.excludeCIDRs as one matcher for both families (Node's BlockList compares addresses, not text). */
function cidrMatcher(cidrs: string[]): (ip: string) => boolean {
  const list = new BlockList();
  for (const c of cidrs) {
    const p = parseCIDR(c);
    if (p) list.addSubnet(p.address, p.prefix, p.family === 6 ? "ipv6" : "ipv4");
  }
  return (ip) => list.check(ip, isIPv6(ip) ? "ipv6" : "ipv4");
}

export class IpvsDataplane implements Dataplane {
  readonly mode = "ipvs" as const;
  private started = false;
  private lastNft = "";
  private ownedAddresses = new Set<string>();
  private drainTimer: NodeJS.Timeout | undefined;
  private readonly scheduler: string;
  private readonly host: IpvsHost;
  private readonly stateFile: string;
  /** The state file's last content: an idle sync writes nothing. */
  private lastState = "";
  /** net.ipv6.conf.all.forwarding was set (at the first sync with an IPv6 frontend). */
  private ipv6Forwarding = false;

  constructor(private readonly opts: IpvsDataplaneOptions) {
    this.host = opts.host ?? realHost;
    this.stateFile = opts.stateFile ?? stateFile();
    this.scheduler = opts.scheduler || "rr";
    if (!SCHEDULERS.includes(this.scheduler))
      throw new Error(
        `ipvs.scheduler: unknown scheduler ${JSON.stringify(opts.scheduler)}; one of ${SCHEDULERS.join(", ")}`,
      );
  }

  async start(): Promise<void> {
    const { ipvs, run } = this.host;
    const writeSysctl = this.host.sysctl;
    const avail = ipvs.ipvsAvailable();
    if (!avail.ok) throw new Error(`ipvs mode: the kernel's IPVS is not available: ${avail.reason}`);
    if (!(await run("ip", ["link", "show", "dev", DUMMY_IF])).ok) {
      const r = await run("ip", ["link", "add", DUMMY_IF, "type", "dummy"]);
      if (!r.ok) throw new Error(`ipvs mode: cannot create ${DUMMY_IF}: ${r.err.trim()}`);
    }
    // kube-proxy's IPVS-mode settings: conntrack entries for IPVS connections (needed by the masquerade
    // rules), no connection reuse across a removed real server, drop connections to removed ones at once.
    writeSysctl("net/ipv4/vs/conntrack", "1");
    writeSysctl("net/ipv4/vs/conn_reuse_mode", "0");
    writeSysctl("net/ipv4/vs/expire_nodest_conn", "1");
    writeSysctl("net/ipv4/vs/expire_quiescent_template", "1");
    writeSysctl("net/ipv4/ip_forward", "1");
    if (this.opts.strictARP) {
      writeSysctl("net/ipv4/conf/all/arp_ignore", "1");
      writeSysctl("net/ipv4/conf/all/arp_announce", "2");
    }
    const t = this.opts.timeouts;
    if (t && (t.tcp || t.tcpFin || t.udp)) ipvs.setTimeouts(t.tcp, t.tcpFin, t.udp);
    for (const a of readState(this.stateFile)?.ownedAddresses ?? []) this.ownedAddresses.add(a);
    this.started = true;
    this.drainTimer = setInterval(() => this.reapDrained(), DRAIN_CHECK_MS);
    this.drainTimer.unref();
    log.info("ipvs data plane ready", { scheduler: this.scheduler, reason: this.opts.reason ?? "" });
  }

  private desired(model: NodeModel): Map<VsKey, DesiredVs> {
    const out = new Map<VsKey, DesiredVs>();
    model.frontends.forEach((f, i) => {
      const extras = model.extras[i]!;
      const key = vsKey(f);
      const prev = out.get(key);
      // IPVS cannot tell in-cluster from outside sources: where the model has both scopes (externalTrafficPolicy
      // Local with endpoints elsewhere), the external one (node-local endpoints) is the one served, as kube-proxy's IPVS mode does.
      if (prev && !(prev.frontend.scope === "internal" && f.scope === "external")) return;
      const aff = f.sessionAffinity;
      // A Service's own algorithm wins over ipvs.scheduler: Maglev is IPVS's mh, least-conn its lc. rr and lc ignore
      // weights (bpfproxy.io/backend-weights): a weighted Service gets their weighted forms, wrr and wlc.
      const weighted = f.backends.some((b) => (b.weight ?? 1) !== 1);
      const base = f.algorithm === "maglev" ? "mh" : f.algorithm === "least-conn" ? "lc" : this.scheduler;
      const scheduler = weighted && (base === "rr" || base === "lc") ? `w${base}` : base;
      const dests = new Map<string, { address: string; port: number; weight: number }>();
      for (const b of extras.retainedBackends) dests.set(rsKey(b), { address: b.address, port: b.port, weight: 0 });
      for (const b of f.backends) dests.set(rsKey(b), { address: b.address, port: b.port, weight: b.weight ?? 1 });
      out.set(key, {
        vs: {
          protocol: f.protocol,
          address: f.address,
          port: f.port,
          scheduler,
          flags: aff.type === "ClientIP" ? nl.SVC_F_PERSISTENT : 0,
          timeout: aff.type === "ClientIP" ? aff.timeoutSeconds : 0,
        },
        frontend: f,
        extras,
        dests,
      });
    });
    return out;
  }

  async sync(model: NodeModel): Promise<SyncResult> {
    if (!this.started) throw new Error("data plane not started");
    const { ipvs, run } = this.host;
    const want = this.desired(model);
    // IPVS-NAT replies from real servers are forwarded through this node: IPv6 forwarding too once an IPv6
    // frontend exists (not before: on a host it also stops router advertisements from being accepted).
    if (!this.ipv6Forwarding && [...want.values()].some((d) => isIPv6(d.vs.address))) {
      this.host.sysctl("net/ipv6/conf/all/forwarding", "1");
      this.ipv6Forwarding = true;
    }
    this.desiredDests = new Map([...want].map(([k, d]) => [k, new Set(d.dests.keys())] as const));
    const res: SyncResult = { upserts: 0, deletes: 0, skipped: [] };
    // Each step runs whatever an earlier one did: a failure is logged, counted, and makes the sync fail at
    // the end, so the daemon counts it (sync errors) and retries; the diff against the kernel redoes what is missing.
    const failures: string[] = [];
    const fail = (what: string, err: unknown, fields: Record<string, unknown> = {}) => {
      const message = err instanceof Error ? err.message : String(err);
      failures.push(`${what}: ${message}`);
      log.warn(`ipvs: ${what} failed`, { ...fields, error: message });
    };

    // The state file first (once per sync), so `status` names what the kernel shows while this sync is being
    // applied and a restart owns every NodePort address in use: the old ones until their services are gone.
    const nodePortAddrs = new Set(
      [...want.values()].filter((d) => d.frontend.type === "NodePort").map((d) => d.vs.address),
    );
    const owning = new Set([...this.ownedAddresses, ...nodePortAddrs]);
    await this.saveState(model, owning);

    // 1. Service addresses on the dummy interface (NodePorts use the node's own addresses).
    const wantAddrs = new Set(
      [...want.values()].filter((d) => d.frontend.type !== "NodePort").map((d) => d.vs.address),
    );
    const listed = await dummyAddresses(run);
    if (!listed) fail(`reading ${DUMMY_IF}'s addresses`, "ip -j addr show failed");
    const have = new Set(listed ?? []);
    const batch = listed
      ? [
          ...[...wantAddrs].filter((a) => !have.has(a)).map((a) => addressCommand("add", a)),
          ...[...have].filter((a) => !wantAddrs.has(a)).map((a) => addressCommand("del", a)),
        ]
      : [];
    if (batch.length) {
      const r = await run("ip", ["-force", "-batch", "-"], batch.join("\n") + "\n");
      if (!r.ok) fail("changing service addresses", r.err.trim());
    }
    const owned = new Set([...have, ...wantAddrs, ...owning]);

    // 2. Virtual and real servers: only the difference with the kernel's table. No await from here to step 3,
    // so the drain check (a timer) never runs between reading the table and changing it.
    const excluded = cidrMatcher(this.opts.excludeCIDRs ?? []);
    let kernel: Map<VsKey, nl.VirtualServer> | undefined;
    try {
      kernel = new Map(
        ipvs
          .listServices()
          .filter((v) => owned.has(v.address))
          .map((v) => [vsKey(v), v]),
      );
    } catch (err) {
      fail("listing virtual services", err);
    }
    if (kernel) {
      for (const [k, v] of kernel) if (!want.has(k) && excluded(v.address)) kernel.delete(k);
      for (const [key, d] of want) {
        const k = kernel.get(key);
        const svc = { service: d.frontend.service, address: d.vs.address, port: d.vs.port, protocol: d.vs.protocol };
        try {
          if (!k) {
            ipvs.addService(d.vs);
            res.upserts++;
          } else if (
            k.scheduler !== d.vs.scheduler ||
            k.flags !== d.vs.flags ||
            (d.vs.flags & nl.SVC_F_PERSISTENT && k.timeout !== d.vs.timeout)
          ) {
            ipvs.editService(d.vs);
            res.upserts++;
          }
        } catch (err) {
          res.skipped.push({ ...svc, reason: (err as Error).message });
          fail("virtual service", err, svc);
          continue;
        }
        let current: Map<string, nl.RealServer>;
        try {
          current = new Map((k ? ipvs.listDestinations(d.vs) : []).map((r) => [rsKey(r), r]));
        } catch (err) {
          fail("listing real servers", err, svc);
          continue;
        }
        for (const [rk, rs] of d.dests) {
          const c = current.get(rk);
          if (c && c.weight === rs.weight) continue;
          try {
            (c ? ipvs.editDestination : ipvs.addDestination)(d.vs, { ...rs, fwd: nl.FWD_MASQ });
            res.upserts++;
          } catch (err) {
            fail("real server", err, { ...svc, server: rk });
          }
        }
        for (const [rk, c] of current) {
          if (d.dests.has(rk)) continue;
          try {
            res.deletes += this.retire(d.vs, c);
          } catch (err) {
            fail("removing real server", err, { ...svc, server: rk });
          }
        }
      }
      for (const [key, k] of kernel) {
        if (want.has(key)) continue;
        try {
          ipvs.deleteService(k);
          res.deletes++;
        } catch (err) {
          fail("removing virtual service", err, { address: k.address, port: k.port, protocol: k.protocol });
        }
      }
    }

    // 3. Masquerade and traffic policy: one nft transaction, only when the rules change (or last failed).
    const nft = nftRuleset([...want.values()], this.opts.clusterCIDRs, this.opts.masqueradeAll ?? false);
    if (nft !== this.lastNft) {
      const r = await run("nft", ["-f", "-"], nft);
      if (r.ok) this.lastNft = nft;
      else fail("nft -f", r.err.trim());
    }
    // Old NodePort addresses stay owned until a sync has removed their services for sure.
    this.ownedAddresses = failures.length ? owning : nodePortAddrs;
    if (failures.length)
      throw new Error(
        `ipvs: ${failures.length} change(s) failed (retried): ${failures.slice(0, 3).join("; ")}${failures.length > 3 ? "; ..." : ""}`,
      );
    return res;
  }

  /** Graceful removal (kube-proxy's): TCP real servers with connections get weight 0 and go once drained; UDP and SCTP go at once. */
  private retire(vs: nl.VirtualServer, rs: nl.RealServer): number {
    if (vs.protocol === "TCP" && rs.activeConns + rs.inactConns > 0) {
      if (rs.weight !== 0) this.host.ipvs.editDestination(vs, { ...rs, weight: 0 });
      this.draining.add(`${vsKey(vs)}|${rsKey(rs)}`);
      return 0;
    }
    this.host.ipvs.deleteDestination(vs, rs);
    return 1;
  }

  private readonly draining = new Set<string>();
  private desiredDests = new Map<VsKey, Set<string>>();

  /** Deletes draining real servers whose last connection is gone. */
  private reapDrained(): void {
    if (!this.draining.size) return;
    try {
      const { ipvs } = this.host;
      const services = new Map(ipvs.listServices().map((v) => [vsKey(v), v]));
      for (const d of [...this.draining]) {
        const [proto, addr, port, rs] = d.split("|");
        const vs = services.get(`${proto}|${addr}|${port}`);
        const cur = vs && ipvs.listDestinations(vs).find((r) => rsKey(r) === rs);
        if (!vs || !cur || this.desiredDests.get(vsKey(vs))?.has(rs!)) {
          this.draining.delete(d);
        } else if (cur.activeConns + cur.inactConns === 0) {
          ipvs.deleteDestination(vs, cur);
          this.draining.delete(d);
          log.info("ipvs: drained real server removed", { service: `${proto} ${addr}:${port}`, server: rs });
        }
      }
    } catch (err) {
      log.warn("ipvs: drain check failed", { error: (err as Error).message });
    }
  }

  /** Writes the state file when its content changed: mode 0600 (Service names and addresses), atomically. */
  private async saveState(model: NodeModel, nodePortAddrs: Set<string>): Promise<void> {
    const file = this.stateFile;
    const state: SavedState = {
      node: model.node,
      reason: this.opts.reason ?? "",
      frontends: model.frontends,
      ownedAddresses: [...nodePortAddrs],
    };
    const text = JSON.stringify(state);
    if (text === this.lastState) return;
    const tmp = file + ".tmp";
    try {
      await mkdir(dirname(file), { recursive: true });
      // A left-over temp file (a crash mid-write) would keep its old mode: start from a new one.
      await rm(tmp, { force: true });
      await writeFile(tmp, text, { mode: 0o600, flag: "wx" });
      await rename(tmp, file);
      this.lastState = text;
    } catch (err) {
      log.warn("ipvs: state file not written (status shows addresses without names)", {
        file,
        error: (err as Error).message,
      });
    }
  }

  async refreshAttachments(): Promise<void> {}

  attachments(): Attachment[] {
    return [];
  }

  async stop(): Promise<void> {
    // The kernel keeps serving: virtual servers, addresses and nft rules stay.
    if (this.drainTimer) clearInterval(this.drainTimer);
    this.started = false;
  }
}

/** What the nftables ruleset is computed from: one virtual service of the model. */
export type NftService = Pick<DesiredVs, "vs" | "frontend" | "extras" | "dests">;

/**
 * The whole nftables ruleset of IPVS mode, one `nft -f` transaction: table `ip bpfproxy-ipvs` for IPv4 and,
 * while any IPv6 frontend exists, `ip6 bpfproxy-ipvs` with the same sets and chains for IPv6 (kube-proxy's
 * IPVS mode keeps one set of ipsets and iptables rules per family the same way). Each family's rules use only
 * that family's --cluster-cidr and loadBalancerSourceRanges entries: a range of the other family can never
 * match, and none of this family means no restriction (kube-proxy filters the ranges per family the same way).
 */
export function nftRuleset(services: NftService[], clusterCIDRs: string[], masqueradeAll: boolean): string {
  const v6 = services.filter((d) => isIPv6(d.vs.address));
  const v4 = services.filter((d) => !isIPv6(d.vs.address));
  const ofFamily = (six: boolean) => (c: string) => parseCIDR(c)?.family === (six ? 6 : 4);
  const ip4 = nftTable("ip", v4, clusterCIDRs.filter(ofFamily(false)), masqueradeAll);
  // Without IPv6 frontends the ip6 table is removed (declared first so that the delete cannot fail).
  const ip6 = v6.length
    ? nftTable("ip6", v6, clusterCIDRs.filter(ofFamily(true)), masqueradeAll)
    : `table ip6 ${NFT_TABLE}\ndelete table ip6 ${NFT_TABLE}\n`;
  return ip4 + ip6;
}

function nftTable(family: "ip" | "ip6", services: NftService[], cidrs: string[], masqueradeAll: boolean): string {
  const six = family === "ip6";
  const addrType = six ? "ipv6_addr" : "ipv4_addr";
  const elem = (d: NftService) => `${d.vs.address} . ${d.vs.protocol.toLowerCase()} . ${d.vs.port}`;
  const internal: string[] = [];
  const externalMasq: string[] = [];
  const dropEmpty: string[] = [];
  const ranges: string[] = [];
  const hairpin = new Set<string>();
  for (const d of services) {
    for (const rs of d.dests.values()) hairpin.add(`${rs.address} . ${rs.address}`);
    if (d.frontend.type === "ClusterIP") internal.push(elem(d));
    else {
      // externalTrafficPolicy Local keeps the client's address (the model leaves only node-local endpoints).
      if (!d.extras.externalPolicyLocal) externalMasq.push(elem(d));
      if (d.extras.dropWhenEmpty && d.frontend.backends.length === 0) dropEmpty.push(elem(d));
      const src = d.extras.sourceRanges.filter((c) => parseCIDR(c)?.family === (six ? 6 : 4));
      if (src.length) {
        ranges.push(
          `    ${family} daddr ${d.vs.address} meta l4proto ${d.vs.protocol.toLowerCase()} th dport ${d.vs.port} ${family} saddr != { ${src.join(", ")} } drop`,
        );
      }
    }
  }
  const set = (name: string, type: string, elems: Iterable<string>) => {
    const e = [...elems];
    return `  set ${name} {\n    type ${type}\n${e.length ? `    elements = { ${e.join(", ")} }\n` : ""}  }\n`;
  };
  const svcType = `${addrType} . inet_proto . inet_service`;
  const internalRule = masqueradeAll
    ? `    ${family} daddr . meta l4proto . th dport @internal meta mark set meta mark | ${MASQ_MARK}\n`
    : cidrs.length
      ? `    ${family} saddr != { ${cidrs.join(", ")} } ${family} daddr . meta l4proto . th dport @internal meta mark set meta mark | ${MASQ_MARK}\n`
      : "";
  const mark = `${internalRule}    ${family} daddr . meta l4proto . th dport @external-masq meta mark set meta mark | ${MASQ_MARK}\n`;
  return (
    `table ${family} ${NFT_TABLE}\ndelete table ${family} ${NFT_TABLE}\ntable ${family} ${NFT_TABLE} {\n` +
    set("internal", svcType, internal) +
    set("external-masq", svcType, externalMasq) +
    set("drop-empty", svcType, dropEmpty) +
    set("hairpin", `${addrType} . ${addrType}`, hairpin) +
    `  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n` +
    `    ${family} daddr . meta l4proto . th dport @drop-empty drop\n${ranges.join("\n")}${ranges.length ? "\n" : ""}${mark}  }\n` +
    `  chain output {\n    type route hook output priority mangle; policy accept;\n${mark}  }\n` +
    `  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n` +
    `    meta mark & ${MASQ_MARK} == ${MASQ_MARK} masquerade\n    ${family} saddr . ${family} daddr @hairpin masquerade\n  }\n}\n`
  );
}

/** `bpfproxy status` in IPVS mode: the kernel's IPVS table, named from the daemon's state file. */
export async function readIpvsStatus(): Promise<DataplaneStatus & { reason: string }> {
  const state = readState();
  const owned = new Set([...((await dummyAddresses()) ?? []), ...(state?.ownedAddresses ?? [])]);
  const named = new Map((state?.frontends ?? []).map((f) => [vsKey(f), f]));
  const frontends: Frontend[] = nl
    .listServices()
    .filter((v) => owned.has(v.address))
    .map((v) => {
      const f = named.get(vsKey(v));
      const local = new Set(f?.backends.filter((b) => b.nodeLocal).map(rsKey));
      return {
        service: f?.service ?? "<unknown>",
        portName: f?.portName ?? "",
        type: f?.type ?? "ClusterIP",
        address: v.address,
        port: v.port,
        protocol: v.protocol,
        scope: f?.scope ?? "internal",
        sessionAffinity:
          v.flags & nl.SVC_F_PERSISTENT ? { type: "ClientIP", timeoutSeconds: v.timeout } : { type: "None" },
        algorithm:
          v.scheduler === "mh" ? "maglev" : v.scheduler === "lc" || v.scheduler === "wlc" ? "least-conn" : "random",
        backends: nl.listDestinations(v).map((r) => ({
          address: r.address,
          port: r.port,
          state: r.weight > 0 ? "active" : "terminating",
          nodeLocal: local.has(rsKey(r)),
          ...(r.weight > 1 ? { weight: r.weight } : {}),
        })),
      };
    });
  frontends.sort((a, b) => vsKey(a).localeCompare(vsKey(b)));
  return {
    node: state?.node ?? "",
    mode: "ipvs",
    frontends,
    attachments: [],
    counters: {},
    conntrack: { entries: 0, max: 0 },
    snat: { entries: 0, max: 0 },
    ...readIpvsTraffic(),
    maps: {},
    reason: state?.reason ?? "",
  };
}

/**
 * Per virtual service and per real server totals from the kernel's IPVS stats (what `ipvsadm -L --stats`
 * shows), in the shape the BPF mode reports: connections scheduled, packets and bytes in. Only the virtual
 * services the daemon's state file names (ours); IPVS counts no drops per service. Synchronous (netlink
 * dumps), for the metrics collector.
 */
export function readIpvsTraffic(): {
  frontendCounters: DataplaneStatus["frontendCounters"];
  backendCounters: NonNullable<DataplaneStatus["backendCounters"]>;
} {
  const named = new Map((readState()?.frontends ?? []).map((f) => [vsKey(f), f]));
  const frontendCounters: DataplaneStatus["frontendCounters"] = [];
  const backends = new Map<string, NonNullable<DataplaneStatus["backendCounters"]>[number]>();
  for (const v of nl.listServiceStats()) {
    const f = named.get(vsKey(v));
    if (!f) continue;
    frontendCounters.push({
      service: f.service,
      portName: f.portName,
      type: f.type,
      address: v.address,
      port: v.port,
      protocol: v.protocol,
      packets: v.stats.inPkts,
      bytes: v.stats.inBytes,
      connections: v.stats.conns,
      drops: {},
    });
    for (const d of nl.listDestinationStats(v)) {
      const k = `${d.address}:${d.port}/${v.protocol}`;
      const b = backends.get(k) ?? {
        services: [],
        address: d.address,
        port: d.port,
        protocol: v.protocol,
        connections: 0,
        packets: 0,
        bytes: 0,
      };
      // One endpoint behind several virtual services (ClusterIP, NodePort per address, ...): summed.
      b.connections += d.stats.conns;
      b.packets += d.stats.inPkts;
      b.bytes += d.stats.inBytes;
      if (!b.services.includes(f.service)) b.services = [...b.services, f.service].sort();
      backends.set(k, b);
    }
  }
  frontendCounters.sort((a, b) => vsKey(a).localeCompare(vsKey(b)));
  const backendCounters = [...backends.values()].sort(
    (a, b) => a.address.localeCompare(b.address) || a.port - b.port || a.protocol.localeCompare(b.protocol),
  );
  return { frontendCounters, backendCounters };
}

/** `bpfproxy cleanup` in IPVS mode: our virtual services, the dummy interface, the nft table, the state file. */
export async function cleanupIpvs(): Promise<{ services: number }> {
  const state = readState();
  const owned = new Set([...((await dummyAddresses()) ?? []), ...(state?.ownedAddresses ?? [])]);
  let services = 0;
  if (nl.ipvsAvailable().ok) {
    for (const v of nl.listServices())
      if (owned.has(v.address)) {
        nl.deleteService(v);
        services++;
      }
  }
  await runCommand("ip", ["link", "del", DUMMY_IF]);
  // Both families' tables in one nft run (declared first, so that a missing one is no error).
  await runCommand(
    "nft",
    ["-f", "-"],
    ["ip", "ip6"].map((f) => `table ${f} ${NFT_TABLE}\ndelete table ${f} ${NFT_TABLE}\n`).join(""),
  );
  await rm(stateFile(), { force: true });
  return { services };
}
