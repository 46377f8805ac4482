// Typed, validated entry point to the native addon (native/build/Release/bpfproxy.node; contract in
// native/index.d.ts). Every argument is checked here before native code sees it. The addon is loaded on
// first use so that modules importing this one (types, constants, FakeMap users) work without a build.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type {
  Constants,
  MapEntries,
  MapHandle,
  MapInfo,
  NativeAddon,
  NativeBpfMap,
  NativeBpfObject,
  NativeBpfProgram,
  OpenOptions,
  ProgramInfo,
  TcDirection,
  TcOptions,
  TestRunOptions,
  TestRunResult,
} from "./types.js";
import * as v from "./validate.js";

export type {
  BpfError,
  Constants,
  MapEntries,
  MapHandle,
  MapInfo,
  OpenOptions,
  ProgramInfo,
  TcDirection,
  TcOptions,
  TestRunOptions,
  TestRunResult,
} from "./types.js";
export { bpfError, hasErrno, isBpfError } from "./errors.js";

// src/native/index.ts and dist/native/index.js are both two levels below the package root.
export const ADDON_PATH = fileURLToPath(new URL("../../native/build/Release/bpfproxy.node", import.meta.url));

let addon: NativeAddon | undefined;

/** The raw addon (loaded once). Prefer the validated exports below. */
export function loadAddon(): NativeAddon {
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (e) {
    const err = new Error(
      `cannot load the bpfproxy native addon at ${ADDON_PATH} (build it with \`npm run build\`): ${(e as Error).message}`,
    );
    (err as Error & { cause?: unknown }).cause = e;
    throw err;
  }
  return addon;
}

/** Kernel ABI numbers (the addon exports the same; the tests check they agree). */
export const constants: Readonly<Constants> = Object.freeze({
  BPF_ANY: 0,
  BPF_NOEXIST: 1,
  BPF_EXIST: 2,
  XDP_FLAGS_SKB_MODE: 2,
  XDP_FLAGS_DRV_MODE: 4,
  XDP_FLAGS_UPDATE_IF_NOEXIST: 1,
  XDP_FLAGS_REPLACE: 16,
  BPF_CGROUP_INET_INGRESS: 0,
  BPF_CGROUP_INET_EGRESS: 1,
  BPF_CGROUP_INET4_CONNECT: 10,
  BPF_CGROUP_UDP4_SENDMSG: 14,
  BPF_CGROUP_UDP4_RECVMSG: 19,
  BPF_CGROUP_INET4_GETPEERNAME: 29,
  BPF_CGROUP_INET6_CONNECT: 11,
  BPF_CGROUP_UDP6_SENDMSG: 15,
  BPF_CGROUP_UDP6_RECVMSG: 20,
  BPF_CGROUP_INET6_GETPEERNAME: 30,
  BPF_F_ALLOW_MULTI: 2,
  BPF_F_ALLOW_OVERRIDE: 1,
  TC_ACT_OK: 0,
  TC_ACT_SHOT: 2,
  TC_ACT_REDIRECT: 7,
  XDP_PASS: 2,
  XDP_DROP: 1,
  XDP_TX: 3,
  BPF_MAP_TYPE_HASH: 1,
  BPF_MAP_TYPE_ARRAY: 2,
  BPF_MAP_TYPE_PERCPU_ARRAY: 6,
  BPF_MAP_TYPE_LRU_HASH: 9,
});

// XDP_FLAGS_UPDATE_IF_NOEXIST | SKB_MODE | DRV_MODE | HW_MODE | REPLACE
const XDP_FLAGS_ALL = 0x1f;
// BPF_F_ALLOW_OVERRIDE | BPF_F_ALLOW_MULTI | BPF_F_REPLACE
const CGROUP_FLAGS_ALL = 0x7;
const U32 = 0xffffffff;
const I32 = 0x7fffffff;

/** A loaded (or opened) BPF object file. */
export class BpfObject {
  readonly #n: NativeBpfObject;

  /** bpf_object__open_file. Does not load. */
  constructor(path: string, options?: OpenOptions) {
    v.str("BpfObject: path", path);
    const o = v.obj("BpfObject: options", options);
    if (o?.pinRoot !== undefined) v.str("BpfObject: options.pinRoot", o.pinRoot);
    const noPin = v.bool("BpfObject: options.noPin", o?.noPin);
    this.#n = new (loadAddon().BpfObject)(
      path,
      o === undefined ? undefined : { pinRoot: o.pinRoot as string | undefined, ...(noPin ? { noPin } : {}) },
    );
  }

  /** bpf_object__load: creates (or reuses pinned) maps, verifies and loads programs, pins maps. */
  load(): void {
    this.#n.load();
  }

  /** bpf_map__set_max_entries; only before load(). */
  setMapMaxEntries(name: string, maxEntries: number): void {
    v.str("BpfObject.setMapMaxEntries: name", name);
    this.#n.setMapMaxEntries(name, v.int("BpfObject.setMapMaxEntries: maxEntries", maxEntries, 1, U32));
  }

  /** bpf_map__set_pin_path: the file the map is pinned at (or reused from) by load(); only before load(). */
  setMapPinPath(name: string, path: string): void {
    v.str("BpfObject.setMapPinPath: name", name);
    this.#n.setMapPinPath(name, v.str("BpfObject.setMapPinPath: path", path));
  }

  programNames(): string[] {
    return this.#n.programNames();
  }

  /** Infos of the object's maps, including .rodata/.bss etc. */
  maps(): MapInfo[] {
    return this.#n.maps();
  }

  /** A handle to a map of this object; valid until close(). */
  map(name: string): BpfMap {
    v.str("BpfObject.map: name", name);
    return BpfMap.wrap(this.#n.map(name));
  }

  /** A handle to a program of this object; valid until close(). */
  program(name: string): BpfProgram {
    v.str("BpfObject.program: name", name);
    return BpfProgram.wrap(this.#n.program(name));
  }

  /** bpf_object__close. Attached programs stay attached; handles from map()/program() stop working. */
  close(): void {
    this.#n.close();
  }
}

export class BpfMap implements MapHandle {
  readonly #n: NativeBpfMap;
  readonly #keySize: number;
  readonly #valueSizeAll: number;

  private constructor(n: NativeBpfMap) {
    this.#n = n;
    // Sizes never change for a map, so they are read once for validation.
    this.#keySize = n.info.keySize;
    this.#valueSizeAll = n.valueSizeAll;
  }

  /** @internal */
  static wrap(n: NativeBpfMap): BpfMap {
    return new BpfMap(n);
  }

  /** Opens a pinned map (bpf_obj_get); readOnly opens it with BPF_F_RDONLY (writes fail with EPERM). */
  static openPinned(path: string, options: { readOnly?: boolean } = {}): BpfMap {
    v.str("BpfMap.openPinned: path", path);
    return new BpfMap(loadAddon().BpfMap.openPinned(path, options.readOnly === true));
  }

  get info(): MapInfo {
    return this.#n.info;
  }

  get fd(): number {
    return this.#n.fd;
  }

  get valueSizeAll(): number {
    return this.#valueSizeAll;
  }

  lookup(key: Buffer): Buffer | null {
    return this.#n.lookup(v.keyOf("BpfMap.lookup", this.#keySize, key));
  }

  update(key: Buffer, value: Buffer, flags?: number): void {
    const k = v.keyOf("BpfMap.update", this.#keySize, key);
    const val = v.valueOf("BpfMap.update", this.#valueSizeAll, value);
    this.#n.update(k, val, v.mapFlags("BpfMap.update: flags", flags));
  }

  delete(key: Buffer): boolean {
    return this.#n.delete(v.keyOf("BpfMap.delete", this.#keySize, key));
  }

  updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void {
    const b = v.batch("BpfMap.updateBatch", this.#keySize, this.#valueSizeAll, keys, values, count);
    this.#n.updateBatch(b.keys, b.values!, b.count, v.mapFlags("BpfMap.updateBatch: flags", flags));
  }

  deleteBatch(keys: Buffer, count: number): number {
    const b = v.batch("BpfMap.deleteBatch", this.#keySize, this.#valueSizeAll, keys, null, count);
    return this.#n.deleteBatch(b.keys, b.count);
  }

  entries(): MapEntries {
    return this.#n.entries();
  }

  entriesAsync(): Promise<MapEntries> {
    return this.#n.entriesAsync();
  }

  updateBatchAsync(keys: Buffer, values: Buffer, count: number, flags?: number): Promise<void> {
    const b = v.batch("BpfMap.updateBatchAsync", this.#keySize, this.#valueSizeAll, keys, values, count);
    return this.#n.updateBatchAsync(b.keys, b.values!, b.count, v.mapFlags("BpfMap.updateBatchAsync: flags", flags));
  }

  deleteBatchAsync(keys: Buffer, count: number): Promise<number> {
    const b = v.batch("BpfMap.deleteBatchAsync", this.#keySize, this.#valueSizeAll, keys, null, count);
    return this.#n.deleteBatchAsync(b.keys, b.count);
  }

  /** bpf_obj_pin. */
  pin(path: string): void {
    this.#n.pin(v.str("BpfMap.pin: path", path));
  }

  /** Closes this handle (the fd of a pinned map; for object maps only the handle). */
  close(): void {
    this.#n.close();
  }
}

export class BpfProgram {
  readonly #n: NativeBpfProgram;

  private constructor(n: NativeBpfProgram) {
    this.#n = n;
  }

  /** @internal */
  static wrap(n: NativeBpfProgram): BpfProgram {
    return new BpfProgram(n);
  }

  get name(): string {
    return this.#n.name;
  }

  get fd(): number {
    return this.#n.fd;
  }

  get info(): ProgramInfo {
    return this.#n.info;
  }

  /** One pass of a BPF iterator program (attach, read to the end, detach); what it printed. */
  runIter(): string {
    return this.#n.runIter();
  }

  /** BPF_PROG_TEST_RUN on a worker thread. */
  testRun(options: TestRunOptions): Promise<TestRunResult> {
    const o = v.obj("BpfProgram.testRun: options", options);
    // Mistakes in arguments throw synchronously; only kernel failures reject.
    if (o === undefined) throw new TypeError("BpfProgram.testRun: options must be an object, got undefined");
    const data = v.buf("BpfProgram.testRun: options.data", o.data);
    if (data.length === 0) throw new RangeError("BpfProgram.testRun: options.data must not be empty");
    const args: TestRunOptions = {
      data,
      repeat: v.optInt("BpfProgram.testRun: options.repeat", o.repeat, 1, I32, 1),
      dataSizeOut: v.optInt("BpfProgram.testRun: options.dataSizeOut", o.dataSizeOut, 0, I32, data.length + 256),
    };
    if (o.ctx !== undefined) args.ctx = v.buf("BpfProgram.testRun: options.ctx", o.ctx);
    return this.#n.testRun(args);
  }

  /** bpf_obj_pin. */
  pin(path: string): void {
    this.#n.pin(v.str("BpfProgram.pin: path", path));
  }
}

function direction(what: string, d: unknown): TcDirection {
  if (d !== "ingress" && d !== "egress")
    throw new TypeError(`${what} must be "ingress" or "egress", got ${JSON.stringify(d)}`);
  return d;
}

function tcOptions(fn: string, options: unknown): TcOptions | undefined {
  const o = v.obj(`${fn}: options`, options);
  if (o === undefined) return undefined;
  const out: TcOptions = {};
  if (o.handle !== undefined) out.handle = v.int(`${fn}: options.handle`, o.handle, 1, U32);
  if (o.priority !== undefined) out.priority = v.int(`${fn}: options.priority`, o.priority, 1, 0xffff);
  const replace = v.bool(`${fn}: options.replace`, o.replace);
  if (replace !== undefined) out.replace = replace;
  return out;
}

const ifindexOf = (fn: string, i: unknown) => v.int(`${fn}: ifindex`, i, 1, I32);
const fdOf = (fn: string, fd: unknown) => v.int(`${fn}: progFd`, fd, 0, I32);
const attachTypeOf = (fn: string, t: unknown) => v.int(`${fn}: attachType`, t, 0, 255);

/** Creates clsact if needed and attaches (direct-action) a SCHED_CLS program. Current network namespace. */
export function tcAttach(ifindex: number, direction_: TcDirection, progFd: number, options?: TcOptions): void {
  const fn = "tcAttach";
  loadAddon().tcAttach(
    ifindexOf(fn, ifindex),
    direction(`${fn}: direction`, direction_),
    fdOf(fn, progFd),
    tcOptions(fn, options),
  );
}

/** Removes the filter at handle/priority; false if there was none. */
export function tcDetach(ifindex: number, direction_: TcDirection, options?: TcOptions): boolean {
  const fn = "tcDetach";
  return loadAddon().tcDetach(
    ifindexOf(fn, ifindex),
    direction(`${fn}: direction`, direction_),
    tcOptions(fn, options),
  );
}

/** The program attached at handle/priority, or null. */
export function tcQuery(ifindex: number, direction_: TcDirection, options?: TcOptions): { progId: number } | null {
  const fn = "tcQuery";
  return loadAddon().tcQuery(ifindexOf(fn, ifindex), direction(`${fn}: direction`, direction_), tcOptions(fn, options));
}

/** Removes the clsact qdisc (and so every filter on it); false if there was none. */
export function tcHookDestroy(ifindex: number): boolean {
  return loadAddon().tcHookDestroy(ifindexOf("tcHookDestroy", ifindex));
}

/**
 * Attaches an XDP program. oldProgId (nonzero): replaces exactly that program, atomically (XDP_FLAGS_REPLACE);
 * EEXIST when another is attached by then. With XDP_FLAGS_UPDATE_IF_NOEXIST: EBUSY when any program is attached.
 */
export function xdpAttach(ifindex: number, progFd: number, flags?: number, oldProgId?: number): void {
  const fn = "xdpAttach";
  loadAddon().xdpAttach(
    ifindexOf(fn, ifindex),
    fdOf(fn, progFd),
    v.bits(`${fn}: flags`, flags, XDP_FLAGS_ALL),
    oldProgId === undefined ? undefined : v.int(`${fn}: oldProgId`, oldProgId, 0, U32),
  );
}

export function xdpDetach(ifindex: number, flags?: number): void {
  const fn = "xdpDetach";
  loadAddon().xdpDetach(ifindexOf(fn, ifindex), v.bits(`${fn}: flags`, flags, XDP_FLAGS_ALL));
}

/** Attached XDP program id, or 0. */
export function xdpQuery(ifindex: number, flags?: number): number {
  const fn = "xdpQuery";
  return loadAddon().xdpQuery(ifindexOf(fn, ifindex), v.bits(`${fn}: flags`, flags, XDP_FLAGS_ALL));
}

export function cgroupAttach(cgroupPath: string, progFd: number, attachType: number, flags?: number): void {
  const fn = "cgroupAttach";
  loadAddon().cgroupAttach(
    v.str(`${fn}: cgroupPath`, cgroupPath),
    fdOf(fn, progFd),
    attachTypeOf(fn, attachType),
    v.bits(`${fn}: flags`, flags, CGROUP_FLAGS_ALL),
  );
}

export function cgroupDetach(cgroupPath: string, progFd: number, attachType: number): void {
  const fn = "cgroupDetach";
  loadAddon().cgroupDetach(v.str(`${fn}: cgroupPath`, cgroupPath), fdOf(fn, progFd), attachTypeOf(fn, attachType));
}

/** Program ids attached to the cgroup for attachType. */
export function cgroupQuery(cgroupPath: string, attachType: number): number[] {
  const fn = "cgroupQuery";
  return loadAddon().cgroupQuery(v.str(`${fn}: cgroupPath`, cgroupPath), attachTypeOf(fn, attachType));
}

/** Info of any loaded program by id, or null when gone. */
export function programInfoById(id: number): ProgramInfo | null {
  return loadAddon().programInfoById(v.int("programInfoById: id", id, 1, U32));
}

/** if_nametoindex in the current network namespace; 0 if absent. */
export function ifNameToIndex(name: string): number {
  v.str("ifNameToIndex: name", name);
  if (name.length >= 16)
    throw new RangeError(`ifNameToIndex: name must be shorter than 16 characters, got ${name.length}`);
  return loadAddon().ifNameToIndex(name);
}

/** The cookie of this process's network namespace (SO_NETNS_COOKIE; bpf_get_netns_cookie's value). */
export function netnsCookie(): bigint {
  return loadAddon().netnsCookie();
}

export function possibleCpus(): number {
  return loadAddon().possibleCpus();
}

/** true when path is on a bpffs. */
export function isBpffs(path: string): boolean {
  return loadAddon().isBpffs(v.str("isBpffs: path", path));
}

/** mount -t bpf bpf <path> (path must exist). */
export function mountBpffs(path: string): void {
  loadAddon().mountBpffs(v.str("mountBpffs: path", path));
}

/** umount2(path, MNT_DETACH). */
export function umount(path: string): void {
  loadAddon().umount(v.str("umount: path", path));
}

/** One generic netlink request; returns each reply's attribute bytes (see native/index.d.ts). */
export function genlRequest(family: string, version: number, cmd: number, dump: boolean, payload: Buffer): Buffer[] {
  v.str("genlRequest: family", family);
  if (!Buffer.isBuffer(payload)) throw new TypeError("genlRequest: payload must be a Buffer");
  return loadAddon().genlRequest(
    family,
    v.int("genlRequest: version", version, 0, 255),
    v.int("genlRequest: cmd", cmd, 0, 255),
    dump,
    payload,
  );
}

/** Opens a pinned ring buffer for ringbufPoll (native/index.d.ts). */
export function ringbufOpen(path: string): number {
  return loadAddon().ringbufOpen(v.str("ringbufOpen: path", path));
}

/** Records available within timeoutMs (at most maxRecords). */
export function ringbufPoll(handle: number, timeoutMs: number, maxRecords = 4096): Buffer[] {
  return loadAddon().ringbufPoll(
    v.int("ringbufPoll: handle", handle, 1, U32),
    v.int("ringbufPoll: timeoutMs", timeoutMs, -1, 2 ** 31 - 1),
    v.int("ringbufPoll: maxRecords", maxRecords, 1, 1 << 20),
  );
}

export function ringbufClose(handle: number): void {
  loadAddon().ringbufClose(v.int("ringbufClose: handle", handle, 1, U32));
}

/** libbpf feature probes: 1 supported, 0 not, negative errno when the probe failed. */
export function probeProgType(progType: number): number {
  return loadAddon().probeProgType(v.int("probeProgType: progType", progType, 0, U32));
}
export function probeMapType(mapType: number): number {
  return loadAddon().probeMapType(v.int("probeMapType: mapType", mapType, 0, U32));
}
export function probeHelper(progType: number, helper: number): number {
  return loadAddon().probeHelper(
    v.int("probeHelper: progType", progType, 0, U32),
    v.int("probeHelper: helper", helper, 0, U32),
  );
}
