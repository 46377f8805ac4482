// The proxy's own health server (--healthz-bind-address, default 0.0.0.0:10256), with kube-proxy's
// semantics (pkg/proxy/healthcheck/proxy_health.go):
//
//   - queued()  — a Service/EndpointSlice change arrived that needs the data plane updated. Only the
//                 oldest still-pending change counts (later calls do not move the mark).
//   - updated() — a sync finished and programmed everything queued before it: clears the mark.
//   - healthy   — no pending change, or the oldest pending change is younger than healthTimeout
//                 (kube-proxy uses 2 × syncPeriod).
//   - /livez    — 200 when healthy, else 503.
//   - /healthz  — like /livez, and also 503 when the node is not eligible: the Node is being deleted or
//                 carries the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint, so that load
//                 balancers drain the node before it goes away while kubelet's liveness probe (on /livez)
//                 does not restart a healthy proxy.
//
// Body: the JSON kube-proxy ≥ 1.33 writes, {"lastUpdated","currentTime","nodeEligible" (healthz only),
// "healthy","status":{"IPv4":{"lastUpdated","healthy"}}}, times in Go's RFC 3339 form; "lastUpdated" is the
// current time while healthy (kube-proxy keeps that for compatibility). Headers: Content-Type
// application/json and X-Content-Type-Options nosniff.
//
// Before the first sync: healthy while starting up, as kube-proxy (a slow first list must not fail the
// liveness probe and restart-loop the pod). The daemon queues the first sync once its source has synced,
// so a daemon whose first sync then keeps failing turns unhealthy after healthTimeout (kube-proxy ≥ 1.33
// judges an IP family only after its first successful sync, and would stay healthy forever then).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { proxyHealthzTotal, proxyLivezTotal, type IPFamily } from "../metrics.js";
import { goJSONTime, HttpEndpoint } from "./http.js";
import type { Node } from "../k8s/schemas.js";

export const DEFAULT_HEALTHZ_BIND_ADDRESS = "0.0.0.0:10256";
export const DEFAULT_HEALTHZ_PORT = 10256;
/** The cluster autoscaler's taint for a node it is about to remove. */
export const TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler";

export interface ProxierHealthOptions {
  /** A queued change older than this without an updated() makes the proxy unhealthy. kube-proxy: 2 × syncPeriod. */
  healthTimeoutMs: number;
  /** --healthz-bind-address; "" runs no HTTP server. Default "0.0.0.0:10256". */
  bindAddress?: string;
  /** Clock in ms since the epoch (tests inject a fake one). Default Date.now. */
  now?: () => number;
  /** Families reported under "status". Default ["IPv4"]. */
  ipFamilies?: IPFamily[];
}

export interface ProxierFamilyHealth {
  lastUpdated: string;
  healthy: boolean;
}

/** The JSON body of /healthz and /livez (field order as kube-proxy's encoding/json output). */
export interface ProxyHealthBody {
  lastUpdated: string;
  currentTime: string;
  nodeEligible?: boolean;
  healthy: boolean;
  status?: Record<string, ProxierFamilyHealth>;
}

/** The parts of a validated Node (src/k8s nodeSchema) that decide eligibility. */
export type NodeLike = Pick<Node, "metadata" | "spec">;

export class ProxierHealth {
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly families: IPFamily[];
  private readonly bindAddress: string;
  private lastUpdatedMs: number | undefined;
  private oldestPendingMs: number | undefined;
  private eligible = true; // eligible while starting up, until a Node event says otherwise
  private readonly endpoint: HttpEndpoint;

  constructor(o: ProxierHealthOptions) {
    if (!(o.healthTimeoutMs > 0)) throw new Error(`healthTimeoutMs must be > 0, got ${o.healthTimeoutMs}`);
    this.timeoutMs = o.healthTimeoutMs;
    this.now = o.now ?? Date.now;
    this.families = o.ipFamilies?.length ? [...new Set(o.ipFamilies)] : ["IPv4"];
    this.bindAddress = o.bindAddress ?? DEFAULT_HEALTHZ_BIND_ADDRESS;
    this.endpoint = new HttpEndpoint({
      name: "healthz",
      bindAddress: this.bindAddress,
      defaultPort: DEFAULT_HEALTHZ_PORT,
      handler: (req, res) => this.handle(req, res),
      failure: (cause) => new Error(`failed to start proxy healthz on ${this.bindAddress}: ${cause.message}`),
    });
  }

  /** A change that needs programming arrived. Keeps the time of the oldest change not yet applied. */
  queued(): void {
    if (this.oldestPendingMs === undefined) this.oldestPendingMs = this.now();
  }

  /** A sync programmed everything queued so far. */
  updated(): void {
    this.oldestPendingMs = undefined;
    this.lastUpdatedMs = this.now();
  }

  /** Sets node eligibility (false: node deleted or tainted for deletion). Affects /healthz only. */
  nodeEligible(eligible: boolean): void {
    this.eligible = eligible;
  }

  /** kube-proxy's rule: not eligible when the Node has a deletionTimestamp or the ToBeDeleted taint. */
  syncNode(node: NodeLike | undefined): void {
    if (!node) return;
    const deleting = !!node.metadata.deletionTimestamp;
    const tainted = node.spec.taints.some((t) => t.key === TO_BE_DELETED_TAINT);
    this.eligible = !deleting && !tainted;
  }

  isNodeEligible(): boolean {
    return this.eligible;
  }

  /** The proxier's own health, ignoring the node (what service health checks report as serviceProxyHealthy). */
  isHealthy(): boolean {
    return this.oldestPendingMs === undefined || this.now() - this.oldestPendingMs < this.timeoutMs;
  }

  /** Status code and body for /healthz or /livez, as the HTTP server would answer now. */
  respond(path: "/healthz" | "/livez"): { status: 200 | 503; body: ProxyHealthBody } {
    const now = this.now();
    const proxierHealthy = this.isHealthy();
    const healthy = path === "/healthz" ? proxierHealthy && this.eligible : proxierHealthy;
    const body: ProxyHealthBody = {
      lastUpdated: goJSONTime(healthy ? now : this.lastUpdatedMs),
      currentTime: goJSONTime(now),
      ...(path === "/healthz" ? { nodeEligible: this.eligible } : {}),
      healthy: proxierHealthy,
    };
    if (this.lastUpdatedMs !== undefined) {
      body.status = {};
      for (const f of this.families)
        body.status[f] = { lastUpdated: goJSONTime(this.lastUpdatedMs), healthy: proxierHealthy };
    }
    return { status: healthy ? 200 : 503, body };
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/healthz" && path !== "/livez") {
      res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" });
      res.end("404 page not found\n");
      return;
    }
    const { status, body } = this.respond(path);
    (path === "/healthz" ? proxyHealthzTotal : proxyLivezTotal).inc({ code: String(status) });
    res.writeHead(status, { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" });
    res.end(JSON.stringify(body));
  }

  /**
   * Starts the HTTP server on the bind address. Resolves with the bound address (undefined when the bind
   * address is ""), rejects when the port cannot be bound (the caller decides: kube-proxy retries every
   * 5 s, or exits with bindAddressHardFail).
   */
  start(): Promise<AddressInfo | undefined> {
    return this.endpoint.start();
  }

  /** Address the server listens on, if running. */
  address(): AddressInfo | undefined {
    return this.endpoint.address();
  }

  stop(): Promise<void> {
    return this.endpoint.stop();
  }
}
