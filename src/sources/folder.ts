// The manifest-folder source (`--source dir:PATH`, docs/cli.md): every *.yaml, *.yml and *.json file
// directly in PATH (not in subfolders; names starting with "." are skipped), multi-document YAML and
// `kind: List` (or FooList) allowed, holding Services, EndpointSlices (discovery.k8s.io/v1), Endpoints (v1,
// converted to slices) and Nodes. Other kinds are ignored quietly (--v 2 says so).
//
// Robustness rules:
// - Each object is validated once, when its file's content changes; an invalid object is logged and counted
//   (bpfproxy_invalid_objects_total) and skipped, the rest of the file still counts.
// - A file that fails to read or parse is logged and counted (kind "File", reason parse_error). Its objects
//   from the last good read stay in effect, so that saving a half-edited file does not withdraw Services from
//   the data plane; deleting the file removes them. A file that never parsed contributes nothing.
// - Fail-static: a folder that is missing (e.g. while a ConfigMap volume or a deploy tool swaps it) or
//   unreadable keeps the last good objects; only an existing, readable folder without a file removes them.
//   Likewise a file that cannot be read (permissions, I/O error, a symlink whose target is missing or loops)
//   keeps its last good objects. Each is logged and counted in bpfproxy_source_read_errors_total.
// - Partial writes: a file that changed less than settleMs ago, or changed while it was read, is read again
//   once it is quiet, so a file caught half-written (truncated to empty, or cut at a line that still parses)
//   is never applied. A file that becomes empty keeps its last objects; delete the file to remove them.
//   Writers that rename a complete file into place (kubectl, ConfigMap volumes) are never caught half way.
// - Objects without metadata.namespace land in "default", as with kubectl.
// - The same object (kind + namespace/name) in two places: the later one in file-name/document order wins,
//   with a warning.
//
// Watching: fs.watch on the folder with a debounce, plus a slow periodic rescan as a safety net (fs.watch
// misses events on some file systems and after the folder is replaced). "change" is emitted only when the
// resulting objects differ, not for every write.

import { ObjectIndex } from "./object-index.js";
import { EventEmitter } from "node:events";
import { lstatSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from "node:fs";
import { lstat, readdir, readFile, stat } from "node:fs/promises";
import type { BigIntStats } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Composer, LineCounter, Parser } from "yaml";
import { endpointsToSlices } from "../k8s/endpoints.js";
import type { EndpointSlice, Node, Service } from "../k8s/schemas.js";
import {
  reportInvalid,
  reportResult,
  validateObject,
  type InvalidObject,
  type KnownKind,
  type ValidObject,
} from "../k8s/validate.js";
import { LazyItems, parseJsonLazily } from "./json-list.js";
import { log } from "../log.js";
import { sourceReadErrorsTotal } from "../metrics.js";
import type { ObjectSnapshot, Source } from "./types.js";

const MANIFEST = /\.(ya?ml|json)$/i;

export interface FolderSourceOptions {
  /** Quiet time after a file-system event before rescanning. Default 150 ms. */
  debounceMs?: number;
  /** Periodic full rescan. Default 10 s; 0 disables it. */
  rescanMs?: number;
  /** A file modified less than this long ago is still being written: read it again later. Default 100 ms. */
  settleMs?: number;
}

/** A file that is still changing: keep what it gave before and read it again after the given delay. */
class Unsettled {
  constructor(readonly retryInMs: number) {}
}

/**
 * A file whose identity (device, inode, size, mtime and ctime in ns) is that of its last read: not read again.
 * What keeps an idle daemon idle: a rescan of an unchanged 25 MB folder is one stat per file.
 */
class Unchanged {}
const UNCHANGED = new Unchanged();

/** A file's text with the identity it had both before and after it was read. */
class Fresh {
  constructor(
    readonly text: string,
    readonly id: string,
  ) {}
}

/**
 * Contents of one read of the folder: file name → text, the error reading it, Unsettled or Unchanged.
 * undefined: no folder (the caller keeps its last good state).
 */
type FolderRead = Map<string, string | Fresh | Error | Unsettled | Unchanged> | undefined;

interface FileState {
  /** Digest of the text the objects came from (the text itself is not kept). */
  digest: string;
  /** Identity of the file when read (Fresh.id); undefined: read without one (readFolderSync). */
  id?: string;
  objects: ValidObject[];
}

const digestOf = (text: string): string => createHash("sha1").update(text).digest("base64");

function fileId(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const NAMESPACED: ReadonlySet<string> = new Set(["Service", "EndpointSlice", "Endpoints"]);

/** Flattens `kind: List` / `kind: FooList` documents into their items, with a kind hint for kind-less items. */
function* expand(doc: unknown, hint?: KnownKind): Generator<{ obj: unknown; hint: KnownKind | undefined }> {
  const lazy = isRecord(doc) && doc.items instanceof LazyItems ? doc.items : undefined;
  if (
    isRecord(doc) &&
    typeof doc.kind === "string" &&
    doc.kind.endsWith("List") &&
    (lazy || Array.isArray(doc.items))
  ) {
    const itemKind = doc.kind === "List" ? undefined : (doc.kind.slice(0, -"List".length) as KnownKind);
    const items = doc.items as unknown[];
    for (let i = 0; i < (lazy ?? items).length; i++) {
      // Parsed when read (JSON), or dropped once handed over (YAML): a raw item is garbage as soon as it is
      // validated, not when the whole list is.
      const item = lazy ? lazy.item(i) : items[i];
      if (!lazy) items[i] = undefined;
      yield* expand(item, itemKind);
    }
    return;
  }
  // Not a List after all (an object with an "items" field): the value JSON.parse would have given.
  if (lazy) (doc as Record<string, unknown>).items = Array.from({ length: lazy.length }, (_, i) => lazy.item(i));
  yield { obj: doc, hint };
}

function withDefaultNamespace(obj: unknown, hint: KnownKind | undefined): unknown {
  if (!isRecord(obj) || !isRecord(obj.metadata)) return obj;
  const kind = typeof obj.kind === "string" ? obj.kind : hint;
  if (kind === undefined || !NAMESPACED.has(kind)) return obj;
  if (typeof obj.metadata.namespace === "string" && obj.metadata.namespace !== "") return obj;
  return { ...obj, metadata: { ...obj.metadata, namespace: "default" } };
}

/**
 * Parses one file into its documents, one at a time (a YAML document's syntax tree is garbage once converted);
 * throws with a readable message on a syntax error. A syntax error anywhere fails the whole file: the caller
 * keeps the file's last good objects, so nothing of a file is kept or reported until the whole file has parsed
 * (a JSON List's items are parsed as they are validated: parseFileReportingInvalid).
 */
function parseDocuments(name: string, content: string): unknown[] {
  if (/\.json$/i.test(name)) return [parseJsonLazily(content)];
  const lines = new LineCounter();
  const out: unknown[] = [];
  for (const d of new Composer().compose(new Parser(lines.addNewLine).parse(content))) {
    const err = d.errors[0];
    if (err) {
      const { line, col } = lines.linePos(err.pos[0]);
      throw new Error(`${err.message.split("\n")[0]} at line ${line}, column ${col}`);
    }
    out.push(d.toJS());
  }
  return out;
}

function parseFileReportingInvalid(dir: string, name: string, content: string): ValidObject[] | Error {
  const out: ValidObject[] = [];
  const invalid: InvalidObject[] = [];
  try {
    const docs = parseDocuments(name, content);
    for (let i = 0; i < docs.length; i++) {
      const doc = docs[i];
      docs[i] = undefined; // garbage once validated
      if (doc === null || doc === undefined) continue; // empty document (e.g. a trailing ---)
      // A JSON List's items are parsed here, one at a time (json-list.ts): a syntax error in one throws.
      for (const { obj, hint } of expand(doc)) {
        const r = validateObject(withDefaultNamespace(obj, hint), hint);
        if (r.ok) out.push(r);
        else invalid.push(r);
      }
    }
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
  // Reported once the whole file has parsed: a file with a syntax error reports that alone.
  for (const r of invalid) reportResult({ ...r, key: `${r.key} (${join(dir, name)})` });
  return out;
}

/**
 * The objects currently defined by a folder, kept per file. `apply` takes a fresh read and says whether the
 * objects changed; `snapshot` gives them in file-name order.
 */
export class FolderState {
  private files = new Map<string, FileState>();
  private current: ObjectSnapshot = { services: [], endpointSlices: [], nodes: [] };
  private fingerprint = "";
  /** The same objects by Service key, with a change log. */
  readonly index = new ObjectIndex();

  constructor(private readonly dir: string) {}

  /** Identity of each file as last read, for readFolder to skip those that did not change. */
  knownIds(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [name, f] of this.files) if (f.id !== undefined) out.set(name, f.id);
    return out;
  }

  /** Applies a read; a missing folder (undefined) changes nothing: the last good objects keep serving. */
  apply(read: FolderRead): boolean {
    if (read === undefined) return false;
    const next = new Map<string, FileState>();
    for (const [name, value] of read) {
      const prev = this.files.get(name);
      if (value instanceof Unsettled || value instanceof Unchanged) {
        if (prev) next.set(name, prev);
        continue;
      }
      const got = value instanceof Fresh ? value.text : value;
      const id = value instanceof Fresh ? value.id : undefined;
      if (got instanceof Error) {
        reportFileError(this.dir, name, got, prev !== undefined);
        if (prev) next.set(name, prev);
        continue;
      }
      const digest = digestOf(got);
      if (prev && prev.digest === digest) {
        prev.id = id; // touched, not changed
        next.set(name, prev);
        continue;
      }
      if (got.trim() === "" && prev && prev.objects.length > 0) {
        // Most likely truncated by a writer that has not written yet; deleting the file removes its objects.
        log.warn("manifest file is empty; keeping its last objects (delete the file to remove them)", {
          file: join(this.dir, name),
        });
        next.set(name, { digest, id, objects: prev.objects });
        continue;
      }
      const objects = parseFileReportingInvalid(this.dir, name, got);
      if (objects instanceof Error) {
        reportFileError(this.dir, name, objects, prev !== undefined);
        // Keep the last good objects, but remember the bad text so it is not reported again until it changes.
        next.set(name, { digest, id, objects: prev?.objects ?? [] });
        continue;
      }
      log.v(2, "manifest file read", { file: join(this.dir, name), objects: objects.length });
      next.set(name, { digest, id, objects });
    }
    // Nothing to rebuild (and no 25 MB fingerprint to compute) when every file kept its state.
    const same = next.size === this.files.size && [...next].every(([n, f]) => this.files.get(n) === f);
    this.files = next;
    return same ? false : this.rebuild();
  }

  snapshot(): ObjectSnapshot {
    return this.current;
  }

  private rebuild(): boolean {
    const byKey = new Map<string, { v: ValidObject; file: string }>();
    for (const name of [...this.files.keys()].sort()) {
      for (const v of this.files.get(name)!.objects) {
        const k = `${v.kind}|${v.key}`;
        const prev = byKey.get(k);
        if (prev) {
          log.warn("object defined twice in the manifest folder; the later one wins", {
            kind: v.kind,
            object: v.key,
            first: prev.file,
            second: name,
          });
          byKey.delete(k); // re-insert so order follows the winning definition
        }
        byKey.set(k, { v, file: name });
      }
    }
    const services: Service[] = [];
    const endpointSlices: EndpointSlice[] = [];
    const nodes: Node[] = [];
    for (const { v } of byKey.values()) {
      switch (v.kind) {
        case "Service":
          services.push(v.object);
          break;
        case "EndpointSlice":
          endpointSlices.push(v.object);
          break;
        case "Endpoints":
          endpointSlices.push(...endpointsToSlices(v.object));
          break;
        case "Node":
          nodes.push(v.object);
          break;
      }
    }
    const snap: ObjectSnapshot = { services, endpointSlices, nodes };
    const fp = fingerprintOf(snap);
    if (fp === this.fingerprint) return false;
    this.fingerprint = fp;
    this.current = snap;
    this.index.replaceAll(services, endpointSlices, nodes);
    return true;
  }
}

/**
 * A digest of the objects, made object by object: the JSON of the whole snapshot, kept to compare with the next,
 * was a second copy of the folder as one string (75 MB at 30k Services × 10 endpoints). JSON has no raw newline,
 * so "\n" separates objects and sections unambiguously.
 */
function fingerprintOf(snap: ObjectSnapshot): string {
  const h = createHash("sha1");
  for (const list of [snap.services, snap.endpointSlices, snap.nodes]) {
    for (const o of list) h.update(JSON.stringify(o)).update("\n");
    h.update("\n\n");
  }
  return h.digest("base64");
}

function reportFileError(dir: string, name: string, err: Error, keptOld: boolean): void {
  if (errnoCode(err) !== undefined) {
    // Not the file's content but its reading failed (EACCES, EIO, ELOOP, a dangling symlink).
    sourceReadErrorsTotal.inc({ source: "folder" });
    log.error("cannot read manifest file", { file: join(dir, name), error: err.message, keptLastGood: keptOld });
    return;
  }
  reportInvalid(
    "File",
    join(dir, name),
    `${err.message}${keptOld ? " (keeping its last good content)" : ""}`,
    "parse_error",
  );
}

function errnoCode(err: unknown): string | undefined {
  return isRecord(err) && typeof err.code === "string" ? err.code : undefined;
}

function manifestNames(names: string[]): string[] {
  return names.filter((n) => MANIFEST.test(n) && !n.startsWith(".")).sort();
}

/** Reads every manifest file of `dir` synchronously (for one-shot use such as `render`). */
export function readFolderSync(dir: string): FolderRead {
  let names: string[];
  try {
    names = manifestNames(readdirSync(dir));
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
  const out = new Map<string, string | Error>();
  for (const name of names) {
    const p = join(dir, name);
    try {
      if (!statSync(p).isFile()) continue;
      out.set(name, readFileSync(p, "utf8"));
    } catch (err) {
      // Removed between readdir and read; a symlink whose target is missing is an error, not a removal.
      if (errnoCode(err) === "ENOENT" && !existsAsLink(() => lstatSync(p).isSymbolicLink())) continue;
      out.set(name, err instanceof Error ? err : new Error(String(err)));
    }
  }
  return out;
}

function existsAsLink(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false;
  }
}

/** Whether readFolder found a file as it was last read (and so did not read it). */
export const isUnchanged = (v: unknown): boolean => v instanceof Unchanged;

export async function readFolder(
  dir: string,
  settleMs: number,
  known?: ReadonlyMap<string, string>,
): Promise<FolderRead> {
  let names: string[];
  try {
    names = manifestNames(await readdir(dir));
  } catch (err) {
    if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ENOTDIR") return undefined;
    throw err;
  }
  const out = new Map<string, Fresh | Error | Unsettled | Unchanged>();
  await Promise.all(
    names.map(async (name) => {
      const p = join(dir, name);
      try {
        const before = await stat(p, { bigint: true });
        if (!before.isFile()) return;
        const id = fileId(before);
        if (known?.get(name) === id) {
          out.set(name, UNCHANGED);
          return;
        }
        const age = Date.now() - Number(before.mtimeMs);
        if (age > -settleMs && age < settleMs) {
          out.set(name, new Unsettled(settleMs - Math.max(age, 0)));
          return;
        }
        const text = await readFile(p, "utf8");
        if (fileId(await stat(p, { bigint: true })) !== id) {
          out.set(name, new Unsettled(settleMs));
          return;
        }
        out.set(name, new Fresh(text, id));
      } catch (err) {
        if (
          errnoCode(err) === "ENOENT" &&
          !(await lstat(p).then(
            (l) => l.isSymbolicLink(),
            () => false,
          ))
        )
          return;
        out.set(name, err instanceof Error ? err : new Error(String(err)));
      }
    }),
  );
  return out;
}

/** Reads a folder once and returns its objects (no watching). Throws if `dir` is not a readable folder. */
export function loadFolderSync(dir: string): ObjectSnapshot {
  assertFolder(dir);
  const state = new FolderState(dir);
  state.apply(readFolderSync(dir));
  return state.snapshot();
}

function assertFolder(dir: string): void {
  let ok: boolean;
  try {
    ok = statSync(dir).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new Error(`manifest folder ${dir} does not exist or is not a directory`);
}

export class FolderSource extends EventEmitter implements Source {
  private readonly state: FolderState;
  private readonly debounceMs: number;
  private readonly rescanMs: number;
  private readonly settleMs: number;
  /** Inode of the folder the watcher watches: a folder replaced by another needs a new watcher. */
  private watchedIno: number | undefined;
  private missingSince: number | undefined;
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private interval: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanAgain = false;
  private stopped = false;
  private resolveSynced!: () => void;
  private readonly syncedPromise: Promise<void>;

  constructor(
    readonly path: string,
    options: FolderSourceOptions = {},
  ) {
    super();
    this.state = new FolderState(path);
    this.debounceMs = options.debounceMs ?? 150;
    this.rescanMs = options.rescanMs ?? 10_000;
    this.settleMs = options.settleMs ?? 100;
    this.syncedPromise = new Promise((resolve) => (this.resolveSynced = resolve));
  }

  async start(): Promise<void> {
    assertFolder(this.path);
    this.stopped = false;
    this.ensureWatcher();
    // The first read decides what the daemon programs first: wait (bounded) for files still being written.
    for (let i = 0; i < 50; i++) {
      const read = await readFolder(this.path, this.settleMs).catch(() => undefined);
      const waits = [...(read?.values() ?? [])]
        .filter((v): v is Unsettled => v instanceof Unsettled)
        .map((u) => u.retryInMs);
      if (read === undefined || waits.length === 0) break;
      await new Promise((r) => setTimeout(r, Math.max(10, ...waits)));
    }
    await this.scan();
    this.resolveSynced();
    if (this.rescanMs > 0) {
      this.interval = setInterval(() => {
        this.ensureWatcher();
        void this.scan();
      }, this.rescanMs);
    }
    log.v(1, "manifest folder source started", { path: this.path, objects: this.count() });
  }

  synced(): Promise<void> {
    return this.syncedPromise;
  }

  snapshot(): ObjectSnapshot {
    return this.state.snapshot();
  }

  index(): ObjectIndex {
    return this.state.index;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.interval) clearInterval(this.interval);
    this.debounce = undefined;
    this.interval = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    await this.scanning;
  }

  private count(): number {
    const s = this.state.snapshot();
    return s.services.length + s.endpointSlices.length + s.nodes.length;
  }

  private dropWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedIno = undefined;
  }

  private ensureWatcher(): void {
    if (this.stopped) return;
    let ino: number | undefined;
    try {
      ino = statSync(this.path).ino;
    } catch {
      ino = undefined;
    }
    if (this.watcher && ino === this.watchedIno) return;
    this.dropWatcher();
    if (ino === undefined) return;
    try {
      const w = watch(this.path, { persistent: true }, () => this.schedule());
      this.watchedIno = ino;
      w.on("error", (err) => {
        // E.g. the folder was removed: drop the watcher; the periodic rescan re-creates it when possible.
        log.v(1, "manifest folder watch stopped", { path: this.path, error: String(err) });
        w.close();
        if (this.watcher === w) this.dropWatcher();
        this.schedule();
      });
      this.watcher = w;
    } catch (err) {
      log.v(1, "cannot watch manifest folder yet", { path: this.path, error: String(err) });
    }
  }

  private schedule(delayMs = this.debounceMs): void {
    if (this.stopped) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.ensureWatcher();
      void this.scan();
    }, delayMs);
  }

  /** One scan at a time; a request during a scan runs one more scan after it. */
  private scan(): Promise<void> {
    if (this.scanning) {
      this.rescanAgain = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.rescanAgain = false;
        let read: FolderRead;
        try {
          read = await readFolder(this.path, this.settleMs, this.state.knownIds());
        } catch (err) {
          read = undefined;
          sourceReadErrorsTotal.inc({ source: "folder" });
          log.error("cannot read manifest folder; keeping the last good objects", {
            path: this.path,
            error: String(err),
          });
        }
        if (this.stopped) break;
        if (read === undefined) {
          // Missing or unreadable: fail static, and look again soon (it is usually being swapped).
          if (this.missingSince === undefined) {
            this.missingSince = Date.now();
            this.dropWatcher();
            sourceReadErrorsTotal.inc({ source: "folder" });
            log.error("manifest folder missing or unreadable; keeping the last good objects", {
              path: this.path,
              objects: this.count(),
            });
          }
          this.schedule(Math.min(1000, this.rescanMs || 1000));
          break;
        }
        if (this.missingSince !== undefined) {
          log.info("manifest folder readable again", { path: this.path, afterMs: Date.now() - this.missingSince });
          this.missingSince = undefined;
          this.ensureWatcher();
        }
        const unsettled = [...read.values()].filter((v): v is Unsettled => v instanceof Unsettled);
        if (unsettled.length) this.schedule(Math.max(10, ...unsettled.map((u) => u.retryInMs)));
        if (this.state.apply(read)) {
          log.v(1, "manifest folder changed", { path: this.path, objects: this.count() });
          this.emit("change");
        }
      } while (this.rescanAgain && !this.stopped);
    })().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }
}
