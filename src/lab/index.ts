// The lab: private network-namespace topologies (docs/lab.md) and the echo tool that runs inside them.

import type { ChildProcess } from "node:child_process";
import { statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Lab, type ExecOptions, type ExecResult } from "./netns.js";
import type { AttemptResult, LoadReport } from "./echo.js";

export { Lab, UPSTREAM, NODE_FILTER_RULES } from "./netns.js";
export type { LabSpec, LabNodeSpec, LabPodSpec, ExecResult, ExecOptions, LabSpawnOptions } from "./netns.js";
export { serve, request, hold, load, echoMain } from "./echo.js";
export { prepareLabForXdp } from "./xdp.js";
export { sendSpoofedTcp } from "./spoof.js";
export type { SpoofedTcpOptions } from "./spoof.js";
export { Tap, NO_OFFLOAD } from "./tap.js";
export type { TapFrame, VnetHdr } from "./tap.js";
export type {
  EchoServer,
  EchoServerOptions,
  AttemptResult,
  RequestOptions,
  HoldOptions,
  Holder,
  LoadOptions,
  LoadReport,
} from "./echo.js";

const fromSource = import.meta.url.endsWith(".ts");

/** dist/lab/echo.js when it is at least as new as src/lab/echo.ts (which imports only node's own modules). */
function builtEcho(): string | undefined {
  const src = fileURLToPath(new URL("./echo.ts", import.meta.url));
  const built = fileURLToPath(new URL("../../dist/lab/echo.js", import.meta.url));
  try {
    return statSync(built).mtimeMs >= statSync(src).mtimeMs ? built : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The command that runs the echo tool: `node dist/lab/echo.js` when this module was loaded from dist, or from
 * source with a build at least as new (tsx's start-up cost ~0.5-1 s per run on a loaded 2-core host, and
 * several seconds under the VM suite's emulation; the suite runs the tool hundreds of times), else
 * `node --import <tsx loader> src/lab/echo.ts`. Absolute paths, so it works from any working directory.
 */
export function echoCommand(): string[] {
  if (!fromSource) return [process.execPath, fileURLToPath(new URL("./echo.js", import.meta.url))];
  const built = builtEcho();
  if (built) return [process.execPath, built];
  return [
    process.execPath,
    "--import",
    import.meta.resolve("tsx"),
    fileURLToPath(new URL("./echo.ts", import.meta.url)),
  ];
}

/** Runs the echo tool to completion inside a lab namespace (e.g. `request ...`). */
export function runEcho(lab: Lab, ns: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
  return lab.exec(ns, [...echoCommand(), ...args], { timeoutMs: 30_000, ...opts });
}

/** Starts the echo tool inside a lab namespace (tracked by the lab, killed by destroy()). */
export function spawnEcho(lab: Lab, ns: string, args: string[]): ChildProcess {
  return lab.spawn(ns, [...echoCommand(), ...args]);
}

export interface StartServerOptions {
  name: string;
  tcp?: number[];
  udp?: number[];
  /** Listen address: default 0.0.0.0 (IPv4); "::" for IPv6 and dual-stack pods (both families). */
  bind?: string;
  /** How long to wait for "ready". Default 10000. */
  timeoutMs?: number;
}

/** Starts `echo serve` in a namespace and waits until it prints "ready". Stop it with `.kill()` or lab.destroy(). */
export function startEchoServer(lab: Lab, ns: string, opts: StartServerOptions): Promise<ChildProcess> {
  const args = ["serve", "--name", opts.name];
  if (opts.tcp?.length) args.push("--tcp", opts.tcp.join(","));
  if (opts.udp?.length) args.push("--udp", opts.udp.join(","));
  if (opts.bind !== undefined) args.push("--bind", opts.bind);
  const child = spawnEcho(lab, ns, args);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`lab: echo server ${opts.name} in ${ns}: ${why}; stderr: ${err.trim()}`));
    };
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("ready\n")) {
        clearTimeout(timer);
        child.stdout!.removeAllListeners("data");
        child.stdout!.resume();
        resolve(child);
      }
    });
    child.once("exit", (code, sig) => fail(`exited (${code ?? sig}) before ready`));
  });
}

export interface EchoRequestOptions {
  /** HOST:PORT; an IPv6 host in brackets, e.g. "[fd00:96::50]:80". */
  tcp?: string;
  udp?: string;
  count?: number;
  timeoutMs?: number;
  /** UDP: attempt i sends from port sportBase + i (see the echo tool's --sport-base). */
  sportBase?: number;
  /** What each attempt sends (default "ping"); a newline is added. */
  payload?: string;
  /** All attempts at once (the echo tool's --parallel): for attempts expected to time out. */
  parallel?: boolean;
}

/** Runs `echo request` in a namespace and returns the per-attempt results. */
export async function echoRequest(lab: Lab, ns: string, opts: EchoRequestOptions): Promise<AttemptResult[]> {
  const args = ["request"];
  if (opts.tcp) args.push("--tcp", opts.tcp);
  if (opts.udp) args.push("--udp", opts.udp);
  const count = opts.count ?? 1;
  const timeoutMs = opts.timeoutMs ?? 2000;
  args.push("--count", String(count), "--timeout-ms", String(timeoutMs));
  if (opts.sportBase) args.push("--sport-base", String(opts.sportBase));
  if (opts.payload !== undefined) args.push("--payload", opts.payload);
  if (opts.parallel) args.push("--parallel", "1");
  const r = await runEcho(lab, ns, args, { timeoutMs: 10_000 + count * timeoutMs });
  if (r.code !== 0)
    throw new Error(
      `lab: echo request in ${ns} failed (${r.timedOut ? "timeout" : `exit ${r.code}`}): ${r.stderr.trim()}`,
    );
  return (JSON.parse(r.stdout.trim()) as { results: AttemptResult[] }).results;
}

export interface HoldHandle {
  child: ChildProcess;
  /** Every event so far, in order. */
  events: Array<{ reply: string } | { error: string }>;
  /** Resolves once `n` events have arrived (or rejects after timeoutMs). */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  /** Closes stdin (the tool exits) and waits, bounded, for the exit. */
  stop(): Promise<void>;
}

/** Starts `echo hold` in a namespace: one TCP connection pinging every intervalMs. */
export function startHold(lab: Lab, ns: string, target: string, intervalMs = 200, timeoutMs = 2000): HoldHandle {
  const child = spawnEcho(lab, ns, [
    "hold",
    "--tcp",
    target,
    "--interval-ms",
    String(intervalMs),
    "--timeout-ms",
    String(timeoutMs),
  ]);
  const events: HoldHandle["events"] = [];
  const waiters: Array<() => void> = [];
  let buf = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      try {
        events.push(JSON.parse(line) as { reply: string } | { error: string });
      } catch {
        events.push({ error: `bad output ${line}` });
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  child.stderr!.resume();
  let exited = false;
  child.once("exit", () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    child,
    events,
    waitFor(n: number, waitMs = 10_000): Promise<void> {
      const deadline = Date.now() + waitMs;
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (events.length >= n) return resolve();
          if (exited)
            return reject(
              new Error(`lab: hold exited after ${events.length} events: ${JSON.stringify(events.slice(-3))}`),
            );
          if (Date.now() >= deadline)
            return reject(new Error(`lab: hold: ${events.length}/${n} events after ${waitMs} ms`));
          waiters.push(check);
          setTimeout(check, Math.max(1, deadline - Date.now())).unref();
        };
        check();
      });
    },
    async stop(): Promise<void> {
      if (exited) return;
      child.stdin!.end();
      const deadline = Date.now() + 3000;
      while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (!exited) child.kill("SIGKILL");
    },
  };
}

export interface LoadHandle {
  /** Events so far with the time (Date.now() here) they arrived: {"event":"tcp-end","i","backend","error"}. */
  events: Array<{ at: number; event: string; [k: string]: unknown }>;
  /** Resolves once every connection and flow has had its first reply. */
  ready(timeoutMs?: number): Promise<void>;
  /** Ends the load (closes stdin) and returns its report. */
  stop(timeoutMs?: number): Promise<LoadReport>;
}

export interface StartLoadOptions {
  tcp?: string;
  udp?: string;
  conns?: number;
  flows?: number;
  intervalMs?: number;
  newPerSec?: number;
  timeoutMs?: number;
}

/** Starts `echo load` in a namespace: long-lived TCP connections, UDP flows and fresh connections. */
export function startLoad(lab: Lab, ns: string, o: StartLoadOptions): LoadHandle {
  const args = ["load"];
  if (o.tcp) args.push("--tcp", o.tcp);
  if (o.udp) args.push("--udp", o.udp);
  for (const [flag, v] of [
    ["conns", o.conns],
    ["flows", o.flows],
    ["interval-ms", o.intervalMs],
    ["new-per-sec", o.newPerSec],
    ["timeout-ms", o.timeoutMs],
  ] as const) {
    if (v !== undefined) args.push(`--${flag}`, String(v));
  }
  const child = spawnEcho(lab, ns, args);
  const events: LoadHandle["events"] = [];
  let report: LoadReport | undefined;
  let exited = false;
  let stderr = "";
  let buf = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const ev = JSON.parse(line) as { event: string; report?: LoadReport };
      if (ev.event === "report") report = ev.report;
      else events.push({ at: Date.now(), ...ev });
    }
  });
  child.once("close", () => (exited = true)); // after stdout is drained, so the report line is in
  const waitUntil = async (pred: () => boolean, ms: number, what: string): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (exited) throw new Error(`lab: load in ${ns} exited before ${what}; stderr: ${stderr.trim()}`);
      if (Date.now() > deadline)
        throw new Error(`lab: load in ${ns}: no ${what} after ${ms} ms; stderr: ${stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  let stopped: Promise<LoadReport> | undefined;
  return {
    events,
    ready: (ms = 15_000) => waitUntil(() => events.some((e) => e.event === "ready"), ms, "ready"),
    stop(ms = 15_000): Promise<LoadReport> {
      stopped ??= (async () => {
        child.stdin!.end();
        try {
          await waitUntil(() => report !== undefined, ms, "report");
        } finally {
          if (!exited) child.kill("SIGKILL");
        }
        return report!;
      })();
      return stopped;
    },
  };
}
