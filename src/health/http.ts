// Small HTTP helpers shared by the health servers and the metrics server: kube-proxy's bind-address
// forms and a listen() that behaves like Go's net.Listen("tcp", ...) for wildcard addresses.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { log } from "../log.js";
import type { AddressInfo } from "node:net";
import { isIP } from "node:net";

export interface HostPort {
  /** "" means every address of the node (Go's ":port"). */
  host: string;
  port: number;
}

/**
 * Parses kube-proxy's bind-address forms: "0.0.0.0:10256", ":10256", "[::]:10256", "[::1]:10249".
 * A bare IP ("127.0.0.1", "::1", "[::1]") gets `defaultPort`, as kube-proxy's AppendPortIfNeeded does.
 * The host must be an IP literal (kube-proxy rejects host names here too).
 */
export function parseBindAddress(s: string, defaultPort: number): HostPort {
  const bad = (why: string) => new Error(`invalid bind address ${JSON.stringify(s)}: ${why}`);
  let host: string;
  let portText: string | undefined;
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0) throw bad("missing ']'");
    host = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) throw bad("expected ':' after ']'");
      portText = rest.slice(1);
    }
    if (isIP(host) !== 6) throw bad("brackets must hold an IPv6 address");
  } else if (isIP(s) !== 0) {
    host = s; // bare IPv4 or IPv6 literal
  } else {
    const i = s.lastIndexOf(":");
    if (i < 0) throw bad("expected IP:PORT");
    host = s.slice(0, i);
    portText = s.slice(i + 1);
    if (host.includes(":")) throw bad("an IPv6 address with a port must be written [ADDR]:PORT");
    if (host !== "" && isIP(host) !== 4) throw bad("host must be an IP address");
  }
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText)) throw bad("port must be a number");
    port = Number(portText);
    if (port > 65535) throw bad("port must be at most 65535");
  }
  return { host, port };
}

/** Formats host and port the way Go's net.JoinHostPort does. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const isWildcard = (host: string) => host === "" || host === "0.0.0.0" || host === "::";

function listenOnce(server: Server, host: string, port: number, ipv6Only: boolean): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off("listening", onListening);
      reject(err);
    };
    const onListening = () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen({ host, port, ipv6Only, exclusive: true });
  });
}

/**
 * Listens like Go does for network "tcp" (kube-proxy's net.Listen("tcp", addr)): a wildcard host ("",
 * "0.0.0.0", "::") gets one dual-stack socket on "::" (Go's favoriteAddrFamily: an unspecified address of
 * either family listens on both), so kube-proxy's default "0.0.0.0:10256" also answers on IPv6; on hosts
 * without IPv6 it falls back to "0.0.0.0". `onlyFamily` narrows a wildcard to one family (an IPv4 socket on
 * 0.0.0.0, or an IPv6-only socket on ::), for listeners that sit beside specific addresses of the other
 * family. Rejects with the listen error (EADDRINUSE, EADDRNOTAVAIL, ...).
 */
export async function listenHTTP(server: Server, hp: HostPort, onlyFamily?: 4 | 6): Promise<AddressInfo> {
  if (!isWildcard(hp.host)) return listenOnce(server, hp.host, hp.port, false);
  if (onlyFamily === 4) return listenOnce(server, "0.0.0.0", hp.port, false);
  if (onlyFamily === 6) return listenOnce(server, "::", hp.port, true);
  try {
    return await listenOnce(server, "::", hp.port, false);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EAFNOSUPPORT" && code !== "EADDRNOTAVAIL" && code !== "EINVAL") throw err;
    return listenOnce(server, "0.0.0.0", hp.port, false);
  }
}

/** Closes a server now, including idle keep-alive connections; resolves when it is closed. */
export function closeHTTP(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Go's encoding/json form of a time.Time in UTC (RFC 3339 with trailing fraction zeros trimmed). */
export function goJSONTime(ms: number | undefined): string {
  if (ms === undefined) return "0001-01-01T00:00:00Z"; // Go's zero time.Time
  const iso = new Date(ms).toISOString(); // 2024-01-02T03:04:05.120Z
  return iso.replace(/\.(\d*?)0*Z$/, (_m, frac: string) => (frac ? `.${frac}Z` : "Z"));
}

/**
 * One HTTP server's lifecycle as kube-proxy runs its health and metrics servers: start on a bind
 * address ("" = no server), report where it listens, stop and drop its connections.
 */
export class HttpEndpoint {
  private server: Server | undefined;

  constructor(
    private readonly o: {
      /** For log lines, e.g. "healthz". */
      name: string;
      bindAddress: string;
      defaultPort: number;
      handler: (req: IncomingMessage, res: ServerResponse) => void;
      /** The error start() rejects with when the port cannot be bound. */
      failure: (cause: Error) => Error;
    },
  ) {}

  async start(): Promise<AddressInfo | undefined> {
    if (this.o.bindAddress === "") return undefined;
    if (this.server?.listening) return this.server.address() as AddressInfo;
    const hp = parseBindAddress(this.o.bindAddress, this.o.defaultPort);
    const server = createServer(this.o.handler);
    try {
      const addr = await listenHTTP(server, hp);
      server.on("error", (err) => log.error(`${this.o.name} server error`, { error: err.message }));
      this.server = server;
      log.v(3, `Starting ${this.o.name} HTTP server`, { address: joinHostPort(addr.address, addr.port) });
      return addr;
    } catch (err) {
      throw this.o.failure(err as Error);
    }
  }

  address(): AddressInfo | undefined {
    return this.server?.listening ? (this.server.address() as AddressInfo) : undefined;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeHTTP(s);
  }
}
