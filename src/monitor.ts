// `bpfproxy monitor`: streams the data plane's events (bpf/lib/events.h) — drops and rejects with
// their reason, new flows with the backend chosen — from the pinned ring buffer. Events are on only
// while a monitor renews bpx_events_cfg_v1's expiry; a monitor that dies turns them off within
// EXPIRY_NS by itself, one that stops turns them off at once.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as native from "./native/index.js";
import {
  COUNTER_REASONS,
  EV_DROP,
  EV_F_DROPS_ONLY,
  EV_NEW_FLOW,
  MAP_NAMES,
  SVC_TYPES,
  event,
  event6,
  eventsConfig,
  eventsWindow,
  svcMeta,
  u32Key,
  type BpxEvent,
  type SvcMeta,
} from "./dataplane/bpf/abi.js";
import { hostPort } from "./format.js";

/** How long one renewal keeps events on (renewed every RENEW_MS). */
const EXPIRY_NS = 5_000_000_000n;
const RENEW_MS = 1000;
/** Events per second per CPU the data plane may emit while a monitor listens (events.h). */
export const DEFAULT_EVENT_RATE = 1000;

const REASON_NAMES = new Map<number, string>(Object.entries(COUNTER_REASONS).map(([n, v]) => [v, n]));
const PROTO: Record<number, string> = { 6: "TCP", 17: "UDP", 58: "ICMPv6" };

export interface MonitorEvent {
  time: string;
  type: "drop" | "new-flow";
  reason: string;
  service: string;
  portName: string;
  frontendType: string;
  client: string;
  frontend: string;
  protocol: string;
  interface: string;
  backend?: string;
}

export interface MonitorOptions {
  bpffs: string;
  /** "ns/name": only this Service's events. */
  service?: string;
  dropsOnly: boolean;
  json: boolean;
  rate?: number;
  write?: (line: string) => void;
  /** Called once events are on. */
  onReady?: () => void;
  /** Resolves when the monitor should stop. */
  stop: Promise<void>;
}

function pidAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function ifName(ifindex: number, cache: Map<number, string>): string {
  const hit = cache.get(ifindex);
  if (hit !== undefined) return hit;
  let name = String(ifindex);
  try {
    for (const n of readdirSync("/sys/class/net")) {
      if (Number(readFileSync(join("/sys/class/net", n, "ifindex"), "utf8").trim()) === ifindex) name = n;
    }
  } catch {
    // no sysfs: the number it is
  }
  cache.set(ifindex, name);
  return name;
}

/** One ring-buffer record: struct bpx_event (IPv4) or the longer struct bpx_event6 (IPv6, events6.h), told
 * apart by length; undefined when shorter than either. */
export function decodeEventRecord(r: Buffer): BpxEvent | undefined {
  if (r.length >= event6.size) return event6.decode(r);
  return r.length >= event.size ? event.decode(r) : undefined;
}

/** Decodes one ring-buffer record into what the monitor prints (names from the metadata map). */
export function describeEvent(
  e: BpxEvent,
  meta: SvcMeta | undefined,
  wallNowMs: number,
  monoNowNs: bigint,
  iface: string,
): MonitorEvent {
  const ageMs = Number(monoNowNs - e.tsNs) / 1e6;
  return {
    time: new Date(wallNowMs - Math.max(0, ageMs)).toISOString(),
    type: e.type === EV_NEW_FLOW ? "new-flow" : "drop",
    reason: REASON_NAMES.get(e.reason) ?? `reason_${e.reason}`,
    // 0: dropped before any frontend matched (a forged pod source, an ICMP error): no Service.
    service: e.revNatId === 0 ? "" : (meta?.service ?? `<frontend ${e.revNatId}>`),
    portName: meta?.portName ?? "",
    frontendType: SVC_TYPES[meta?.type ?? 0] ?? "ClusterIP",
    client: hostPort(e.saddr, e.sport),
    frontend: hostPort(e.daddr, e.dport),
    protocol: PROTO[e.proto] ?? String(e.proto),
    interface: iface,
    ...(e.type === EV_NEW_FLOW ? { backend: hostPort(e.backendAddr, e.backendPort) } : {}),
  };
}

export function formatEvent(m: MonitorEvent): string {
  const svc = m.service ? `${m.service}${m.portName ? ":" + m.portName : ""}` : "-";
  const tuple = `${m.client} -> ${m.frontend}/${m.protocol}`;
  return m.type === "drop"
    ? `${m.time} DROP ${m.reason} ${svc} ${tuple} on ${m.interface}`
    : `${m.time} NEW  ${svc} ${tuple} -> backend ${m.backend} on ${m.interface}`;
}

function pinned(bpffs: string, name: string): string {
  const p = join(bpffs, name);
  if (!existsSync(p))
    throw new Error(
      `no pinned map ${p}: is bpfproxy (bpf mode, issue 19 or later) running on this node (or --bpffs wrong)?`,
    );
  return p;
}

/** Sum over CPUs of the events held back by the rate limit and lost to a full ring buffer. */
function windowTotals(m: native.BpfMap): { suppressed: bigint; lost: bigint } {
  const raw = m.lookup(u32Key.encode(0));
  const perCpu = m.valueSizeAll / native.possibleCpus();
  let suppressed = 0n;
  let lost = 0n;
  for (let off = 0; raw && off + eventsWindow.size <= raw.length; off += perCpu) {
    const w = eventsWindow.decode(raw, off);
    suppressed += w.suppressed;
    lost += w.lost;
  }
  return { suppressed, lost };
}

/** Runs until opts.stop resolves; returns how many events were shown, held back and lost meanwhile. */
export async function runMonitor(opts: MonitorOptions): Promise<{ shown: number; suppressed: number; lost: number }> {
  const write = opts.write ?? ((l: string) => process.stdout.write(l + "\n"));
  const rb = native.ringbufOpen(pinned(opts.bpffs, MAP_NAMES.events));
  const cfgMap = native.BpfMap.openPinned(pinned(opts.bpffs, MAP_NAMES.eventsConfig));
  const windowMap = native.BpfMap.openPinned(pinned(opts.bpffs, MAP_NAMES.eventsWindow), { readOnly: true });
  const metaMap = native.BpfMap.openPinned(pinned(opts.bpffs, MAP_NAMES.svcMeta), { readOnly: true });
  const metaCache = new Map<number, SvcMeta | undefined>();
  const ifCache = new Map<number, string>();
  const lookupMeta = (id: number): SvcMeta | undefined => {
    if (!metaCache.has(id)) {
      const raw = metaMap.lookup(u32Key.encode(id));
      metaCache.set(id, raw ? svcMeta.decode(raw) : undefined);
    }
    return metaCache.get(id);
  };
  // One reader at a time: ring-buffer records go to whichever reader takes them first.
  const cur = cfgMap.lookup(u32Key.encode(0));
  const other = cur ? eventsConfig.decode(cur) : undefined;
  if (other && other.untilNs > process.hrtime.bigint() && other.owner !== process.pid && pidAlive(other.owner)) {
    native.ringbufClose(rb);
    for (const m of [cfgMap, windowMap, metaMap]) m.close();
    throw new Error(`another bpfproxy monitor (pid ${other.owner}) is listening on this node: one at a time`);
  }
  const renew = () =>
    cfgMap.update(
      u32Key.encode(0),
      eventsConfig.encode({
        untilNs: process.hrtime.bigint() + EXPIRY_NS, // CLOCK_MONOTONIC, as bpf_ktime_get_ns
        rate: opts.rate ?? DEFAULT_EVENT_RATE,
        flags: opts.dropsOnly ? EV_F_DROPS_ONLY : 0,
        owner: process.pid,
      }),
    );
  const start = windowTotals(windowMap);
  let stopped = false;
  void opts.stop.then(() => {
    stopped = true;
  });
  let shown = 0;
  let lastRenew = 0;
  let readyCalled = false;
  try {
    while (!stopped) {
      if (Date.now() - lastRenew >= RENEW_MS) {
        renew();
        lastRenew = Date.now();
        metaCache.clear(); // frontends come and go: names are looked up again
        if (!readyCalled) {
          readyCalled = true;
          opts.onReady?.();
        }
      }
      const records = native.ringbufPoll(rb, 200);
      const wall = Date.now();
      const mono = process.hrtime.bigint();
      for (const r of records) {
        const e = decodeEventRecord(r);
        if (!e) continue;
        if (opts.dropsOnly && e.type !== EV_DROP) continue;
        const meta = lookupMeta(e.revNatId);
        if (opts.service && meta?.service !== opts.service) continue;
        const m = describeEvent(e, meta, wall, mono, ifName(e.ifindex, ifCache));
        write(opts.json ? JSON.stringify(m) : formatEvent(m));
        shown++;
      }
      // Let signal handlers and the stop promise run between polls.
      await sleep(0);
    }
  } finally {
    try {
      cfgMap.update(u32Key.encode(0), eventsConfig.encode({ untilNs: 0n, rate: 0, flags: 0, owner: 0 }));
    } finally {
      native.ringbufClose(rb);
      cfgMap.close();
      metaMap.close();
    }
  }
  const end = windowTotals(windowMap);
  windowMap.close();
  return { shown, suppressed: Number(end.suppressed - start.suppressed), lost: Number(end.lost - start.lost) };
}
