// The Kubernetes source: client-node ListWatch informers for Services, EndpointSlices and this
// node's Node object. Lists are paged (limit/continue) and read as raw JSON, so every object
// reaches the zod schemas exactly as the API server sent it (the generated typed clients
// drop fields they do not know). client-node's ListWatch relists by itself on 410 Gone;
// on any other error it stops, and we start it again with exponential backoff. While the
// API server is away nothing changes here, so the data plane keeps its last state.
//
// Like kube-proxy, Services and EndpointSlices are asked for with a label selector, so the API server
// never sends what another proxy or a headless Service owns; and every object is slimmed (managedFields,
// the last-applied annotation, status the model does not read) before any cache keeps it.
import { EventEmitter } from "node:events";
// client-node 1.x speaks node-fetch: applyToFetchOptions returns its RequestInit, whose `agent` carries the
// kubeconfig's TLS client certificate and CA. Node's global fetch ignores `agent`, so it would not authenticate.
import fetch from "node-fetch";
import {
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { log } from "../log.js";
import { reportResult, validateObject, type KnownKind } from "../k8s/validate.js";
import type { EndpointSlice, Node, Service } from "../k8s/schemas.js";
import type { ObjectSnapshot, Source } from "./types.js";
import { ObjectIndex } from "./object-index.js";

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
  /** First retry delay after a watch/list error; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

interface Resource {
  kind: KnownKind;
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
}

class ApiError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
  ) {
    super(message);
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * A list page as the API server sends it, or an error. An answer of another shape (a proxy's error page, a
 * truncated body, `items` that is not a list) must fail the list rather than read as "no objects", which
 * would withdraw every Service; the informer then keeps its state and retries (fail static).
 */
function checkListPage(
  path: string,
  page: unknown,
): { items: KubernetesObject[]; metadata: { resourceVersion?: string; continue?: string } } {
  const bad = (why: string) => new Error(`list ${path}: malformed response (${why}); keeping the current state`);
  if (!isObj(page)) throw bad("not an object");
  if (page.items !== undefined && page.items !== null && !Array.isArray(page.items)) throw bad("items is not a list");
  if (
    !isObj(page.metadata) ||
    typeof page.metadata.resourceVersion !== "string" ||
    page.metadata.resourceVersion === ""
  ) {
    throw bad("no metadata.resourceVersion");
  }
  const items = (page.items ?? []) as unknown[];
  // Items without metadata cannot even be named (the informer's cache would throw on them).
  if (!items.every((i) => isObj(i) && isObj(i.metadata) && typeof i.metadata.name === "string"))
    throw bad("an item has no metadata.name");
  return { items: items as KubernetesObject[], metadata: page.metadata };
}

const WATCH_TYPES = new Set(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]);

/**
 * client-node's Watch, guarded: an event that is not a Kubernetes watch event (no known type, an object
 * without metadata) ends the watch with an error instead of throwing inside the informer (which would be an
 * unhandled rejection and take the daemon down). The informer then relists with backoff.
 */
function guardedWatch(kc: KubeConfig): Watch {
  const inner = new Watch(kc);
  const guarded = Object.create(inner) as Watch;
  guarded.watch = (path, query, callback, done) => {
    let ended = false;
    const end = (err: unknown) => {
      if (ended) return;
      ended = true;
      done(err);
    };
    return inner.watch(
      path,
      query,
      (type: string, obj: unknown, raw: unknown) => {
        if (ended) return;
        const ok =
          WATCH_TYPES.has(type) &&
          isObj(obj) &&
          (type === "ERROR" || (isObj(obj.metadata) && typeof obj.metadata.name === "string"));
        if (!ok) {
          end(new Error(`watch ${path}: malformed event (${JSON.stringify(raw)?.slice(0, 120)})`));
          return;
        }
        try {
          void Promise.resolve(callback(type, obj, raw)).catch(end);
        } catch (err) {
          end(err);
        }
      },
      end,
    );
  };
  return guarded;
}

/** GET a list, following `continue` until the last page; one resourceVersion for the whole list. */
async function listAll(
  kc: KubeConfig,
  res: Resource,
  pageSize: number,
): Promise<KubernetesListObject<KubernetesObject>> {
  const { kind, path, fieldSelector, labelSelector } = res;
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error("kubeconfig has no current cluster");
  const items: KubernetesObject[] = [];
  let cont: string | undefined;
  let resourceVersion = "";
  do {
    const url = new URL(server + path);
    url.searchParams.set("limit", String(pageSize));
    if (cont) url.searchParams.set("continue", cont);
    if (fieldSelector) url.searchParams.set("fieldSelector", fieldSelector);
    if (labelSelector) url.searchParams.set("labelSelector", labelSelector);
    const init = await kc.applyToFetchOptions({});
    const res = await fetch(url.toString(), { ...init, method: "GET", signal: AbortSignal.timeout(30_000) });
    if (res.status !== 200)
      throw new ApiError(`list ${path}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`, res.status);
    const page = checkListPage(path, await res.json());
    for (const item of page.items) items.push(slimObject(kind, item));
    resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    cont = page.metadata?.continue || undefined;
  } while (cont);
  return { metadata: { resourceVersion }, items };
}

export class KubernetesSource extends EventEmitter implements Source {
  private readonly kc = new KubeConfig();
  private readonly informers: {
    res: Resource;
    lw: ListWatch<KubernetesObject>;
    synced: boolean;
    failures: number;
    retry?: NodeJS.Timeout;
  }[] = [];
  private readonly objects: Record<KnownKind, Map<string, unknown>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Endpoints: new Map(),
    Node: new Map(),
  };
  private snap: ObjectSnapshot | undefined = { services: [], endpointSlices: [], nodes: [] };
  private readonly idx = new ObjectIndex();
  private syncedResolve!: () => void;
  private readonly syncedPromise = new Promise<void>((r) => (this.syncedResolve = r));
  private stopped = false;

  constructor(private readonly opts: KubernetesSourceOptions) {
    super();
  }

  async start(): Promise<void> {
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
    const watch = guardedWatch(this.kc);
    for (const res of resources) {
      // Watch events are slimmed before ListWatch caches them, as list items are in listAll.
      const slimWatch = {
        watch: (
          path: string,
          qp: Record<string, string | number | boolean | undefined>,
          cb: (phase: string, obj: KubernetesObject, raw: unknown) => void,
          done: (err: unknown) => void,
        ) =>
          watch.watch(
            path,
            qp,
            (phase: string, obj: KubernetesObject, raw: unknown) =>
              cb(phase, obj && phase !== "BOOKMARK" && phase !== "ERROR" ? slimObject(res.kind, obj) : obj, raw),
            done,
          ),
      } as unknown as Watch;
      const lw = new ListWatch<KubernetesObject>(
        res.path,
        slimWatch,
        () => listAll(this.kc, res, this.opts.pageSize ?? 500),
        false,
        res.labelSelector,
        res.fieldSelector,
      );
      const entry = { res, lw, synced: false, failures: 0 } as (typeof this.informers)[number];
      lw.on("add", (o) => this.upsert(res.kind, o));
      lw.on("update", (o) => this.upsert(res.kind, o));
      lw.on("delete", (o) => this.remove(res.kind, o));
      lw.on("connect", () => log.v(2, "watching", { resource: res.path }));
      lw.on("error", (err) => this.onError(entry, err));
      this.informers.push(entry);
    }
    for (const inf of this.informers) void this.startInformer(inf);
  }

  private async startInformer(inf: (typeof this.informers)[number]): Promise<void> {
    if (this.stopped) return;
    await inf.lw.start();
    // ListWatch.start resolves after the list (or after reporting a list error).
    if (!inf.synced && inf.lw.latestResourceVersion() !== "") {
      inf.synced = true;
      inf.failures = 0;
      log.info("synced", { resource: inf.res.path, objects: inf.lw.list().length });
      if (this.informers.every((i) => i.synced)) {
        this.rebuild();
        this.syncedResolve();
      }
    } else if (inf.synced) {
      inf.failures = 0;
    }
  }

  private onError(inf: (typeof this.informers)[number], err: unknown): void {
    if (this.stopped) return;
    inf.failures++;
    const delay = Math.min(
      this.opts.maxBackoffMs ?? 10_000,
      (this.opts.backoffMs ?? 500) * 2 ** Math.min(inf.failures - 1, 10),
    );
    log.warn("API watch failed; keeping the current state and retrying", {
      resource: inf.res.path,
      error: (err as Error)?.message ?? String(err),
      retryInMs: delay,
    });
    clearTimeout(inf.retry);
    inf.retry = setTimeout(() => void this.startInformer(inf), delay);
  }

  private upsert(kind: KnownKind, obj: KubernetesObject): void {
    const r = validateObject(obj, kind);
    if (!r.ok) {
      // An invalid update leaves the last valid version in effect (fail static).
      reportResult(r);
      return;
    }
    this.objects[kind].set(r.key, r.object);
    if (kind === "Service") this.idx.upsertService(r.key, r.object as Service);
    else if (kind === "EndpointSlice") this.idx.upsertSlice(r.key, r.object as EndpointSlice);
    else if (kind === "Node") this.idx.upsertNode(r.key, r.object as Node);
    this.changed(kind);
  }

  private remove(kind: KnownKind, obj: KubernetesObject): void {
    const key = obj.metadata?.namespace ? `${obj.metadata.namespace}/${obj.metadata.name}` : String(obj.metadata?.name);
    if (!this.objects[kind].delete(key)) return;
    if (kind === "Service") this.idx.removeService(key);
    else if (kind === "EndpointSlice") this.idx.removeSlice(key);
    else if (kind === "Node") this.idx.removeNode(key);
    this.changed(kind);
  }

  private changed(kind: KnownKind): void {
    if (!this.informers.every((i) => i.synced)) return; // the initial lists make one snapshot
    this.snap = undefined; // made again when asked for: an event costs O(1), not O(objects)
    this.emit("change", kind === "Service" ? "service" : kind === "EndpointSlice" ? "endpoints" : undefined);
  }

  private rebuild(): void {
    this.snap = {
      services: [...this.objects.Service.values()] as Service[],
      endpointSlices: [...this.objects.EndpointSlice.values()] as EndpointSlice[],
      nodes: [...this.objects.Node.values()] as Node[],
    };
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
    this.stopped = true;
    for (const inf of this.informers) {
      clearTimeout(inf.retry);
      await inf.lw.stop();
    }
  }
}
