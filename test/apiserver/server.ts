// A small Kubernetes API server for tests, on node's http module: discovery, OpenAPI v3 stubs, CRUD, list paging,
// watch streams with bookmarks and 410 Gone, Table output for kubectl, and controls to break it on purpose.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { ApiError, badRequest, methodNotAllowed, statusObject, successStatus, type Obj } from "./errors.js";
import {
  SERVER_VERSION,
  aggregatedDiscovery,
  apiGroup,
  apiGroupList,
  apiResourceList,
  apiVersions,
  gvPath,
  groupVersions,
  openapiV3Doc,
  openapiV3Index,
} from "./discovery.js";
import { apiVersionOf, type ResourceDef } from "./resources.js";
import { Store, type PatchType, type StoreEvent, type StoreOptions } from "./store.js";

export interface ApiServerOptions extends StoreOptions {
  /** 0 (default) picks a free port; the port is kept across stop()/start(). */
  port?: number;
  host?: string;
  /** Interval of BOOKMARK events on watches with allowWatchBookmarks=true. Default 5000 ms (the real one: ~1 min). */
  bookmarkIntervalMs?: number;
  /** Serve aggregated discovery (apidiscovery.k8s.io/v2) when asked for it, as kubectl 1.32 does. Default true. */
  aggregatedDiscovery?: boolean;
  /** Close every watch after this long, like the apiserver's --min-request-timeout. Default: never. */
  maxWatchSeconds?: number;
  /** Keep at most this many request records. Default 10000. */
  requestLogLimit?: number;
  /** Print every request to stderr. */
  verbose?: boolean;
  /** Use an existing store (e.g. to bring up a second server over the same data). */
  store?: Store;
}

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete" | "deletecollection";

export interface RequestRecord {
  seq: number;
  time: number;
  method: string;
  path: string;
  query: Record<string, string>;
  /** Set for resource requests; discovery/openapi/version requests have `kind` instead. */
  verb?: Verb;
  kind: "resource" | "discovery" | "openapi" | "version" | "health" | "other";
  group?: string;
  version?: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  status?: number;
  userAgent?: string;
  accept?: string;
  contentType?: string;
  /** The parsed request body of create/update/patch/delete. */
  body?: unknown;
}

export type RequestFilter =
  | Partial<
      Pick<
        RequestRecord,
        "verb" | "kind" | "method" | "group" | "resource" | "subresource" | "namespace" | "name" | "status"
      >
    >
  | ((r: RequestRecord) => boolean);

export interface FaultOptions {
  /** HTTP status to answer with. Default 500. */
  code?: number;
  reason?: string;
  message?: string;
  /** How many matching requests fail. Default 1; Infinity for all until cancelled. */
  times?: number;
  /** Instead of answering, destroy the connection. */
  hangUp?: boolean;
  /** Answer 200 with this body as application/json (e.g. text that is not JSON, or JSON of the wrong shape). */
  garbage?: string;
  /** Wait this long first. With `slowOnly`, then answer the request normally (a slow list, not a failed one). */
  delayMs?: number;
  /** With delayMs: delay only, no failure. */
  slowOnly?: boolean;
}

interface Fault extends FaultOptions {
  filter: RequestFilter;
  left: number;
}

export interface WatchInfo {
  id: number;
  resource: string;
  group: string;
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  startedAt: number;
  /** The resourceVersion of the last event or bookmark sent. */
  lastResourceVersion: string;
  events: number;
}

interface WatchConn extends WatchInfo {
  res: ServerResponse;
  /** Sends nothing more (no events, no bookmarks) and never closes: a half-open connection as seen by the client. */
  silent: boolean;
  /** Callbacks (not methods): openWatches() drops them with the response. */
  end: () => void;
  gone: () => void;
}

const TRUE = new Set(["true", "1", "t", "T", "TRUE", "True"]);

function matches(r: RequestRecord, f: RequestFilter): boolean {
  if (typeof f === "function") return f(r);
  return Object.entries(f).every(([k, v]) => v === undefined || (r as unknown as Obj)[k] === v);
}

function acceptsTable(accept: string | undefined): boolean {
  return !!accept && /as=Table/.test(accept) && /g=meta\.k8s\.io/.test(accept);
}

/** "v2" or "v2beta1" when the client asks for aggregated discovery before plain JSON. */
function aggregatedVersion(accept: string | undefined): string | undefined {
  for (const part of (accept ?? "").split(",")) {
    if (!/as=APIGroupDiscoveryList/.test(part) || !/g=apidiscovery\.k8s\.io/.test(part)) continue;
    const v = part.match(/v=(v2(beta1)?)\b/);
    if (v) return v[1];
  }
  return undefined;
}

export class ApiServer {
  readonly host: string;
  readonly store: Store;
  private _port: number;
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<WatchConn>();
  private readonly log: RequestRecord[] = [];
  private readonly faults: Fault[] = [];
  private seq = 0;
  private watchSeq = 0;
  private silentNew = false;
  private readonly opts: ApiServerOptions;

  constructor(opts: ApiServerOptions = {}) {
    this.opts = opts;
    this.host = opts.host ?? "127.0.0.1";
    this._port = opts.port ?? 0;
    this.store = opts.store ?? new Store(opts);
  }

  get port(): number {
    return this._port;
  }

  /** http://127.0.0.1:PORT */
  get url(): string {
    return `http://${this.host.includes(":") ? `[${this.host}]` : this.host}:${this._port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Starts listening (again): on the same port as before, with the store as it is now. */
  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 30_000;
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this._port, this.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const addr = server.address();
    if (addr && typeof addr === "object") this._port = addr.port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (watches included) abruptly. The store is kept. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const w of [...this.watches]) w.end();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    server.closeAllConnections();
    await closed;
  }

  /** stop(), wait downMs (during which the store can still be changed), start() on the same port. */
  async restart(downMs = 0): Promise<void> {
    await this.stop();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.start();
  }

  /** Ends every open watch with an ERROR event carrying a 410 Expired Status, and compacts the history so that
   * watches and continue tokens from any older resourceVersion answer 410 too: clients must relist. */
  forceGone(): void {
    this.store.compact();
    for (const w of [...this.watches]) w.gone();
  }

  /** Closes every watch connection abruptly (socket destroyed mid-stream). Returns how many there were. */
  dropWatches(): number {
    const n = this.watches.size;
    for (const w of [...this.watches]) {
      w.res.socket?.destroy();
      w.end();
    }
    return n;
  }

  /**
   * Makes every open watch go silent without closing: no more events or bookmarks, the connection stays up (what
   * a client sees of a half-open connection after a load balancer fail-over). With `newWatches`, watches opened
   * later are silent too until the returned function is called. Returns how many open watches went silent.
   */
  silenceWatches(opts: { newWatches?: boolean } = {}): { count: number; cancel: () => void } {
    let count = 0;
    for (const w of this.watches) {
      if (!w.silent) count++;
      w.silent = true;
    }
    if (opts.newWatches) this.silentNew = true;
    return { count, cancel: () => (this.silentNew = false) };
  }

  /** The watches open now. */
  openWatches(): WatchInfo[] {
    return [...this.watches].map(({ res: _r, end: _e, gone: _g, silent: _s, ...info }) => ({ ...info }));
  }

  /** Resolves when at least `n` watches matching `filter` are open; rejects after timeoutMs. */
  async waitForWatches(
    n: number,
    filter: Partial<Pick<WatchInfo, "resource" | "group" | "namespace">> = {},
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const count = this.openWatches().filter((w) =>
        Object.entries(filter).every(([k, v]) => (w as unknown as Obj)[k] === v),
      ).length;
      if (count >= n) return;
      if (Date.now() > deadline) throw new Error(`apiserver: ${count} of ${n} watches open after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Every request seen, oldest first (bounded by requestLogLimit). */
  get requests(): readonly RequestRecord[] {
    return this.log;
  }

  countRequests(filter: RequestFilter = {}): number {
    return this.log.filter((r) => matches(r, filter)).length;
  }

  clearRequests(): void {
    this.log.length = 0;
  }

  /** Makes the next `times` requests matching `filter` fail. Returns a function that cancels the fault. */
  failRequests(filter: RequestFilter, opts: FaultOptions = {}): () => void {
    const f: Fault = { ...opts, filter, left: opts.times ?? 1 };
    this.faults.push(f);
    return () => {
      const i = this.faults.indexOf(f);
      if (i >= 0) this.faults.splice(i, 1);
    };
  }

  /** A kubeconfig (YAML) pointing at this server, without credentials. */
  kubeconfigYaml(): string {
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: test",
      "  cluster:",
      `    server: ${this.url}`,
      "users:",
      "- name: test",
      "  user: {}",
      "contexts:",
      "- name: test",
      "  context:",
      "    cluster: test",
      "    user: test",
      "    namespace: default",
      "current-context: test",
      "",
    ].join("\n");
  }

  /** Writes kubeconfigYaml() to `path` (default: a new temp dir) and returns the path. */
  writeKubeconfig(path?: string): string {
    const p = path ?? join(mkdtempSync(join(tmpdir(), "apiserver-kubeconfig-")), "config");
    writeFileSync(p, this.kubeconfigYaml());
    return p;
  }

  /** Options for client-node's KubeConfig.loadFromOptions(). */
  kubeConfigOptions(): {
    clusters: { name: string; server: string; skipTLSVerify: boolean }[];
    users: { name: string }[];
    contexts: { name: string; cluster: string; user: string; namespace: string }[];
    currentContext: string;
  } {
    return {
      clusters: [{ name: "test", server: this.url, skipTLSVerify: true }],
      users: [{ name: "test" }],
      contexts: [{ name: "test", cluster: "test", user: "test", namespace: "default" }],
      currentContext: "test",
    };
  }

  // ---------------------------------------------------------------------------------------------

  private send(
    res: ServerResponse,
    rec: RequestRecord,
    code: number,
    body: unknown,
    contentType = "application/json",
  ): void {
    rec.status = code;
    if (res.headersSent || res.destroyed) return;
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(code, {
      "Content-Type": contentType,
      "Cache-Control": "no-cache, private",
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  private sendError(res: ServerResponse, rec: RequestRecord, e: unknown): void {
    if (e instanceof ApiError) return this.send(res, rec, e.code, e.toStatus());
    console.error("apiserver: internal error", e);
    this.send(
      res,
      rec,
      500,
      statusObject(500, "InternalError", `Internal error occurred: ${String((e as Error)?.message ?? e)}`),
    );
  }

  private async readBody(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const ct = (req.headers["content-type"] ?? "").toLowerCase();
    if (ct.includes("protobuf") || ct.includes("cbor") || raw.subarray(0, 4).toString("latin1") === "k8s\0")
      // kubectl's typed clients (e.g. `kubectl create namespace`, `kubectl create service`) send protobuf bodies
      throw new ApiError(
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (this test apiserver does not decode ${ct || "protobuf"}; use kubectl create/apply -f with a manifest)`,
      );
    const text = raw.toString("utf8");
    if (text.trim() === "") return undefined;
    try {
      return ct.includes("yaml") ? parseYaml(text) : JSON.parse(text);
    } catch (err) {
      throw badRequest(`the object provided is unrecognized: ${(err as Error).message}`);
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const rec: RequestRecord = {
      seq: ++this.seq,
      time: Date.now(),
      method: req.method ?? "GET",
      path: url.pathname,
      query,
      kind: "other",
      userAgent: req.headers["user-agent"],
      accept: req.headers.accept,
      contentType: req.headers["content-type"],
    };
    this.log.push(rec);
    while (this.log.length > (this.opts.requestLogLimit ?? 10_000)) this.log.shift();
    if (this.opts.verbose)
      res.on("finish", () => console.error(`apiserver: ${rec.method} ${req.url} -> ${rec.status}`));
    try {
      const segs = url.pathname
        .split("/")
        .filter((s) => s !== "")
        .map(decodeURIComponent);
      this.classify(rec, segs);
      const fault = this.faults.find((f) => f.left > 0 && matches(rec, f.filter));
      if (fault) {
        fault.left--;
        if (fault.left <= 0) this.faults.splice(this.faults.indexOf(fault), 1);
        if (fault.delayMs) {
          await new Promise((r) => setTimeout(r, fault.delayMs));
          if (res.destroyed || !this.server) return; // the client gave up, or the server went down meanwhile
        }
        if (fault.slowOnly) return await this.route(req, res, rec, segs, query);
        if (fault.hangUp) {
          rec.status = 0;
          req.socket.destroy();
          return;
        }
        if (fault.garbage !== undefined) {
          rec.status = 200;
          res.writeHead(200, { "Content-Type": "application/json" });
          res.end(fault.garbage);
          return;
        }
        const code = fault.code ?? 500;
        const reason =
          fault.reason ??
          (code === 500
            ? "InternalError"
            : code === 503
              ? "ServiceUnavailable"
              : code === 429
                ? "TooManyRequests"
                : "InternalError");
        return this.send(res, rec, code, statusObject(code, reason, fault.message ?? "injected failure"));
      }
      await this.route(req, res, rec, segs, query);
    } catch (e) {
      this.sendError(res, rec, e);
    }
  }

  /** Fills in what the request is about, for the log and for fault matching. */
  private classify(rec: RequestRecord, segs: string[]): void {
    const [a, b, c] = segs;
    if (a === "version") rec.kind = "version";
    else if (a === "healthz" || a === "livez" || a === "readyz") rec.kind = "health";
    else if (a === "openapi") rec.kind = "openapi";
    else if ((a === "api" && segs.length <= 2) || (a === "apis" && segs.length <= 3)) rec.kind = "discovery";
    if (rec.kind !== "other") return;
    let group: string;
    let version: string;
    let rest: string[];
    if (a === "api" && b) [group, version, rest] = ["", b, segs.slice(2)];
    else if (a === "apis" && b && c) [group, version, rest] = [b, c, segs.slice(3)];
    else return;
    const namespacedNames = new Set(
      this.store.defs.filter((d) => d.group === group && d.version === version && d.namespaced).map((d) => d.resource),
    );
    rec.kind = "resource";
    rec.group = group;
    rec.version = version;
    if (rest[0] === "namespaces" && rest.length >= 3 && namespacedNames.has(rest[2]!)) {
      rec.namespace = rest[1];
      [rec.resource, rec.name, rec.subresource] = [rest[2], rest[3], rest[4]];
      if (rest.length > 5) rec.subresource = rest.slice(4).join("/");
    } else {
      [rec.resource, rec.name, rec.subresource] = [rest[0], rest[1], rest[2]];
      if (rest.length > 3) rec.subresource = rest.slice(2).join("/");
    }
    const m = rec.method;
    if (m === "GET") rec.verb = rec.name ? "get" : TRUE.has(rec.query.watch ?? "") ? "watch" : "list";
    else if (m === "POST") rec.verb = "create";
    else if (m === "PUT") rec.verb = "update";
    else if (m === "PATCH") rec.verb = "patch";
    else if (m === "DELETE") rec.verb = rec.name ? "delete" : "deletecollection";
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    rec: RequestRecord,
    segs: string[],
    query: Record<string, string>,
  ): Promise<void> {
    const defs = this.store.defs;
    const gvs = groupVersions(defs);
    const get = rec.method === "GET" || rec.method === "HEAD";
    const notFoundPage = () =>
      this.send(res, rec, 404, statusObject(404, "NotFound", "the server could not find the requested resource", {}));
    switch (rec.kind) {
      case "version":
        return get ? this.send(res, rec, 200, SERVER_VERSION) : notFoundPage();
      case "health":
        return this.send(res, rec, 200, "ok", "text/plain; charset=utf-8");
      case "openapi": {
        if (segs[1] === "v3") {
          if (segs.length === 2) return this.send(res, rec, 200, openapiV3Index(defs));
          const path = segs.slice(2).join("/");
          const gv = gvs.find((g) => gvPath(g) === path);
          return gv ? this.send(res, rec, 200, openapiV3Doc(defs, gv)) : notFoundPage();
        }
        // no OpenAPI v2: kubectl then uses its compiled-in types for apply's patches
        return notFoundPage();
      }
      case "discovery": {
        if (!get)
          return this.send(
            res,
            rec,
            405,
            statusObject(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
          );
        const aggregated = this.opts.aggregatedDiscovery !== false ? aggregatedVersion(req.headers.accept) : undefined;
        const [a, b, c] = segs;
        if (segs.length === 1 && aggregated) {
          const apiVersion = `apidiscovery.k8s.io/${aggregated}`;
          return this.send(
            res,
            rec,
            200,
            aggregatedDiscovery(defs, a === "api", apiVersion),
            `application/json;g=apidiscovery.k8s.io;v=${aggregated};as=APIGroupDiscoveryList`,
          );
        }
        if (a === "api" && !b) return this.send(res, rec, 200, apiVersions(`${this.host}:${this._port}`));
        if (a === "apis" && !b) return this.send(res, rec, 200, apiGroupList(gvs));
        if (a === "api")
          return gvs.some((g) => g.group === "" && g.version === b)
            ? this.send(res, rec, 200, apiResourceList(defs, { group: "", version: b! }))
            : notFoundPage();
        if (!c) {
          const g = apiGroup(gvs, b!);
          return g ? this.send(res, rec, 200, g) : notFoundPage();
        }
        return gvs.some((g) => g.group === b && g.version === c)
          ? this.send(res, rec, 200, apiResourceList(defs, { group: b!, version: c }))
          : notFoundPage();
      }
      case "resource":
        return this.resource(req, res, rec, query);
      default:
        if (segs.length === 0 && get) {
          const paths = [
            "/api",
            "/api/v1",
            "/apis",
            ...gvs.filter((g) => g.group).map((g) => `/${gvPath(g)}`),
            "/healthz",
            "/livez",
            "/openapi/v3",
            "/readyz",
            "/version",
          ];
          return this.send(res, rec, 200, { paths });
        }
        return notFoundPage();
    }
  }

  private async resource(
    req: IncomingMessage,
    res: ServerResponse,
    rec: RequestRecord,
    q: Record<string, string>,
  ): Promise<void> {
    const def = this.store.findDef(rec.group!, rec.version!, rec.resource ?? "");
    const ns = rec.namespace;
    if (!def || (ns !== undefined && !def.namespaced) || (def.namespaced && ns === undefined && rec.name !== undefined))
      return this.send(
        res,
        rec,
        404,
        statusObject(404, "NotFound", "the server could not find the requested resource", {}),
      );
    if (rec.subresource && !def.subresources?.includes(rec.subresource))
      return this.send(
        res,
        rec,
        404,
        statusObject(404, "NotFound", "the server could not find the requested resource", {}),
      );
    if (!rec.verb)
      return this.send(
        res,
        rec,
        405,
        statusObject(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
      );
    const dryRun = q.dryRun === "All";
    const table = acceptsTable(req.headers.accept);
    const name = rec.name!;
    switch (rec.verb) {
      case "get": {
        const o = this.store.doGet(def, ns, name);
        return this.send(
          res,
          rec,
          200,
          table ? this.toTable(def, [o], o.metadata.resourceVersion, undefined, q.includeObject) : o,
        );
      }
      case "list": {
        const r = this.store.doList(def, ns, {
          labelSelector: q.labelSelector,
          fieldSelector: q.fieldSelector,
          limit: q.limit ? Number(q.limit) : undefined,
          continue: q.continue,
          resourceVersion: q.resourceVersion,
          resourceVersionMatch: q.resourceVersionMatch,
        });
        if (table)
          return this.send(
            res,
            rec,
            200,
            this.toTable(def, r.items, r.resourceVersion, r.continue, q.includeObject, r.remainingItemCount),
          );
        const metadata: Obj = { resourceVersion: r.resourceVersion };
        if (r.continue) metadata.continue = r.continue;
        if (r.remainingItemCount !== undefined) metadata.remainingItemCount = r.remainingItemCount;
        return this.send(res, rec, 200, {
          kind: def.listKind,
          apiVersion: apiVersionOf(def),
          metadata,
          items: r.items,
        });
      }
      case "watch":
        return this.watch(def, ns, q, res, rec, table);
      case "create": {
        if (rec.subresource)
          return this.send(
            res,
            rec,
            405,
            methodNotAllowed("the server does not allow this method on the requested resource").toStatus(),
          );
        const body = (rec.body = await this.readBody(req));
        const o = this.store.doCreate(def, ns, body, { dryRun, fromApi: true });
        return this.send(res, rec, 201, o);
      }
      case "update": {
        const body = (rec.body = await this.readBody(req));
        const r = this.store.doUpdate(def, ns, name, body, { dryRun, fromApi: true, subresource: rec.subresource });
        return this.send(res, rec, r.created ? 201 : 200, r.object);
      }
      case "patch": {
        const ct = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
        const types: Record<string, PatchType> = {
          "application/merge-patch+json": "merge",
          "application/strategic-merge-patch+json": "strategic",
          "application/json-patch+json": "json",
          "application/apply-patch+yaml": "apply",
          "application/apply-patch+cbor": "apply",
        };
        const type = types[ct];
        if (!type)
          return this.send(
            res,
            rec,
            415,
            statusObject(
              415,
              "UnsupportedMediaType",
              `the body of the request was in an unknown format - accepted media types include: ${Object.keys(types).join(", ")}`,
            ),
          );
        const body = (rec.body = await this.readBody(req));
        const r = this.store.doPatch(def, ns, name, type, body, {
          dryRun,
          fromApi: true,
          subresource: rec.subresource,
        });
        return this.send(res, rec, r.created ? 201 : 200, r.object);
      }
      case "delete": {
        const body = ((await this.readBody(req)) as Obj | undefined) ?? {};
        rec.body = body;
        const dr = dryRun || (Array.isArray(body.dryRun) && body.dryRun.includes("All"));
        const r = this.store.doDelete(def, ns, name, { dryRun: dr, preconditions: body.preconditions, fromApi: true });
        if (!r.finished) return this.send(res, rec, dr ? 200 : 202, r.object);
        if (def.returnDeletedObject) return this.send(res, rec, 200, r.object);
        return this.send(
          res,
          rec,
          200,
          successStatus({ name, group: def.group || undefined, kind: def.resource, uid: r.object.metadata?.uid }),
        );
      }
      case "deletecollection": {
        const body = ((await this.readBody(req)) as Obj | undefined) ?? {};
        rec.body = body;
        const dr = dryRun || (Array.isArray(body.dryRun) && body.dryRun.includes("All"));
        const r = this.store.doList(def, ns, { labelSelector: q.labelSelector, fieldSelector: q.fieldSelector });
        const items = r.items.map(
          (o) => this.store.doDelete(def, o.metadata.namespace, o.metadata.name, { dryRun: dr }).object,
        );
        return this.send(res, rec, 200, {
          kind: def.listKind,
          apiVersion: apiVersionOf(def),
          metadata: { resourceVersion: this.store.resourceVersion },
          items,
        });
      }
    }
  }

  private toTable(
    def: ResourceDef,
    items: Obj[],
    rv: string,
    cont: string | undefined,
    includeObject: string | undefined,
    remaining?: number,
  ): Obj {
    const now = Date.now();
    const columns = def.table?.columns ?? [
      { name: "Name", type: "string", format: "name", description: "Name must be unique within a namespace." },
      {
        name: "Created At",
        type: "date",
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
      },
    ];
    const metadata: Obj = { resourceVersion: rv };
    if (cont) metadata.continue = cont;
    if (remaining !== undefined) metadata.remainingItemCount = remaining;
    return {
      kind: "Table",
      apiVersion: "meta.k8s.io/v1",
      metadata,
      columnDefinitions: columns.map((c) => ({
        name: c.name,
        type: c.type,
        format: c.format ?? "",
        description: c.description ?? "",
        priority: c.priority ?? 0,
      })),
      rows: items.map((o) => {
        const row: Obj = {
          cells: def.table ? def.table.cells(o, now) : [o.metadata.name, o.metadata.creationTimestamp],
        };
        if (includeObject === "Object") row.object = o;
        else if (includeObject !== "None")
          row.object = { kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: o.metadata };
        return row;
      }),
    };
  }

  private watch(
    def: ResourceDef,
    ns: string | undefined,
    q: Record<string, string>,
    res: ServerResponse,
    rec: RequestRecord,
    table: boolean,
  ): void {
    const match = this.store.matcher(def, q.labelSelector, q.fieldSelector);
    const rvParam = q.resourceVersion ?? "";
    if (rvParam !== "" && !/^\d+$/.test(rvParam)) throw badRequest(`invalid resource version: ${rvParam}`);
    const sendInitial = TRUE.has(q.sendInitialEvents ?? "");
    const bookmarks = TRUE.has(q.allowWatchBookmarks ?? "");
    rec.status = 200;
    res.writeHead(200, {
      "Content-Type": "application/json",
      "Cache-Control": "no-cache, private",
      "Transfer-Encoding": "chunked",
    });
    res.flushHeaders();
    res.socket?.setNoDelay(true);

    const timers: NodeJS.Timeout[] = [];
    let unsubscribe = () => {};
    let closed = false;
    const w: WatchConn = {
      id: ++this.watchSeq,
      resource: def.resource,
      group: def.group,
      namespace: ns,
      labelSelector: q.labelSelector,
      fieldSelector: q.fieldSelector,
      startedAt: Date.now(),
      lastResourceVersion: rvParam,
      events: 0,
      res,
      silent: this.silentNew,
      end: () => {
        if (closed) return;
        closed = true;
        unsubscribe();
        for (const t of timers) clearInterval(t);
        this.watches.delete(w);
        if (!res.destroyed) res.end();
      },
      gone: () => {
        if (closed) return;
        write(
          "ERROR",
          statusObject(
            410,
            "Expired",
            `too old resource version: ${w.lastResourceVersion || "0"} (${this.store.compactedResourceVersion})`,
          ),
        );
        w.end();
      },
    };
    const write = (type: string, object: Obj) => {
      if (closed || res.destroyed || w.silent) return;
      if (object.metadata?.resourceVersion) w.lastResourceVersion = object.metadata.resourceVersion;
      w.events++;
      const out =
        table && type !== "ERROR" && type !== "BOOKMARK"
          ? this.toTable(def, [object], object.metadata?.resourceVersion ?? "", undefined, q.includeObject)
          : object;
      res.write(`${JSON.stringify({ type, object: out })}\n`);
    };
    const inScope = (o: Obj) => !def.namespaced || ns === undefined || o.metadata?.namespace === ns;
    const onEvent = (e: StoreEvent) => {
      if (e.storage !== def.storage) return;
      const cur = this.store.toServed(def, e.object);
      const prev = e.prev && this.store.toServed(def, e.prev);
      const curOk = inScope(cur) && match(cur);
      const prevOk = !!prev && inScope(prev) && match(prev);
      if (e.type === "ADDED") {
        if (curOk) write("ADDED", cur);
      } else if (e.type === "DELETED") {
        if (curOk) write("DELETED", cur);
      } else if (curOk && prevOk) write("MODIFIED", cur);
      else if (curOk) write("ADDED", cur);
      else if (prevOk) {
        prev.metadata.resourceVersion = String(e.rv);
        write("DELETED", prev);
      }
    };
    this.watches.add(w);
    res.on("close", () => w.end());

    if (rvParam === "" || rvParam === "0" || sendInitial) {
      // "get state and start at most recent": synthetic ADDED events for what exists now
      for (const o of this.store.storedItems(def, ns)) {
        const s = this.store.toServed(def, o);
        if (match(s)) write("ADDED", s);
      }
      w.lastResourceVersion = this.store.resourceVersion;
      if (sendInitial && bookmarks)
        write("BOOKMARK", {
          kind: def.kind,
          apiVersion: apiVersionOf(def),
          metadata: {
            resourceVersion: this.store.resourceVersion,
            annotations: { "k8s.io/initial-events-end": "true" },
          },
        });
    } else {
      let backlog: StoreEvent[];
      try {
        backlog = this.store.eventsSince(Number(rvParam));
      } catch (e) {
        if (e instanceof ApiError) {
          write("ERROR", e.toStatus());
          w.end();
          return;
        }
        throw e;
      }
      for (const e of backlog) onEvent(e);
    }
    unsubscribe = this.store.subscribe(onEvent);
    if (bookmarks && !table) {
      timers.push(
        setInterval(
          () =>
            write("BOOKMARK", {
              kind: def.kind,
              apiVersion: apiVersionOf(def),
              metadata: { resourceVersion: this.store.resourceVersion },
            }),
          this.opts.bookmarkIntervalMs ?? 5000,
        ),
      );
    }
    const timeout = q.timeoutSeconds ? Number(q.timeoutSeconds) : this.opts.maxWatchSeconds;
    if (timeout && timeout > 0) timers.push(setTimeout(() => w.end(), timeout * 1000));
  }
}

/** Creates and starts a server. */
export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const s = new ApiServer(opts);
  await s.start();
  return s;
}
