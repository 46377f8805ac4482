// Socket-level load balancing for the node's own processes: the programs of bpf/bpfproxy_sock.o on
// the cgroup v2 directory given by --cgroup-path. They share the maps bpfproxy.o pinned (loaded
// first), so the reconciler needs to know nothing about them.
import * as native from "../../native/index.js";
import { packagePath } from "../../paths.js";
import { canonicalIP } from "../../k8s/ip.js";
import {
  IPPROTO_UDP,
  MAP_NAMES,
  SOCK_F_POD_NAMESPACES,
  backend as backendCodec,
  backend6 as backend6Codec,
  sockConfig,
  sockScope,
  sockTermKey,
  sockTerm6Key,
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
  // IPv6 frontends, and IPv4-mapped addresses of dual-stack sockets (translated with the IPv4 maps).
  { program: "bpx_sock_conn6", hook: "cgroup-connect6", attachType: native.constants.BPF_CGROUP_INET6_CONNECT },
  { program: "bpx_sock_send6", hook: "cgroup-sendmsg6", attachType: native.constants.BPF_CGROUP_UDP6_SENDMSG },
  { program: "bpx_sock_recv6", hook: "cgroup-recvmsg6", attachType: native.constants.BPF_CGROUP_UDP6_RECVMSG },
  { program: "bpx_sock_peer6", hook: "cgroup-getpeername6", attachType: native.constants.BPF_CGROUP_INET6_GETPEERNAME },
] as const;

/**
 * Loads the socket programs against the pins in `bpffs` and attaches them to `cgroupPath`. Attached
 * without BPF_F_ALLOW_MULTI, each replaces the one an earlier run left there in one step, so a
 * restart never leaves a moment without translation nor two copies. When one hook cannot be attached,
 * the ones this call attached are detached again before the error is thrown: no half set (IPv4
 * translated, IPv6 not) stays behind.
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
    const attached: Attachment[] = [];
    try {
      for (const { program, hook, attachType } of SOCK_HOOKS) {
        const p = obj.program(program);
        native.cgroupAttach(cgroupPath, p.fd, attachType, 0);
        attached.push({ interface: cgroupPath, hook, program, programId: p.info.id });
      }
    } catch (e) {
      for (const a of attached) {
        const h = SOCK_HOOKS.find((x) => x.program === a.program)!;
        try {
          native.cgroupDetach(cgroupPath, obj.program(h.program).fd, h.attachType);
        } catch {
          /* best effort: the error that matters is the attach's */
        }
      }
      throw e;
    }
    return attached;
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
 * Ends UDP sockets the connect hooks pointed at a backend that is now removed (bpf_sock_destroy from
 * an iter/udp program, Linux >= 6.5): IPv4 sockets, IPv6 ones, and dual-stack ones connected to an
 * IPv4-mapped address (as IPv4). Only sockets of the daemon's network namespace are walked: in pod
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
   * Ends the translated UDP sockets connected to any of `removed`: encoded bpx_backend values (IPv4, as
   * the reconciler's mirror holds them) or bpx_backend6 values (IPv6), told apart by their size. The
   * "address:port" ("[address]:port" for IPv6) of each socket ended.
   */
  terminate(removed: Iterable<Buffer>): string[] {
    const term4 = this.obj.map("bpx_sock_term_v1");
    const term6 = this.obj.map("bpx_sock_term6_v1");
    const keys4: Buffer[] = [];
    const keys6: Buffer[] = [];
    for (const v of removed) {
      if (v.length === backend6Codec.size) {
        const b = backend6Codec.decode(v);
        if (b.proto === IPPROTO_UDP) keys6.push(sockTerm6Key.encode({ address: b.address, port: b.port }));
        continue;
      }
      const b = backendCodec.decode(v);
      if (b.proto === IPPROTO_UDP) keys4.push(sockTermKey.encode({ address: b.address, port: b.port }));
    }
    const ended: string[] = [];
    // One pass per map-full of backends (both maps filled side by side); the maps are emptied after each.
    const max = Math.min(term4.info.maxEntries, term6.info.maxEntries);
    for (let i = 0; i < Math.max(keys4.length, keys6.length); i += max) {
      const chunk4 = keys4.slice(i, i + max);
      const chunk6 = keys6.slice(i, i + max);
      for (const k of chunk4) term4.update(k, Buffer.of(1));
      for (const k of chunk6) term6.update(k, Buffer.of(1));
      try {
        for (const line of this.obj.program("bpx_sock_term_udp").runIter().split("\n")) {
          if (!line) continue;
          // "[fd00:0010:...:0006]:53" as the kernel prints an IPv6 peer -> "[fd00:10::6]:53".
          const v6 = /^\[([0-9a-f:]+)\]:(\d+)$/.exec(line);
          ended.push(v6 ? `[${canonicalIP(v6[1]!)}]:${v6[2]}` : line);
        }
      } finally {
        for (const k of chunk4) term4.delete(k);
        for (const k of chunk6) term6.delete(k);
      }
    }
    return ended;
  }

  close(): void {
    this.obj.close();
  }
}
