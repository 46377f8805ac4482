// The proxy daemon: a source of Kubernetes objects feeds the pure model, whose result the
// data plane is made to hold. Nothing is written before the source has synced once, and
// whatever the kernel holds from an earlier run keeps serving until then.
import { log } from "../log.js";
import { buildNodeModel } from "../model/index.js";
import { SyncRunner } from "./sync-runner.js";
import type { Dataplane } from "../dataplane/types.js";
import type { Source } from "../sources/types.js";
import type { NodeModel } from "../model/types.js";

export interface DaemonOptions {
  nodeName: string;
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  /** How often to look for new matching interfaces. */
  linkPollMs: number;
}

export class Daemon {
  private runner: SyncRunner | undefined;
  private linkTimer: NodeJS.Timeout | undefined;
  private readonly onChange = () => this.runner?.request();
  lastModel: NodeModel | undefined;
  lastSyncAt = 0;
  syncCount = 0;

  constructor(
    private readonly source: Source,
    private readonly dataplane: Dataplane,
    private readonly opts: DaemonOptions,
  ) {}

  async start(): Promise<void> {
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

  model(): NodeModel {
    const snap = this.source.snapshot();
    return buildNodeModel({
      ...snap,
      nodeName: this.opts.nodeName,
      config: { nodeName: this.opts.nodeName, clusterCIDRs: this.opts.clusterCIDRs, nodePortAddresses: this.opts.nodePortAddresses },
    });
  }

  private async syncOnce(): Promise<void> {
    const started = Date.now();
    const model = this.model();
    const res = await this.dataplane.sync(model);
    for (const s of res.skipped) log.v(2, "frontend not programmed", s);
    this.lastModel = model;
    this.lastSyncAt = Date.now();
    this.syncCount++;
    log.v(1, "synced", { frontends: model.frontends.length, upserts: res.upserts, deletes: res.deletes, ms: Date.now() - started });
  }

  async stop(): Promise<void> {
    this.runner?.stop();
    if (this.linkTimer) clearInterval(this.linkTimer);
    this.source.off("change", this.onChange);
    await this.source.stop();
    await this.dataplane.stop();
  }
}
