// The proxy daemon: a source of Kubernetes objects feeds the pure model, whose result the
// data plane is made to hold. Nothing is written before the source has synced once, and
// whatever the kernel holds from an earlier run keeps serving until then. Around the sync
// loop sit kube-proxy's operational surfaces: /healthz and /livez, healthCheckNodePort
// servers and Prometheus metrics.
import { watchLinks, type LinkWatcher } from "../dataplane/links.js";
import { log } from "../log.js";
import {
  buildNodeModel,
  buildNodeModelFromAsync,
  ModelCache,
  resolveNodeContext,
  type ModelConfig,
} from "../model/index.js";
import { ServiceFacts } from "./service-facts.js";
import { SyncRunner } from "./sync-runner.js";
import { ProxierHealth, ServiceHealthServers, healthCheckBindAddresses } from "../health/index.js";
import { MetricsServer } from "../metrics-server.js";
import * as metrics from "../metrics.js";
import type { Dataplane } from "../dataplane/types.js";
import type { Source } from "../sources/types.js";
import type { NodeModel } from "../model/types.js";
import { localNodeAddresses } from "../model/addresses.js";
import { detectLocalCIDRs } from "../model/local.js";
import { DEFAULT_FULL_SYNC_PERIOD_MS } from "../config/defaults.js";
import { ExplainServer } from "../explain/server.js";
import type { ExplainState } from "../explain/model.js";

const BIND_RETRY_MS = 5000;

export interface DaemonOptions {
  nodeName: string;
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  /** Serve Service externalIPs only inside these CIDRs (CVE-2020-8554); undefined: all. */
  externalIPsAllowedCIDRs?: string[];
  /** Backend choice for Services without the lb-algorithm annotation (default "random"). */
  lbAlgorithm?: "random" | "maglev" | "least-conn";
  /** Forwarding of external Cluster-policy flows to other nodes for Services without the forwarding-mode
   * annotation (default "snat"; docs/dsr.md). */
  lbMode?: "snat" | "dsr" | "hybrid";
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  /**
   * How often a sync re-reads the kernel's maps and compares every entry (repairing drift), as kube-proxy's
   * FullSyncPeriod; other periodic syncs apply only what changed. Default 1 hour. A failed sync forces one.
   */
  fullSyncPeriodMs?: number;
  /** How often to look for new matching interfaces besides the netlink notifications (a safety net for a missed one). */
  linkPollMs: number;
  /** "" = no server. */
  healthzBindAddress: string;
  metricsBindAddress: string;
  /** Exit when the health or metrics port cannot be bound; otherwise log and keep retrying (kube-proxy's bindAddressHardFail). */
  bindAddressHardFail?: boolean;
  /** bindAddress when it names a specific IPv4: the node's primary IP (kube-proxy's NodeIP override). */
  primaryNodeIP?: string;
  /** detectLocalMode NodeCIDR: local traffic is from this node's spec.podCIDRs, pushed to the data plane each sync. */
  localCIDRsFromNode?: boolean;
  /** Object served on /configz. */
  config?: unknown;
  /** Reads the data path's counters and map sizes for /metrics (from the pins). */
  datapathCollector?: () => metrics.DatapathSnapshot | undefined;
}

export class Daemon {
  private runner: SyncRunner | undefined;
  private linkTimer: NodeJS.Timeout | undefined;
  private linkWatcher: LinkWatcher | undefined;
  private readonly health: ProxierHealth;
  private serviceHealth: ServiceHealthServers;
  private readonly metricsServer: MetricsServer;
  private lastFullSyncAt = 0;
  /** kube-proxy's needFullSync: set until a sync succeeds, so the first one and the one after a failure are full. */
  private needFullSync = true;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  /** Per-Service change tracking: a sync renders only Services whose objects changed. */
  private readonly modelCache = new ModelCache();
  /** Health checks and per-Service metrics, kept per Service like the model. */
  private readonly facts = new ServiceFacts();
  /** kubeproxy_network_programming_duration_seconds from the slices' last-change-trigger-time. */
  private readonly programming = new metrics.ProgrammingLatencyTracker();
  /** IPv6 objects skipped at the last sync, by kind: logged when they first appear. */
  /** externalIPs refused by externalIPsAllowedCIDRs at the last sync ("ns/name ip"), to log each once. */
  private deniedSeen = new Set<string>();
  private invalidAlgorithmSeen = new Set<string>();
  private invalidForwardingModeSeen = new Set<string>();
  private invalidWeightsSeen = new Set<string>();
  private readonly onChange = (kind?: "service" | "endpoints") => {
    this.health.queued();
    if (kind) metrics.recordQueued(kind);
    this.runner?.request();
  };
  /** The podCIDRs last pushed to the data plane (NodeCIDR mode); undefined before the first push. */
  private localCIDRsKey: string | undefined;
  lastModel: NodeModel | undefined;
  /** `bpfproxy explain`: the last sync's model and node facts, served on a local unix socket. */
  private explainState: ExplainState | undefined;
  private readonly explainServer = new ExplainServer(() => this.explainState);
  syncCount = 0;
  /** Syncs that re-read the kernel and compared everything. */
  fullSyncs = 0;

  constructor(
    private readonly source: Source,
    private readonly dataplane: Dataplane,
    private readonly opts: DaemonOptions,
  ) {
    // kube-proxy: unhealthy when a queued change is not programmed within 2 × syncPeriod.
    this.health = new ProxierHealth({ healthTimeoutMs: 2 * opts.syncPeriodMs, bindAddress: opts.healthzBindAddress });
    this.serviceHealth = new ServiceHealthServers({ proxierHealth: this.health, nodeName: opts.nodeName });
    this.metricsServer = new MetricsServer({
      bindAddress: opts.metricsBindAddress,
      proxyMode: () => dataplane.mode,
      config: () => opts.config,
    });
  }

  async start(): Promise<void> {
    await this.listen("healthz", () => this.health.start());
    await this.listen("metrics", () => this.metricsServer.start());
    // A diagnostic: never fatal, and not retried (the socket is ours alone).
    await this.explainServer
      .start()
      .catch((err) => log.warn("explain socket not served", { error: (err as Error).message }));
    metrics.setDatapathCollector(this.opts.datapathCollector);
    await this.dataplane.start();
    await this.source.start();
    // Healthy while starting up, as kube-proxy: a slow first list must not fail the liveness probe and
    // restart-loop the pod. Once the objects are in, the first sync is queued work like any change.
    await this.source.synced();
    const hcAddresses = this.healthCheckAddresses();
    if (hcAddresses)
      this.serviceHealth = new ServiceHealthServers({
        proxierHealth: this.health,
        nodeName: this.opts.nodeName,
        bindAddresses: hcAddresses,
      });
    this.health.queued();
    this.runner = new SyncRunner(() => this.syncOnce(), {
      minIntervalMs: this.opts.minSyncPeriodMs,
      maxIntervalMs: this.opts.syncPeriodMs,
    });
    this.source.on("change", this.onChange);
    this.runner.request();
    let addresses = localNodeAddresses().join(" ");
    const refresh = () => {
      this.dataplane
        .refreshAttachments()
        .catch((err) => log.warn("interface refresh failed", { error: (err as Error).message }));
      // NodePorts are served on the node's addresses: one added or removed is a change like any object's
      // (kube-proxy's nodePortAddresses follow them too), not something to leave to the next syncPeriod.
      const now = localNodeAddresses().join(" ");
      if (now !== addresses) {
        log.info("node addresses changed", { addresses: now });
        addresses = now;
        this.runner?.request();
      }
    };
    // Netlink notifications attach new pod interfaces and follow address changes at once; the poll only
    // repairs a missed one.
    this.linkWatcher = watchLinks(refresh, ["ip", "-o", "monitor", "link", "address"]);
    this.linkTimer = setInterval(refresh, this.opts.linkPollMs);
  }

  /** Starts a server; a port in use is fatal only with bindAddressHardFail, else retried in the background. */
  private async listen(what: string, start: () => Promise<unknown>): Promise<void> {
    try {
      await start();
    } catch (err) {
      if (this.opts.bindAddressHardFail) throw err;
      log.error(`${what} server not listening; retrying`, { error: (err as Error).message, retryInMs: BIND_RETRY_MS });
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer);
        void this.listen(what, start);
      }, BIND_RETRY_MS);
      this.retryTimers.add(timer);
    }
  }

  /**
   * kube-proxy serves healthCheckNodePorts on the node IPs nodePortAddresses selects in each family it names
   * (decided once at start), on the wildcard otherwise. undefined: every address of both families.
   */
  private healthCheckAddresses(): string[] | undefined {
    const wanted = this.opts.nodePortAddresses;
    const input = { nodes: this.source.index().nodes(), nodeName: this.opts.nodeName, config: this.modelConfig() };
    const ips = healthCheckBindAddresses(wanted, resolveNodeContext(input));
    if (ips === undefined) return undefined;
    if (ips.length === 0) {
      log.warn("nodePortAddresses selects no address of this node; health check ports listen on every address", {
        nodePortAddresses: wanted,
      });
      return undefined;
    }
    log.info("health check ports listen on the nodePortAddresses", { addresses: ips });
    return ips;
  }

  private modelConfig(): Partial<ModelConfig> {
    return {
      nodeName: this.opts.nodeName,
      clusterCIDRs: this.opts.clusterCIDRs,
      nodePortAddresses: this.opts.nodePortAddresses,
      externalIPsAllowedCIDRs: this.opts.externalIPsAllowedCIDRs,
      defaultAlgorithm: this.opts.lbAlgorithm,
      defaultForwardingMode: this.opts.lbMode,
      ...(this.opts.primaryNodeIP ? { primaryNodeIP: this.opts.primaryNodeIP } : {}),
      // kube-proxy serves NodePorts on every local address of the node (then filtered by nodePortAddresses).
      nodeIPs: localNodeAddresses(),
    };
  }

  model(): NodeModel {
    return buildNodeModel({ ...this.source.snapshot(), nodeName: this.opts.nodeName, config: this.modelConfig() });
  }

  private async syncOnce(): Promise<void> {
    const started = Date.now();
    // A full sync re-reads the kernel first, so drift (entries changed behind our back) is repaired. As in
    // kube-proxy it runs hourly (fullSyncPeriodMs) and after any failure; the syncPeriod tick in between
    // applies only what changed, which is nothing when nothing changed.
    const full =
      this.needFullSync || started - this.lastFullSyncAt >= (this.opts.fullSyncPeriodMs ?? DEFAULT_FULL_SYNC_PERIOD_MS);
    this.needFullSync = true; // cleared at the end: any failure below makes the next sync full
    // Only the Services the index logged as changed are visited (O(change)); see ModelCache.
    const index = this.source.index();
    const input = { nodes: index.nodes(), nodeName: this.opts.nodeName, config: this.modelConfig() };
    const model = await buildNodeModelFromAsync(index, this.modelCache, input);
    const nodeContext = resolveNodeContext(input);
    const changedSlices = this.facts.update(index, model, nodeContext, this.opts.externalIPsAllowedCIDRs);
    this.programming.collect(changedSlices);
    const thisNode = input.nodes.find((n) => n.metadata.name === this.opts.nodeName);
    if (this.opts.localCIDRsFromNode) this.pushNodeCIDRs(thisNode);
    let res;
    try {
      res = await this.dataplane.sync(model, { full });
    } catch (err) {
      metrics.recordSyncError();
      throw err;
    }
    for (const s of res.skipped) log.v(2, "frontend not programmed", s);
    const notProgrammed = res.notProgrammed ?? [];
    metrics.recordNotProgrammed(notProgrammed);
    if (notProgrammed.length) {
      // Everything that fit is programmed and the sync counts as done (no restart loop); these are
      // kept as they were and tried again on every sync, so they appear once there is room.
      const maps = [...new Set(notProgrammed.flatMap((n) => n.maps))];
      const names = notProgrammed.map((n) => n.service);
      log.error(`BPF map full (${maps.join(", ")}): ${names.length} Service(s) not programmed; raise --map-sizes`, {
        maps,
        services: names.slice(0, 50).join(" "),
        more: Math.max(0, names.length - 50),
      });
    }
    this.health.updated();
    const finished = Date.now();
    metrics.recordSync({ durationSeconds: (finished - started) / 1000, full, nowMs: finished });
    this.programming.synced(finished);
    this.noteDeniedExternalIPs(this.facts.denied());
    this.noteInvalidAlgorithms(this.facts.invalidAlgorithms());
    this.noteInvalidForwardingModes(this.facts.invalidForwardingModes());
    this.noteInvalidWeights(this.facts.invalidBackendWeights());
    this.noteIPv6({ Service: this.facts.ipv6Services, EndpointSlice: this.facts.ipv6Slices });
    if (full) this.lastFullSyncAt = started;
    this.lastModel = model;
    this.explainState = {
      model,
      ctx: nodeContext,
      service: (key) => index.service(key),
      slices: (key) => index.slices(key),
      clusterCIDRs: this.opts.clusterCIDRs,
      notProgrammed,
      deniedExternalIPs: this.facts.denied(),
    };
    this.syncCount++;
    this.fullSyncs += full ? 1 : 0;

    this.health.syncNode(thisNode);
    const checks = this.facts.healthChecks();
    await this.serviceHealth.sync(
      checks.map((c) => ({ service: c.service, port: c.nodePort, localEndpoints: c.localEndpoints })),
    );
    metrics.setNoLocalEndpoints("external", checks.filter((c) => c.localEndpoints === 0).length);
    // internalTrafficPolicy: Local services whose ClusterIP has no endpoint on this node.
    metrics.setNoLocalEndpoints("internal", this.facts.internalLocalEmpty);
    log.v(1, "synced", {
      frontends: model.delta?.frontendCount ?? model.frontends.length,
      servicesRendered: this.modelCache.rendered,
      upserts: res.upserts,
      deletes: res.deletes,
      full,
      ms: Date.now() - started,
    });
    this.needFullSync = false;
  }

  /** detectLocalMode NodeCIDR: the Node's IPv4 podCIDRs become the data plane's local CIDRs when they change. */
  private pushNodeCIDRs(node: { spec: { podCIDRs: string[] } } | undefined): void {
    // The data planes serve IPv4 only so far: a dual-stack node's IPv6 podCIDR has no traffic here to tell apart.
    const cidrs = detectLocalCIDRs("NodeCIDR", [], node).ipv4;
    const key = cidrs.join(",");
    if (key === this.localCIDRsKey) return;
    const dp = this.dataplane as Dataplane & { setLocalCIDRs?: (cidrs: string[]) => void };
    if (!dp.setLocalCIDRs) throw new Error(`detectLocalMode NodeCIDR needs the bpf data plane, not ${dp.mode}`);
    dp.setLocalCIDRs(cidrs);
    if (!cidrs.length)
      log.warn(
        "detectLocalMode NodeCIDR: this node has no IPv4 podCIDR yet; Service traffic is masqueraded until it has",
        { node: this.opts.nodeName },
      );
    else log.info("detectLocalMode NodeCIDR: local traffic is from the node's podCIDRs", { podCIDRs: cidrs });
    this.localCIDRsKey = key;
  }

  /** externalIPs outside the allow-list: logged once per Service and address while they last, and a gauge. */
  private noteDeniedExternalIPs(denied: string[]): void {
    metrics.externalIPsDenied.set(denied.length);
    for (const d of denied) {
      if (this.deniedSeen.has(d)) continue;
      const [service, ip] = d.split(" ");
      log.warn("externalIP not served: outside bpfproxy.externalIPsAllowedCIDRs", { service, externalIP: ip });
    }
    this.deniedSeen = new Set(denied);
  }

  /** bpfproxy.io/lb-algorithm values bpfproxy does not know: logged once per Service and value while they last, and a
   * gauge. The Service is served with the node's default all the same. */
  private noteInvalidAlgorithms(bad: Map<string, string>): void {
    metrics.lbAlgorithmInvalid.set(bad.size);
    const now = new Set<string>();
    for (const [service, value] of bad) {
      const seen = `${service} ${value}`;
      now.add(seen);
      if (this.invalidAlgorithmSeen.has(seen)) continue;
      log.warn(
        `invalid bpfproxy.io/lb-algorithm ${JSON.stringify(value)}: expected random, maglev or least-conn; serving the Service with the default`,
        { service, value, default: this.opts.lbAlgorithm ?? "random" },
      );
    }
    this.invalidAlgorithmSeen = now;
  }

  /** bpfproxy.io/backend-weights values that do not parse: logged once per Service and value while they last, and
   * a gauge. Every endpoint of the Service weighs 1 meanwhile (no other Service is affected). */
  private noteInvalidWeights(bad: Map<string, string>): void {
    metrics.backendWeightsInvalid.set(bad.size);
    const now = new Set<string>();
    for (const [service, value] of bad) {
      const seen = `${service} ${value}`;
      now.add(seen);
      if (this.invalidWeightsSeen.has(seen)) continue;
      log.warn(`invalid bpfproxy.io/backend-weights ${value}; serving the Service with weight 1 for every endpoint`, {
        service,
      });
    }
    this.invalidWeightsSeen = now;
  }

  /** bpfproxy.io/forwarding-mode values bpfproxy does not know: logged once per Service and value while they last,
   * and a gauge. The Service is forwarded with the node's lbMode. */
  private noteInvalidForwardingModes(bad: Map<string, string>): void {
    metrics.forwardingModeInvalid.set(bad.size);
    const now = new Set<string>();
    for (const [service, value] of bad) {
      const seen = `${service} ${value}`;
      now.add(seen);
      if (this.invalidForwardingModeSeen.has(seen)) continue;
      log.warn(
        `invalid bpfproxy.io/forwarding-mode ${JSON.stringify(value)}: expected snat, dsr or hybrid; forwarding the Service with the node's lbMode`,
        { service, value, default: this.opts.lbMode ?? "snat" },
      );
    }
    this.invalidForwardingModeSeen = now;
  }

  /**
   * Objects with IPv6 parts, counted (bpfproxy_ipv6_skipped{kind="Service"|"EndpointSlice"}, names kept). What
   * a data plane does not serve of them it says itself: the BPF data plane per Service and frontend kind.
   */
  private noteIPv6(now: { Service: number; EndpointSlice: number }): void {
    for (const kind of ["Service", "EndpointSlice"] as const) metrics.ipv6Skipped.set({ kind }, now[kind]);
  }

  async stop(): Promise<void> {
    this.runner?.stop();
    if (this.linkTimer) clearInterval(this.linkTimer);
    this.linkWatcher?.stop();
    for (const t of this.retryTimers) clearTimeout(t);
    this.source.off("change", this.onChange);
    metrics.setDatapathCollector(undefined);
    await this.source.stop();
    await this.dataplane.stop();
    await this.serviceHealth.close();
    await this.metricsServer.stop();
    await this.explainServer.stop();
    await this.health.stop();
  }
}
