// The BPF data plane: loads the precompiled object with its maps pinned under the bpffs
// directory (reusing pins left by an earlier run, so live state survives restarts),
// attaches the tc programs, and keeps the load-balancer maps equal to the model.
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import picomatch from "picomatch";
import * as native from "../native/index.js";
import { log } from "../log.js";
import { DEFAULT_MAP_SIZES, MAP_NAMES, MAP_SIZE_TARGETS, config as configCodec, u32Key, type MapSizes } from "./abi.js";
import { PinMigration } from "./migrate.js";
import { LbReconciler } from "./reconcile.js";
import { attachSocketLb } from "./sock.js";
import { lostPairs, servingPairs, staleUdpFlowKeys } from "./udp-flows.js";
import { packagePath } from "../paths.js";
import type { NodeModel } from "../model/types.js";
import type { Attachment, Dataplane, DataplaneOptions, SyncResult } from "./types.js";

export const OBJECT_PATH = packagePath("bpf/bpfproxy.o");

/** Our tc filters sit at this handle/priority on every interface we manage. */
export const TC_HANDLE = 0xb9f;
export const TC_PRIORITY = 1;
export const PROG_FROM_POD = "bpx_from_pod";
export const PROG_FROM_DEVICE = "bpx_from_device";

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
  mkdirSync(dir, { recursive: true });
  if (!native.isBpffs(dir)) {
    native.mountBpffs(dir);
    log.info("mounted bpffs", { path: dir });
  }
}

export interface BpfDataplaneOptions extends DataplaneOptions {
  nodeName: string;
  objectPath?: string;
  /** Map sizes (entries); defaults DEFAULT_MAP_SIZES. A change migrates the pinned maps at start. */
  mapSizes?: MapSizes;
}

export class BpfDataplane implements Dataplane {
  readonly mode = "bpf" as const;
  private obj: native.BpfObject | undefined;
  private reconciler: LbReconciler | undefined;
  private readonly attached = new Map<string, Attachment & { ifindex: number }>();
  private sockAttached: Attachment[] = [];
  private serving: Set<string> | undefined;
  private readonly podGlobs: RegExp[];

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
      migration = PinMigration.prepare(obj, this.opts.bpffs, new Map(obj.maps().filter((m) => pinned.has(m.name)).map((m) => [m.name, m])));
      obj.load();
    } catch (err) {
      migration?.abandon();
      obj.close();
      throw err;
    }
    this.obj = obj;
    if (migration) {
      const report = await migration.copy((name) => obj.map(name));
      log.info("migrating pinned maps side by side", { ...report });
    }
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
      maglev: obj.map(MAP_NAMES.maglev),
      affinityMatch: obj.map(MAP_NAMES.affinityMatch),
    });
    // Restore, never flush: whatever an earlier run programmed keeps serving until the first sync.
    await this.reconciler.restore();
    log.info("bpf data plane loaded", {
      bpffs: this.opts.bpffs,
      services: this.reconciler.contents.services.size,
      backends: this.reconciler.contents.backends.size,
    });
    if (this.opts.cgroupPath) {
      this.sockAttached = attachSocketLb(this.opts.bpffs, this.opts.cgroupPath);
      log.info("socket load balancing attached", { cgroup: this.opts.cgroupPath, hooks: this.sockAttached.length });
    }
    await this.refreshAttachments();
    if (migration) {
      // The new programs now serve every interface we manage: top up flows, drop the old pins.
      const topped = await migration.finish((name) => obj.map(name));
      log.info("pinned maps migrated; old pins removed", { flowsCopiedAfterSwap: topped });
    }
  }

  async sync(model: NodeModel, opts: { full?: boolean } = {}): Promise<SyncResult> {
    if (!this.reconciler) throw new Error("data plane not started");
    if (opts.full) await this.reconciler.restore();
    const result = await this.reconciler.apply(model, { full: opts.full });
    await this.flushStaleUdpFlows();
    return result;
  }

  /** UDP flows whose backend stopped serving their frontend are forgotten: the next datagram chooses again. */
  private async flushStaleUdpFlows(): Promise<void> {
    const serving = servingPairs(this.reconciler!.contents.services);
    if (lostPairs(this.serving, serving)) {
      const ct = this.obj!.map(MAP_NAMES.conntrack);
      const { keys, values, count } = await ct.entriesAsync();
      const stale = staleUdpFlowKeys(keys, values, count, serving);
      if (stale.length) {
        await ct.deleteBatchAsync(Buffer.concat(stale), stale.length);
        log.info("removed UDP flows of backends that stopped serving", { entries: stale.length });
      }
    }
    this.serving = serving;
  }

  /** Entries of the maps this daemon writes, from its mirror (no map walk). */
  mapCounts(): Record<string, number> {
    const c = this.reconciler?.contents;
    if (!c) return {};
    return { [MAP_NAMES.services]: c.services.size, [MAP_NAMES.backends]: c.backends.size, [MAP_NAMES.revNat]: c.revNat.size, [MAP_NAMES.svcMeta]: c.svcMeta.size };
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
    return [...[...this.attached.values()].map(({ ifindex: _ifindex, ...a }) => a), ...this.sockAttached];
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
