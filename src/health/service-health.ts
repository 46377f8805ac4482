// healthCheckNodePort servers, with kube-proxy's semantics (pkg/proxy/healthcheck/service_health.go).
//
// A LoadBalancer Service with externalTrafficPolicy: Local gets a spec.healthCheckNodePort; the cloud
// load balancer probes that port on every node and sends traffic only to nodes that answer 200. Each
// such port gets one HTTP listener per bind address (all node addresses by default). Any path answers:
//
//   200 when the service has local endpoints on this node AND the proxy itself is healthy, else 503;
//   Content-Type: application/json, X-Content-Type-Options: nosniff; body (tab-indented, as kube-proxy):
//   {
//   	"service": {
//   		"namespace": "ns",
//   		"name": "name"
//   	},
//   	"localEndpoints": 2,
//   	"serviceProxyHealthy": true
//   }
//
// sync() makes the given set current: listeners of services that are gone or whose port changed are
// closed, new ones are opened, existing ones are kept (only their endpoint count changes). A port that
// cannot be bound (EADDRINUSE, ...) is logged and reported to onListenError (the daemon can turn it into
// a FailedToStartServiceHealthcheck event, as kube-proxy does) and retried on the next sync; it never
// throws.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { log } from "../log.js";
import { parseCIDR } from "../k8s/ip.js";
import { closeHTTP, joinHostPort, listenHTTP } from "./http.js";

export interface ServiceHealthEntry {
  /** "namespace/name" */
  service: string;
  /** spec.healthCheckNodePort */
  port: number;
  /** Ready endpoints of the service on this node. */
  localEndpoints: number;
}

export interface ServiceHealthOptions {
  /**
   * Addresses to listen on for every health check port (one server each, on the same port). Default
   * ["0.0.0.0"]: every node address of both families, like Go's wildcard listen ("0.0.0.0", "::" and ""
   * are all that one dual-stack wildcard). "0.0.0.0/0" is every IPv4 address only, "::/0" every IPv6
   * address only (an IPv6-only socket): healthCheckBindAddresses() builds the list kube-proxy's per-family
   * servers listen on.
   */
  bindAddresses?: string[];
  /** The proxy's own health (serviceProxyHealthy). Default: always healthy. */
  proxierHealth?: { isHealthy(): boolean };
  /** Node name for log messages. */
  nodeName?: string;
  /** Called when a port fails to bind (after logging). */
  onListenError?: (service: string, port: number, err: Error) => void;
}

export interface ServiceHealthSyncResult {
  opened: Array<{ service: string; port: number }>;
  closed: Array<{ service: string; port: number }>;
  failed: Array<{ service: string; port: number; error: string }>;
}

interface Instance {
  service: string;
  namespace: string;
  name: string;
  port: number;
  localEndpoints: number;
  servers: Server[];
}

/** The exact body kube-proxy writes (a dedented, tab-indented JSON document, no trailing newline). */
export function serviceHealthBody(
  namespace: string,
  name: string,
  localEndpoints: number,
  proxyHealthy: boolean,
): string {
  return [
    "{",
    '\t"service": {',
    `\t\t"namespace": ${JSON.stringify(namespace)},`,
    `\t\t"name": ${JSON.stringify(name)}`,
    "\t},",
    `\t"localEndpoints": ${localEndpoints},`,
    `\t"serviceProxyHealthy": ${proxyHealthy}`,
    "}",
  ].join("\n");
}

export class ServiceHealthServers {
  private readonly bindAddresses: string[];
  private readonly proxier: { isHealthy(): boolean };
  private readonly nodeName: string;
  private readonly onListenError?: (service: string, port: number, err: Error) => void;
  private readonly instances = new Map<string, Instance>();
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(o: ServiceHealthOptions = {}) {
    this.bindAddresses = o.bindAddresses?.length ? [...o.bindAddresses] : ["0.0.0.0"];
    this.proxier = o.proxierHealth ?? { isHealthy: () => true };
    this.nodeName = o.nodeName ?? "";
    this.onListenError = o.onListenError;
  }

  /** Makes `services` the current set (see the file comment). Calls are serialized; never rejects. */
  sync(services: ServiceHealthEntry[]): Promise<ServiceHealthSyncResult> {
    const run = this.chain.then(() => this.doSync(services));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Services with an open listener, and their ports. */
  listening(): Array<{ service: string; port: number; localEndpoints: number }> {
    return [...this.instances.values()]
      .map((i) => ({ service: i.service, port: i.port, localEndpoints: i.localEndpoints }))
      .sort((a, b) => a.service.localeCompare(b.service));
  }

  /** Closes every listener; later syncs do nothing. */
  async close(): Promise<void> {
    this.closed = true;
    await this.chain;
    const all = [...this.instances.values()];
    this.instances.clear();
    await Promise.all(all.map((i) => this.closeInstance(i)));
  }

  private async doSync(services: ServiceHealthEntry[]): Promise<ServiceHealthSyncResult> {
    const result: ServiceHealthSyncResult = { opened: [], closed: [], failed: [] };
    if (this.closed) return result;
    const wanted = new Map<string, ServiceHealthEntry>();
    for (const s of services) {
      if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) {
        log.error("Invalid healthCheckNodePort, ignored", { service: s.service, port: s.port });
        continue;
      }
      wanted.set(s.service, s);
    }

    // Close what is no longer wanted (or moved to another port) first, so a port can change owner.
    for (const [name, inst] of this.instances) {
      const w = wanted.get(name);
      if (!w || w.port !== inst.port) {
        log.v(2, "Closing healthcheck", { service: name, port: inst.port });
        this.instances.delete(name);
        await this.closeInstance(inst);
        result.closed.push({ service: name, port: inst.port });
      }
    }

    for (const [name, w] of wanted) {
      const existing = this.instances.get(name);
      if (existing) {
        existing.localEndpoints = w.localEndpoints;
        continue;
      }
      const slash = name.indexOf("/");
      const inst: Instance = {
        service: name,
        namespace: slash >= 0 ? name.slice(0, slash) : "",
        name: slash >= 0 ? name.slice(slash + 1) : name,
        port: w.port,
        localEndpoints: w.localEndpoints,
        servers: [],
      };
      log.v(2, "Opening healthcheck", { service: name, port: w.port });
      try {
        for (const host of this.bindAddresses) {
          const server = createServer((req, res) => {
            // Answer from the instance's current state; a request racing with close gets the last state.
            const healthy = this.proxier.isHealthy();
            const ok = inst.localEndpoints > 0 && healthy;
            res.writeHead(ok ? 200 : 503, {
              "Content-Type": "application/json",
              "X-Content-Type-Options": "nosniff",
              // kube-proxy's: load balancers that weigh nodes (GCE's WEIGHTED_MAGLEV) read the local endpoint count.
              "X-Load-Balancing-Endpoint-Weight": String(inst.localEndpoints),
            });
            res.end(serviceHealthBody(inst.namespace, inst.name, inst.localEndpoints, healthy));
            req.resume();
          });
          const only = host === "0.0.0.0/0" ? 4 : host === "::/0" ? 6 : undefined;
          await listenHTTP(server, { host: only ? host.slice(0, -2) : host, port: w.port }, only);
          server.on("error", (err) => log.error("Healthcheck server error", { service: name, error: err.message }));
          inst.servers.push(server);
          const a = server.address() as AddressInfo;
          log.v(3, "Starting healthcheck server", { service: name, address: joinHostPort(a.address, a.port) });
        }
        this.instances.set(name, inst);
        result.opened.push({ service: name, port: w.port });
      } catch (e) {
        const err = e as Error;
        // Close whatever did open so that a retry (or another owner of the port) can bind.
        await this.closeInstance(inst);
        log.error("Failed to start healthcheck", {
          node: this.nodeName,
          service: name,
          port: w.port,
          error: err.message,
        });
        result.failed.push({ service: name, port: w.port, error: err.message });
        try {
          this.onListenError?.(name, w.port, err);
        } catch {
          // a failing callback must not break the sync
        }
      }
    }
    return result;
  }

  private async closeInstance(inst: Instance): Promise<void> {
    const servers = inst.servers;
    inst.servers = [];
    await Promise.all(servers.map((s) => closeHTTP(s)));
  }
}

/**
 * Where the health check ports listen, as kube-proxy's per-family ServiceHealthServers do: a family that
 * nodePortAddresses names (a CIDR of the family other than a /0, or "primary") listens on the node IPs it
 * selects (`nodePortIPs`, `nodePortIPs6`: none selected, none of that family); any other family on its
 * wildcard ("0.0.0.0/0", "::/0"; IPv6 only when the node has an IPv6 address). undefined: neither family is
 * named, so one dual-stack wildcard, as kube-proxy's default. [] : nothing of this node is selected.
 */
export function healthCheckBindAddresses(
  nodePortAddresses: readonly string[],
  node: { nodePortIPs: readonly string[]; nodePortIPs6: readonly string[]; nodeIPs6: readonly string[] },
): string[] | undefined {
  const primary = nodePortAddresses.some((s) => s.trim() === "primary");
  const cidrs = nodePortAddresses.map((s) => parseCIDR(s)).filter((c) => c !== undefined);
  // kube-proxy: no CIDR of the family, or a /0 of it, matches all (listen on the wildcard).
  const named = (f: 4 | 6) =>
    (primary || cidrs.some((c) => c.family === f)) && !cidrs.some((c) => c.family === f && c.prefix === 0);
  const n4 = named(4);
  const n6 = named(6);
  if (!n4 && !n6) return undefined;
  const v4 = n4 ? [...node.nodePortIPs] : ["0.0.0.0/0"];
  const v6 = n6 ? [...node.nodePortIPs6] : node.nodeIPs6.length > 0 ? ["::/0"] : [];
  return [...v4, ...v6];
}
