// A small list/watch reflector in the manner of client-go's (tools/cache/reflector.go), over client-node's
// KubeConfig for the server, credentials and TLS only. It keeps no copy of the objects: it hands every list
// item and watch event to its handlers and remembers only each object's resourceVersion, so a relist can tell
// the handlers exactly what was added, changed or deleted meanwhile.
//
// What it does about what API servers do:
//   - watches ask for BOOKMARK events (allowWatchBookmarks) and take their resourceVersion, so a quiet
//     resource can re-watch without a 410;
//   - timeoutSeconds is 5 min × (1 + rand), as client-go's minWatchTimeout, so the server ends watches
//     and nodes do not reconnect in step;
//   - an idle-watch timer: a watch with no event, bookmark or byte for idleTimeoutMs (default 120 s: two
//     missed bookmarks, which real servers send about every minute) is aborted and re-opened from the last
//     resourceVersion. That is what ends a half-open connection (a load balancer fail-over) that would
//     otherwise serve nothing, without an error, until TCP keepalive gives up minutes later;
//   - the first list asks for resourceVersion=0 (served from the API server's watch cache, not etcd);
//     relists ask for the last resourceVersion seen ("not older than": also from the watch cache, and never
//     back in time as "0" can be on an API server whose cache lags); after a 410 or "too large
//     resource version" the list is a consistent one (resourceVersion unset), as client-go does;
//   - 410 Gone (an ERROR event or an HTTP 410) relists at once;
//   - every other failure retries after client-go's jittered exponential backoff (800 ms doubling to 30 s,
//     jitter 1.0, reset after 2 min without a failure), so nodes spread out after an API server restart;
//   - nothing here can reject unhandled: run() catches every failure (credential plugins included) and retries.
import { StringDecoder } from "node:string_decoder";
import fetch, { type Response } from "node-fetch";
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { objectKeyOf } from "../k8s/packed.js";
import { ListSplitter } from "./json-list.js";
import { log } from "../log.js";

export interface ReflectorHandlers {
  /**
   * An object was added or changed (list item or watch event), as the server sent it. `key` is its
   * "namespace/name" as the reflector keeps it: the same string, so the handler's maps share it.
   */
  upsert(obj: KubernetesObject, key: string): void;
  /** An object is gone (a DELETED event, or missing from a relist: then only its metadata name/namespace). */
  remove(obj: KubernetesObject): void;
  /** A list completed (called after each list; the first one makes the reflector synced). */
  listed?(objects: number): void;
}

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
  jitter?: number;
  /** The delay starts again from initialMs after this long without a failure. */
  resetMs?: number;
}

/** client-go's reflector backoff: 800 ms initial, ×2, 30 s cap, jitter 1.0, reset after 2 min. */
export class Backoff {
  private base = 0;
  private lastAt = -Infinity;
  private readonly o: Required<BackoffOptions>;

  constructor(
    o: BackoffOptions = {},
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {
    this.o = { initialMs: 800, maxMs: 30_000, factor: 2, jitter: 1, resetMs: 120_000, ...o };
  }

  /** The next delay: base (doubling up to maxMs) plus up to jitter × base at random. */
  next(): number {
    const t = this.now();
    this.base = t - this.lastAt > this.o.resetMs ? this.o.initialMs : Math.min(this.base * this.o.factor, this.o.maxMs);
    this.lastAt = t;
    return this.base + this.random() * this.o.jitter * this.base;
  }
}

export interface ReflectorOptions {
  kc: KubeConfig;
  /** Collection path, e.g. "/api/v1/services". */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size of lists (limit/continue). Default 500. */
  pageSize?: number;
  backoff?: BackoffOptions;
  /** Base of the server-side watch timeout; the watch asks for base × (1 + rand). Default 300 s. */
  minWatchTimeoutSeconds?: number;
  /** A watch silent for this long is replaced. Default 120 s. */
  idleTimeoutMs?: number;
  /** Each list request (one page) must answer within this. Default 60 s (the API server's own request timeout). */
  listTimeoutMs?: number;
  random?: () => number;
}

/** An API error with its HTTP code (and the Status reason when there is one). */
export class ApiStatusError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly reason?: string,
  ) {
    super(message);
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const metaOf = (o: unknown): Record<string, unknown> | undefined =>
  isObj(o) && isObj(o.metadata) ? o.metadata : undefined;
const keyOf = (m: Record<string, unknown>) =>
  objectKeyOf(typeof m.namespace === "string" ? m.namespace : undefined, String(m.name));

/**
 * A resourceVersion as kept per object: etcd's are decimal integers, which V8 keeps in the map slot itself
 * (a string is ~24 bytes more, 60k of them at start); any other value (the API calls it opaque) as the string.
 * Only compared for equality.
 */
function compactRV(rv: string): number | string {
  const n = rv.length <= 15 && /^[1-9][0-9]*$/.test(rv) ? Number(rv) : NaN;
  return Number.isNaN(n) ? rv : n;
}

/** 410 Gone / Expired: the resourceVersion is too old; relist. */
const isGone = (err: unknown) => err instanceof ApiStatusError && (err.code === 410 || err.reason === "Expired");
/** The server's cache has not reached the resourceVersion asked for (504 with ResourceVersionTooLarge). */
const isTooLarge = (err: unknown) => err instanceof ApiStatusError && /too large resource version/i.test(err.message);

/**
 * A list page as the API server sends it, read as it arrives: each item is parsed and handed to `onItem` as soon
 * as its text is complete (ListSplitter), so neither the page's text (megabytes, in V8's large-object space
 * until the next full collection: ~60 MiB at a time during a 30k list) nor its raw objects are held at once.
 * Not res.json()/text() either: they concatenate the body into one malloc'd Buffer first, which glibc keeps.
 *
 * An answer of another shape (a proxy's error page, a truncated body, `items` that is not a list, an item
 * without metadata.name) fails the list rather than reading as "no objects", which would withdraw every
 * Service; the reflector keeps its state and retries (fail static). Items before the fault may have been handed
 * over: they are objects the server listed, and nothing is withdrawn before a list completes.
 */
async function readListPage(
  path: string,
  res: Response,
  onItem: (obj: KubernetesObject) => void,
): Promise<{ rv: string; cont?: string }> {
  const bad = (why: string) => new Error(`list ${path}: malformed response (${why}); keeping the current state`);
  const split = new ListSplitter((text) => {
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (err) {
      throw bad(`an item is not JSON: ${(err as Error).message}`);
    }
    if (typeof metaOf(obj)?.name !== "string") throw bad("an item has no metadata.name");
    onItem(obj as KubernetesObject);
  });
  const utf8 = new StringDecoder("utf8"); // a character may be split between chunks
  let page: unknown;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) split.write(utf8.write(chunk));
    split.write(utf8.end());
    page = split.end();
  } catch (err) {
    if (err instanceof SyntaxError) throw bad(err.message);
    throw err;
  }
  if (!isObj(page)) throw bad("not an object");
  // The splitter took the elements out: what is left of a list is [].
  const items = page.items;
  if (items !== undefined && items !== null && !(Array.isArray(items) && items.length === 0))
    throw bad("items is not a list");
  const md = page.metadata;
  if (!isObj(md) || typeof md.resourceVersion !== "string" || md.resourceVersion === "")
    throw bad("no metadata.resourceVersion");
  return {
    rv: md.resourceVersion,
    cont: typeof md.continue === "string" && md.continue !== "" ? md.continue : undefined,
  };
}

const WATCH_TYPES = new Set(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]);

export class Reflector {
  /** resourceVersion of every object handed to upsert (compactRV), by key: what a relist diffs against. */
  private readonly versions = new Map<string, number | string>();
  private lastRV = "";
  /** The last resourceVersion cannot be served (410 / too large): the next list is a consistent one. */
  private rvUnavailable = false;
  private needList = true;
  /** Watches ended by 410 with no event in between (reset by any event or bookmark). */
  private goneStreak = 0;
  /** The server paginated the first list: relists page too (client-go's paginatedResult). */
  private paginated = false;
  private stopped = false;
  private abort: AbortController | undefined;
  private sleeper: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  private loop: Promise<void> | undefined;
  private readonly backoff: Backoff;
  private readonly random: () => number;
  /** Counters for tests and logs. */
  readonly stats = { lists: 0, watches: 0, idleAborts: 0, gone: 0, failures: 0, bookmarks: 0 };
  synced = false;

  constructor(
    private readonly o: ReflectorOptions,
    private readonly handlers: ReflectorHandlers,
  ) {
    this.random = o.random ?? Math.random;
    this.backoff = new Backoff(o.backoff, this.random);
  }

  /** Starts the list/watch loop in the background; it runs until stop(). */
  start(): void {
    if (this.loop) return;
    this.stopped = false;
    this.loop = this.run().catch((err: unknown) =>
      // run() handles its own errors; this only keeps a bug from becoming an unhandled rejection.
      log.error("reflector stopped by an unexpected error", { resource: this.o.path, error: String(err) }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    if (this.sleeper) {
      clearTimeout(this.sleeper.timer);
      this.sleeper.wake();
    }
    await this.loop;
    this.loop = undefined;
  }

  /** The resourceVersion the next watch starts from. */
  get resourceVersion(): string {
    return this.lastRV;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.needList) await this.list();
        await this.watch();
      } catch (err) {
        if (this.stopped) return;
        if (isGone(err) || isTooLarge(err)) {
          this.stats.gone++;
          const inList = this.needList;
          this.needList = true;
          log.v(2, "resourceVersion no longer served; relisting", {
            resource: this.o.path,
            resourceVersion: this.lastRV,
            error: (err as Error).message,
          });
          // A watch's 410: relist at once from the watch cache ("not older than" lastRV), unless the watch after
          // the last such relist got no event either (a server that cannot serve what it lists: back off, do
          // not spin). A list's 410: once more at once as a consistent list; if that fails too, back off.
          if (!inList) {
            if (++this.goneStreak <= 1) continue;
          } else if (!this.rvUnavailable) {
            this.rvUnavailable = true;
            continue;
          }
        }
        this.stats.failures++;
        const delay = this.backoff.next();
        log.warn("API list/watch failed; keeping the current state and retrying", {
          resource: this.o.path,
          error: err instanceof Error ? err.message : String(err),
          retryInMs: Math.round(delay),
        });
        await this.sleep(delay);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleeper = undefined;
        resolve();
      };
      this.sleeper = { timer: setTimeout(wake, ms), wake };
    });
  }

  private async request(url: URL, signal: AbortSignal): Promise<Response> {
    // applyToFetchOptions runs credential plugins (exec, token files): it may throw; the caller catches.
    const init = await this.o.kc.applyToFetchOptions({});
    return fetch(url.toString(), { ...init, method: "GET", signal });
  }

  private url(params: Record<string, string | undefined>): URL {
    const server = this.o.kc.getCurrentCluster()?.server;
    if (!server) throw new Error("kubeconfig has no current cluster");
    const url = new URL(server + this.o.path);
    if (this.o.labelSelector) url.searchParams.set("labelSelector", this.o.labelSelector);
    if (this.o.fieldSelector) url.searchParams.set("fieldSelector", this.o.fieldSelector);
    for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
    return url;
  }

  private async failure(what: string, res: Response): Promise<ApiStatusError> {
    const text = (await res.text().catch(() => "")).slice(0, 400);
    let reason: string | undefined;
    let message = text;
    try {
      const s = JSON.parse(text) as { reason?: unknown; message?: unknown };
      if (typeof s.reason === "string") reason = s.reason;
      if (typeof s.message === "string") message = s.message;
    } catch {
      // not a Status: keep the text
    }
    return new ApiStatusError(
      `${what} ${this.o.path}: HTTP ${res.status} ${message.slice(0, 200)}`,
      res.status,
      reason,
    );
  }

  /**
   * Lists everything (following continue), telling the handlers what differs page by page — so a raw page is
   * garbage once handed over, instead of every raw object of a 30k list living until the last page — and,
   * after the last page, what is gone.
   */
  private async list(): Promise<void> {
    this.stats.lists++;
    const rv = this.rvUnavailable ? undefined : this.lastRV === "" ? "0" : this.lastRV;
    const limit = rv === undefined || rv === "0" || this.paginated ? String(this.o.pageSize ?? 500) : undefined;
    const seen = new Set<string>();
    let listRV: string;
    let cont: string | undefined;
    let first = true;
    do {
      // A continued page names its snapshot in the token: no resourceVersion with it (the API server refuses both).
      const url = this.url(cont ? { limit, continue: cont } : { limit, resourceVersion: rv });
      const abort = (this.abort = new AbortController());
      const timer = setTimeout(() => abort.abort(), this.o.listTimeoutMs ?? 60_000);
      let page;
      try {
        const res = await this.request(url, abort.signal);
        if (res.status !== 200) throw await this.failure("list", res);
        page = await readListPage(this.o.path, res, (obj) => {
          if (this.stopped) return;
          const md = metaOf(obj)!;
          const key = keyOf(md);
          seen.add(key);
          const objRV = compactRV(typeof md.resourceVersion === "string" ? md.resourceVersion : "");
          // Unchanged since the handlers saw it: nothing to do (a relist of 30k objects re-validates only changes).
          if (objRV !== "" && this.versions.get(key) === objRV) return;
          this.versions.set(key, objRV);
          this.handlers.upsert(obj, key);
        });
      } catch (err) {
        if (abort.signal.aborted && !this.stopped)
          throw new Error(`list ${this.o.path}: no answer within ${this.o.listTimeoutMs ?? 60_000} ms`, { cause: err });
        throw err;
      } finally {
        clearTimeout(timer);
      }
      if (this.stopped) return;
      if (first && page.cont) this.paginated = true;
      first = false;
      listRV = page.rv;
      cont = page.cont;
    } while (cont);

    for (const key of [...this.versions.keys()]) {
      if (seen.has(key)) continue;
      this.versions.delete(key);
      const i = key.indexOf("/");
      this.handlers.remove({
        metadata: i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) },
      });
    }
    this.lastRV = listRV;
    this.rvUnavailable = false;
    this.needList = false;
    this.synced = true;
    this.handlers.listed?.(seen.size);
  }

  /** One watch from lastRV until it ends (server timeout, close, idle abort: resolves) or fails (throws). */
  private async watch(): Promise<void> {
    this.stats.watches++;
    const timeoutSeconds = Math.floor((this.o.minWatchTimeoutSeconds ?? 300) * (1 + this.random()));
    const url = this.url({
      watch: "true",
      resourceVersion: this.lastRV,
      allowWatchBookmarks: "true",
      timeoutSeconds: String(timeoutSeconds),
    });
    const idleMs = this.o.idleTimeoutMs ?? 120_000;
    const abort = (this.abort = new AbortController());
    let idle = false;
    let idleTimer: NodeJS.Timeout | undefined;
    const alive = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        idle = true;
        abort.abort();
      }, idleMs);
    };
    const started = Date.now();
    let events = 0;
    alive(); // connecting counts too: a server that accepts and never answers is idle
    try {
      const res = await this.request(url, abort.signal);
      if (res.status !== 200) throw await this.failure("watch", res);
      log.v(2, "watching", { resource: this.o.path, resourceVersion: this.lastRV, timeoutSeconds });
      let buf = "";
      const utf8 = new StringDecoder("utf8"); // a character may be split between chunks
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        alive();
        buf += utf8.write(chunk);
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === "") continue;
          events++;
          this.event(line);
        }
      }
      if (this.stopped) return;
      // client-go: a watch that ends within a second with nothing in it is an error (back off, do not spin).
      if (events === 0 && Date.now() - started < 1000)
        throw new Error(`watch ${this.o.path}: closed by the server at once without an event`);
    } catch (err) {
      if (this.stopped) return;
      if (idle) {
        this.stats.idleAborts++;
        log.warn("watch silent; re-watching from the last resourceVersion", {
          resource: this.o.path,
          resourceVersion: this.lastRV,
          idleMs,
        });
        return;
      }
      throw err;
    } finally {
      clearTimeout(idleTimer);
      abort.abort(); // releases the connection whatever ended the watch
    }
  }

  /** One watch event line: checked before anything uses it; a malformed one ends the watch and relists. */
  private event(line: string): void {
    let ev: unknown;
    try {
      ev = JSON.parse(line);
    } catch {
      this.needList = true;
      throw new Error(`watch ${this.o.path}: an event is not JSON (${line.slice(0, 120)})`);
    }
    const type = isObj(ev) ? ev.type : undefined;
    const obj = isObj(ev) ? ev.object : undefined;
    const md = metaOf(obj);
    if (typeof type !== "string" || !WATCH_TYPES.has(type) || !isObj(obj)) {
      this.needList = true;
      throw new Error(`watch ${this.o.path}: malformed event (${line.slice(0, 120)})`);
    }
    if (type === "ERROR") {
      const code = typeof obj.code === "number" ? obj.code : 500;
      const reason = typeof obj.reason === "string" ? obj.reason : undefined;
      throw new ApiStatusError(
        `watch ${this.o.path}: ${typeof obj.message === "string" ? obj.message : "error event"}`,
        code,
        reason,
      );
    }
    const rv = md?.resourceVersion;
    if (typeof rv !== "string" || rv === "" || (type !== "BOOKMARK" && typeof md!.name !== "string")) {
      this.needList = true;
      throw new Error(`watch ${this.o.path}: malformed ${type} event (${line.slice(0, 120)})`);
    }
    if (type === "BOOKMARK") {
      this.stats.bookmarks++;
    } else if (type === "DELETED") {
      const key = keyOf(md!);
      if (this.versions.delete(key)) this.handlers.remove(obj);
    } else {
      const key = keyOf(md!);
      this.versions.set(key, compactRV(rv));
      this.handlers.upsert(obj, key);
    }
    // Only once handled: a watch that fails here resumes with this event.
    this.lastRV = rv;
    this.goneStreak = 0;
  }
}
