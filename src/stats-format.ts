// `bpfproxy status --stats` and `--rate`: per-Service and per-backend traffic as columns, like
// `ipvsadm -L --stats` (totals) and `ipvsadm -L --rate` (per second over an interval). Both modes
// (bpf, ipvs) fill DataplaneStatus.frontendCounters/backendCounters, so one formatter serves both.
import { hostPort, table } from "./format.js";
import type { DataplaneStatus } from "./dataplane/types.js";

type FrontendCounter = DataplaneStatus["frontendCounters"][number];
type BackendCounter = NonNullable<DataplaneStatus["backendCounters"]>[number];

const feKey = (c: FrontendCounter) => `${c.service}|${c.type}|${c.address}:${c.port}/${c.protocol}`;
const beKey = (c: BackendCounter) => `${hostPort(c.address, c.port)}/${c.protocol}`;
const dropTotal = (c: FrontendCounter) => Object.values(c.drops ?? {}).reduce((a, b) => a + b, 0);
const dropText = (c: FrontendCounter) =>
  Object.entries(c.drops ?? {})
    .filter(([, n]) => n > 0)
    .map(([r, n]) => `${r}=${n}`)
    .join(",") || "-";

/** Per-second rates between two readings `seconds` apart (counters that went backwards count from zero). */
export interface TrafficRates {
  intervalSeconds: number;
  frontends: (Omit<FrontendCounter, "packets" | "bytes" | "connections" | "drops"> & {
    connectionsPerSecond: number;
    packetsPerSecond: number;
    bytesPerSecond: number;
    dropsPerSecond: number;
  })[];
  backends: (Omit<BackendCounter, "packets" | "bytes" | "connections"> & {
    connectionsPerSecond: number;
    packetsPerSecond: number;
    bytesPerSecond: number;
  })[];
}

const per = (now: number, before: number | undefined, s: number) =>
  Math.round(((now >= (before ?? 0) ? now - (before ?? 0) : now) / s) * 10) / 10;

export function trafficRates(before: DataplaneStatus, after: DataplaneStatus, seconds: number): TrafficRates {
  const fb = new Map(before.frontendCounters.map((c) => [feKey(c), c]));
  const bb = new Map((before.backendCounters ?? []).map((c) => [beKey(c), c]));
  return {
    intervalSeconds: seconds,
    frontends: after.frontendCounters.map((c) => {
      const p = fb.get(feKey(c));
      const { packets, bytes, connections, drops, ...rest } = c;
      void drops;
      return {
        ...rest,
        connectionsPerSecond: per(connections ?? 0, p?.connections, seconds),
        packetsPerSecond: per(packets, p?.packets, seconds),
        bytesPerSecond: per(bytes, p?.bytes, seconds),
        dropsPerSecond: per(dropTotal(c), p ? dropTotal(p) : 0, seconds),
      };
    }),
    backends: (after.backendCounters ?? []).map((c) => {
      const p = bb.get(beKey(c));
      const { packets, bytes, connections, ...rest } = c;
      return {
        ...rest,
        connectionsPerSecond: per(connections, p?.connections, seconds),
        packetsPerSecond: per(packets, p?.packets, seconds),
        bytesPerSecond: per(bytes, p?.bytes, seconds),
      };
    }),
  };
}

/** Totals, as `ipvsadm -L --stats`: one row per frontend, its backends below it. */
export function formatStats(st: DataplaneStatus): string {
  const rows: string[][] = [];
  for (const c of st.frontendCounters) {
    rows.push([
      `${c.service}${c.portName ? ":" + c.portName : ""}`,
      c.type,
      `${hostPort(c.address, c.port)}/${c.protocol}`,
      String(c.connections ?? 0),
      String(c.packets),
      String(c.bytes),
      dropText(c),
    ]);
  }
  const out = [
    "Per frontend (since the maps were created)\n",
    rows.length ? table(["SERVICE", "TYPE", "FRONTEND", "CONNS", "INPKTS", "INBYTES", "DROPS"], rows) : "none yet\n",
    "\nPer backend\n",
  ];
  const be = st.backendCounters ?? [];
  out.push(
    be.length
      ? table(
          ["BACKEND", "SERVICES", "CONNS", "INPKTS", "INBYTES"],
          be.map((c) => [
            `${hostPort(c.address, c.port)}/${c.protocol}`,
            c.services.join(",") || "-",
            String(c.connections),
            String(c.packets),
            String(c.bytes),
          ]),
        )
      : "none yet\n",
  );
  return out.join("");
}

/** Rates, as `ipvsadm -L --rate`. */
export function formatRates(r: TrafficRates): string {
  const out = [
    `Per frontend (per second over ${r.intervalSeconds}s)\n`,
    r.frontends.length
      ? table(
          ["SERVICE", "TYPE", "FRONTEND", "CPS", "INPPS", "INBPS", "DROPS/S"],
          r.frontends.map((c) => [
            `${c.service}${c.portName ? ":" + c.portName : ""}`,
            c.type,
            `${hostPort(c.address, c.port)}/${c.protocol}`,
            String(c.connectionsPerSecond),
            String(c.packetsPerSecond),
            String(c.bytesPerSecond),
            String(c.dropsPerSecond),
          ]),
        )
      : "none yet\n",
    "\nPer backend\n",
    r.backends.length
      ? table(
          ["BACKEND", "SERVICES", "CPS", "INPPS", "INBPS"],
          r.backends.map((c) => [
            `${hostPort(c.address, c.port)}/${c.protocol}`,
            c.services.join(",") || "-",
            String(c.connectionsPerSecond),
            String(c.packetsPerSecond),
            String(c.bytesPerSecond),
          ]),
        )
      : "none yet\n",
  ];
  return out.join("");
}
