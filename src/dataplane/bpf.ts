// The BPF data plane: loads the precompiled object with its maps pinned under the bpffs
// directory (reusing pins left by an earlier run, so live state survives restarts),
// attaches the tc programs, and keeps the load-balancer maps equal to the model.
import { chmodSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as native from "../native/index.js";
import { log } from "../log.js";
import { MAP_NAMES, config as configCodec, u32Key } from "./abi.js";
import { LbReconciler } from "./reconcile.js";
import { packagePath } from "../paths.js";
import type { NodeModel } from "../model/types.js";
import type { Attachment, Dataplane, DataplaneOptions, SyncResult } from "./types.js";

export const OBJECT_PATH = packagePath("bpf/bpfproxy.o");

/** Our tc filters sit at this handle/priority on every interface we manage. */
export const TC_HANDLE = 0xb9f;
export const TC_PRIORITY = 1;
export const PROG_FROM_POD = "bpx_from_pod";
export const PROG_FROM_DEVICE = "bpx_from_device";

export function globToRegExp(glob: string): RegExp {
  const re = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${re}$`);
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

export interface BpfDataplaneOptions extends DataplaneOptions {
  nodeName: string;
  objectPath?: string;
}

export class BpfDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  private obj: native.BpfObject | undefined;
  private reconciler: LbReconciler | undefined;
  private readonly attached = new Map<string, Attachment & { ifindex: number }>();
  private readonly podGlobs: RegExp[];

  constructor(private readonly opts: BpfDataplaneOptions) {
    this.podGlobs = opts.podInterfaces.map(globToRegExp);
  }

  async start(): Promise<void> {
    ensureBpffs(this.opts.bpffs);
    const obj = new native.BpfObject(this.opts.objectPath ?? OBJECT_PATH, { pinRoot: this.opts.bpffs });
    try {
      obj.load();
    } catch (err) {
      obj.close();
      throw err;
    }
    this.obj = obj;
    obj.map(MAP_NAMES.config).update(u32Key.encode(0), configCodec.encode({
      flags: 0,
      clusterCidrs: this.opts.clusterCIDRs,
      nodeName: this.opts.nodeName,
    }));
    this.reconciler = new LbReconciler({
      services: obj.map(MAP_NAMES.services),
      backends: obj.map(MAP_NAMES.backends),
      revNat: obj.map(MAP_NAMES.revNat),
      svcMeta: obj.map(MAP_NAMES.svcMeta),
    });
    // Restore, never flush: whatever an earlier run programmed keeps serving until the first sync.
    this.reconciler.restore();
    log.info("bpf data plane loaded", {
      bpffs: this.opts.bpffs,
      services: this.reconciler.contents.services.size,
      backends: this.reconciler.contents.backends.size,
    });
    await this.refreshAttachments();
  }

  async sync(model: NodeModel, opts: { full?: boolean } = {}): Promise<SyncResult> {
    if (!this.reconciler) throw new Error("data plane not started");
    if (opts.full) this.reconciler.restore();
    return this.reconciler.apply(model);
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
    for (const name of this.attached.keys()) {
      if (!present.has(name) || native.ifNameToIndex(name) !== this.attached.get(name)!.ifindex) {
        this.attached.delete(name); // gone (its filters went with it) or recreated
      }
    }
    for (const ifname of present) {
      const prog = this.wanted(ifname);
      if (!prog || this.attached.has(ifname)) continue;
      const ifindex = native.ifNameToIndex(ifname);
      if (ifindex === 0) continue;
      try {
        const p = obj.program(prog);
        native.tcAttach(ifindex, "ingress", p.fd, { handle: TC_HANDLE, priority: TC_PRIORITY, replace: true });
        this.attached.set(ifname, { interface: ifname, hook: "tc-ingress", program: prog, programId: p.info.id, ifindex });
        log.info("attached", { interface: ifname, program: prog });
      } catch (err) {
        // An interface can vanish between listing and attaching; the next refresh retries.
        log.warn("attach failed", { interface: ifname, program: prog, error: (err as Error).message });
      }
    }
  }

  attachments(): Attachment[] {
    return [...this.attached.values()].map(({ ifindex: _ifindex, ...a }) => a);
  }

  async stop(): Promise<void> {
    // Programs stay attached (tc holds them) and maps stay pinned: traffic keeps flowing.
    this.obj?.close();
    this.obj = undefined;
    this.reconciler = undefined;
  }
}

/** Names of files under the bpffs directory that bpfproxy pins. */
export function pinPaths(bpffs: string): string[] {
  return Object.values(MAP_NAMES).map((n) => join(bpffs, n));
}
