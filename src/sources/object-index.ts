// Services and EndpointSlices indexed by Service key, with a log of which Service keys changed: what lets a
// sync visit only the Services an event touched (O(change)) instead of every object in the cluster.
// Sources keep one up to date next to their snapshot; the model cache and the daemon each remember the
// version they last caught up with and ask what changed since.
import { LABEL_SERVICE_NAME } from "../k8s/labels.js";
import type { EndpointSlice, Node, Service } from "../k8s/schemas.js";
import { objectKeyOf } from "../k8s/packed.js";

/** Changed keys kept before the oldest are dropped (a reader further behind visits everything). */
const LOG_LIMIT = 100_000;

/** The Service key ("namespace/name") a slice is labelled for; "namespace/" when it has no such label. */
export function sliceServiceKey(s: EndpointSlice): string {
  return [s.metadata.namespace, s.metadata.labels[LABEL_SERVICE_NAME] ?? ""].join("/"); // flat (packed.ts)
}

export class ObjectIndex {
  /** Increases with every change. */
  version = 0;
  private readonly services = new Map<string, Service>();
  /**
   * Service key → its slices (a Service has one or a few: a list, not a Map of its own, which costs ~180 bytes
   * per Service). A slice's key is namespace/name and a Service's slices share its namespace: found by name.
   */
  private readonly slicesByService = new Map<string, EndpointSlice[]>();
  private readonly sliceGroup = new Map<string, string>();
  private readonly nodeMap = new Map<string, Node>();
  private nodeList: Node[] | undefined;
  /** The change log as two parallel lists (versions ascending), not an object an entry: 60k entries at start. */
  private logVersions: number[] = [];
  private logKeys: string[] = [];
  /** changedSince(v) is exact for v ≥ this. */
  private horizon = 0;

  private touch(key: string): void {
    this.logVersions.push(++this.version);
    this.logKeys.push(key);
    if (this.logKeys.length > LOG_LIMIT) {
      const cut = this.logKeys.length >> 1;
      this.horizon = this.logVersions[cut - 1]!;
      this.logVersions = this.logVersions.slice(cut);
      this.logKeys = this.logKeys.slice(cut);
    }
  }

  upsertService(key: string, svc: Service): void {
    if (this.services.get(key) === svc) return;
    this.services.set(key, svc);
    this.touch(key);
  }

  /** True when the key was there. */
  removeService(key: string): boolean {
    if (!this.services.delete(key)) return false;
    this.touch(key);
    return true;
  }

  upsertSlice(key: string, slice: EndpointSlice): void {
    const group = sliceServiceKey(slice);
    const old = this.sliceGroup.get(key);
    if (old !== undefined && old !== group) this.removeSlice(key);
    const l = this.slicesByService.get(group);
    const i = l ? indexByName(l, slice.metadata.name) : -1;
    if (i >= 0 && l![i] === slice) return;
    // A literal holds one slot; [] then push would reserve 17 (152 bytes a Service).
    if (!l) this.slicesByService.set(group, [slice]);
    else if (i >= 0) l[i] = slice;
    else l.push(slice);
    this.sliceGroup.set(key, group);
    this.touch(group);
  }

  /** True when the key was there. */
  removeSlice(key: string): boolean {
    const group = this.sliceGroup.get(key);
    if (group === undefined) return false;
    this.sliceGroup.delete(key);
    const l = this.slicesByService.get(group)!;
    const i = indexByName(l, key.slice(key.indexOf("/") + 1));
    if (i >= 0) l.splice(i, 1);
    if (l.length === 0) this.slicesByService.delete(group);
    this.touch(group);
    return true;
  }

  /** Nodes are few (a source watches its own): they carry no change log; builds compare their facts. */
  upsertNode(key: string, node: Node): void {
    this.nodeMap.set(key, node);
    this.nodeList = undefined;
  }

  /** True when the key was there. */
  removeNode(key: string): boolean {
    if (!this.nodeMap.delete(key)) return false;
    this.nodeList = undefined;
    return true;
  }

  /** Every Service (a new list). */
  allServices(): Service[] {
    return [...this.services.values()];
  }

  /** Every slice (a new list). */
  allSlices(): EndpointSlice[] {
    const out: EndpointSlice[] = [];
    for (const l of this.slicesByService.values()) for (const s of l) out.push(s);
    return out;
  }

  nodes(): Node[] {
    return (this.nodeList ??= [...this.nodeMap.values()]);
  }

  /** Makes the index hold exactly these objects (sources that re-read everything); unchanged objects by identity. */
  replaceAll(services: readonly Service[], slices: readonly EndpointSlice[], nodes: readonly Node[]): void {
    this.nodeMap.clear();
    for (const n of nodes) this.nodeMap.set(n.metadata.name, n);
    this.nodeList = undefined;
    const svcKeys = new Set<string>();
    for (const s of services) {
      const k = objectKeyOf(s.metadata.namespace, s.metadata.name);
      if (svcKeys.has(k)) continue; // the first of two wins, as in the model
      svcKeys.add(k);
      this.upsertService(k, s);
    }
    for (const k of [...this.services.keys()]) if (!svcKeys.has(k)) this.removeService(k);
    const sliceKeys = new Set<string>();
    for (const s of slices) {
      const k = objectKeyOf(s.metadata.namespace, s.metadata.name);
      sliceKeys.add(k);
      this.upsertSlice(k, s);
    }
    for (const k of [...this.sliceGroup.keys()]) if (!sliceKeys.has(k)) this.removeSlice(k);
  }

  service(key: string): Service | undefined {
    return this.services.get(key);
  }

  /** The slices labelled for a Service key, in no particular order. */
  slices(key: string): EndpointSlice[] {
    const l = this.slicesByService.get(key);
    return l ? [...l] : [];
  }

  serviceKeys(): IterableIterator<string> {
    return this.services.keys();
  }

  /** Every Service key some slice is labelled for (slices without the label: "namespace/"). */
  sliceServiceKeys(): IterableIterator<string> {
    return this.slicesByService.keys();
  }

  /**
   * Service keys whose Service or slices changed after `version` (keys of slices without a Service
   * label end in "/"). undefined: that version is older than the log; everything must be visited.
   */
  changedSince(version: number): Set<string> | undefined {
    if (version < this.horizon) return undefined;
    const out = new Set<string>();
    // The log is in version order: walk back from the end to the first entry after `version`.
    for (let i = this.logKeys.length - 1; i >= 0 && this.logVersions[i]! > version; i--) out.add(this.logKeys[i]!);
    return out;
  }
}

function indexByName(l: readonly EndpointSlice[], name: string): number {
  for (let i = 0; i < l.length; i++) if (l[i]!.metadata.name === name) return i;
  return -1;
}
