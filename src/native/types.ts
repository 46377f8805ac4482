// Types of the native addon. The data shapes come straight from its contract, native/index.d.ts;
// what is added here is the narrow MapHandle the layers above use, and the raw addon's shape
// before src/native/index.ts wraps it. test/native.test.ts checks the addon at runtime.

export type { BpfError, MapInfo, ProgramInfo, OpenOptions, TestRunOptions, TestRunResult, TcOptions } from "../../native/index.js";
import type { MapInfo, ProgramInfo, OpenOptions, TestRunOptions, TestRunResult, TcOptions } from "../../native/index.js";

export type TcDirection = "ingress" | "egress";

export interface MapEntries {
  keys: Buffer;
  values: Buffer;
  count: number;
}

/**
 * What the layers above need of a map. BpfMap satisfies it; FakeMap (fake-map.ts) stands in for it in tests.
 * valueSizeAll is included because per-CPU values can't be laid out without it.
 */
export interface MapHandle {
  readonly info: MapInfo;
  /** Value size as the syscalls see it: for per-CPU maps round_up(valueSize, 8) * possibleCpus(). */
  readonly valueSizeAll: number;
  /** null when absent. */
  lookup(key: Buffer): Buffer | null;
  /** flags: BPF_ANY=0, BPF_NOEXIST=1, BPF_EXIST=2. */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** false when absent. */
  delete(key: Buffer): boolean;
  /** keys/values: `count` entries concatenated. */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): void;
  /** Returns how many were deleted; absent keys are not an error. */
  deleteBatch(keys: Buffer, count: number): number;
  /** Every entry, keys and values concatenated in matching order. */
  entries(): MapEntries;
}

export interface Constants {
  BPF_ANY: number; BPF_NOEXIST: number; BPF_EXIST: number;
  XDP_FLAGS_SKB_MODE: number; XDP_FLAGS_DRV_MODE: number; XDP_FLAGS_UPDATE_IF_NOEXIST: number;
  BPF_CGROUP_INET_INGRESS: number; BPF_CGROUP_INET_EGRESS: number; BPF_CGROUP_INET4_CONNECT: number;
  BPF_CGROUP_UDP4_SENDMSG: number; BPF_CGROUP_UDP4_RECVMSG: number; BPF_CGROUP_INET4_GETPEERNAME: number;
  BPF_F_ALLOW_MULTI: number; BPF_F_ALLOW_OVERRIDE: number;
  TC_ACT_OK: number; TC_ACT_SHOT: number; TC_ACT_REDIRECT: number;
  XDP_PASS: number; XDP_DROP: number; XDP_TX: number;
  BPF_MAP_TYPE_HASH: number; BPF_MAP_TYPE_ARRAY: number; BPF_MAP_TYPE_PERCPU_ARRAY: number; BPF_MAP_TYPE_LRU_HASH: number;
}

// ---- the raw addon, as loaded (no argument validation of its own beyond memory safety) ----------------------

export interface NativeBpfObject {
  load(): void;
  programNames(): string[];
  maps(): MapInfo[];
  map(name: string): NativeBpfMap;
  program(name: string): NativeBpfProgram;
  close(): void;
}

export interface NativeBpfMap extends MapHandle {
  readonly fd: number;
  pin(path: string): void;
  close(): void;
}

export interface NativeBpfProgram {
  readonly name: string;
  readonly fd: number;
  readonly info: ProgramInfo;
  testRun(options: TestRunOptions): Promise<TestRunResult>;
  pin(path: string): void;
}

export interface NativeAddon {
  BpfObject: new (path: string, options?: OpenOptions) => NativeBpfObject;
  BpfMap: { openPinned(path: string): NativeBpfMap };
  tcAttach(ifindex: number, direction: TcDirection, progFd: number, options?: TcOptions): void;
  tcDetach(ifindex: number, direction: TcDirection, options?: TcOptions): boolean;
  tcQuery(ifindex: number, direction: TcDirection, options?: TcOptions): { progId: number } | null;
  tcHookDestroy(ifindex: number): boolean;
  xdpAttach(ifindex: number, progFd: number, flags?: number): void;
  xdpDetach(ifindex: number, flags?: number): void;
  xdpQuery(ifindex: number, flags?: number): number;
  cgroupAttach(cgroupPath: string, progFd: number, attachType: number, flags?: number): void;
  cgroupDetach(cgroupPath: string, progFd: number, attachType: number): void;
  cgroupQuery(cgroupPath: string, attachType: number): number[];
  programInfoById(id: number): ProgramInfo | null;
  ifNameToIndex(name: string): number;
  possibleCpus(): number;
  isBpffs(path: string): boolean;
  mountBpffs(path: string): void;
  umount(path: string): void;
  constants: Constants;
}
