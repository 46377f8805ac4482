// The metrics server on --metrics-bind-address (default 127.0.0.1:10249), serving what kube-proxy serves
// on that port (cmd/kube-proxy/app/server.go, serveMetrics):
//
//   /metrics       Prometheus text format of the process registry (src/metrics.ts)
//   /healthz       "ok" (component-base's ping check; /healthz/ping too)
//   /proxyMode     the active proxy mode as plain text ("bpf" or "ipvs" here; "iptables"/"nftables" there)
//   /configz       the effective configuration as JSON, under the key "kubeproxy.config.k8s.io"
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { registry } from "./metrics.js";
import { HttpEndpoint } from "./health/http.js";

export const DEFAULT_METRICS_BIND_ADDRESS = "127.0.0.1:10249";
export const DEFAULT_METRICS_PORT = 10249;

export interface MetricsServerOptions {
  /** --metrics-bind-address; "" runs no server. Default "127.0.0.1:10249". */
  bindAddress?: string;
  /** Text for /proxyMode: the mode actually in use ("bpf" or "ipvs"). */
  proxyMode: string | (() => string);
  /** Returns the object served by /configz (the effective configuration). */
  config?: () => unknown;
}

const TEXT = { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" };

export class MetricsServer {
  private readonly o: MetricsServerOptions;
  private readonly endpoint: HttpEndpoint;

  constructor(o: MetricsServerOptions) {
    this.o = o;
    this.endpoint = new HttpEndpoint({
      name: "metrics",
      bindAddress: o.bindAddress ?? DEFAULT_METRICS_BIND_ADDRESS,
      defaultPort: DEFAULT_METRICS_PORT,
      handler: (req, res) => void this.handle(req, res),
      failure: (cause) => new Error(`starting metrics server failed: ${cause.message}`),
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/metrics": {
        try {
          const body = await registry.metrics();
          res.writeHead(200, { "Content-Type": registry.contentType });
          res.end(body);
        } catch (err) {
          res.writeHead(500, TEXT);
          res.end(`error gathering metrics: ${(err as Error).message}\n`);
        }
        return;
      }
      case "/healthz":
      case "/healthz/ping":
        res.writeHead(200, TEXT);
        res.end("ok");
        return;
      case "/proxyMode": {
        const m = this.o.proxyMode;
        res.writeHead(200, TEXT);
        res.end(typeof m === "function" ? m() : m);
        return;
      }
      case "/configz": {
        const value = this.o.config?.();
        res.writeHead(200, { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" });
        res.end(JSON.stringify({ "kubeproxy.config.k8s.io": value ?? {} }));
        return;
      }
      default:
        res.writeHead(404, TEXT);
        res.end("404 page not found\n");
    }
  }

  /** Starts listening; resolves with the bound address (undefined when the bind address is ""). */
  start(): Promise<AddressInfo | undefined> {
    return this.endpoint.start();
  }

  address(): AddressInfo | undefined {
    return this.endpoint.address();
  }

  stop(): Promise<void> {
    return this.endpoint.stop();
  }
}
