// The Kubernetes source: one list/watch reflector (reflector.ts) each for Services, EndpointSlices and this
// node's Node object. Lists are paged (limit/continue) and read as raw JSON, so every object reaches the zod
// schemas exactly as the API server sent it (the generated typed clients drop fields they do not know). The
// reflector relists on 410 Gone, replaces silent watches, and retries every other failure with jittered
// backoff; while the API server is away nothing changes here, so the data plane keeps its last state.
//
// Like kube-proxy, Services and EndpointSlices are asked for with a label selector, so the API server
// never sends what another proxy or a headless Service owns; and every object is slimmed (managedFields,
// the last-applied annotation, status the model does not read) before it is validated and kept.
import { EventEmitter } from "node:events";
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { loadKubeConfigClass } from "./client-node.js";
import { log } from "../log.js";
import { reportResult, validateObject, type KnownKind } from "../k8s/validate.js";
import { objectKeyOf } from "../k8s/packed.js";
import type { EndpointSlice, Node, Service } from "../k8s/schemas.js";
import type { ObjectSnapshot, Source } from "./types.js";
import { ObjectIndex } from "./object-index.js";
import { Reflector, type BackoffOptions } from "./reflector.js";

/** kube-proxy's selector for Services and EndpointSlices (objects of other proxies and headless Services' slices are not ours). */
export const KUBE_PROXY_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/**
 * The object without what the model never reads: metadata.managedFields, the kubectl last-applied
 * annotation, and status other than a Service's load-balancer ingress and a Node's addresses.
 * Returns a new object; the input is not changed.
 */
export function slimObject(kind: string, obj: KubernetesObject): KubernetesObject {
  const o = obj as KubernetesObject & { status?: Record<string, unknown> };
  const { managedFields: _mf, annotations, ...meta } = o.metadata ?? {};
  const out: Record<string, unknown> = { ...o, metadata: { ...meta } };
  if (annotations) {
    const { [LAST_APPLIED]: _la, ...rest } = annotations;
    (out.metadata as Record<string, unknown>).annotations = rest;
  }
  if (o.status !== undefined) {
    if (kind === "Service")
      out.status = o.status.loadBalancer !== undefined ? { loadBalancer: o.status.loadBalancer } : {};
    else if (kind === "Node") out.status = o.status.addresses !== undefined ? { addresses: o.status.addresses } : {};
    else delete out.status;
  }
  return out;
}

export interface KubernetesSourceOptions {
  /** Path of a kubeconfig; in-cluster config when undefined. */
  kubeconfig?: string;
  nodeName: string;
  /** Page size of list calls. */
  pageSize?: number;
  /** Retry delays after a list/watch failure (default client-go's: 800 ms doubling to 30 s, jitter 1.0). */
  backoff?: BackoffOptions;
  /** A watch without an event or bookmark for this long is replaced (default 120 s). */
  idleTimeoutMs?: number;
  /** Base of the server-side watch timeout, asked for × (1 + rand) (default 300 s, client-go's). */
  minWatchTimeoutSeconds?: number;
  /** Each list page must answer within this (default 60 s). */
  listTimeoutMs?: number;
}

interface Resource {
  kind: KnownKind;
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
}

export class KubernetesSource extends EventEmitter implements Source {
  private kc!: KubeConfig;
  private readonly reflectors: { res: Resource; r: Reflector }[] = [];
  private snap: ObjectSnapshot | undefined = { services: [], endpointSlices: [], nodes: [] };
  private readonly idx = new ObjectIndex();
  private syncedResolve!: () => void;
  private readonly syncedPromise = new Promise<void>((r) => (this.syncedResolve = r));
  private initialSynced = false;

  constructor(private readonly opts: KubernetesSourceOptions) {
    super();
  }

  async start(): Promise<void> {
    this.kc = new (await loadKubeConfigClass())();
    if (this.opts.kubeconfig) this.kc.loadFromFile(this.opts.kubeconfig);
    else this.kc.loadFromCluster();
    const resources: Resource[] = [
      { kind: "Service", path: "/api/v1/services", labelSelector: KUBE_PROXY_LABEL_SELECTOR },
      {
        kind: "EndpointSlice",
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        labelSelector: KUBE_PROXY_LABEL_SELECTOR,
      },
      // Only this node: the model needs its zone and addresses, as kube-proxy does.
      { kind: "Node", path: "/api/v1/nodes", fieldSelector: `metadata.name=${this.opts.nodeName}` },
    ];
    for (const res of resources) {
      const r = new Reflector(
        {
          kc: this.kc,
          path: res.path,
          labelSelector: res.labelSelector,
          fieldSelector: res.fieldSelector,
          pageSize: this.opts.pageSize,
          backoff: this.opts.backoff,
          idleTimeoutMs: this.opts.idleTimeoutMs,
          minWatchTimeoutSeconds: this.opts.minWatchTimeoutSeconds,
          listTimeoutMs: this.opts.listTimeoutMs,
        },
        {
          upsert: (o, key) => this.upsert(res.kind, slimObject(res.kind, o), key),
          remove: (o) => this.remove(res.kind, o),
          listed: (n) => this.listed(res, n),
        },
      );
      this.reflectors.push({ res, r });
    }
    for (const { r } of this.reflectors) r.start();
  }

  private listed(res: Resource, objects: number): void {
    if (this.initialSynced) return;
    log.info("synced", { resource: res.path, objects });
    if (this.reflectors.every((x) => x.r.synced)) {
      this.initialSynced = true;
      this.rebuild();
      this.syncedResolve();
    }
  }

  private upsert(kind: KnownKind, obj: KubernetesObject, key: string): void {
    const r = validateObject(obj, kind);
    if (!r.ok) {
      // An invalid update leaves the last valid version in effect (fail static).
      reportResult(r);
      return;
    }
    // The index is the only store: one compact copy of each object (src/k8s/packed.ts), under the reflector's
    // key string (the same "namespace/name" as r.key, not another copy of it).
    if (kind === "Service") this.idx.upsertService(key, r.object as Service);
    else if (kind === "EndpointSlice") this.idx.upsertSlice(key, r.object as EndpointSlice);
    else if (kind === "Node") this.idx.upsertNode(key, r.object as Node);
    this.changed(kind);
  }

  private remove(kind: KnownKind, obj: KubernetesObject): void {
    const key = objectKeyOf(obj.metadata?.namespace, String(obj.metadata?.name));
    const removed =
      kind === "Service"
        ? this.idx.removeService(key)
        : kind === "EndpointSlice"
          ? this.idx.removeSlice(key)
          : kind === "Node" && this.idx.removeNode(key);
    if (removed) this.changed(kind);
  }

  private changed(kind: KnownKind): void {
    if (!this.initialSynced) return; // the initial lists make one snapshot
    this.snap = undefined; // made again when asked for: an event costs O(1), not O(objects)
    this.emit("change", kind === "Service" ? "service" : kind === "EndpointSlice" ? "endpoints" : undefined);
  }

  private rebuild(): void {
    this.snap = { services: this.idx.allServices(), endpointSlices: this.idx.allSlices(), nodes: this.idx.nodes() };
  }

  synced(): Promise<void> {
    return this.syncedPromise;
  }

  snapshot(): ObjectSnapshot {
    if (!this.snap) this.rebuild();
    return this.snap!;
  }

  index(): ObjectIndex {
    return this.idx;
  }

  async stop(): Promise<void> {
    await Promise.all(this.reflectors.map(({ r }) => r.stop()));
  }

  /** The reflectors' counters by resource path (tests and diagnostics). */
  watchStats(): Record<string, Reflector["stats"]> {
    return Object.fromEntries(this.reflectors.map(({ res, r }) => [res.path, { ...r.stats }]));
  }
}
