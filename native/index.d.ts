/**
 * Contract of the native addon (native/build/Release/bpfproxy.node): a thin layer over
 * libbpf. No policy lives here. Every failure throws a BpfError.
 *
 * Buffers are raw bytes exactly as the kernel holds them (see bpf/lib/*.h for layouts).
 */

/** Thrown for every failed operation. */
export interface BpfError extends Error {
  /** errno name, e.g. "ENOENT", "EPERM" (or "EINVAL" for libbpf-internal failures). */
  code: string;
  /** positive errno number. */
  errno: number;
  /** the operation that failed, e.g. "bpf_object__load", "bpf_map_update_elem". */
  op: string;
}

export interface MapInfo {
  name: string;
  /** BPF_MAP_TYPE_* number. */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** kernel map id (0 before load for object maps). */
  id: number;
}

export interface ProgramInfo {
  name: string;
  /** BPF_PROG_TYPE_* number. */
  type: number;
  /** kernel program id (0 before load). */
  id: number;
  /** 8-byte program tag as hex. */
  tag: string;
  /** Instructions the verifier processed (its log's "processed N insns"); 0 before load or before Linux 5.16. */
  verifiedInsns: number;
  /** Instructions after the verifier's rewrites (bpftool's xlated size / 8). */
  xlatedInsns: number;
  /** Bytes of JIT output. */
  jitedBytes: number;
}

export interface OpenOptions {
  /** Directory (on a bpffs) where maps declared with LIBBPF_PIN_BY_NAME are pinned, or reused if already pinned. */
  pinRoot?: string;
  /**
   * Every map is the object's own: created at load, neither reused from a pin nor pinned (LIBBPF_PIN_BY_NAME
   * and pinRoot are ignored). For a side-effect-free copy of a loaded data plane (`bpfproxy explain`).
   */
  noPin?: boolean;
}

export interface TestRunOptions {
  /** packet bytes in (for tc: starting with the Ethernet header). */
  data: Buffer;
  /** times to run; average duration is reported. Default 1. */
  repeat?: number;
  /** optional context in (e.g. a struct __sk_buff for tc). */
  ctx?: Buffer;
  /** room for output packet bytes; default data.length + 256. */
  dataSizeOut?: number;
}

export interface TestRunResult {
  /** program return value (TC_ACT_*, XDP_*). */
  retval: number;
  /** packet bytes after the run. */
  data: Buffer;
  /** average nanoseconds per run as measured by the kernel. */
  durationNs: number;
  /** the context after the run (e.g. the __sk_buff's mark), when options.ctx was given. */
  ctx?: Buffer;
}

/** A loaded BPF object file. */
export class BpfObject {
  /** bpf_object__open_file. Does not load. */
  constructor(path: string, options?: OpenOptions);
  /** bpf_object__load: creates (or reuses pinned) maps, verifies and loads programs, pins maps. */
  load(): void;
  /** bpf_map__set_max_entries: before load only. */
  setMapMaxEntries(name: string, maxEntries: number): void;
  /** bpf_map__set_pin_path: where this map is pinned (or reused from) at load; before load only. */
  setMapPinPath(name: string, path: string): void;
  /** Names of programs (C function names). */
  programNames(): string[];
  /** Infos of the object's maps (after load: with ids). Includes .rodata/.bss etc. */
  maps(): MapInfo[];
  /** A handle to a map of this object, by name. Valid until close(). */
  map(name: string): BpfMap;
  /** A handle to a program of this object, by name. Valid until close(). */
  program(name: string): BpfProgram;
  /** bpf_object__close. Attached tc/xdp/cgroup programs stay attached (the kernel holds them). */
  close(): void;
}

/**
 * What the layers above need of a map. BpfMap is one; a fake with the same semantics stands in
 * for it in tests that run without a kernel (src/native/fake-map.ts).
 */
export interface MapHandle {
  readonly info: MapInfo;
  /** Value size as the syscalls see it: for per-CPU maps round_up(valueSize, 8) * possibleCpus(). */
  readonly valueSizeAll: number;
  /** null when absent (ENOENT). */
  lookup(key: Buffer): Buffer | null;
  /** flags: BPF_ANY=0, BPF_NOEXIST=1, BPF_EXIST=2. */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** false when absent (ENOENT). */
  delete(key: Buffer): boolean;
  /** keys/values: `count` entries concatenated. Falls back to one-by-one where the kernel lacks batch ops. */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void;
  /** Returns how many were deleted; absent keys are not an error. */
  deleteBatch(keys: Buffer, count: number): number;
  /** Every entry, keys and values concatenated in matching order (BPF_MAP_LOOKUP_BATCH where the kernel has it). */
  entries(): MapEntries;
  /** entries() on a libuv worker: the event loop keeps running during a big read. */
  entriesAsync(): Promise<MapEntries>;
  /** updateBatch() on a libuv worker (the bytes are copied first). */
  updateBatchAsync(keys: Buffer, values: Buffer, count: number, flags?: number): Promise<void>;
  /** deleteBatch() on a libuv worker (the bytes are copied first). */
  deleteBatchAsync(keys: Buffer, count: number): Promise<number>;
}

export interface MapEntries {
  keys: Buffer;
  values: Buffer;
  count: number;
}

/** A map of a loaded object, or a pinned map opened by BpfMap.openPinned. */
export interface BpfMap extends MapHandle {
  /** File descriptor (for diagnostics). */
  readonly fd: number;
  /** bpf_obj_pin. */
  pin(path: string): void;
  /** Closes this handle's fd (not needed for handles from BpfObject.map, which the object owns). */
  close(): void;
}
export const BpfMap: {
  /** Opens a pinned map (bpf_obj_get); readOnly: BPF_F_RDONLY, needs only read permission, writes fail (EPERM). */
  openPinned(path: string, readOnly?: boolean): BpfMap;
};

export class BpfProgram {
  readonly name: string;
  readonly fd: number;
  readonly info: ProgramInfo;
  /** BPF_PROG_TEST_RUN, off the event loop. */
  testRun(options: TestRunOptions): Promise<TestRunResult>;
  /** One pass of a BPF iterator program (attach, read to the end, detach); what it printed. */
  runIter(): string;
  /** bpf_obj_pin. */
  pin(path: string): void;
}

export interface TcOptions {
  /** tc filter handle; default 1. */
  handle?: number;
  /** tc filter priority; default 1. */
  priority?: number;
  /** replace an existing filter at the same handle/priority; default true. */
  replace?: boolean;
}

/** Creates clsact if needed and attaches (direct-action) a SCHED_CLS program. Current network namespace. */
export function tcAttach(ifindex: number, direction: "ingress" | "egress", progFd: number, options?: TcOptions): void;
/** Removes the filter at handle/priority; false if there was none. */
export function tcDetach(ifindex: number, direction: "ingress" | "egress", options?: TcOptions): boolean;
/** The program attached at handle/priority, or null. */
export function tcQuery(
  ifindex: number,
  direction: "ingress" | "egress",
  options?: TcOptions,
): { progId: number } | null;
/** Removes the clsact qdisc (and so every filter on it) from the interface; false if none. */
export function tcHookDestroy(ifindex: number): boolean;

/**
 * XDP attach flags: XDP_FLAGS_SKB_MODE=2, XDP_FLAGS_DRV_MODE=4, XDP_FLAGS_UPDATE_IF_NOEXIST=1. oldProgId (nonzero):
 * replace exactly that program (XDP_FLAGS_REPLACE); EEXIST when another is attached.
 */
export function xdpAttach(ifindex: number, progFd: number, flags?: number, oldProgId?: number): void;
export function xdpDetach(ifindex: number, flags?: number): void;
/** Attached XDP program id, or 0. */
export function xdpQuery(ifindex: number, flags?: number): number;

/** attachType: a BPF_CGROUP_* attach type number; flags: BPF_F_ALLOW_MULTI=2 etc. */
export function cgroupAttach(cgroupPath: string, progFd: number, attachType: number, flags?: number): void;
export function cgroupDetach(cgroupPath: string, progFd: number, attachType: number): void;
/** Program ids attached to the cgroup for attachType. */
export function cgroupQuery(cgroupPath: string, attachType: number): number[];

/** Info of any loaded program by id (e.g. from tcQuery), or null when gone. */
export function programInfoById(id: number): ProgramInfo | null;

/** if_nametoindex in the current network namespace; 0 if absent. */
export function ifNameToIndex(name: string): number;
/** libbpf_num_possible_cpus(). */
export function possibleCpus(): number;
/** The cookie of the caller's network namespace (SO_NETNS_COOKIE, Linux >= 5.14). */
export function netnsCookie(): bigint;
/** true when path is on a bpffs (statfs magic). */
export function isBpffs(path: string): boolean;
/** mount -t bpf bpf <path> (path must exist). */
export function mountBpffs(path: string): void;
/** umount2(path, MNT_DETACH). */
export function umount(path: string): void;

/**
 * One generic netlink request (family resolved by name): `payload` is the attribute bytes after the genl
 * header. Returns the attribute bytes of every reply message (a dump's entries; none for a plain request,
 * which waits for the kernel's ACK). Kernel errors throw with the kernel's errno.
 */
export function genlRequest(family: string, version: number, cmd: number, dump: boolean, payload: Buffer): Buffer[];
/** libbpf_probe_bpf_prog_type: 1 supported, 0 not, negative errno when probing failed. */
/** Opens a pinned BPF ring buffer for reading; returns a handle for ringbufPoll/ringbufClose. */
export function ringbufOpen(path: string): number;
/**
 * Waits up to timeoutMs (-1: forever, 0: not at all) for records and returns those available, at most
 * maxRecords (default 4096; the rest stay for the next call). EINTR returns what was read so far.
 */
export function ringbufPoll(handle: number, timeoutMs: number, maxRecords?: number): Buffer[];
/** Frees the consumer; an unknown or closed handle is ignored. */
export function ringbufClose(handle: number): void;
export function probeProgType(progType: number): number;
/** libbpf_probe_bpf_map_type: 1 supported, 0 not, negative errno when probing failed. */
export function probeMapType(mapType: number): number;
/** libbpf_probe_bpf_helper: 1 the helper is usable from that program type, 0 not, negative errno on failure. */
export function probeHelper(progType: number, helper: number): number;

/** Named constants used by callers. */
export interface Constants {
  BPF_ANY: number;
  BPF_NOEXIST: number;
  BPF_EXIST: number;
  XDP_FLAGS_SKB_MODE: number;
  XDP_FLAGS_DRV_MODE: number;
  XDP_FLAGS_UPDATE_IF_NOEXIST: number;
  XDP_FLAGS_REPLACE: number;
  BPF_CGROUP_INET_INGRESS: number;
  BPF_CGROUP_INET_EGRESS: number;
  BPF_CGROUP_INET4_CONNECT: number;
  BPF_CGROUP_UDP4_SENDMSG: number;
  BPF_CGROUP_UDP4_RECVMSG: number;
  BPF_CGROUP_INET4_GETPEERNAME: number;
  BPF_CGROUP_INET6_CONNECT: number;
  BPF_CGROUP_UDP6_SENDMSG: number;
  BPF_CGROUP_UDP6_RECVMSG: number;
  BPF_CGROUP_INET6_GETPEERNAME: number;
  BPF_F_ALLOW_MULTI: number;
  BPF_F_ALLOW_OVERRIDE: number;
  TC_ACT_OK: number;
  TC_ACT_SHOT: number;
  TC_ACT_REDIRECT: number;
  XDP_PASS: number;
  XDP_DROP: number;
  XDP_TX: number;
  BPF_MAP_TYPE_HASH: number;
  BPF_MAP_TYPE_ARRAY: number;
  BPF_MAP_TYPE_PERCPU_ARRAY: number;
  BPF_MAP_TYPE_LRU_HASH: number;
}
export const constants: Constants;
