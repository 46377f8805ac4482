// Types of the native addon. Its contract is native/index.d.ts; what is added here is the raw
// addon's shape before src/native/index.ts validates and wraps it. test/native.test.ts checks the
// addon at runtime.

export type {
  BpfError,
  MapInfo,
  ProgramInfo,
  OpenOptions,
  TestRunOptions,
  TestRunResult,
  TcOptions,
  MapHandle,
  MapEntries,
  Constants,
} from "../../native/index.js";
import type {
  MapInfo,
  ProgramInfo,
  OpenOptions,
  TestRunOptions,
  TestRunResult,
  TcOptions,
  MapHandle,
  Constants,
} from "../../native/index.js";

export type TcDirection = "ingress" | "egress";

// ---- the raw addon, as loaded (no argument validation of its own beyond memory safety) ----------------------

export interface NativeBpfObject {
  load(): void;
  setMapMaxEntries(name: string, maxEntries: number): void;
  setMapPinPath(name: string, path: string): void;
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
  runIter(): string;
  pin(path: string): void;
}

export interface NativeAddon {
  BpfObject: new (path: string, options?: OpenOptions) => NativeBpfObject;
  BpfMap: { openPinned(path: string, readOnly?: boolean): NativeBpfMap };
  tcAttach(ifindex: number, direction: TcDirection, progFd: number, options?: TcOptions): void;
  tcDetach(ifindex: number, direction: TcDirection, options?: TcOptions): boolean;
  tcQuery(ifindex: number, direction: TcDirection, options?: TcOptions): { progId: number } | null;
  tcHookDestroy(ifindex: number): boolean;
  xdpAttach(ifindex: number, progFd: number, flags?: number, oldProgId?: number): void;
  xdpDetach(ifindex: number, flags?: number): void;
  xdpQuery(ifindex: number, flags?: number): number;
  cgroupAttach(cgroupPath: string, progFd: number, attachType: number, flags?: number): void;
  cgroupDetach(cgroupPath: string, progFd: number, attachType: number): void;
  cgroupQuery(cgroupPath: string, attachType: number): number[];
  programInfoById(id: number): ProgramInfo | null;
  ifNameToIndex(name: string): number;
  possibleCpus(): number;
  netnsCookie(): bigint;
  isBpffs(path: string): boolean;
  mountBpffs(path: string): void;
  umount(path: string): void;
  genlRequest(family: string, version: number, cmd: number, dump: boolean, payload: Buffer): Buffer[];
  ringbufOpen(path: string): number;
  ringbufPoll(handle: number, timeoutMs: number, maxRecords?: number): Buffer[];
  ringbufClose(handle: number): void;
  probeProgType(progType: number): number;
  probeMapType(mapType: number): number;
  probeHelper(progType: number, helper: number): number;
  constants: Constants;
}
