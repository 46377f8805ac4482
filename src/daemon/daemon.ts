// The proxy daemon: a source of Kubernetes objects feeds the pure model, whose result the
// data plane is made to hold. Nothing is written before the source has synced once, and
// whatever the kernel holds from an earlier run keeps serving until then. Around the sync
// loop sit kube-proxy's operational surfaces: /healthz and /livez, healthCheckNodePort
// servers and Prometheus metrics.
import { log } from "../log.js";
import { buildHealthChecks, buildNodeModel, ModelCache, type ModelConfig } from "../model/index.js";
import { SyncRunner } from "./sync-runner.js";
import { ProxierHealth, ServiceHealthServers } from "../health/index.js";
import { MetricsServer } from "../metrics-server.js";
import * as metrics from "../metrics.js";
import type { Dataplane } from "../dataplane/types.js";
import type { Source } from "../sources/types.js";
import type { NodeModel } from "../model/types.js";
import { localIPv4Addresses } from "../model/addresses.js";

const BIND_RETRY_MS = 5000;

export interface DaemonOptions {
  nodeName: string;
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  /** How often to look for new matching interfaces. */
  linkPollMs: number;
  /** "" = no server. */
  healthzBindAddress: string;
  metricsBindAddress: string;
  /** Exit when the health or metrics port cannot be bound; otherwise log and keep retrying (kube-proxy's bindAddressHardFail). */
  bindAddressHardFail?: boolean;
  /** Object served on /configz. */
  config?: unknown;
  /** Reads the data path's counters and map sizes for /metrics (from the pins). */
  datapathCollector?: () => metrics.DatapathSnapshot | undefined;
}

export class Daemon {
  private runner: SyncRunner | undefined;
  private linkTimer: NodeJS.Timeout | undefined;
  private readonly health: ProxierHealth;
  private readonly serviceHealth: ServiceHealthServers;
  private readonly metricsServer: MetricsServer;
  private lastFullSyncAt = 0;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  /** Per-Service change tracking: a sync renders only Services whose objects changed. */
  private readonly modelCache = new ModelCache();
  private readonly onChange = (kind?: "service" | "endpoints") => {
    this.health.queued();
    if (kind) metrics.recordQueued(kind);
    this.runner?.request();
  };
  lastModel: NodeModel | undefined;
  syncCount = 0;

  constructor(
    private readonly source: Source,
    private readonly dataplane: Dataplane,
    private readonly opts: DaemonOptions,
  ) {
    // kube-proxy: unhealthy when a queued change is not programmed within 2 × syncPeriod.
    this.health = new ProxierHealth({ healthTimeoutMs: 2 * opts.syncPeriodMs, bindAddress: opts.healthzBindAddress });
    this.serviceHealth = new ServiceHealthServers({ proxierHealth: this.health, nodeName: opts.nodeName });
    this.metricsServer = new MetricsServer({ bindAddress: opts.metricsBindAddress, proxyMode: () => dataplane.mode, config: () => opts.config });
  }

  async start(): Promise<void> {
    // The first sync counts as queued work: a daemon that never manages it turns unhealthy.
    this.health.queued();
    await this.listen("healthz", () => this.health.start());
    await this.listen("metrics", () => this.metricsServer.start());
    metrics.setDatapathCollector(this.opts.datapathCollector);
    await this.dataplane.start();
    await this.source.start();
    await this.source.synced();
    this.runner = new SyncRunner(() => this.syncOnce(), { minIntervalMs: this.opts.minSyncPeriodMs, maxIntervalMs: this.opts.syncPeriodMs });
    this.source.on("change", this.onChange);
    this.runner.request();
    this.linkTimer = setInterval(() => {
      this.dataplane.refreshAttachments().catch((err) => log.warn("interface refresh failed", { error: (err as Error).message }));
    }, this.opts.linkPollMs);
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

  private modelInput() {
    const snap = this.source.snapshot();
    const config: Partial<ModelConfig> = {
      nodeName: this.opts.nodeName,
      clusterCIDRs: this.opts.clusterCIDRs,
      nodePortAddresses: this.opts.nodePortAddresses,
      // kube-proxy serves NodePorts on every local address of the node (then filtered by nodePortAddresses).
      nodeIPs: localIPv4Addresses(),
    };
    return { ...snap, nodeName: this.opts.nodeName, config };
  }

  model(): NodeModel {
    return buildNodeModel(this.modelInput());
  }

  private async syncOnce(): Promise<void> {
    const started = Date.now();
    // A periodic full sync re-reads the kernel first, so drift (entries changed behind our back) is repaired.
    const full = this.syncCount === 0 || started - this.lastFullSyncAt >= this.opts.syncPeriodMs;
    const input = this.modelInput();
    const model = buildNodeModel({ ...input, cache: this.modelCache });
    let res;
    try {
      res = await this.dataplane.sync(model, { full });
    } catch (err) {
      metrics.recordSyncError();
      throw err;
    }
    for (const s of res.skipped) log.v(2, "frontend not programmed", s);
    this.health.updated();
    metrics.recordSync({ durationSeconds: (Date.now() - started) / 1000, full });
    if (full) this.lastFullSyncAt = started;
    this.lastModel = model;
    this.syncCount++;

    this.health.syncNode(input.nodes.find((n) => n.metadata.name === this.opts.nodeName) as never);
    const checks = buildHealthChecks(input);
    await this.serviceHealth.sync(checks.map((c) => ({ service: c.service, port: c.nodePort, localEndpoints: c.localEndpoints })));
    metrics.setNoLocalEndpoints("external", checks.filter((c) => c.localEndpoints === 0).length);
    // internalTrafficPolicy: Local services whose ClusterIP has no endpoint on this node.
    const localInternal = new Set(input.services.filter((s) => s.spec.internalTrafficPolicy === "Local").map((s) => `${s.metadata.namespace}/${s.metadata.name}`));
    metrics.setNoLocalEndpoints("internal", new Set(model.frontends
      .filter((f) => f.type === "ClusterIP" && f.backends.length === 0 && localInternal.has(f.service))
      .map((f) => f.service)).size);
    log.v(1, "synced", {
      frontends: model.frontends.length, servicesRendered: this.modelCache.rendered,
      upserts: res.upserts, deletes: res.deletes, full, ms: Date.now() - started,
    });
  }

  async stop(): Promise<void> {
    this.runner?.stop();
    if (this.linkTimer) clearInterval(this.linkTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.source.off("change", this.onChange);
    metrics.setDatapathCollector(undefined);
    await this.source.stop();
    await this.dataplane.stop();
    await this.serviceHealth.close();
    await this.metricsServer.stop();
    await this.health.stop();
  }
}
