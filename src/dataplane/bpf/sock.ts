// Socket-level load balancing for the node's own processes: the programs of bpf/bpfproxy_sock.o on
// the cgroup v2 directory given by --cgroup-path. They share the maps bpfproxy.o pinned (loaded
// first), so the reconciler needs to know nothing about them.
import * as native from "../../native/index.js";
import { packagePath } from "../../paths.js";
import {
  IPPROTO_UDP,
  MAP_NAMES,
  SOCK_F_POD_NAMESPACES,
  backend as backendCodec,
  sockConfig,
  sockScope,
  sockTermKey,
  u32Key,
} from "./abi.js";
import type { Attachment } from "../types.js";

export const SOCK_OBJECT_PATH = packagePath("bpf/bpfproxy_sock.o");
export const SOCK_TERM_OBJECT_PATH = packagePath("bpf/bpfproxy_sock_term.o");

export interface SocketLbOptions {
  /**
   * Translate sockets of every network namespace in the cgroup (pods too), not only the node's own
   * (bpfproxy.socketLBPodNamespaces). Connects that need what only tc can do are still left to tc.
   */
  podNamespaces?: boolean;
}

/** Each program and its cgroup attach type. */
export const SOCK_HOOKS = [
  { program: "bpx_sock_conn4", hook: "cgroup-connect4", attachType: native.constants.BPF_CGROUP_INET4_CONNECT },
  { program: "bpx_sock_send4", hook: "cgroup-sendmsg4", attachType: native.constants.BPF_CGROUP_UDP4_SENDMSG },
  { program: "bpx_sock_recv4", hook: "cgroup-recvmsg4", attachType: native.constants.BPF_CGROUP_UDP4_RECVMSG },
  { program: "bpx_sock_peer4", hook: "cgroup-getpeername4", attachType: native.constants.BPF_CGROUP_INET4_GETPEERNAME },
] as const;

/**
 * Loads the socket programs against the pins in `bpffs` and attaches them to `cgroupPath`. Attached
 * without BPF_F_ALLOW_MULTI, each replaces the one an earlier run left there in one step, so a
 * restart never leaves a moment without translation nor two copies.
 */
export function attachSocketLb(
  bpffs: string,
  cgroupPath: string,
  opts: SocketLbOptions = {},
  objectPath = SOCK_OBJECT_PATH,
): Attachment[] {
  const obj = new native.BpfObject(objectPath, { pinRoot: bpffs });
  try {
    obj.load();
    obj.map(MAP_NAMES.sockConfig).update(u32Key.encode(0), sockConfig.encode({ cgroupPath }));
    // The daemon runs in the node's network namespace: its cookie names "the node" to the programs.
    // Written before the hooks attach; until then (cookie 0) nothing is translated.
    obj.map(MAP_NAMES.sockScope).update(
      u32Key.encode(0),
      sockScope.encode({
        hostNetnsCookie: native.netnsCookie(),
        flags: opts.podNamespaces ? SOCK_F_POD_NAMESPACES : 0,
      }),
    );
    return SOCK_HOOKS.map(({ program, hook, attachType }) => {
      const p = obj.program(program);
      native.cgroupAttach(cgroupPath, p.fd, attachType, 0);
      return { interface: cgroupPath, hook, program, programId: p.info.id };
    });
  } finally {
    obj.close(); // the cgroup holds the programs
  }
}

/** The cgroup the socket programs were attached to, as recorded in the pins ("" = none). */
export function recordedCgroupPath(configMap: native.MapHandle): string {
  const v = configMap.lookup(u32Key.encode(0));
  return v ? sockConfig.decode(v).cgroupPath : "";
}

/** bpfproxy's socket programs attached to cgroupPath now. */
export function socketLbAttachments(cgroupPath: string): Attachment[] {
  const out: Attachment[] = [];
  for (const { hook, attachType } of SOCK_HOOKS) {
    let ids: number[];
    try {
      ids = native.cgroupQuery(cgroupPath, attachType);
    } catch {
      return []; // the cgroup is gone
    }
    for (const id of ids) {
      const info = native.programInfoById(id);
      if (info?.name.startsWith("bpx_sock_"))
        out.push({ interface: cgroupPath, hook, program: info.name, programId: id });
    }
  }
  return out;
}

/**
 * Detaches bpfproxy's socket programs from cgroupPath. A program attached without ALLOW_MULTI is
 * detached by any program of its type, so a fresh load of the object serves; programs of others
 * are left alone.
 */
export function detachSocketLb(bpffs: string, cgroupPath: string, objectPath = SOCK_OBJECT_PATH): Attachment[] {
  const ours = socketLbAttachments(cgroupPath);
  if (ours.length === 0) return [];
  const obj = new native.BpfObject(objectPath, { pinRoot: bpffs });
  try {
    obj.load();
    for (const a of ours) {
      const h = SOCK_HOOKS.find((x) => x.program === a.program)!;
      native.cgroupDetach(cgroupPath, obj.program(h.program).fd, h.attachType);
    }
  } finally {
    obj.close();
  }
  return ours;
}

/**
 * Ends UDP sockets the connect4 hook pointed at a backend that is now removed (bpf_sock_destroy from
 * an iter/udp program, Linux >= 6.5). Only sockets of the daemon's network namespace are walked: in pod
 * mode a pod's connected UDP socket is not ended (docs/socket-lb.md).
 */
export class SocketTerminator {
  private constructor(private readonly obj: native.BpfObject) {}

  /** The loaded iterator, or the reason the kernel refused it (no bpf_sock_destroy before 6.5). */
  static load(bpffs: string, objectPath = SOCK_TERM_OBJECT_PATH): SocketTerminator | Error {
    const obj = new native.BpfObject(objectPath, { pinRoot: bpffs });
    try {
      obj.load();
      return new SocketTerminator(obj);
    } catch (e) {
      obj.close();
      return e as Error;
    }
  }

  /**
   * Ends the translated UDP sockets connected to any of `removed` (encoded bpx_backend values, as the
   * reconciler's mirror holds them); the "address:port" of each socket ended.
   */
  terminate(removed: Iterable<Buffer>): string[] {
    const term = this.obj.map("bpx_sock_term_v1");
    const keys: Buffer[] = [];
    for (const v of removed) {
      const b = backendCodec.decode(v);
      if (b.proto !== IPPROTO_UDP) continue;
      keys.push(sockTermKey.encode({ address: b.address, port: b.port }));
    }
    const ended: string[] = [];
    // One pass per map-full of backends; the map is emptied after each.
    const max = term.info.maxEntries;
    for (let i = 0; i < keys.length; i += max) {
      const chunk = keys.slice(i, i + max);
      for (const k of chunk) term.update(k, Buffer.of(1));
      try {
        ended.push(...this.obj.program("bpx_sock_term_udp").runIter().split("\n").filter(Boolean));
      } finally {
        for (const k of chunk) term.delete(k);
      }
    }
    return ended;
  }

  close(): void {
    this.obj.close();
  }
}
