// The process's Prometheus registry. Every bpfproxy metric registers here (served on
// --metrics-bind-address by the daemon); modules add their own metrics next to this one.

import { Counter, Registry } from "prom-client";
import type { DataplaneStatus } from "./dataplane/types.js";

export const registry = new Registry();

/** Objects rejected by validation (or files that failed to parse), by kind and short reason code. */
export const invalidObjectsTotal = new Counter({
  name: "bpfproxy_invalid_objects_total",
  help: "Kubernetes objects skipped because they failed validation, by kind and reason.",
  labelNames: ["kind", "reason"] as const,
  registers: [registry],
});

// ---------------------------------------------------------------------------------------------
// kube-proxy's metrics (pkg/proxy/metrics), under the same names, types, labels and buckets, so
// dashboards and alerts written for kube-proxy keep working. Help texts carry the "[ALPHA] "
// prefix that Kubernetes' component-base adds for ALPHA metrics. Since Kubernetes 1.33 the
// per-proxier metrics carry an ip_family label ("IPv4"/"IPv6"); bpfproxy serves IPv4 only, so the
// label is always "IPv4".

import { Gauge, Histogram } from "prom-client";

export type IPFamily = "IPv4" | "IPv6";
// The data plane serves IPv4 only (dual-stack IPv6 parts are counted in bpfproxy_ipv6_skipped).
const ipFamilies: readonly IPFamily[] = ["IPv4"];

/** Like Prometheus' ExponentialBuckets(start, factor, count). */
function exponentialBuckets(start: number, factor: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0, v = start; i < count; i++, v *= factor) out.push(v);
  return out;
}

/** Like Prometheus' LinearBuckets(start, width, count). */
function linearBuckets(start: number, width: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i * width);
}

const alpha = (help: string) => `[ALPHA] ${help}`;
const syncBuckets = exponentialBuckets(0.001, 2, 15); // 1ms … 16.384s
// component-base's MergeBuckets starts from a single 0 bucket, then 0.25s, 0.5s, 1..59s, 60..115s, 2..5min.
const programmingBuckets = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

export const syncProxyRulesDuration = new Histogram({
  name: "kubeproxy_sync_proxy_rules_duration_seconds",
  help: alpha("SyncProxyRules latency in seconds"),
  labelNames: ["ip_family"] as const,
  buckets: syncBuckets,
  registers: [registry],
});

export const syncFullProxyRulesDuration = new Histogram({
  name: "kubeproxy_sync_full_proxy_rules_duration_seconds",
  help: alpha("SyncProxyRules latency in seconds for full resyncs"),
  labelNames: ["ip_family"] as const,
  buckets: syncBuckets,
  registers: [registry],
});

export const syncPartialProxyRulesDuration = new Histogram({
  name: "kubeproxy_sync_partial_proxy_rules_duration_seconds",
  help: alpha("SyncProxyRules latency in seconds for partial resyncs"),
  labelNames: ["ip_family"] as const,
  buckets: syncBuckets,
  registers: [registry],
});

export const syncProxyRulesLastTimestamp = new Gauge({
  name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
  help: alpha("The last time proxy rules were successfully synced"),
  labelNames: ["ip_family"] as const,
  registers: [registry],
});

export const syncProxyRulesLastQueuedTimestamp = new Gauge({
  name: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
  help: alpha("The last time a sync of proxy rules was queued"),
  labelNames: ["ip_family"] as const,
  registers: [registry],
});

export const networkProgrammingDuration = new Histogram({
  name: "kubeproxy_network_programming_duration_seconds",
  help: alpha("In Cluster Network Programming Latency in seconds"),
  labelNames: ["ip_family"] as const,
  buckets: programmingBuckets,
  registers: [registry],
});

export const endpointChangesPending = new Gauge({
  name: "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
  help: alpha("Pending proxy rules Endpoint changes"),
  registers: [registry],
});

export const endpointChangesTotal = new Counter({
  name: "kubeproxy_sync_proxy_rules_endpoint_changes_total",
  help: alpha("Cumulative proxy rules Endpoint changes"),
  registers: [registry],
});

export const serviceChangesPending = new Gauge({
  name: "kubeproxy_sync_proxy_rules_service_changes_pending",
  help: alpha("Pending proxy rules Service changes"),
  registers: [registry],
});

export const serviceChangesTotal = new Counter({
  name: "kubeproxy_sync_proxy_rules_service_changes_total",
  help: alpha("Cumulative proxy rules Service changes"),
  registers: [registry],
});

/** A gauge in kube-proxy despite the _total suffix: services with a Local policy and no local endpoints. */
export const syncProxyRulesNoLocalEndpoints = new Gauge({
  name: "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
  help: alpha("Number of services with a Local traffic policy and no endpoints"),
  labelNames: ["ip_family", "traffic_policy"] as const,
  registers: [registry],
});

export const proxyHealthzTotal = new Counter({
  name: "kubeproxy_proxy_healthz_total",
  help: alpha("Cumulative proxy healthz HTTP status"),
  labelNames: ["code"] as const,
  registers: [registry],
});

export const proxyLivezTotal = new Counter({
  name: "kubeproxy_proxy_livez_total",
  help: alpha("Cumulative proxy livez HTTP status"),
  labelNames: ["code"] as const,
  registers: [registry],
});

// ---------------------------------------------------------------------------------------------
// bpfproxy's own metrics.

export const syncErrorsTotal = new Counter({
  name: "bpfproxy_sync_errors_total",
  help: "Syncs of the data plane that failed (the next sync retries).",
  registers: [registry],
});

/** Reads of the object source that failed and left the last good objects in effect (fail-static). */
export const sourceReadErrorsTotal = new Counter({
  name: "bpfproxy_source_read_errors_total",
  help: "Failed reads of the object source (missing or unreadable manifest folder or file); the last good objects stay in effect.",
  labelNames: ["source"] as const,
  registers: [registry],
});

/** Services whose bpfproxy.io/lb-algorithm is not a known value: served with bpfproxy.lbAlgorithm instead. */
export const lbAlgorithmInvalid = new Gauge({
  name: "bpfproxy_lb_algorithm_invalid",
  help: "Services whose bpfproxy.io/lb-algorithm annotation is not random, maglev or least-conn; they are served with the node's default (bpfproxy.lbAlgorithm).",
  registers: [registry],
});

/** Services whose bpfproxy.io/forwarding-mode is not a known value: forwarded with bpfproxy.lbMode instead. */
export const forwardingModeInvalid = new Gauge({
  name: "bpfproxy_forwarding_mode_invalid",
  help: "Services whose bpfproxy.io/forwarding-mode annotation is not snat, dsr or hybrid; they are forwarded with the node's mode (bpfproxy.lbMode).",
  registers: [registry],
});

/** Services whose bpfproxy.io/backend-weights does not parse: served with weight 1 for every endpoint. */
export const backendWeightsInvalid = new Gauge({
  name: "bpfproxy_backend_weights_invalid",
  help: "Services whose bpfproxy.io/backend-weights annotation does not parse (ADDRESS=WEIGHT, weights 0 to 1000); every endpoint of such a Service has weight 1.",
  registers: [registry],
});

/** Service externalIPs not served because they are outside bpfproxy.externalIPsAllowedCIDRs. */
export const externalIPsDenied = new Gauge({
  name: "bpfproxy_external_ips_denied",
  help: "Service externalIPs not served because they are outside bpfproxy.externalIPsAllowedCIDRs (CVE-2020-8554).",
  registers: [registry],
});

/**
 * IPv6 parts of a dual-stack cluster, by kind (the name is kept from when none was served): "clusterCIDR"
 * (IPv6 cluster CIDRs, in BPF mode, whose IPv6 path does not use them yet), "Service" (Services with an IPv6
 * address) and "EndpointSlice" (slices of addressType IPv6), counted whatever is served of them. The
 * "Frontend" kind (IPv6 frontends the BPF data plane skipped) is gone: it serves every kind.
 */
export const ipv6Skipped = new Gauge({
  name: "bpfproxy_ipv6_skipped",
  help: "IPv6 parts by kind: cluster CIDRs the BPF IPv6 path does not use, Services and EndpointSlices with IPv6 addresses.",
  labelNames: ["kind"] as const,
  registers: [registry],
});
/** SCTP frontends the BPF data plane leaves to the kernel's IPVS (docs/sctp.md): served there, or refused without it. */
export const sctpNotInBpf = new Gauge({
  name: "bpfproxy_sctp_frontends_not_in_bpf",
  help: "SCTP frontends the BPF data plane does not translate (a port rewrite or IPv6), by where they are served: ipvs, or none (refused: this kernel has no IPVS).",
  labelNames: ["served_by"] as const,
  registers: [registry],
});
export const servicesNotProgrammed = new Gauge({
  name: "bpfproxy_services_not_programmed",
  help: "Services the last sync could not program because a BPF map was full (kept as before; retried on every sync).",
  registers: [registry],
});

export const mapFullTotal = new Counter({
  name: "bpfproxy_map_full_total",
  help: "Services left out because this BPF map had no room for them, counted when a Service is first refused (not again on each retry while it stays out; raise the map's size: --map-sizes).",
  labelNames: ["map"] as const,
  registers: [registry],
});

/** The outcome of a sync's capacity check: which Services did not fit, and which maps were full. */
let refusedBefore = new Set<string>();
export function recordNotProgrammed(list: { service: string; maps: string[] }[]): void {
  servicesNotProgrammed.set(list.length);
  // Counted per Service and map when it is refused anew, so a full map shows as a rate of refusals rather
  // than a count of syncs (which grows with every periodic retry while nothing changes).
  const now = new Set<string>();
  for (const n of list) {
    for (const map of n.maps) {
      const k = `${map}\0${n.service}`;
      now.add(k);
      if (!refusedBefore.has(k)) mapFullTotal.inc({ map });
    }
  }
  refusedBefore = now;
}

/** What the daemon reads from the BPF maps at scrape time (per-CPU counters already summed). */
export interface DatapathSnapshot {
  /** Per reason (forwarded, reverse-nat, drop reasons, ...): packets and bytes since the maps were created. */
  counters: Record<string, { packets: number; bytes: number }>;
  /**
   * Per map name: current (when known without walking the map) and maximum number of entries. The
   * load-balancer maps' counts come from the daemon's mirror of them; conntrack and affinity are LRU
   * maps written by BPF whose count would need a walk of the whole map, so they report only max.
   */
  maps: Record<string, { entries?: number; max: number }>;
  /** Per frontend and per backend traffic (bpf: bpx_fe_stats_v1/bpx_be_stats_v1; ipvs: the kernel's IPVS stats). */
  traffic?: {
    frontendCounters: DataplaneStatus["frontendCounters"];
    backendCounters: NonNullable<DataplaneStatus["backendCounters"]>;
  };
}

let datapathCollector: (() => DatapathSnapshot | undefined) | undefined;
let datapathCache: { at: number; snap: DatapathSnapshot | undefined } | undefined;
const DATAPATH_CACHE_MS = 500;

/**
 * Sets the callback that reads the data plane's counters and map fill levels. It runs at most once per
 * scrape (its result is reused for DATAPATH_CACHE_MS by the four bpfproxy_datapath_* / bpfproxy_map_*
 * metrics). Returning undefined (data plane not loaded) exports no samples. Pass undefined to unset.
 */
export function setDatapathCollector(fn: (() => DatapathSnapshot | undefined) | undefined): void {
  datapathCollector = fn;
  datapathCache = undefined;
}

function datapathSnapshot(): DatapathSnapshot | undefined {
  const now = Date.now();
  if (datapathCache && now - datapathCache.at < DATAPATH_CACHE_MS) return datapathCache.snap;
  let snap: DatapathSnapshot | undefined;
  try {
    snap = datapathCollector?.();
  } catch {
    snap = undefined; // a failed read exports nothing rather than failing the whole scrape
  }
  datapathCache = { at: now, snap };
  return snap;
}

export const datapathPacketsTotal = new Counter({
  name: "bpfproxy_datapath_packets_total",
  help: "Packets seen by the BPF programs, by outcome (forwarded, reverse-translated, or the drop reason).",
  labelNames: ["reason"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [reason, c] of Object.entries(datapathSnapshot()?.counters ?? {})) this.inc({ reason }, c.packets);
  },
});

export const datapathBytesTotal = new Counter({
  name: "bpfproxy_datapath_bytes_total",
  help: "Bytes seen by the BPF programs, by outcome (forwarded, reverse-translated, or the drop reason).",
  labelNames: ["reason"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [reason, c] of Object.entries(datapathSnapshot()?.counters ?? {})) this.inc({ reason }, c.bytes);
  },
});

export const mapEntries = new Gauge({
  name: "bpfproxy_map_entries",
  help: "Entries currently in each BPF map.",
  labelNames: ["map"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [map, m] of Object.entries(datapathSnapshot()?.maps ?? {}))
      if (m.entries !== undefined) this.set({ map }, m.entries);
  },
});

export const mapMaxEntries = new Gauge({
  name: "bpfproxy_map_max_entries",
  help: "Capacity (max_entries) of each BPF map.",
  labelNames: ["map"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [map, m] of Object.entries(datapathSnapshot()?.maps ?? {})) this.set({ map }, m.max);
  },
});

// ---------------------------------------------------------------------------------------------
// Helpers the daemon calls.

/**
 * A sync of the data plane finished successfully: observes kubeproxy_sync_proxy_rules_duration_seconds
 * and the full or partial histogram, sets kubeproxy_sync_proxy_rules_last_timestamp_seconds, and clears
 * the pending-change gauges.
 */
export function recordSync(o: { durationSeconds: number; full: boolean; nowMs?: number }): void {
  const now = (o.nowMs ?? Date.now()) / 1000;
  for (const ip_family of ipFamilies) {
    syncProxyRulesDuration.observe({ ip_family }, o.durationSeconds);
    (o.full ? syncFullProxyRulesDuration : syncPartialProxyRulesDuration).observe({ ip_family }, o.durationSeconds);
    syncProxyRulesLastTimestamp.set({ ip_family }, now);
  }
  endpointChangesPending.set(0);
  serviceChangesPending.set(0);
}

/** A sync failed (it will be retried): counts bpfproxy_sync_errors_total. */
export function recordSyncError(): void {
  syncErrorsTotal.inc();
}

/** A Service or EndpointSlice change arrived and a sync was queued. */
export function recordQueued(kind: "service" | "endpoints", nowMs?: number): void {
  if (kind === "service") {
    serviceChangesTotal.inc();
    serviceChangesPending.inc();
  } else {
    endpointChangesTotal.inc();
    endpointChangesPending.inc();
  }
  const now = (nowMs ?? Date.now()) / 1000;
  for (const ip_family of ipFamilies) syncProxyRulesLastQueuedTimestamp.set({ ip_family }, now);
}

/**
 * Network programming latency of one EndpointSlice: from its endpoints.kubernetes.io/last-change-trigger-time
 * annotation to the end of the sync that programmed it.
 */
export function recordProgrammingLatency(seconds: number): void {
  if (!(seconds >= 0)) return; // clock skew between nodes can make it negative: not a latency
  for (const ip_family of ipFamilies) networkProgrammingDuration.observe({ ip_family }, seconds);
}

/** The annotation the EndpointSlice controller stamps with the time of the change that caused the update. */
export const LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time";

interface AnnotatedObject {
  metadata: { namespace?: string; name: string; annotations: Record<string, string> };
}

/**
 * kube-proxy's network programming latency (pkg/proxy/endpointschangetracker.go): every EndpointSlice
 * version that arrives with a last-change-trigger-time later than the proxy's start contributes one
 * sample, observed when a sync that includes it has succeeded. Earlier times are skipped so that a restart
 * does not report the age of the whole cluster. Versions are told apart by object identity: sources hand
 * out a new object for every update and the same object while nothing changed.
 */
export class ProgrammingLatencyTracker {
  private readonly seen = new WeakSet<object>();
  private readonly pending = new Map<string, number[]>();

  constructor(private readonly startedMs: number = Date.now()) {}

  /**
   * Notes the trigger times of slices not seen before (call with the slices a sync is about to program:
   * at least every slice that changed since the last call). Objects are compared by identity.
   */
  collect(slices: readonly AnnotatedObject[]): void {
    for (const s of slices) {
      if (this.seen.has(s)) continue;
      this.seen.add(s);
      const raw = s.metadata.annotations[LAST_CHANGE_TRIGGER_TIME];
      if (raw === undefined) continue;
      const t = Date.parse(raw);
      if (!Number.isFinite(t) || t <= this.startedMs) continue;
      const key = `${s.metadata.namespace ?? ""}/${s.metadata.name}`;
      const times = this.pending.get(key) ?? [];
      times.push(t);
      this.pending.set(key, times);
    }
  }

  /** The sync that programmed the collected slices succeeded at nowMs: observe and forget them. */
  synced(nowMs: number = Date.now()): number {
    let n = 0;
    for (const times of this.pending.values()) {
      for (const t of times) {
        recordProgrammingLatency((nowMs - t) / 1000);
        n++;
      }
    }
    this.pending.clear();
    return n;
  }
}

/** Services with a Local traffic policy of this kind that have no local endpoints on this node. */
export function setNoLocalEndpoints(policy: "internal" | "external", n: number): void {
  for (const ip_family of ipFamilies) syncProxyRulesNoLocalEndpoints.set({ ip_family, traffic_policy: policy }, n);
}

// ---------------------------------------------------------------------------------------------
// Per-Service and per-backend traffic (issue 19): like `ipvsadm --stats`, per Service port and per
// endpoint. Label cardinality is capped: at most MAX_SERVICE_SERIES Service ports and
// MAX_BACKEND_SERIES backends are exported, the busiest (by packets) first; how many were left out is
// bpfproxy_traffic_series_omitted.

export const MAX_SERVICE_SERIES = 2000;
export const MAX_BACKEND_SERIES = 5000;

interface ServiceTotals {
  service: string;
  port: string;
  connections: number;
  packets: number;
  bytes: number;
  drops: Record<string, number>;
}

/** Frontends of one Service port (ClusterIP, NodePort, LoadBalancer, ...) summed; busiest first, capped. */
export function serviceSeries(
  fc: DataplaneStatus["frontendCounters"],
  cap = MAX_SERVICE_SERIES,
): { series: ServiceTotals[]; omitted: number } {
  const by = new Map<string, ServiceTotals>();
  for (const c of fc) {
    const k = `${c.service}\0${c.portName}`;
    const t = by.get(k) ?? { service: c.service, port: c.portName, connections: 0, packets: 0, bytes: 0, drops: {} };
    t.connections += c.connections ?? 0;
    t.packets += c.packets;
    t.bytes += c.bytes;
    for (const [r, n] of Object.entries(c.drops ?? {})) t.drops[r] = (t.drops[r] ?? 0) + n;
    by.set(k, t);
  }
  const all = [...by.values()].sort(
    (a, b) => b.packets - a.packets || a.service.localeCompare(b.service) || a.port.localeCompare(b.port),
  );
  return { series: all.slice(0, cap), omitted: Math.max(0, all.length - cap) };
}

export function backendSeries(
  bc: NonNullable<DataplaneStatus["backendCounters"]>,
  cap = MAX_BACKEND_SERIES,
): { series: NonNullable<DataplaneStatus["backendCounters"]>; omitted: number } {
  const all = [...bc].sort((a, b) => b.packets - a.packets || a.address.localeCompare(b.address) || a.port - b.port);
  return { series: all.slice(0, cap), omitted: Math.max(0, all.length - cap) };
}

const svcLabels = ["service", "port"] as const;
const beLabels = ["service", "backend"] as const;
const beLabel = (b: NonNullable<DataplaneStatus["backendCounters"]>[number]) => ({
  // A backend several Services list is labelled with all of them (sorted, comma-separated).
  service: b.services.join(","),
  backend: `${b.address}:${b.port}/${b.protocol}`,
});

function serviceCounter(name: string, help: string, pick: (t: ServiceTotals) => number): Counter<"service" | "port"> {
  return new Counter({
    name,
    help,
    labelNames: svcLabels,
    registers: [registry],
    collect() {
      this.reset();
      const t = datapathSnapshot()?.traffic;
      if (!t) return;
      for (const s of serviceSeries(t.frontendCounters).series) this.inc({ service: s.service, port: s.port }, pick(s));
    },
  });
}

export const serviceConnectionsTotal = serviceCounter(
  "bpfproxy_service_connections_total",
  "New connections (flows) sent to a backend, per Service port (all its frontends).",
  (t) => t.connections,
);
export const servicePacketsTotal = serviceCounter(
  "bpfproxy_service_packets_total",
  "Packets clients sent to a Service port that were translated to a backend.",
  (t) => t.packets,
);
export const serviceBytesTotal = serviceCounter(
  "bpfproxy_service_bytes_total",
  "Bytes (L2) clients sent to a Service port that were translated to a backend.",
  (t) => t.bytes,
);

export const serviceDropsTotal = new Counter({
  name: "bpfproxy_service_drops_total",
  help: "Packets to a Service port dropped or rejected, by reason (no_backend, source_range, no_local_backend, snat_exhausted, map_full, no_conntrack, reject_suppressed).",
  labelNames: ["service", "port", "reason"] as const,
  registers: [registry],
  collect() {
    this.reset();
    const t = datapathSnapshot()?.traffic;
    if (!t) return;
    for (const s of serviceSeries(t.frontendCounters).series)
      for (const [reason, n] of Object.entries(s.drops)) this.inc({ service: s.service, port: s.port, reason }, n);
  },
});

function backendCounter(
  name: string,
  help: string,
  pick: (b: NonNullable<DataplaneStatus["backendCounters"]>[number]) => number,
): Counter<"service" | "backend"> {
  return new Counter({
    name,
    help,
    labelNames: beLabels,
    registers: [registry],
    collect() {
      this.reset();
      const t = datapathSnapshot()?.traffic;
      if (!t) return;
      for (const b of backendSeries(t.backendCounters).series) this.inc(beLabel(b), pick(b));
    },
  });
}

export const backendConnectionsTotal = backendCounter(
  "bpfproxy_backend_connections_total",
  "New connections (flows) sent to a backend (endpoint address:port/protocol).",
  (b) => b.connections,
);
export const backendPacketsTotal = backendCounter(
  "bpfproxy_backend_packets_total",
  "Client packets translated to a backend.",
  (b) => b.packets,
);
export const backendBytesTotal = backendCounter(
  "bpfproxy_backend_bytes_total",
  "Bytes (L2) of client packets translated to a backend.",
  (b) => b.bytes,
);

export const trafficSeriesOmitted = new Gauge({
  name: "bpfproxy_traffic_series_omitted",
  help: `Service ports (kind=service, cap ${MAX_SERVICE_SERIES}) and backends (kind=backend, cap ${MAX_BACKEND_SERIES}) left out of the per-Service/per-backend metrics, the least busy first.`,
  labelNames: ["kind"] as const,
  registers: [registry],
  collect() {
    this.reset();
    const t = datapathSnapshot()?.traffic;
    if (!t) return;
    this.set({ kind: "service" }, serviceSeries(t.frontendCounters).omitted);
    this.set({ kind: "backend" }, backendSeries(t.backendCounters).omitted);
  },
});
