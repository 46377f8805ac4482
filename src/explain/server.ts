// The daemon's local-only answer to `bpfproxy explain`: HTTP over a unix socket (mode 0600, root only) in
// /run/bpfproxy, one per network namespace like the mode file (src/dataplane/probe.ts). It answers from the
// last sync's model and objects; nothing is computed unless asked.
import { createServer, request, type Server } from "node:http";
import { chmodSync, mkdirSync, rmSync, statSync } from "node:fs";
import { explainModel, type ExplainQuery, type ExplainState, type ModelExplanation } from "./model.js";

export function explainSocketPath(): string {
  let ino = 0;
  try {
    ino = statSync("/proc/self/ns/net").ino;
  } catch {
    /* no procfs: one socket for all */
  }
  return `/run/bpfproxy/explain-netns-${ino}.sock`;
}

export class ExplainServer {
  private server: Server | undefined;

  constructor(
    private readonly state: () => ExplainState | undefined,
    readonly path = explainSocketPath(),
  ) {}

  async start(): Promise<void> {
    mkdirSync("/run/bpfproxy", { recursive: true });
    // A daemon killed in this namespace leaves its socket behind; only one daemon runs per namespace.
    rmSync(this.path, { force: true });
    const server = createServer((req, res) => {
      const send = (code: number, body: unknown) => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      const url = new URL(req.url ?? "/", "http://local");
      if (url.pathname !== "/v1/explain") return send(404, { error: "not found" });
      const st = this.state();
      if (!st) return send(503, { error: "the daemon has not synced yet" });
      const q = parseQuery(url.searchParams);
      if (typeof q === "string") return send(400, { error: q });
      try {
        send(200, explainModel(st, q));
      } catch (err) {
        // A sync built a newer model while this one was read: the client asks again.
        const msg = (err as Error).message;
        send(msg.includes("superseded") ? 503 : 500, { error: msg });
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.path, () => resolve());
    });
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}

function parseQuery(p: URLSearchParams): ExplainQuery | string {
  const dst = p.get("dst") ?? "";
  const port = Number(p.get("port"));
  const protocol = p.get("protocol");
  const src = p.get("src") ?? undefined;
  if (!dst) return "dst is required";
  if (!Number.isInteger(port) || port < 1 || port > 65535) return "port must be 1-65535";
  if (protocol !== "TCP" && protocol !== "UDP") return "protocol must be TCP or UDP";
  return { dst, port, protocol, src, fromPod: p.get("fromPod") === "1" };
}

/** The CLI's side: asks the daemon of this network namespace. */
export async function askDaemon(
  q: ExplainQuery,
  path = explainSocketPath(),
  timeoutMs = 10_000,
): Promise<ModelExplanation> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await askOnce(q, path, timeoutMs);
    } catch (err) {
      if (attempt >= 5 || !(err as { retry?: boolean }).retry) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function askOnce(q: ExplainQuery, path: string, timeoutMs: number): Promise<ModelExplanation> {
  const qs = new URLSearchParams({
    dst: q.dst,
    port: String(q.port),
    protocol: q.protocol,
    ...(q.src !== undefined ? { src: q.src } : {}),
    ...(q.fromPod ? { fromPod: "1" } : {}),
  });
  return await new Promise<ModelExplanation>((resolve, reject) => {
    const req = request({ socketPath: path, path: `/v1/explain?${qs}`, method: "GET", timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => {
        try {
          const parsed = JSON.parse(body) as ModelExplanation & { error?: string };
          if (res.statusCode !== 200) {
            const err: Error & { retry?: boolean } = new Error(`daemon: ${parsed.error ?? res.statusCode}`);
            err.retry = res.statusCode === 503;
            reject(err);
          } else resolve(parsed);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from the daemon within ${timeoutMs} ms (${path})`)));
    req.on("error", (err: NodeJS.ErrnoException) =>
      reject(
        err.code === "ENOENT" || err.code === "ECONNREFUSED"
          ? new Error(`no bpfproxy daemon answers on ${path} in this network namespace`)
          : err,
      ),
    );
    req.end();
  });
}
