// Echo tool for the lab (docs/lab.md): backends answer with their own name and the peer address they saw.
//
//   echo serve   --name NAME [--tcp PORT[,PORT]] [--udp PORT[,PORT]] [--bind ADDR]
//       Answers each line on TCP (connection stays open) and each UDP datagram with "NAME <peer-ip>:<peer-port>\n"
//       ("NAME [<peer-ip6>]:<peer-port>\n" for an IPv6 peer; --bind :: listens for both families).
//       An answer to a longer line or datagram is padded with '.' to its size (TCP: inside the line, after a space;
//       UDP: after the line), so large requests get equally large answers (fragments, full-size segments both ways).
//       Prints "ready" on stdout once every socket listens.
//   echo request (--tcp HOST:PORT | --udp HOST:PORT) [--count N] [--timeout-ms T] [--payload TEXT] [--sport-base P] [--parallel 1]
//       --sport-base: attempt i sends from port P+i (below the ephemeral range, so a test's phases never reuse
//       an earlier phase's tuple, which would still be tracked).
//       N separate attempts (TCP: connect, send a line, read the reply, close; UDP: a fresh connected socket each),
//       prints one JSON line {"results":[{"ok":true,"reply":"...","ms":1.2} | {"ok":false,"error":"ECONNREFUSED","ms":..}]}.
//   echo hold    --tcp HOST:PORT [--interval-ms I] [--timeout-ms T]
//       One TCP connection, a line every interval; prints {"reply":"..."} per answer or {"error":"..."} and exits
//       on error. Exits 0 when stdin closes.
//   echo load    [--tcp HOST:PORT] [--udp HOST:PORT] [--conns N] [--flows M] [--interval-ms I] [--new-per-sec R]
//                [--timeout-ms T]
//       Load for reliability tests: N long-lived TCP connections and M connected UDP flows, each sending a line
//       every interval and noting which backend answered, plus R fresh TCP connections a second. Prints
//       {"event":"tcp-end",...} when a long-lived connection ends, {"event":"ready"} once every connection and
//       flow has had a reply, and the LoadReport as the last line when stdin closes.

import * as dgram from "node:dgram";
import * as net from "node:net";
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface EchoServerOptions {
  name: string;
  tcp?: number[];
  udp?: number[];
  /** Default "0.0.0.0" (IPv4 only); "::" takes both families (a dual-stack socket), as do IPv6-only pods. */
  bind?: string;
}

export interface EchoServer {
  /** Actual bound ports (useful with port 0). */
  tcpPorts: number[];
  udpPorts: number[];
  close(): Promise<void>;
}

export interface AttemptResult {
  ok: boolean;
  reply?: string;
  error?: string;
  ms: number;
}

export interface RequestOptions {
  proto: "tcp" | "udp";
  host: string;
  port: number;
  count?: number;
  timeoutMs?: number;
  payload?: string;
  /** Attempt i binds source port sportBase + i (0 = an ephemeral port); TCP binds with SO_REUSEADDR (libuv). */
  sportBase?: number;
  /** All attempts at once: for attempts expected to time out (a drop), which would each wait out their whole
   * timeout one after the other. */
  parallel?: boolean;
}

/** "NAME ip:port" for an IPv4 peer (also one seen on a dual-stack socket), "NAME [ip6]:port" for an IPv6 one. */
function peerText(name: string, addr: string | undefined, port: number | undefined): string {
  let a = addr ?? "?";
  if (a.startsWith("::ffff:") && net.isIPv4(a.slice(7))) a = a.slice(7);
  else if (net.isIPv6(a)) a = `[${a}]`;
  return `${name} ${a}:${port ?? 0}\n`;
}

/** Starts TCP and UDP echo listeners. */
export async function serve(opts: EchoServerOptions): Promise<EchoServer> {
  const bind = opts.bind ?? "0.0.0.0";
  const tcpServers: net.Server[] = [];
  const udpSockets: dgram.Socket[] = [];
  const conns = new Set<net.Socket>();
  const close = async (): Promise<void> => {
    for (const c of conns) c.destroy();
    await Promise.all([
      ...tcpServers.map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...udpSockets.map((s) => new Promise<void>((r) => s.close(() => r()))),
    ]);
  };
  try {
    for (const port of opts.tcp ?? []) {
      const srv = net.createServer((sock) => {
        conns.add(sock);
        sock.on("close", () => conns.delete(sock));
        sock.on("error", () => {});
        sock.setNoDelay(true);
        const text = peerText(opts.name, sock.remoteAddress, sock.remotePort);
        onLines(sock, (line) =>
          sock.write(
            line.length + 1 > text.length ? `${text.slice(0, -1)} ${".".repeat(line.length - text.length)}\n` : text,
          ),
        );
      });
      tcpServers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen({ port, host: bind, backlog: 1024 }, () => {
          srv.off("error", reject);
          resolve();
        });
      });
    }
    for (const port of opts.udp ?? []) {
      const sock = dgram.createSocket({ type: net.isIPv6(bind) ? "udp6" : "udp4" });
      udpSockets.push(sock);
      sock.on("message", (msg, rinfo) => {
        const text = Buffer.from(peerText(opts.name, rinfo.address, rinfo.port));
        const answer =
          msg.length > text.length ? Buffer.concat([text, Buffer.alloc(msg.length - text.length, ".")]) : text;
        sock.send(answer, rinfo.port, rinfo.address);
      });
      await new Promise<void>((resolve, reject) => {
        sock.once("error", reject);
        sock.bind(port, bind, () => {
          sock.off("error", reject);
          sock.on("error", () => {});
          resolve();
        });
      });
    }
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
  return {
    tcpPorts: tcpServers.map((s) => (s.address() as net.AddressInfo).port),
    udpPorts: udpSockets.map((s) => s.address().port),
    close,
  };
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ?? err?.message ?? String(e);
}

function tcpAttempt(host: string, port: number, timeoutMs: number, payload: string, sport = 0): Promise<AttemptResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let done = false;
    let buf = "";
    const sock = net.createConnection({ host, port, ...(sport ? { localPort: sport } : {}) });
    const finish = (r: { ok: boolean; reply?: string; error?: string }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...r, ms: Math.round((performance.now() - t0) * 100) / 100 });
    };
    const timer = setTimeout(() => finish({ ok: false, error: "timeout" }), timeoutMs);
    sock.setNoDelay(true);
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(payload + "\n"));
    sock.on("data", (d: string) => {
      buf += d;
      const i = buf.indexOf("\n");
      if (i >= 0) finish({ ok: true, reply: buf.slice(0, i) });
    });
    sock.on("error", (e) => finish({ ok: false, error: errText(e) }));
    sock.on("close", () =>
      finish({ ok: false, error: buf ? `closed after partial reply ${JSON.stringify(buf)}` : "closed" }),
    );
  });
}

/** Calls `onLine` with each newline-terminated line read from `sock`; an unterminated line past 64 KiB is dropped. */
function onLines(sock: net.Socket, onLine: (line: string) => void): void {
  let buf = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      onLine(line);
    }
    if (buf.length > 65536) buf = "";
  });
}

function udpAttempt(host: string, port: number, timeoutMs: number, payload: string, sport = 0): Promise<AttemptResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const sock = dgram.createSocket({ type: net.isIPv6(host) ? "udp6" : "udp4" });
    const finish = (r: { ok: boolean; reply?: string; error?: string }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        /* not open */
      }
      resolve({ ...r, ms: Math.round((performance.now() - t0) * 100) / 100 });
    };
    const timer = setTimeout(() => finish({ ok: false, error: "timeout" }), timeoutMs);
    sock.on("error", (e) => finish({ ok: false, error: errText(e) }));
    sock.on("message", (msg) => finish({ ok: true, reply: msg.toString("utf8").replace(/\n$/, "") }));
    // On a failed connect Node passes the error to this callback instead of emitting 'error'.
    const onConnect = (err?: Error | null): void => {
      if (err) return finish({ ok: false, error: errText(err) });
      sock.send(payload + "\n", (e) => {
        if (e) finish({ ok: false, error: errText(e) });
      });
    };
    const connect = (): void => {
      try {
        sock.connect(port, host, onConnect);
      } catch (e) {
        finish({ ok: false, error: errText(e) });
      }
    };
    if (sport) sock.bind(sport, connect);
    else connect();
  });
}

/** Makes `count` separate attempts, one after the other (or all at once: `parallel`); failures are reported per
 * attempt. */
export async function request(opts: RequestOptions): Promise<{ results: AttemptResult[] }> {
  const count = opts.count ?? 1;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const payload = opts.payload ?? "ping";
  const attempt = (i: number): Promise<AttemptResult> =>
    opts.proto === "tcp"
      ? tcpAttempt(opts.host, opts.port, timeoutMs, payload, opts.sportBase ? opts.sportBase + i : 0)
      : udpAttempt(opts.host, opts.port, timeoutMs, payload, opts.sportBase ? opts.sportBase + i : 0);
  if (opts.parallel) return { results: await Promise.all(Array.from({ length: count }, (_, i) => attempt(i))) };
  const results: AttemptResult[] = [];
  for (let i = 0; i < count; i++) results.push(await attempt(i));
  return { results };
}

export interface HoldOptions {
  host: string;
  port: number;
  intervalMs?: number;
  /** Per-reply limit; a missing reply is an error. Default 2000. */
  timeoutMs?: number;
  onEvent: (ev: { reply: string } | { error: string }) => void;
}

export interface Holder {
  stop(): void;
  /** Resolves when the connection ended: "stopped" or the error text. */
  done: Promise<string>;
}

/** One long-lived TCP connection that sends a line every interval and reports every reply. */
export function hold(opts: HoldOptions): Holder {
  const intervalMs = opts.intervalMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const sock = net.createConnection({ host: opts.host, port: opts.port });
  let ended = false;
  let waiting: NodeJS.Timeout | undefined;
  let tick: NodeJS.Timeout | undefined;
  let resolveDone!: (s: string) => void;
  const done = new Promise<string>((r) => (resolveDone = r));
  const end = (why: string, isError: boolean): void => {
    if (ended) return;
    ended = true;
    if (waiting) clearTimeout(waiting);
    if (tick) clearTimeout(tick);
    sock.destroy();
    if (isError) opts.onEvent({ error: why });
    resolveDone(why);
  };
  const ping = (): void => {
    if (ended) return;
    sock.write("ping\n");
    waiting = setTimeout(() => end("timeout", true), timeoutMs);
  };
  sock.setNoDelay(true);
  sock.on("connect", ping);
  onLines(sock, (line) => {
    if (waiting) clearTimeout(waiting);
    waiting = undefined;
    opts.onEvent({ reply: line });
    if (!ended) tick = setTimeout(ping, intervalMs);
  });
  sock.on("error", (e) => end(errText(e), true));
  sock.on("close", () => end("closed", true));
  return { stop: () => end("stopped", false), done };
}

export interface LoadOptions {
  tcp?: { host: string; port: number };
  udp?: { host: string; port: number };
  conns: number;
  flows: number;
  intervalMs: number;
  newPerSec: number;
  timeoutMs: number;
  onEvent?: (ev: Record<string, unknown>) => void;
}

export interface LoadReport {
  /** Per long-lived TCP connection: the backend that answered first, replies, answers from another backend, how it ended. */
  tcp: Array<{ backend?: string; replies: number; moved: number; end?: string }>;
  /**
   * Per UDP flow: every backend that answered, in order of first answer (one means it never moved), the one
   * that answered last, replies, unanswered datagrams.
   */
  udp: Array<{ backends: string[]; last?: string; replies: number; timeouts: number }>;
  /** Fresh TCP connections: answered, failed (by error), and the longest run of consecutive failures. */
  fresh: {
    ok: number;
    failed: number;
    errors: Record<string, number>;
    maxFailStreak: number;
    backends: Record<string, number>;
  };
}

/** Runs the load until stop() is called; resolves the report after that. */
export function load(o: LoadOptions): { stop(): Promise<LoadReport>; ready: Promise<void> } {
  const report: LoadReport = {
    tcp: [],
    udp: [],
    fresh: { ok: 0, failed: 0, errors: {}, maxFailStreak: 0, backends: {} },
  };
  const emit = o.onEvent ?? (() => {});
  let stopping = false;
  const holders: Holder[] = [];
  const udpStops: Array<() => void> = [];
  let pendingReady = 0;
  let resolveReady!: () => void;
  const ready = new Promise<void>((r) => (resolveReady = r));
  const firstReply = (): void => {
    if (--pendingReady === 0) resolveReady();
  };
  if (o.tcp) {
    for (let i = 0; i < o.conns; i++) {
      const rec: LoadReport["tcp"][number] = { replies: 0, moved: 0 };
      report.tcp.push(rec);
      pendingReady++;
      holders.push(
        hold({
          host: o.tcp.host,
          port: o.tcp.port,
          intervalMs: o.intervalMs,
          timeoutMs: o.timeoutMs,
          onEvent: (ev) => {
            if ("reply" in ev) {
              const name = ev.reply.split(" ")[0]!;
              if (rec.backend === undefined) {
                rec.backend = name;
                firstReply();
              } else if (name !== rec.backend) rec.moved++;
              rec.replies++;
            } else if (!stopping) {
              rec.end = ev.error;
              emit({ event: "tcp-end", i, backend: rec.backend, error: ev.error });
            }
          },
        }),
      );
    }
  }
  if (o.udp) {
    const { host, port } = o.udp;
    for (let i = 0; i < o.flows; i++) {
      const rec: LoadReport["udp"][number] = { backends: [], replies: 0, timeouts: 0 };
      report.udp.push(rec);
      pendingReady++;
      const sock = dgram.createSocket({ type: net.isIPv6(host) ? "udp6" : "udp4" });
      let waiting: NodeJS.Timeout | undefined;
      let tick: NodeJS.Timeout | undefined;
      let closed = false;
      const send = (): void => {
        if (closed) return;
        sock.send("ping\n", (e) => {
          if (e) rec.timeouts++;
        });
        waiting = setTimeout(() => {
          rec.timeouts++;
          waiting = undefined;
          send();
        }, o.timeoutMs);
      };
      sock.on("error", () => {}); // ICMP errors on a connected socket: counted as timeouts
      sock.on("message", (msg) => {
        const name = msg.toString("utf8").split(" ")[0]!;
        if (!rec.backends.includes(name)) rec.backends.push(name);
        rec.last = name;
        if (rec.replies++ === 0) firstReply();
        if (waiting) clearTimeout(waiting);
        if (tick) clearTimeout(tick); // a late reply to a resent datagram: keep one send loop
        waiting = undefined;
        tick = setTimeout(send, o.intervalMs);
      });
      sock.connect(port, host, send);
      udpStops.push(() => {
        closed = true;
        clearTimeout(waiting);
        clearTimeout(tick);
        try {
          sock.close();
        } catch {
          /* not open */
        }
      });
    }
  }
  if (pendingReady === 0) resolveReady();
  let freshLoop: Promise<void> = Promise.resolve();
  if (o.tcp && o.newPerSec > 0) {
    const { host, port } = o.tcp;
    const gap = 1000 / o.newPerSec;
    freshLoop = (async () => {
      let streak = 0;
      while (!stopping) {
        const t0 = Date.now();
        const r = await tcpAttempt(host, port, o.timeoutMs, "ping");
        const f = report.fresh;
        if (r.ok) {
          f.ok++;
          streak = 0;
          const name = r.reply!.split(" ")[0]!;
          f.backends[name] = (f.backends[name] ?? 0) + 1;
        } else {
          f.failed++;
          f.errors[r.error!] = (f.errors[r.error!] ?? 0) + 1;
          f.maxFailStreak = Math.max(f.maxFailStreak, ++streak);
        }
        await new Promise((res) => setTimeout(res, Math.max(0, gap - (Date.now() - t0))));
      }
    })();
  }
  return {
    ready,
    async stop(): Promise<LoadReport> {
      stopping = true;
      for (const h of holders) h.stop();
      for (const u of udpStops) u();
      await freshLoop;
      return report;
    },
  };
}

// ---------------------------------------------------------------------------------------------- CLI

function parseHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  const host = s.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`bad HOST:PORT ${JSON.stringify(s)}`);
  return { host, port };
}

function parsePorts(s: string): number[] {
  return s
    .split(",")
    .filter(Boolean)
    .map((p) => {
      const n = Number(p);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port ${JSON.stringify(p)}`);
      return n;
    });
}

function parseFlags(args: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf("=");
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else {
      const v = args[i + 1];
      if (v === undefined) throw new Error(`${a} needs a value`);
      m.set(a.slice(2), v);
      i++;
    }
  }
  return m;
}

function num(flags: Map<string, string>, key: string, dflt: number): number {
  const v = flags.get(key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${key}: bad number ${JSON.stringify(v)}`);
  return n;
}

const USAGE = `usage:
  echo serve --name NAME [--tcp PORT[,PORT]] [--udp PORT[,PORT]] [--bind ADDR]
  echo request (--tcp HOST:PORT | --udp HOST:PORT) [--count N] [--timeout-ms T] [--payload TEXT] [--sport-base P] [--parallel 1]
  echo hold --tcp HOST:PORT [--interval-ms I] [--timeout-ms T]
  echo load [--tcp HOST:PORT] [--udp HOST:PORT] [--conns N] [--flows M] [--interval-ms I] [--new-per-sec R] [--timeout-ms T]`;

/** CLI entry; resolves with the exit code (serve never resolves). */
export async function echoMain(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const flags = parseFlags(rest);
  switch (cmd) {
    case "serve": {
      const name = flags.get("name");
      if (!name) throw new Error("serve: --name is required");
      const tcp = flags.has("tcp") ? parsePorts(flags.get("tcp")!) : [];
      const udp = flags.has("udp") ? parsePorts(flags.get("udp")!) : [];
      if (tcp.length + udp.length === 0) throw new Error("serve: give --tcp and/or --udp");
      const srv = await serve({ name, tcp, udp, bind: flags.get("bind") });
      process.stdout.write("ready\n");
      const stop = (): void => {
        void srv.close().finally(() => process.exit(0));
        setTimeout(() => process.exit(0), 500).unref();
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
      return new Promise<number>(() => {});
    }
    case "request": {
      const t = flags.get("tcp");
      const u = flags.get("udp");
      if ((t === undefined) === (u === undefined)) throw new Error("request: give exactly one of --tcp or --udp");
      const { host, port } = parseHostPort((t ?? u)!);
      const out = await request({
        proto: t !== undefined ? "tcp" : "udp",
        host,
        port,
        count: num(flags, "count", 1),
        timeoutMs: num(flags, "timeout-ms", 2000),
        payload: flags.get("payload"),
        sportBase: num(flags, "sport-base", 0),
        parallel: num(flags, "parallel", 0) > 0,
      });
      process.stdout.write(JSON.stringify(out) + "\n");
      return 0;
    }
    case "hold": {
      const t = flags.get("tcp");
      if (t === undefined) throw new Error("hold: --tcp HOST:PORT is required");
      const { host, port } = parseHostPort(t);
      const h = hold({
        host,
        port,
        intervalMs: num(flags, "interval-ms", 200),
        timeoutMs: num(flags, "timeout-ms", 2000),
        onEvent: (ev) => process.stdout.write(JSON.stringify(ev) + "\n"),
      });
      process.stdin.on("end", () => h.stop());
      process.stdin.on("error", () => h.stop());
      process.stdin.resume();
      const why = await h.done;
      process.stdin.pause();
      return why === "stopped" ? 0 : 1;
    }
    case "load": {
      const t = flags.get("tcp");
      const u = flags.get("udp");
      if (t === undefined && u === undefined) throw new Error("load: give --tcp and/or --udp");
      const out = (ev: unknown) => process.stdout.write(JSON.stringify(ev) + "\n");
      const l = load({
        tcp: t === undefined ? undefined : parseHostPort(t),
        udp: u === undefined ? undefined : parseHostPort(u),
        conns: num(flags, "conns", 10),
        flows: num(flags, "flows", 10),
        intervalMs: num(flags, "interval-ms", 100),
        newPerSec: num(flags, "new-per-sec", 20),
        timeoutMs: num(flags, "timeout-ms", 2000),
        onEvent: out,
      });
      void l.ready.then(() => out({ event: "ready" }));
      await new Promise<void>((resolve) => {
        process.stdin.on("end", resolve);
        process.stdin.on("error", resolve);
        process.stdin.resume();
      });
      process.stdin.pause();
      out({ event: "report", report: await l.stop() });
      return 0;
    }
    default:
      process.stderr.write(USAGE + "\n");
      return 2;
  }
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  echoMain(process.argv.slice(2)).then(
    (code) => {
      process.stdout.write("", () => process.exit(code));
    },
    (e: unknown) => {
      process.stderr.write(`echo: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(2);
    },
  );
}
