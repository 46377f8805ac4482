// The one interface every data plane implements (BPF today; IPVS where BPF cannot run).
import type { Frontend, NodeModel } from "../model/types.js";

export interface DataplaneOptions {
  /** bpffs directory for pins (mounted there if it is not a bpffs yet). */
  bpffs: string;
  /** External devices: NodePort/LoadBalancer traffic and cross-node replies arrive here. */
  devices: string[];
  /** Globs naming pod-facing interfaces (host side of pod veths). */
  podInterfaces: string[];
  /** Pod CIDRs; sources inside count as in-cluster traffic on devices. */
  clusterCIDRs: string[];
  /** cgroup v2 directory for socket-level load balancing of the node's processes; "" or unset = off. */
  cgroupPath?: string;
  /** Socket load balancing for pods' network namespaces too (bpfproxy.socketLBPodNamespaces); default: the node's only. */
  socketLBPodNamespaces?: boolean;
}

export interface SyncResult {
  upserts: number;
  deletes: number;
  skipped: { service: string; address: string; port: number; protocol: string; reason: string }[];
  /** Map entries encoded by this sync (O(change) when incremental). */
  encoded?: number;
  /** Services that did not fit a full map: not written (kept as before), retried on the next sync. */
  notProgrammed?: { service: string; maps: string[]; needed: Record<string, number> }[];
}

export interface Attachment {
  interface: string;
  /** interface: the interface name, or for cgroup hooks the cgroup directory. */
  hook:
    | "tc-ingress"
    | "tc-egress"
    | "xdp"
    | "cgroup-connect4"
    | "cgroup-sendmsg4"
    | "cgroup-recvmsg4"
    | "cgroup-getpeername4"
    | "cgroup-connect6"
    | "cgroup-sendmsg6"
    | "cgroup-recvmsg6"
    | "cgroup-getpeername6";
  program: string;
  programId: number;
}

export interface Dataplane {
  readonly mode: "bpf" | "ipvs";
  /** Loads programs, reuses pinned state, attaches. Never flushes what the kernel holds. */
  start(): Promise<void>;
  /**
   * Makes the kernel hold exactly the model (only the difference is written). `full` first
   * re-reads what the kernel holds, so changes made behind the daemon's back are repaired.
   */
  sync(model: NodeModel, opts?: { full?: boolean }): Promise<SyncResult>;
  /** Re-checks interfaces (new pod veths) and attaches where needed. */
  refreshAttachments(): Promise<void>;
  attachments(): Attachment[];
  /** Stops managing; programs and state stay in the kernel so traffic keeps flowing. */
  stop(): Promise<void>;
}

/** What `bpfproxy status` reports, read from the pins alone. */
export interface DataplaneStatus {
  node: string;
  mode: "bpf" | "ipvs";
  /** Why the daemon runs this mode (set when it recorded its choice). */
  reason?: string;
  frontends: Frontend[];
  attachments: Attachment[];
  counters: Record<string, { packets: number; bytes: number }>;
  conntrack: { entries: number; max: number };
  /** The north-south NAT table (bpx_snat_v1): two entries per masqueraded or NodePort flow. */
  snat: { entries: number; max: number };
  /** Packets and bytes clients sent to each frontend (NodePorts once, at the wildcard address 0.0.0.0). */
  frontendCounters: {
    service: string;
    portName: string;
    type: string;
    address: string;
    port: number;
    protocol: string;
    packets: number;
    bytes: number;
    /** New connections (flows) sent to a backend; absent from pins of a daemon before issue 19. */
    connections?: number;
    /** Packets dropped or rejected, by reason (no_backend, source_range, no_local_backend, snat_exhausted, map_full, no_conntrack, reject_suppressed). */
    drops?: Record<string, number>;
  }[];
  /** Per backend (endpoint address, port, protocol): new connections, packets and bytes clients sent to it. */
  backendCounters?: {
    /** The Services whose frontends list this backend ("ns/name"), sorted. */
    services: string[];
    address: string;
    port: number;
    protocol: string;
    connections: number;
    packets: number;
    bytes: number;
  }[];
  maps: Record<string, { entries: number; max: number }>;
}
