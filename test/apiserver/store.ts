// The object store behind the test apiserver: one global, monotonically increasing resourceVersion, a bounded
// event history for watch replays, consistent snapshots for limit/continue paging, and the registry semantics
// (create/update/patch/delete) that the HTTP layer and the tests' direct access share.
import { randomUUID, randomBytes } from "node:crypto";
import {
  ApiError,
  alreadyExists,
  badRequest,
  conflict,
  expired,
  invalid,
  notFound,
  type FieldError,
  type Obj,
} from "./errors.js";
import { clone, jsonPatch, mergePatch, strategicMergePatch } from "./patch.js";
import {
  NAME_PATTERNS,
  apiVersionOf,
  builtinResources,
  listStrategiesFor,
  type ResourceContext,
  type ResourceDef,
} from "./resources.js";
import { matchAll, parseFieldSelector, parseLabelSelector, type Matcher } from "./selectors.js";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

/** One change, in storage form. `prev` is the object before a MODIFIED or DELETED. */
export interface StoreEvent {
  type: EventType;
  rv: number;
  storage: string;
  object: Obj;
  prev?: Obj;
}

export interface StoreOptions {
  /** How many events are kept for watch replays; watches from older resourceVersions get 410. Default 1000. */
  historyLimit?: number;
  /** The first resourceVersion handed out is this + 1. Default 1000. */
  initialResourceVersion?: number;
  /** Default ["10.96.0.0/12"]. Add an IPv6 range for dual stack. */
  serviceCIDRs?: string[];
  /** Default [30000, 32767]. */
  nodePortRange?: [number, number];
  /** Namespaces created at start. Default ["default", "kube-system", "kube-public", "kube-node-lease"]. */
  namespaces?: string[];
  /** Extra resources to serve besides the built-in ones. */
  extraResources?: ResourceDef[];
}

export type PatchType = "merge" | "strategic" | "json" | "apply";

export interface WriteOptions {
  dryRun?: boolean;
  /** Set by the HTTP layer: stricter checks that the real apiserver makes on requests. */
  fromApi?: boolean;
  /**
   * Store the object without validating it: stands for an object that got past validation
   * (an older API server, a direct etcd write), so tests can feed clients malformed objects.
   */
  skipValidation?: boolean;
  subresource?: string;
}

export interface DeleteOptions extends WriteOptions {
  preconditions?: { uid?: string; resourceVersion?: string };
}

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}

export interface ListResult {
  items: Obj[];
  resourceVersion: string;
  continue?: string;
  remainingItemCount?: number;
}

/** A reference to a resource: "services", "svc", "Service", "endpointslices.discovery.k8s.io", or an object with apiVersion+kind. */
export type ResourceRef = string | ResourceDef | { apiVersion?: string; kind?: string };

const NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789";

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Obj)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Obj)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

function sameIgnoringRV(a: Obj, b: Obj): boolean {
  const x = clone(a);
  const y = clone(b);
  delete x.metadata?.resourceVersion;
  delete y.metadata?.resourceVersion;
  return canonical(x) === canonical(y);
}

export const timestamp = (d = new Date()) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

const keyOf = (ns: string | undefined, name: string) => `${ns ?? ""}/${name}`;

interface Snapshot {
  rv: number;
  items: Obj[];
  at: number;
}

export class Store {
  readonly defs: ResourceDef[];
  readonly historyLimit: number;
  readonly serviceCIDRs: string[];
  readonly nodePortRange: [number, number];
  private readonly data = new Map<string, Map<string, Obj>>();
  private rv: number;
  private compactedRV: number;
  private history: StoreEvent[] = [];
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly compactListeners = new Set<() => void>();
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly ctx: ResourceContext;

  constructor(opts: StoreOptions = {}) {
    this.defs = [...builtinResources(), ...(opts.extraResources ?? [])];
    this.historyLimit = opts.historyLimit ?? 1000;
    this.rv = opts.initialResourceVersion ?? 1000;
    this.compactedRV = this.rv;
    this.serviceCIDRs = opts.serviceCIDRs ?? ["10.96.0.0/12"];
    this.nodePortRange = opts.nodePortRange ?? [30000, 32767];
    this.ctx = {
      listStored: (storage) => [...(this.data.get(storage)?.values() ?? [])],
      serviceCIDRs: this.serviceCIDRs,
      nodePortRange: this.nodePortRange,
    };
    for (const ns of opts.namespaces ?? ["default", "kube-system", "kube-public", "kube-node-lease"]) {
      this.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    }
  }

  // ---------------- resolution ----------------

  /** The current (latest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Watches and continue tokens older than this get 410. */
  get compactedResourceVersion(): string {
    return String(this.compactedRV);
  }

  findDef(group: string, version: string, resource: string): ResourceDef | undefined {
    return this.defs.find((d) => d.group === group && d.version === version && d.resource === resource);
  }

  resolve(ref: ResourceRef): ResourceDef {
    if (typeof ref === "object" && "resource" in ref && "storage" in ref) return ref;
    if (typeof ref === "object") {
      const r = ref;
      const apiVersion = r.apiVersion ?? "";
      const d = this.defs.find((x) => apiVersionOf(x) === apiVersion && x.kind === r.kind);
      if (!d) throw badRequest(`no kind "${r.kind}" is registered for version "${apiVersion}"`);
      return d;
    }
    const s = ref;
    const lower = s.toLowerCase();
    const [first, ...rest] = lower.split(".");
    const group = rest.join(".");
    const d =
      this.defs.find((x) => `${x.resource}${x.group ? "." + x.group : ""}` === lower) ??
      this.defs.find(
        (x) =>
          !group &&
          (x.resource === first ||
            x.singular === first ||
            x.shortNames?.includes(first!) ||
            x.kind.toLowerCase() === first),
      );
    if (!d) throw new Error(`unknown resource ${s}`);
    return d;
  }

  // ---------------- reading ----------------

  private bucket(storage: string): Map<string, Obj> {
    let b = this.data.get(storage);
    if (!b) this.data.set(storage, (b = new Map()));
    return b;
  }

  private served(def: ResourceDef, stored: Obj): Obj {
    const o = def.toServed ? def.toServed(clone(stored)) : clone(stored);
    o.apiVersion = apiVersionOf(def);
    o.kind = def.kind;
    return o;
  }

  /** Converts an object in storage form (as in StoreEvent) to what `def` serves. */
  toServed(def: ResourceDef, stored: Obj): Obj {
    return this.served(def, stored);
  }

  private getStored(def: ResourceDef, ns: string | undefined, name: string): Obj | undefined {
    return this.data.get(def.storage)?.get(keyOf(def.namespaced ? ns : undefined, name));
  }

  doGet(def: ResourceDef, ns: string | undefined, name: string): Obj {
    const o = this.getStored(def, ns, name);
    if (!o) throw notFound(def, name);
    return this.served(def, o);
  }

  matcher(def: ResourceDef, labelSelector?: string, fieldSelector?: string): Matcher {
    const lm = parseLabelSelector(labelSelector);
    const fm = parseFieldSelector(fieldSelector, {
      "metadata.name": "metadata.name",
      "metadata.namespace": "metadata.namespace",
      ...(def.fields ?? {}),
    });
    if (lm === matchAll && fm === matchAll) return matchAll;
    return (o) => lm(o) && fm(o);
  }

  private sortedItems(def: ResourceDef, ns: string | undefined): Obj[] {
    const b = this.data.get(def.storage);
    if (!b) return [];
    const prefix = ns ? `${ns}/` : "";
    return [...b.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b2]) => (a < b2 ? -1 : a > b2 ? 1 : 0))
      .map(([, v]) => v);
  }

  doList(def: ResourceDef, ns: string | undefined, opts: ListOptions = {}): ListResult {
    const match = this.matcher(def, opts.labelSelector, opts.fieldSelector);
    if (opts.resourceVersion && opts.resourceVersion !== "0" && !/^\d+$/.test(opts.resourceVersion))
      throw badRequest(`invalid resource version: ${opts.resourceVersion}`);
    const wantRV = opts.resourceVersion && opts.resourceVersion !== "0" ? Number(opts.resourceVersion) : undefined;
    if (wantRV !== undefined && wantRV > this.rv)
      throw new ApiError(504, "Timeout", `Too large resource version: ${wantRV}, current: ${this.rv}`, {
        causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
        retryAfterSeconds: 1,
      });
    if (opts.resourceVersionMatch === "Exact" && wantRV !== undefined && wantRV !== this.rv)
      throw expired(`too old resource version: ${wantRV} (${this.rv})`);
    let snap: Snapshot;
    let start = 0;
    let sid: string;
    if (opts.continue) {
      let tok: { rv: number; start: number; sid: string };
      try {
        tok = JSON.parse(Buffer.from(opts.continue, "base64").toString("utf8"));
      } catch {
        throw badRequest("continue key is not valid: illegal base64 data");
      }
      const s = this.snapshots.get(tok.sid);
      if (!s || tok.rv < this.compactedRV)
        throw expired(
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
      snap = s;
      start = tok.start;
      sid = tok.sid;
    } else {
      snap = { rv: this.rv, items: this.sortedItems(def, def.namespaced ? ns : undefined), at: Date.now() };
      sid = randomUUID();
    }
    const limit = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
    const items: Obj[] = [];
    let i = start;
    for (; i < snap.items.length && items.length < limit; i++) {
      const o = this.served(def, snap.items[i]!);
      if (match(o)) items.push(o);
    }
    const res: ListResult = { items, resourceVersion: String(snap.rv) };
    // like etcd, answer a continue token when the page is full and there may be more
    if (items.length >= limit && i < snap.items.length) {
      this.snapshots.set(sid, snap);
      while (this.snapshots.size > 64) this.snapshots.delete(this.snapshots.keys().next().value!);
      res.continue = Buffer.from(JSON.stringify({ rv: snap.rv, start: i, sid })).toString("base64");
      if (match === matchAll) res.remainingItemCount = snap.items.length - i;
    }
    return res;
  }

  // ---------------- writing ----------------

  private nextRV(): number {
    return ++this.rv;
  }

  private record(type: EventType, storage: string, object: Obj, prev?: Obj): void {
    const ev: StoreEvent = { type, rv: this.rv, storage, object: clone(object), prev: prev && clone(prev) };
    this.history.push(ev);
    while (this.history.length > this.historyLimit) {
      const gone = this.history.shift()!;
      this.compactedRV = gone.rv;
    }
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch (e) {
        console.error("apiserver: store listener failed", e);
      }
    }
  }

  private checkTypeMeta(def: ResourceDef, obj: Obj): void {
    const want = apiVersionOf(def);
    if (obj.apiVersion !== undefined && obj.apiVersion !== want)
      throw badRequest(
        `the API version in the data (${obj.apiVersion}) does not match the expected API version (${want})`,
      );
    if (obj.kind !== undefined && obj.kind !== def.kind)
      throw badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${def.kind})`);
    obj.apiVersion = want;
    obj.kind = def.kind;
  }

  private checkName(def: ResourceDef, name: string): void {
    const rule = NAME_PATTERNS[def.nameRule ?? "subdomain"];
    if (name.length > rule.max || !rule.re.test(name))
      throw invalid(def.kind, def.group, name, [
        {
          type: "FieldValueInvalid",
          field: "metadata.name",
          value: name,
          detail: name.length > rule.max ? `must be no more than ${rule.max} characters` : rule.text,
        },
      ]);
  }

  private runValidate(def: ResourceDef, obj: Obj, old: Obj | undefined): void {
    const errs: FieldError[] = def.validate ? def.validate(obj, old, this.ctx) : [];
    if (errs.length) throw invalid(def.kind, def.group, obj.metadata?.name ?? "", errs);
  }

  private namespaceOf(def: ResourceDef, urlNs: string | undefined, obj: Obj, opts: WriteOptions): string | undefined {
    if (!def.namespaced) {
      delete obj.metadata.namespace;
      return undefined;
    }
    const bodyNs = obj.metadata.namespace;
    if (urlNs && bodyNs && urlNs !== bodyNs)
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    const ns = urlNs || bodyNs || (opts.fromApi ? undefined : "default");
    if (!ns) throw badRequest("the server could not find the requested resource");
    obj.metadata.namespace = ns;
    if (!this.data.get("namespaces")?.has(keyOf(undefined, ns))) {
      if (opts.fromApi) throw notFound({ group: "", resource: "namespaces" }, ns);
      if (!opts.dryRun) this.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    }
    return ns;
  }

  doCreate(def: ResourceDef, urlNs: string | undefined, body: unknown, opts: WriteOptions = {}): Obj {
    if (!body || typeof body !== "object" || Array.isArray(body))
      throw badRequest(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
      );
    const obj = clone(body as Obj);
    this.checkTypeMeta(def, obj);
    obj.metadata = obj.metadata && typeof obj.metadata === "object" ? obj.metadata : {};
    const md = obj.metadata;
    if (!md.name && md.generateName) {
      let suffix = "";
      for (const b of randomBytes(5)) suffix += NAME_SUFFIX_CHARS[b % NAME_SUFFIX_CHARS.length];
      md.name = `${md.generateName}${suffix}`;
    }
    if (!md.name)
      throw invalid(def.kind, def.group, "", [
        { type: "FieldValueRequired", field: "metadata.name", detail: "name or generateName is required" },
      ]);
    this.checkName(def, md.name);
    const ns = this.namespaceOf(def, urlNs, obj, opts);
    if (md.resourceVersion !== undefined && md.resourceVersion !== "") {
      if (opts.fromApi)
        throw new ApiError(
          500,
          "InternalError",
          "Internal error occurred: resourceVersion should not be set on objects to be created",
        );
      delete md.resourceVersion;
    }
    if (this.getStored(def, ns, md.name)) throw alreadyExists(def, md.name);
    const stored = def.toStored ? def.toStored(obj) : obj;
    const smd = stored.metadata;
    smd.uid = randomUUID();
    smd.creationTimestamp = timestamp();
    delete smd.deletionTimestamp;
    delete smd.deletionGracePeriodSeconds;
    if (def.resetStatusOnCreate) delete stored.status;
    def.prepareCreate?.(stored, this.ctx);
    if (!opts.skipValidation) this.runValidate(def, stored, undefined);
    if (opts.dryRun) return this.served(def, stored);
    smd.resourceVersion = String(this.nextRV());
    this.bucket(def.storage).set(keyOf(ns, smd.name), stored);
    this.record("ADDED", def.storage, stored);
    return this.served(def, stored);
  }

  doUpdate(
    def: ResourceDef,
    urlNs: string | undefined,
    urlName: string,
    body: unknown,
    opts: WriteOptions = {},
  ): { object: Obj; created: boolean } {
    if (!body || typeof body !== "object" || Array.isArray(body))
      throw badRequest(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
      );
    const obj = clone(body as Obj);
    this.checkTypeMeta(def, obj);
    obj.metadata = obj.metadata && typeof obj.metadata === "object" ? obj.metadata : {};
    if (obj.metadata.name && obj.metadata.name !== urlName)
      throw badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${urlName})`);
    obj.metadata.name = urlName;
    const ns = def.namespaced ? urlNs || obj.metadata.namespace || (opts.fromApi ? undefined : "default") : undefined;
    if (def.namespaced && urlNs && obj.metadata.namespace && obj.metadata.namespace !== urlNs)
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    const old = this.getStored(def, ns, urlName);
    if (!old) {
      if (def.allowCreateOnUpdate && !opts.subresource) {
        delete obj.metadata.resourceVersion;
        return { object: this.doCreate(def, ns, obj, opts), created: true };
      }
      throw notFound(def, urlName);
    }
    const rv = obj.metadata.resourceVersion;
    if (rv !== undefined && rv !== "" && rv !== old.metadata.resourceVersion) throw conflict(def, urlName);
    if (obj.metadata.uid && obj.metadata.uid !== old.metadata.uid)
      throw conflict(
        def,
        urlName,
        `Precondition failed: UID in precondition: ${obj.metadata.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    let next: Obj;
    const incoming = def.toStored ? def.toStored(obj) : obj;
    if (opts.subresource === "status") {
      next = clone(old);
      next.status = incoming.status;
    } else if (opts.subresource) {
      throw new ApiError(404, "NotFound", "the server could not find the requested resource");
    } else {
      next = incoming;
      if (def.subresources?.includes("status")) {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
    }
    const md = next.metadata;
    md.uid = old.metadata.uid;
    md.creationTimestamp = old.metadata.creationTimestamp;
    if (def.namespaced) md.namespace = old.metadata.namespace;
    else delete md.namespace;
    if (old.metadata.deletionTimestamp) {
      md.deletionTimestamp = old.metadata.deletionTimestamp;
      md.deletionGracePeriodSeconds = old.metadata.deletionGracePeriodSeconds;
    } else {
      delete md.deletionTimestamp;
      delete md.deletionGracePeriodSeconds;
    }
    md.resourceVersion = old.metadata.resourceVersion;
    def.prepareUpdate?.(next, old, this.ctx);
    this.runValidate(def, next, old);
    if (sameIgnoringRV(next, old)) return { object: this.served(def, old), created: false };
    if (opts.dryRun) return { object: this.served(def, next), created: false };
    if (md.deletionTimestamp && !md.finalizers?.length) {
      // the last finalizer is gone: the pending deletion completes now
      md.resourceVersion = String(this.nextRV());
      this.bucket(def.storage).delete(keyOf(ns, urlName));
      this.record("DELETED", def.storage, next, old);
      return { object: this.served(def, next), created: false };
    }
    md.resourceVersion = String(this.nextRV());
    this.bucket(def.storage).set(keyOf(ns, urlName), next);
    this.record("MODIFIED", def.storage, next, old);
    return { object: this.served(def, next), created: false };
  }

  doPatch(
    def: ResourceDef,
    ns: string | undefined,
    name: string,
    type: PatchType,
    patch: unknown,
    opts: WriteOptions = {},
  ): { object: Obj; created: boolean } {
    const old = this.getStored(def, ns, name);
    if (!old) {
      if (type === "apply" && !opts.subresource) {
        const body = clone(patch as Obj);
        body.metadata = { ...(body.metadata ?? {}), name };
        return { object: this.doCreate(def, ns, body, opts), created: true };
      }
      throw notFound(def, name);
    }
    const cur = this.served(def, old);
    let next: unknown;
    switch (type) {
      case "json":
        next = jsonPatch(cur, patch);
        break;
      case "merge":
      case "apply":
        if (!patch || typeof patch !== "object" || Array.isArray(patch))
          throw badRequest("the body of the request was in an unknown format");
        next = mergePatch(cur, patch);
        break;
      case "strategic":
        if (!patch || typeof patch !== "object" || Array.isArray(patch))
          throw badRequest("the body of the request was in an unknown format");
        next = strategicMergePatch(cur, patch, listStrategiesFor(def));
        break;
    }
    const n = next as Obj;
    if (!n || typeof n !== "object" || Array.isArray(n)) throw badRequest("patch produced an invalid object");
    n.metadata ??= {};
    if (n.metadata.name !== name || (def.namespaced && n.metadata.namespace !== cur.metadata.namespace))
      throw badRequest("metadata.name and metadata.namespace may not be changed by a patch");
    // a resourceVersion in the patch is a precondition; otherwise the patch applies to the current version
    const prv = n.metadata.resourceVersion;
    if (type !== "apply" && prv !== undefined && prv !== null && prv !== "" && prv !== cur.metadata.resourceVersion)
      throw conflict(def, name);
    n.metadata.resourceVersion = cur.metadata.resourceVersion;
    return this.doUpdate(def, ns, name, n, opts);
  }

  doDelete(
    def: ResourceDef,
    ns: string | undefined,
    name: string,
    opts: DeleteOptions = {},
  ): { object: Obj; finished: boolean } {
    const old = this.getStored(def, ns, name);
    if (!old) throw notFound(def, name);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== old.metadata.uid)
      throw conflict(
        def,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion)
      throw conflict(
        def,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`,
      );
    if (old.metadata.finalizers?.length) {
      if (old.metadata.deletionTimestamp) return { object: this.served(def, old), finished: false };
      const next = clone(old);
      next.metadata.deletionTimestamp = timestamp();
      next.metadata.deletionGracePeriodSeconds = 0;
      if (opts.dryRun) return { object: this.served(def, next), finished: false };
      next.metadata.resourceVersion = String(this.nextRV());
      this.bucket(def.storage).set(keyOf(ns, name), next);
      this.record("MODIFIED", def.storage, next, old);
      return { object: this.served(def, next), finished: false };
    }
    if (def.storage === "namespaces" && !opts.dryRun) {
      // the namespace controller's work, done at once: everything in the namespace goes first
      const seen = new Set<string>();
      for (const d of this.defs) {
        if (!d.namespaced || seen.has(d.storage)) continue;
        seen.add(d.storage);
        for (const o of this.sortedItems(d, name)) {
          o.metadata.finalizers = [];
          this.doDelete(d, name, o.metadata.name);
        }
      }
    }
    const gone = clone(old);
    if (def.storage === "namespaces") {
      gone.metadata.deletionTimestamp = timestamp();
      gone.status = { ...(gone.status ?? {}), phase: "Terminating" };
    }
    if (opts.dryRun) return { object: this.served(def, gone), finished: true };
    gone.metadata.resourceVersion = String(this.nextRV());
    this.bucket(def.storage).delete(keyOf(ns, name));
    this.record("DELETED", def.storage, gone, old);
    return { object: this.served(def, gone), finished: true };
  }

  // ---------------- watch support ----------------

  /** Events after `rv` (exclusive), or a 410 Expired error when the history no longer reaches back that far. */
  eventsSince(rv: number): StoreEvent[] {
    if (rv < this.compactedRV) throw expired(`too old resource version: ${rv} (${this.compactedRV})`);
    // A resourceVersion from the future (a client of a server that was replaced by one with a fresh store): the real
    // watch cache would time out with "Too large resource version"; a 410 makes clients relist and converge.
    if (rv > this.rv) throw expired(`too large resource version: ${rv} (current ${this.rv}); relist`);
    return this.history.filter((e) => e.rv > rv);
  }

  /** Every change, synchronously, as it is made. Returns an unsubscribe function. */
  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onCompact(fn: () => void): () => void {
    this.compactListeners.add(fn);
    return () => this.compactListeners.delete(fn);
  }

  /** Forgets the event history and the paging snapshots: watches and continue tokens from before now get 410. */
  compact(): void {
    this.compactedRV = this.rv;
    this.history = [];
    this.snapshots.clear();
    for (const l of [...this.compactListeners]) l();
  }

  /** Current items of a resource in storage form, for the watch layer. */
  storedItems(def: ResourceDef, ns?: string): Obj[] {
    return this.sortedItems(def, def.namespaced ? ns : undefined);
  }

  // ---------------- direct access for tests ----------------

  /** Creates an object as the apiserver would (defaults, ClusterIP allocation, validation). Namespaces are created as needed. */
  create<T extends Obj = Obj>(obj: T, opts: Pick<WriteOptions, "skipValidation"> = {}): T {
    const def = this.resolve(obj);
    return this.doCreate(def, (obj as Obj).metadata?.namespace, obj, opts) as T;
  }

  /** Replaces an object (PUT). A metadata.resourceVersion in it is checked; leave it out for an unconditional update. */
  update<T extends Obj = Obj>(obj: T, opts: { subresource?: string } = {}): T {
    const def = this.resolve(obj);
    const md = (obj as Obj).metadata ?? {};
    return this.doUpdate(def, md.namespace ?? (def.namespaced ? "default" : undefined), md.name, obj, opts).object as T;
  }

  /** Create or replace, ignoring resourceVersion. */
  apply<T extends Obj = Obj>(obj: T): T {
    const def = this.resolve(obj);
    const md = (obj as Obj).metadata ?? {};
    const ns = def.namespaced ? (md.namespace ?? "default") : undefined;
    if (!this.getStored(def, ns, md.name)) return this.create(obj);
    const o = clone(obj as Obj);
    delete o.metadata.resourceVersion;
    return this.doUpdate(def, ns, md.name, o).object as T;
  }

  patch(ref: ResourceRef, name: string, namespace: string | undefined, patch: unknown, type: PatchType = "merge"): Obj {
    const def = this.resolve(ref);
    return this.doPatch(def, def.namespaced ? (namespace ?? "default") : undefined, name, type, patch).object;
  }

  /** Deletes an object; undefined when it did not exist. */
  delete(ref: ResourceRef, name: string, namespace?: string): Obj | undefined {
    const def = this.resolve(ref);
    try {
      return this.doDelete(def, def.namespaced ? (namespace ?? "default") : undefined, name).object;
    } catch (e) {
      if (e instanceof ApiError && e.code === 404) return undefined;
      throw e;
    }
  }

  get(ref: ResourceRef, name: string, namespace?: string): Obj | undefined {
    const def = this.resolve(ref);
    const o = this.getStored(def, def.namespaced ? (namespace ?? "default") : undefined, name);
    return o && this.served(def, o);
  }

  /** Every object of a resource, in one namespace or (namespace undefined) all of them. */
  list(ref: ResourceRef, namespace?: string, opts: { labelSelector?: string; fieldSelector?: string } = {}): Obj[] {
    const def = this.resolve(ref);
    return this.doList(def, namespace, opts).items;
  }

  /** Every change in served form for `ref`; returns an unsubscribe function. */
  onChange(ref: ResourceRef, fn: (type: EventType, obj: Obj) => void): () => void {
    const def = this.resolve(ref);
    return this.subscribe((e) => {
      if (e.storage === def.storage) fn(e.type, this.served(def, e.object));
    });
  }

  /** Resolves with the first object of `ref` that satisfies `pred` (now or later); rejects after timeoutMs. */
  waitFor(ref: ResourceRef, pred: (obj: Obj) => boolean, timeoutMs = 10_000): Promise<Obj> {
    const def = this.resolve(ref);
    const now = this.doList(def, undefined).items.find(pred);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`apiserver store: no ${def.resource} matched within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.subscribe((e) => {
        if (e.storage !== def.storage || e.type === "DELETED") return;
        const o = this.served(def, e.object);
        if (pred(o)) {
          clearTimeout(timer);
          off();
          resolve(o);
        }
      });
    });
  }
}
