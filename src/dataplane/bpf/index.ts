// The BPF data plane: loads the precompiled object with its maps pinned under the bpffs
// directory (reusing pins left by an earlier run, so live state survives restarts),
// attaches the tc programs, and keeps the load-balancer maps equal to the model.
import { firstIPv6, writeNat6Config } from "./nat6.js";
import { NodePortsOutsideRange, reservePorts, type PortRange } from "./reserved-ports.js";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { basename, join } from "node:path";
import picomatch from "picomatch";
import * as native from "../../native/index.js";
import { log } from "../../log.js";
import {
  CFG_F_DETECT_LOCAL,
  CFG_F_MASQUERADE_ALL,
  CFG_F_POD_SOURCE_CHECK,
  DEFAULT_MAP_SIZES,
  MAP_NAMES,
  LC_MAX_BACKEND_IDS,
  MAP_SIZE_TARGETS,
  NAT_CFG_F_FIB_REDIRECT,
  NAT_CFG_F_PORTS_RESERVED,
  CT_CFG_F_BE_LIBERAL,
  CT_DEFAULT_LIFETIMES_NS,
  IPPROTO_UDP,
  config as configCodec,
  ctConfig,
  ct6Entry,
  ct6Key,
  natConfig,
  reservedPorts,
  u32Key,
  type MapSizes,
} from "./abi.js";
import { PinMigration } from "./migrate.js";
import { fillTailCalls } from "./tail.js";
import { LbReconciler } from "./reconcile.js";
import { MapSync } from "./mapsync.js";
import { Prefilter } from "./prefilter.js";
import { desiredNodePortAddrs, SCTP_IPVS_REASON, serviceGroups, SourceRangesCache } from "./desired.js";
import { IpvsDataplane, type IpvsHost } from "../ipvs/index.js";
import { sctpNotInBpf } from "../../metrics.js";
import { SocketTerminator, attachSocketLb } from "./sock.js";
import { lostPairs, staleUdpFlowKeys } from "./udp-flows.js";
import { packagePath } from "../../paths.js";
import { ConntrackGC, endFlowsOfRemovedBackends, endFlowsOfRemovedBackends6 } from "./ct-gc.js";
import {
  DEFAULT_CONNTRACK,
  DEFAULT_CT_GC_INTERVAL_MS,
  DEFAULT_TRANSLATED_MARK_BIT,
  type ConntrackSettings,
} from "../../config.js";
import type { Frontend, NodeModel } from "../../model/types.js";
import type { Attachment, Dataplane, DataplaneOptions, SyncResult } from "../types.js";
import { deleteBatch } from "./batch.js";
import { takesXdpFrames } from "./xdp-devs.js";

export const OBJECT_PATH = packagePath("bpf/bpfproxy.o");

/** Our tc filters sit at this handle/priority on every interface we manage. */
export const TC_HANDLE = 0xb9f;
export const TC_PRIORITY = 1;
export const PROG_FROM_POD = "bpx_from_pod";
export const PROG_FROM_DEVICE = "bpx_from_device";
/** tc egress of pod interfaces and devices: replies that crossed no hooked ingress (host-network backends). */
export const PROG_REVERSE = "bpx_reverse";
/** tc ingress and egress of devices without a link-layer header (ipip, wireguard, tun): see isL3Device. */
export const PROG_FROM_L3_DEVICE = "bpx_from_l3dev";
export const PROG_REVERSE_L3 = "bpx_reverse_l3";
/** XDP on devices: the fast path; it passes what it does not finish to bpx_from_device. */
export const PROG_XDP = "bpx_xdp";

/** A `--pod-interfaces` glob (`*`, `?`, `[...]`, matched against the whole interface name) as a RegExp. */
export function globToRegExp(glob: string): RegExp {
  return picomatch.makeRe(glob, { dot: true });
}

/** Interfaces of the current network namespace. */
export function listInterfaces(): string[] {
  try {
    return readdirSync("/sys/class/net");
  } catch {
    return [];
  }
}

/** Mounts a bpffs at dir unless one is there already (as Cilium does). */
export function ensureBpffs(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!native.isBpffs(dir)) {
    native.mountBpffs(dir);
    log.info("mounted bpffs", { path: dir });
  }
  // Pins are root-only (the kernel creates them 0600): the folder too, so no one else can list or replace them.
  chmodSync(dir, 0o700);
}

/** Source ports of masqueraded flows by default (config/defaults.ts DEFAULT_SNAT_PORT_RANGE says why). */
export const SNAT_PORT_MIN = 1024;
export const SNAT_PORT_MAX = 29999;

export interface BpfDataplaneOptions extends DataplaneOptions {
  nodeName: string;
  objectPath?: string;
  /** Map sizes (entries); defaults DEFAULT_MAP_SIZES. A change migrates the pinned maps at start. */
  mapSizes?: Partial<MapSizes>;
  /** kube-proxy's masqueradeAll: masquerade every translated flow. */
  masqueradeAll?: boolean;
  /**
   * Deliver translated packets past the host stack (bpf_fib_lookup + redirect): faster, but netfilter's FORWARD
   * chain (NetworkPolicy of Calico's iptables mode, kube-router) and rp_filter never see Service traffic.
   * Default false: the stack forwards it, as after kube-proxy's DNAT (bpf/lib/fib.h).
   */
  bypassNetfilter?: boolean;
  /** Mark bit for packets tc ingress translated completely (tc egress skips them); -1 = off, unset = 12. */
  translatedMarkBit?: number;
  /** Whether a local-traffic detector is configured (ClusterCIDR with CIDRs, or an interface mode). */
  detectLocal?: boolean;
  /** Source address of masqueraded flows. Default: the first IPv4 address of the first device. */
  masqueradeAddress?: string;
  /** XDP on devices; default "off" here (the CLI's default is auto). */
  xdp?: "auto" | "native" | "generic" | "off";
  /** kube-proxy's conntrack lifetimes and tcpBeLiberal (default kube-proxy's). */
  conntrack?: ConntrackSettings;
  /** Conntrack garbage collector interval; 0 = no collector (tests). Default DEFAULT_CT_GC_INTERVAL_MS. */
  conntrackGCIntervalMs?: number;
  /** Source ports of masqueraded flows; default SNAT_PORT_MIN-SNAT_PORT_MAX. */
  snatPortRange?: PortRange;
  /** The cluster's NodePort range (bpfproxy.nodePortRange), reserved with the SNAT range. */
  nodePortRange?: PortRange;
  /** Reserve the SNAT range and the NodePort range in this network namespace's ip_local_reserved_ports (the
   * daemon does; default false so tests and benchmarks that run in the caller's namespace never change it). */
  reservePortRanges?: boolean;
  /**
   * SCTP frontends BPF does not translate (a port rewrite, IPv6: desired.ts sctpNotInBpf) go to the kernel's
   * IPVS with these settings (docs/sctp.md); without IPVS, or unset, they are refused (logged, counted).
   */
  sctpIpvs?: { scheduler: string; masqueradeAll?: boolean; host?: IpvsHost; stateFile?: string };
}

/** The NodePorts of the Services a sync changed (those still there; every Service without `changed`). */
function* nodePortFrontends(
  model: NodeModel,
  changed: ReadonlySet<string> | undefined,
): Iterable<Pick<Frontend, "service" | "type" | "port">> {
  const groups = serviceGroups(model);
  for (const name of changed ?? groups.keys()) {
    const r = groups.get(name);
    if (!r) continue;
    for (let i = 0; i < r.size; i++)
      if (r.type(i) === "NodePort") yield { service: r.service, type: "NodePort", port: r.port(i) };
  }
}

/** Adds a range to this network namespace's ip_local_reserved_ports; false (with a warning) where it cannot. */
function reserveRange(what: string, range: PortRange): boolean {
  try {
    const list = reservePorts(range);
    log.info(`reserved the ${what} range`, { range: `${range.min}-${range.max}`, ip_local_reserved_ports: list });
    return true;
  } catch (err) {
    // A container whose /proc/sys is read-only cannot: traffic still flows, the host is just not kept off
    // the range (docs/conntrack.md says how to reserve it on the node instead).
    log.warn(`could not reserve the ${what} range in net.ipv4.ip_local_reserved_ports`, {
      range: `${range.min}-${range.max}`,
      error: (err as Error).message,
    });
    return false;
  }
}

/** bpx_ct_config_v1's value for the given settings (the BPF lifetimes the garbage collector applies too). */
export function ctConfigValue(c: ConntrackSettings = DEFAULT_CONNTRACK) {
  const ns = (ms: number) => BigInt(ms) * 1_000_000n;
  return {
    tcpSynSentNs: CT_DEFAULT_LIFETIMES_NS.tcpSynSentNs,
    tcpEstablishedNs: ns(c.tcpEstablishedMs),
    tcpCloseWaitNs: ns(c.tcpCloseWaitMs),
    tcpTimeWaitNs: CT_DEFAULT_LIFETIMES_NS.tcpTimeWaitNs,
    tcpCloseNs: CT_DEFAULT_LIFETIMES_NS.tcpCloseNs,
    udpNs: ns(c.udpMs),
    udpStreamNs: ns(c.udpStreamMs),
    flags: c.beLiberal ? CT_CFG_F_BE_LIBERAL : 0,
  };
}

/** First IPv4 address of the first listed interface that has one. */
/** The mark bits for bpx_nat_config.translated_mark: bit `bit` (default DEFAULT_TRANSLATED_MARK_BIT), 0 when off. */
export function translatedMark(bit: number = DEFAULT_TRANSLATED_MARK_BIT): number {
  return bit >= 0 && bit <= 31 ? (1 << bit) >>> 0 : 0;
}

export function firstIPv4(ifnames: readonly string[]): string | undefined {
  const all = networkInterfaces();
  for (const n of ifnames) {
    const a = all[n]?.find((x) => x.family === "IPv4");
    if (a) return a.address;
  }
  return undefined;
}

/** Address, port and protocol of every backend in the mirror (bpx_backend without its flags, latin1). */

export class BpfDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  private obj: native.BpfObject | undefined;
  private reconciler: LbReconciler | undefined;
  private nodePortAddrs: MapSync | undefined;
  private sourceRanges: MapSync | undefined;
  /** bpx_srcrange6_v1: the IPv6 frontends' loadBalancerSourceRanges. */
  private sourceRanges6: MapSync | undefined;
  private prefilter: Prefilter | undefined;
  private prefilter6: Prefilter | undefined;
  private readonly attached = new Map<string, Attachment & { ifindex: number }>();
  private sockAttached: Attachment[] = [];
  private sockTerm: SocketTerminator | undefined;
  private serving: Set<string> | undefined;
  private readonly podGlobs: RegExp[];
  private readonly xdpFailed = new Set<string>();
  /** Devices our XDP program is attached to in driver (native) mode. */
  private readonly xdpNative = new Set<string>();
  private gc: ConntrackGC | undefined;
  /** Backend ids whose entries the reconciler deleted since their flows were last ended. */
  private releasedBackends = new Set<number>();
  /** The same for IPv6 backends (their flows are in bpx_ct6_v1: a walk of that map only when one went). */
  private releasedBackends6 = new Set<number>();
  private endingFlows: Promise<void> | undefined;
  /** The generation (model delta) this data plane applied last; undefined after a failed sync. */
  private appliedGeneration: number | undefined;
  /** Services whose IPv6 frontends were skipped at the last sync (warned once while they last). */
  /** Set once the NodePort range is reserved: warns about NodePorts outside it. */
  private nodePortsOutside?: NodePortsOutsideRange;
  private readonly ranges = new SourceRangesCache(4);
  private readonly ranges6 = new SourceRangesCache(6);
  private ipv6CIDRsNoted = false;

  /** The IPVS data plane serving the SCTP frontends BPF leaves out; undefined until one needs it. */
  private sctpIpvs: IpvsDataplane | undefined;
  /** Why SCTP frontends cannot go to IPVS (set once starting it failed, or when not configured). */
  private sctpIpvsMissing: string | undefined;
  /** The refused SCTP frontends last warned about (warned again when the set changes). */
  private sctpRefusedLogged = "";

  constructor(private readonly opts: BpfDataplaneOptions) {
    this.podGlobs = opts.podInterfaces.map(globToRegExp);
  }

  async start(): Promise<void> {
    ensureBpffs(this.opts.bpffs);
    const obj = new native.BpfObject(this.opts.objectPath ?? OBJECT_PATH, { pinRoot: this.opts.bpffs });
    let migration: PinMigration | undefined;
    try {
      const sizes = { ...DEFAULT_MAP_SIZES, ...this.opts.mapSizes };
      for (const [what, names] of Object.entries(MAP_SIZE_TARGETS)) {
        for (const name of names) obj.setMapMaxEntries(name, sizes[what as keyof MapSizes]);
      }
      const pinned = new Set<string>(Object.values(MAP_NAMES));
      migration = PinMigration.prepare(
        obj,
        this.opts.bpffs,
        new Map(
          obj
            .maps()
            .filter((m) => pinned.has(m.name))
            .map((m) => [m.name, m]),
        ),
      );
      obj.load();
    } catch (err) {
      migration?.abandon();
      obj.close();
      throw err;
    }
    this.obj = obj;
    // Before any attachment: the entries tail-call the IPv6 programs (an empty slot passes IPv6 untouched).
    fillTailCalls(obj);
    if (migration) {
      const report = await migration.copy((name) => obj.map(name));
      log.info("migrating pinned maps side by side", { ...report });
    }
    this.writeConfig(this.opts.clusterCIDRs);
    const masqAddr = this.opts.masqueradeAddress ?? firstIPv4(this.opts.devices);
    if (!masqAddr)
      log.warn("no IPv4 address on --devices: flows that need masquerade will be dropped", {
        devices: this.opts.devices,
      });
    const snat = this.opts.snatPortRange ?? { min: SNAT_PORT_MIN, max: SNAT_PORT_MAX };
    // Before any flow can take a port: a host connection must not hold one of them (reserved-ports.ts).
    const reserved = this.opts.reservePortRanges === true && reserveRange("SNAT port", snat);
    const nodePorts = this.opts.nodePortRange;
    const nodePortsReserved = this.opts.reservePortRanges === true && !!nodePorts && reserveRange("NodePort", nodePorts);
    if (nodePortsReserved && nodePorts)
      this.nodePortsOutside = new NodePortsOutsideRange(nodePorts, (service, nodePort) =>
        log.warn("NodePort outside bpfproxy.nodePortRange: host connections may take it as an ephemeral port", {
          service,
          nodePort,
          nodePortRange: `${nodePorts.min}-${nodePorts.max}`,
        }),
      );
    obj.map(MAP_NAMES.reservedPorts).update(
      u32Key.encode(0),
      reservedPorts.encode(
        nodePortsReserved && nodePorts ? { nodePortMin: nodePorts.min, nodePortMax: nodePorts.max } : { nodePortMin: 0, nodePortMax: 0 },
      ),
    );
    obj.map(MAP_NAMES.natConfig).update(
      u32Key.encode(0),
      natConfig.encode({
        masqAddr: masqAddr ?? "0.0.0.0",
        portMin: snat.min,
        portMax: snat.max,
        flags: (this.opts.bypassNetfilter ? NAT_CFG_F_FIB_REDIRECT : 0) | (reserved ? NAT_CFG_F_PORTS_RESERVED : 0),
        translatedMark: translatedMark(this.opts.translatedMarkBit),
      }),
    );
    // IPv6 masquerade: the node's IPv6 address beside the IPv4 one, IPv4's port range (bpf/lib/nat6.h).
    writeNat6Config(obj.map(MAP_NAMES.nat6Config), firstIPv6(this.opts.devices));
    obj.map(MAP_NAMES.ctConfig).update(u32Key.encode(0), ctConfig.encode(ctConfigValue(this.opts.conntrack)));
    const gcInterval = this.opts.conntrackGCIntervalMs ?? DEFAULT_CT_GC_INTERVAL_MS;
    if (gcInterval > 0) {
      this.gc = new ConntrackGC({
        conntrack: obj.map(MAP_NAMES.conntrack),
        conntrack6: obj.map(MAP_NAMES.conntrack6),
        nat: obj.map(MAP_NAMES.nat),
        nat6: obj.map(MAP_NAMES.nat6),
        ctConfig: obj.map(MAP_NAMES.ctConfig),
        lcGone: obj.map(MAP_NAMES.lcGone),
        intervalMs: gcInterval,
      });
      this.gc.start();
    }
    this.nodePortAddrs = new MapSync(obj.map(MAP_NAMES.nodePortAddrs));
    this.sourceRanges = new MapSync(obj.map(MAP_NAMES.sourceRanges));
    this.sourceRanges6 = new MapSync(obj.map(MAP_NAMES.sourceRanges6));
    this.nodePortAddrs.restore();
    this.sourceRanges.restore();
    this.sourceRanges6.restore();
    this.prefilter = new Prefilter(obj.map(MAP_NAMES.prefilter));
    this.prefilter.restore();
    this.prefilter6 = new Prefilter(obj.map(MAP_NAMES.prefilter6), 6);
    this.prefilter6.restore();
    this.reconciler = new LbReconciler({
      services: obj.map(MAP_NAMES.services),
      backends: obj.map(MAP_NAMES.backends),
      revNat: obj.map(MAP_NAMES.revNat),
      svcMeta: obj.map(MAP_NAMES.svcMeta),
      maglev: obj.map(MAP_NAMES.maglev),
      affinityMatch: obj.map(MAP_NAMES.affinityMatch),
      services6: obj.map(MAP_NAMES.services6),
      backends6: obj.map(MAP_NAMES.backends6),
    }, {
      onIdReleased: (kind, id, family) => {
        zeroTrafficCounters(obj, kind, id);
        if (kind === "backend") (family === 6 ? this.releasedBackends6 : this.releasedBackends).add(id);
      },
    });
    // Restore, never flush: whatever an earlier run programmed keeps serving until the first sync.
    await this.reconciler.restore();
    log.info("bpf data plane loaded", {
      bpffs: this.opts.bpffs,
      services: this.reconciler.entryCounts().services,
      backends: this.reconciler.entryCounts().backends,
    });
    if (this.opts.cgroupPath) {
      this.sockAttached = attachSocketLb(this.opts.bpffs, this.opts.cgroupPath, {
        podNamespaces: this.opts.socketLBPodNamespaces === true,
      });
      log.info("socket load balancing attached", {
        cgroup: this.opts.cgroupPath,
        hooks: this.sockAttached.length,
        namespaces: this.opts.socketLBPodNamespaces ? "node and pods" : "node",
      });
      const term = SocketTerminator.load(this.opts.bpffs);
      if (term instanceof Error)
        log.warn("sockets connected to a removed backend are not ended (needs bpf_sock_destroy, Linux >= 6.5)", {
          error: term.message,
        });
      else this.sockTerm = term;
    }
    await this.refreshAttachments();
    if (migration) {
      // The new programs now serve every interface we manage: top up flows, drop the old pins.
      const topped = await migration.finish((name) => obj.map(name));
      log.info("pinned maps migrated; old pins removed", { flowsCopiedAfterSwap: topped });
    }
  }

  /**
   * Writes bpx_config_v1: masquerade flags and the CIDRs whose sources count as in-cluster. The map holds IPv4
   * CIDRs (the IPv4 path's masquerade); the IPv6 path has no masquerade yet and treats traffic from pod
   * interfaces as internal, so IPv6 CIDRs are left out of it (said once).
   */
  private writeConfig(cidrs: readonly string[]): void {
    const localCIDRs = cidrs.filter((c) => !c.includes(":"));
    const v6 = cidrs.filter((c) => c.includes(":"));
    if (v6.length && !this.ipv6CIDRsNoted) {
      this.ipv6CIDRsNoted = true;
      log.info("IPv6 cluster CIDRs are not used by the BPF IPv6 path yet (no IPv6 masquerade)", {
        clusterCIDRs: v6,
        metric: "bpfproxy_ipv6_skipped",
      });
    }
    const detectLocal = this.opts.detectLocal ?? localCIDRs.length > 0;
    this.obj!.map(MAP_NAMES.config).update(
      u32Key.encode(0),
      configCodec.encode({
        // The pod source check is always on: a pod must never speak for another (docs/security.md).
        flags:
          (this.opts.masqueradeAll ? CFG_F_MASQUERADE_ALL : 0) |
          (detectLocal ? CFG_F_DETECT_LOCAL : 0) |
          CFG_F_POD_SOURCE_CHECK,
        clusterCidrs: [...localCIDRs],
        nodeName: this.opts.nodeName,
      }),
    );
  }

  /**
   * detectLocalMode NodeCIDR: the Node's podCIDRs arrive after start; from now on sources inside them are
   * local (kept as they are), others are masqueraded. More than the map holds is an error, never a truncation.
   */
  setLocalCIDRs(cidrs: readonly string[]): void {
    if (!this.obj) throw new Error("data plane not started");
    this.writeConfig(cidrs);
  }

  async sync(model: NodeModel, opts: { full?: boolean } = {}): Promise<SyncResult> {
    if (!this.reconciler) throw new Error("data plane not started");
    if (opts.full) {
      await this.reconciler.restoreUnlessEmpty();
      this.nodePortAddrs!.restore();
      this.sourceRanges!.restore();
      this.sourceRanges6!.restore();
      this.prefilter!.restore();
      this.prefilter6!.restore();
    }
    // The model's delta names the only Services that changed, valid when this data plane applied exactly the
    // build it follows; otherwise (first sync, a failed one, a reset cache) every Service is compared.
    const delta = model.delta;
    const changed =
      !opts.full && delta && delta.from !== -1 && delta.from === this.appliedGeneration ? delta.services : undefined;
    this.appliedGeneration = undefined;
    const backendsBefore = this.sockTerm ? this.reconciler.backendAddresses() : undefined;
    let np = { upserts: 0, deletes: 0 };
    const res = await this.reconciler.apply(model, {
      full: opts.full,
      changed,
      // The pre-filter covers new entries (bits from their encoding) before they are written, and dropped ones
      // until they are gone; NodePorts are served on new addresses only once their bits are set.
      beforeWrite: async (bits, complete) => {
        await this.prefilter!.before(bits, model.nodePortIPs ?? [], complete);
        await this.prefilter6!.before(bits, [], complete);
        np = this.nodePortAddrs!.apply(desiredNodePortAddrs(model));
      },
    });
    this.scheduleEndFlows();
    this.nodePortsOutside?.note(nodePortFrontends(model, changed));
    // Frontend ids exist once the service map holds the frontend. A new restricted frontend drops everyone
    // until its ranges land a moment later: it fails closed.
    const rec = this.reconciler;
    const sr = this.sourceRanges!.apply(this.ranges.desired(model, changed, (n) => rec.revNatIdOf(n)));
    const sr6 = this.sourceRanges6!.apply(this.ranges6.desired(model, changed, (n) => rec.revNatIdOf(n)));
    await this.prefilter!.after(res.heldBack);
    await this.prefilter6!.after(res.heldBack);
    await this.flushStaleUdpFlows(res.lostServing, opts.full === true);
    if (backendsBefore) this.endSocketsOfRemovedBackends(backendsBefore);
    const sctp = await this.syncSctpIpvs(model, res.skipped);
    this.appliedGeneration = delta?.to;
    return {
      ...res,
      skipped: sctp.skipped,
      upserts: res.upserts + np.upserts + sr.upserts + sr6.upserts + sctp.upserts,
      deletes: res.deletes + np.deletes + sr.deletes + sr6.deletes + sctp.deletes,
    };
  }

  /**
   * The SCTP frontends BPF skipped for IPVS (every one of them: the reconciler reports all skipped frontends at
   * each sync) become the whole model of an IPVS data plane, started at the first one. Without IPVS they stay
   * skipped, warned about and counted. Returns the skipped list without those IPVS serves.
   */
  private async syncSctpIpvs(
    model: NodeModel,
    skipped: SyncResult["skipped"],
  ): Promise<Pick<SyncResult, "skipped" | "upserts" | "deletes">> {
    const handed = skipped.filter((s) => s.protocol === "SCTP" && s.reason.startsWith(SCTP_IPVS_REASON));
    if (!handed.length && !this.sctpIpvs) {
      sctpNotInBpf.set({ served_by: "ipvs" }, 0);
      sctpNotInBpf.set({ served_by: "none" }, 0);
      return { skipped, upserts: 0, deletes: 0 };
    }
    if (handed.length && !this.sctpIpvs && this.sctpIpvsMissing === undefined) {
      if (!this.opts.sctpIpvs) this.sctpIpvsMissing = "the IPVS hand-over is not configured";
      else {
        const dp = new IpvsDataplane({
          bpffs: this.opts.bpffs,
          devices: this.opts.devices,
          podInterfaces: this.opts.podInterfaces,
          clusterCIDRs: this.opts.clusterCIDRs,
          nodeName: this.opts.nodeName,
          scheduler: this.opts.sctpIpvs.scheduler,
          masqueradeAll: this.opts.masqueradeAll,
          host: this.opts.sctpIpvs.host,
          stateFile: this.opts.sctpIpvs.stateFile,
          reason: "SCTP frontends the BPF data plane does not translate",
        });
        try {
          await dp.start();
          this.sctpIpvs = dp;
          log.info("SCTP frontends BPF does not translate are served by the kernel's IPVS", { frontends: handed.length });
        } catch (err) {
          this.sctpIpvsMissing = (err as Error).message;
        }
      }
    }
    const ipvs = this.sctpIpvs;
    if (!ipvs) {
      const names = handed.map((s) => `${s.service} ${s.address}:${s.port}/SCTP`).sort();
      if (names.join(",") !== this.sctpRefusedLogged) {
        this.sctpRefusedLogged = names.join(",");
        log.warn("SCTP frontends refused: BPF does not translate them and IPVS is unavailable (docs/sctp.md)", {
          frontends: names.slice(0, 20),
          count: names.length,
          why: this.sctpIpvsMissing,
          metric: "bpfproxy_sctp_frontends_not_in_bpf",
        });
      }
      sctpNotInBpf.set({ served_by: "ipvs" }, 0);
      sctpNotInBpf.set({ served_by: "none" }, handed.length);
      return {
        skipped: skipped.map((s) =>
          handed.includes(s) ? { ...s, reason: `${s.reason}; refused: IPVS unavailable (${this.sctpIpvsMissing})` } : s,
        ),
        upserts: 0,
        deletes: 0,
      };
    }
    // The model IPVS gets: exactly the handed-over frontends, taken from their Services' records.
    const wanted = new Set(handed.map((s) => `${s.service}|${s.address}|${s.port}`));
    const groups = serviceGroups(model);
    const sub: NodeModel = { node: model.node, frontends: [], extras: [] };
    for (const name of new Set(handed.map((s) => s.service))) {
      const r = groups.get(name);
      if (!r) continue;
      for (let i = 0; i < r.size; i++) {
        if (r.protocol(i) !== "SCTP" || !wanted.has(`${name}|${r.address(i)}|${r.port(i)}`)) continue;
        sub.frontends.push(r.frontend(i));
        sub.extras.push(r.extras(i));
      }
    }
    const res = await ipvs.sync(sub);
    sctpNotInBpf.set({ served_by: "ipvs" }, sub.frontends.length);
    sctpNotInBpf.set({ served_by: "none" }, 0);
    return { skipped: [...skipped.filter((s) => !handed.includes(s)), ...res.skipped], upserts: res.upserts, deletes: res.deletes };
  }

  /**
   * UDP flows whose backend stopped serving their frontend are forgotten: the next datagram chooses again.
   * A full sync (and the first one) compares every frontend's backends with the last full sync's; an
   * incremental one only looks at the pairs its changed Services lost (O(change)).
   */
  private async flushStaleUdpFlows(lost: Set<string> | undefined, full: boolean): Promise<void> {
    let stale: (pair: string) => boolean;
    if (full || !this.serving) {
      // UDP slots only: only UDP flows are flushed, and a TCP pair would build a string per slot for nothing.
      const serving = this.reconciler!.servingPairs(IPPROTO_UDP);
      const changed = lostPairs(this.serving, serving);
      this.serving = serving;
      if (!changed) return;
      stale = (p) => !serving.has(p);
    } else {
      if (!lost?.size) return;
      stale = (p) => lost.has(p);
    }
    // Both families: a pair names ids of the one id space they share.
    for (const [name, codecs] of [
      [MAP_NAMES.conntrack, undefined],
      [MAP_NAMES.conntrack6, { key: ct6Key, entry: ct6Entry }],
    ] as const) {
      const ct = this.obj!.map(name);
      const { keys, values, count } = await ct.entriesAsync();
      const keysToDelete = staleUdpFlowKeys(keys, values, count, stale, codecs);
      if (keysToDelete.length) {
        await deleteBatch(ct, Buffer.concat(keysToDelete), keysToDelete.length);
        log.info("removed UDP flows of backends that stopped serving", { map: name, entries: keysToDelete.length });
      }
    }
  }

  /**
   * Tracked flows whose backend entry the reconciler just deleted are ended (ct-gc.ts endFlowsOfRemovedBackends),
   * after the sync rather than inside it: the walk reads the whole conntrack table (0.5 ms even empty at the
   * default size, far more when full), which a one-Service change must not wait for. One walk at a time;
   * backends released meanwhile are taken by the next. Until it ends them, a removed backend's flows still
   * reach its address, as they did in the sync's own window.
   */
  private scheduleEndFlows(): void {
    if (this.endingFlows || !(this.releasedBackends.size || this.releasedBackends6.size)) return;
    this.endingFlows = (async () => {
      while (
        (this.releasedBackends.size || this.releasedBackends6.size) &&
        this.obj &&
        (await this.endFlowsOfReleasedBackends())
      );
    })().finally(() => (this.endingFlows = undefined));
  }

  /** Returns false when the walk failed (its backends are kept for the walk after the next sync). */
  private async endFlowsOfReleasedBackends(): Promise<boolean> {
    const released = this.releasedBackends;
    const released6 = this.releasedBackends6;
    this.releasedBackends = new Set();
    this.releasedBackends6 = new Set();
    try {
      await endFlowsOfRemovedBackends(this.obj!.map(MAP_NAMES.conntrack), this.obj!.map(MAP_NAMES.backends), released);
      await endFlowsOfRemovedBackends6(this.obj!.map(MAP_NAMES.conntrack6), this.obj!.map(MAP_NAMES.backends6), released6);
      return true;
    } catch (e) {
      for (const id of released) this.releasedBackends.add(id);
      for (const id of released6) this.releasedBackends6.add(id);
      log.warn("could not end the flows of removed backends", { error: (e as Error).message });
      return false;
    }
  }


  /** Connected UDP sockets the socket hooks pointed at a backend that is gone now are ended. */
  private endSocketsOfRemovedBackends(before: Set<string>): void {
    const now = this.reconciler!.backendAddresses();
    const removed = [...before].filter((v) => !now.has(v)).map((v) => Buffer.from(v, "latin1"));
    if (!removed.length) return;
    try {
      const ended = this.sockTerm!.terminate(removed);
      if (ended.length)
        log.info("ended sockets connected to removed backends", { sockets: ended.length, peers: ended });
    } catch (e) {
      log.warn("could not end sockets connected to removed backends", { error: (e as Error).message });
    }
  }

  /** The garbage collector's last pass (undefined before the first, or without a collector). */
  conntrackGC(): ConntrackGC | undefined {
    return this.gc;
  }

  /** Entries of the maps this daemon writes, from its mirror (no map walk). */
  mapCounts(): Record<string, number> {
    const c = this.reconciler?.entryCounts();
    if (!c) return {};
    return {
      [MAP_NAMES.services]: c.services,
      [MAP_NAMES.backends]: c.backends,
      [MAP_NAMES.revNat]: c.revNat,
      [MAP_NAMES.svcMeta]: c.svcMeta,
      [MAP_NAMES.services6]: c.services6,
      [MAP_NAMES.backends6]: c.backends6,
    };
  }

  private wanted(ifname: string): string | undefined {
    if (this.opts.devices.includes(ifname)) return PROG_FROM_DEVICE;
    if (this.podGlobs.some((g) => g.test(ifname))) return PROG_FROM_POD;
    return undefined;
  }

  async refreshAttachments(): Promise<void> {
    const obj = this.obj;
    if (!obj) return;
    const present = new Set(listInterfaces());
    for (const [key, a] of this.attached) {
      if (!present.has(a.interface) || native.ifNameToIndex(a.interface) !== a.ifindex) {
        this.attached.delete(key); // gone (its filters went with it) or recreated
      }
    }
    // A pod interface that is a Linux bridge (a bridge CNI's cni0/cbr0) is served through its ports: a packet
    // translated at the bridge's own ingress already carries the conntrack br_netfilter made for its original
    // destination (bridge-nf-call-iptables, on for kubeadm nodes), so netfilter would see the backend's answer
    // as INVALID. On the ports, translation comes before the bridge, as it does on a plain pod veth.
    // A pod interface that is itself a bridge's port (`veth*` matching a bridge CNI's pod veths) is served
    // where it is; either way the pod source check needs its bridge as the way back to the pod.
    const bridgePorts = new Map<string, string>(); // port → bridge
    for (const ifname of present) {
      if (this.wanted(ifname) !== PROG_FROM_POD) continue;
      if (isBridge(ifname)) {
        for (const port of bridgePortNames(ifname))
          if (this.wanted(port) !== PROG_FROM_DEVICE) bridgePorts.set(port, ifname); // an uplink stays a device
      } else {
        const bridge = bridgeOf(ifname);
        if (bridge) bridgePorts.set(ifname, bridge);
      }
    }
    this.syncBridgePorts(obj, bridgePorts);
    for (const ifname of present) {
      const wanted = bridgePorts.has(ifname) ? PROG_FROM_POD : this.wanted(ifname);
      if (!wanted) continue;
      if (wanted === PROG_FROM_POD && isBridge(ifname)) continue;
      // A device without Ethernet header gets the programs built for packets that start at IPv4.
      const l3 = wanted === PROG_FROM_DEVICE && isL3Device(ifname);
      const ingress = l3 ? PROG_FROM_L3_DEVICE : wanted;
      for (const [hook, prog] of [
        ["ingress", ingress],
        ["egress", l3 ? PROG_REVERSE_L3 : PROG_REVERSE],
      ] as const) {
        const key = `${ifname}/${hook}`;
        if (this.attached.has(key)) continue;
        const ifindex = native.ifNameToIndex(ifname);
        if (ifindex === 0) continue;
        try {
          const p = obj.program(prog);
          native.tcAttach(ifindex, hook, p.fd, { handle: TC_HANDLE, priority: TC_PRIORITY, replace: true });
          this.attached.set(key, {
            interface: ifname,
            hook: hook === "ingress" ? "tc-ingress" : "tc-egress",
            program: prog,
            programId: p.info.id,
            ifindex,
          });
          log.info("attached", { interface: ifname, hook, program: prog });
        } catch (err) {
          // An interface can vanish between listing and attaching; the next refresh retries.
          log.warn("attach failed", { interface: ifname, hook, program: prog, error: (err as Error).message });
        }
      }
      if (ingress === PROG_FROM_DEVICE) this.attachXdp(obj, ifname);
      else if (l3 && (this.opts.xdp ?? "off") !== "off" && !this.xdpFailed.has(ifname)) {
        this.xdpFailed.add(ifname);
        log.info("XDP not attached: the device has no Ethernet header; tc handles it", { interface: ifname });
      }
    }
    this.syncXdpDevs(obj);
  }

  /** bpx_bridge_ports_v1: each bridge port bpfproxy serves, with its bridge (the pod source check's way back). */
  private syncBridgePorts(obj: native.BpfObject, ports: ReadonlyMap<string, string>): void {
    const map = obj.map(MAP_NAMES.bridgePorts);
    const want = new Map<number, number>();
    for (const [port, bridge] of ports) {
      const p = native.ifNameToIndex(port);
      const b = native.ifNameToIndex(bridge);
      if (p && b) want.set(p, b);
    }
    const { keys, values, count } = map.entries();
    for (let i = 0; i < count; i++) {
      const port = u32Key.decode(keys.subarray(i * 4, i * 4 + 4));
      if (want.get(port) === u32Key.decode(values.subarray(i * 4, i * 4 + 4))) want.delete(port);
      else if (!want.has(port)) map.delete(u32Key.encode(port));
    }
    for (const [port, bridge] of want) map.update(u32Key.encode(port), u32Key.encode(bridge));
  }

  /**
   * bpx_xdp_devs_v1 lists the XDP-attached devices that take XDP frames now (xdp-devs.ts): XDP sends
   * translated packets only there and passes the rest to tc. Re-read at every refresh, since whether a
   * veth takes them follows its peer's GRO and XDP.
   */
  private syncXdpDevs(obj: native.BpfObject): void {
    const map = obj.map(MAP_NAMES.xdpDevs);
    const want = new Map<number, string>();
    for (const a of this.attached.values()) {
      if (a.hook !== "xdp") continue;
      try {
        const mode = this.xdpNative.has(a.interface) ? "native" : "generic";
        if (takesXdpFrames(a.interface, a.ifindex, mode)) want.set(a.ifindex, a.interface);
      } catch (err) {
        log.warn("cannot tell whether a device takes XDP frames; XDP passes what goes there to tc", {
          interface: a.interface,
          error: (err as Error).message,
        });
      }
    }
    const { keys, count } = map.entries();
    const have = new Set<number>();
    for (let i = 0; i < count; i++) have.add(u32Key.decode(keys.subarray(i * 4, i * 4 + 4)));
    for (const ifindex of have) {
      if (want.has(ifindex)) continue;
      map.delete(u32Key.encode(ifindex));
      log.info("XDP no longer sends to a device; tc delivers there", { ifindex });
    }
    for (const [ifindex, ifname] of want) {
      if (have.has(ifindex)) continue;
      map.update(u32Key.encode(ifindex), u32Key.encode(ifindex));
      log.info("XDP sends translated packets to this device (XDP_TX, redirect)", { interface: ifname });
    }
  }

  /** XDP in front of tc on a device, when asked for; tc stays attached and handles whatever XDP passes. */
  private attachXdp(obj: native.BpfObject, ifname: string): void {
    const mode = this.opts.xdp ?? "off";
    const key = `${ifname}/xdp`;
    if (mode === "off" || this.attached.has(key) || this.xdpFailed.has(ifname)) return;
    // auto: native XDP on NICs only. Virtual devices (veth, bridges) hand over CHECKSUM_PARTIAL packets whose
    // checksum field an XDP rewrite cannot update correctly; tc handles those. native/generic are explicit.
    if (mode === "auto" && !existsSync(`/sys/class/net/${ifname}/device`)) {
      this.xdpFailed.add(ifname);
      log.info("XDP auto: virtual device, tc handles it", { interface: ifname });
      return;
    }
    const ifindex = native.ifNameToIndex(ifname);
    if (ifindex === 0) return;
    const p = obj.program(PROG_XDP);
    const flags = mode === "generic" ? native.constants.XDP_FLAGS_SKB_MODE : native.constants.XDP_FLAGS_DRV_MODE;
    // Another tool's XDP program (a firewall, a DDoS filter) is never replaced: only bpfproxy's own (an earlier
    // run's) is, atomically and only if it is still the one there; otherwise the device keeps its program and
    // tc does bpfproxy's work.
    let other: { id: number; name: string } | undefined;
    try {
      other = foreignXdp(ifindex);
    } catch (err) {
      // The device went away between listing and here: the next refresh looks again.
      log.warn("cannot query the device's XDP program", { interface: ifname, error: (err as Error).message });
      return;
    }
    if (other) {
      this.xdpFailed.add(ifname);
      log.error(
        "XDP not attached: another program is attached to this device and bpfproxy never replaces it; tc handles this device",
        {
          interface: ifname,
          programId: other.id,
          programName: other.name,
        },
      );
      return;
    }
    try {
      const ours = native.xdpQuery(ifindex, 0);
      if (ours) native.xdpAttach(ifindex, p.fd, flags, ours);
      else native.xdpAttach(ifindex, p.fd, flags | native.constants.XDP_FLAGS_UPDATE_IF_NOEXIST);
      if (mode !== "generic") this.xdpNative.add(ifname);
      this.attached.set(key, { interface: ifname, hook: "xdp", program: PROG_XDP, programId: p.info.id, ifindex });
      log.info("attached", {
        interface: ifname,
        hook: "xdp",
        mode: mode === "generic" ? "generic" : "native",
        program: PROG_XDP,
      });
    } catch (err) {
      // The driver has no native XDP: tc alone does the same work.
      this.xdpFailed.add(ifname);
      const level = mode === "auto" ? "info" : "error";
      log[level]("XDP not attached; tc handles this device", {
        interface: ifname,
        mode,
        error: (err as Error).message,
      });
    }
  }

  attachments(): Attachment[] {
    return [...[...this.attached.values()].map(({ ifindex: _ifindex, ...a }) => a), ...this.sockAttached];
  }

  async stop(): Promise<void> {
    // Programs stay attached (tc holds them) and maps stay pinned: traffic keeps flowing (IPVS's SCTP too).
    await this.sctpIpvs?.stop();
    this.sctpIpvs = undefined;
    await this.gc?.stop();
    this.gc = undefined;
    await this.endingFlows; // it reads the maps closed below
    this.sockTerm?.close();
    this.sockTerm = undefined;
    this.obj?.close();
    this.obj = undefined;
    this.reconciler = undefined;
    this.nodePortAddrs = undefined;
    this.sourceRanges = undefined;
    this.sourceRanges6 = undefined;
    this.prefilter = undefined;
    this.prefilter6 = undefined;
  }
}

/** A Linux bridge device (it has /sys/class/net/DEV/bridge). */
export function isBridge(ifname: string): boolean {
  return existsSync(`/sys/class/net/${ifname}/bridge`);
}

/** The bridge a port is enslaved to (/sys/class/net/PORT/brport and its master link), if any. */
export function bridgeOf(port: string): string | undefined {
  try {
    if (!existsSync(`/sys/class/net/${port}/brport`)) return undefined;
    return basename(readlinkSync(`/sys/class/net/${port}/master`));
  } catch {
    return undefined;
  }
}

/** The ports enslaved to a bridge (/sys/class/net/BRIDGE/brif). */
export function bridgePortNames(bridge: string): string[] {
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}

/**
 * A device whose packets carry no Ethernet header (ipip, gre, wireguard, tun: ARPHRD other than ETHER, as
 * /sys/class/net/DEV/type says; `ip netns exec` remounts /sys for the namespace). Unknown counts as Ethernet.
 */
export function isL3Device(ifname: string): boolean {
  try {
    return Number(readFileSync(`/sys/class/net/${ifname}/type`, "utf8").trim()) !== ARPHRD_ETHER;
  } catch {
    return false;
  }
}
const ARPHRD_ETHER = 1;

/** The XDP program attached to a device when it is not bpfproxy's own (names bpx_*, as status finds them). */
export function foreignXdp(ifindex: number): { id: number; name: string } | undefined {
  const id = native.xdpQuery(ifindex, 0);
  if (!id) return undefined;
  const name = native.programInfoById(id)?.name ?? "";
  return name === PROG_XDP ? undefined : { id, name };
}

/** A released id's per-CPU traffic slot (fecount.h) is zeroed, so the id's next owner starts from zero. */
function zeroTrafficCounters(obj: native.BpfObject, kind: "frontend" | "backend", id: number): void {
  const m = obj.map(kind === "frontend" ? MAP_NAMES.frontendStats : MAP_NAMES.backendStats);
  if (id < m.info.maxEntries) m.update(u32Key.encode(id), Buffer.alloc(m.valueSizeAll)); // else not counted (the cap)
  // Least-conn counts too: a reused id starts with no active flows (bpf/lib/leastconn.h).
  if (kind === "backend" && id < LC_MAX_BACKEND_IDS)
    for (const name of [MAP_NAMES.lcActive, MAP_NAMES.lcGone]) obj.map(name).update(u32Key.encode(id), Buffer.alloc(8));
}

/** Names of files under the bpffs directory that bpfproxy pins. */
export function pinPaths(bpffs: string): string[] {
  return Object.values(MAP_NAMES).map((n) => join(bpffs, n));
}
