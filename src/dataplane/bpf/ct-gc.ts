// The conntrack garbage collector: removes entries of bpx_ct_v3 (and of IPv6's bpx_ct6_v1, same rules) whose flow has been idle past its lifetime,
// so the LRU map holds live flows rather than evicting them under churn. A flow's two entries (forward and
// reply) age together: the pair is expired only when both are, and then both go (never one of them). The NAT
// entries of bpx_snat_v1 have no lifetime of their own: after the conntrack pass, a NAT entry whose flow has no
// live conntrack forward entry (or, for a masqueraded reply entry, whose forward NAT entry names another port)
// is deleted too, so a SNAT port is free again as soon as its flow is over; a masqueraded flow's third entry (the
// stack path's backend -> client key) goes when its forward entry or the reply entry of its port no longer names it. The rule is the BPF code's
// (ct_entry_lifetime / ct_entry_is_expired in bpf/lib/conntrack.h) with the lifetimes read from the same
// bpx_ct_config_v1 the programs read. The map is read in one batch off the event loop (the addon's async batch
// read); the walk yields every few hundred candidates, each candidate is read again right before it is deleted
// (a packet may have refreshed it meanwhile), and a pass deletes at most maxDeletesPerPass entries.
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { Counter, Gauge, Histogram } from "prom-client";
import {
  CT_DEFAULT_LIFETIMES_NS,
  CT_F_CLOSING,
  CT_F_FIN_FORWARD,
  CT_F_FIN_REPLY,
  CT_DIR_FORWARD,
  CT_DIR_REPLY,
  CT_F_SEEN_REPLY,
  CT_X_COUNTED,
  LC_MAX_BACKEND_IDS,
  u64Word,
  IPPROTO_TCP,
  NAT_DIR_FORWARD,
  NAT_DIR_REPLY,
  NAT_E_MASQUERADED,
  natEntry,
  natKey,
  nat6Entry,
  type Nat6Entry,
  ctConfig,
  ctEntry,
  ctKey,
  ct6Entry,
  ct6Key,
  u32Key,
  backend as backendCodec,
  backend6 as backend6Codec,
  type CtConfig,
  type Codec,
  type CtKey,
} from "./abi.js";
import { constants, type BpfMap, type MapHandle } from "../../native/index.js";
import { registry } from "../../metrics.js";
import { log } from "../../log.js";

/** The lifetimes with zero fields replaced by the C defaults (what the BPF code does with a zero). */
export function effectiveLifetimes(cfg: CtConfig | undefined): CtConfig {
  const d = CT_DEFAULT_LIFETIMES_NS;
  const pick = (v: bigint | undefined, def: bigint) => (v ? v : def);
  return {
    tcpSynSentNs: pick(cfg?.tcpSynSentNs, d.tcpSynSentNs),
    tcpEstablishedNs: pick(cfg?.tcpEstablishedNs, d.tcpEstablishedNs),
    tcpCloseWaitNs: pick(cfg?.tcpCloseWaitNs, d.tcpCloseWaitNs),
    tcpTimeWaitNs: pick(cfg?.tcpTimeWaitNs, d.tcpTimeWaitNs),
    tcpCloseNs: pick(cfg?.tcpCloseNs, d.tcpCloseNs),
    udpNs: pick(cfg?.udpNs, d.udpNs),
    udpStreamNs: pick(cfg?.udpStreamNs, d.udpStreamNs),
    flags: cfg?.flags ?? 0,
  };
}

/** ct_entry_lifetime: how long an idle entry keeps its flow. */
export function ctLifetimeNs(flags: number, proto: number, l: CtConfig): bigint {
  if (proto !== IPPROTO_TCP) return flags & CT_F_SEEN_REPLY ? l.udpStreamNs : l.udpNs;
  if (flags & CT_F_CLOSING) return l.tcpCloseNs;
  const fins = flags & (CT_F_FIN_FORWARD | CT_F_FIN_REPLY);
  if (fins === (CT_F_FIN_FORWARD | CT_F_FIN_REPLY)) return l.tcpTimeWaitNs;
  if (fins) return l.tcpCloseWaitNs;
  if (flags & CT_F_SEEN_REPLY) return l.tcpEstablishedNs;
  return l.tcpSynSentNs;
}

/** ct_entry_is_expired: signed 64-bit age as in C (an entry stamped after `now` was read is not expired). */
export function ctExpired(lastSeenNs: bigint, flags: number, proto: number, nowNs: bigint, l: CtConfig): boolean {
  return BigInt.asIntN(64, nowNs - lastSeenNs) > ctLifetimeNs(flags, proto, l);
}

export const ctGcRunsTotal = new Counter({
  name: "bpfproxy_conntrack_gc_runs_total",
  help: "Passes of the conntrack garbage collector, by outcome (ok, error).",
  labelNames: ["status"] as const,
  registers: [registry],
});
export const ctGcDeletedTotal = new Counter({
  name: "bpfproxy_conntrack_gc_deleted_entries_total",
  help: "Expired conntrack entries deleted by the garbage collector, by protocol.",
  labelNames: ["proto"] as const,
  registers: [registry],
});
export const ctGcDuration = new Histogram({
  name: "bpfproxy_conntrack_gc_duration_seconds",
  help: "Duration of a conntrack garbage collector pass.",
  buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10],
  registers: [registry],
});
export const ctGcEntries = new Gauge({
  name: "bpfproxy_conntrack_gc_entries",
  help: "Conntrack entries alive after the last garbage collector pass, by protocol.",
  labelNames: ["proto"] as const,
  registers: [registry],
});
for (const p of ["tcp", "udp"]) {
  ctGcDeletedTotal.inc({ proto: p }, 0);
  ctGcEntries.set({ proto: p }, 0);
}

export interface CtGcResult {
  /** When the pass ended (ms since the epoch). */
  at: number;
  scanned: number;
  deleted: { tcp: number; udp: number };
  alive: { tcp: number; udp: number };
  durationMs: number;
  /** The pass stopped at maxDeletesPerPass; the next one continues. */
  capped: boolean;
  /** NAT entries deleted (their flow is over). */
  natDeleted: number;
}

export const natGcDeletedTotal = new Counter({
  name: "bpfproxy_snat_gc_deleted_entries_total",
  help: "NAT entries (bpx_snat_v1, bpx_snat6_v1) deleted by the garbage collector because their flow is over.",
  registers: [registry],
});
natGcDeletedTotal.inc(0);

/** A NAT entry younger than this is left alone: its flow's conntrack entries are written right after it. */
export const NAT_GC_GRACE_NS = 5_000_000_000n;

export interface CtGcOptions {
  conntrack: BpfMap;
  /** bpx_ct6_v1: collected with the same rules when given. */
  conntrack6?: BpfMap;
  /** bpx_snat_v1: collected with its flows when given. */
  nat?: BpfMap;
  /** bpx_snat6_v1: collected with its flows (bpx_ct6_v1, which must then be given too). */
  nat6?: BpfMap;
  ctConfig: BpfMap;
  /** bpx_lc_gone_v1: a deleted forward entry counted for least-conn (CT_X_COUNTED) is one more ended flow of its
   * backend here (bpf/lib/leastconn.h). */
  lcGone?: BpfMap;
  intervalMs: number;
  /** Most deletions per pass (CPU bound); default 65,536. */
  maxDeletesPerPass?: number;
  /** Candidates handled between two yields to the event loop; default 256. */
  yieldEvery?: number;
  /** CLOCK_MONOTONIC in ns (bpf_ktime_get_ns); tests may move it. */
  now?: () => bigint;
}

export class ConntrackGC {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<CtGcResult> | undefined;
  last: CtGcResult | undefined;

  constructor(private readonly opts: CtGcOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.runOnce().catch(() => undefined), this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  /** One pass (a pass already under way is joined, never doubled). */
  runOnce(): Promise<CtGcResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<CtGcResult> {
    const started = performance.now();
    const now = this.opts.now ?? (() => process.hrtime.bigint());
    const maxDeletes = this.opts.maxDeletesPerPass ?? 65_536;
    const yieldEvery = this.opts.yieldEvery ?? 256;
    try {
      const raw = this.opts.ctConfig.lookup(u32Key.encode(0));
      const lifetimes = effectiveLifetimes(raw ? ctConfig.decode(raw) : undefined);
      const deleted = { tcp: 0, udp: 0 };
      const alive = { tcp: 0, udp: 0 };
      const walk = { deleted, alive, capped: false, handled: 0, maxDeletes, yieldEvery };
      let count = await this.collectCt(this.opts.conntrack, ctKey, ctEntry, lifetimes, now, walk, true);
      if (this.opts.conntrack6) count += await this.collectCt(this.opts.conntrack6, ct6Key, ct6Entry, lifetimes, now, walk);
      const capped = walk.capped;
      let natDeleted = this.opts.nat ? await this.collectNat(this.opts.nat, now, yieldEvery) : 0;
      if (this.opts.nat6 && this.opts.conntrack6)
        natDeleted += await this.collectNat6(this.opts.nat6, this.opts.conntrack6, now, yieldEvery);
      const res: CtGcResult = {
        at: Date.now(),
        scanned: count,
        deleted,
        alive,
        durationMs: performance.now() - started,
        capped,
        natDeleted,
      };
      ctGcRunsTotal.inc({ status: "ok" });
      ctGcDeletedTotal.inc({ proto: "tcp" }, deleted.tcp);
      ctGcDeletedTotal.inc({ proto: "udp" }, deleted.udp);
      ctGcEntries.set({ proto: "tcp" }, alive.tcp);
      ctGcEntries.set({ proto: "udp" }, alive.udp);
      ctGcDuration.observe(res.durationMs / 1000);
      natGcDeletedTotal.inc(natDeleted);
      if (deleted.tcp + deleted.udp + natDeleted > 0) log.v(2, "conntrack gc", { ...res });
      this.last = res;
      return res;
    } catch (err) {
      ctGcRunsTotal.inc({ status: "error" });
      log.warn("conntrack gc pass failed", { error: (err as Error).message });
      throw err;
    }
  }

  /**
   * One conntrack map's pass (IPv4's or IPv6's: the entries start with the same members, the key has the same
   * fields). Returns the entries it scanned; counts into `walk`, which carries the cap across both maps.
   */
  private async collectCt(
    ct: BpfMap,
    kc: Codec<CtKey>,
    ec: Codec<{ lastSeenNs: bigint; flags: number; backendId: number; revNatId: number; xflags?: number }>,
    lifetimes: CtConfig,
    now: () => bigint,
    walk: {
      deleted: { tcp: number; udp: number };
      alive: { tcp: number; udp: number };
      capped: boolean;
      handled: number;
      maxDeletes: number;
      yieldEvery: number;
    },
    /** IPv4's map: least-conn flows (CT_X_COUNTED forward entries) come off their backend's count when deleted. */
    leastConn = false,
  ): Promise<number> {
    const { keys, values, count } = await ct.entriesAsync();
    const ks = kc.size;
    const vs = ec.size;
    const { deleted, alive } = walk;
    // A flow's two entries: the forward key's client (saddr, sport) is the reply key's (daddr, dport), and both
    // name the same backend and frontend.
    const pairId = (client: string, port: number, proto: number, e: { backendId: number; revNatId: number }) =>
      `${client}|${port}|${proto}|${e.backendId}|${e.revNatId}`;
    const decoded = Array.from({ length: count }, (_, i) => ({
      k: kc.decode(keys, i * ks),
      e: ec.decode(values, i * vs),
    }));
    const partnerOf = new Map<string, number>();
    decoded.forEach(({ k, e }, i) => {
      const id =
        k.dir === CT_DIR_FORWARD ? pairId(k.saddr, k.sport, k.proto, e) : pairId(k.daddr, k.dport, k.proto, e);
      const side = `${k.dir}|${id}`;
      partnerOf.set(side, i);
    });
    const done = new Set<number>();
    const keyAt = (i: number) => keys.subarray(i * ks, (i + 1) * ks);
    // Per candidate read again: the backend id its least-conn count is owed to (-1: not counted).
    const counted = new Map<number, number>();
    const expiredNow = (i: number): boolean | undefined => {
      const raw = ct.lookup(keyAt(i));
      if (!raw) return undefined;
      const f = ec.decode(raw);
      counted.set(
        i,
        leastConn && decoded[i]!.k.dir === CT_DIR_FORWARD && (f.xflags ?? 0) & CT_X_COUNTED ? f.backendId : -1,
      );
      return ctExpired(f.lastSeenNs, f.flags, decoded[i]!.k.proto, now(), lifetimes);
    };
    for (let i = 0; i < count; i++) {
      if (done.has(i)) continue;
      const { k, e } = decoded[i]!;
      const side = k.proto === IPPROTO_TCP ? "tcp" : "udp";
      const id =
        k.dir === CT_DIR_FORWARD ? pairId(k.saddr, k.sport, k.proto, e) : pairId(k.daddr, k.dport, k.proto, e);
      const j = partnerOf.get(`${k.dir === CT_DIR_FORWARD ? 1 : 0}|${id}`);
      const group = j === undefined ? [i] : [i, j];
      for (const g of group) done.add(g);
      const stale = group.every((g) => {
        const d = decoded[g]!;
        return ctExpired(d.e.lastSeenNs, d.e.flags, d.k.proto, now(), lifetimes);
      });
      if (walk.capped || !stale) {
        alive[side] += group.length;
        continue;
      }
      // Read again: a packet may have refreshed either entry since the batch read. Both or neither.
      if (group.every((g) => expiredNow(g) !== false)) {
        for (const g of group)
          if (ct.delete(keyAt(g))) {
            deleted[side]++;
            const id = counted.get(g) ?? -1;
            if (id >= 0) this.flowGone(id);
          }
      } else alive[side] += group.length;
      if (deleted.tcp + deleted.udp >= walk.maxDeletes) walk.capped = true;
      if (++walk.handled % walk.yieldEvery === 0) await yieldToLoop();
    }
    return count;
  }

  /** A least-conn flow the GC ended: one more for its backend in bpx_lc_gone_v1 (the daemon is its only writer). */
  private flowGone(backendId: number): void {
    const m = this.opts.lcGone;
    if (!m || backendId >= LC_MAX_BACKEND_IDS) return;
    const key = u32Key.encode(backendId);
    const raw = m.lookup(key);
    m.update(key, u64Word.encode((raw ? u64Word.decode(raw) : 0n) + 1n));
  }

  /** Deletes NAT entries whose flow is over (nat_owner_state in bpf/lib/snat.h, with the grace above). */
  private async collectNat(nat: BpfMap, now: () => bigint, yieldEvery: number): Promise<number> {
    const ct = this.opts.conntrack;
    const { keys, values, count } = await nat.entriesAsync();
    const ks = natKey.size;
    const vs = natEntry.size;
    let deleted = 0;
    const ownerAlive = (
      e: { addr: string; frontendAddr: string; port: number; frontendPort: number; backendId: number },
      proto: number,
    ): boolean => {
      const raw = ct.lookup(
        ctKey.encode({
          saddr: e.addr,
          daddr: e.frontendAddr,
          sport: e.port,
          dport: e.frontendPort,
          proto,
          dir: CT_DIR_FORWARD,
        }),
      );
      // Present after the conntrack pass means alive: that pass judged the flow (its two entries together).
      return raw !== null && ctEntry.decode(raw).backendId === e.backendId;
    };
    for (let i = 0; i < count; i++) {
      const k = natKey.decode(keys, i * ks);
      const e = natEntry.decode(values, i * vs);
      if (BigInt.asIntN(64, now() - e.lastSeenNs) < NAT_GC_GRACE_NS) continue;
      let over: boolean;
      if (k.dir === NAT_DIR_FORWARD) {
        // The forward NAT key is the flow's conntrack forward key.
        over = !ownerAlive(
          { addr: k.saddr, frontendAddr: k.daddr, port: k.sport, frontendPort: k.dport, backendId: e.backendId },
          k.proto,
        );
      } else {
        over = !ownerAlive(e, k.proto);
        if (!over && e.flags & NAT_E_MASQUERADED) {
          const fw = nat.lookup(
            natKey.encode({
              saddr: e.addr,
              daddr: e.frontendAddr,
              sport: e.port,
              dport: e.frontendPort,
              proto: k.proto,
              dir: NAT_DIR_FORWARD,
            }),
          );
          const f = fw ? natEntry.decode(fw) : undefined;
          if (k.daddr === e.addr && k.dport === e.port) {
            // The stack key (backend -> the client itself, nat_create in bpf/lib/datapath.h): the flow's while its
            // forward entry is masqueraded to this backend and the reply entry of the port it names names this
            // client (nat_reply_entry_owned in bpf/lib/snat.h).
            over = !f || !(f.flags & NAT_E_MASQUERADED) || f.backendId !== e.backendId;
            if (!over) {
              const rp = nat.lookup(
                natKey.encode({
                  saddr: k.saddr,
                  daddr: f!.addr,
                  sport: k.sport,
                  dport: f!.port,
                  proto: k.proto,
                  dir: NAT_DIR_REPLY,
                }),
              );
              const r = rp ? natEntry.decode(rp) : undefined;
              over = !r || r.addr !== e.addr || r.port !== e.port || r.backendId !== e.backendId;
            }
          } else {
            // A reply entry its client's forward entry no longer names: left behind by a newer flow of that client.
            over = !f || f.port !== k.dport || f.addr !== k.daddr || f.backendId !== e.backendId;
          }
        }
      }
      if (over) {
        // Read again: BPF may have given the key to a new flow since the batch read.
        const fresh = nat.lookup(keys.subarray(i * ks, (i + 1) * ks));
        if (
          fresh &&
          natEntry.decode(fresh).lastSeenNs === e.lastSeenNs &&
          nat.delete(keys.subarray(i * ks, (i + 1) * ks))
        )
          deleted++;
      }
      if ((i + 1) % yieldEvery === 0) await yieldToLoop();
    }
    return deleted;
  }
  /**
   * Deletes IPv6 NAT entries whose flow is over (bpf/lib/nat6.h: two entries per flow, no stack key). The forward
   * entry (client -> backend) is its flow's while the flow's conntrack forward entry (client -> frontend) lives
   * with the same backend; the reply entry (backend -> node address, port) while that holds for the client it
   * names and the client's forward entry still names its port (a newer flow of the client may have taken another).
   */
  private async collectNat6(nat6: BpfMap, ct6: BpfMap, now: () => bigint, yieldEvery: number): Promise<number> {
    const { keys, values, count } = await nat6.entriesAsync();
    const ks = ct6Key.size;
    const vs = nat6Entry.size;
    let deleted = 0;
    const flowAlive = (client: string, sport: number, e: Nat6Entry, proto: number): boolean => {
      const raw = ct6.lookup(
        ct6Key.encode({ saddr: client, daddr: e.frontendAddr, sport, dport: e.frontendPort, proto, dir: CT_DIR_FORWARD }),
      );
      return raw !== null && ct6Entry.decode(raw).backendId === e.backendId;
    };
    for (let i = 0; i < count; i++) {
      const k = ct6Key.decode(keys, i * ks);
      const e = nat6Entry.decode(values, i * vs);
      if (BigInt.asIntN(64, now() - e.lastSeenNs) < NAT_GC_GRACE_NS) continue;
      let over: boolean;
      if (k.dir === CT_DIR_FORWARD) over = !flowAlive(k.saddr, k.sport, e, k.proto);
      else {
        over = !flowAlive(e.addr, e.port, e, k.proto);
        if (!over) {
          const fw = nat6.lookup(
            ct6Key.encode({ saddr: e.addr, daddr: k.saddr, sport: e.port, dport: k.sport, proto: k.proto, dir: CT_DIR_FORWARD }),
          );
          const f = fw ? nat6Entry.decode(fw) : undefined;
          over = !f || f.port !== k.dport || f.addr !== k.daddr || f.backendId !== e.backendId;
        }
      }
      if (over) {
        // Read again: BPF may have given the key to a new flow since the batch read.
        const key = keys.subarray(i * ks, (i + 1) * ks);
        const fresh = nat6.lookup(key);
        if (fresh && nat6Entry.decode(fresh).lastSeenNs === e.lastSeenNs && nat6.delete(key)) deleted++;
      }
      if ((i + 1) % yieldEvery === 0) await yieldToLoop();
    }
    return deleted;
  }
}

/** A backend id's "address:port" in the backend map now (null: none), each id read once per walk. */
function backendsNow(
  map: MapHandle,
  codec: { decode(raw: Buffer): { address: string; port: number } },
): (id: number) => string | null {
  const current = new Map<number, string | null>();
  return (id) => {
    if (!current.has(id)) {
      const raw = map.lookup(u32Key.encode(id));
      const b = raw ? codec.decode(raw) : null;
      current.set(id, b ? `${b.address}:${b.port}` : null);
    }
    return current.get(id)!;
  };
}

/**
 * Ends the tracked flows of removed backends. A conntrack forward entry carries its backend's address and
 * port (bpx_ct_v3), so a tracked packet needs no backend lookup; a flow whose backend is gone is told so
 * here instead: its forward entry's backend address is zeroed, and its next packet is handled as one of a
 * flow whose backend vanished (a TCP segment is reset, reject_no_conntrack; a SYN or a UDP datagram
 * chooses again). The entry itself stays, so `bpfproxy explain` still names it as stale. `released` are
 * the backend ids whose entries the reconciler deleted; an id given to another backend meanwhile keeps
 * the flows that name its current address and port. One batch read, yields every `yieldEvery` entries
 * it changes; each is read again right before it is written (a packet may have touched it). Returns how
 * many entries it zeroed.
 */
export async function endFlowsOfRemovedBackends(
  conntrack: BpfMap,
  backends: MapHandle,
  released: ReadonlySet<number>,
  yieldEvery = 256,
): Promise<number> {
  if (!released.size) return 0;
  const backendNow = backendsNow(backends, backendCodec);
  const { keys, values, count } = await conntrack.entriesAsync();
  const ks = ctKey.size;
  const vs = ctEntry.size;
  let ended = 0;
  for (let i = 0; i < count; i++) {
    const k = ctKey.decode(keys, i * ks);
    if (k.dir !== CT_DIR_FORWARD) continue;
    const e = ctEntry.decode(values, i * vs);
    if (!released.has(e.backendId) || !e.backendAddr || e.backendAddr === "0.0.0.0") continue;
    if (backendNow(e.backendId) === `${e.backendAddr}:${e.backendPort}`) continue;
    const key = keys.subarray(i * ks, (i + 1) * ks);
    const raw = conntrack.lookup(key);
    if (!raw) continue;
    const fresh = ctEntry.decode(raw);
    if (fresh.backendId !== e.backendId || fresh.backendAddr !== e.backendAddr || fresh.backendPort !== e.backendPort)
      continue;
    try {
      // Its least-conn mark goes too: the id's counts are zeroed on release, and a reused id must not lose a flow
      // when this one ends.
      conntrack.update(
        key,
        ctEntry.encode({ ...fresh, backendAddr: "0.0.0.0", backendPort: 0, xflags: (fresh.xflags ?? 0) & ~CT_X_COUNTED }),
        constants.BPF_EXIST,
      );
      ended++;
    } catch {
      continue; // deleted meanwhile (LRU eviction, the GC, a packet): nothing left to end
    }
    if (ended % yieldEvery === 0) await yieldToLoop();
  }
  if (ended) log.info("ended tracked flows of removed backends", { entries: ended, backends: released.size });
  return ended;
}

/**
 * endFlowsOfRemovedBackends for bpx_ct6_v1. The IPv6 path has no "backend vanished" handling for a zeroed
 * address, so a removed backend's flow loses both its entries instead: its next TCP segment is dropped as
 * one of an unknown flow (an RST is untested for IPv6), a SYN or a UDP datagram chooses again. Same rules
 * otherwise: an id given to another backend meanwhile keeps the flows that name its current address and
 * port; each entry is read again right before it goes. Returns how many flows it ended.
 */
export async function endFlowsOfRemovedBackends6(
  conntrack6: BpfMap,
  backends6: MapHandle,
  released: ReadonlySet<number>,
  yieldEvery = 256,
): Promise<number> {
  if (!released.size) return 0;
  const backendNow = backendsNow(backends6, backend6Codec);
  const { keys, values, count } = await conntrack6.entriesAsync();
  const ks = ct6Key.size;
  const vs = ct6Entry.size;
  let ended = 0;
  for (let i = 0; i < count; i++) {
    const k = ct6Key.decode(keys, i * ks);
    if (k.dir !== CT_DIR_FORWARD) continue;
    const e = ct6Entry.decode(values, i * vs);
    if (!released.has(e.backendId)) continue;
    if (backendNow(e.backendId) === `${e.addr}:${e.port}`) continue;
    const key = keys.subarray(i * ks, (i + 1) * ks);
    const raw = conntrack6.lookup(key);
    if (!raw) continue;
    const fresh = ct6Entry.decode(raw);
    if (fresh.backendId !== e.backendId || fresh.addr !== e.addr || fresh.port !== e.port) continue;
    // The reply entry is keyed backend -> client (ct6_create in bpf/lib/conntrack6.h).
    const reply = ct6Key.encode({ saddr: e.addr, daddr: k.saddr, sport: e.port, dport: k.sport, proto: k.proto, dir: CT_DIR_REPLY });
    const r = conntrack6.lookup(reply);
    if (r && ct6Entry.decode(r).backendId === e.backendId) conntrack6.delete(reply);
    if (conntrack6.delete(key)) ended++;
    if (ended % yieldEvery === 0) await yieldToLoop();
  }
  if (ended) log.info("ended tracked IPv6 flows of removed backends", { flows: ended, backends: released.size });
  return ended;
}
