// `bpfproxy status`: what the node's data plane really holds, read from the pinned maps
// and the kernel's attachments alone, so it works while the daemon is down.
import { existsSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import * as native from "../../native/index.js";
import type { MapHandle } from "../../native/index.js";
import {
  ALGORITHMS,
  BACKEND_F_NODE_LOCAL,
  BACKEND_F_TERMINATING,
  COUNTER_REASONS,
  LC_MAX_BACKEND_IDS,
  u64Word,
  IPPROTO_TCP,
  IPPROTO_SCTP,
  IPPROTO_UDP,
  MAP_NAMES,
  NAT_CFG_F_PORTS_RESERVED,
  NODEPORT_ADDR_F_SERVE,
  natConfig,
  reservedPorts,
  SCOPE_INTERNAL,
  SVC_TYPES,
  WILDCARD_ADDRESS,
  FE_DROP_REASONS,
  backend,
  backend6,
  beStats,
  feStats,
  nodePortAddr,
  be32AddrKey,
  config,
  counter,
  svcKey,
  svc6Key,
  svcMeta,
  svcValue,
  SVC_X_DSR,
  SVC_X_HYBRID,
  u32Key,
  type BackendEntry,
  type BeStats,
  type FeStats,
  type SvcMeta,
} from "./abi.js";
import { sortFrontends } from "../../model/order.js";
import { listInterfaces, TC_HANDLE, TC_PRIORITY } from "./index.js";
import type { BackendModel, Frontend } from "../../model/types.js";
import { releasePorts } from "./reserved-ports.js";
import { detachSocketLb, recordedCgroupPath, socketLbAttachments } from "./sock.js";
import type { Attachment, DataplaneStatus } from "../types.js";

function entries(m: MapHandle): { key: Buffer; value: Buffer }[] {
  const { keys, values, count } = m.entries();
  const ks = m.info.keySize;
  const vs = values.length / Math.max(count, 1);
  const out = [];
  for (let i = 0; i < count; i++)
    out.push({ key: keys.subarray(i * ks, (i + 1) * ks), value: values.subarray(i * vs, (i + 1) * vs) });
  return out;
}

const PROTO_NAMES: Record<number, "TCP" | "UDP" | "SCTP"> = {
  [IPPROTO_TCP]: "TCP",
  [IPPROTO_UDP]: "UDP",
  [IPPROTO_SCTP]: "SCTP",
};

/**
 * Rebuilds the frontends (render's shape) from the load-balancer maps. A NodePort's one wildcard entry is shown
 * once per node address that serves NodePorts (bpx_nodeport_addrs_v1), as render lists it.
 */
export function frontendsFromMaps(maps: {
  services: MapHandle;
  backends: MapHandle;
  svcMeta: MapHandle;
  nodePortAddrs?: MapHandle;
  /** IPv6 frontends and their backends (absent in pins of daemons from before them). */
  services6?: MapHandle;
  backends6?: MapHandle;
  /** bpx_lc_active_v1 and bpx_lc_gone_v1: with them, backends of least-conn frontends show activeFlows. */
  lcActive?: MapHandle;
  lcGone?: MapHandle;
}): Frontend[] {
  const activeFlows = (id: number | undefined): number | undefined => {
    if (id === undefined || !maps.lcActive || !maps.lcGone || id >= LC_MAX_BACKEND_IDS) return undefined;
    const word = (m: MapHandle) => {
      const raw = m.lookup(u32Key.encode(id));
      return raw ? u64Word.decode(raw) : 0n;
    };
    // BPF's count wraps below zero in a race (docs/leastconn.md): read signed, never below zero.
    const n = BigInt.asIntN(64, word(maps.lcActive) - word(maps.lcGone));
    return n > 0n ? Number(n) : 0;
  };
  const nodeAddrs = maps.nodePortAddrs
    ? entries(maps.nodePortAddrs)
        .filter(({ value }) => nodePortAddr.decode(value).flags & NODEPORT_ADDR_F_SERVE)
        .map(({ key }) => be32AddrKey.decode(key).address)
    : [];
  const backends = new Map<number, BackendEntry>();
  for (const { key, value } of entries(maps.backends)) backends.set(u32Key.decode(key), backend.decode(value));
  // One id space: an IPv6 backend's id is never an IPv4 one's.
  if (maps.backends6)
    for (const { key, value } of entries(maps.backends6)) backends.set(u32Key.decode(key), backend6.decode(value));
  const meta = new Map<number, SvcMeta>();
  for (const { key, value } of entries(maps.svcMeta)) meta.set(u32Key.decode(key), svcMeta.decode(value));
  const slots = new Map<string, number>(); // "addr|port|proto|scope|slot" → backend id
  const masters = [];
  const svcEntries = [
    ...entries(maps.services).map((e) => ({ k: svcKey.decode(e.key), value: e.value })),
    ...(maps.services6 ? entries(maps.services6).map((e) => ({ k: svc6Key.decode(e.key), value: e.value })) : []),
  ];
  for (const { k, value } of svcEntries) {
    const v = svcValue.decode(value);
    if (k.slot === 0) masters.push({ k, v });
    else slots.set(`${k.address}|${k.port}|${k.proto}|${k.scope}|${k.slot}`, v.backendId);
  }
  const frontends: Frontend[] = masters.flatMap(({ k, v }) => {
    const m = meta.get(v.revNatId);
    const list: BackendModel[] = [];
    const leastConn = ALGORITHMS[m?.algorithm ?? 0] === "least-conn";
    const listed = new Set<number>();
    for (let s = 1; s <= v.count; s++) {
      const id = slots.get(`${k.address}|${k.port}|${k.proto}|${k.scope}|${s}`);
      // A weighted backend has a run of slots (slots.ts): listed once.
      if (id !== undefined && listed.has(id)) continue;
      if (id !== undefined) listed.add(id);
      const b = backends.get(id ?? -1);
      // A slot without its backend would be a data plane fault; show it rather than hide it.
      if (!b) list.push({ address: "<missing>", port: 0, state: "active", nodeLocal: false });
      else {
        const flows = leastConn ? activeFlows(id) : undefined;
        list.push({
          address: b.address,
          port: b.port,
          state: b.flags & BACKEND_F_TERMINATING ? "terminating" : "active",
          nodeLocal: (b.flags & BACKEND_F_NODE_LOCAL) !== 0,
          ...(flows !== undefined ? { activeFlows: flows } : {}),
        });
      }
    }
    const addresses = k.address === WILDCARD_ADDRESS && nodeAddrs.length > 0 ? nodeAddrs : [k.address];
    return addresses.map((address): Frontend => ({
      service: m?.service ?? `<rev-nat ${v.revNatId}>`,
      portName: m?.portName ?? "",
      type: SVC_TYPES[m?.type ?? 0] ?? "ClusterIP",
      address,
      port: k.port,
      protocol: PROTO_NAMES[k.proto] ?? "TCP",
      scope: k.scope === SCOPE_INTERNAL ? "internal" : "external",
      sessionAffinity:
        v.affinityTimeout > 0 || m?.affinity
          ? { type: "ClientIP", timeoutSeconds: v.affinityTimeout }
          : { type: "None" },
      algorithm: ALGORITHMS[m?.algorithm ?? 0] ?? "random",
      // As the model has it (docs/dsr.md): absent for snat, the default, so status and render agree.
      ...((v.xflags ?? 0) & SVC_X_HYBRID
        ? { forwardingMode: "hybrid" as const }
        : (v.xflags ?? 0) & SVC_X_DSR
          ? { forwardingMode: "dsr" as const }
          : {}),
      backends: list.map((b) => ({ ...b })),
    }));
  });
  return sortFrontends(frontends);
}

/** bpfproxy's tc filters in the current network namespace. */
export function findAttachments(): Attachment[] {
  const out: Attachment[] = [];
  for (const ifname of listInterfaces()) {
    const ifindex = native.ifNameToIndex(ifname);
    if (!ifindex) continue;
    for (const direction of ["ingress", "egress"] as const) {
      let q: { progId: number } | null;
      try {
        q = native.tcQuery(ifindex, direction, { handle: TC_HANDLE, priority: TC_PRIORITY });
      } catch {
        continue; // no clsact on this interface
      }
      if (!q) continue;
      const info = native.programInfoById(q.progId);
      if (info && info.name.startsWith("bpx_")) {
        out.push({
          interface: ifname,
          hook: direction === "ingress" ? "tc-ingress" : "tc-egress",
          program: info.name,
          programId: q.progId,
        });
      }
    }
    let xdpId: number;
    try {
      xdpId = native.xdpQuery(ifindex, 0);
    } catch {
      xdpId = 0;
    }
    const xdpInfo = xdpId ? native.programInfoById(xdpId) : null;
    if (xdpInfo && xdpInfo.name.startsWith("bpx_"))
      out.push({ interface: ifname, hook: "xdp", program: xdpInfo.name, programId: xdpId });
  }
  return out.sort((a, b) => a.interface.localeCompare(b.interface) || a.hook.localeCompare(b.hook));
}

function openPinned(bpffs: string, name: string): MapHandle {
  const path = join(bpffs, name);
  if (!existsSync(path)) throw new Error(`no pinned map ${path}: is bpfproxy running on this node (or --bpffs wrong)?`);
  // Read-only: status and the metrics collector never write, and need only read access to the pins.
  return native.BpfMap.openPinned(path, { readOnly: true });
}

/** Opens pinned maps by name and closes them all when done. */
function withPinned<T>(bpffs: string, fn: (open: (name: string) => native.BpfMap) => T): T {
  const opened: native.BpfMap[] = [];
  try {
    return fn((name) => {
      const m = openPinned(bpffs, name) as native.BpfMap;
      opened.push(m);
      return m;
    });
  } finally {
    for (const m of opened) m.close();
  }
}

function readCounters(counters: native.BpfMap): DataplaneStatus["counters"] {
  const perCpu = counters.valueSizeAll / native.possibleCpus();
  const out: DataplaneStatus["counters"] = {};
  for (const [name, slot] of Object.entries(COUNTER_REASONS)) {
    const raw = counters.lookup(u32Key.encode(slot));
    let packets = 0n;
    let bytes = 0n;
    for (let off = 0; raw && off + counter.size <= raw.length; off += perCpu) {
      const c = counter.decode(raw, off);
      packets += c.packets;
      bytes += c.bytes;
    }
    out[name] = { packets: Number(packets), bytes: Number(bytes) };
  }
  return out;
}

/** A per-CPU array's values summed over CPUs, per index (only indexes with a nonzero sum). */
function sumPerCpu<T extends object>(
  m: native.BpfMap,
  decode: (buf: Buffer, at: number) => T,
  size: number,
  add: (acc: T, v: T) => void,
  nonzero: (v: T) => boolean,
): Map<number, T> {
  const perCpu = m.valueSizeAll / native.possibleCpus();
  const { keys, values, count } = m.entries();
  const out = new Map<number, T>();
  for (let i = 0; i < count; i++) {
    const base = i * m.valueSizeAll;
    let acc: T | undefined;
    for (let off = 0; off + size <= m.valueSizeAll; off += perCpu) {
      const v = decode(values, base + off);
      if (acc) add(acc, v);
      else acc = v;
    }
    if (acc && nonzero(acc)) out.set(u32Key.decode(keys, i * 4), acc);
  }
  return out;
}

/** Per-frontend stats (bpx_fe_stats_v1) summed over CPUs, by frontend id. */
export function readFrontendStats(m: native.BpfMap): Map<number, FeStats> {
  return sumPerCpu(
    m,
    (b, at) => feStats.decode(b, at),
    feStats.size,
    (a, v) => {
      a.conns += v.conns;
      a.packets += v.packets;
      a.bytes += v.bytes;
      a.drops = a.drops.map((d, i) => d + v.drops[i]!);
    },
    (v) => v.packets > 0n || v.drops.some((d) => d > 0n),
  );
}

/** Per-backend stats (bpx_be_stats_v1) summed over CPUs, by backend id. */
export function readBackendStats(m: native.BpfMap): Map<number, BeStats> {
  return sumPerCpu(
    m,
    (b, at) => beStats.decode(b, at),
    beStats.size,
    (a, v) => {
      a.conns += v.conns;
      a.packets += v.packets;
      a.bytes += v.bytes;
    },
    (v) => v.packets > 0n,
  );
}

/** Where each frontend id is (its master entry) and which backend ids its slots name; IPv6's too when given. */
function frontendIndex(
  services: MapHandle,
  services6?: MapHandle,
): {
  where: Map<number, { address: string; port: number; protocol: string }>;
  backendsOf: Map<number, Set<number>>;
} {
  const where = new Map<number, { address: string; port: number; protocol: string }>();
  const backendsOf = new Map<number, Set<number>>();
  const all = [
    ...[...entries(services)].map((e) => ({ ...e, k: svcKey.decode(e.key) })),
    ...(services6 ? [...entries(services6)].map((e) => ({ ...e, k: svc6Key.decode(e.key) })) : []),
  ];
  for (const { k, value } of all) {
    const v = svcValue.decode(value);
    if (k.slot === 0) where.set(v.revNatId, { address: k.address, port: k.port, protocol: PROTO_NAMES[k.proto] ?? "TCP" });
    else {
      const set = backendsOf.get(v.revNatId) ?? new Set<number>();
      set.add(v.backendId);
      backendsOf.set(v.revNatId, set);
    }
  }
  return { where, backendsOf };
}

/**
 * Per frontend: new connections, packets and bytes clients sent, drops by reason (summed over CPUs); per
 * backend the same without drops. Named from the metadata, service and backend maps; ids no longer in them
 * (removed since) are left out.
 */
export function readTrafficCounters(maps: {
  frontendStats: native.BpfMap;
  backendStats: native.BpfMap;
  svcMeta: MapHandle;
  services: MapHandle;
  backends: MapHandle;
  /** The IPv6 frontends and backends (their ids are in the same counters). */
  services6?: MapHandle;
  backends6?: MapHandle;
}): { frontendCounters: DataplaneStatus["frontendCounters"]; backendCounters: NonNullable<DataplaneStatus["backendCounters"]> } {
  const meta = new Map<number, SvcMeta>();
  for (const { key, value } of entries(maps.svcMeta)) meta.set(u32Key.decode(key), svcMeta.decode(value));
  const { where, backendsOf } = frontendIndex(maps.services, maps.services6);
  const fe = readFrontendStats(maps.frontendStats);
  const frontendCounters: DataplaneStatus["frontendCounters"] = [];
  for (const [id, st] of fe) {
    const m = meta.get(id);
    const w = where.get(id);
    if (!m || !w) continue; // a frontend removed since
    frontendCounters.push({
      service: m.service,
      portName: m.portName,
      type: SVC_TYPES[m.type] ?? "ClusterIP",
      ...w,
      packets: Number(st.packets),
      bytes: Number(st.bytes),
      connections: Number(st.conns),
      drops: Object.fromEntries(FE_DROP_REASONS.map((r, i) => [r, Number(st.drops[i])])),
    });
  }
  frontendCounters.sort(
    (a, b) =>
      a.service.localeCompare(b.service) ||
      a.address.localeCompare(b.address) ||
      a.port - b.port ||
      a.protocol.localeCompare(b.protocol),
  );
  const servicesOf = new Map<number, Set<string>>();
  for (const [id, set] of backendsOf) {
    const name = meta.get(id)?.service;
    if (!name) continue;
    for (const b of set) servicesOf.set(b, (servicesOf.get(b) ?? new Set<string>()).add(name));
  }
  const backendCounters: NonNullable<DataplaneStatus["backendCounters"]> = [];
  for (const [id, st] of readBackendStats(maps.backendStats)) {
    const raw = maps.backends.lookup(u32Key.encode(id));
    const raw6 = raw ? null : (maps.backends6?.lookup(u32Key.encode(id)) ?? null);
    if (!raw && !raw6) continue; // a backend removed since
    const b = raw ? backend.decode(raw) : backend6.decode(raw6!);
    backendCounters.push({
      services: [...(servicesOf.get(id) ?? [])].sort(),
      address: b.address,
      port: b.port,
      protocol: PROTO_NAMES[b.proto] ?? "TCP",
      connections: Number(st.conns),
      packets: Number(st.packets),
      bytes: Number(st.bytes),
    });
  }
  backendCounters.sort(
    (a, b) =>
      (a.services[0] ?? "").localeCompare(b.services[0] ?? "") ||
      a.address.localeCompare(b.address) ||
      a.port - b.port ||
      a.protocol.localeCompare(b.protocol),
  );
  return { frontendCounters, backendCounters };
}

/** Maps that are arrays (always full) or a ring buffer (no entries): no fill level. */
const NO_FILL_LEVEL = new Set<string>([
  MAP_NAMES.counters,
  MAP_NAMES.config,
  MAP_NAMES.natConfig,
  MAP_NAMES.reservedPorts,
  MAP_NAMES.sockConfig,
  MAP_NAMES.sockScope,
  MAP_NAMES.frontendStats,
  MAP_NAMES.backendStats,
  MAP_NAMES.events,
  MAP_NAMES.eventsConfig,
  MAP_NAMES.eventsWindow,
  MAP_NAMES.tailCalls, // program slots, not entries
  MAP_NAMES.nat6Config,
]);

/** Maps newer than some daemons whose pins `status` may read: absent there, skipped rather than an error. */
const NEWER_MAPS = new Set<string>([
  MAP_NAMES.services6,
  MAP_NAMES.backends6,
  MAP_NAMES.conntrack6,
  MAP_NAMES.tailCalls,
  MAP_NAMES.sockRevNat6,
  MAP_NAMES.reject6Limit,
  MAP_NAMES.nat6,
  MAP_NAMES.nat6Config,
  MAP_NAMES.sourceRanges6,
  MAP_NAMES.affinity6,
  MAP_NAMES.fragments6,
  MAP_NAMES.prefilter6,
]);

function readMapSizes(bpffs: string, open: (name: string) => native.BpfMap): DataplaneStatus["maps"] {
  const maps: DataplaneStatus["maps"] = {};
  for (const name of Object.values(MAP_NAMES)) {
    if (NEWER_MAPS.has(name) && !existsSync(join(bpffs, name))) continue;
    // The per-frontend stats kept their key in this object when they became an array (always full).
    if (name === MAP_NAMES.frontendStats) {
      const max = open(name).info.maxEntries;
      maps[name] = { entries: max, max };
      continue;
    }
    if (NO_FILL_LEVEL.has(name)) continue; // arrays: always full; the ring buffer has no entries
    if (name === MAP_NAMES.maglev) continue; // 64 KiB values: not worth reading on every scrape
    const m = open(name);
    maps[name] = { entries: m.entries().count, max: m.info.maxEntries };
  }
  return maps;
}

/** The socket programs on the cgroup the pins name (none when socket load balancing is off). */
function sockAttachments(bpffs: string, open: (name: string) => native.BpfMap): Attachment[] {
  // Pins of a daemon from before socket load balancing existed have no config map.
  const cg = existsSync(join(bpffs, MAP_NAMES.sockConfig)) ? recordedCgroupPath(open(MAP_NAMES.sockConfig)) : "";
  return cg ? socketLbAttachments(cg) : [];
}

/**
 * Counters and map fill levels (what /metrics exports), without walking any map: capacities come from
 * the map info, entry counts only from `counts` (the daemon's mirror of the maps it writes).
 */
export function readDatapathSnapshot(
  bpffs: string,
  counts: Record<string, number> = {},
): {
  counters: DataplaneStatus["counters"];
  maps: Record<string, { entries?: number; max: number }>;
  traffic?: ReturnType<typeof readTrafficCounters>;
} {
  return withPinned(bpffs, (open) => {
    const maps: Record<string, { entries?: number; max: number }> = {};
    for (const name of Object.values(MAP_NAMES)) {
      if (NO_FILL_LEVEL.has(name) || (NEWER_MAPS.has(name) && !existsSync(join(bpffs, name)))) continue;
      maps[name] = {
        max: open(name).info.maxEntries,
        ...(counts[name] !== undefined ? { entries: counts[name] } : {}),
      };
    }
    return {
      counters: readCounters(open(MAP_NAMES.counters)),
      maps,
      // Pins of a daemon from before issue 19 have no backend stats: no per-Service series then.
      ...(existsSync(join(bpffs, MAP_NAMES.backendStats))
        ? {
            traffic: readTrafficCounters({
              frontendStats: open(MAP_NAMES.frontendStats),
              backendStats: open(MAP_NAMES.backendStats),
              svcMeta: open(MAP_NAMES.svcMeta),
              services: open(MAP_NAMES.services),
              backends: open(MAP_NAMES.backends),
              ...ipv6TrafficMaps(bpffs, open),
            }),
          }
        : {}),
    };
  });
}

/** The IPv6 frontend and backend maps, when this daemon's pins have them. */
function ipv6TrafficMaps(bpffs: string, open: (name: string) => native.BpfMap): { services6?: MapHandle; backends6?: MapHandle } {
  return existsSync(join(bpffs, MAP_NAMES.services6)) && existsSync(join(bpffs, MAP_NAMES.backends6))
    ? { services6: open(MAP_NAMES.services6), backends6: open(MAP_NAMES.backends6) }
    : {};
}

export function readStatus(bpffs: string): DataplaneStatus {
  return withPinned(bpffs, (open) => {
    const cfg = config.decode(open(MAP_NAMES.config).lookup(u32Key.encode(0))!);
    const maps = readMapSizes(bpffs, open);
    return {
      node: cfg.nodeName,
      mode: "bpf",
      frontends: frontendsFromMaps({
        services: open(MAP_NAMES.services),
        backends: open(MAP_NAMES.backends),
        svcMeta: open(MAP_NAMES.svcMeta),
        nodePortAddrs: open(MAP_NAMES.nodePortAddrs),
        ...(existsSync(join(bpffs, MAP_NAMES.services6))
          ? { services6: open(MAP_NAMES.services6), backends6: open(MAP_NAMES.backends6) }
          : {}),
        // Pins of a daemon from before least-conn have no counts: no activeFlows then.
        ...(existsSync(join(bpffs, MAP_NAMES.lcActive)) && existsSync(join(bpffs, MAP_NAMES.lcGone))
          ? { lcActive: open(MAP_NAMES.lcActive), lcGone: open(MAP_NAMES.lcGone) }
          : {}),
      }),
      attachments: [...findAttachments(), ...sockAttachments(bpffs, open)],
      counters: readCounters(open(MAP_NAMES.counters)),
      conntrack: { entries: maps[MAP_NAMES.conntrack]!.entries, max: maps[MAP_NAMES.conntrack]!.max },
      snat: { entries: maps[MAP_NAMES.nat]!.entries, max: maps[MAP_NAMES.nat]!.max },
      // Pins of a daemon from before issue 19 (no backend stats, per-frontend stats of another layout): none.
      ...(existsSync(join(bpffs, MAP_NAMES.backendStats))
        ? readTrafficCounters({
            frontendStats: open(MAP_NAMES.frontendStats),
            backendStats: open(MAP_NAMES.backendStats),
            svcMeta: open(MAP_NAMES.svcMeta),
            services: open(MAP_NAMES.services),
            backends: open(MAP_NAMES.backends),
            ...ipv6TrafficMaps(bpffs, open),
          })
        : { frontendCounters: [] }),
      maps,
    };
  });
}

/**
 * Removes everything bpfproxy made in this network namespace and bpffs directory: its tc
 * filters (only those running bpx_ programs) and its pins. Returns what it removed.
 */
export function cleanup(bpffs: string): { detached: Attachment[]; unpinned: string[] } {
  const detached = findAttachments();
  const cfgPin = join(bpffs, MAP_NAMES.sockConfig);
  if (existsSync(cfgPin)) {
    const cg = withPinned(bpffs, (open) => recordedCgroupPath(open(MAP_NAMES.sockConfig)));
    if (cg) detached.push(...detachSocketLb(bpffs, cg));
  }
  for (const a of detached) {
    if (a.hook.startsWith("cgroup-")) continue; // detached above
    const ifindex = native.ifNameToIndex(a.interface);
    if (!ifindex) continue;
    if (a.hook === "xdp") {
      // Whichever mode it was attached in.
      for (const flags of [native.constants.XDP_FLAGS_DRV_MODE, native.constants.XDP_FLAGS_SKB_MODE]) {
        try {
          native.xdpDetach(ifindex, flags);
        } catch {
          // not attached in this mode
        }
      }
    } else {
      native.tcDetach(ifindex, a.hook === "tc-ingress" ? "ingress" : "egress", {
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
      });
    }
  }
  // The SNAT range this node reserved (reserved-ports.ts), read from the pinned NAT config before it goes.
  if (existsSync(join(bpffs, MAP_NAMES.natConfig))) {
    const raw = withPinned(bpffs, (open) => open(MAP_NAMES.natConfig).lookup(u32Key.encode(0)));
    if (raw) {
      const c = natConfig.decode(raw);
      if (c.flags & NAT_CFG_F_PORTS_RESERVED && c.portMin > 0 && c.portMin <= c.portMax)
        releasePorts({ min: c.portMin, max: c.portMax });
    }
  }
  // And the NodePort range, recorded beside it.
  if (existsSync(join(bpffs, MAP_NAMES.reservedPorts))) {
    const raw = withPinned(bpffs, (open) => open(MAP_NAMES.reservedPorts).lookup(u32Key.encode(0)));
    if (raw) {
      const r = reservedPorts.decode(raw);
      if (r.nodePortMin > 0 && r.nodePortMin <= r.nodePortMax)
        releasePorts({ min: r.nodePortMin, max: r.nodePortMax });
    }
  }
  const unpinned: string[] = [];
  for (const name of Object.values(MAP_NAMES)) {
    const p = join(bpffs, name);
    if (existsSync(p)) {
      unlinkSync(p);
      unpinned.push(p);
    }
  }
  return { detached, unpinned };
}
